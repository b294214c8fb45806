"""Metrics. Each one is declared once as sums over a batch (added up over batches and ranks on
the device, nothing read back per batch) and the value those sums give over the whole set.

A: model outputs (batch, n_out); Y: targets of the same shape (one-hot for classes).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mlp.preprocessing import predicted_classes


@dataclass(frozen=True)
class Metric:
    """A metric as fit and evaluate compute it: per batch, `totals(A, Y)` gives a tuple of sums
    (scalars or small arrays) that add up over batches and ranks, on the device; over the whole
    set, `result(totals)` gives the value. `fits(n_out)` says whether it applies to an output
    layer of n_out units (checked by compile)."""
    totals: Callable
    result: Callable
    fits: Callable = None  # None: any output layer
    higher_is_better: bool = True  # which way early stopping watches it


def _ratio(totals) -> float:
    part, whole = totals
    return float(part) / float(whole)


def _labels_of(A, Y):
    """(predicted, true) class per sample, and the number of classes: predicted as
    predict_classes decides (one output unit: class 1 above 0.5; several: argmax)."""
    predicted = predicted_classes(A)
    if A.shape[1] == 1:
        return predicted, (Y[:, 0] >= 0.5).astype(np.int64), 2
    return predicted, Y.argmax(axis=1), A.shape[1]


def _accuracy_totals(A, Y):
    """Correct predictions. One output: threshold 0.5 (binary); several: argmax (classes)."""
    predicted, true, _ = _labels_of(A, Y)
    return (predicted == true).sum(), A.shape[0]


def _confusion_totals(A, Y):
    """Per class: true positives, predicted and actual counts (n_classes,); and 1 for a one-unit
    (binary) classifier's batch, 0 for a softmax's (a sum that still says which it was)."""
    predicted, true, k = _labels_of(A, Y)
    hit = predicted == true
    return (np.bincount(true[hit], minlength=k), np.bincount(predicted, minlength=k), np.bincount(true, minlength=k),
            int(A.shape[1] == 1))


def _per_class(kind):
    """precision, recall or F1 from the confusion totals: of the positive class (1) for one output
    unit, the unweighted mean over classes (macro) for a softmax; 0 where a class has no predictions
    (precision) or no samples (recall), as scikit-learn's zero_division=0."""
    def result(totals):
        tp, predicted, actual = (np.asarray(t, dtype=float) for t in totals[:3])
        denominator = {"precision": predicted, "recall": actual, "f1": predicted + actual}[kind]
        numerator = 2 * tp if kind == "f1" else tp
        scores = np.divide(numerator, denominator, out=np.zeros_like(tp), where=denominator > 0)
        return float(scores[1]) if totals[3] else float(scores.mean())
    return result


AUC_BINS = 4096  # score histogram per class: exact unless a positive and a negative share a bin


def _auc_totals(A, Y):
    """Histograms of the positive class's score over [0, 1], for positive and negative samples."""
    score = A[:, -1]
    positive = (Y[:, -1] >= 0.5)
    bins = np.minimum((score * AUC_BINS).astype(int), AUC_BINS - 1).clip(0)
    return (np.bincount(bins[positive], minlength=AUC_BINS), np.bincount(bins[~positive], minlength=AUC_BINS))


def _auc(totals) -> float:
    """Binary ROC AUC: P(a positive scores above a negative), ties (a shared bin) counting half."""
    positives, negatives = (np.asarray(t, dtype=float) for t in totals)
    n_pos, n_neg = positives.sum(), negatives.sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("auc needs samples of both classes; this set has one class only")
    below = np.cumsum(negatives) - negatives  # negatives in lower bins
    return float((positives * (below + 0.5 * negatives)).sum() / (n_pos * n_neg))


TOP_K = 5  # top_k_accuracy's k, as Keras's TopKCategoricalAccuracy


def _top_k_totals(A, Y):
    true_score = np.take_along_axis(A, Y.argmax(axis=1)[:, None], axis=1)
    above = (A > true_score).sum(axis=1)  # classes scored above the true one (ties count for it)
    return (above < TOP_K).sum(), A.shape[0]


