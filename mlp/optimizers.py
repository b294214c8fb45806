"""Optimizers, each one descriptor: its named hyperparameters, its state, and its update rule
for one element, written once.

A rule is plain element-wise Python, `rule(p, g, *state, *scalars) -> (p, *state)` (or just p
when there is no state), branch-free where it reads a flag (`x if flag else y`, or a flag
multiplying): NumPy applies it to slices of the flat buffers, Numba compiles it for scalars
(the whole compiled step and the flat update), and mlp.kernels.translate prints it as CUDA C.
Its parameters after the state are bound by name: a hyperparameter (an attribute of the
optimizer, a float on every backend: flags are 0 or 1) or a per-step scalar that `derive`
computes from the step count t (from 1) and the hyperparameters, in float64 (Adam's bias
corrections), on the host or, in a replayed CUDA graph, on the device.

Everything else (each backend's kernels, the device's copy of the scalars, checkpoints, the
CLI's and the estimators' choices) is derived from these declarations: adding an optimizer
is this file and its tests.
"""
from __future__ import annotations

import functools
import inspect
import operator
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from mlp.owned import Owned
from mlp.validation import number


def _check(value, name, low=0.0, high=None, low_open=False):
    return number(value, name, low=low, high=high, low_open=low_open, high_open=high is not None)


@dataclass(frozen=True)
class UpdatePlan:
    """What the backends compile for an optimizer: its rule, the names of its state arrays, of its
    hyperparameters (in the order of the device's scalars), and of the scalars `derive`
    returns for each step (after the hyperparameters and the step count t)."""

    name: str
    rule: Callable = field(repr=False)
    state: tuple
    hyperparameters: tuple
    derive: Optional[Callable] = field(default=None, repr=False)
    derived: tuple = ()

    @functools.cached_property
    def rule_scalars(self) -> tuple:
        """The names the rule takes after p, g and the state, in its order."""
        return tuple(_parameters(self.rule)[2 + len(self.state):])

    @functools.cached_property
    def derive_arguments(self) -> tuple:
        return tuple(_parameters(self.derive)) if self.derive is not None else ()

    @functools.cached_property
    def read_hyperparameters(self):
        """owner -> its hyperparameters' values, a tuple in declared order (one attrgetter call:
        a small network's whole step takes microseconds)."""
        get = operator.attrgetter(*self.hyperparameters)
        return get if len(self.hyperparameters) > 1 else (lambda owner: (get(owner),))

    @property
    def counts_steps(self) -> bool:
        return "t" in self.derive_arguments

    def check(self):
        """Every scalar the rule takes is declared: a hyperparameter or a derived value."""
        known = set(self.hyperparameters) | set(self.derived)
        unknown = [name for name in self.rule_scalars if name not in known]
        unknown += [name for name in self.derive_arguments if name not in set(self.hyperparameters) | {"t"}]
        if unknown or _parameters(self.rule)[:2] != ["p", "g"]:
            raise TypeError(f"optimizer {self.name!r}: its rule must take (p, g, *state, *scalars) with each scalar a "
                            f"hyperparameter {self.hyperparameters} or derived {self.derived}; unknown: {unknown}")
        return self


def _parameters(function) -> list:
    return list(inspect.signature(function).parameters)


