"""Property-based tests of the public API (NumPy backend, small models).

For any input: a result that is right (finite, of the right shape, and what the call
promises), or an mlp error raised at the boundary before any state changes. "An mlp error"
is an MLPError, or a ValueError/TypeError raised by a `raise` in mlp's own code (not one that
escapes from NumPy or from deeper down). "State" is what a later call would see: the
weights, the optimizer and its state, the compiled settings, the shuffling state, a scaler's
fitted statistics, a perceptron's weights; the caller's arrays are never written either.

Inputs: random shapes, dtypes (float32, float64, int64, bool), non-finite and out-of-range
values, sizes and hyperparameters (NumPy scalars among them), bad types. Every test is
derandomized (the same examples on every run, no example database), so a failure here is
a failure everywhere; hypothesis prints the smallest example it found.
"""
import math
import os
import traceback

import numpy as np
import pytest
from hypothesis import (
    HealthCheck,
    assume,
    currently_in_test_context,
    event,
    given,
    settings,
)
from hypothesis import strategies as st

import mlp
from mlp import datasets, schedules

PROPERTY = settings(deadline=None, database=None, derandomize=True, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def examples(n):
    return settings(PROPERTY, max_examples=n)


NAN, INF = float("nan"), float("inf")
SPECIAL_VALUES = [NAN, INF, -INF, 1e300, -1e300, 1e39]  # 1e39: finite in float64, not in float32
MLP_PACKAGE = os.path.dirname(os.path.abspath(mlp.__file__)) + os.sep


# --- the property -------------------------------------------------------------------

def attempt(action):
    """(result, None) or (None, the exception it raised); the outcome is counted in
    hypothesis' statistics (pytest --hypothesis-show-statistics), to see both paths are taken."""
    try:
        result = action()
    except Exception as error:  # noqa: BLE001  (what was raised is what the property judges)
        _count(f"refused: {type(error).__name__}")
        return None, error
    _count("a result")
    return result, None


def _count(outcome):
    if currently_in_test_context():
        event(outcome)


def _raise_site(error):
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return os.path.abspath(frame.filename), frame.lineno, (frame.line or "").strip()


def assert_refused_at_the_boundary(error):
    """An MLPError, or a ValueError/TypeError that mlp raises itself (a `raise` in mlp)."""
    if isinstance(error, mlp.MLPError):
        return
    filename, line, source = _raise_site(error)
    where = f"{os.path.relpath(filename, os.path.dirname(MLP_PACKAGE.rstrip(os.sep)))}:{line}"
    assert isinstance(error, (ValueError, TypeError)), f"raw {type(error).__name__} at {where}: {error}"
    assert filename.startswith(MLP_PACKAGE) and source.startswith("raise"), (
        f"{type(error).__name__} from inside ({where}: {source!r}), not mlp's own check: {error}")
    assert str(error), f"{type(error).__name__} without a message at {where}"


def _copy(value):
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def _rng_state(rng):
    return repr(rng.bit_generator.state) if hasattr(rng, "bit_generator") else None


def model_state(model) -> dict:
    """Everything of a model that a later call sees, as copies."""
    to_numpy = model.backend.to_numpy
    state = {"weights": np.array(to_numpy(model.params), copy=True),
             "compiled settings": repr((model.loss and model.loss.name, model.l1, model.l2, model.clip_norm,
                                        list(model.metrics))),
             "optimizer": id(model.optimizer), "shuffling state": _rng_state(model._shuffle_rng),
             "dropout state": _rng_state(model._dropout_rng)}
    optimizer = model.optimizer
    if optimizer is not None:
        state["optimizer settings"] = repr((optimizer.config(), optimizer.lr, getattr(optimizer, "step", None)))
        for name, array in optimizer.state_arrays().items():
            state[f"optimizer {name}"] = np.array(to_numpy(array), copy=True)
    return state


def object_state(thing) -> dict:
    """The public attributes of a plain object (a scaler, a perceptron), as copies."""
    return {key: _copy(value) for key, value in vars(thing).items()}


def assert_same_state(before, after, error=None):
    """`after` equals `before` key by key (arrays bit for bit, NaN equal to NaN)."""
    why = f" (refused with {type(error).__name__}: {error})" if error is not None else ""
    assert before.keys() == after.keys(), f"state gained or lost {set(before) ^ set(after)}{why}"
    for key in before:
        old, new = before[key], after[key]
        if isinstance(old, np.ndarray) or isinstance(new, np.ndarray):
            same = (isinstance(old, np.ndarray) and isinstance(new, np.ndarray) and old.shape == new.shape
                    and old.dtype == new.dtype and np.array_equal(old, new, equal_nan=old.dtype.kind in "fc"))
        else:
            same = repr(old) == repr(new)
        assert same, f"{key} changed{why}"


def assert_inputs_untouched(originals, arguments):
    for index, (original, argument) in enumerate(zip(originals, arguments)):
        if isinstance(original, np.ndarray):
            assert np.array_equal(original, argument, equal_nan=original.dtype.kind in "fc"), \
                f"argument {index} was written to"


def finite(array) -> bool:
    return bool(np.all(np.isfinite(np.asarray(array, dtype=np.float64))))


def holds_non_finite(value) -> bool:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return not np.all(np.isfinite(array))


# --- strategies -----------------------------------------------------------------------
# Each example breaks at most two things (a setting, or a part of the data) and keeps the
# rest valid, so that both paths are taken often: a result to check, or a refusal that
# has one cause (hypothesis shrinks the broken set to what matters).

JUNK = [0, -1, -0.5, NAN, INF, -INF, True, "1", None]


def numpy_scalar(value):
    """The same value as a NumPy scalar (valid wherever the plain number is)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return np.int64(value) if isinstance(value, int) else np.float64(value)


def setting(valid, *bad):
    """(valid values, plain and as NumPy scalars; values to refuse or to handle: zero,
    negatives, non-finite, a bool, a string, None and whatever `bad` adds)."""
    return st.one_of(valid, valid.map(numpy_scalar)), st.sampled_from([*JUNK, *bad])


def count(low, high, *bad):
    return setting(st.integers(low, high), 2.5, 10**12, *bad)


def positive(low, high, *bad):
    return setting(st.floats(low, high), 1e300, *bad)


def fixed(valid_values, bad_values):
    return st.sampled_from(valid_values), st.sampled_from(bad_values)


@st.composite
def broken_parts(draw, names, most=2):
    """Which of `names` get a bad value this time: none, one or two."""
    return draw(st.sets(st.sampled_from(sorted(names)), max_size=most))


def draw_settings(draw, table, broken):
    """{name: a bad value if name is in `broken`, else a valid one} for a table of
    name -> (valid strategy, bad strategy)."""
    return {name: draw(table[name][name in broken]) for name in table}


KINDS = ("float64", "float32", "int64", "bool")


def cast(values, kind):
    """float64 `values` as `kind`: non-finite values stay non-finite in floats (1e39 becomes
    inf in float32) and become large integers in integer arrays."""
    if kind == "bool":
        return values > 0
    if kind == "int64":
        return np.nan_to_num(values, posinf=1e9, neginf=-1e9).clip(-1e9, 1e9).astype(kind)
    with np.errstate(over="ignore"):
        return values.astype(kind)


@st.composite
def arrays(draw, shape, kinds=KINDS, low=-3.0, high=3.0, specials=False):
    """An array of `shape` in one of `kinds`, values in [low, high]; with `specials`, one or
    two of SPECIAL_VALUES at random places."""
    size = math.prod(shape)
    values = np.array(draw(st.lists(st.floats(low, high), min_size=size, max_size=size)),
                      dtype=np.float64).reshape(shape)
    if specials and size:
        for position, value in draw(st.lists(st.tuples(st.integers(0, size - 1), st.sampled_from(SPECIAL_VALUES)),
                                             min_size=1, max_size=2)):
            values.flat[position] = value
    return cast(values, draw(st.sampled_from(kinds)))


def bad_shapes(n_in, rows):
    """Shapes a (rows, n_in) input must not have (or, 1-D, may have with another meaning)."""
    return st.sampled_from([(0, n_in), (rows,), (rows, n_in + 1), (rows, n_in, 1)])


# task: (output activation, loss, smallest and largest number of outputs)
TASKS = {"regression": ("identity", "mse", 1, 3), "multiclass": ("softmax", "cross_entropy", 2, 3),
         "binary": ("sigmoid", "binary_cross_entropy", 1, 1)}
HIDDEN_ACTIVATIONS = ["relu", "tanh", "sigmoid", "identity", "softplus", {"name": "leaky_relu", "slope": 0.1},
                      {"name": "elu", "alpha": 0.5}]


@st.composite
def models(draw, compiled=True, dtypes=("float32", "float64")):
    """(a small valid model on NumPy, its task); compiled with a valid optimizer when asked."""
    task = draw(st.sampled_from(sorted(TASKS)))
    output, loss, low, high = TASKS[task]
    sizes = [draw(st.integers(1, 3)), *draw(st.lists(st.integers(1, 4), max_size=2)), draw(st.integers(low, high))]
    model = mlp.MLP(sizes, activation=draw(st.sampled_from(HIDDEN_ACTIVATIONS)), output=output,
                    dropout=draw(st.sampled_from([0.0, 0.3])), dtype=draw(st.sampled_from(dtypes)),
                    seed=draw(st.integers(0, 3)), backend="numpy")
    if compiled:
        optimizer = draw(st.sampled_from([{"name": "sgd", "lr": 0.05}, {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                                          {"name": "adam", "lr": 0.01}]))
        model.compile(loss=loss, optimizer=optimizer, l2=draw(st.sampled_from([0.0, 1e-3])))
    return model, task


@st.composite
def targets(draw, task, n_out, rows, bad_values=False):
    """Targets for `task`: labels (int, float, bool) or one-hot rows for classifiers, values
    for regression; with `bad_values`, one out of range, non-integral or non-finite."""
    if task == "regression":
        shape = (rows,) if n_out == 1 and draw(st.booleans()) else (rows, n_out)
        return draw(arrays(shape, kinds=("float64", "float32", "int64"), specials=bad_values))
    classes = 2 if task == "binary" else n_out
    labels = np.array(draw(st.lists(st.integers(0, classes - 1), min_size=rows, max_size=rows)), dtype=np.int64)
    if task == "multiclass" and draw(st.booleans()):
        y = np.eye(n_out)[labels]
    else:
        kinds = ["int64", "float64", "float32"] + (["bool"] if task == "binary" else [])
        y = labels.astype(draw(st.sampled_from(kinds)))
    if bad_values and rows:
        y = y.astype(np.float64)
        y.flat[draw(st.integers(0, y.size - 1))] = draw(st.sampled_from([-1.0, 0.5, float(classes), 7.0, NAN, INF]))
    return y


DATA_PARTS = ("X values", "X shape", "y values", "y rows")


@st.composite
def data_for(draw, model, task, broken=(), min_rows=1):
    """(X, y) for `model`, valid but for the DATA_PARTS in `broken`."""
    rows = draw(st.integers(min_rows, 10))
    shape = draw(bad_shapes(model.n_in, rows)) if "X shape" in broken else (rows, model.n_in)
    X = draw(arrays(shape, specials="X values" in broken))
    y_rows = rows + draw(st.sampled_from([-1, 1])) if "y rows" in broken else rows
    return X, draw(targets(task, model.n_out, y_rows, bad_values="y values" in broken))


# fit's keyword arguments: valid values, and values to refuse or to handle
FIT_SETTINGS = {
    "epochs": count(1, 3),
    "batch_size": (st.one_of(st.none(), st.integers(1, 12), st.integers(1, 12).map(np.int64)),
                   st.sampled_from([0, -1, 2.5, True, "4", NAN, 10**12])),
    "shuffle": fixed([True, False, np.bool_(True)], ["yes", None, 2]),
    "validation_split": fixed([0.0, 0.25, 0.5, np.float32(0.25)], [0.99, -0.1, 1.0, NAN, INF, "0.2", None]),
    "early_stopping": fixed([None, ("EarlyStopping", {"patience": 1, "monitor": "loss"})],
                            [0, -1, True, 2.5, "3", 1, ("EarlyStopping", {"patience": 2})]),  # 1: needs val_loss
    "lr_schedule": fixed([None, ("StepLR", {"step_size": 1, "gamma": 0.5}), ("CosineLR", {"period": 2}),
                          ("ReduceLROnPlateau", {"patience": 1}), ("function", 0.01)],
                         ["step", "nope", 5, ("function", NAN), ("function", -0.1), ("function", "fast")]),
}


def build(spec):
    """A fresh object from a (name, arguments) spec (objects are never shared between examples)."""
    if not isinstance(spec, tuple):
        return spec
    name, arguments = spec
    if name == "EarlyStopping":
        return mlp.EarlyStopping(**arguments)
    if name == "function":
        return lambda epoch, base_lr: arguments
    return getattr(schedules, name)(**arguments)


@st.composite
def fit_cases(draw):
    """(model, task, X, y, fit's keyword arguments), at most two things broken."""
    model, task = draw(models())
    broken = draw(broken_parts([*DATA_PARTS, *FIT_SETTINGS]))
    X, y = draw(data_for(model, task, broken))
    arguments = {name: build(value) for name, value in draw_settings(draw, FIT_SETTINGS, broken).items()}
    return model, task, X, y, arguments


def samples(X, model) -> int:
    """How many samples the model sees in X: a 1-D X is one sample, or one value per sample
    for a one-input model."""
    return 1 if X.ndim == 1 and model.n_in > 1 else X.shape[0]


def assert_fit_result(model, history, X):
    """A fit that returned: finite weights, finite losses, finite predictions of X's rows."""
    assert finite(model.backend.to_numpy(model.params)), "fit returned with non-finite weights"
    for key in ("loss", "val_loss", "lr"):
        if key in history.history:
            assert finite(history[key]), f"history[{key!r}] = {history[key]}"
    outputs = model.predict(X)
    assert outputs.shape == (samples(X, model), model.n_out), outputs.shape
    assert finite(outputs), "predictions after fit are not finite"


# --- the model: training --------------------------------------------------------------

@examples(80)
@given(fit_cases())
def test_fit_trains_to_finite_weights_or_refuses_before_changing_anything(case):
    model, _, X, y, arguments = case
    before, originals = model_state(model), (_copy(X), _copy(y))
    history, error = attempt(lambda: model.fit(X, y, verbose=0, **arguments))
    assert_inputs_untouched(originals, (X, y))
    if isinstance(error, mlp.TrainingDivergedError):  # steps were taken: the last finite weights stay
        assert finite(model.backend.to_numpy(model.params)), "divergence left non-finite weights"
    elif error is not None:
        assert_refused_at_the_boundary(error)
        assert_same_state(before, model_state(model), error)
    else:
        assert not holds_non_finite(X) and not holds_non_finite(y), "fit accepted non-finite data"
        assert_fit_result(model, history, X)


@examples(30)
@given(st.data())
def test_fit_accepts_every_valid_input_numpy_scalars_and_integer_or_bool_data_included(data):
    model, task = data.draw(models())
    X, y = data.draw(data_for(model, task, min_rows=4))  # room for a validation split
    arguments = {"epochs": data.draw(st.sampled_from([1, 2, np.int64(2), np.int32(1), np.uint8(2)])),
                 "batch_size": data.draw(st.sampled_from([None, 1, 3, 64, np.int64(4), np.int16(2)])),
                 "validation_split": data.draw(st.sampled_from([0.0, 0.25, np.float32(0.25), np.float64(0.5)])),
                 "shuffle": data.draw(st.sampled_from([True, False, np.bool_(True)]))}
    history = model.fit(X, y, verbose=0, **arguments)
    assert_fit_result(model, history, X)


@examples(50)
@given(st.data())
def test_train_step_updates_to_finite_weights_or_refuses_before_changing_anything(data):
    model, task = data.draw(models())
    X, y = data.draw(data_for(model, task, data.draw(broken_parts(DATA_PARTS, most=1))))
    before = model_state(model)
    value, error = attempt(lambda: model.train_step(X, y))
    if error is not None:
        assert_refused_at_the_boundary(error)
        assert_same_state(before, model_state(model), error)
    else:
        assert not holds_non_finite(X) and not holds_non_finite(y), "train_step accepted non-finite data"
        assert finite(model.backend.to_numpy(value)) and finite(model.backend.to_numpy(model.params))


# --- the model: settings ------------------------------------------------------------------

OPTIMIZER_SPECS = (
    st.one_of(st.sampled_from(["sgd", "adam", "SGD"]),
              st.fixed_dictionaries({"name": st.sampled_from(["sgd", "adam"]), "lr": positive(1e-4, 1.0)[0]})),
    st.one_of(st.sampled_from(["rmsprop", "", 0, None, {"lr": 0.1}]),
              st.fixed_dictionaries({"name": st.sampled_from(["sgd", "adam"]), "lr": positive(1e-4, 1.0)[1]}),
              st.fixed_dictionaries({"name": st.just("sgd"), "momentum": st.sampled_from([1.0, 1.5, -0.1, NAN])}),
              st.fixed_dictionaries({"name": st.just("adam"),
                                     "betas": st.sampled_from([(1.0, 0.9), (-0.1, 0.9), (NAN, 0.9), (0.9,), "ab"]),
                                     "eps": positive(1e-12, 1e-3)[1]})))
COMPILE_SETTINGS = {
    "loss": fixed(["mse", "mae", "sse", "cross_entropy", "binary_cross_entropy", "ce"], ["hinge", "", 3, None]),
    "optimizer": OPTIMIZER_SPECS,
    "l1": setting(st.floats(0.0, 0.1)), "l2": setting(st.floats(0.0, 0.1)),
    "clip_norm": (st.one_of(st.none(), setting(st.floats(0.1, 10.0))[0]), setting(st.floats(0.1, 10.0))[1]),
    "metrics": fixed([None, [], ["accuracy"], ["mse", "mae"], "mse"], [["bogus"], 5, [None]]),
}


@examples(60)
@given(st.data())
def test_compile_keeps_valid_settings_or_refuses_and_keeps_the_old_ones(data):
    model, _ = data.draw(models(compiled=data.draw(st.booleans())))
    arguments = draw_settings(data.draw, COMPILE_SETTINGS, data.draw(broken_parts(COMPILE_SETTINGS)))
    before = model_state(model)
    _, error = attempt(lambda: model.compile(**arguments))
    if error is not None:
        assert_refused_at_the_boundary(error)
        assert_same_state(before, model_state(model), error)
        return
    for name in ("l1", "l2"):
        value = getattr(model, name)
        assert math.isfinite(value) and value >= 0, f"compile kept {name}={value!r}"
    assert model.clip_norm is None or (math.isfinite(model.clip_norm) and model.clip_norm > 0), model.clip_norm
    assert math.isfinite(model.optimizer.lr) and model.optimizer.lr > 0, f"compile kept lr={model.optimizer.lr!r}"


OPTIMIZERS = {
    "SGD": (mlp.SGD, {"lr": positive(1e-4, 1.0), "momentum": setting(st.floats(0.0, 0.99), 1.0),
                      "nesterov": fixed([False], ["no", None])}),
    "SGD with momentum": (mlp.SGD, {"lr": positive(1e-4, 1.0), "momentum": setting(st.floats(0.1, 0.99), 1.0),
                                    "nesterov": fixed([True, False], ["no", None])}),
    "Adam": (mlp.Adam, {"lr": positive(1e-4, 1.0),
                        "betas": (st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 0.999)),
                                  st.sampled_from([(1.0, 0.9), (0.9, 1.0), (-0.1, 0.9), (NAN, 0.9), (0.9,), "ab"])),
                        "eps": positive(1e-12, 1e-3)}),
}


