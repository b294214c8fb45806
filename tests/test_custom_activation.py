"""An activation of one's own (mlp.activations.register) is first-class: it trains on every
backend and path, passes gradcheck, clones, saves by name and loads where it is registered."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mlp
from mlp import activations
from mlp.kernels import translate
from tests import cupy_on_cpu
from tests.conftest import assert_close


def bent(z, bend):
    """A smooth formula no built-in has, whose derivative reads the input."""
    return z + bend * np.exp(-z * z)


def bent_derivative(z, da, bend):
    return da * (1 - 2 * bend * z * np.exp(-z * z))


def uses_where(z):
    return np.where(z > 0, z, 0.1 * z)


def uses_where_derivative(a, da):
    return da


@pytest.fixture
def registered():
    activation = activations.register("bent", bent, bent_derivative, needs="input", bend=0.5)
    yield activation
    activations.ACTIVATIONS.pop("bent")


def _train(backend, X, y, crossover=None, dtype="float64"):
    model = mlp.MLP([3, 8, 2], activation={"name": "bent", "bend": 0.3}, output="softmax", backend=backend,
                    dtype=dtype, seed=4)
    if crossover is not None:
        model.backend.crossover_override = crossover
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(0.01))
    model.fit(X, y, epochs=3, batch_size=8, verbose=0)
    return model


def test_a_registered_activation_trains_alike_on_every_backend_and_path(registered, rng, monkeypatch):
    X, y = rng.normal(size=(32, 3)), rng.integers(0, 2, size=32)
    reference = _train("numpy", X, y).params
    backend = mlp.get_backend("numba")
    for crossover in (10**9, 0):  # the whole compiled step, then the BLAS path's fused kernels
        monkeypatch.setattr(backend, "crossover_override", crossover)
        assert_close(_train("numba", X, y).params, reference, "float64", scale=100)
    if shutil.which("g++"):  # the CUDA translation, run by the CuPy stand-in
        with cupy_on_cpu.installed():
            model = _train("cupy", X, y)
            assert_close(model.backend.to_numpy(model.params), reference, "float64", scale=100)


def test_a_registered_activation_passes_gradcheck_clones_and_saves_by_name(registered, rng, tmp_path):
    model = mlp.MLP([3, 5, 2], activation="bent", output="identity", dtype="float64", seed=1)
    X, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    assert mlp.gradcheck(model, X, y, "mse").ok(1e-6)
    assert model.clone().dense_layers[0].activation.params == {"bend": 0.5}
    path = tmp_path / "bent.npz"
    model.compile(loss="mse", optimizer="sgd")
    model.save(path)
    np.testing.assert_array_equal(mlp.load(path).predict(X), model.predict(X))
    # a process that has not registered it is told how to
    result = subprocess.run([sys.executable, "-c", f"import mlp; mlp.load({str(path)!r})"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "mlp.activations.register" in result.stderr


def test_a_formula_outside_the_translatable_subset_is_refused_at_registration():
    with pytest.raises(translate.UnsupportedFormula, match="where"):
        activations.register("leaky_where", uses_where, uses_where_derivative)
    assert "leaky_where" not in activations.ACTIVATIONS


def test_registration_checks_names_and_signatures(registered):
    with pytest.raises(ValueError, match="already registered"):
        activations.register("relu", bent, bent_derivative, needs="input", bend=0.5)
    with pytest.raises(ValueError, match="must take 3 arguments"):
        activations.register("bent2", bent, bent_derivative, needs="both", bend=0.5)
    with pytest.raises(ValueError, match="default"):
        activations.register("bent3", bent, bent_derivative, needs="input")
