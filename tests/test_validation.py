"""The per-call checks of a batch (`validation.batch`, what train_step, train_on_batch and the
diagnostics run): its shortcut for a batch already in the model's shape and dtype accepts
exactly what the general checks accept, returns the same arrays, and leaves every refusal,
with its message, to them."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlp import losses, validation
from tests.test_properties import SPECIAL_VALUES, attempt, examples

LOSSES = sorted(losses.LOSSES)  # every registered loss, aliases resolved by the model before this


def general(X, y, n_in, n_out, loss, dtype):
    X = validation.inputs(X, n_in, dtype)
    return X, validation.targets(y, n_out, loss, X.shape[0], dtype)


@st.composite
def batches(draw):
    """(X, y, n_in, n_out, loss, dtype): mostly the shortcut's case, with one part off at times:
    a special value (NaN, infinity, beyond float32), a target outside [0, 1], another dtype or
    shape, a non-contiguous view, class labels; small and large (the Python and NumPy sums)."""
    dtype = np.dtype(draw(st.sampled_from(["float32", "float64"])))
    # 8 and 12 rows put X and y around IN_PYTHON_UP_TO values, read in Python on one side, by NumPy on the other
    n, n_in, n_out = draw(st.sampled_from([1, 3, 8, 12, 40])), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    loss = draw(st.sampled_from(LOSSES))
    X = draw(st.sampled_from([-1.0, 0.5, 2.0])) * np.arange(n * n_in, dtype=dtype).reshape(n, n_in) / (n * n_in)
    y = np.linspace(0, 1, n * n_out, dtype=dtype).reshape(n, n_out)
    part = draw(st.sampled_from(["none", "none", "X value", "y value", "y range", "X dtype", "y dtype",
                                 "y shape", "X view", "labels"]))
    if part in ("X value", "y value"):
        target = X if part == "X value" else y
        with np.errstate(over="ignore"):  # 1e39 in float32: infinity, the case it is there for
            target.flat[draw(st.integers(0, target.size - 1))] = draw(st.sampled_from(SPECIAL_VALUES))
    elif part == "y range":
        y.flat[draw(st.integers(0, y.size - 1))] = draw(st.sampled_from([-0.1, 1.5]))
    elif part == "X dtype":
        other_float = "float64" if dtype == "float32" else "float32"
        X = X.astype(draw(st.sampled_from(["float16", "int64", "bool", other_float])))
    elif part == "y dtype":
        y = (y > 0.5).astype(draw(st.sampled_from(["int64", "bool", "float16"])))
    elif part == "y shape":
        y = draw(st.sampled_from([y.reshape(-1), y[:-1], np.concatenate([y, y], axis=1)]))
    elif part == "X view":
        X = np.asfortranarray(X) if n_in > 1 and n > 1 else X[::-1]
    elif part == "labels":
        y = np.arange(n) % max(n_out, 2)
    return X, y, n_in, n_out, loss, dtype


@examples(300)
@given(batches())
def test_the_shortcut_accepts_what_the_general_checks_accept_and_refuses_with_their_message(case):
    X, y, n_in, n_out, loss, dtype = case
    expected, expected_error = attempt(lambda: general(X, y, n_in, n_out, loss, dtype))
    got, error = attempt(lambda: validation.batch(X, y, n_in, n_out, loss, dtype))
    if expected_error is not None:
        assert type(error) is type(expected_error) and str(error) == str(expected_error)
        return
    assert error is None, error
    for checked, reference in zip(got, expected):
        assert checked.dtype == dtype and checked.flags.c_contiguous
        np.testing.assert_array_equal(checked, reference)


@pytest.mark.parametrize("size", [1, 40])  # values read in Python, then by NumPy
def test_finite_values_whose_sum_overflows_are_accepted(size):
    """The shortcut's finiteness test is one sum; finite values whose sum overflows are finite."""
    biggest = np.finfo(np.float64).max
    X = np.full((size, 2), biggest)
    y = np.zeros((size, 1))
    with np.errstate(over="ignore"):
        assert not np.isfinite(X.sum())
    got_X, got_y = validation.batch(X, y, 2, 1, "mse", np.dtype(np.float64))
    assert got_X is X and got_y is y


@pytest.mark.parametrize("size", [1, 40])
def test_the_first_non_finite_value_is_named_in_small_and_large_batches(size):
    X = np.zeros((size, 2), np.float32)
    X[size - 1, 1] = np.nan
    with pytest.raises(ValueError, match=rf"X contains NaN or infinite values \(first at index \({size - 1}, 1\)\)"):
        validation.batch(X, np.zeros((size, 1), np.float32), 2, 1, "mse", np.dtype(np.float32))
