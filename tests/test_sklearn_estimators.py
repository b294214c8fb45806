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
    assert not model.optimizer.nesterov and model.optimizer.lr == 0.05 and model.l2 == 0.01
    adam = mlp.MLPRegressor(beta_1=0.8, beta_2=0.99, epsilon=1e-6, max_iter=1).fit(X, y).model_.optimizer
    assert (adam.beta1, adam.beta2, adam.eps) == (0.8, 0.99, 1e-6)


def test_tol_and_n_iter_no_change_stop_as_in_scikit_learn():
    X, y = mlp.datasets.moons(n=40, seed=0)
    clf = mlp.MLPClassifier(max_iter=500, tol=10.0, n_iter_no_change=3, random_state=0).fit(X, y)
    assert clf.n_iter_ == 4  # the first epoch improves on nothing; no later one by 10: n_iter_no_change more
    with pytest.warns(sklearn.exceptions.ConvergenceWarning, match="Maximum iterations"):
        mlp.MLPClassifier(max_iter=2, random_state=0).fit(X, y)


def test_learning_rate_schedules_for_sgd():
    X, y = mlp.datasets.moons(n=40, seed=0)
    inv = mlp.MLPClassifier(solver="sgd", learning_rate="invscaling", learning_rate_init=0.1, power_t=0.5,
                            batch_size=10, max_iter=2, tol=0.0, random_state=0).fit(X, y)
    assert len(inv.loss_curve_) == 2
    with pytest.raises(ValueError, match="'learning_rate' parameter"):
        mlp.MLPClassifier(learning_rate="cyclic").fit(X, y)
    adaptive = mlp.MLPClassifier(solver="sgd", learning_rate="adaptive", tol=10.0, n_iter_no_change=1,
                                 max_iter=200, random_state=0)
    adaptive.fit(X, y)  # the rate falls fivefold each epoch without improvement, down to 1e-6
    assert adaptive.n_iter_ < 20


def test_the_first_names_still_work_with_a_warning():
    X, y = mlp.datasets.moons(n=40, seed=0)
    with pytest.warns(FutureWarning, match="learning_rate_init"):
        old = mlp.MLPClassifier(learning_rate=0.05, max_iter=1, random_state=0).fit(X, y)
    assert old.model_.optimizer.lr == 0.05
    with pytest.warns(FutureWarning, match="solver"):
        assert type(mlp.MLPClassifier(optimizer="sgd", max_iter=1).fit(X, y).model_.optimizer).__name__ == "SGD"
    with pytest.warns(FutureWarning, match="alpha"):
        assert mlp.MLPRegressor(l2=0.5, max_iter=1).fit(X, y).model_.l2 == 0.5


def test_sample_and_class_weights_reach_the_fit():
    X, y = mlp.datasets.moons(n=60, seed=0)
    weights = np.where(y == 1, 3.0, 1.0)
    by_sample = mlp.MLPClassifier(max_iter=5, random_state=0, tol=0.0).fit(X, y, sample_weight=weights)
    by_class = mlp.MLPClassifier(max_iter=5, random_state=0, tol=0.0, class_weight={0: 1.0, 1: 3.0}).fit(X, y)
    np.testing.assert_array_equal(by_sample.model_.params, by_class.model_.params)
    plain = mlp.MLPClassifier(max_iter=5, random_state=0, tol=0.0).fit(X, y)
    assert not np.array_equal(plain.model_.params, by_class.model_.params)
    labels = np.where(y == 1, "b", "a")
    named = mlp.MLPClassifier(max_iter=5, random_state=0, tol=0.0, class_weight={"a": 1.0, "b": 3.0}).fit(X, labels)
    np.testing.assert_array_equal(named.model_.params, by_class.model_.params)
    balanced = mlp.MLPClassifier(max_iter=1, class_weight="balanced").partial_fit(X, y, classes=[0, 1],
                                                                                   sample_weight=weights)
    assert balanced.n_iter_ == 1
