"""Batch normalization (Ioffe & Szegedy 2015), feature-wise over the batch, as torch.nn.BatchNorm1d,
followed by an activation like a Dense layer's.

Forward, training (X: (batch, n), B rows; statistics per feature, over the batch):

    mu = mean(X),  var = mean((X - mu)^2)         (the biased variance normalises)
    X_hat = (X - mu) / sqrt(var + eps)
    Z = gamma * X_hat + beta,  A = f(Z)
    running_mean <- (1 - momentum) running_mean + momentum mu
    running_var  <- (1 - momentum) running_var  + momentum var * B / (B - 1)   (unbiased, as torch)

At inference X_hat = (X - running_mean) / sqrt(running_var + eps). Backward, from dZ = dL/dZ
(the activation's derivative applied to dA), with s = sqrt(var + eps), sums over the batch:

    d_beta  = sum(dZ)
    d_gamma = sum(dZ * X_hat)
    dX = gamma / (B s) * (B dZ - sum(dZ) - X_hat * sum(dZ * X_hat))

(the three terms: the direct path through X_hat, and through mu and var, which every row of the
batch shares). gamma and beta live in the model's flat parameter buffer, after the weights of the
layer before; they are not penalised by L1/L2 (weights only, as the lectures define the penalty).
The running statistics live in the model's state buffer: saved with the model, checkpointed,
never touched by the optimizer.
"""
from __future__ import annotations

from mlp import activations
from mlp.layers import Layer
from mlp.validation import number, positive_int


