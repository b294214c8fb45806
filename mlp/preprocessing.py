"""What a model does to user data at its edges, saved with it so that a loaded model reads the
same data the way it was trained on.

- Input scaling: X -> (X - mean) / scale per feature (what mlp.StandardScaler or
  mlp.MinMaxScaler fitted on the training inputs), applied to every X the model is given.
- Class labels: the original class values (numbers, strings or booleans) in the order of the
  output units. Targets given as labels are mapped to unit indices (an unknown label is an
  error); `predict_classes` maps the outputs back to labels.
- Training data: where the training data came from and how the held-out test split was drawn
  (source, seed, test share, number of samples, a SHA-256 of the data), so the same split
  can be scored again (`mlp evaluate --split test`).

Everything is JSON (`config()` / `from_config()`): a model file never holds pickled objects.
`from_config` trusts nothing: a malformed part is a ValueError or TypeError saying which.
"""
from __future__ import annotations

import hashlib
import math
import numbers

import numpy as np

from mlp import validation

MAX_LISTED = 10  # unknown labels named in an error message
DATA_KEYS = {"source": str, "seed": int, "test": float, "n_samples": int, "sha256": str}


class Preprocessing:
    """Input scaling (`mean`, `scale`: one float per feature), class labels (`classes`) and
    a record of the training data (`data`); each part is optional."""

    def __init__(self, mean=None, scale=None, classes=None, data=None):
        if (mean is None) != (scale is None):
            raise ValueError("give both mean and scale (the input scaling) or neither")
        self.mean = None if mean is None else _feature_vector(mean, "mean")
        self.scale = None if scale is None else _feature_vector(scale, "scale")
        if self.scale is not None:
            if self.scale.shape != self.mean.shape:
                raise ValueError(f"mean and scale need one value per feature each; got {self.mean.size} "
                                 f"and {self.scale.size}")
            if not (self.scale > 0).all():
                raise ValueError(f"every scale must be > 0 (inputs are divided by it); got "
                                 f"{self.scale[~(self.scale > 0)][0]} for feature {int(np.argmin(self.scale > 0))}")
        self.classes = None if classes is None else _checked_classes(classes)
        self.data = None if data is None else _checked_data(data)
        if self.mean is None and self.classes is None and self.data is None:
            raise ValueError("a Preprocessing needs input scaling, classes or a data record")

    @classmethod
    def from_scaler(cls, scaler, classes=None, data=None):
        """From a fitted mlp.StandardScaler or mlp.MinMaxScaler (both transform as
        (X - mean_) / scale_)."""
        if not hasattr(scaler, "mean_") or not hasattr(scaler, "scale_"):
            raise ValueError(f"{type(scaler).__name__} is not fitted: call fit(X_train) first")
        return cls(mean=scaler.mean_, scale=scaler.scale_, classes=classes, data=data)

    # --- description -------------------------------------------------------------------
    @property
    def n_features(self):
        return None if self.mean is None else self.mean.size

    def config(self) -> dict:
        """A JSON-safe dict; `from_config` of it gives an equal Preprocessing."""
        out = {}
        if self.mean is not None:
            out["mean"], out["scale"] = self.mean.tolist(), self.scale.tolist()
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.data is not None:
            out["data"] = dict(self.data)
        return out

    def __eq__(self, other):
        return isinstance(other, Preprocessing) and self.config() == other.config()

    def __repr__(self):
        parts = []
        if self.mean is not None:
            parts.append(f"scaling of {self.n_features} features")
        if self.classes is not None:
            parts.append(f"classes={list(self.classes)!r}")
        if self.data is not None:
            parts.append(f"data={self.data!r}")
        return f"Preprocessing({', '.join(parts)})"

    def check_model(self, n_in, n_out):
        """A ValueError unless this fits a model with `n_in` inputs and `n_out` outputs."""
        if self.mean is not None and self.n_features != n_in:
            raise ValueError(f"the input scaling has {self.n_features} features but the model has "
                             f"n_in={n_in} inputs")
        if self.classes is not None and len(self.classes) != (n_out if n_out > 1 else 2):
            raise ValueError(f"{len(self.classes)} classes do not fit a model with {n_out} output(s): a "
                             "softmax output needs one unit per class, a single sigmoid unit 2 classes")

    # --- applied at the model's edges ---------------------------------------------------
    def transform_inputs(self, X, n_in):
        """X (batch, n_in) scaled as in training, in float64; X as given without scaling."""
        if self.mean is None:
            return X
        X = validation.inputs(X, n_in, np.float64)
        return (X - self.mean) / self.scale

    def encode_targets(self, y, n_out):
        """Targets given as class labels -> unit indices (batch,); targets with one column
        per output unit (one-hot rows, probabilities) and models without classes: y as given."""
        if self.classes is None:
            return y
        if n_out > 1 and np.ndim(y) == 2 and np.shape(y)[1] == n_out:
            return y
        return self.encode(y)

    def encode(self, labels):
        """Class labels (batch,) or (batch, 1) -> int64 indices into `classes`."""
        labels = _label_array(labels, self.classes)
        uniques, inverse = np.unique(labels, return_inverse=True)
        index = {value: i for i, value in enumerate(self.classes)}
        codes = np.array([index.get(value, -1) for value in uniques.tolist()], dtype=np.int64)
        if (codes < 0).any():
            unknown = uniques[codes < 0].tolist()
            listed = ", ".join(map(repr, unknown[:MAX_LISTED])) + (", ..." if len(unknown) > MAX_LISTED else "")
            raise ValueError(f"y holds labels the model was not trained on ({listed}); its classes are "
                             f"{list(self.classes)!r}")
        return codes[inverse.reshape(-1)]

    def decode(self, indices):
        """Unit indices (batch,) -> the original class labels (batch,)."""
        return np.asarray(self.classes)[np.asarray(indices, dtype=np.int64)]


