"""Residual blocks (He et al. 2016) for MLPs: the block's input added to its output.

    S = F(X) + P(X),  A = f(S)

F is the block's layers (Dense and BatchNorm, chained), P the identity when F keeps the width, else
a learned projection (a Dense layer, no activation); f an activation (ReLU after the sum, as in
ResNets). Backward, from dS = f'(S) dA:

    dX = dF/dX^T dS + dS            (identity: the gradient reaches X undiminished)
    dX = dF/dX^T dS + dS W_P         (projection; dW_P = dS^T X, db_P = sum(dS))

so however deep the stack, every block's input receives dS directly: the "gradient flow" the
lectures name for very deep networks. The block's parameters sit in the model's flat buffer in
order (its layers', then the projection's).
"""
from __future__ import annotations

from mlp import activations
from mlp.layers import Dense, Layer


class Residual(Layer):
    """Residual(layers, activation="identity", projection=None): X (batch, n_in) -> A (batch, n_out).
    `projection`: None (a learned projection exactly when the widths differ), True or False."""

    def __init__(self, layers, activation="identity", projection=None):
        from mlp.batchnorm import BatchNorm

        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a Residual block needs at least one layer")
        for layer in self.layers:
            if not isinstance(layer, (Dense, BatchNorm)):
                raise TypeError(f"a Residual block holds Dense and BatchNorm layers; got {layer!r}")
        for before, after in zip(self.layers, self.layers[1:]):
            if before.n_out != after.n_in:
                raise ValueError(f"the block's layers do not chain: {before!r} gives {before.n_out} outputs "
                                 f"but {after!r} expects {after.n_in}")
        self.n_in, self.n_out = self.layers[0].n_in, self.layers[-1].n_out
        if projection is not None and not isinstance(projection, bool):
            raise ValueError(f"projection must be None, True or False; got {projection!r}")
        if projection is None:
            projection = self.n_in != self.n_out
        if not projection and self.n_in != self.n_out:
            raise ValueError(f"the block maps {self.n_in} features to {self.n_out}: adding its input needs a "
                             "projection (projection=True or None)")
        self.projection = Dense(self.n_in, self.n_out, init="xavier_normal") if projection else None
        self.activation = activations.get(activation)
        self.kept = None

    def dense(self) -> list:
        return [layer for sub in self.sublayers() for layer in sub.dense()]

    def sublayers(self) -> list:
        """The block's layers, then its projection: the order of their parameters."""
        return self.layers + ([self.projection] if self.projection is not None else [])

    n_params = property(lambda self: sum(layer.n_params for layer in self.sublayers()))
    n_state = property(lambda self: sum(layer.n_state for layer in self.sublayers()))

    def bind(self, params, grads):
        offset = 0
        for layer in self.sublayers():
            end = offset + layer.n_params
            layer.bind(params[offset:end], grads[offset:end])
            offset = end

    def bind_state(self, state):
        offset = 0
        for layer in self.sublayers():
            if layer.n_state:
                layer.bind_state(state[offset:offset + layer.n_state])
                offset += layer.n_state

    def initialize(self, rng, put):
        for layer in self.sublayers():
            layer.initialize(rng, put)

    # X (batch, n_in) -> A (batch, n_out)
    def forward(self, backend, X, training, keep=False):
        inputs, out = [X], X
        for layer in self.layers:
            out = layer.forward(backend, out, keep) if isinstance(layer, Dense) else \
                layer.forward(backend, out, training, keep)
            inputs.append(out)
        S = out + (X if self.projection is None else self.projection.forward(backend, X, keep))
        A = backend.activate(S, self.activation)
        if keep:  # (an inference pass, from another thread too, leaves a training pass's state alone)
            self.kept = (inputs, S, A)
        return A

    # dA (batch, n_out) -> dX (batch, n_in); writes the block's gradients
    def backward(self, backend, X, A, dA, need_dX=True):
        inputs, S, A = self.kept
        dS = self.activation.gradient(S, A, dA)
        delta = dS
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            delta = layer.backward(backend, inputs[i], inputs[i + 1], delta, need_dX or i > 0)
        if self.projection is not None:
            through = self.projection.backward(backend, X, None, dS, need_dX, fused=True)
            return delta + through if need_dX else None
        return delta + dS if need_dX else None

    def __getstate__(self):  # a copy carries no batch's activations
        return {**super().__getstate__(), "kept": None}

    def config(self):
        return {"type": "Residual", "layers": [layer.config() for layer in self.layers],
                "activation": self.activation.config(), "projection": self.projection is not None}

    def __repr__(self):
        return f"Residual([{', '.join(map(repr, self.layers))}], activation={self.activation.name!r})"
