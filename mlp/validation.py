"""Checks of user data, run once at the public entry points (never inside the hot loop).
Every error names what was wrong and how to fix it."""
from __future__ import annotations

import math
import numbers

import numpy as np


def _sparse(values) -> bool:
    return type(values).__module__.startswith("scipy.sparse")


def as_numeric_array(values, name) -> np.ndarray:
    """`values` as a non-empty real (numeric or bool) NumPy array; finiteness is not checked."""
    if type(values) is np.ndarray:  # the common case, straight to the checks (train_step runs this per call)
        array = values
    elif _sparse(values):
        raise TypeError(f"{name} is a scipy sparse matrix; mlp trains on dense arrays: pass "
                        f"{name}.toarray() (mind the memory: rows x columns values)")
    else:
        try:
            array = np.asarray(values)
        except Exception as error:  # ragged lists and the like
            raise ValueError(f"{name} could not be turned into a numeric array: {error}") from None
    if array.dtype.kind == "c":
        raise ValueError(f"{name} must be real; got complex values")
    if array.dtype.kind not in "biuf":  # dtype.kind, not np.issubdtype: this runs on every train_step
        raise ValueError(f"{name} must be numeric; got an array of dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); give at least one sample")
    return array


TARGETS_IN_0_1 = ("binary_cross_entropy", "cross_entropy")  # losses whose targets are probabilities

# Values up to which a check reads them in Python (tolist, then sum, min or max): for a batch of
# a few values that is 0.3-0.5 us, where each NumPy reduction costs 1-2 us (train_step checks per call).
IN_PYTHON_UP_TO = 64


def all_finite(array) -> bool:
    """Whether every value of `array` is finite. One sum decides, as any NaN or infinity makes it
    NaN or infinite; only a sum that overflowed from finite values needs the element-wise test."""
    if array.dtype.kind != "f":
        return True
    if array.size <= IN_PYTHON_UP_TO:
        total = sum(array.ravel().tolist())
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            total = float(np.add.reduce(array, axis=None))
    return math.isfinite(total) or bool(np.isfinite(array).all())


def require_finite(array, name, source=None) -> np.ndarray:
    """`array` if every value is finite, else a ValueError naming the first bad index. With
    `source` (the values before a cast to `array`'s dtype), a value that was finite there and
    is not here is named as an overflow of the narrower type."""
    if all_finite(array):
        return array
    index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
    if source is not None and np.isfinite(source[index]):
        biggest = float(np.max(np.abs(source)))
        raise ValueError(
            f"{name} holds values beyond {array.dtype}'s range (up to {biggest:.3g}; first at index {index}): "
            f"they overflow to infinity in this {array.dtype} model. Scale them (e.g. mlp.StandardScaler) "
            "or build the model with dtype='float64'")
    raise ValueError(f"{name} contains NaN or infinite values (first at index {index}); "
                     "remove or impute them before training")


def as_finite_array(values, name) -> np.ndarray:
    return require_finite(as_numeric_array(values, name), name)


def as_dtype(array, dtype, name, finite=False) -> np.ndarray:
    """`array` as a C-contiguous array of `dtype`, checked to be finite after the cast (`finite`:
    the caller has checked `array`, so only a cast that may overflow is checked again)."""
    if array.dtype == dtype and array.flags.c_contiguous:
        return array if finite else require_finite(array, name)
    dtype = np.dtype(dtype)  # (a type such as np.float64 is accepted too)
    if array.dtype.kind in "biu" or array.dtype.itemsize <= dtype.itemsize:  # a cast that cannot overflow
        converted = np.ascontiguousarray(array, dtype=dtype)  # (integers fit float32's range, 3.4e38)
        return converted if finite else require_finite(converted, name)
    with np.errstate(over="ignore"):  # an overflow is named just below, as an error
        converted = np.ascontiguousarray(array, dtype=dtype)
    return require_finite(converted, name, source=array)


def inputs(X, n_in, dtype) -> np.ndarray:
    """X as a (batch, n_in) array of the model's dtype. A 1-D X is one sample
    (or, for a one-input network, one value per sample)."""
    X = as_numeric_array(X, "X")
    if X.ndim == 1:
        X = X.reshape(-1, 1) if n_in == 1 else X.reshape(1, -1)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (batch, n_features); got shape {X.shape}")
    if X.shape[1] != n_in:
        raise ValueError(
            f"X has {X.shape[1]} features per sample but the first layer expects n_in={n_in}; "
            f"reshape X to (batch, {n_in}) or build the model with {X.shape[1]} inputs"
        )
    return as_dtype(X, dtype, "X")


def targets(y, n_out, loss_name, n_samples, dtype) -> np.ndarray:
    """y as a (batch, n_out) array: integer class labels become one-hot for cross_entropy,
    a 1-D y becomes a column for one-output networks."""
    y = as_finite_array(y, "y")
    if y.ndim == 0:
        raise ValueError(f"y must hold one target per sample (an array of {n_samples}); got the scalar {y!r}")
    if y.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} samples but y has {y.shape[0]}; they must match")
    if loss_name == "cross_entropy" and (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and n_out > 1)):
        labels = y.reshape(-1)
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise ValueError("cross_entropy labels must be integer class indices (or one-hot rows)")
        low, high = _extremes(labels)
        if low < 0 or high >= n_out:
            raise ValueError(
                f"class labels must be in [0, {n_out - 1}] for a {n_out}-unit softmax output; "
                f"got labels from {int(low)} to {int(high)} (encode them as 0..k-1, e.g. with "
                "np.unique(y, return_inverse=True))"
            )
        return one_hot_of(labels if labels.dtype.kind in "iu" else labels.astype(np.int64), n_out, dtype)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != n_out:
        raise ValueError(
            f"y must have shape (batch, {n_out}) to match the output layer; got {y.shape}"
            + (" (for class labels use loss='cross_entropy' with a softmax output)" if n_out > 1 else "")
        )
    if loss_name in TARGETS_IN_0_1:
        low, high = _extremes(y.reshape(-1))
        if low < 0 or high > 1:
            raise ValueError(f"{loss_name} targets must lie in [0, 1]; got values from {low} to {high}")
    return as_dtype(y, dtype, "y", finite=True)


