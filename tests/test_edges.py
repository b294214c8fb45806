"""The edges of the model API: every input a careless or hostile user can give yields a right
result or an mlp error raised before any state changes (weights, optimizer state, generators)."""
import numpy as np
import pytest

import mlp
from mlp.errors import MLPError


def _classifier(backend="numpy", dtype="float32", seed=0):
    return mlp.MLP([2, 4, 3], output="softmax", backend=backend, dtype=dtype, seed=seed).compile(
        loss="cross_entropy", optimizer="adam")


def _state(model):
    """A copy of everything a refused call must leave alone."""
    to_numpy = model.backend.to_numpy
    optimizer = {k: to_numpy(v).copy() for k, v in model.optimizer.state_arrays().items()} \
        if model.optimizer else {}
    return (to_numpy(model.params).copy(), optimizer, getattr(model.optimizer, "step", None),
            str(model._shuffle_rng.bit_generator.state))


def _assert_unchanged(model, before):
    after = _state(model)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1].keys() == before[1].keys()
    for key in before[1]:
        np.testing.assert_array_equal(after[1][key], before[1][key])
    assert after[2:] == before[2:]


# --- a layer belongs to one model ----------------------------------------------------

def test_a_layer_used_twice_in_one_model_is_refused():
    hidden = mlp.Dense(4, 4, activation="tanh")
    with pytest.raises(ValueError, match="used twice"):
        mlp.Sequential([mlp.Dense(2, 4), hidden, hidden, mlp.Dense(4, 1)])
    drop = mlp.Dropout(0.5)
    with pytest.raises(ValueError, match="used twice"):
        mlp.Sequential([mlp.Dense(2, 4), drop, mlp.Dense(4, 4), drop, mlp.Dense(4, 1)])


def test_a_layer_of_another_live_model_is_refused_and_freed_with_it():
    shared = mlp.Dense(2, 3)
    first = mlp.Sequential([shared, mlp.Dense(3, 1)])
    with pytest.raises(ValueError, match="already belongs to another model.*clone"):
        mlp.Sequential([shared, mlp.Dense(3, 1)])
    np.testing.assert_array_equal(first.backend.to_numpy(shared.W), first.get_weights()[0][0])
    del first
    import gc

    gc.collect()
    second = mlp.Sequential([shared, mlp.Dense(3, 1)])  # its model is gone: free again
    assert second.dense_layers[0] is shared


def test_a_refused_model_does_not_claim_its_layers():
    layer = mlp.Dense(2, 3)
    with pytest.raises(ValueError, match="do not chain"):
        mlp.Sequential([layer, mlp.Dense(4, 1)])
    mlp.Sequential([layer, mlp.Dense(3, 1)])


# --- values beyond the model's dtype --------------------------------------------------

def test_float64_input_beyond_float32_range_is_refused_before_training(backend_name):
    model = _classifier(backend_name)
    before = _state(model)
    X = np.random.default_rng(0).normal(size=(8, 2)) * 1e300
    for call in (lambda: model.fit(X, np.arange(8) % 3, verbose=0, epochs=1),
                 lambda: model.predict(X), lambda: model.evaluate(X, np.arange(8) % 3),
                 lambda: model.train_step(X, np.arange(8) % 3)):
        with pytest.raises(ValueError, match="float32.*overflow|beyond float32"):
            call()
    _assert_unchanged(model, before)
    with pytest.raises(ValueError, match="beyond float32"):
        model.set_weights([(np.full((4, 2), 1e300), np.zeros(4)), (np.zeros((3, 4)), np.zeros(3))])
    _assert_unchanged(model, before)


def test_float64_model_takes_large_finite_input():
    model = _classifier(dtype="float64")
    assert np.isfinite(model.predict(np.full((2, 2), 1e300))).all()


# --- divergence leaves finite weights ----------------------------------------------------

def _diverging(backend_name):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 2)), rng.normal(size=64) * 1e3
    model = mlp.MLP([2, 16, 1], activation="relu", backend=backend_name, seed=0)
    return model.compile(loss="mse", optimizer=mlp.SGD(lr=5.0)), X, y