@examples(50)
@given(st.data())
def test_optimizers_hold_usable_hyperparameters_or_refuse_them(data):
    kind, table = OPTIMIZERS[data.draw(st.sampled_from(sorted(OPTIMIZERS)))]
    arguments = draw_settings(data.draw, table, data.draw(broken_parts(table, most=1)))
    optimizer, error = attempt(lambda: kind(**arguments))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    hyperparameters = optimizer.config()
    assert math.isfinite(optimizer.lr) and optimizer.lr > 0, hyperparameters
    for name in ("momentum", "beta1", "beta2"):
        if hasattr(optimizer, name):
            assert 0 <= getattr(optimizer, name) < 1, hyperparameters
    if hasattr(optimizer, "eps"):
        assert math.isfinite(optimizer.eps) and optimizer.eps > 0, hyperparameters
    model = mlp.MLP((2, 3, 1), seed=0, backend="numpy")
    model.compile(loss="mse", optimizer=optimizer)
    _, error = attempt(lambda: model.fit(np.ones((4, 2)), np.zeros(4), epochs=2, verbose=0))
    if error is not None:
        assert isinstance(error, mlp.TrainingDivergedError), f"{type(error).__name__}: {error}"
    assert finite(model.params), f"two epochs with {hyperparameters} left non-finite weights"