def batch(X, y, n_in, n_out, loss_name, dtype):
    """(X, Y) checked as `inputs` and `targets` check them. A batch already shaped (batch, n_in) and
    (batch, n_out) in the model's dtype takes a shortcut through the same value checks (finite, and
    in [0, 1] for the cross-entropies): 1.2-1.6 us at batch 1, where the general path costs 3-5
    (train_step checks every call). Anything else, or a check that fails, goes the general way,
    which says what is wrong."""
    if (type(X) is np.ndarray and type(y) is np.ndarray and X.dtype == dtype and y.dtype == dtype
            and X.ndim == 2 and y.shape == (X.shape[0], n_out) and X.shape[1] == n_in and X.shape[0]
            and X.flags.c_contiguous and y.flags.c_contiguous and _values_fit(X, y, loss_name)):
        return X, y
    X = inputs(X, n_in, dtype)
    return X, targets(y, n_out, loss_name, X.shape[0], dtype)


def _values_fit(X, y, loss_name) -> bool:
    """Whether X and y (float arrays) are finite and, for a cross-entropy, y within [0, 1]. A
    batch of a few values is read once into Python lists, and one sum over both decides
    finiteness as in `all_finite` (1.2-1.6 us for all of `batch` at batch 1, against 1.9-2.4
    with a pass per array and per check); False, and the general path, for a sum that
    overflowed from finite values."""
    in_0_1 = loss_name in TARGETS_IN_0_1
    if X.size + y.size > IN_PYTHON_UP_TO:
        if not (all_finite(X) and all_finite(y)):
            return False
        if not in_0_1:
            return True
        low, high = _extremes(y.reshape(-1))
        return 0 <= low and high <= 1
    y_values = y.ravel().tolist()
    if not math.isfinite(sum(X.ravel().tolist()) + sum(y_values)):
        return False
    return not in_0_1 or (0 <= min(y_values) and max(y_values) <= 1)


def numeric_dtype(value, name="dtype") -> np.dtype:
    """`value` as a NumPy dtype of numbers (bool, integer or float), or a ValueError."""
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric NumPy dtype such as 'float32' or 'int64'; got {value!r}")
    return dtype


def _extremes(labels):
    """(min, max) of a 1-D array: in Python for a batch's few labels, where NumPy's two
    reductions cost 2 us against 0.3 (train_step validates every call)."""
    if labels.size <= IN_PYTHON_UP_TO:
        values = labels.tolist()
        return min(values), max(values)
    return labels.min(), labels.max()


_IDENTITIES = {}  # (n_classes, dtype) -> a read-only identity matrix: its rows are the one-hot codes
IDENTITY_UP_TO = 256  # classes; beyond, the codes are written into zeros (no n_classes^2 matrix kept)


def one_hot_of(labels, n_classes, dtype):
    """labels: (batch,) integers in [0, n_classes), checked by the caller -> (batch, n_classes)."""
    if n_classes <= IDENTITY_UP_TO:
        key = (n_classes, np.dtype(dtype))
        identity = _IDENTITIES.get(key)
        if identity is None:
            identity = np.eye(n_classes, dtype=dtype)
            identity.flags.writeable = False
            identity = _IDENTITIES.setdefault(key, identity)
        return identity.take(labels, axis=0)  # a new array: 0.3 us at batch 1, against 1.8 to fill zeros
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def positive_int(value, name):
    """`value` as an int >= 1, or a ValueError naming `name` (bools are not counts)."""
    return integer(value, name, low=1)


def integer(value, name, low=0):
    """`value` (any integral type, NumPy's included) as an int >= `low`, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    return int(value)


def number(value, name, low=None, high=None, low_open=False, high_open=False) -> float:
    """`value` as a finite float within [low, high] (an open end where asked), or a ValueError
    naming `name` and the accepted range. NumPy scalars are numbers; bools and strings are not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{_range(low, high, low_open, high_open)}; got {value!r}")
    if (low is not None and (value <= low if low_open else value < low)) or \
            (high is not None and (value >= high if high_open else value > high)):
        raise ValueError(f"{name} must be{_range(low, high, low_open, high_open)}; got {value!r}")
    return float(value)


def _range(low, high, low_open, high_open) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return (" " + " and ".join(parts)) if parts else ""


def batch_size(value, n_samples, name="batch_size"):
    """None means the whole set (full-batch gradient descent)."""
    if value is None:
        return n_samples
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None (the whole set); got {value!r}")
    return int(min(value, n_samples))


def generator(value) -> np.random.Generator:
    """np.random.default_rng(value) for a seed (None, an integer >= 0) or a Generator, with an
    error that names the argument instead of NumPy's."""
    if isinstance(value, np.random.Generator):
        return value
    return np.random.default_rng(seed(value))


def seed(value):
    """A seed for np.random.SeedSequence: None or an integer >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"seed must be None or an integer >= 0; got {value!r}")
    return int(value)