class Optimizer(Owned):
    """The base of every optimizer. A subclass declares `name`, `hyperparameters` (attribute
    names), `state` (names of arrays shaped as the parameters), the static `rule`, and, if
    its rule needs per-step scalars, the static `derive` and the names of what it returns."""

    name = "optimizer"
    hyperparameters: tuple = ("lr",)
    state: tuple = ()
    derived: tuple = ()
    rule: Callable = None
    derive: Callable = None

    def __init__(self, lr):
        self.lr = _check(lr, "lr", low_open=True)
        self.backend = None
        self.step = 0  # steps taken: t - 1 of the next step
        self.arrays = {}

    def plan(self) -> UpdatePlan:
        """The update this optimizer applies, as the backends compile it."""
        return UpdatePlan(self.name, type(self).rule, self.state, self.hyperparameters,
                          type(self).derive, self.derived).check()

    def build(self, backend, params):
        """Allocate the state (zeros), mirroring the flat parameter buffer."""
        self.backend = backend
        self.update_plan = self.plan()
        self.arrays = {name: backend.zeros(params.shape, params.dtype) for name in self.update_plan.state}
        self.step = 0

    def values(self, plan) -> dict:
        """The hyperparameters `plan` takes, as floats, by name."""
        return {name: float(getattr(self, name)) for name in plan.hyperparameters}

    def scalars(self, plan) -> tuple:
        """The rule's scalars for the next step (t = step + 1), in the rule's order, as Python
        floats (a NumPy float64 would turn float32 arithmetic into float64)."""
        if plan.derive is None and plan.rule_scalars == plan.hyperparameters:
            return plan.read_hyperparameters(self)  # validated floats already (flags: bools, 0 or 1 alike)
        values = self.values(plan)
        if plan.derive is not None:
            values["t"] = float(self.step + 1)
            derived = plan.derive(*(values[name] for name in plan.derive_arguments))
            derived = derived if isinstance(derived, tuple) else (derived,)
            values.update((name, float(value)) for name, value in zip(plan.derived, derived))
        return tuple(values[name] for name in plan.rule_scalars)

    def apply(self, params, grads):
        """One step over the flat buffers."""
        self.backend.optimizer_update(self, params, grads)
        self.count_step()

    def state_arrays(self) -> dict:
        """The optimizer state as named backend arrays (for checkpoints)."""
        return dict(self.arrays)

    def count_step(self):
        """Count a step (also one applied without `apply`: a replayed CUDA graph, a compiled step)."""
        self.step += 1

    def config(self) -> dict:
        return {"name": self.name, **{key: getattr(self, key) for key in _parameters(type(self).__init__)[1:]}}

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self.config().items() if key != "name")
        return f"{type(self).__name__}({args})"


def _betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
    return _check(betas[0], "betas[0]", high=1.0), _check(betas[1], "betas[1]", high=1.0)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD:
    v = momentum * v + g; p -= lr * (g + momentum * v if nesterov else v). Without momentum
    it keeps no state and its rule is p -= lr g."""

    name = "sgd"
    hyperparameters = ("lr", "momentum", "nesterov")
    state = ("velocity",)

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False):
        super().__init__(lr)
        self.momentum = _check(momentum, "momentum", high=1.0)
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = bool(nesterov)

    @staticmethod
    def rule(p, g, velocity, lr, momentum, nesterov):
        velocity = momentum * velocity + g
        return p - lr * (g + momentum * velocity if nesterov else velocity), velocity

    @staticmethod
    def plain_rule(p, g, lr):
        return p - lr * g

    def plan(self):
        if self.momentum:
            return super().plan()
        return UpdatePlan("sgd_plain", SGD.plain_rule, (), ("lr",)).check()

    @property
    def velocity(self):
        return self.arrays.get("velocity")


class Adam(Optimizer):
    """Adam with bias correction, as torch.optim.Adam (no weight decay: see `l2` in compile,
    or AdamW)."""

    name = "adam"
    hyperparameters = ("lr", "beta1", "beta2", "eps")
    state = ("m", "v")
    derived = ("step_size", "root_bias2")

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(lr)
        self.beta1, self.beta2 = _betas(betas)
        self.eps = _check(eps, "eps", low_open=True)

    @staticmethod
    def derive(t, lr, beta1, beta2):
        """(lr / (1 - beta1^t), sqrt(1 - beta2^t)): the bias corrections of step t."""
        return lr / (1.0 - beta1 ** t), np.sqrt(1.0 - beta2 ** t)

    @staticmethod
    def rule(p, g, m, v, step_size, beta1, beta2, root_bias2, eps):
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        return p - step_size * m / (np.sqrt(v) / root_bias2 + eps), m, v

    @property
    def betas(self):
        return [self.beta1, self.beta2]

    @property
    def m(self):
        return self.arrays.get("m")

    @property
    def v(self):
        return self.arrays.get("v")


class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW: p *= 1 - lr weight_decay, then
    Adam's step. The decay applies to every parameter, biases included (torch's default, one
    parameter group)."""

    name = "adamw"
    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr, betas, eps)
        self.weight_decay = _check(weight_decay, "weight_decay")

    @staticmethod
    def rule(p, g, m, v, lr, weight_decay, step_size, beta1, beta2, root_bias2, eps):
        p = p * (1.0 - lr * weight_decay)
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        return p - step_size * m / (np.sqrt(v) / root_bias2 + eps), m, v


