"""Sample and class weights (mlp.weights): the weighted loss and output delta on every backend
and path against the NumPy reference, the reference against finite differences and against
repeated rows, equal weights bit-identical to none, and bad weights refused before training."""
import numpy as np
import pytest

import mlp
from tests.conftest import assert_close
from tests.test_conformance import OUTPUT_LOSS, problem

LONG = pytest.mark.long
# one loss branch of the compiled step in the quick tier, every one in the long tier
EVERY_LOSS = [OUTPUT_LOSS[0]] + [pytest.param(*pair, marks=LONG, id="-".join(pair)) for pair in OUTPUT_LOSS[1:]]


def weights_for(n, rng):
    weights = rng.uniform(0.0, 3.0, size=n)
    weights[:3] = 0.0  # some samples do not count at all
    return weights


def trained(backend, output, loss, X, y, dtype="float64", **fit_args):
    model = mlp.MLP([6, 12, 3], activation="tanh", output=output, backend=backend, dtype=dtype, seed=5)
    model.compile(loss=loss, optimizer=mlp.Adam(0.01))
    history = model.fit(X, y, epochs=3, batch_size=8, verbose=0, **fit_args)
    return history["loss"], model.backend.to_numpy(model.params)


@pytest.mark.parametrize("output,loss", EVERY_LOSS)
def test_weighted_training_matches_reference(backend_name, output, loss, rng):
    X, y = problem(loss, 3, 40, rng)
    weights = weights_for(40, rng)
    ref_loss, ref_params = trained("numpy", output, loss, X, y, sample_weight=weights)
    other_loss, other_params = trained(backend_name, output, loss, X, y, sample_weight=weights)
    assert_close(other_loss, ref_loss, "float64", scale=10)
    assert_close(other_params, ref_params, "float64", scale=50)
    unweighted = trained("numpy", output, loss, X, y)[1]
    assert not np.allclose(ref_params, unweighted)  # the weights took effect


def test_weighted_training_on_the_numba_per_layer_path(monkeypatch, rng):
    pytest.importorskip("numba")
    monkeypatch.setattr(mlp.get_backend("numba"), "crossover_override", 0)  # BLAS GEMMs + element-wise kernels
    X, y = problem("cross_entropy", 3, 40, rng)
    weights = weights_for(40, rng)
    ref = trained("numpy", "softmax", "cross_entropy", X, y, sample_weight=weights)
    other = trained("numba", "softmax", "cross_entropy", X, y, sample_weight=weights)
    assert_close(other[1], ref[1], "float64", scale=50)


@pytest.mark.parametrize("output,loss", OUTPUT_LOSS)
def test_equal_weights_are_bit_identical_to_none(backend_name, output, loss, rng):
    X, y = problem(loss, 3, 40, rng)
    plain = trained(backend_name, output, loss, X, y, dtype="float32")
    equal = trained(backend_name, output, loss, X, y, dtype="float32", sample_weight=np.full(40, 2.5))
    np.testing.assert_array_equal(equal[1], plain[1])
    assert equal[0] == plain[0]


@pytest.mark.parametrize("output,loss", OUTPUT_LOSS)
def test_weighted_gradients_follow_finite_differences(output, loss, rng):
    X, y = problem(loss, 3, 10, rng)
    weights = weights_for(10, rng)
    model = mlp.MLP([6, 5, 3], activation="tanh", output=output, dtype="float64", seed=1)
    _, grads = model.loss_and_gradients(X, y, loss, sample_weight=weights)
    analytic = np.concatenate([np.concatenate([dW.ravel(), db]) for dW, db in grads])

    numeric = np.empty_like(analytic)
    params, eps = model.params, 1e-6
    for j in range(params.size):
        saved = params[j]
        params[j] = saved + eps
        up = model.loss_and_gradients(X, y, loss, sample_weight=weights)[0]
        params[j] = saved - eps
        down = model.loss_and_gradients(X, y, loss, sample_weight=weights)[0]
        params[j] = saved
        numeric[j] = (up - down) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("output,loss", [pair for pair in OUTPUT_LOSS if pair[1] != "sse"])
def test_integer_weights_train_as_repeated_rows(output, loss, rng):
    """Full-batch gradient descent: weight k trains as k copies of the row, 0 as no row (for the
    losses that are means; sse, a sum, differs by the constant n / sum(w) of the normalisation)."""
    X, y = problem(loss, 3, 15, rng)
    counts = rng.integers(0, 4, size=15)
    counts[0] = 0
    results = []
    for data, weights in (((X, y), counts), ((X.repeat(counts, axis=0), np.repeat(y, counts, axis=0)), None)):
        model = mlp.MLP([6, 7, 3], activation="tanh", output=output, dtype="float64", seed=4)
        model.compile(loss=loss, optimizer=mlp.SGD(0.01))
        model.fit(*data, epochs=20, batch_size=None, verbose=0, sample_weight=weights)
        results.append(model.params.copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-10, atol=1e-12)


def test_balanced_class_weight_is_scikit_learns(rng):
    from sklearn.utils.class_weight import compute_class_weight

    X, y = problem("cross_entropy", 3, 60, rng)
    y[:30] = 0  # unbalanced
    per_class = compute_class_weight("balanced", classes=np.unique(y), y=y)
    by_class = trained("numpy", "softmax", "cross_entropy", X, y, class_weight="balanced")
    by_sample = trained("numpy", "softmax", "cross_entropy", X, y, sample_weight=per_class[y])
    np.testing.assert_array_equal(by_class[1], by_sample[1])
    as_dict = trained("numpy", "softmax", "cross_entropy", X, y, class_weight=dict(enumerate(per_class)))
    np.testing.assert_array_equal(as_dict[1], by_sample[1])


