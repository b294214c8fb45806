"""The seam between the model and the array libraries.

The model calls only these methods. Every one has a default written against `self.xp`
(the backend's NumPy-compatible namespace), so the NumPy backend is nearly empty and a
faster backend overrides only what it accelerates. The defaults are the specification:
the conformance tests hold every override to them.

Shapes: X (batch, n_in), W (n_out, n_in), b (n_out,), Z and A (batch, n_out).
"""
from __future__ import annotations

import contextlib
import importlib

import numpy as np

from mlp.errors import BackendUnavailableError
from mlp.regularization import clip_scale

UPDATE_CHUNK = 1 << 14  # elements per slice of an optimizer rule run on arrays (see optimizer_update)


def require(package: str, backend: str, extra: str):
    """Import `package` for `backend`, or say which extra installs it."""
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise BackendUnavailableError(
            f"The {backend!r} backend needs the package {package!r}, which is not installed "
            f"({error}). Install it with: pip install 'mlp[{extra}]'"
        ) from None


class Backend:
    name = "base"
    xp = np
    on_host = True  # arrays live in host memory: reading a scalar costs nothing
    memory_errors: tuple = (MemoryError,)  # what this backend raises when memory runs out

    # --- arrays -------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def synchronize(self):
        """Wait until queued device work is done (nothing to wait for on the host)."""

    def rng(self, seed):
        """A random generator on this backend, for dropout masks."""
        return np.random.default_rng(seed)

    def rng_state(self, rng):
        """The generator's state as JSON-able data (for checkpoints)."""
        return rng.bit_generator.state

    def set_rng_state(self, rng, state):
        rng.bit_generator.state = state

    def dropout_mask(self, rng, shape, rate, dtype):
        """Inverted dropout: keep with probability 1 - rate, scale kept units by 1/(1-rate)."""
        keep = 1.0 - rate
        return (rng.random(shape, dtype=np.float32) < keep) * self.xp.asarray(1.0 / keep, dtype)

    def resident(self, X):
        """The training set where `fit` keeps it: on this backend's device (moved once)."""
        return self.asarray(X)

    def take_rows(self, X, index):
        """One batch: X[index], for a slice or an index array already on this backend."""
        return X[index]

    def fitting(self, model, steps, batch):
        """The context a fit of `steps` training steps of `batch` rows runs in (epochs x steps
        per epoch, however early it stops, so that a resumed fit decides as the whole one did).
        A compiling backend decides here whether compiling pays for this fit."""
        return contextlib.nullcontext()

    def inferring(self, model):
        """The context `model`'s inference passes (predict, evaluate) run in: a compiling backend
        runs them as `model`'s last fit on it ran."""
        return contextlib.nullcontext()

    # --- whole-step takeovers (None: the model runs its layer-by-layer path) ------------
    def fused_train_step(self, model, batch, plan_batch=None, weighted=False):
        """A function (X, Y) -> (loss, [A_L]) doing a whole training step for `model` at
        this batch size, when this backend has a faster one; None otherwise. `plan_batch`
        (fit's batch_size, at least `batch`) is the size the step's code is chosen for, so that
        an epoch's last, shorter batch runs the code its full batches compiled. `weighted`: the
        function takes (X, Y, R), R the row weights (batch, 1)."""
        return None

    def fused_forward(self, model, batch):
        """A function X -> A_L doing the whole inference pass, or None."""
        return None

    # --- dense layer --------------------------------------------------------------
    def buffer(self, owner, role, shape, dtype):
        """Where to write an intermediate result that dies within the step (`out=`), or None
        for a fresh array. A backend may keep such buffers between steps, one per thread:
        threads may run passes of one model at once (predictions in a threaded server)."""
        return None

    def linear(self, X, W, b):
        """Z = X W^T + b (b None: no bias)."""
        Z = self.xp.matmul(X, W.T, out=self.buffer(W, "Z", (X.shape[0], W.shape[0]), X.dtype))
        if b is not None:
            Z += b
        return Z

    def activate(self, Z, activation):
        """A = f(Z)."""
        return activation.forward(Z, **activation.params)

    def dense_forward(self, X, W, b, activation):
        """A = f(X W^T + b)."""
        return self.activate(self.linear(X, W, b), activation)

    def dense_inference(self, X, W, b, activation):
        """A = f(X W^T + b) where no backward pass follows: a backend may lay A out in another
        order (the values are the same)."""
        return self.dense_forward(X, W, b, activation)

    def dense_forward_keeping_input(self, X, W, b, activation):
        """(Z, A): the forward pass keeping Z = X W^T + b beside A = f(Z), for an activation
        whose derivative reads Z."""
        Z = self.linear(X, W, b)
        return Z, self.activate(Z, activation)

    def dense_backward(self, X, W, A, dA, activation, dW, db, need_dX=True, lr=None, b=None, Z=None):
        """From dL/dA (or dL/dZ when `activation` is None) write dW: (n_out, n_in) and
        db: (n_out,) in place and return dL/dX: (batch, n_in) (None if not needed). `Z`: the
        layer's pre-activation, where the activation's derivative reads it.
        With `lr` (plain SGD folded into the backward pass: see `folds_sgd`) the layer is
        updated here instead, W -= lr dW and b -= lr db, after dX is computed from the old W;
        dW is then not necessarily written."""
        dZ = self.delta_and_bias_gradient(A, dA, activation, db, Z)
        dX = self.input_delta(dZ, W) if need_dX else None
        if lr is None:
            self.weight_gradient(dZ, X, dW)
        else:
            self.descend(dZ, X, W, dW, lr)
            if b is not None:  # (None: a layer without bias)
                self.plain_sgd(b, db, lr)
        return dX

    def delta_and_bias_gradient(self, A, dA, activation, db, Z=None):
        """dZ = f'(Z) * dA (dA itself when `activation` is None), from A, Z or both as the
        activation declares, and db = its column sums (db None: a layer without bias, no sums)."""
        dZ = dA if activation is None else activation.gradient(Z, A, dA)
        if db is not None:
            dZ.sum(axis=0, out=db)  # the method: no Python-level dispatch wrapper
        return dZ

    # --- batch normalization (mlp.batchnorm: the formulas) ------------------------------
    def batch_norm_statistics(self, X):
        """(mean, biased variance) of each column of X: (batch, n)."""
        mean = X.mean(axis=0)
        centred = X - mean
        return mean, (centred * centred).mean(axis=0)

    def batch_norm_forward(self, X, mean, inv_std, gamma, beta, activation):
        """(X_hat, Z, A): X_hat = (X - mean) inv_std, Z = gamma X_hat + beta, A = f(Z); all (batch, n).
        A backend may give Z as None where the activation's derivative reads A only."""
        X_hat = (X - mean) * inv_std
        Z = X_hat * gamma + beta
        return X_hat, Z, self.activate(Z, activation)

    def batch_norm_sums(self, Z, A, dA, X_hat, activation):
        """(dZ = f'(Z) dA, its column sums, the column sums of dZ X_hat)."""
        dZ = activation.gradient(Z, A, dA)
        return dZ, dZ.sum(axis=0), (dZ * X_hat).sum(axis=0)

    def batch_norm_input_delta(self, dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat, rows):
        """dX = gamma inv_std / rows (rows dZ - sum(dZ) - X_hat sum(dZ X_hat)): (batch, n)."""
        return (gamma * inv_std / rows) * (rows * dZ - sum_dZ - X_hat * sum_dZ_X_hat)

    def folds_sgd(self, model) -> bool:
        """Whether `model`'s layer-by-layer steps fold plain SGD into the backward pass
        (dense_backward with `lr`): only where `descend` beats a gradient and an update pass."""
        return False

    def descend(self, dZ, X, W, dW, lr):
        """W -= lr dZ^T X, the plain SGD step of a layer's weights (dW: scratch it may use)."""
        self.weight_gradient(dZ, X, dW)
        self.plain_sgd(W, dW, lr)  # W itself: a backend may key buffers by it

    def input_delta(self, dZ, W):
        """dX = dZ W. Through a one-unit layer a broadcast product: BLAS is slow at (n, 1) @ (1, m)."""
        if W.shape[0] == 1:
            return dZ * W
        return self.xp.matmul(dZ, W, out=self.buffer(W, "dX", (dZ.shape[0], W.shape[1]), dZ.dtype))

    def weight_gradient(self, dZ, X, dW):
        """dW = dZ^T X. For one sample the outer product: BLAS is slow at (n, 1) @ (1, m)."""
        if X.shape[0] == 1:
            self.xp.multiply(dZ.T, X, out=dW)
        else:
            self.xp.matmul(dZ.T, X, out=dW)

    # --- the loss ------------------------------------------------------------------
    def output_and_loss(self, Z, Y, loss, activation, weights=None):
        """For an output activation fused with its loss (softmax + cross-entropy, sigmoid +
        binary cross-entropy): (loss value from the logits Z, A = f(Z), dL/dZ = (A - Y) / n).
        `weights`: row weights (batch, 1) or None (see mlp.losses)."""
        A = self.activate(Z, activation)
        return loss.value_from_logits(Z, Y, weights), A, loss.output_delta(A, Y, weights)

    def loss_and_gradient(self, A, Y, loss, weights=None):
        """(loss value, dL/dA) for any other loss."""
        return loss.value(A, Y, weights), loss.gradient(A, Y, weights)

    # --- updates over the flat parameter buffer -----------------------------------
    def square_norm(self, v):
        """sum(v**2) as a 0-d array (no host sync)."""
        return self.xp.dot(v, v)

    def scale_to_norm(self, grads, max_norm):
        """Clip by global norm: grads *= min(1, max_norm / ||grads||), on the device."""
        norm = self.xp.sqrt(self.square_norm(grads))
        grads *= self.xp.asarray(clip_scale(norm, max_norm)).astype(grads.dtype)
        return norm

    def plain_sgd(self, params, grads, lr):
        """params -= lr grads: plain SGD on one layer's W or b (folded into the backward pass)."""
        params -= self.xp.multiply(grads, lr, out=self.buffer(params, "step", params.shape, params.dtype))

    def optimizer_update(self, optimizer, params, grads):
        """One step of `optimizer`'s rule (mlp.optimizers) over the flat buffers, state updated in place.
        The rule runs on slices of UPDATE_CHUNK elements: its temporaries stay in cache."""
        plan = optimizer.update_plan
        scalars = optimizer.scalars(plan)
        states = [optimizer.arrays[name] for name in plan.state]
        if params.size <= UPDATE_CHUNK:  # one slice: no slicing (a small net's step is microseconds)
            return _apply_rule(plan.rule, params, grads, states, scalars)
        for start in range(0, params.size, UPDATE_CHUNK):
            part = slice(start, start + UPDATE_CHUNK)
            _apply_rule(plan.rule, params[part], grads[part], [state[part] for state in states], scalars)

    def __reduce__(self):
        """Pickled by name: unpickling gives that process's own instance of the backend, not a
        copy of this one's scratch buffers and compiled kernels."""
        from mlp.backends import get_backend

        return get_backend, (self.name,)

    def __repr__(self):
        return f"<mlp backend {self.name!r}>"


def _apply_rule(rule, params, grads, states, scalars):
    """params and states (arrays, or slices of them) <- rule(params, grads, *states, *scalars)."""
    result = rule(params, grads, *states, *scalars)
    if not states:
        params[...] = result
        return
    params[...] = result[0]
    for state, value in zip(states, result[1:]):
        state[...] = value
