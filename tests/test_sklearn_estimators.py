"""The scikit-learn estimators against scikit-learn's own estimator suite (every check it
yields, no expected failures, nothing skipped by a tag of ours), on the NumPy and Numba
backends, and what the suite does not cover: scikit-learn's parameter names, the old names'
deprecation path, sample and class weights, predictions that do not depend on their batch in
float32."""
import warnings

import numpy as np
import pytest

import mlp

sklearn = pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

# checks scikit-learn skips itself when an optional package (pandas, array-api-compat) is absent
SKIPPED_BY_SCIKIT_LEARN_WITHOUT = {"check_sample_weights_pandas_series": "pandas",
                                   "check_classifier_data_not_an_array": "pandas",
                                   "check_regressor_data_not_an_array": "pandas",
                                   "check_array_api_input": "array-api-compat"}


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=pytest.mark.long)])
@pytest.mark.parametrize("estimator", [mlp.MLPClassifier, mlp.MLPRegressor])
def test_the_whole_estimator_suite_passes(estimator, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=100 on the suite's small sets
        results = check_estimator(estimator(backend=backend, max_iter=100), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert failed == []
    for result in results:
        if result["status"] != "passed":
            assert result["check_name"] in SKIPPED_BY_SCIKIT_LEARN_WITHOUT, result
    assert not estimator().__sklearn_tags__().non_deterministic


@pytest.mark.parametrize("estimator", [mlp.MLPClassifier, mlp.MLPRegressor])
def test_float32_predictions_do_not_depend_on_the_batch(estimator):
    from sklearn.utils.estimator_checks import check_methods_sample_order_invariance, check_methods_subset_invariance

    check_methods_subset_invariance(estimator.__name__, estimator(dtype="float32", max_iter=20, random_state=0))
    check_methods_sample_order_invariance(estimator.__name__, estimator(dtype="float32", max_iter=20, random_state=0))


def test_scikit_learn_parameter_names_reach_the_model():
    clf = mlp.MLPClassifier(hidden_layer_sizes=(7, 5), activation="tanh", solver="sgd", alpha=0.01,
                            learning_rate_init=0.05, momentum=0.5, nesterovs_momentum=False, batch_size=16,
                            max_iter=3, random_state=np.random.RandomState(0), tol=0.0)
    X, y = mlp.datasets.moons(n=40, seed=0)
    clf.fit(X, y)
    model = clf.model_
    assert [layer.n_out for layer in model.dense_layers] == [7, 5, 2]
    assert model.dense_layers[0].activation.name == "tanh"
    assert type(model.optimizer).__name__ == "SGD" and model.optimizer.momentum == 0.5
    assert not model.optimizer.nesterov and model.optimizer.lr == 0.05 and model.l2 == 0.01 / (2 * 16)
    adam = mlp.MLPRegressor(beta_1=0.8, beta_2=0.99, epsilon=1e-6, max_iter=1).fit(X, y).model_.optimizer
    assert (adam.beta1, adam.beta2, adam.eps) == (0.8, 0.99, 1e-6)


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("solver,schedule", [("adam", "constant"), ("sgd", "adaptive")])
def test_tol_and_n_iter_no_change_stop_where_scikit_learns_do(early_stopping, solver, schedule):
    """scikit-learn's own MLP on the same data stops after as many epochs (a tol no epoch can meet:
    the count of epochs alone decides, whatever the two libraries' losses)."""
    from sklearn.neural_network import MLPClassifier

    X, y = mlp.datasets.moons(n=40, seed=0)
    settings = dict(max_iter=500, tol=10.0, n_iter_no_change=3, early_stopping=early_stopping, solver=solver,
                    learning_rate=schedule, random_state=0)
    ours = mlp.MLPClassifier(**settings).fit(X, y)
    theirs = MLPClassifier(**settings).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert (ours.best_loss_ is None) == (theirs.best_loss_ is None) == early_stopping
    assert len(ours.validation_scores_ or []) == len(theirs.validation_scores_ or [])
    with pytest.warns(sklearn.exceptions.ConvergenceWarning, match="Maximum iterations"):
        mlp.MLPClassifier(max_iter=2, random_state=0).fit(X, y)


def test_a_refused_fit_leaves_the_estimator_as_it_was():
    X, y = mlp.datasets.moons(n=40, seed=0)
    clf = mlp.MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    before = (clf.model_, clf.n_features_in_, list(clf.classes_), clf.predict_proba(X))
    with pytest.raises(ValueError):
        clf.set_params(n_iter_no_change=0).fit(X, y)
    with pytest.raises(ValueError):
        clf.set_params(n_iter_no_change=10).fit(X[:, :1], y, sample_weight=-np.ones(80))
    with pytest.raises(ValueError, match="same classes"):
        clf.set_params(warm_start=True).fit(X, np.where(y == 1, "b", "a"))
    assert (clf.model_, clf.n_features_in_, list(clf.classes_)) == before[:3]
    np.testing.assert_array_equal(clf.predict_proba(X), before[3])


def test_a_warm_start_trains_under_the_current_parameters():
    X, y = mlp.datasets.moons(n=40, seed=0)
    clf = mlp.MLPClassifier(max_iter=2, random_state=0, warm_start=True).fit(X, y)
    first = clf.model_.params.copy()
    clf.set_params(solver="sgd", learning_rate_init=0.5, alpha=1.0, max_iter=1).fit(X, y)
    assert type(clf.model_.optimizer).__name__ == "SGD" and clf.model_.optimizer.lr == 0.5
    assert clf.model_.l2 == 1.0 / (2 * 80)  # scikit-learn's alpha/2 ||W||^2 over a batch of 80
    assert clf.n_iter_ == 3 and not np.array_equal(clf.model_.params, first)


def test_alpha_penalises_as_scikit_learns():
    """A full-batch SGD step from the same weights reaches scikit-learn's weights: its penalty is
    alpha/2 ||W||^2 divided by the batch's rows (softmax and cross-entropy alike in both)."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)  # three classes: a softmax output in both
    settings = dict(hidden_layer_sizes=(5,), activation="tanh", solver="sgd", momentum=0.0, alpha=0.3,
                    learning_rate_init=0.1, batch_size=30, shuffle=False, random_state=0)
    theirs, ours = MLPClassifier(**settings), mlp.MLPClassifier(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.partial_fit(X, y, classes=[0, 1, 2])
        ours.partial_fit(X, y, classes=[0, 1, 2])
        ours.model_.set_weights([(W.T, b) for W, b in zip(theirs.coefs_, theirs.intercepts_)])
        theirs.partial_fit(X, y)  # one step each, from the same weights
        ours.partial_fit(X, y)
    for mine, reference in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, reference, rtol=1e-10, atol=1e-12)