def test_divergence_restores_the_last_finite_weights(backend_name):
    model, X, y = _diverging(backend_name)
    with pytest.raises(mlp.TrainingDivergedError, match=r"restored the weights .*(start of|end of epoch)") as info:
        model.fit(X, y, epochs=50, batch_size=8, verbose=0)
    params = model.backend.to_numpy(model.params)
    assert np.isfinite(params).all()
    assert info.value.restored_epoch is None or info.value.restored_epoch >= 0
    assert all(np.isfinite(model.backend.to_numpy(v)).all() for v in model.optimizer.state_arrays().values())
    assert np.isfinite(model.predict(X[:4])).all()


def test_divergence_with_early_stopping_restores_the_best_weights():
    model, X, y = _diverging("numpy")
    with pytest.raises(mlp.TrainingDivergedError, match="best") as info:
        model.fit(X, y, epochs=50, batch_size=64, verbose=0, validation_split=0.25,
                  early_stopping=mlp.EarlyStopping(patience=50))
    assert np.isfinite(model.backend.to_numpy(model.params)).all()
    assert info.value.restored_epoch is not None


def test_an_early_stopping_given_to_a_second_fit_starts_afresh():
    """Its best value and patience count belong to one run: carried over, a second fit would
    compare against the first run's best and could stop at once."""
    X, y = mlp.datasets.spirals(n=40, seed=0)
    stopper = mlp.EarlyStopping(patience=3, min_delta=10.0, monitor="loss")  # stops after 4 epochs
    first = _classifier().fit(X, y, epochs=40, verbose=0, early_stopping=stopper)
    assert stopper.stopped_epoch is not None  # it did stop: the second run starts from a stopped one
    fresh = _classifier(seed=1).fit(X, y, epochs=40, verbose=0, early_stopping=mlp.EarlyStopping(3, 10.0, "loss"))
    again = _classifier(seed=1).fit(X, y, epochs=40, verbose=0, early_stopping=stopper)
    assert again["loss"] == fresh["loss"] and len(again.epoch) == len(first.epoch) == 4


@pytest.mark.parametrize("early_stopping, validation, match", [
    (mlp.EarlyStopping(monitor="bogus"), {}, "does not report; available: loss, lr, seconds"),
    (mlp.EarlyStopping(monitor="val_loss"), {}, "give validation_data or validation_split"),
    (mlp.EarlyStopping(monitor="accuracy"), {"validation_split": 0.2}, "available: loss, val_loss"),
])
def test_a_monitor_fit_will_not_log_is_refused_before_training(early_stopping, validation, match):
    model = _classifier()
    model.metrics = []
    before = _state(model)
    X, y = mlp.datasets.spirals(n=20, seed=0)
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, epochs=2, verbose=0, early_stopping=early_stopping, **validation)
    _assert_unchanged(model, before)


def test_a_bad_batch_size_with_a_validation_split_leaves_the_shuffling_state():
    model = _classifier()
    before = _state(model)
    X, y = mlp.datasets.spirals(n=20, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(X, y, batch_size=0, validation_split=0.25, verbose=0)
    _assert_unchanged(model, before)


# --- gradcheck ----------------------------------------------------------------------------

def test_gradcheck_refuses_bad_eps_and_non_finite_params():
    model = mlp.MLP([2, 3, 1], dtype="float64", seed=0).compile(loss="mse")
    X, y = np.ones((4, 2)), np.zeros(4)
    for eps in (0, -1e-4, float("nan"), float("inf"), "a"):
        with pytest.raises(ValueError, match="eps"):
            mlp.gradcheck(model, X, y, eps=eps)
    model.params[0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        mlp.gradcheck(model, X, y)


def test_gradcheck_is_not_ok_when_an_error_is_nan():
    from mlp.gradcheck import GradcheckResult

    assert not GradcheckResult({"dense0.W": float("nan"), "dense0.b": 0.0}, 2).ok()
    assert np.isnan(GradcheckResult({"dense0.b": 0.0, "dense0.W": float("nan")}, 2).max_error)


# --- hyperparameters --------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda v: mlp.SGD(lr=v), lambda v: mlp.Adam(lr=v), lambda v: mlp.SGD(lr=0.1, momentum=v),
    lambda v: mlp.Adam(eps=v), lambda v: mlp.Adam(betas=(v, 0.9)),
    lambda v: mlp.schedules.StepLR(gamma=v), lambda v: mlp.schedules.ExponentialLR(gamma=v),
    lambda v: mlp.schedules.CosineLR(10, min_lr=v), lambda v: mlp.schedules.ReduceLROnPlateau(min_lr=v),
    lambda v: mlp.schedules.ReduceLROnPlateau(min_delta=v), lambda v: mlp.EarlyStopping(min_delta=v),
])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "0.1", None])
def test_negative_or_non_finite_hyperparameters_are_refused(make, value):
    with pytest.raises((ValueError, TypeError)):
        make(value)


