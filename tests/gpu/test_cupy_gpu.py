"""The GPU suite: runs only where a CUDA device is present (`pytest -m gpu`, or as part of
the whole suite), skipped with the reason elsewhere. The backend conformance tests in
tests/test_conformance.py also run on `cupy` there, since it is then available."""
import numpy as np
import pytest

import mlp
from mlp import backends, datasets
from mlp.errors import DeviceMemoryError
from tests.conftest import every_optimizer

reason = backends.unavailable_reason("cupy")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(reason is not None, reason=f"no GPU: {reason}")]


def _model(optimizer, dropout=0.0, output="softmax", sizes=(2, 32, 32, 2)):
    model = mlp.MLP(sizes, activation="tanh", output=output, dropout=dropout, backend="cupy", seed=7)
    model.compile(loss="cross_entropy" if output == "softmax" else "mse", optimizer=optimizer, l2=1e-4,
                  clip_norm=5.0)
    return model


def _train(model, graphs, X, Y, steps):
    backend = model.backend
    saved, backend.graphs = backend.graphs, graphs
    try:
        losses = [float(model._train_batch(X, Y)[0]) for _ in range(steps)]
    finally:
        backend.graphs = saved
    return losses


@pytest.mark.parametrize("optimizer", [lambda o=o: mlp.optimizers.get(o.config()) for o in every_optimizer()],
                         ids=[repr(o) for o in every_optimizer()])
def test_graph_replay_gives_the_results_of_the_uncaptured_step(optimizer):
    X, y = datasets.spirals(256, seed=0)
    graphed, plain = _model(optimizer()), _model(optimizer())
    Xd = graphed.backend.asarray(X.astype(np.float32))
    Yd = graphed.backend.asarray(np.eye(2, dtype=np.float32)[y])
    with_graph = _train(graphed, True, Xd, Yd, 6)
    without = _train(plain, False, Xd, Yd, 6)
    np.testing.assert_allclose(with_graph, without, rtol=1e-6)
    np.testing.assert_allclose(graphed.backend.to_numpy(graphed.params), plain.backend.to_numpy(plain.params),
                               rtol=1e-6, atol=1e-7)
    assert graphed.optimizer.__dict__.get("step", 0) == plain.optimizer.__dict__.get("step", 0)


def test_graph_follows_a_learning_rate_change():
    X, y = datasets.spirals(128, seed=1)
    graphed, plain = _model(mlp.Adam(0.01)), _model(mlp.Adam(0.01))
    Xd = graphed.backend.asarray(X.astype(np.float32))
    Yd = graphed.backend.asarray(np.eye(2, dtype=np.float32)[y])
    for model, graphs in ((graphed, True), (plain, False)):
        _train(model, graphs, Xd, Yd, 3)
        model.optimizer.lr = 0.001
        _train(model, graphs, Xd, Yd, 3)
    np.testing.assert_allclose(graphed.backend.to_numpy(graphed.params), plain.backend.to_numpy(plain.params),
                               rtol=1e-6, atol=1e-7)


def test_dropout_draws_new_masks_in_a_replayed_graph():
    X, y = datasets.spirals(64, seed=2)
    model = _model(mlp.SGD(1e-12), dropout=0.5)  # the weights all but stay; only the masks change
    Xd = model.backend.asarray(X.astype(np.float32))
    Yd = model.backend.asarray(np.eye(2, dtype=np.float32)[y])
    losses = _train(model, True, Xd, Yd, 5)
    assert len(set(np.round(losses, 6))) > 1


def test_training_on_the_gpu_learns_spirals():  # tests/test_training.py's case, on the GPU
    X, y = mlp.datasets.spirals(n=200, noise=0.1, seed=0)
    X = mlp.StandardScaler().fit_transform(X)
    model = mlp.MLP([2, 64, 64, 2], activation="tanh", output="softmax", backend="cupy", seed=0)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
    history = model.fit(X, y, epochs=150, batch_size=32, verbose=0)
    assert history["accuracy"][-1] >= 0.95
    assert model.evaluate(X, y)["accuracy"] >= 0.95


def test_fused_forward_matches_cublas(monkeypatch):
    X = np.random.default_rng(0).standard_normal((300, 2)).astype(np.float32)
    model = mlp.MLP((2, 64, 64, 1), activation="tanh", backend="cupy", seed=0)
    monkeypatch.setenv("MLP_CUDA_FUSED", "0")
    model._kernel_cache.clear()
    reference = model.predict(X)
    monkeypatch.setenv("MLP_CUDA_FUSED", "1")
    model._kernel_cache.clear()
    assert model.backend.fused_forward(model, 300) is not None
    np.testing.assert_allclose(model.predict(X), reference, rtol=1e-5, atol=1e-6)


def test_out_of_memory_names_the_batch_size():
    model = mlp.MLP((16, 65536, 16), backend="cupy", seed=0)  # (10^6, 65536) float32: 262 GB
    model.compile(loss="mse", optimizer="sgd")
    X = np.zeros((1_000_000, 16), np.float32)
    with pytest.raises(DeviceMemoryError, match="batch size 1000000"):
        model.fit(X, X, batch_size=1_000_000, epochs=1, verbose=0)
