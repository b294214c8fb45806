"""Every available backend agrees with the NumPy reference on the same seeds.
A new backend joins by existing in mlp/backends/: the fixture finds it."""
import numpy as np
import pytest

import mlp
from mlp import activations
from mlp.optimizers import OPTIMIZERS
from tests.conftest import assert_close

HIDDEN = sorted(set(activations.ACTIVATIONS) - {"step", "softmax"})
OUTPUT_LOSS = [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"),
               ("identity", "mse"), ("identity", "sse"), ("tanh", "mae")]


def problem(loss, n_out, batch, rng):
    X = rng.normal(size=(batch, 6))
    if loss == "cross_entropy":
        return X, rng.integers(0, n_out, size=batch)
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, size=(batch, n_out))
    return X, rng.normal(size=(batch, n_out))


def pair(backend_name, sizes, dtype, **kwargs):
    reference = mlp.MLP(sizes, backend="numpy", dtype=dtype, seed=3, **kwargs)
    other = mlp.MLP(sizes, backend=backend_name, dtype=dtype, seed=3, **kwargs)
    np.testing.assert_array_equal(other.backend.to_numpy(other.params), reference.params)
    return reference, other


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("batch", [1, 7, 300])
def test_forward_matches_reference(backend_name, dtype, hidden, batch, rng):
    reference, other = pair(backend_name, [6, 16, 9, 4], dtype, activation=hidden, output="softmax")
    X = rng.normal(size=(batch, 6))
    assert_close(other.predict(X), reference.predict(X), dtype)


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_a_network_of_step_functions_predicts_as_the_reference_does(backend_name, batch, rng):
    """The step function has no derivative: such a network is never trained, but it predicts
    (the Numba backend's kernels had asked for the derivative and raised a TypeError)."""
    reference, other = pair(backend_name, [6, 32, 4], "float64", activation="step", output="sigmoid")
    X = rng.normal(size=(batch, 6))
    assert_close(other.predict(X), reference.predict(X), "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output,loss", OUTPUT_LOSS)
@pytest.mark.parametrize("batch", [1, 33])
def test_gradients_match_reference(backend_name, dtype, hidden, output, loss, batch, rng):
    reference, other = pair(backend_name, [6, 12, 3], dtype, activation=hidden, output=output)
    X, y = problem(loss, 3, batch, rng)
    loss_ref, grads_ref = reference.loss_and_gradients(X, y, loss, l2=0.01)
    loss_other, grads_other = other.loss_and_gradients(X, y, loss, l2=0.01)
    assert_close(loss_other, loss_ref, dtype)
    for (dW, db), (dW_ref, db_ref) in zip(grads_other, grads_ref):
        assert_close(dW, dW_ref, dtype, scale=10)
        assert_close(db, db_ref, dtype, scale=10)


@pytest.mark.parametrize("optimizer", [lambda: mlp.SGD(lr=0.05, momentum=0.9, nesterov=True)] + [
    lambda cls=cls: cls(lr=0.01) for name, cls in OPTIMIZERS.items() if name != "sgd"],
    ids=["sgd"] + [name for name in OPTIMIZERS if name != "sgd"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_trajectory_matches_reference(backend_name, optimizer, dtype, rng):
    X, y = problem("cross_entropy", 4, 96, rng)
    trajectories = []
    for name in ("numpy", backend_name):
        model = mlp.MLP([6, 32, 32, 4], activation="tanh", output="softmax", backend=name,
                        dtype=dtype, seed=11)
        model.compile(loss="cross_entropy", optimizer=optimizer(), clip_norm=5.0, l1=1e-4)
        history = model.fit(X, y, epochs=4, batch_size=16, verbose=0)
        trajectories.append((history["loss"], model.backend.to_numpy(model.params)))
    (loss_ref, params_ref), (loss_other, params_other) = trajectories
    assert_close(loss_other, loss_ref, dtype, scale=10)
    assert_close(params_other, params_ref, dtype, scale=50)


def finite_difference_gradient(model, X, y, loss, eps=1e-6):
    """Central differences of the loss over every parameter (a float64 NumPy model)."""
    params = model.params
    grad = np.empty_like(params)
    for j in range(params.size):
        saved = params[j]
        params[j] = saved + eps
        up = model.loss_and_gradients(X, y, loss)[0]
        params[j] = saved - eps
        down = model.loss_and_gradients(X, y, loss)[0]
        params[j] = saved
        grad[j] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("hidden", HIDDEN)
def test_a_training_step_follows_finite_differences(backend_name, hidden, rng):
    """The gradient a backend's training step applies, recovered from one plain SGD step,
    equals central differences of the loss (float64): each activation's declared derivative,
    and what each backend keeps for it, held to the mathematics, not only to NumPy. The
    activation is also the output's, so both the hidden and the output deltas read it."""
    X, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    reference = mlp.MLP([4, 6, 3, 2], activation=hidden, output=hidden, dtype="float64", seed=5)
    expected = finite_difference_gradient(reference, X, y, "mse")
    model = mlp.MLP([4, 6, 3, 2], activation=hidden, output=hidden, backend=backend_name, dtype="float64", seed=5)
    lr = 1e-3
    model.compile(loss="mse", optimizer=mlp.SGD(lr=lr))
    before = model.backend.to_numpy(model.params).copy()
    model.train_step(X, y)
    applied = (before - model.backend.to_numpy(model.params)) / lr
    np.testing.assert_allclose(applied, expected, rtol=1e-5, atol=1e-7)