@pytest.mark.parametrize("name", ["l1", "l2"])
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_penalties_must_be_finite_and_non_negative(name, value):
    model = _classifier()
    with pytest.raises(ValueError, match=name):
        model.compile(loss="cross_entropy", **{name: value})
    with pytest.raises(ValueError, match="clip_norm"):
        model.compile(loss="cross_entropy", clip_norm=float("nan"))


def test_a_schedule_giving_a_bad_rate_stops_before_the_step():
    model = _classifier()
    before = _state(model)
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match=r"lr_schedule gave .* for epoch 1"):
            model.fit(np.zeros((4, 2)), [0, 1, 2, 0], verbose=0, lr_schedule=lambda epoch, lr: bad)
        _assert_unchanged(model, before)


def test_numpy_scalars_are_accepted_wherever_numbers_are():
    model = mlp.MLP([np.int64(2), np.int32(3), 1], seed=0)
    model.compile(loss="mse", optimizer=mlp.SGD(lr=np.float32(0.1), momentum=np.float64(0.5)),
                  l2=np.float32(0.1), l1=np.float64(0.0), clip_norm=np.float32(1.0))
    history = model.fit(np.zeros((4, 2)), np.zeros(4), epochs=np.int64(2), batch_size=np.int32(2),
                        verbose=0, early_stopping=np.int64(3), validation_split=np.float64(0.5),
                        checkpoint_every=np.int64(1))
    assert len(history.epoch) == 2
    model.predict(np.zeros((3, 2)), batch_size=np.int64(2))
    model.evaluate(np.zeros((3, 2)), np.zeros(3), batch_size=np.int16(2))
    mlp.Dropout(np.float32(0.5))
    mlp.schedules.StepLR(step_size=np.int64(2), gamma=np.float32(0.5))
    mlp.EarlyStopping(patience=np.int64(2), min_delta=np.float32(0.01))
    mlp.Dense(2, 2, activation="elu").__class__  # noqa: B018
    mlp.activations.get("elu", alpha=np.float32(0.5))


# --- arguments that reached NumPy's errors ----------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda m: m.fit(np.zeros((4, 2)), 3, verbose=0), "y"),
    (lambda m: m.evaluate(np.zeros((4, 2)), [0, 1, 2, 0], batch_size=-1), "batch_size"),
    (lambda m: m.evaluate(np.zeros((4, 2)), [0, 1, 2, 0], batch_size=2.5), "batch_size"),
    (lambda m: m.predict(np.zeros((4, 2)), batch_size=0), "batch_size"),
    (lambda m: m.predict(np.zeros((4, 2)), batch_size="8"), "batch_size"),
    (lambda m: m.fit(np.zeros((4, 2)), [0, 1, 2, 0], epochs=2.0, verbose=0), "epochs"),
    (lambda m: m.fit(np.zeros((4, 2)), [0, 1, 2, 0], validation_split=float("nan"), verbose=0),
     "validation_split"),
    (lambda m: m.warmup(10 ** 9), "warmup"),
])
def test_bad_call_arguments_are_clear_errors(call, match):
    model = _classifier()
    before = _state(model)
    with pytest.raises(ValueError, match=match):
        call(model)
    _assert_unchanged(model, before)


def test_predict_batch_size_none_is_the_whole_set():
    model = _classifier()
    X = np.random.default_rng(0).normal(size=(5, 2))
    np.testing.assert_array_equal(model.predict(X, batch_size=None), model.predict(X))


@pytest.mark.parametrize("kwargs, match", [
    ({"activation": {"alpha": 1}}, "name"),
    ({"activation": {"name": "elu", "alpha": float("inf")}}, "alpha"),
    ({"activation": {"name": "elu", "alpha": float("nan")}}, "alpha"),
    ({"activation": {"name": "leaky_relu", "slope": float("nan")}}, "slope"),
    ({"activation": 5}, "activation"),
    ({"init": 5}, "init"),
    ({"init": "zeros"}, "initialiser|init"),
    ({"seed": -1}, "seed"),
    ({"seed": "a"}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"dropout": float("nan")}, "ropout"),
    ({"dropout": -0.5}, "ropout"),
    ({"dtype": "foo"}, "dtype must be one of float32, float64"),
    ({"dtype": "int32"}, "dtype must be one of float32, float64"),
    ({"dtype": 5}, "dtype must be one of float32, float64"),
])
def test_bad_model_arguments_are_clear_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        mlp.MLP([2, 3, 1], **kwargs)
    assert isinstance(info.value, MLPError) or type(info.value).__module__ == "builtins"


