"""Plain SGD folded into the backward pass (each layer's step taken as soon as its gradient is
known, large layers in one GEMM that adds into W) agrees with gradients-then-update."""
import numpy as np
import pytest

import mlp
from mlp.backends import _blas
from mlp.backends._base import Backend as BaseBackend
from tests.conftest import assert_close

CPU_BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    mlp.backends.unavailable_reason("numba") is not None, reason="numba not installed"))]
SIZES = [300, 256, 40, 3]  # 300 x 256 = 76,800 weights: above FOLD_WEIGHTS; 40 x 3 below


def unfolded(model):
    """The same model's backend with folding off: gradients into `grads`, then the update."""
    backend = type(model.backend)()
    backend.folds_sgd = lambda model: False
    model.backend = backend
    return model


def models(backend_name, dtype, **compile_args):
    pair = []
    for _ in range(2):
        model = mlp.MLP(SIZES, activation="tanh", output="softmax", backend=backend_name, dtype=dtype, seed=5)
        model.compile(loss="cross_entropy", optimizer=compile_args.pop("optimizer", mlp.SGD(lr=0.1)),
                      metrics=[], **compile_args)
        pair.append(model)
    return pair[0], unfolded(pair[1])


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 20, 64])
def test_folded_steps_match_gradient_then_update(backend_name, dtype, batch, rng):
    folded, reference = models(backend_name, dtype)
    assert folded._folded_sgd_rate() == (0.1 if _blas.gemm(dtype) else None)
    assert reference._folded_sgd_rate() is None
    X = rng.normal(size=(batch * 3, SIZES[0]))
    y = rng.integers(0, SIZES[-1], size=batch * 3)
    for start in range(0, batch * 3, batch):
        a = folded.train_step(X[start:start + batch], y[start:start + batch])
        b = reference.train_step(X[start:start + batch], y[start:start + batch])
        assert_close(a, b, dtype)
    assert_close(folded.params, reference.params, dtype)


@pytest.mark.parametrize("compile_args", [
    {"optimizer": mlp.SGD(lr=0.1, momentum=0.9)}, {"optimizer": mlp.Adam()},
    {"clip_norm": 1.0}, {"l2": 1e-3}, {"l1": 1e-3}])
def test_only_plain_sgd_folds(compile_args):
    """Momentum, Adam, clipping and penalties need the whole gradient before any update."""
    model, _ = models("numpy", "float64", **compile_args)
    assert model._folded_sgd_rate() is None


def test_small_networks_do_not_fold():
    model = mlp.MLP([2, 64, 64, 1], output="sigmoid", backend="numpy")
    model.compile(loss="binary_cross_entropy", optimizer="sgd")
    assert model._folded_sgd_rate() is None  # no layer reaches FOLD_WEIGHTS: the BLAS call costs more


@pytest.mark.skipif(_blas.gemm(np.float64) is None, reason="NumPy's BLAS has no cblas_dgemm to call")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blas_descend_matches_the_specification(dtype, rng):
    numpy_backend = mlp.get_backend("numpy")
    dZ = rng.normal(size=(33, 300)).astype(dtype)
    X = rng.normal(size=(33, 260)).astype(dtype)
    W = rng.normal(size=(300, 260)).astype(dtype)
    expected, dW = W.copy(), np.empty_like(W)
    BaseBackend.descend(numpy_backend, dZ, X, expected, dW, 0.05)
    numpy_backend.descend(dZ, X, W, np.full_like(W, np.nan), 0.05)  # BLAS needs no scratch
    assert np.isfinite(W).all()
    assert_close(W, expected, dtype)


def test_blas_declines_what_it_cannot_take(rng):
    W = np.zeros((4, 3))
    assert not _blas.add_transposed_product(W, np.ones((5, 8))[:, ::2], np.ones((5, 3)), 1.0)  # strided
    assert not _blas.add_transposed_product(W, np.ones((5, 4), np.float32), np.ones((5, 3)), 1.0)  # mixed
    assert not W.any()
    with pytest.raises(ValueError, match="do not chain"):
        _blas.add_transposed_product(W, np.ones((5, 4)), np.ones((6, 3)), 1.0)
    assert _blas.gemm(np.int64) is None


def test_strided_input_falls_back_to_the_specification(rng):
    numpy_backend = mlp.get_backend("numpy")
    dZ = rng.normal(size=(16, 300))
    X = rng.normal(size=(16, 520))[:, ::2]  # not contiguous: no BLAS call
    W = rng.normal(size=(300, 260))
    expected = W - 0.1 * (dZ.T @ X)
    numpy_backend.descend(dZ, X, W, np.empty_like(W), 0.1)
    assert_close(W, expected, "float64")


def test_folded_steps_keep_a_fixed_set_of_buffers(rng):
    """A mid-size layer below FOLD_WEIGHTS takes gradient-then-update inside the fold, with the
    NumPy backend's reused scratch buffers: keyed by the layer's own W, never by a new view."""
    model = mlp.MLP([300, 256, 100, 3], output="softmax", backend="numpy", seed=0)  # 256 x 100: buffered
    model.compile(loss="cross_entropy", optimizer=mlp.SGD(lr=0.01), metrics=[])
    X, y = rng.normal(size=(64, 300)), rng.integers(0, 3, size=64)
    model.train_step(X, y)
    buffers = set(model.backend._buffers)
    for _ in range(5):
        model.train_step(X, y)
    assert set(model.backend._buffers) == buffers


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_models_buffers_go_with_it(backend, rng):
    """The backend keeps scratch buffers per layer between steps; once the model is gone, so are
    they (a process that builds many models, a benchmark or a search, must not keep every one's)."""
    import gc

    if backend == "numba":
        pytest.importorskip("numba")
    kept = set(mlp.get_backend(backend)._buffers)
    model = mlp.MLP([300, 256, 100, 3], output="softmax", backend=backend, seed=0)
    model.compile(loss="cross_entropy", optimizer=mlp.SGD(lr=0.01), metrics=[])
    model.train_step(rng.normal(size=(256, 300)), rng.integers(0, 3, size=256))
    assert set(model.backend._buffers) - kept, "no buffer was kept: the test tests nothing"
    del model
    gc.collect()
    assert set(mlp.get_backend(backend)._buffers) == kept