def _r2_totals(A, Y):
    E = Y - A
    return (E * E).sum(axis=0), Y.sum(axis=0), (Y * Y).sum(axis=0), Y.shape[0]


def _r2(totals) -> float:
    """The coefficient of determination, averaged over outputs (scikit-learn's r2_score: an
    output whose targets are constant scores 1 if predicted exactly, else 0)."""
    residual, total, squares, n = (np.asarray(t, dtype=float) for t in totals)
    spread = squares - total * total / n
    exact = residual == 0
    scores = np.where(spread > 0, 1 - residual / np.where(spread > 0, spread, 1), np.where(exact, 1.0, 0.0))
    return float(scores.mean())


def _squared_error_totals(A, Y):
    E = A - Y
    return (E * E).sum(), A.size


def _absolute_error_totals(A, Y):
    return abs(A - Y).sum(), A.size


def _binary(n_out):
    return n_out <= 2


def _several(n_out):
    return n_out > 1


METRICS = {
    "accuracy": Metric(_accuracy_totals, _ratio),
    "precision": Metric(_confusion_totals, _per_class("precision")),
    "recall": Metric(_confusion_totals, _per_class("recall")),
    "f1": Metric(_confusion_totals, _per_class("f1")),
    "auc": Metric(_auc_totals, _auc, _binary),
    "top_k_accuracy": Metric(_top_k_totals, _ratio, _several),
    "mse": Metric(_squared_error_totals, _ratio, higher_is_better=False),
    "mae": Metric(_absolute_error_totals, _ratio, higher_is_better=False),
    "r2": Metric(_r2_totals, _r2),
}


def add(totals, more):
    """Totals of two stretches of batches (None: nothing yet)."""
    return more if totals is None else tuple(a + b for a, b in zip(totals, more))


def resolve(metrics, n_out=None) -> dict:
    """{logged name: Metric} for compile's `metrics`: registered names, and functions
    (y_true, y_pred) -> float under their __name__. A function gets the epoch's targets and
    outputs as NumPy arrays (n, n_out), y_true encoded as the loss sees it (one-hot for classes):
    its batches are kept on the device and read back once an epoch."""
    metrics = [metrics] if isinstance(metrics, str) or callable(metrics) else list(metrics or [])
    table = {}
    for metric in metrics:
        name, definition = _named(metric, n_out)
        if name in table:
            raise ValueError(f"metric {name!r} is given twice")
        table[name] = definition
    return table


def _named(metric, n_out):
    if callable(metric) and not isinstance(metric, str):
        name = getattr(metric, "__name__", None)
        if not name or name == "<lambda>" or not name.isidentifier():
            raise ValueError(f"a metric function needs a name to be logged under: def my_metric(y_true, y_pred) "
                             f"-> float, not {metric!r:.60}")
        if name in METRICS or name in ("loss", "lr", "seconds") or name.startswith("val_"):
            raise ValueError(f"metric function {name!r} would be logged under a name fit already uses; rename it")
        return name, Metric(_kept_outputs, functools.partial(_call, metric, name))  # picklable: models are
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}. Valid metrics: {', '.join(METRICS)}, or a function "
                         "(y_true, y_pred) -> float.")
    fits = METRICS[metric].fits
    if n_out is not None and fits is not None and not fits(n_out):
        raise ValueError(f"metric {metric!r} does not apply to an output layer of {n_out} units "
                         + ("(binary ROC AUC: one sigmoid unit or two softmax units)" if metric == "auc"
                            else "(it needs several classes)"))
    return metric, METRICS[metric]


def _kept_outputs(A, Y):
    """A function metric's 'totals': the batch's outputs (copied: a compiled step reuses its
    buffer) and targets, kept on the device and joined over the epoch."""
    return [A.copy()], [Y]


def _host(parts):
    return np.concatenate([np.asarray(part.get() if hasattr(part, "get") else part) for part in parts])


def _call(function, name, totals) -> float:
    outputs, targets = totals
    value = function(_host(targets), _host(outputs))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric function {name!r} returned {value!r:.60}; it must return one number") from None


def is_summable(definition) -> bool:
    """Whether a metric's totals add up across ranks (a function's kept outputs do not)."""
    return any(definition is registered for registered in METRICS.values())


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
