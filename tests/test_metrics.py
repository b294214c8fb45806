"""Every metric of the registry against scikit-learn's, computed as fit and evaluate do: per
batch on the device, added up over batches, the value taken over the whole set."""
import numpy as np
import pytest

import mlp
from mlp import metrics

sk = pytest.importorskip("sklearn.metrics")


def _labels(A, Y):
    if A.shape[1] == 1:
        return (A[:, 0] >= 0.5).astype(int), (Y[:, 0] >= 0.5).astype(int)
    return A.argmax(axis=1), Y.argmax(axis=1)


def _average(A):
    return "binary" if A.shape[1] == 1 else "macro"


# scikit-learn's value of each metric (A: outputs, Y: targets, one-hot for classes)
REFERENCE = {
    "accuracy": lambda A, Y: sk.accuracy_score(*_labels(A, Y)[::-1]),
    "precision": lambda A, Y: sk.precision_score(*_labels(A, Y)[::-1], average=_average(A), zero_division=0,
                                                 labels=None if A.shape[1] == 1 else range(A.shape[1])),
    "recall": lambda A, Y: sk.recall_score(*_labels(A, Y)[::-1], average=_average(A), zero_division=0,
                                           labels=None if A.shape[1] == 1 else range(A.shape[1])),
    "f1": lambda A, Y: sk.f1_score(*_labels(A, Y)[::-1], average=_average(A), zero_division=0,
                                   labels=None if A.shape[1] == 1 else range(A.shape[1])),
    "auc": lambda A, Y: sk.roc_auc_score(Y[:, -1] >= 0.5, A[:, -1]),
    "top_k_accuracy": lambda A, Y: sk.top_k_accuracy_score(Y.argmax(axis=1), A if A.shape[1] > 2 else A[:, 1],
                                                           k=metrics.TOP_K, labels=range(A.shape[1])),
    "mse": lambda A, Y: sk.mean_squared_error(Y, A),
    "mae": lambda A, Y: sk.mean_absolute_error(Y, A),
    "r2": lambda A, Y: sk.r2_score(Y, A),
}


def test_every_metric_has_a_reference():
    assert set(REFERENCE) == set(metrics.METRICS)


def _problem(kind, n, rng):
    if kind == "binary":
        A = rng.random((n, 1))
        return A, (rng.random((n, 1)) < A).astype(float)  # informative scores
    if kind == "softmax2" or kind == "softmax7":
        k = 2 if kind == "softmax2" else 7
        logits = rng.standard_normal((n, k))
        A = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return A, np.eye(k)[np.where(rng.random(n) < 0.6, A.argmax(axis=1), rng.integers(0, k, n))]
    A = rng.standard_normal((n, 3))
    return A, A + 0.5 * rng.standard_normal((n, 3))


@pytest.mark.parametrize("name", sorted(metrics.METRICS))
@pytest.mark.parametrize("kind", ["binary", "softmax2", "softmax7", "regression"])
@pytest.mark.parametrize("batch", [7, 1000])
def test_metric_over_batches_matches_scikit_learn(name, kind, batch):
    metric = metrics.METRICS[name]
    if (name in ("mse", "mae", "r2")) != (kind == "regression"):
        pytest.skip("not a metric of this kind of output")
    A, Y = _problem(kind, 300, np.random.default_rng(0))
    if metric.fits is not None and not metric.fits(A.shape[1]):
        assert (name, kind) in (("auc", "softmax7"), ("top_k_accuracy", "binary"))
        pytest.skip("compile refuses it (test_compile_refuses_...)")
    totals = None
    for start in range(0, len(A), batch):
        totals = metrics.add(totals, metric.totals(A[start:start + batch], Y[start:start + batch]))
    tolerance = 2.0 / metrics.AUC_BINS if name == "auc" else 1e-12
    assert metric.result(totals) == pytest.approx(REFERENCE[name](A, Y), abs=tolerance)