SCHEDULES = {
    "StepLR": {"step_size": count(1, 5), "gamma": setting(st.floats(0.01, 1.0), 2.0)},
    "ExponentialLR": {"gamma": setting(st.floats(0.5, 1.0), 1.5)},
    "CosineLR": {"period": count(1, 5), "min_lr": setting(st.floats(0.0, 1e-3))},
    "ReduceLROnPlateau": {"factor": setting(st.floats(0.1, 0.9), 1.0), "patience": count(0, 3),
                          "min_delta": setting(st.floats(0.0, 0.1)), "min_lr": setting(st.floats(0.0, 1e-3))},
}


@examples(60)
@given(st.data())
def test_schedules_give_finite_non_negative_rates_or_refuse_their_settings(data):
    name = data.draw(st.sampled_from(sorted(SCHEDULES)))
    arguments = draw_settings(data.draw, SCHEDULES[name], data.draw(broken_parts(SCHEDULES[name], most=1)))
    make = getattr(schedules, name)
    schedule, error = attempt(lambda: make(**arguments))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    for epoch in range(12):
        rate = schedule(epoch, 0.1)
        assert math.isfinite(rate) and rate >= 0, f"{name} gave lr {rate!r} at epoch {epoch}"
        schedule.observe(1.0)  # a plateau: ReduceLROnPlateau lowers its rate
    model = mlp.MLP((2, 3, 1), seed=0, backend="numpy")
    model.compile(loss="mse", optimizer=mlp.SGD(0.1))
    before = model_state(model)
    history, error = attempt(lambda: model.fit(np.ones((4, 2)), np.zeros(4), epochs=4, verbose=0,
                                               lr_schedule=make(**arguments)))
    if error is not None:
        assert_refused_at_the_boundary(error)
        assert_same_state(before, model_state(model), error)
    else:
        assert finite(history["lr"]) and min(history["lr"]) >= 0 and finite(model.params), history["lr"]


