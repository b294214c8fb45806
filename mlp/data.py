"""Data utilities: one-hot encoding, scaling fitted on training data, splits, mini-batches."""
from __future__ import annotations

import numpy as np

from mlp.validation import as_finite_array, one_hot_of


def one_hot(labels, n_classes=None, dtype="float32"):
    """Integer labels (n,) in [0, n_classes) -> one-hot rows (n, n_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        if labels.ndim == 1 and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise ValueError("one_hot needs a 1-D array of integer labels")
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes - 1}]; got {labels.min()}..{labels.max()}")
    return one_hot_of(labels, n_classes, dtype)


class StandardScaler:
    """z-score: (x - mean) / std per feature, fitted on training data only.
    Constant features get std 1 (they become 0 rather than NaN)."""

    def fit(self, X):
        X = as_finite_array(X, "X")
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        return self

    def transform(self, X):
        self._check_fitted()
        return (np.asarray(X, dtype=float) - self.mean_) / self.scale_

    def inverse_transform(self, X):
        self._check_fitted()
        return np.asarray(X, dtype=float) * self.scale_ + self.mean_

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    def _check_fitted(self):
        if not hasattr(self, "scale_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X_train) first")


class MinMaxScaler(StandardScaler):
    """Min-max scaling of each feature to `feature_range`, fitted on training data only."""

    def __init__(self, feature_range=(0.0, 1.0)):
        low, high = feature_range
        if not low < high:
            raise ValueError(f"feature_range must be (low, high) with low < high; got {feature_range}")
        self.feature_range = (float(low), float(high))

    def fit(self, X):
        X = as_finite_array(X, "X")
        low, high = self.feature_range
        span = X.max(axis=0) - X.min(axis=0)
        self.scale_ = np.where(span > 0, span, 1.0) / (high - low)
        self.mean_ = X.min(axis=0) - low * self.scale_  # so that transform = (x - min)/span*(h-l) + l
        return self


def train_val_test_split(*arrays, val=0.15, test=0.15, seed=None, shuffle=True):
    """Split arrays (same first dimension) into train, validation and test parts.
    Returns (a_train, a_val, a_test, b_train, b_val, b_test, ...)."""
    if not arrays:
        raise ValueError("give at least one array to split")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("all arrays must have the same number of samples")
    if val < 0 or test < 0 or val + test >= 1:
        raise ValueError(f"val and test must be >= 0 with val + test < 1; got {val}, {test}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    n_test, n_val = int(round(n * test)), int(round(n * val))
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