def test_class_weight_on_one_sigmoid_unit(rng):
    X = rng.normal(size=(30, 6))
    y = (rng.random(30) < 0.2).astype(float)
    model = mlp.MLP([6, 4, 1], output="sigmoid", seed=1).compile(loss="bce", optimizer="adam")
    by_class = model.loss_and_gradients(X, y, class_weight={0: 1.0, 1: 4.0})[0]
    by_sample = model.loss_and_gradients(X, y, sample_weight=np.where(y == 1, 4.0, 1.0))[0]
    assert by_class == by_sample


@pytest.mark.parametrize("fit_args,message", [
    ({"sample_weight": -np.ones(20)}, "finite and >= 0"),
    ({"sample_weight": np.full(20, np.nan)}, "finite and >= 0"),
    ({"sample_weight": np.ones(19)}, r"shape \(20,\)"),
    ({"sample_weight": np.zeros(20)}, "weights are all zero"),
    ({"sample_weight": "heavy"}, "sample_weight must be numbers"),
    ({"class_weight": "even"}, "'balanced' or a dict"),
    ({"class_weight": {7: 2.0}}, "output units 0..2"),
    ({"class_weight": {0: -1.0}}, "finite number >= 0"),
])
def test_bad_weights_are_refused_before_training(fit_args, message, rng):
    X, y = problem("cross_entropy", 3, 20, rng)
    model = mlp.MLP([6, 4, 3], output="softmax", seed=1).compile(loss="cross_entropy", optimizer="adam")
    before = model.params.copy()
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, epochs=1, verbose=0, **fit_args)
    np.testing.assert_array_equal(model.params, before)


def test_class_weight_needs_a_classification_loss(rng):
    X, y = problem("mse", 3, 20, rng)
    model = mlp.MLP([6, 4, 3], seed=1).compile(loss="mse", optimizer="adam")
    with pytest.raises(ValueError, match="classification loss"):
        model.fit(X, y, epochs=1, verbose=0, class_weight="balanced")


def test_validation_split_keeps_each_row_with_its_weight(rng):
    """A validation split moves rows and their weights together; the training part is renormalised."""
    X, y = problem("cross_entropy", 3, 40, rng)
    weights = weights_for(40, rng)
    model = mlp.MLP([6, 4, 3], output="softmax", seed=1).compile(loss="cross_entropy", optimizer="adam")
    model.fit(X, y, epochs=2, verbose=0, validation_split=0.25, sample_weight=weights)  # runs, finite
    twin = mlp.MLP([6, 4, 3], output="softmax", seed=1).compile(loss="cross_entropy", optimizer="adam")
    order = twin._shuffle_rng.permutation(40)  # the split fit draws first
    train = order[10:]
    twin._shuffle_rng = np.random.default_rng(np.random.SeedSequence(twin.seed).spawn(3)[1])
    twin._shuffle_rng.permutation(40)
    twin.fit(X[train], y[train], epochs=2, verbose=0, sample_weight=weights[train])
    np.testing.assert_allclose(twin.params, model.params, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=LONG)])
def test_a_weighted_threaded_step_with_penalty_and_clipping_matches_reference(monkeypatch, dtype, rng):
    """The weighted compiled step on its threaded plan (products and row passes split across
    threads, the loss a prange reduction), with L2 and clipping, against NumPy."""
    pytest.importorskip("numba")
    from mlp.kernels import numba_plan

    monkeypatch.setattr(mlp.get_backend("numba"), "crossover_override", 10**9)  # the whole compiled step
    sizes, batch = [16, 64, 64, 5], 512  # 512 rows x 5440 weights: over numba_plan.SPLIT_WORK
    X, y = rng.normal(size=(1024, 16)), rng.integers(0, 5, size=1024)
    weights = weights_for(1024, rng)
    results = []
    for backend in ("numpy", "numba"):
        model = mlp.MLP(sizes, activation="tanh", output="softmax", backend=backend, dtype=dtype, seed=3)
        model.compile(loss="cross_entropy", optimizer=mlp.Adam(0.01), l2=1e-3, clip_norm=1.0)
        if backend == "numba":
            plan = numba_plan.step_plan(model, batch, weighted=True)
            assert plan.split and plan.weighted and plan.clip and plan.l2
        history = model.fit(X, y, epochs=2, batch_size=batch, verbose=0, sample_weight=weights)
        results.append((history["loss"], model.backend.to_numpy(model.params)))
    assert_close(results[1][0], results[0][0], dtype, scale=10)
    assert_close(results[1][1], results[0][1], dtype, scale=50)


def test_a_split_that_leaves_only_zero_weights_for_training_is_refused(rng):
    X, y = problem("cross_entropy", 3, 20, rng)
    model = mlp.MLP([6, 4, 3], output="softmax", seed=1).compile(loss="cross_entropy", optimizer="adam")
    order = np.random.default_rng(np.random.SeedSequence(1).spawn(3)[1]).permutation(20)  # the split's draw
    weights = np.zeros(20)
    weights[order[:10]] = 1.0  # only the validation half weighs anything
    state = model._shuffle_rng.bit_generator.state
    with pytest.raises(ValueError, match="all have weight zero"):
        model.fit(X, y, epochs=1, verbose=0, validation_split=0.5, sample_weight=weights)
    assert model._shuffle_rng.bit_generator.state == state  # as if never drawn


def test_class_weight_refuses_multi_label_targets(rng):
    X = rng.normal(size=(20, 6))
    Y = rng.integers(0, 2, size=(20, 3))
    model = mlp.MLP([6, 4, 3], output="sigmoid", seed=1).compile(loss="bce", optimizer="adam")
    with pytest.raises(ValueError, match="one class per sample"):
        model.fit(X, Y, epochs=1, verbose=0, class_weight={0: 2.0})
