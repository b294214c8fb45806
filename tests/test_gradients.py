"""The hand-derived backward pass against central finite differences, in float64."""
import numpy as np
import pytest

import mlp
from mlp import activations

SMOOTH_HIDDEN = ["sigmoid", "tanh", "softplus", "elu", "identity"]
# Piecewise-linear units: a stencil that straddles the kink (a pre-activation within 2h of 0)
# is off by a little, so they get a looser bound.
KINKED_HIDDEN = ["relu", "leaky_relu"]


def data_for(loss, n_out, batch, rng):
    X = rng.normal(size=(batch, 3))
    if loss == "cross_entropy":
        return X, rng.integers(0, n_out, size=batch)
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, size=(batch, n_out)).astype(float)
    return X, rng.normal(size=(batch, n_out))


CASES = [  # (output activation, loss)
    ("softmax", "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"),
    ("identity", "mse"),
    ("identity", "sse"),
    ("identity", "mae"),
    ("sigmoid", "mse"),
    ("tanh", "mse"),
    ("softmax", "mse"),  # the general softmax Jacobian path
    ("softplus", "mae"),
]


@pytest.mark.parametrize("hidden", SMOOTH_HIDDEN + KINKED_HIDDEN)
@pytest.mark.parametrize("output,loss", CASES)
@pytest.mark.parametrize("batch", [1, 5])
def test_gradients_match_finite_differences(hidden, output, loss, batch, rng):
    n_out = 3 if output in ("softmax",) or loss == "mse" else 2
    model = mlp.MLP([3, 4, 5, n_out], activation=hidden, output=output, dtype="float64", seed=7)
    X, y = data_for(loss, n_out, batch, rng)
    result = mlp.gradcheck(model, X, y, loss)
    assert set(result.errors) == {f"dense{i}.{p}" for i in range(3) for p in "Wb"}
    assert result.max_error < (1e-4 if hidden in KINKED_HIDDEN else 1e-6), str(result)


@pytest.mark.parametrize("l1,l2", [(0.0, 0.1), (0.05, 0.0), (0.02, 0.03)])
def test_regularized_gradients(l1, l2, rng):
    model = mlp.MLP([3, 6, 2], activation="tanh", output="softmax", dtype="float64", seed=1)
    X, y = data_for("cross_entropy", 2, 4, rng)
    result = mlp.gradcheck(model, X, y, "cross_entropy", l1=l1, l2=l2)
    assert result.max_error < 1e-5, str(result)


def test_regularization_values_and_bias_exempt(rng):
    model = mlp.MLP([3, 4, 1], activation="tanh", dtype="float64", seed=2)
    X, y = data_for("mse", 1, 6, rng)
    plain, plain_grads = model.loss_and_gradients(X, y, "mse")
    l2, l1 = 0.1, 0.05
    penalised, grads = model.loss_and_gradients(X, y, "mse", l1=l1, l2=l2)
    weights = model.get_weights()
    expected = plain + sum(l2 * (W ** 2).sum() + l1 * np.abs(W).sum() for W, _ in weights)
    assert penalised == pytest.approx(expected, rel=1e-12)
    for (W, _), (dW, db), (dW0, db0) in zip(weights, grads, plain_grads):
        np.testing.assert_allclose(dW, dW0 + 2 * l2 * W + l1 * np.sign(W), rtol=1e-12)
        np.testing.assert_array_equal(db, db0)  # biases are not regularized


def test_dropout_gradients_with_fixed_mask(rng):
    model = mlp.Sequential([mlp.Dense(3, 8, "tanh"), mlp.Dropout(0.5), mlp.Dense(8, 2, "softmax")],
                           dtype="float64", seed=4)
    X, y = data_for("cross_entropy", 2, 6, rng)
    result = mlp.gradcheck(model, X, y, "cross_entropy", training=True)
    assert result.max_error < 1e-5, str(result)


