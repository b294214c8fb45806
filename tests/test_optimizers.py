"""Every registered optimizer against the mathematics: torch.optim's implementation (where
torch is installed) and a plain NumPy transcription of its published rule, for 10 steps in
float64; and its descriptor against what the backends derive from it."""
import numpy as np
import pytest

import mlp
from mlp import optimizers
from mlp.backends import get_backend
from tests.conftest import every_optimizer

STEPS = 10


def _sgd(p, grads, lr, momentum, nesterov):
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if momentum == 0:
            p = p - lr * g
            continue
        v = g.copy() if t == 1 else momentum * v + g  # torch: the buffer starts as the first gradient
        p = p - lr * (g + momentum * v if nesterov else v)
    return p


def _adam(p, grads, lr, betas, eps, weight_decay=0.0, decoupled=False):
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g ** 2
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def _adamw(p, grads, lr, betas, eps, weight_decay):
    return _adam(p, grads, lr, betas, eps, weight_decay, decoupled=True)


def _rmsprop(p, grads, lr, alpha, eps, weight_decay, momentum, centered):
    square, average, buffer = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        square = alpha * square + (1 - alpha) * g ** 2
        denominator = np.sqrt(square) + eps
        if centered:
            average = alpha * average + (1 - alpha) * g
            denominator = np.sqrt(square - average ** 2) + eps
        if momentum > 0:
            buffer = momentum * buffer + g / denominator
            p = p - lr * buffer
        else:
            p = p - lr * g / denominator
    return p


def _adagrad(p, grads, lr, lr_decay, weight_decay, initial_accumulator_value, eps):
    total = np.full_like(p, initial_accumulator_value)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        total = total + g ** 2
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(total) + eps)
    return p


def _adamax(p, grads, lr, betas, eps, weight_decay):
    m, u = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        u = np.maximum(betas[1] * u, np.abs(g) + eps)
        p = p - lr / (1 - betas[0] ** t) * m / u
    return p


# The rules as their authors publish them (torch.optim's documentation), one per registry entry:
# a registered optimizer without one fails test_every_optimizer_has_a_transcription.
TRANSCRIPTIONS = {"sgd": _sgd, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop, "adagrad": _adagrad,
                  "adamax": _adamax}


def _gradients(n=40):
    rng = np.random.default_rng(0)
    return rng.standard_normal(n), [rng.standard_normal(n) for _ in range(STEPS)]


def _run(optimizer, p, grads, backend="numpy"):
    backend = get_backend(backend)
    params = backend.asarray(p.copy())
    optimizer.build(backend, params)
    for g in grads:
        optimizer.apply(params, backend.asarray(g))
    return backend.to_numpy(params)


def test_every_optimizer_has_a_transcription():
    assert set(TRANSCRIPTIONS) == set(optimizers.OPTIMIZERS)


@pytest.mark.parametrize("optimizer", every_optimizer(), ids=repr)
def test_optimizer_follows_its_published_rule(optimizer):
    p, grads = _gradients()
    config = {k: v for k, v in optimizer.config().items() if k != "name"}
    expected = TRANSCRIPTIONS[optimizer.name](p, grads, **config)
    np.testing.assert_allclose(_run(optimizer, p, grads), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", every_optimizer(), ids=repr)
def test_optimizer_matches_torch(optimizer):
    torch = pytest.importorskip("torch")
    p, grads = _gradients()
    config = {k: v for k, v in optimizer.config().items() if k != "name"}
    tensor = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    reference = getattr(torch.optim, type(optimizer).__name__)([tensor], **config)
    for g in grads:
        tensor.grad = torch.tensor(g, dtype=torch.float64)
        reference.step()
    np.testing.assert_allclose(_run(optimizer, p, grads), tensor.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", every_optimizer(), ids=repr)
def test_numba_flat_update_equals_the_reference(optimizer):
    pytest.importorskip("numba")
    p, grads = _gradients(1000)
    expected = _run(mlp.optimizers.get(optimizer.config()), p, grads)
    np.testing.assert_allclose(_run(optimizer, p, grads, "numba"), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(optimizers.OPTIMIZERS))
def test_optimizer_names_reach_compile_the_estimators_and_the_cli(name, tmp_path):
    model = mlp.MLP([2, 4, 1], seed=0).compile(loss="mse", optimizer=name)
    assert type(model.optimizer) is optimizers.OPTIMIZERS[name]
    assert isinstance(mlp.optimizers.get({"name": name, "lr": 0.5}), optimizers.OPTIMIZERS[name])
    assert getattr(mlp, type(model.optimizer).__name__) is optimizers.OPTIMIZERS[name]
    from mlp.cli import main

    out = tmp_path / "model.npz"
    assert main(["train", "--epochs", "2", "--optimizer", name, "-o", str(out), "--quiet"]) == 0
    assert mlp.load(out).optimizer.name == name


def test_an_optimizer_whose_rule_takes_an_undeclared_scalar_is_refused():
    class Broken(optimizers.Optimizer):
        name = "broken"

        @staticmethod
        def rule(p, g, lr, undeclared):
            return p - lr * undeclared * g

    with pytest.raises(TypeError, match="undeclared"):
        Broken(0.1).plan()


def test_unknown_optimizer_settings_are_refused():
    with pytest.raises(ValueError, match="takes"):
        optimizers.get({"name": "adamw", "betas": (0.9, 0.99), "weight_decay": 0.1, "bogus": 1})
