"""A model shared: by threads predicting at once (a threaded server), and through pickle
(joblib, multiprocessing)."""
import pickle
import threading

import numpy as np
import pytest

import mlp

# NumPy: batch x units large enough for the backend's reused scratch buffers; Numba: a net
# and batch that its compiled forward pass (one reused workspace) takes.
CASES = {"numpy": ([20, 256, 256, 3], 64, 40), "numba": ([2, 64, 64, 3], 8, 400)}


@pytest.mark.parametrize("backend", sorted(CASES))
def test_threads_predicting_with_one_model_get_their_own_outputs(backend):
    if backend == "numba":
        pytest.importorskip("numba")
    sizes, batch, repeats = CASES[backend]
    model = mlp.MLP(sizes, activation="tanh", output="softmax", backend=backend, dtype="float32", seed=0)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((batch, sizes[0])).astype(np.float32) for _ in range(4)]
    expected = [model.predict(X) for X in inputs]
    wrong = []

    def predict(index):
        for _ in range(repeats):
            if not np.array_equal(model.predict(inputs[index]), expected[index]):
                wrong.append(index)
    threads = [threading.Thread(target=predict, args=(index,)) for index in range(len(inputs))]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    assert not wrong, f"{len(wrong)} of {len(inputs) * repeats} predictions had another thread's outputs"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_an_unpickled_model_predicts_and_trains_as_the_original(backend):
    if backend == "numba":
        pytest.importorskip("numba")
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((64, 2)), rng.integers(0, 2, 64)
    model = mlp.MLP([2, 8, 2], output="softmax", dropout=0.1, backend=backend, seed=3)
    model.compile(loss="cross_entropy", optimizer=mlp.SGD(lr=0.1, momentum=0.9))
    model.fit(X, y, epochs=2, verbose=0)
    copy = pickle.loads(pickle.dumps(model))
    assert copy.backend is model.backend  # by name: this process's backend
    np.testing.assert_array_equal(copy.predict(X), model.predict(X))
    for trained in (model, copy):  # the same state: the same next epochs, dropout included
        trained.fit(X, y, epochs=2, shuffle=True, verbose=0)
    np.testing.assert_array_equal(copy.params, model.params)
    np.testing.assert_array_equal(copy.predict(X), model.predict(X))  # its layers read what it trains


def test_a_fitted_scikit_learn_estimator_survives_joblib():
    pytest.importorskip("sklearn")
    joblib = pytest.importorskip("joblib")
    import io

    from mlp.sklearn import MLPClassifier

    X, y = mlp.datasets.moons(n=80, seed=0)
    estimator = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    np.testing.assert_array_equal(loaded.predict_proba(X), estimator.predict_proba(X))
    for fitted in (estimator, loaded):
        fitted.partial_fit(X, y)
    np.testing.assert_array_equal(loaded.predict_proba(X), estimator.predict_proba(X))