def test_seed_accepts_numpy_integers_and_seed_sequences():
    a = mlp.MLP([2, 3, 1], seed=np.int64(7)).get_weights()
    b = mlp.MLP([2, 3, 1], seed=7).get_weights()
    np.testing.assert_array_equal(a[0][0], b[0][0])


def test_sparse_input_says_to_densify():
    sparse = pytest.importorskip("scipy.sparse")
    model = _classifier()
    with pytest.raises(TypeError, match="sparse.*toarray"):
        model.predict(sparse.csr_matrix(np.ones((3, 2))))
    with pytest.raises(TypeError, match="sparse.*toarray"):
        model.fit(sparse.csr_matrix(np.ones((3, 2))), [0, 1, 2], verbose=0)


# --- data utilities ---------------------------------------------------------------------

def test_standard_scaler_with_huge_values_scales_them():
    X = np.array([[1e308, 1.0], [-1e308, 2.0], [0.0, 3.0]])
    scaled = mlp.StandardScaler().fit_transform(X)
    assert np.isfinite(scaled).all()
    np.testing.assert_allclose(scaled.std(axis=0), [1.0, 1.0])
    np.testing.assert_allclose(scaled[:, 0], [1.2247448713915887, -1.2247448713915887, 0.0])


def test_minmax_scaler_refuses_non_finite_ranges_and_spans_overflow_safely():
    for bad in ((0, float("inf")), (float("nan"), 1), (-float("inf"), 0), (1, 0), "ab"):
        with pytest.raises((ValueError, TypeError), match="feature_range"):
            mlp.MinMaxScaler(bad)
    X = np.array([[0.8e308], [-0.8e308], [0.0]])
    np.testing.assert_allclose(mlp.MinMaxScaler().fit_transform(X).ravel(), [1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="overflows"):  # max - min is beyond float64
        mlp.MinMaxScaler().fit(np.array([[1.7e308], [-1.7e308]]))


def test_scaler_transform_checks_its_input():
    scaler = mlp.StandardScaler().fit(np.ones((3, 2)))
    with pytest.raises(ValueError, match="2 features"):
        scaler.transform(np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        scaler.transform(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("n, val, test", [(2, 0.4, 0.4), (3, 0.3, 0.4), (1, 0.0, 0.5), (4, 0.1, 0.1)])
def test_splits_never_leave_a_part_empty(n, val, test):
    X = np.arange(n * 2).reshape(n, 2)
    try:
        parts = mlp.train_val_test_split(X, val=val, test=test, seed=0)
    except ValueError as error:
        assert "empty" in str(error)
        return
    train, val_part, test_part = parts
    assert len(train) >= 1
    assert (len(val_part) >= 1) == (val > 0) and (len(test_part) >= 1) == (test > 0)
    assert len(train) + len(val_part) + len(test_part) == n


def test_split_shares_must_be_finite_numbers():
    for kwargs in ({"val": float("nan")}, {"test": float("nan")}, {"test": "0.2"}):
        with pytest.raises((ValueError, TypeError)):
            mlp.train_val_test_split(np.ones((10, 2)), **kwargs)


def test_one_hot_edges():
    assert mlp.one_hot([], n_classes=3).shape == (0, 3)
    with pytest.raises(ValueError, match="n_classes"):
        mlp.one_hot([])
    with pytest.raises(ValueError, match="n_classes"):
        mlp.one_hot([0, 1], n_classes=0)
    with pytest.raises(ValueError, match="integer labels"):
        mlp.one_hot([0.5, 1])


@pytest.mark.parametrize("name", ["spirals", "moons", "circles", "xor"])
@pytest.mark.parametrize("n", [-1, 0, 2.5, "10"])
def test_synthetic_datasets_need_a_positive_count(name, n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        mlp.datasets.load(name, n=n)


def test_synthetic_datasets_refuse_non_finite_noise():
    with pytest.raises(ValueError, match="noise"):
        mlp.datasets.spirals(n=10, noise=float("nan"))
    with pytest.raises(ValueError, match="noise"):
        mlp.datasets.moons(n=10, noise=-1)


# --- the perceptron ---------------------------------------------------------------------

def test_perceptron_arguments_and_input():
    for kwargs in ({"lr": float("nan")}, {"lr": -1.0}, {"lr": 0.0}, {"n_in": 0}, {"n_in": 2.5}):
        with pytest.raises(ValueError):
            mlp.Perceptron(**{"n_in": 2, **kwargs})
    p = mlp.Perceptron(2)
    for epochs in (-1, 0, 1.5):
        with pytest.raises(ValueError, match="epochs"):
            p.fit(np.ones((2, 2)), [0, 1], epochs=epochs)
    p.fit(np.array([[0.0, 0.0], [1.0, 1.0]]), [0, 1], epochs=np.int64(10))
    with pytest.raises(ValueError, match="NaN"):
        p.predict(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="2 features|shape"):
        p.predict(np.ones((2, 3)))


def test_an_optimizer_of_another_live_model_is_refused():
    adam = mlp.Adam(lr=0.01)
    first = mlp.MLP([2, 3, 1], seed=0).compile(loss="mse", optimizer=adam)
    first.compile(loss="mse", optimizer=adam)  # the same model again: fine
    second = mlp.MLP([2, 3, 1], seed=1)
    with pytest.raises(ValueError, match="already trains another model.*optimizer of its own"):
        second.compile(loss="mse", optimizer=adam)
    assert second.loss is None and first.optimizer is adam
    import pickle

    copy = pickle.loads(pickle.dumps(first))  # a copy owns its own copies
    assert copy.optimizer.owner is copy and copy.dense_layers[0].owner is copy
    copy.fit(np.ones((4, 2)), np.zeros(4), verbose=0)


def test_scikit_learn_grids_given_as_numpy_arrays_and_a_random_state():
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV

    X, y = mlp.datasets.moons(n=30, seed=0)
    grid = {"hidden_layer_sizes": [np.array([4]), np.array([4, 4])], "learning_rate": np.array([0.01, 0.1]),
            "max_iter": np.array([2]), "batch_size": np.array([16]), "l2": np.array([0.0, 1e-3])}
    search = GridSearchCV(mlp.MLPClassifier(random_state=0), grid, cv=2, error_score="raise").fit(X, y)
    assert search.best_estimator_.predict(X).shape == (60,)
    a = mlp.MLPClassifier(max_iter=2, random_state=np.random.RandomState(3)).fit(X, y).predict_proba(X)
    b = mlp.MLPClassifier(max_iter=2, random_state=np.random.RandomState(3)).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("item", [(np.zeros((1, 1)),), "ab", 5, (np.zeros((1, 1)), np.zeros(1), np.zeros(1))])
def test_set_weights_refuses_an_item_that_is_not_a_pair(item):
    model = mlp.MLP([1, 1], output="sigmoid", seed=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match="one \\(W, b\\) pair per Dense layer; item 0 is"):
        model.set_weights([item])
    np.testing.assert_array_equal(model.get_weights()[0][0], before[0][0])


def test_a_batch_whose_loss_overflows_takes_no_step(backend_name):
    """train_step on inputs so large that the loss overflows (finite, but 1e300 in float64):
    TrainingDivergedError, and the weights and the optimizer's state and step count as they were
    (the compiled whole step, the per-layer path and folded SGD alike)."""
    from mlp.errors import TrainingDivergedError

    for optimizer in (mlp.Adam(0.01), mlp.SGD(0.1)):
        model = mlp.MLP([1, 4, 1], backend=backend_name, dtype="float64", seed=0).compile(loss="mse",
                                                                                          optimizer=optimizer)
        model.train_step(np.ones((2, 1)), np.zeros(2))
        params = model.backend.to_numpy(model.params).copy()
        step = getattr(model.optimizer, "step", None)
        if not model.backend.on_host:
            pytest.skip("a GPU backend does not read the loss back on every step")
        with pytest.raises(TrainingDivergedError, match="no step was taken"):
            model.train_step(np.full((2, 1), 1e300), np.zeros(2))
        np.testing.assert_array_equal(model.backend.to_numpy(model.params), params)
        assert getattr(model.optimizer, "step", None) == step
