"""Data utilities: one-hot encoding, scaling fitted on training data, splits, mini-batches."""
from __future__ import annotations

import math

import numpy as np

from mlp import validation
from mlp.validation import as_finite_array, generator, number, one_hot_of, positive_int


def one_hot(labels, n_classes=None, dtype="float32"):
    """Integer labels (n,) in [0, n_classes) -> one-hot rows (n, n_classes)."""
    dtype = validation.numeric_dtype(dtype)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        if labels.ndim == 1 and labels.dtype.kind in "iuf" and np.all(np.abs(labels) < 2**53) \
                and np.all(labels == np.round(labels)):  # whole numbers (NaN and inf fail the bound)
            labels = labels.astype(np.int64)
        else:
            raise ValueError("one_hot needs a 1-D array of integer labels")
    labels = labels.astype(np.int64)
    if n_classes is None:
        if labels.size == 0:
            raise ValueError("one_hot of no labels needs n_classes: give it, e.g. one_hot([], n_classes=3)")
        n_classes = int(labels.max()) + 1
    n_classes = positive_int(n_classes, "n_classes")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes - 1}]; got {labels.min()}..{labels.max()}")
    return one_hot_of(labels, n_classes, dtype)


def _features(X, name="X") -> np.ndarray:
    X = as_finite_array(X, name)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, features); got shape {X.shape}")
    return X.astype(np.float64)


def _magnitude(X) -> np.ndarray:
    """Per-feature largest |x| (1 where all are 0): dividing by it keeps sums of squares and
    differences of values near float64's limit (1.8e308) from overflowing."""
    biggest = np.abs(X).max(axis=0)
    return np.where(biggest > 0, biggest, 1.0)


class StandardScaler:
    """z-score: (x - mean) / std per feature, fitted on training data only.
    Constant features get std 1 (they become 0 rather than NaN). Values up to float64's
    limit are handled: statistics are taken on each feature divided by its largest |x|."""

    def fit(self, X):
        X = _features(X)
        unit = _magnitude(X)
        scaled = X / unit
        self.mean_ = scaled.mean(axis=0) * unit
        std = scaled.std(axis=0) * unit
        self.scale_ = np.where(std > 0, std, 1.0)
        return self

    def transform(self, X):
        X = self._checked(X)
        with np.errstate(over="ignore", invalid="ignore"):
            out = (X - self.mean_) / self.scale_
            if not np.isfinite(out).all():  # x - mean overflowed: the same value, taken apart
                out = X / self.scale_ - self.mean_ / self.scale_
        return _require_representable(out, "transformed X")

    def inverse_transform(self, X):
        X = self._checked(X)
        with np.errstate(over="ignore", invalid="ignore"):
            out = X * self.scale_ + self.mean_
        return _require_representable(out, "inverse-transformed X")

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    def _checked(self, X):
        if not hasattr(self, "scale_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X_train) first")
        X = _features(X)
        if X.shape[1] != self.scale_.size:
            raise ValueError(f"X has {X.shape[1]} features but the scaler was fitted on "
                             f"{self.scale_.size} features")
        return X


def _require_representable(values, name):
    if not np.isfinite(values).all():
        raise ValueError(f"{name} overflows float64 (values beyond 1.8e308): scale the data down first")
    return values


class MinMaxScaler(StandardScaler):
    """Min-max scaling of each feature to `feature_range`, fitted on training data only."""

    def __init__(self, feature_range=(0.0, 1.0)):
        try:
            low, high = feature_range
        except (TypeError, ValueError):
            raise ValueError(f"feature_range must be a pair (low, high); got {feature_range!r}") from None
        low, high = number(low, "feature_range low"), number(high, "feature_range high")
        if not low < high or not math.isfinite(high - low):
            raise ValueError(f"feature_range must be (low, high) with low < high, both finite and their "
                             f"difference too; got {feature_range}")
        self.feature_range = (low, high)

    def fit(self, X):
        X = _features(X)
        low, high = self.feature_range
        with np.errstate(over="ignore"):
            span = X.max(axis=0) - X.min(axis=0)
        if not np.isfinite(span).all():
            raise ValueError("a feature's range (max - min) overflows float64; scale X down before "
                             "MinMaxScaler (e.g. divide by its largest |value|)")
        with np.errstate(under="ignore"):
            scale = np.where(span > 0, span, 1.0) / (high - low)
        if not (scale > 0).all():
            raise ValueError(f"a feature's range ({span.min():.3g}) is too small to map onto feature_range "
                             f"{self.feature_range}: its scale underflows to 0; use a narrower feature_range")
        offset = _require_representable(X.min(axis=0) - low * scale, "the scaler's offset")
        self.scale_, self.mean_ = scale, offset  # so that transform = (x - min)/span*(h-l) + l
        return self


def train_val_test_split(*arrays, val=0.15, test=0.15, seed=None, shuffle=True):
    """Split arrays (same first dimension) into train, validation and test parts.
    A part asked for (share > 0) gets at least one sample; the training part must keep one.
    Returns (a_train, a_val, a_test, b_train, b_val, b_test, ...)."""
    if not arrays:
        raise ValueError("give at least one array to split")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("all arrays must have the same number of samples")
    val, test = number(val, "val", low=0.0, high=1.0), number(test, "test", low=0.0, high=1.0)
    if val + test >= 1:
        raise ValueError(f"val and test must be >= 0 with val + test < 1; got {val}, {test}")
    n_test, n_val = (max(1, int(round(n * share))) if share > 0 else 0 for share in (test, val))
    if n - n_test - n_val < 1:
        raise ValueError(f"splitting {n} samples into val={val} and test={test} (at least one sample each) "
                         "would leave the training set empty; give more samples or smaller shares")
    order = generator(seed).permutation(n) if shuffle else np.arange(n)
    parts = (order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test])
    return tuple(np.asarray(a)[p] for a in arrays for p in parts)


def train_test_split(*arrays, test=0.2, seed=None, shuffle=True):
    """Split arrays into train and test parts: (a_train, a_test, b_train, b_test, ...)."""
    split = train_val_test_split(*arrays, val=0.0, test=test, seed=seed, shuffle=shuffle)
    return tuple(part for i, part in enumerate(split) if i % 3 != 1)


def minibatches(X, y, batch_size, shuffle=True, seed=None):
    """Yield (X_batch, y_batch) pairs covering the data once, reshuffled on each call."""
    n = len(X)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    size = n if batch_size is None else batch_size
    for start in range(0, n, size):
        rows = order[start:start + size]
        yield X[rows], y[rows]
