"""Losses: value and gradient with respect to the output activations, written once.

Each loss is `sum(per-element terms) / normaliser(A)`:
- mse: mean over all elements (torch.nn.MSELoss); sse: one half of the sum over the batch
  (the lectures' backprop loss); mae: mean over all elements;
- binary_cross_entropy: mean over all elements, on sigmoid outputs;
- cross_entropy: mean over the batch of -sum(Y log A), on softmax outputs.

With its matching output activation (sigmoid + binary_cross_entropy, softmax + cross_entropy)
the chain rule collapses to the output delta dZ = (A - Y) / normaliser: no log(0), no
division by A(1-A). The value is then computed from the logits Z, which is exact where
A has rounded to 0 or 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class Loss:
    name: str
    value: Callable  # (A, Y) -> scalar
    gradient: Callable  # (A, Y) -> dL/dA, same shape as A
    normaliser: Callable  # shape of A -> the number the summed terms are divided by
    fused_with: Optional[str] = None  # output activation giving dZ = (A - Y) / normaliser
    value_from_logits: Optional[Callable] = None  # (Z, Y) -> scalar, when fused

    def output_delta(self, A, Y):
        """dL/dZ for the fused pair: (A - Y) / normaliser."""
        return (A - Y) * (1.0 / self.normaliser(A.shape))


def _all_elements(shape):
    return int(np.prod(shape))


def _batch(shape):
    return shape[0]


def _one(shape):
    return 1


def _tiny(A):
    return np.finfo(A.dtype).tiny


def mse(A, Y):
    E = A - Y
    return np.sum(E * E) / A.size


def mse_gradient(A, Y):
    return (A - Y) * (2.0 / A.size)


def sse(A, Y):
    E = A - Y
    return 0.5 * np.sum(E * E)


def sse_gradient(A, Y):
    return A - Y


def mae(A, Y):
    return np.sum(np.abs(A - Y)) / A.size


def mae_gradient(A, Y):
    return np.sign(A - Y) * (1.0 / A.size)


def binary_cross_entropy(A, Y):
    tiny = _tiny(A)
    terms = Y * np.log(np.maximum(A, tiny)) + (1 - Y) * np.log(np.maximum(1 - A, tiny))
    return -np.sum(terms) / A.size


def binary_cross_entropy_gradient(A, Y):
    tiny = _tiny(A)
    return (A - Y) / np.maximum(A * (1 - A), tiny) * (1.0 / A.size)


def binary_cross_entropy_from_logits(Z, Y):
    # -[y log s(z) + (1-y) log(1-s(z))] = max(z,0) - y z + log1p(e^-|z|)
    return np.sum(np.maximum(Z, 0) - Y * Z + np.log1p(np.exp(-np.abs(Z)))) / Z.size


def cross_entropy(A, Y):
    return -np.sum(Y * np.log(np.maximum(A, _tiny(A)))) / A.shape[0]


def cross_entropy_gradient(A, Y):
    return -Y / np.maximum(A, _tiny(A)) * (1.0 / A.shape[0])


def cross_entropy_from_logits(Z, Y):
    shifted = Z - np.max(Z, axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    return -np.sum(Y * log_softmax) / Z.shape[0]


LOSSES = {
    "mse": Loss("mse", mse, mse_gradient, _all_elements),
    "sse": Loss("sse", sse, sse_gradient, _one),
    "mae": Loss("mae", mae, mae_gradient, _all_elements),
    "binary_cross_entropy": Loss(
        "binary_cross_entropy", binary_cross_entropy, binary_cross_entropy_gradient,
        _all_elements, fused_with="sigmoid", value_from_logits=binary_cross_entropy_from_logits,
    ),
    "cross_entropy": Loss(
        "cross_entropy", cross_entropy, cross_entropy_gradient,
        _batch, fused_with="softmax", value_from_logits=cross_entropy_from_logits,
    ),
}

ALIASES = {
    "bce": "binary_cross_entropy", "binary_crossentropy": "binary_cross_entropy",
    "ce": "cross_entropy", "categorical_crossentropy": "cross_entropy",
    "categorical_cross_entropy": "cross_entropy", "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
}

CLASSIFICATION = {"binary_cross_entropy", "cross_entropy"}


def get(spec) -> Loss:
    if isinstance(spec, Loss):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"loss must be a name or a Loss; got {type(spec).__name__}")
    name = ALIASES.get(spec.lower(), spec.lower())
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {spec!r}. Valid losses: {', '.join(sorted(LOSSES))}.")
    return LOSSES[name]