def test_gradcheck_detects_a_wrong_derivative(rng, monkeypatch):
    """The check itself must be able to fail: break tanh's derivative and look."""
    broken = activations.Activation("tanh", activations.tanh, lambda a, da: da * (1 - a))
    monkeypatch.setitem(activations.ACTIVATIONS, "tanh", lambda: broken)
    model = mlp.MLP([3, 4, 1], activation="tanh", dtype="float64", seed=0)
    X, y = data_for("mse", 1, 4, rng)
    assert mlp.gradcheck(model, X, y, "mse").max_error > 1e-2


def test_gradcheck_samples_large_layers(rng):
    model = mlp.MLP([20, 30, 3], activation="tanh", output="softmax", seed=0)
    X, y = data_for("cross_entropy", 3, 4, rng)
    X = rng.normal(size=(4, 20))
    result = mlp.gradcheck(model, X, y, "cross_entropy", max_per_param=10)
    assert result.checked == 10 + 10 + 10 + 3
    assert result.ok(1e-5)


@pytest.mark.parametrize("name", sorted(set(activations.ACTIVATIONS) - {"step", "softmax"}))
def test_activation_backward_is_the_derivative(name):
    act = activations.get(name)
    z = np.linspace(-4, 4, 41) + 0.013  # off the kink at 0
    eps = 1e-6
    numeric = (act.function(z + eps) - act.function(z - eps)) / (2 * eps)
    np.testing.assert_allclose(act.gradient(z, act.function(z), np.ones_like(z)), numeric, rtol=1e-6, atol=1e-8)


def test_activations_are_stable_at_extremes():
    z = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for name in ("sigmoid", "softplus", "elu", "tanh"):
            assert np.isfinite(activations.get(name).function(z)).all()
        assert np.isfinite(activations.softmax(np.array([[1e4, -1e4, 0.0]]))).all()
    assert activations.sigmoid(z).dtype == np.float32
    np.testing.assert_allclose(activations.sigmoid(np.array([-30.0, 30.0])),
                               [1 / (1 + np.exp(30.0)), 1 / (1 + np.exp(-30.0))], rtol=1e-14)


@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
def test_float32_formulas_stay_within_3e7_of_the_exact_ones(name):
    activation = activations.get(name)
    if activation.float32_forward is None:
        pytest.skip(f"{name} declares no float32 formula")
    z = np.linspace(-30, 30, 600_001)
    exact = activation.function(z)
    # bounded outputs (tanh, sigmoid): absolutely; an output that grows with z (GELU's z times a
    # gate made of tanh): relative to the input's scale, float32's resolution of z
    scale = 1.0 if np.abs(exact).max() <= 1 else 1 + np.abs(z)
    assert (np.abs(activation.float32_forward(z) - exact) / scale).max() < 3e-7


def _torch_functions():
    """Registry name -> torch's own function, for the activations torch has (comparison data)."""
    F = pytest.importorskip("torch").nn.functional
    return {"identity": lambda t: t, "sigmoid": F.sigmoid, "tanh": F.tanh, "relu": F.relu,
            "leaky_relu": lambda t: F.leaky_relu(t, 0.01), "elu": F.elu, "softplus": F.softplus,
            "softsign": F.softsign, "selu": F.selu, "gelu": lambda t: F.gelu(t, approximate="tanh"),
            "silu": F.silu, "mish": F.mish, "hardswish": F.hardswish, "softmax": lambda t: F.softmax(t, dim=-1)}


@pytest.mark.parametrize("name", sorted(set(activations.ACTIVATIONS) - {"step"}))
def test_activation_and_its_derivative_match_torch_autograd(name):
    torch = pytest.importorskip("torch")
    reference = _torch_functions().get(name)
    if reference is None:
        pytest.skip(f"torch has no {name}")
    act = activations.get(name)
    z = np.random.default_rng(0).normal(scale=3, size=(7, 5)) + 0.013
    dA = np.random.default_rng(1).normal(size=z.shape)
    t = torch.tensor(z, requires_grad=True)
    out = reference(t)
    out.backward(torch.tensor(dA))
    A = act.function(z)
    np.testing.assert_allclose(A, out.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(act.gradient(z, A, dA), t.grad.numpy(), rtol=1e-10, atol=1e-12)
