"""Checks of user data, run once at the public entry points (never inside the hot loop).
Every error names what was wrong and how to fix it."""
from __future__ import annotations

import numbers

import numpy as np


def as_finite_array(values, name) -> np.ndarray:
    try:
        array = np.asarray(values)
    except Exception as error:  # ragged lists and the like
        raise ValueError(f"{name} could not be turned into a numeric array: {error}") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name} must be numeric; got an array of dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real; got complex values")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); give at least one sample")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{name} contains NaN or infinite values (first at index {tuple(int(i) for i in bad)}); "
            "remove or impute them before training"
        )
    return array


def inputs(X, n_in, dtype) -> np.ndarray:
    """X as a (batch, n_in) array of the model's dtype. A 1-D X is one sample
    (or, for a one-input network, one value per sample)."""
    X = as_finite_array(X, "X")
    if X.ndim == 1:
        X = X.reshape(-1, 1) if n_in == 1 else X.reshape(1, -1)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (batch, n_features); got shape {X.shape}")
    if X.shape[1] != n_in:
        raise ValueError(
            f"X has {X.shape[1]} features per sample but the first layer expects n_in={n_in}; "
            f"reshape X to (batch, {n_in}) or build the model with {X.shape[1]} inputs"
        )
    return np.ascontiguousarray(X, dtype=dtype)


def targets(y, n_out, loss_name, n_samples, dtype) -> np.ndarray:
    """y as a (batch, n_out) array: integer class labels become one-hot for cross_entropy,
    a 1-D y becomes a column for one-output networks."""
    y = as_finite_array(y, "y")
    if y.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} samples but y has {y.shape[0]}; they must match")
    if loss_name == "cross_entropy" and (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and n_out > 1)):
        labels = y.reshape(-1)
        if not np.all(labels == np.round(labels)):
            raise ValueError("cross_entropy labels must be integer class indices (or one-hot rows)")
        low, high = labels.min(), labels.max()
        if low < 0 or high >= n_out:
            raise ValueError(
                f"class labels must be in [0, {n_out - 1}] for a {n_out}-unit softmax output; "
                f"got labels from {int(low)} to {int(high)} (encode them as 0..k-1, e.g. with "
                "np.unique(y, return_inverse=True))"
            )
        return one_hot_of(labels.astype(np.int64), n_out, dtype)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != n_out:
        raise ValueError(
            f"y must have shape (batch, {n_out}) to match the output layer; got {y.shape}"
            + (" (for class labels use loss='cross_entropy' with a softmax output)" if n_out > 1 else "")
        )
    if loss_name in ("binary_cross_entropy", "cross_entropy") and (y.min() < 0 or y.max() > 1):
        raise ValueError(
            f"{loss_name} targets must lie in [0, 1]; got values from {y.min()} to {y.max()}"
        )
    return np.ascontiguousarray(y, dtype=dtype)


def one_hot_of(labels, n_classes, dtype):
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def positive_int(value, name):
    """`value` as an int, or a ValueError naming `name` (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def batch_size(value, n_samples):
    """None means the whole set (full-batch gradient descent)."""
    if value is None:
        return n_samples
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"batch_size must be a positive integer or None (full batch); got {value!r}")
    return int(min(value, n_samples))