def test_fit_and_evaluate_report_the_metrics_compile_was_given():
    X, y = mlp.datasets.moons(n=100, seed=0)
    model = mlp.MLP([2, 8, 1], output="sigmoid", seed=0)
    model.compile(loss="binary_cross_entropy", optimizer=mlp.Adam(lr=0.05),
                  metrics=["accuracy", "precision", "recall", "f1", "auc"])
    history = model.fit(X, y, epochs=3, verbose=0, validation_split=0.25)
    assert all(len(history[name]) == 3 and len(history[f"val_{name}"]) == 3
               for name in ("precision", "recall", "f1", "auc"))
    scores = model.evaluate(X, y, batch_size=16)
    A = model.predict(X)
    assert scores["auc"] == pytest.approx(sk.roc_auc_score(y, A[:, 0]), abs=2.0 / metrics.AUC_BINS)
    assert scores["f1"] == pytest.approx(sk.f1_score(y, A[:, 0] >= 0.5))


def test_compile_refuses_a_metric_that_does_not_apply_to_the_outputs():
    with pytest.raises(ValueError, match="'auc' does not apply to an output layer of 3 units"):
        mlp.MLP([2, 3], output="softmax").compile(loss="cross_entropy", metrics=["auc"])
    with pytest.raises(ValueError, match="'top_k_accuracy' does not apply"):
        mlp.MLP([2, 1], output="sigmoid").compile(loss="binary_cross_entropy", metrics=["top_k_accuracy"])


def balanced_accuracy(y_true, y_pred):
    return sk.balanced_accuracy_score(y_true.argmax(axis=1), y_pred.argmax(axis=1))


def test_a_metric_function_is_scikit_learns_value_over_the_epoch(backend_name):
    """A function (y_true, y_pred) -> float gets the whole set's targets and outputs at once, on
    every backend and path (the compiled step reuses its output buffer between batches)."""
    X = np.random.default_rng(0).normal(size=(120, 2))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)  # three classes
    model = mlp.MLP([2, 16, 3], output="softmax", backend=backend_name, dtype="float64", seed=0)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(0.01), metrics=["accuracy", balanced_accuracy])
    history = model.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0, validation_data=(X, y))
    assert len(history["balanced_accuracy"]) == len(history["val_balanced_accuracy"]) == 2
    scores = model.evaluate(X, y, batch_size=7)
    A = model.predict(X)
    assert scores["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, A.argmax(axis=1)))
    assert history["val_balanced_accuracy"][-1] == pytest.approx(scores["balanced_accuracy"])


def test_metric_functions_are_named_and_return_numbers():
    X = np.random.default_rng(0).normal(size=(30, 2))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    model = mlp.MLP([2, 4, 3], output="softmax", seed=0)
    with pytest.raises(ValueError, match="needs a name"):
        model.compile(loss="cross_entropy", metrics=[lambda t, p: 0.0])
    with pytest.raises(ValueError, match="name fit already uses"):
        def accuracy(y_true, y_pred):
            return 0.0
        model.compile(loss="cross_entropy", metrics=[accuracy])

    def vector(y_true, y_pred):
        return y_pred.sum(axis=0)

    model.compile(loss="cross_entropy", metrics=[vector])
    with pytest.raises(ValueError, match="must return one number"):
        model.evaluate(X, y)


def test_a_model_with_a_metric_function_pickles_and_saves(tmp_path):
    import pickle

    X = np.random.default_rng(0).normal(size=(30, 2))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    model = mlp.MLP([2, 4, 3], output="softmax", seed=0).compile(loss="cross_entropy",
                                                                   metrics=["accuracy", balanced_accuracy])
    twin = pickle.loads(pickle.dumps(model))
    assert twin.evaluate(X, y) == model.evaluate(X, y)
    model.save(tmp_path / "m.npz")  # a function is not saved: the loaded model reports the registered ones
    assert mlp.load(tmp_path / "m.npz").metrics == ["accuracy"]
