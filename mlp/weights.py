"""Sample and class weights: the row weights a weighted fit trains with (mlp.losses says how
they enter the loss and its gradient).

`fit(..., sample_weight=w, class_weight=c)` weighs sample i by w_i times the weight of its
class; class_weight="balanced" gives class k the weight n / (n_classes * n_k), as
scikit-learn's compute_class_weight. The product is normalised to mean 1 over the training
set: a full-batch step then follows the weighted average of the loss (the same as repeating
each sample w_i times), a mini-batch step an unbiased estimate of it, and the learning rate
keeps its meaning. Equal weights carry no information and give None: training is then
exactly the unweighted one.
"""
from __future__ import annotations

import numbers

import numpy as np

from mlp import losses


def row_weights(sample_weight, class_weight, Y, loss_name, preprocessing=None):
    """The weights of the rows of Y (n, n_out) as a (n, 1) float64 array normalised to mean 1,
    or None (no weights, or all equal). Checked: a bad value raises ValueError naming it."""
    n = Y.shape[0]
    weights = np.ones(n)
    if sample_weight is not None:
        weights = weights * _checked_sample_weight(sample_weight, n)
    if class_weight is not None:
        weights = weights * _class_weights(class_weight, Y, loss_name, preprocessing)
    if not weights.any():
        raise ValueError("the sample weights are all zero (after class_weight): no sample would train; "
                         "give at least one sample a weight above zero")
    if np.all(weights == weights[0]):
        return None
    return normalised(weights).reshape(n, 1)


def normalised(weights):
    """The weights scaled to mean 1 over their rows (the training set's, after a validation split)."""
    return weights * (len(weights) / weights.sum())


def _checked_sample_weight(sample_weight, n):
    try:
        weights = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"sample_weight must be numbers, one per sample; got {sample_weight!r:.80}") from None
    if weights.ndim == 0:
        weights = np.full(n, float(weights))
    if weights.shape != (n,):
        raise ValueError(f"sample_weight has shape {weights.shape}; it needs one weight per sample, shape ({n},)")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("sample_weight must be finite and >= 0; "
                         f"found {weights[~np.isfinite(weights) | (weights < 0)][0]}")
    return weights


def classes_of(Y, loss_name):
    """The class index of each row of the encoded targets Y (n, n_out): the one-hot unit, or for
    one sigmoid unit 0/1."""
    if loss_name not in losses.CLASSIFICATION:
        raise ValueError(f"class_weight needs a classification loss ({', '.join(sorted(losses.CLASSIFICATION))}); "
                         f"this model trains with {loss_name!r}: use sample_weight")
    if Y.shape[1] == 1:
        return (Y[:, 0] > 0.5).astype(np.intp)
    if loss_name == "binary_cross_entropy":
        raise ValueError(f"class_weight needs one class per sample; these targets are {Y.shape[1]} independent "
                         "0/1 labels (multi-label binary cross-entropy): weigh the samples with sample_weight")
    return np.argmax(Y, axis=1)


def _class_weights(class_weight, Y, loss_name, preprocessing):
    """The class weight of each row: from "balanced", or a dict {label: weight} whose labels are
    the model's classes (when it carries them) or unit indices."""
    classes = classes_of(Y, loss_name)
    n_units = max(Y.shape[1], 2)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be 'balanced' or a dict {{label: weight}}; got {class_weight!r}")
        counts = np.bincount(classes, minlength=n_units).astype(np.float64)
        present = counts > 0
        per_class = np.zeros(n_units)
        per_class[present] = len(classes) / (present.sum() * counts[present])
        return per_class[classes]
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be 'balanced' or a dict {{label: weight}}; got {class_weight!r:.80}")
    labels = list(preprocessing.classes) if preprocessing is not None and preprocessing.classes else None
    per_class = np.ones(n_units)
    for label, weight in class_weight.items():
        unit = _unit_of(label, labels, n_units)
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not np.isfinite(weight) or weight < 0:
            raise ValueError(f"class_weight[{label!r}] is {weight!r}; a class weight must be a finite number >= 0")
        per_class[unit] = float(weight)
    return per_class[classes]


def _unit_of(label, labels, n_units):
    if labels is not None:
        if label not in labels:
            raise ValueError(f"class_weight names the class {label!r}, which is not one of the model's classes "
                             f"{labels}")
        return labels.index(label)
    if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < n_units:
        raise ValueError(f"class_weight key {label!r}: without class labels in model.preprocessing the keys are "
                         f"output units 0..{n_units - 1}")
    return int(label)
