"""Layers. Each forward pass sits beside its backward pass and uses only what it kept.

A Dense layer owns no memory of its own: `W` and `b` are views into the model's one flat
parameter buffer, `dW` and `db` views into its flat gradient buffer (see Sequential).
"""
from __future__ import annotations

import numpy as np

from mlp import activations, initializers
from mlp.owned import Owned
from mlp.validation import number, positive_int


class Layer(Owned):
    """A layer's place in a model: `n_params` trainable values in the model's flat parameter
    buffer (bound as views by `bind`), `n_state` non-trainable ones in its state buffer
    (`bind_state`: BatchNorm's running statistics), `initialize` filling them."""

    n_params = 0
    n_state = 0

    def bind(self, params, grads):
        """Point this layer's parameters and gradients at its slices of the flat buffers."""

    def bind_state(self, state):
        """Point this layer's non-trainable state at its slice of the model's state buffer."""

    def initialize(self, rng, put):
        """Initial values: `put(view, host array)` writes each; draws come from `rng` in order."""

    def dense(self) -> list:
        """The Dense layers in this one, in order (penalties, get_weights, plans)."""
        return []

    def config(self) -> dict:
        raise NotImplementedError


class Dense(Layer):
    bias = True  # (models pickled before layers could go without)

    """Fully connected layer: Z = X W^T + b, A = f(Z).

    W: (n_out, n_in) and b: (n_out,), as in the lectures and torch.nn.Linear.
    `init` names the initialiser; by default the activation's own (uniform_fan_in for the ReLU
    family, LeCun for SELU, Xavier for tanh, sigmoid and the rest: mlp.initializers).
    """

    def __init__(self, n_in, n_out, activation="identity", init=None, bias=True):
        self.n_in = positive_int(n_in, "n_in")
        self.n_out = positive_int(n_out, "n_out")
        self.activation = activations.get(activation)
        self.init = initializers.resolve(init or self.activation.init)
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False; got {bias!r}")
        self.bias = bias  # False: b is zero and stays so (before a BatchNorm, whose beta takes its place)
        self.W = self.b = self.dW = self.db = None  # views, bound by the model
        self.Z = None  # kept by a training pass when the activation's derivative reads it

    @property
    def n_params(self):
        return self.n_out * self.n_in + self.n_out * self.bias

    def dense(self):
        return [self]

    def initialize(self, rng, put):
        """W by the layer's initialiser, drawn on the host in float64 (equal on every backend);
        b at zero, or drawn after W by initialisers that draw biases."""
        W = initializers.initial_weights(self.init, rng, self.n_in, self.n_out)
        put(self.W, W)
        if self.bias:
            put(self.b, initializers.initial_biases(self.init, rng, self.n_in, self.n_out))

    def bind(self, params, grads):
        """Point W, b, dW, db at this layer's slices of the flat buffers."""
        w_end = self.n_out * self.n_in
        self.W = params[:w_end].reshape(self.n_out, self.n_in)
        self.dW = grads[:w_end].reshape(self.n_out, self.n_in)
        if self.bias:
            self.b, self.db = params[w_end:], grads[w_end:]
        else:  # zeros outside the buffers (on the buffers' device): the backends add b and write db as
            # ever, and nothing trains them
            self.b, self.db = (np.zeros_like(params, shape=(self.n_out,)) for _ in range(2))

    # X (batch, n_in) . W (n_out, n_in)^T + b -> A (batch, n_out)
    def forward(self, backend, X, keep=False):
        """A = f(X W^T + b). `keep` (a pass the backward pass follows): Z is kept too when the
        activation's derivative reads it."""
        if keep and self.activation.keeps_input:
            self.Z, A = backend.dense_forward_keeping_input(X, self.W, self.b, self.activation)
            return A
        if keep:  # (an inference pass, from another thread too, leaves a training pass's Z alone)
            self.Z = None
        if self._product_only:  # (before a BatchNorm) no bias to add, nothing to apply: no pass over Z
            return backend.linear(X, self.W, None)
        if not keep:
            return backend.dense_inference(X, self.W, self.b, self.activation)
        return backend.dense_forward(X, self.W, self.b, self.activation)

    # dA (batch, n_out) -> dX (batch, n_in); writes dW, db. `fused`: dA is already dL/dZ.
    def backward(self, backend, X, A, dA, need_dX, fused=False, lr=None):
        """dL/dX from dL/dA; fills dW and db, or with `lr` takes the plain SGD step here."""
        act = None if fused or self._product_only else self.activation
        db = None if self._product_only else self.db  # (no bias: no column sums to take)
        return backend.dense_backward(X, self.W, A, dA, act, self.dW, db, need_dX, lr,
                                      self.b if self.bias else None, self.Z)

    @property
    def _product_only(self):
        """Whether the layer is Z = X W^T alone (no bias, identity activation)."""
        return not self.bias and self.activation.name == "identity"

    def config(self):
        config = {"type": "Dense", "n_in": self.n_in, "n_out": self.n_out,
                  "activation": self.activation.config(), "init": self.init}
        return config if self.bias else {**config, "bias": False}

    def __repr__(self):
        no_bias = "" if self.bias else ", bias=False"
        return f"Dense({self.n_in}, {self.n_out}, activation={self.activation.name!r}{no_bias})"


class Dropout(Layer):
    """Inverted dropout: during training each unit is kept with probability 1 - rate and
    scaled by 1 / (1 - rate); at inference it is the identity."""

    def __init__(self, rate):
        self.rate = number(rate, "Dropout rate", low=0.0, high=1.0, high_open=True)
        self.mask = None

    def forward(self, backend, X, training, rng):
        if not training or self.rate == 0.0:
            self.mask = None
            return X
        self.mask = backend.dropout_mask(rng, X.shape, self.rate, X.dtype)
        return X * self.mask

    def backward(self, dA):
        return dA if self.mask is None else dA * self.mask

    def config(self):
        return {"type": "Dropout", "rate": self.rate}

    def __repr__(self):
        return f"Dropout({self.rate})"


def from_config(config: dict) -> Layer:
    from mlp.batchnorm import BatchNorm
    from mlp.residual import Residual

    config = dict(config)
    kind = config.pop("type", None)
    if kind == "Residual":
        layers = config.pop("layers", None)
        if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
            raise ValueError(f"a Residual block's layers must be a list of layer descriptions; got {layers!r:.80}")
        return Residual([from_config(layer) for layer in layers], **config)
    types = {"Dense": Dense, "Dropout": Dropout, "BatchNorm": BatchNorm}
    if kind not in types:
        raise ValueError(f"Unknown layer type {kind!r} in model configuration")
    return types[kind](**config)