EARLY_STOPPING = {"patience": count(1, 3), "min_delta": setting(st.floats(0.0, 0.1)),
                  "monitor": fixed(["val_loss", "loss", "accuracy", "val_accuracy"], ["bogus", 3, None]),
                  "restore_best_weights": fixed([True, False], ["yes", None])}


@examples(40)
@given(st.data())
def test_early_stopping_holds_usable_settings_or_refuses_them(data):
    arguments = draw_settings(data.draw, EARLY_STOPPING, data.draw(broken_parts(EARLY_STOPPING, most=1)))
    stopper, error = attempt(lambda: mlp.EarlyStopping(**arguments))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    assert isinstance(stopper.patience, int) and stopper.patience >= 1, stopper.patience
    assert math.isfinite(stopper.min_delta) and stopper.min_delta >= 0, stopper.min_delta
    model = mlp.MLP((2, 3, 2), output="softmax", seed=0, backend="numpy")
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(0.01))
    X, y = datasets.xor(16, noise=0.1, seed=0)
    before = model_state(model)
    history, error = attempt(lambda: model.fit(X, y, epochs=6, verbose=0, validation_split=0.25,
                                               early_stopping=stopper))
    if error is not None:
        assert_refused_at_the_boundary(error)
        assert_same_state(before, model_state(model), error)
    else:
        assert finite(model.params) and len(history["loss"]) <= 6


