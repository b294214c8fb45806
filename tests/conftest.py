"""Shared fixtures: every backend available here, and one tolerance table per dtype."""
import os

import numpy as np
import pytest

# The tests hold Numba's compiled kernels to the reference through short fits, which would
# otherwise run NumPy's code (compiling does not pay for them): tests/test_compile_pays.py
# tests that choice itself, with the variable unset.
os.environ.setdefault("MLP_NUMBA_COMPILE", "on")

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


def every_optimizer():
    """Each registered optimizer (mlp.optimizers.OPTIMIZERS) at its defaults, then with every
    setting that takes its rule down another path (momentum, Nesterov, centering, decays), so
    that a new entry is covered the day it is registered."""
    import inspect

    from mlp import optimizers

    variants = {"momentum": 0.5, "nesterov": True, "centered": True, "weight_decay": 0.1, "lr_decay": 0.1,
                "initial_accumulator_value": 0.1}
    found = []
    for cls in optimizers.OPTIMIZERS.values():
        takes = set(inspect.signature(cls.__init__).parameters)
        found.append(cls(lr=0.01))
        changed = {name: value for name, value in variants.items() if name in takes}
        if changed:
            found.append(cls(lr=0.01, **changed))
    return found


# The quick tier compiles, for each backend other than NumPy, one activation of each kind of
# derivative (reads the output, the input, both) and the first optimizers; every registry entry
# runs there on NumPy (against finite differences and torch), on Numba's per-layer path (against
# NumPy) and its flat optimizer update, and in the CUDA host kernels; on every backend and path in
# the long tier (`-m long`). A compiled plan costs seconds, cold.
QUICK_ACTIVATIONS = {"tanh", "gelu", "silu"}
QUICK_OPTIMIZERS = {"sgd", "adam"}
QUICK_BY_TEST = {"test_a_training_step_follows_finite_differences": {"silu"},  # the kind that reads both
                 "test_every_activation": None}  # None: every entry


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        backend = params.get("backend_name", "cupy" if "cupy_on_cpu" in item.nodeid else "numpy")
        if params.get("numba_path") == "blas":
            backend = "numba"
        if backend == "numpy":
            continue
        optimizer = params.get("optimizer")
        if callable(optimizer) and not hasattr(optimizer, "name"):
            optimizer = optimizer()  # a factory: the optimizer it makes
        quick = QUICK_BY_TEST.get(item.originalname, QUICK_ACTIVATIONS)
        if (quick is not None and params.get("hidden", "tanh") not in quick) or \
                (optimizer is not None and optimizer.name not in QUICK_OPTIMIZERS):
            item.add_marker(pytest.mark.long)
