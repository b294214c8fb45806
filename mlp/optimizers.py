"""Optimizers: hyperparameters and state here, the arithmetic in the backend, applied once
over the whole flat parameter buffer (one fused update on backends that fuse)."""
from __future__ import annotations

from mlp.owned import Owned
from mlp.validation import number


def _check(value, name, low=0.0, high=None, low_open=False):
    return number(value, name, low=low, high=high, low_open=low_open, high_open=high is not None)


class Optimizer(Owned):
    name = "optimizer"

    def __init__(self, lr):
        self.lr = _check(lr, "lr", low_open=True)
        self.backend = None

    def build(self, backend, params):
        """Allocate state mirroring the flat parameter buffer."""
        self.backend = backend

    def apply(self, params, grads):
        raise NotImplementedError

    def state_arrays(self) -> dict:
        """The optimizer state as named backend arrays (for checkpoints)."""
        return {}

    def count_step(self):
        """Count a step applied without `apply` (a replayed CUDA graph, a compiled step)."""

    def config(self) -> dict:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD:
    v = momentum * v + g; p -= lr * (g + momentum * v if nesterov else v)."""

    name = "sgd"

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False):
        super().__init__(lr)
        self.momentum = _check(momentum, "momentum", high=1.0)
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = bool(nesterov)
        self.velocity = None

    def build(self, backend, params):
        super().build(backend, params)
        self.velocity = backend.zeros(params.shape, params.dtype) if self.momentum else None

    def apply(self, params, grads):
        self.backend.sgd_update(params, grads, self.velocity, self.lr, self.momentum, self.nesterov)

    def state_arrays(self):
        return {} if self.velocity is None else {"velocity": self.velocity}

    def config(self):
        return {"name": "sgd", "lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam with bias correction, as torch.optim.Adam."""

    name = "adam"

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        self.beta1 = _check(betas[0], "betas[0]", high=1.0)
        self.beta2 = _check(betas[1], "betas[1]", high=1.0)
        self.eps = _check(eps, "eps", low_open=True)
        self.step = 0
        self.m = self.v = None

    def build(self, backend, params):
        super().build(backend, params)
        self.m = backend.zeros(params.shape, params.dtype)
        self.v = backend.zeros(params.shape, params.dtype)
        self.step = 0

    def count_step(self):
        self.step += 1

    def apply(self, params, grads):
        self.count_step()
        self.backend.adam_update(params, grads, self.m, self.v, self.lr,
                                 self.beta1, self.beta2, self.eps, self.step)

    def state_arrays(self):
        return {"m": self.m, "v": self.v}

    def config(self):
        return {"name": "adam", "lr": self.lr, "betas": [self.beta1, self.beta2], "eps": self.eps}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get(spec) -> Optimizer:
    """An Optimizer from an instance, a name ("sgd", "adam": the defaults) or a config dict."""
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        name = str(spec.pop("name", "")).lower()
        if name not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {name!r}. Valid optimizers: {', '.join(OPTIMIZERS)}.")
        return OPTIMIZERS[name](**spec)
    if isinstance(spec, str) and spec.lower() in OPTIMIZERS:
        return OPTIMIZERS[spec.lower()]()
    raise ValueError(f"Unknown optimizer {spec!r}. Valid optimizers: {', '.join(OPTIMIZERS)} "
                     "(or an instance such as mlp.SGD(lr=0.1, momentum=0.9)).")