def from_config(config) -> Preprocessing:
    """The Preprocessing a `config()` dict describes; ValueError/TypeError on anything malformed."""
    if not isinstance(config, dict):
        raise TypeError(f"preprocessing must be a dict; got {type(config).__name__}")
    unknown = set(config) - {"mean", "scale", "classes", "data"}
    if unknown:
        raise ValueError(f"preprocessing has unknown entries {sorted(unknown)}")
    for key in ("mean", "scale", "classes"):
        if key in config and not isinstance(config[key], list):
            raise TypeError(f"preprocessing {key} must be a list; got {type(config[key]).__name__}")
    return Preprocessing(config.get("mean"), config.get("scale"), config.get("classes"), config.get("data"))


def checked_for(preprocessing, n_in, n_out):
    """`preprocessing` (a Preprocessing or None) after checking that it fits the model."""
    if preprocessing is None:
        return None
    if not isinstance(preprocessing, Preprocessing):
        raise TypeError("model.preprocessing must be an mlp.preprocessing.Preprocessing or None; got "
                        f"{type(preprocessing).__name__}")
    preprocessing.check_model(n_in, n_out)
    return preprocessing


def predicted_classes(outputs, preprocessing=None):
    """The class of each row of `outputs` (batch, n_out): the most probable unit (a single
    sigmoid unit: 1 when above 0.5), as an original label when `preprocessing` has classes,
    else as a unit index."""
    indices = np.argmax(outputs, axis=1) if outputs.shape[1] > 1 else (outputs[:, 0] > 0.5).astype(np.int64)
    if preprocessing is None or preprocessing.classes is None:
        return indices
    return preprocessing.decode(indices)