class RMSprop(Optimizer):
    """RMSprop as torch.optim.RMSprop: g += weight_decay p; s = alpha s + (1 - alpha) g^2;
    centered: a = alpha a + (1 - alpha) g and the denominator sqrt(s - a^2) + eps, else
    sqrt(s) + eps; then b = momentum b + g / denominator and p -= lr b. Its three state
    arrays are kept whatever the flags (without momentum, b is the step itself)."""

    name = "rmsprop"
    hyperparameters = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    state = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(lr)
        self.alpha = _check(alpha, "alpha", high=1.0)
        self.eps = _check(eps, "eps", low_open=True)
        self.weight_decay = _check(weight_decay, "weight_decay")
        self.momentum = _check(momentum, "momentum", high=1.0)
        self.centered = bool(centered)

    @staticmethod
    def rule(p, g, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered):
        g = g + weight_decay * p
        square_avg = alpha * square_avg + (1.0 - alpha) * g * g
        grad_avg = alpha * grad_avg + (1.0 - alpha) * g
        denominator = np.sqrt(square_avg - centered * grad_avg * grad_avg) + eps
        momentum_buffer = momentum * momentum_buffer + g / denominator
        return p - lr * momentum_buffer, square_avg, grad_avg, momentum_buffer


class Adagrad(Optimizer):
    """Adagrad as torch.optim.Adagrad: g += weight_decay p; s += g^2;
    p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps), s starting at
    initial_accumulator_value."""

    name = "adagrad"
    hyperparameters = ("lr", "lr_decay", "eps", "weight_decay")
    state = ("sum",)
    derived = ("step_size",)

    def __init__(self, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(lr)
        self.lr_decay = _check(lr_decay, "lr_decay")
        self.weight_decay = _check(weight_decay, "weight_decay")
        self.initial_accumulator_value = _check(initial_accumulator_value, "initial_accumulator_value")
        self.eps = _check(eps, "eps", low_open=True)

    def build(self, backend, params):
        super().build(backend, params)
        self.arrays["sum"] += self.initial_accumulator_value

    @staticmethod
    def derive(t, lr, lr_decay):
        return lr / (1.0 + (t - 1.0) * lr_decay)

    @staticmethod
    def rule(p, g, accumulated, step_size, eps, weight_decay):
        g = g + weight_decay * p
        accumulated = accumulated + g * g
        return p - step_size * g / (np.sqrt(accumulated) + eps), accumulated


class Adamax(Optimizer):
    """Adamax (Adam under the infinity norm) as torch.optim.Adamax: g += weight_decay p;
    m = beta1 m + (1 - beta1) g; u = max(beta2 u, |g| + eps); p -= lr / (1 - beta1^t) m / u."""

    name = "adamax"
    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay")
    state = ("exp_avg", "exp_inf")
    derived = ("step_size",)

    def __init__(self, lr=0.002, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.beta1, self.beta2 = _betas(betas)
        self.eps = _check(eps, "eps", low_open=True)
        self.weight_decay = _check(weight_decay, "weight_decay")

    @property
    def betas(self):
        return [self.beta1, self.beta2]

    @staticmethod
    def derive(t, lr, beta1):
        return lr / (1.0 - beta1 ** t)

    @staticmethod
    def rule(p, g, exp_avg, exp_inf, step_size, beta1, beta2, eps, weight_decay):
        g = g + weight_decay * p
        exp_avg = beta1 * exp_avg + (1.0 - beta1) * g
        exp_inf = np.maximum(beta2 * exp_inf, np.abs(g) + eps)
        return p - step_size * exp_avg / exp_inf, exp_avg, exp_inf


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad, Adamax)}


def get(spec) -> Optimizer:
    """An Optimizer from an instance, a name ("sgd", "adam", ...: the defaults) or a config dict."""
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        name = str(spec.pop("name", "")).lower()
        if name not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {name!r}. Valid optimizers: {', '.join(OPTIMIZERS)}.")
        try:
            return OPTIMIZERS[name](**spec)
        except TypeError:
            raise ValueError(f"optimizer {name!r} takes {_parameters(OPTIMIZERS[name].__init__)[1:]}; "
                             f"got {sorted(spec)}") from None
    if isinstance(spec, str) and spec.lower() in OPTIMIZERS:
        return OPTIMIZERS[spec.lower()]()
    raise ValueError(f"Unknown optimizer {spec!r}. Valid optimizers: {', '.join(OPTIMIZERS)} "
                     "(or an instance such as mlp.SGD(lr=0.1, momentum=0.9)).")