# --- the model: inference and inspection (never a state change) -----------------------------

@examples(60)
@given(st.data())
def test_predict_gives_finite_outputs_of_the_right_shape_or_refuses(data):
    model, _ = data.draw(models())
    broken = data.draw(broken_parts(["X values", "X shape", "batch_size"], most=1))
    rows = data.draw(st.integers(1, 10))
    X = data.draw(arrays(data.draw(bad_shapes(model.n_in, rows)) if "X shape" in broken else (rows, model.n_in),
                         specials="X values" in broken))
    batch_size = data.draw(FIT_SETTINGS["batch_size"][1] if "batch_size" in broken
                           else st.sampled_from([8192, 1, 3, np.int64(2)]))
    classes = data.draw(st.booleans())
    before, original = model_state(model), _copy(X)
    if classes:
        outputs, error = attempt(lambda: model.predict_classes(X, batch_size=batch_size))
    else:
        outputs, error = attempt(lambda: model.predict(X, batch_size=batch_size))
    assert_same_state(before, model_state(model), error)
    assert_inputs_untouched([original], [X])
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    assert not holds_non_finite(X), "predict accepted non-finite input"
    rows = samples(X, model)
    assert outputs.shape == ((rows,) if classes else (rows, model.n_out)), outputs.shape
    assert finite(outputs)
    if classes:
        assert outputs.min(initial=0) >= 0 and outputs.max(initial=0) < max(2, model.n_out)


@examples(50)
@given(st.data())
def test_evaluate_and_loss_and_gradients_give_finite_numbers_or_refuse_and_never_change_state(data):
    model, task = data.draw(models())
    table = {"batch_size": (st.sampled_from([8192, 1, 3, np.int64(2)]), FIT_SETTINGS["batch_size"][1]),
             "l1": setting(st.floats(0.0, 0.1)), "l2": setting(st.floats(0.0, 0.1))}
    broken = data.draw(broken_parts([*DATA_PARTS, *table], most=1))
    X, y = data.draw(data_for(model, task, broken))
    arguments = draw_settings(data.draw, table, broken)
    which = data.draw(st.sampled_from(["evaluate", "loss_and_gradients"]))

    def action():
        if which == "evaluate":
            return model.evaluate(X, y, batch_size=arguments["batch_size"])
        return model.loss_and_gradients(X, y, l1=arguments["l1"], l2=arguments["l2"])
    before = model_state(model)
    result, error = attempt(action)
    assert_same_state(before, model_state(model), error)
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    assert not holds_non_finite(X) and not holds_non_finite(y), f"{which} accepted non-finite data"
    if which == "evaluate":
        assert set(result) == {"loss", *model.metrics} and all(math.isfinite(v) for v in result.values()), result
    else:
        value, grads = result
        assert math.isfinite(value) and value >= 0, f"loss {value} with l1={arguments['l1']!r}, l2={arguments['l2']!r}"
        assert [(dW.shape, db.shape) for dW, db in grads] == [(d.W.shape, d.b.shape) for d in model.dense_layers]
        assert all(finite(dW) and finite(db) for dW, db in grads)


GRADCHECK_SETTINGS = {"eps": (st.sampled_from([1e-4, 1e-3, 1e-6, np.float32(1e-3)]),
                              st.sampled_from([*JUNK, 1e-300, 10.0])),
                      "max_per_param": (st.one_of(st.none(), st.integers(1, 3)), count(1, 3)[1])}


@examples(40)
@given(st.data())
def test_gradcheck_reports_finite_errors_or_refuses_and_never_changes_state(data):
    model, task = data.draw(models())
    X, y = data.draw(data_for(model, task))
    arguments = draw_settings(data.draw, GRADCHECK_SETTINGS, data.draw(broken_parts(GRADCHECK_SETTINGS, most=1)))
    before = model_state(model)
    result, error = attempt(lambda: mlp.gradcheck(model, X, y, **arguments))
    assert_same_state(before, model_state(model), error)
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    assert result.checked > 0 and math.isfinite(result.max_error), str(result)