class BatchNorm(Layer):
    """BatchNorm(n, activation="identity", momentum=0.1, eps=1e-5, sync=False): X (batch, n) -> A (batch, n).
    Training normalises by the batch's statistics (at least 2 rows), inference by the running ones.
    In data-parallel training (mlp.distributed) each rank normalises by its own shard's statistics,
    as torch's BatchNorm under DDP, and the ranks' running statistics are averaged after each step;
    with sync=True by the global batch's (torch's SyncBatchNorm: all-reduces in the forward and
    backward passes), which trains as one process on the whole batch does."""

    def __init__(self, n, activation="identity", momentum=0.1, eps=1e-5, sync=False):
        self.n_in = self.n_out = positive_int(n, "n")
        self.activation = activations.get(activation)
        self.momentum = number(momentum, "momentum", low=0.0, high=1.0)
        self.eps = number(eps, "eps", low=0.0, low_open=True)
        if not isinstance(sync, bool):
            raise ValueError(f"sync must be True or False; got {sync!r}")
        self.sync = sync  # data-parallel: statistics of the global batch (torch's SyncBatchNorm)
        self.collective = None  # the world's all-reduce while a data-parallel fit runs (sync only)
        self.gamma = self.beta = self.d_gamma = self.d_beta = None  # views, bound by the model
        self.running_mean = self.running_var = None
        self.kept = None  # (training, X_hat, 1/s, Z, A) of the last pass kept for the backward pass

    n_params = property(lambda self: 2 * self.n_out)
    n_state = property(lambda self: 2 * self.n_out)

    def bind(self, params, grads):
        n = self.n_out
        self.gamma, self.beta = params[:n], params[n:]
        self.d_gamma, self.d_beta = grads[:n], grads[n:]

    def bind_state(self, state):
        self.running_mean, self.running_var = state[:self.n_out], state[self.n_out:]

    def initialize(self, rng, put):
        """gamma = 1, beta = 0; running mean 0 and variance 1 (torch's)."""
        import numpy as np

        put(self.gamma, np.ones(self.n_out))
        put(self.beta, np.zeros(self.n_out))
        put(self.running_mean, np.zeros(self.n_out))
        put(self.running_var, np.ones(self.n_out))

    # X (batch, n) -> A (batch, n)
    def forward(self, backend, X, training, keep=False):
        xp = backend.xp
        if training:
            mean, var, rows = self._statistics(backend, X)
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            m = X.dtype.type(self.momentum)
            self.running_mean *= 1 - m
            self.running_mean += m * mean
            self.running_var *= 1 - m
            self.running_var += (m * rows / (rows - 1)) * var
        else:
            mean, inv_std = self.running_mean, 1.0 / xp.sqrt(self.running_var + self.eps)
        X_hat, Z, A = backend.batch_norm_forward(X, mean, inv_std, self.gamma, self.beta, self.activation)
        if keep:  # (an inference pass, from another thread too, leaves a training pass's state alone)
            self.kept = (training, X_hat, inv_std, Z, A)
        return A

    def _statistics(self, backend, X):
        """(mean, biased variance, rows) over the batch, or with a collective over the global
        batch (two all-reduces: the sums and the row count, then the squared deviations)."""
        if self.collective is None:
            rows = X.shape[0]
            if rows < 2:
                raise ValueError(f"BatchNorm needs at least 2 rows to take a batch's statistics in training; "
                                 f"got {rows}: choose a batch_size whose batches (the last one too) have 2 or more")
            return (*backend.batch_norm_statistics(X), rows)
        xp = backend.xp
        sums = xp.concatenate([X.sum(axis=0), xp.full(1, X.shape[0], dtype=X.dtype)])
        self.collective.allreduce_sum(sums)
        rows = int(round(float(sums[-1])))
        if rows < 2:  # (every rank sees the same count: all raise alike)
            raise ValueError(f"BatchNorm needs at least 2 rows in the global batch; got {rows}")
        mean = sums[:-1] / rows
        centred = X - mean
        squares = xp.ascontiguousarray((centred * centred).sum(axis=0))
        self.collective.allreduce_sum(squares)
        return mean, squares / rows, rows

    # dA (batch, n) -> dX (batch, n); writes d_gamma, d_beta
    def backward(self, backend, X, A, dA, need_dX=True, lr=None):
        """dL/dX from dL/dA; fills d_gamma, d_beta, or with `lr` (plain SGD folded into the
        backward pass, see Sequential._folded_sgd_rate) takes their step here, after dX."""
        dX = self._backward(backend, dA, need_dX)
        if lr is not None:
            backend.plain_sgd(self.gamma, self.d_gamma, lr)
            backend.plain_sgd(self.beta, self.d_beta, lr)
        return dX

    def _backward(self, backend, dA, need_dX):
        if self.kept is None:
            raise RuntimeError("BatchNorm.backward needs the training forward pass run with keep=True")
        training, X_hat, inv_std, Z, A = self.kept
        dZ, sum_dZ, sum_dZ_X_hat = backend.batch_norm_sums(Z, A, dA, X_hat, self.activation)
        self.d_beta[...] = sum_dZ
        self.d_gamma[...] = sum_dZ_X_hat
        if not need_dX:
            return None
        if not training:  # the running statistics are constants: a feature-wise affine map
            return dZ * (self.gamma * inv_std)
        rows = dZ.shape[0]
        if self.collective is not None:  # the global batch's sums; d_gamma, d_beta stay this rank's share
            sums = backend.xp.concatenate([sum_dZ, sum_dZ_X_hat, backend.xp.full(1, rows, dtype=dZ.dtype)])
            self.collective.allreduce_sum(sums)
            n = self.n_out
            sum_dZ, sum_dZ_X_hat, rows = sums[:n], sums[n:2 * n], int(round(float(sums[-1])))
        return backend.batch_norm_input_delta(dZ, X_hat, self.gamma, inv_std, sum_dZ, sum_dZ_X_hat, rows)

    def config(self):
        config = {"type": "BatchNorm", "n": self.n_out, "activation": self.activation.config(),
                  "momentum": self.momentum, "eps": self.eps}
        return {**config, "sync": True} if self.sync else config

    def __getstate__(self):  # a copy takes part in no job, and carries no batch's activations
        return {**super().__getstate__(), "collective": None, "kept": None}

    def __repr__(self):
        return f"BatchNorm({self.n_out}, activation={self.activation.name!r})"


def check_batches(model, n, batch, ranks=1):
    """Refuse, before training, batches a model's BatchNorm layers cannot normalise: fewer than 2
    rows in a batch (the last one included, `n` rows in batches of `batch`), and in a data-parallel
    fit over `ranks` ranks a shard of fewer than 2 rows (a layer normalising each rank's own) or
    of none (a sync layer: every rank takes part in its all-reduces)."""
    from mlp.model import _every_layer

    norms = [layer for layer in _every_layer(model.layers) if isinstance(layer, BatchNorm)]
    if not norms:
        return
    sizes = {batch, n - (-(-n // batch) - 1) * batch}
    smallest = min(sizes)
    per_rank = 2 if any(not layer.sync for layer in norms) or ranks == 1 else 1
    if smallest < 2 or smallest // ranks < per_rank:
        where = f"{smallest // ranks} rows on a rank of {ranks}" if ranks > 1 else f"{smallest} row"
        raise ValueError(f"BatchNorm needs at least {max(2, per_rank)} rows per batch{' and rank' * (ranks > 1)} "
                         f"in training; {n} samples in batches of {batch} leave {where}: choose a batch_size "
                         f"(the last batch too) of at least {max(2, per_rank * ranks)}")
