"""Finite-difference check of the hand-derived backward pass, in float64."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlp import validation


@dataclass
class GradcheckResult:
    errors: dict  # parameter name -> worst relative error
    checked: int  # how many entries were compared

    @property
    def max_error(self) -> float:
        """The worst error (NaN when any is NaN: Python's max would drop it by position)."""
        values = list(self.errors.values())
        return math.nan if any(math.isnan(v) for v in values) else max(values)

    def ok(self, tol=1e-6) -> bool:
        return self.max_error <= tol

    def __str__(self):
        lines = [f"{name:>12}: worst relative error {err:.2e}" for name, err in self.errors.items()]
        return "\n".join(lines + [f"checked {self.checked} entries, worst {self.max_error:.2e}"])


def gradcheck(model, X, y, loss=None, l1=None, l2=None, eps=1e-4, max_per_param=None,
              training=False, seed=0) -> GradcheckResult:
    """Compare `loss_and_gradients` with fourth-order central differences
    (8(L(p+h) - L(p-h)) - (L(p+2h) - L(p-2h))) / 12h, h = eps, on a float64 NumPy copy of
    `model`: truncation error O(h^4) and rounding noise ~1e-16 |L| / h both stay tiny.
    Reports the worst relative error |analytic - numeric| / max(|analytic|, |numeric|, 1e-8)
    per parameter ('dense0.W', ...).
    `max_per_param` samples that many entries of each W and b (all by default).
    With `training=True` dropout is on, with the same mask in every evaluation."""
    eps = validation.number(eps, "eps", low=0.0, low_open=True)
    if max_per_param is not None:
        max_per_param = validation.positive_int(max_per_param, "max_per_param")
    reference = model.clone(backend="numpy", dtype="float64")
    if not np.isfinite(reference.params).all():
        raise ValueError("the model's parameters contain NaN or infinite values: there is no gradient to "
                         "check (re-initialise the model, or load finite weights)")
    loss = loss if loss is not None else (model.loss.name if model.loss else "mse")
    l1 = model.l1 if l1 is None else l1
    l2 = model.l2 if l2 is None else l2

    def loss_at():
        if training:
            reference._dropout_rng = reference.backend.rng(seed)
        return reference.loss_and_gradients(X, y, loss, l1, l2, training)

    _, analytic = loss_at()
    rng = np.random.default_rng(seed)
    errors, checked = {}, 0
    for number, (layer, (dW, db)) in enumerate(zip(reference.dense_layers, analytic)):
        for name, values, grads in (("W", layer.W, dW), ("b", layer.b, db)):
            flat_values, flat_grads = values.reshape(-1), grads.reshape(-1)
            index = np.arange(flat_values.size)
            if max_per_param is not None and index.size > max_per_param:
                index = rng.choice(index, max_per_param, replace=False)
            worst = 0.0
            for i in index:
                original = flat_values[i]
                at = {}
                for k in (-2, -1, 1, 2):
                    flat_values[i] = original + k * eps
                    at[k] = loss_at()[0]
                flat_values[i] = original
                numeric = (8 * (at[1] - at[-1]) - (at[2] - at[-2])) / (12 * eps)
                exact = flat_grads[i]
                error = abs(exact - numeric) / max(abs(exact), abs(numeric), 1e-8)
                worst = error if math.isnan(error) or math.isnan(worst) else max(worst, error)
            errors[f"dense{number}.{name}"] = worst
            checked += index.size
    return GradcheckResult(errors, checked)