@examples(40)
@given(st.data())
def test_warmup_compiles_or_refuses_and_never_changes_state(data):
    model, _ = data.draw(models(compiled=data.draw(st.booleans())))
    valid, bad = count(1, 64, 10**9)
    sizes = data.draw(st.lists(valid, max_size=2)) + data.draw(st.lists(bad, max_size=1))
    before = model_state(model)
    seconds, error = attempt(lambda: model.warmup(*sizes))
    assert_same_state(before, model_state(model), error)
    if error is not None:
        assert_refused_at_the_boundary(error)
    else:
        assert math.isfinite(seconds) and seconds >= 0


@examples(50)
@given(st.data())
def test_set_weights_sets_finite_weights_of_the_right_shapes_or_refuses(data):
    model, _ = data.draw(models())
    broken = data.draw(broken_parts(["values", "a shape", "a layer"], most=1))
    pairs, bad_layer = [], data.draw(st.integers(0, len(model.dense_layers) - 1))
    for index, layer in enumerate(model.dense_layers):
        W_shape, specials = layer.W.shape, "values" in broken and index == bad_layer
        if "a shape" in broken and index == bad_layer:
            W_shape = data.draw(st.sampled_from([(W_shape[0] + 1, W_shape[1]), W_shape[::-1] + (1,), (W_shape[0],)]))
        pairs.append((data.draw(arrays(W_shape, specials=specials)), data.draw(arrays(layer.b.shape))))
    if "a layer" in broken:
        pairs = data.draw(st.sampled_from([pairs[:-1], [*pairs, pairs[-1]], [(W,) for W, _ in pairs]]))
    before = model_state(model)
    _, error = attempt(lambda: model.set_weights(pairs))
    if error is not None:
        assert_refused_at_the_boundary(error)
        assert_same_state(before, model_state(model), error)
        return
    for (W, b), (W_set, b_set) in zip(pairs, model.get_weights()):
        assert finite(W_set) and finite(b_set), "set_weights kept non-finite weights"
        np.testing.assert_array_equal(W_set, W.astype(model.dtype))
        np.testing.assert_array_equal(b_set, b.astype(model.dtype))


# --- building models ------------------------------------------------------------------------

MODEL_SETTINGS = {
    "sizes": (st.lists(st.integers(1, 4), min_size=2, max_size=4),
              st.one_of(st.lists(count(1, 4)[1], min_size=2, max_size=3), st.sampled_from([[], [3], 5, "23"]))),
    "activation": (st.sampled_from(["relu", "tanh", "sigmoid", "identity", "linear", "softplus", "step",
                                    {"name": "leaky_relu", "slope": 0.2}, {"name": "elu", "alpha": 2.0}]),
                   st.one_of(st.sampled_from(["swish", "", 5, None, {"alpha": 1.0}]),
                             st.fixed_dictionaries({"name": st.just("leaky_relu"),
                                                    "slope": setting(st.floats(0.0, 0.5), 1.0, 2.0)[1]}),
                             st.fixed_dictionaries({"name": st.just("elu"),
                                                    "alpha": setting(st.floats(0.1, 2.0), 1e300)[1]}))),
    "output": fixed(["identity", "softmax", "sigmoid", "tanh"], ["nope", None, 3]),
    "dropout": setting(st.floats(0.0, 0.9), 1.0),
    "init": fixed([None, "he", "xavier"], ["bogus", 5, {"name": "he"}]),
    "dtype": fixed([None, "float32", "float64", np.float32, np.dtype("float64")], ["float16", "int32", 3, "f"]),
    "seed": (st.one_of(st.none(), st.integers(0, 2**70), st.integers(0, 9).map(np.int64)),
             st.sampled_from([-1, "a", 1.5, True, NAN])),
}


@examples(80)
@given(st.data())
def test_models_build_to_finite_reproducible_predictions_or_refuse(data):
    arguments = draw_settings(data.draw, MODEL_SETTINGS, data.draw(broken_parts(MODEL_SETTINGS, most=1)))
    model, error = attempt(lambda: mlp.MLP(backend="numpy", **arguments))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    assert finite(model.params), "initial weights are not finite"
    X = np.linspace(-3, 3, 5 * model.n_in).reshape(5, model.n_in)
    outputs = model.predict(X)
    assert outputs.shape == (5, model.n_out) and finite(outputs), f"predictions {outputs} with {arguments}"
    if arguments["seed"] is not None:  # the same seed, the same weights
        np.testing.assert_array_equal(mlp.MLP(backend="numpy", **arguments).params, model.params)


# --- data utilities -----------------------------------------------------------------------

@st.composite
def label_cases(draw):
    """(labels, n_classes, dtype) for one_hot: at most one of them bad."""
    broken = draw(broken_parts(["labels", "n_classes", "dtype"], most=1))
    n, classes = draw(st.integers(0, 8)), draw(st.integers(1, 4))
    labels = np.array(draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)), dtype=np.int64)
    labels = draw(st.sampled_from([labels, labels.astype(np.float64), labels.astype(np.int8), list(labels)]))
    if "labels" in broken:
        labels = draw(st.one_of(arrays((max(n, 1),), low=-2, high=5, specials=draw(st.booleans())),
                                arrays((max(n, 1), 2), low=0, high=3), st.sampled_from([[0.5], [-1], "ab", 3, [[1]]])))
    n_classes = draw(st.one_of(st.none(), st.integers(classes, 5), st.integers(classes, 5).map(np.int64)))
    if "n_classes" in broken:
        n_classes = draw(st.sampled_from([0, -1, 2.5, True, "3", NAN, 10**12]))
    dtype = draw(st.sampled_from(["bogus", "S3", "U2", 5] if "dtype" in broken else ["float32", "float64", "int8"]))
    return labels, n_classes, dtype


