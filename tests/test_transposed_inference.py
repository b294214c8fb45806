"""Inference through a wide layer at a small batch runs as Z^T = W X^T on the CPU backends
(TRANSPOSE_FROM): the same outputs as the product the training pass computes, for every
registered activation, through whole networks, and never a buffer that a later call overwrites."""
import numpy as np
import pytest

import mlp
from mlp import activations
from tests.conftest import assert_close

BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    mlp.backends.unavailable_reason("numba") is not None, reason="numba unavailable"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_transposed_layer_gives_what_the_training_product_gives(backend, name, dtype):
    backend = mlp.get_backend(backend)
    rng = np.random.default_rng(0)
    batch, n_in, n_out = 4, 24, 4 * backend.TRANSPOSE_FROM  # (the smallest layer that transposes at 4 rows)
    X = rng.standard_normal((batch, n_in)).astype(dtype)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    activation = activations.get(name)
    expected = np.array(backend.dense_forward(X, W, b, activation))
    got = backend.dense_inference(X, W, b, activation)
    assert got.flags.f_contiguous and not got.flags.c_contiguous, "the transposed product did not run"
    assert_close(got, expected, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predictions_of_a_network_with_wide_layers_match_the_training_pass_and_stay_put(backend):
    model = mlp.MLP([30, 256, 256, 3], activation="tanh", output="softmax", backend=backend, seed=0,
                    dtype="float64")
    rng = np.random.default_rng(1)
    for batch in (1, 2, 8, 63, 64, 65):  # transposed up to 64 rows (256 outputs / 4), then not
        X = rng.standard_normal((batch, 30))
        expected = model.backend.to_numpy(model._forward(model.backend.asarray(X), False, keep=True)[0][-1])
        first = model.forward(X)
        kept = np.array(first)
        assert_close(model.predict(X), expected, "float64")
        model.forward(X + 1)  # a second pass must not write into the first one's result
        np.testing.assert_array_equal(first, kept)
        assert_close(kept, expected, "float64")
