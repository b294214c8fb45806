"""The cupy backend's own code, run in CI without a GPU: CuPy is replaced by a CPU stand-in
(tests/cupy_on_cpu.py) whose kernels are the backend's generated CUDA source compiled for the
host. The whole conformance suite runs against it, plus what is particular to the backend:
device-resident optimizer scalars that follow a schedule and a restored step count, dropout
randomness that checkpoints as two integers, and training sets streamed from host memory.
CUDA graphs need a GPU: tests/gpu covers them."""
import shutil

import numpy as np
import pytest

import mlp
from tests import cupy_on_cpu
from tests.conftest import assert_close
from tests.test_conformance import (  # noqa: F401  (collected here, against the stand-in)
    test_a_training_step_follows_finite_differences,
    test_forward_matches_reference,
    test_gradients_match_reference,
    test_training_trajectory_matches_reference,
)
from tests.test_batchnorm_residual import (  # noqa: F401  (collected here, against the stand-in)
    test_every_backend_trains_as_numpy,
    test_every_backends_batch_norm_kernels_are_the_reference,
)
from tests.test_metrics import test_a_metric_function_is_scikit_learns_value_over_the_epoch  # noqa: F401
from tests.test_weights import (  # noqa: F401  (collected here, against the stand-in)
    test_equal_weights_are_bit_identical_to_none,
    test_weighted_training_matches_reference,
)
from tests.test_edges import (  # noqa: F401  (collected here, against the stand-in)
    test_divergence_restores_the_last_finite_weights,
    test_float64_input_beyond_float32_range_is_refused_before_training,
)

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to build the kernels for the CPU")


@pytest.fixture
def backend_name():
    with cupy_on_cpu.installed():
        yield "cupy"


