"""Shared fixtures: every backend available here, and one tolerance table per dtype."""
import numpy as np
import pytest

from mlp.backends import names, unavailable_reason

# Agreement with the NumPy reference, per dtype: (relative, absolute) tolerance.
# Backends that compile with fastmath reassociate sums, hence the float32 slack.
TOLERANCE = {
    "float64": {"rtol": 1e-9, "atol": 1e-11},
    "float32": {"rtol": 2e-4, "atol": 2e-5},
}


def _backend_params():
    params = []
    for name in names():
        reason = unavailable_reason(name)
        marks = [pytest.mark.skip(reason=f"backend {name} unavailable: {reason}")] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=_backend_params())
def backend_name(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def assert_close(actual, expected, dtype, scale=1.0):
    tol = TOLERANCE[str(np.dtype(dtype))]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"] * scale, atol=tol["atol"] * scale)
