"""Learning-rate schedules, applied once per epoch by `fit`.

`schedule(epoch, base_lr)` gives the learning rate of an epoch (counting from 0);
`observe(value)` hands it the epoch's monitored loss (only ReduceLROnPlateau uses it).
A plain function given as `lr_schedule` is called as Keras' LearningRateScheduler calls it:
`function(epoch, current_lr) -> new lr`, current_lr being the rate of the epoch before (the
optimizer's lr for the first epoch; on resuming, the last logged one).
"""
from __future__ import annotations

import math
import numbers

from mlp.validation import integer, number, positive_int


class Schedule:
    def __call__(self, epoch: int, base_lr: float) -> float:
        raise NotImplementedError

    def next_rate(self, epoch: int, base_lr: float, current_lr: float) -> float:
        """The rate fit sets for `epoch`; a Schedule is a function of the base rate."""
        return self(epoch, base_lr)

    def observe(self, value: float) -> None:
        """Called after each epoch with the monitored loss."""


class StepLR(Schedule):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, step_size=10, gamma=0.1):
        self.step_size = positive_int(step_size, "step_size")
        self.gamma = number(gamma, "gamma", low=0.0, low_open=True)

    def __call__(self, epoch, base_lr):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(Schedule):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, gamma=0.95):
        self.gamma = number(gamma, "gamma", low=0.0, high=1.0, low_open=True)

    def __call__(self, epoch, base_lr):
        return base_lr * self.gamma ** epoch


class CosineLR(Schedule):
    """Cosine annealing from base_lr to min_lr over `period` epochs, then min_lr."""

    def __init__(self, period, min_lr=0.0):
        self.period = positive_int(period, "period")
        self.min_lr = number(min_lr, "min_lr", low=0.0)

    def __call__(self, epoch, base_lr):
        t = min(epoch, self.period) / self.period
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * t))


class ReduceLROnPlateau(Schedule):
    """Multiply the learning rate by `factor` when the monitored loss has not improved by
    more than `min_delta` for `patience` epochs; never below `min_lr`."""

    def __init__(self, factor=0.5, patience=5, min_delta=0.0, min_lr=0.0):
        self.factor = number(factor, "factor", low=0.0, high=1.0, low_open=True, high_open=True)
        self.patience = integer(patience, "patience", low=0)
        self.min_delta = number(min_delta, "min_delta", low=0.0)
        self.min_lr = number(min_lr, "min_lr", low=0.0)
        self.scale, self.best, self.wait = 1.0, math.inf, 0

    def __call__(self, epoch, base_lr):
        return max(base_lr * self.scale, self.min_lr)

    def observe(self, value):
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            self.scale *= self.factor
            self.wait = 0


SCHEDULES = {"step": StepLR, "exponential": ExponentialLR, "cosine": CosineLR,
             "plateau": ReduceLROnPlateau}


def get(spec):
    if spec is None or isinstance(spec, Schedule):
        return spec
    if callable(spec):  # a plain function (epoch, current_lr) -> lr
        return _FunctionSchedule(spec)
    if isinstance(spec, str) and spec in SCHEDULES:
        raise ValueError(f"lr_schedule={spec!r} needs its parameters: use e.g. "
                         f"mlp.schedules.{SCHEDULES[spec].__name__}(...)")
    raise ValueError(f"lr_schedule must be a Schedule ({', '.join(c.__name__ for c in SCHEDULES.values())}) "
                     f"or a function (epoch, current_lr) -> lr; got {spec!r}")


class _FunctionSchedule(Schedule):
    def __init__(self, function):
        self.function = function

    def next_rate(self, epoch, base_lr, current_lr):
        return self.function(epoch, current_lr)


def rate(schedule, epoch, base_lr, current_lr) -> float:
    """The learning rate `schedule` gives for `epoch` (a Schedule from base_lr, a function from
    current_lr), checked: a finite number >= 0 (a negative rate would climb the loss, NaN would
    silently ruin every weight)."""
    lr = schedule.next_rate(epoch, base_lr, current_lr)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr_schedule gave {lr!r} for epoch {epoch + 1}; a learning rate must be a "
                         "finite number >= 0")
    return float(lr)
