"""Losses, each written once as a per-element term and its derivative.

A loss value is `sum(term(A, Y)) / normaliser(shape)` and its gradient with respect to the
output activations `term_gradient(A, Y) / normaliser(shape)`:
- mse: mean over all elements (torch.nn.MSELoss); sse: one half of the sum over the batch
  (the lectures' backprop loss); mae: mean over all elements;
- binary_cross_entropy: mean over all elements, on sigmoid outputs;
- cross_entropy: mean over the batch of -sum(Y log A), on softmax outputs.

With its matching output activation (sigmoid + binary_cross_entropy, softmax + cross_entropy)
the chain rule collapses to the output delta dZ = (A - Y) / normaliser: no log(0), no division
by A(1-A). The value is then computed from the logits Z, exact where A has rounded to 0 or 1.
The terms are element-wise and branch-free, so compiled backends take them as they are.

Sample weights: with row weights r (batch, 1) the loss is `sum(r * term(A, Y)) / normaliser`
and every gradient and output delta is the unweighted one times r, row by row. `fit` hands
the weights normalised to mean 1 over the training set (mlp.sample_weights), so the loss
stays on the scale of the unweighted one and a full batch gives the weighted average.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from mlp.activations import log_softmax  # the one row-wise definition

TINY = 1e-38  # floor inside log(): log(TINY) = -87.5, finite in float32 and float64


@dataclass(frozen=True)
class Loss:
    name: str
    term: Callable  # (a, y) -> per-element loss
    term_gradient: Callable  # (a, y) -> d term / d a
    normaliser: Callable  # shape of A -> the number the summed terms are divided by
    fused_with: Optional[str] = None  # output activation giving dZ = (A - Y) / normaliser
    logit_term: Optional[Callable] = None  # (Z, Y) -> per-element loss from the logits, when fused

    def value(self, A, Y, weights=None):
        return _weighted(self.term(A, Y), weights).sum() / self.normaliser(A.shape)

    def value_from_logits(self, Z, Y, weights=None):
        """The fused pair's value from the logits Z (exact where A has rounded to 0 or 1)."""
        return _weighted(self.logit_term(Z, Y), weights).sum() / self.normaliser(Z.shape)

    def gradient(self, A, Y, weights=None):
        return _weighted(self.term_gradient(A, Y), weights) * (1.0 / self.normaliser(A.shape))

    def output_delta(self, A, Y, weights=None):
        """dL/dZ for the fused pair: (A - Y) / normaliser."""
        return _weighted(A - Y, weights) * (1.0 / self.normaliser(A.shape))


def _weighted(terms, weights):
    """terms (batch, n_out) times the row weights (batch, 1), or as they are without weights."""
    return terms if weights is None else terms * weights


def all_elements(shape):
    return math.prod(shape)  # not np.prod: 6 us a call, several times a step


def batch_rows(shape):
    return shape[0]


def one(shape):
    return 1


# --- the per-element terms -------------------------------------------------------------

def squared_error(a, y):
    return (a - y) * (a - y)


def squared_error_gradient(a, y):
    return 2 * (a - y)


def half_squared_error(a, y):
    return 0.5 * (a - y) * (a - y)


def half_squared_error_gradient(a, y):
    return a - y


def absolute_error(a, y):
    return np.abs(a - y)


def absolute_error_gradient(a, y):
    return np.sign(a - y)


def binary_cross_entropy_term(a, y):
    return -(y * np.log(np.maximum(a, TINY)) + (1 - y) * np.log(np.maximum(1 - a, TINY)))


def binary_cross_entropy_gradient(a, y):
    return (a - y) / np.maximum(a * (1 - a), TINY)


def binary_cross_entropy_logit_term(z, y):
    # -[y log s(z) + (1-y) log(1-s(z))] = max(z,0) - y z + log1p(e^-|z|)
    return np.maximum(z, 0) - y * z + np.log1p(np.exp(-np.abs(z)))


def cross_entropy_term(a, y):
    return -y * np.log(np.maximum(a, TINY))


def cross_entropy_gradient(a, y):
    return -y / np.maximum(a, TINY)


def cross_entropy_logit_term(Z, Y):
    return -(Y * log_softmax(Z))


LOSSES = {
    "mse": Loss("mse", squared_error, squared_error_gradient, all_elements),
    "sse": Loss("sse", half_squared_error, half_squared_error_gradient, one),
    "mae": Loss("mae", absolute_error, absolute_error_gradient, all_elements),
    "binary_cross_entropy": Loss(
        "binary_cross_entropy", binary_cross_entropy_term, binary_cross_entropy_gradient,
        all_elements, fused_with="sigmoid", logit_term=binary_cross_entropy_logit_term,
    ),
    "cross_entropy": Loss(
        "cross_entropy", cross_entropy_term, cross_entropy_gradient,
        batch_rows, fused_with="softmax", logit_term=cross_entropy_logit_term,
    ),
}

# the plain functions, for users: loss(A, Y) -> float
mse = LOSSES["mse"].value
sse = LOSSES["sse"].value
mae = LOSSES["mae"].value
binary_cross_entropy = LOSSES["binary_cross_entropy"].value
cross_entropy = LOSSES["cross_entropy"].value

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