def _xy(rng, n=64):
    X = rng.normal(size=(n, 6))
    return X, rng.integers(0, 4, size=n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_learning_rate_change_reaches_the_device(backend_name, dtype, rng):
    X, y = _xy(rng)
    params = []
    for name in ("numpy", backend_name):
        model = mlp.MLP([6, 16, 4], activation="relu", output="softmax", backend=name, dtype=dtype, seed=1)
        model.compile(loss="cross_entropy", optimizer=mlp.Adam(0.01))
        model.fit(X, y, epochs=2, batch_size=16, verbose=0, lr_schedule=mlp.StepLR(step_size=1, gamma=0.1))
        model.optimizer.lr = 0.05  # and by hand, between fits
        model.fit(X, y, epochs=1, batch_size=16, verbose=0)
        params.append(model.backend.to_numpy(model.params))
    assert_close(params[1], params[0], dtype, scale=50)


def test_a_restored_adam_step_count_reaches_the_device(backend_name, rng, tmp_path):
    X, y = _xy(rng)
    results = []
    for name in ("numpy", backend_name):
        model = mlp.MLP([6, 16, 4], activation="tanh", output="softmax", backend=name, dtype="float64", seed=2)
        model.compile(loss="cross_entropy", optimizer=mlp.Adam(0.01))
        path = tmp_path / f"{name}.npz"
        model.fit(X, y, epochs=2, batch_size=16, verbose=0, checkpoint=str(path))
        model.fit(X, y, epochs=3, batch_size=16, verbose=0)  # the device counts on to step 20
        model.fit(X, y, epochs=4, batch_size=16, verbose=0, resume=str(path))  # back to step 8
        results.append(model.backend.to_numpy(model.params))
    assert_close(results[1], results[0], "float64", scale=10)


def test_dropout_masks_are_seeded_and_checkpoint_as_two_integers(backend_name):
    model = mlp.MLP([6, 32, 4], activation="relu", output="softmax", dropout=0.5, backend=backend_name, seed=4)
    backend = model.backend
    state = backend.rng_state(model._dropout_rng)
    assert set(state) == {"seed", "counter"} and state["counter"] == 0
    first = backend.to_numpy(backend.dropout_mask(model._dropout_rng, (50, 32), 0.5, np.float32))
    second = backend.to_numpy(backend.dropout_mask(model._dropout_rng, (50, 32), 0.5, np.float32))
    assert backend.rng_state(model._dropout_rng)["counter"] == 2
    assert not np.array_equal(first, second) and set(np.unique(first)) == {0.0, 2.0}
    backend.set_rng_state(model._dropout_rng, state)
    np.testing.assert_array_equal(backend.to_numpy(backend.dropout_mask(model._dropout_rng, (50, 32), 0.5,
                                                                        np.float32)), first)
    model.compile(loss="cross_entropy", optimizer="adam")
    history = model.fit(np.random.default_rng(0).normal(size=(40, 6)), np.arange(40) % 4, epochs=2, verbose=0)
    assert np.isfinite(history["loss"]).all()


def test_a_training_set_larger_than_free_memory_streams_from_the_host(backend_name, rng, monkeypatch):
    X, y = _xy(rng)
    results = []
    for name in ("numpy", backend_name):
        model = mlp.MLP([6, 8, 4], activation="tanh", output="softmax", backend=name, dtype="float64", seed=5)
        model.compile(loss="cross_entropy", optimizer=mlp.SGD(0.1, momentum=0.9))
        if name == backend_name:
            import cupy  # the stand-in, while the fixture is active

            monkeypatch.setattr(cupy.cuda.runtime, "memGetInfo", lambda: (1024, 1 << 30))  # 1 KiB free
            assert isinstance(model.backend.resident(X), np.ndarray)
            assert not isinstance(model.backend.resident(X), cupy.ndarray)
        model.fit(X, y, epochs=2, batch_size=16, verbose=0)
        results.append(model.backend.to_numpy(model.params))
    assert_close(results[1], results[0], "float64")


def test_a_graph_capture_that_fails_warns_once_and_trains_uncaptured(backend_name, rng):
    """The stand-in cannot capture (it has no CUDA streams): the step must say so and go on."""
    X, y = _xy(rng)
    results = []
    for name in ("numpy", backend_name):
        model = mlp.MLP([6, 16, 4], activation="tanh", output="softmax", backend=name, dtype="float64", seed=6)
        model.compile(loss="cross_entropy", optimizer=mlp.Adam(0.01))
        if name == backend_name:
            model.backend.graphs = True
            with pytest.warns(RuntimeWarning, match="CUDA graph capture failed at batch size 16") as caught:
                model.fit(X, y, epochs=3, batch_size=16, verbose=0)
            assert len(caught) == 1
        else:
            model.fit(X, y, epochs=3, batch_size=16, verbose=0)
        results.append((model.backend.to_numpy(model.params), model.optimizer.step))
    assert results[1][1] == results[0][1] == 12
    assert_close(results[1][0], results[0][0], "float64", scale=10)


def test_warmup_leaves_weights_and_optimizer_state_alone(backend_name, rng):
    X, y = _xy(rng)
    runs = []
    for warm in (False, True):
        model = mlp.MLP([6, 16, 4], activation="relu", output="softmax", dropout=0.1, backend=backend_name, seed=1)
        model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
        if warm:
            model.warmup(16, 5)
            assert model.optimizer.step == 0
        model.fit(X, y, epochs=2, batch_size=16, verbose=0)
        runs.append(model.backend.to_numpy(model.params))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_every_metric_adds_up_on_the_device(backend_name, rng):
    """The metrics' batch sums run on the backend's arrays (bincount, take_along_axis, ...)."""
    X, y = _xy(rng)
    for output, loss, names in (("softmax", "cross_entropy", ["accuracy", "precision", "recall", "f1",
                                                              "top_k_accuracy"]),
                                ("sigmoid", "binary_cross_entropy", ["accuracy", "f1", "auc"]),
                                ("identity", "mse", ["mse", "mae", "r2"])):
        n_out = 4 if output == "softmax" else 1
        target = y if output == "softmax" else (y % 2 if output == "sigmoid" else y.astype(float))
        scores = []
        for backend in (backend_name, "numpy"):
            model = mlp.MLP([6, 8, n_out], output=output, backend=backend, dtype="float64", seed=0)
            model.compile(loss=loss, optimizer=mlp.SGD(lr=0.1), metrics=names)
            scores.append(model.evaluate(X, target, batch_size=16))
        for name in names:
            assert scores[0][name] == pytest.approx(scores[1][name], rel=1e-9, abs=1e-12), name
