"""Every registered initialiser draws the variance its formula declares (mlp.initializers), biases
as declared, and the same network for the same seed on every backend; MLP gives every layer
one initialiser."""
import math

import numpy as np
import pytest

import mlp
from mlp import activations, initializers

VARIANCE = {  # Var(W) of each initialiser for fan-in i and fan-out o: the formulas, written apart
    "xavier_normal": lambda i, o: 2 / (i + o), "xavier_uniform": lambda i, o: 2 / (i + o),
    "he_normal": lambda i, o: 2 / i, "he_uniform": lambda i, o: 2 / i,
    "lecun_normal": lambda i, o: 1 / i, "lecun_uniform": lambda i, o: 1 / i,
    "uniform_fan_in": lambda i, o: 1 / (3 * i),
}


@pytest.mark.parametrize("name", sorted(initializers.INITIALIZERS))
def test_each_initialiser_draws_its_declared_variance(name):
    rng = np.random.default_rng(0)
    n_in, n_out = 300, 200
    W = initializers.initial_weights(name, rng, n_in, n_out)
    assert W.shape == (n_out, n_in)
    expected = VARIANCE[name](n_in, n_out)  # a KeyError: a new initialiser needs its formula here
    assert abs(W.mean()) < 4 * math.sqrt(expected / W.size)
    assert W.var() == pytest.approx(expected, rel=0.03)
    b = initializers.initial_biases(name, rng, n_in, n_out)
    assert b.shape == (n_out,)
    if name in initializers.BIASES:
        assert np.abs(b).max() <= 1 / math.sqrt(n_in) and b.std() > 0
    else:
        assert not b.any()


def test_every_layer_of_an_mlp_shares_one_initialiser():
    relu = mlp.MLP([4, 8, 3], output="softmax")
    assert [layer.init for layer in relu.dense_layers] == [activations.get("relu").init] * 2
    assert relu.dense_layers[-1].b.any()  # uniform_fan_in draws biases
    tanh = mlp.MLP([4, 8, 3], activation="tanh", init="he_normal")
    assert [layer.init for layer in tanh.dense_layers] == ["he_normal"] * 2
    assert not tanh.params[-3:].any()
    assert mlp.MLP([4, 3], output="sigmoid").dense_layers[0].init == activations.get("sigmoid").init


def test_the_same_seed_draws_the_same_network_on_every_backend(backend_name):
    reference = mlp.MLP([5, 7, 2], seed=9, backend="numpy", dtype="float64")
    other = mlp.MLP([5, 7, 2], seed=9, backend=backend_name, dtype="float64")
    np.testing.assert_array_equal(other.backend.to_numpy(other.params), reference.params)
