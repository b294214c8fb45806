"""Metrics. Each one is a sum over a batch plus the count it is averaged over, so `fit`
can accumulate them on the device batch by batch without reading anything back.

A: model outputs (batch, n_out); Y: targets of the same shape (one-hot for classes).
"""
from __future__ import annotations

import numpy as np


def accuracy_sum(A, Y):
    """Correct predictions. One output: threshold 0.5 (binary); several: argmax (classes)."""
    if A.shape[1] == 1:
        return np.sum((A >= 0.5) == (Y >= 0.5)), A.shape[0]
    return np.sum(np.argmax(A, axis=1) == np.argmax(Y, axis=1)), A.shape[0]


def squared_error_sum(A, Y):
    E = A - Y
    return np.sum(E * E), A.size


def absolute_error_sum(A, Y):
    return np.sum(np.abs(A - Y)), A.size


METRICS = {"accuracy": accuracy_sum, "mse": squared_error_sum, "mae": absolute_error_sum}


def check_names(names):
    names = [names] if isinstance(names, str) else list(names or [])
    for name in names:
        if name not in METRICS:
            raise ValueError(f"Unknown metric {name!r}. Valid metrics: {', '.join(METRICS)}.")
    return names


# --- plain NumPy helpers for users (labels or outputs, like scikit-learn) -----------

def accuracy(y_true, y_pred) -> float:
    """Share of equal labels. Either argument may be labels (n,), one-hot or outputs (n, k),
    or one-column probabilities (thresholded at 0.5)."""
    return float(np.mean(_labels(y_true) == _labels(y_pred)))


def mean_squared_error(y_true, y_pred) -> float:
    e = np.asarray(y_true, float) - np.asarray(y_pred, float)
    return float(np.mean(e * e))


def mean_absolute_error(y_true, y_pred) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))))


def _labels(y):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1)
    y = y.reshape(-1)
    if np.issubdtype(y.dtype, np.floating) and np.all((y >= 0) & (y <= 1)):
        return (y >= 0.5).astype(int)
    return y