@examples(50)
@given(label_cases())
def test_one_hot_encodes_each_label_once_or_refuses(case):
    labels, n_classes, dtype = case
    original = _copy(labels)
    encoded, error = attempt(lambda: mlp.one_hot(labels, n_classes, dtype=dtype))
    assert_inputs_untouched([original], [labels])
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    labels = np.asarray(labels)
    assert encoded.dtype.kind in "biuf", f"one_hot gave an array of {encoded.dtype} for dtype={dtype!r}"
    assert encoded.ndim == 2 and encoded.shape[0] == labels.shape[0], encoded.shape
    if n_classes is not None:
        assert encoded.shape[1] == n_classes
    assert np.all(encoded.sum(axis=1) == 1) and np.array_equal(encoded.argmax(axis=1), labels), (labels, encoded)


SCALER_RANGES = fixed([(0.0, 1.0), (-1.0, 1.0), (0, 255), (np.float32(-2), np.int64(2)), (-1e300, 1e300)],
                      [(1.0, 0.0), (0.0, INF), (NAN, 1.0), (-1e308, 1e308), (0.0,), "01", None])


@examples(60)
@given(st.data())
def test_scalers_fit_and_transform_to_finite_right_values_or_refuse_before_changing(data):
    broken = data.draw(broken_parts(["feature_range", "X values", "X magnitude"], most=1))
    kind = data.draw(st.sampled_from(["standard", "minmax"]))
    feature_range = data.draw(SCALER_RANGES["feature_range" in broken])
    scaler, error = attempt(lambda: mlp.StandardScaler() if kind == "standard" else mlp.MinMaxScaler(feature_range))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    scaler.fit(np.array([[0.0, 1.0], [2.0, 3.0]]))  # a fitted scaler: a refused fit must leave it so
    X = data.draw(arrays((data.draw(st.integers(1, 8)), data.draw(st.sampled_from([2, 2, 1, 3]))),
                         low=-1e3, high=1e3, specials="X values" in broken))
    if "X magnitude" in broken:
        X = X * data.draw(st.sampled_from([1e300, 1e-300, -1e200]))
    before, original = object_state(scaler), _copy(X)
    _, error = attempt(lambda: scaler.fit(X))
    assert_inputs_untouched([original], [X])
    if error is not None:
        assert_refused_at_the_boundary(error)
        assert_same_state(before, object_state(scaler), error)
        return
    assert not holds_non_finite(X), "the scaler fitted non-finite data"
    assert finite(scaler.mean_) and finite(scaler.scale_) and np.all(scaler.scale_ > 0), vars(scaler)
    fitted_state = object_state(scaler)
    Z, error = attempt(lambda: scaler.transform(X))
    assert_same_state(fitted_state, object_state(scaler), error)
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    assert Z.shape == np.shape(X) and finite(Z), f"transform gave {Z}"
    X64 = np.asarray(X, dtype=np.float64)
    varying = np.ptp(X64, axis=0) > 1e-290  # a spread float64 can hold (a subnormal one counts as constant)
    if kind == "standard" and varying.any():
        np.testing.assert_allclose(Z[:, varying].mean(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(Z[:, varying].std(axis=0), 1, rtol=1e-6)
    if kind == "minmax" and varying.any():
        low, high = (float(v) for v in feature_range)
        tolerance = 1e-9 * max(abs(low), abs(high), high - low)
        np.testing.assert_allclose(Z[:, varying].min(axis=0), low, atol=tolerance, rtol=0)
        np.testing.assert_allclose(Z[:, varying].max(axis=0), high, atol=tolerance, rtol=0)


SPLIT_SETTINGS = {"val": setting(st.floats(0.0, 0.3), 1.0, 0.6), "test": setting(st.floats(0.0, 0.3), 1.0, 0.6),
                  "seed": (st.one_of(st.none(), st.integers(0, 10)), st.sampled_from([-1, "s", 2.5, True])),
                  "shuffle": fixed([True, False], ["no", None])}


@examples(60)
@given(st.data())
def test_splits_partition_the_rows_keeping_a_training_set_or_refuse(data):
    broken = data.draw(broken_parts([*SPLIT_SETTINGS, "rows", "lengths"], most=1))
    arguments = draw_settings(data.draw, SPLIT_SETTINGS, broken)
    n = data.draw(st.integers(0, 2) if "rows" in broken else st.integers(4, 12))
    a = np.arange(n)
    two = data.draw(st.booleans()) or "lengths" in broken
    arrays_ = (a, np.arange(n + ("lengths" in broken)) * 10) if two else (a,)
    parts, error = attempt(lambda: mlp.train_val_test_split(*arrays_, **arguments))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    assert len(parts) == 3 * len(arrays_)
    train, validation, testing = parts[:3]
    assert len(train) >= 1, "an empty training set"
    assert np.array_equal(np.sort(np.concatenate([train, validation, testing])), a), "the parts do not partition"
    for share, part in ((arguments["val"], validation), (arguments["test"], testing)):
        assert (len(part) >= 1) if share > 0 else (len(part) == 0), (share, len(part))
        assert len(part) == 1 or abs(len(part) - n * share) <= 1, (share, n, len(part))
    for first, second in zip(parts[:3], parts[3:]):
        assert np.array_equal(first * 10, second), "the arrays were split differently"


@examples(40)
@given(st.data())
def test_least_squares_solves_the_normal_equations_or_refuses(data):
    broken = data.draw(broken_parts(["X values", "D values", "D rows", "bias"], most=1))
    rows, n_in = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 3))
    X = data.draw(arrays((rows, n_in), specials="X values" in broken))
    D = data.draw(arrays(data.draw(st.sampled_from([(rows + 1,), (rows - 1, 2)]) if "D rows" in broken
                                   else st.sampled_from([(rows,), (rows, 2)])), specials="D values" in broken))
    bias = data.draw(st.sampled_from(["yes", None, 2] if "bias" in broken else [True, False]))
    solution, error = attempt(lambda: mlp.least_squares(X, D, bias=bias))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    assert not holds_non_finite(X) and not holds_non_finite(D), "least_squares accepted non-finite data"
    W, b = solution
    D2 = np.asarray(D, dtype=np.float64).reshape(rows, -1)
    assert W.shape == (D2.shape[1], n_in) and b.shape == (D2.shape[1],) and finite(W) and finite(b)
    if max(np.abs(np.asarray(X, float)).max(initial=0), np.abs(D2).max(initial=0)) > 1e6:
        return  # conditioning near 1e300: lstsq rightly truncates singular values, the equations hold loosely
    design = np.hstack([np.asarray(X, float), np.ones((rows, 1))]) if bias else np.asarray(X, float)
    residual = np.asarray(X, float) @ W.T + b - D2
    size = np.linalg.norm(design)  # rounding in design^T residual grows with |design| (|design| |W| + |D|)
    tolerance = 1e-9 * size * (size * (np.linalg.norm(W) + np.linalg.norm(b)) + np.linalg.norm(D2)) + 1e-12
    np.testing.assert_allclose(design.T @ residual, 0, atol=tolerance)