def fingerprint(*arrays) -> str:
    """SHA-256 of arrays' shapes, dtypes and bytes: which data a model was trained on."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes() if array.dtype.kind != "U" else "\0".join(array.tolist()).encode())
    return digest.hexdigest()


# --- checks -------------------------------------------------------------------------------
def _feature_vector(values, name):
    if isinstance(values, (list, tuple)) and not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                     for v in values):
        raise TypeError(f"preprocessing {name} must hold numbers")
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "fiu":
        raise ValueError(f"preprocessing {name} must be a non-empty list of numbers, one per feature; "
                         f"got shape {array.shape} of {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"preprocessing {name} must be finite; got {array[~np.isfinite(array)][0]}")
    return array


def _class_kind(value):
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "str"
    raise TypeError(f"class labels must be numbers, strings or booleans; got {value!r} "
                    f"({type(value).__name__})")


def _checked_classes(classes):
    """A tuple of JSON-safe Python values: all numbers (finite; ints stay ints), all strings or
    all booleans; at least two, no two equal."""
    values = classes.tolist() if isinstance(classes, np.ndarray) else classes
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"classes must be a list of labels; got {type(classes).__name__}")
    kinds = {_class_kind(v) for v in values}
    if len(kinds) > 1:
        raise TypeError(f"class labels must be all numbers, all strings or all booleans; got {sorted(kinds)}")
    out = []
    for value in values:
        if isinstance(value, (bool, np.bool_)):
            out.append(bool(value))
        elif isinstance(value, numbers.Integral):
            if not -2**63 <= int(value) < 2**63:
                raise ValueError(f"class label {value} does not fit in a 64-bit integer")
            out.append(int(value))
        elif isinstance(value, numbers.Real):
            if not math.isfinite(value):
                raise ValueError(f"class labels must be finite; got {value}")
            out.append(float(value))
        else:
            out.append(str(value))
    if len(out) < 2:
        raise ValueError(f"a classifier needs at least 2 classes; got {out!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"class labels must be distinct; got {out!r}")
    return tuple(out)


def _checked_data(data):
    if not isinstance(data, dict):
        raise TypeError(f"the training data record must be a dict; got {type(data).__name__}")
    unknown = set(data) - set(DATA_KEYS)
    if unknown or "source" not in data:
        raise ValueError(f"the training data record needs 'source' and may have {sorted(DATA_KEYS)}; "
                         f"got {sorted(data)}")
    out = {}
    for key, value in data.items():
        kind = DATA_KEYS[key]
        if value is None and key in ("seed", "test"):
            out[key] = None
            continue
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) if kind is int else \
            isinstance(value, numbers.Real) and not isinstance(value, bool) if kind is float else isinstance(value, str)
        if not ok:
            raise TypeError(f"the training data record's {key!r} must be a {kind.__name__}; got {value!r}")
        out[key] = kind(value)
    if out.get("test") is not None and not 0 < out["test"] < 1:
        raise ValueError(f"the training data record's test share must be in (0, 1); got {out['test']}")
    if out.get("n_samples", 1) < 1:
        raise ValueError(f"the training data record's n_samples must be >= 1; got {out['n_samples']}")
    if out.get("seed") is not None and out["seed"] < 0:
        raise ValueError(f"the training data record's seed must be >= 0; got {out['seed']}")
    if "sha256" in out and (len(out["sha256"]) != 64 or set(out["sha256"]) - set("0123456789abcdef")):
        raise ValueError("the training data record's sha256 must be 64 hex digits")
    return out


def _label_array(labels, classes):
    """`labels` as a 1-D array of the kind `classes` holds (numbers: finite)."""
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"y must be one class label per sample, shape (batch,); got shape {array.shape}")
    if array.size == 0:
        raise ValueError("y is empty; give at least one sample")
    kind = _class_kind(classes[0])
    if kind == "str":
        if array.dtype.kind not in "UO" or not all(isinstance(v, str) for v in array.tolist()):
            raise ValueError(f"y must hold class labels as strings like the model's classes {list(classes)!r}; "
                             f"got values of dtype {array.dtype}")
        return array.astype(str)
    if kind == "bool" and array.dtype.kind != "b":
        raise ValueError(f"y must hold booleans like the model's classes {list(classes)!r}; got dtype {array.dtype}")
    return validation.as_finite_array(array, "y")