# --- the perceptron and the synthetic data sets -----------------------------------------------------

PERCEPTRON_SETTINGS = {"n_in": count(1, 3), "lr": positive(0.01, 2.0), "epochs": count(1, 5)}


@examples(60)
@given(st.data())
def test_perceptron_learns_finite_weights_and_predicts_zero_or_one_or_refuses(data):
    broken = data.draw(broken_parts([*PERCEPTRON_SETTINGS, "X values", "X shape", "d values"], most=1))
    arguments = draw_settings(data.draw, PERCEPTRON_SETTINGS, broken)
    perceptron, error = attempt(lambda: mlp.Perceptron(arguments["n_in"], lr=arguments["lr"]))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    n_in, rows = perceptron.w.size, data.draw(st.integers(1, 8))
    X = data.draw(arrays(data.draw(bad_shapes(n_in, rows)) if "X shape" in broken else (rows, n_in),
                         specials="X values" in broken))
    d = np.array(data.draw(st.lists(st.integers(0, 1), min_size=rows, max_size=rows)))
    d = d.astype(data.draw(st.sampled_from(["int64", "float64", "bool"])))
    if "d values" in broken:
        d = d.astype(np.float64)
        d[data.draw(st.integers(0, rows - 1))] = data.draw(st.sampled_from([2.0, -1.0, 0.5, NAN]))
    before = object_state(perceptron)
    _, error = attempt(lambda: perceptron.fit(X, d, epochs=arguments["epochs"]))
    if error is not None:
        assert_refused_at_the_boundary(error)
        assert_same_state(before, object_state(perceptron), error)
    else:
        assert not holds_non_finite(X) and not holds_non_finite(d), "the perceptron trained on non-finite data"
        assert finite(perceptron.w) and math.isfinite(perceptron.b)
        assert len(perceptron.errors_) <= arguments["epochs"]
    predicted, error = attempt(lambda: perceptron.predict(X))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    assert not holds_non_finite(X), f"predicted {predicted} for non-finite input"
    assert set(np.unique(predicted)) <= {0, 1} and predicted.shape == (1 if X.ndim == 1 else X.shape[0],)


DATASET_SETTINGS = {"n": count(1, 30), "noise": setting(st.floats(0.0, 0.5)),
                    "seed": (st.one_of(st.none(), st.integers(0, 5)), st.sampled_from([-1, "x", 2.5])),
                    "shape": setting(st.floats(0.2, 3.0))}


@examples(60)
@given(st.data())
def test_synthetic_data_sets_are_finite_labelled_points_or_refuse(data):
    name = data.draw(st.sampled_from(sorted(datasets.DATASETS)))
    settings_ = draw_settings(data.draw, DATASET_SETTINGS, data.draw(broken_parts(DATASET_SETTINGS, most=1)))
    assume(settings_["n"] != 10**12)  # a request for 10**12 points is a request for that memory
    shape = {"spirals": {"turns": settings_["shape"]}, "circles": {"factor": settings_["shape"]}}.get(name, {})
    arguments = {"n": settings_["n"], "noise": settings_["noise"], "seed": settings_["seed"], **shape}
    result, error = attempt(lambda: datasets.DATASETS[name](**arguments))
    if error is not None:
        assert_refused_at_the_boundary(error)
        return
    X, y = result
    n = arguments["n"]
    expected = 4 if n is None and name == "xor" else (int(n) if name == "xor" else 2 * int(n))
    assert X.shape == (expected, 2) and y.shape == (expected,), (X.shape, y.shape)
    assert finite(X) and set(np.unique(y)) <= {0, 1} and np.issubdtype(y.dtype, np.integer)


def test_the_property_helpers_catch_what_they_look_for():
    """The checks above are only as good as these: a raw NumPy error, an error from inside
    and a changed weight must each fail them."""
    with pytest.raises(AssertionError, match="raw IndexError"):
        assert_refused_at_the_boundary(attempt(lambda: np.zeros(2)[5])[1])
    with pytest.raises(AssertionError, match="from inside"):
        assert_refused_at_the_boundary(attempt(lambda: np.zeros(2).reshape(3))[1])
    assert_refused_at_the_boundary(attempt(lambda: mlp.one_hot([1], n_classes=0))[1])
    model = mlp.MLP((2, 2), seed=0, backend="numpy")
    model.compile()
    before = model_state(model)
    model.params[0] += 1
    with pytest.raises(AssertionError, match="weights changed"):
        assert_same_state(before, model_state(model))
