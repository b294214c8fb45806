"""A model's preprocessing (input scaling, class labels, the training data record): applied
wherever user data enters, saved as JSON with the model, checked strictly when read."""
import numpy as np
import pytest

import mlp
from mlp.preprocessing import Preprocessing, fingerprint, from_config

SCALING = {"mean": [1.0, -2.0], "scale": [2.0, 0.5]}
RECORD = {"source": "moons", "seed": 0, "test": 0.25, "n_samples": 200, "sha256": "ab" * 32}


def test_config_round_trips_as_json():
    import json

    full = Preprocessing(SCALING["mean"], SCALING["scale"], classes=np.array([2, 1]), data=RECORD)
    config = json.loads(json.dumps(full.config()))
    assert from_config(config) == full and config["classes"] == [2, 1]
    assert from_config({"classes": ["cat", "dog"]}).classes == ("cat", "dog")
    assert from_config({"classes": [False, True]}).classes == (False, True)
    scaler = mlp.StandardScaler().fit(np.array([[0.0, 1.0], [2.0, 5.0]]))
    assert Preprocessing.from_scaler(scaler).config() == {"mean": [1.0, 3.0], "scale": [1.0, 2.0]}


@pytest.mark.parametrize("config", [
    [], "classes", {"mean": [0.0]}, {"scale": [1.0]}, {"mean": [0.0, 1.0], "scale": [1.0]},
    {"mean": [0.0], "scale": [0.0]}, {"mean": [0.0], "scale": [-1.0]}, {"mean": [float("nan")], "scale": [1.0]},
    {"mean": [0.0], "scale": [float("inf")]}, {"mean": "0", "scale": "1"}, {"mean": [[0.0]], "scale": [[1.0]]},
    {"mean": [], "scale": []}, {"mean": ["0"], "scale": [1.0]}, {"mean": [True], "scale": [1.0]},
    {"classes": [1]}, {"classes": [1, 1]}, {"classes": [1, 1.0]}, {"classes": [1, "a"]}, {"classes": [1, None]},
    {"classes": [1, float("nan")]}, {"classes": [[1], [2]]}, {"classes": [1, 2**70]}, {"classes": {"a": 1}},
    {"data": {"seed": 0}}, {"data": {"source": 3}}, {"data": {"source": "x", "test": 1.5}},
    {"data": {"source": "x", "seed": -1}}, {"data": {"source": "x", "n_samples": 0}},
    {"data": {"source": "x", "sha256": "zz"}}, {"data": {"source": "x", "extra": 1}}, {"data": []},
    {}, {"classes": [0, 1], "unknown": 1},
])
def test_from_config_refuses_anything_malformed(config):
    with pytest.raises((ValueError, TypeError)):
        from_config(config)


def _classifier(backend="numpy", classes=None):
    model = mlp.MLP([2, 8, 2], activation="tanh", output="softmax", seed=3, backend=backend)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
    model.preprocessing = Preprocessing(SCALING["mean"], SCALING["scale"], classes=classes)
    return model


def test_model_applies_scaling_and_labels_wherever_data_enters(backend_name):
    X, y = mlp.datasets.moons(n=64, seed=1)
    X_raw = X * np.array(SCALING["scale"]) + np.array(SCALING["mean"])  # the scaling maps it back to X
    labels = np.array(["no", "yes"])[y.astype(int)]
    carried = _classifier(backend_name, classes=["no", "yes"])
    plain = _classifier(backend_name)
    plain.preprocessing = None
    np.testing.assert_allclose(carried.predict(X_raw), plain.predict(X), rtol=1e-5)
    carried.fit(X_raw, labels, epochs=3, batch_size=16, verbose=0, validation_data=(X_raw, labels))
    plain.fit(X, y, epochs=3, batch_size=16, verbose=0, validation_data=(X, y))
    np.testing.assert_allclose(carried.params, plain.params, rtol=1e-5, atol=1e-6)
    assert carried.evaluate(X_raw, labels) == pytest.approx(plain.evaluate(X, y), rel=1e-5)
    assert carried.evaluate(X_raw, np.eye(2)[y.astype(int)]) == pytest.approx(plain.evaluate(X, y), rel=1e-5)
    carried.train_step(X_raw, labels)
    plain.train_step(X, y)
    np.testing.assert_allclose(carried.params, plain.params, rtol=1e-5, atol=1e-6)
    predicted = carried.predict_classes(X_raw)
    assert set(predicted) <= {"no", "yes"}
    np.testing.assert_array_equal(predicted, np.array(["no", "yes"])[plain.predict_classes(X)])


def test_numeric_labels_one_and_two_train_and_evaluate():
    X, y = mlp.datasets.moons(n=64, seed=1)
    model = _classifier(classes=[1, 2])
    model.fit(X, y + 1, epochs=2, verbose=0)
    assert model.evaluate(X, (y + 1).astype(float))["accuracy"] == model.evaluate(X, y + 1)["accuracy"]
    assert set(model.predict_classes(X).tolist()) <= {1, 2}


def test_unknown_or_nan_labels_are_refused_before_any_change():
    X, y = mlp.datasets.moons(n=16, seed=1)
    model = _classifier(classes=[1, 2])
    before = model.params.copy()
    for bad, message in ((y, "not trained on \\(0\\)"), (y * 0 + 3, "3"), (np.where(y > 0, np.nan, 1.0), "NaN"),
                         (np.array(["a"] * 16), "numeric")):
        with pytest.raises(ValueError, match=message):
            model.fit(X, bad, epochs=1, verbose=0)
        with pytest.raises(ValueError):
            model.evaluate(X, bad)
    np.testing.assert_array_equal(model.params, before)
    with pytest.raises(ValueError, match="strings"):
        _classifier(classes=["a", "b"]).evaluate(X, y)


def test_preprocessing_must_fit_the_model():
    model = mlp.MLP([3, 2], output="softmax")
    with pytest.raises(ValueError, match="2 features but the model has n_in=3"):
        model.preprocessing = Preprocessing(SCALING["mean"], SCALING["scale"])
    with pytest.raises(ValueError, match="3 classes"):
        model.preprocessing = Preprocessing(classes=[0, 1, 2])
    with pytest.raises(TypeError):
        model.preprocessing = {"classes": [0, 1]}
    assert model.preprocessing is None
    model.preprocessing = Preprocessing(classes=["a", "b"])
    binary = mlp.MLP([3, 1], output="sigmoid")
    binary.preprocessing = Preprocessing(classes=["a", "b"])  # one sigmoid unit: two classes
    assert binary.predict_classes(np.zeros((2, 3))).tolist() in (["a", "a"], ["b", "b"])


def test_clone_and_config_carry_preprocessing():
    model = _classifier(classes=["no", "yes"])
    assert model.clone().preprocessing == model.preprocessing
    assert model.config()["preprocessing"]["classes"] == ["no", "yes"]
    assert "preprocessing" not in mlp.MLP([2, 2]).config()


def test_save_and_load_keep_preprocessing(tmp_path):
    X, _ = mlp.datasets.moons(n=32, seed=1)
    model = _classifier(classes=["no", "yes"])
    model.preprocessing = Preprocessing(SCALING["mean"], SCALING["scale"], ["no", "yes"], data=RECORD)
    model.save(tmp_path / "m.npz")
    loaded = mlp.load(tmp_path / "m.npz")
    assert loaded.preprocessing == model.preprocessing
    np.testing.assert_array_equal(loaded.predict_classes(X), model.predict_classes(X))


def test_predict_classes_needs_a_classifier():
    X = np.zeros((3, 2))
    assert mlp.MLP([2, 3], output="softmax").predict_classes(X).dtype.kind == "i"
    for not_one_class in (mlp.MLP([2, 3]), mlp.MLP([2, 3], output="sigmoid")):  # regression, multi-label
        with pytest.raises(ValueError, match="needs a classifier"):
            not_one_class.predict_classes(X)


def test_fingerprint_tells_data_apart():
    X = np.arange(6.0).reshape(3, 2)
    assert fingerprint(X, np.arange(3)) == fingerprint(X.copy(), np.arange(3))
    assert fingerprint(X, np.arange(3)) != fingerprint(X + 1e-12, np.arange(3))
    assert fingerprint(X.reshape(2, 3)) != fingerprint(X)
    assert fingerprint(np.array(["a", "b"])) != fingerprint(np.array(["ab"]))


@pytest.mark.parametrize("layout", ["float32", "float64, F-ordered", "int64"])
def test_a_model_with_a_scaler_trains_and_predicts_on_inputs_of_any_float_type_and_order(layout):
    """The scaler works in float64 (given as the type np.float64): X of another dtype or order
    is cast on the way in (a cast check had read the type's itemsize as an int: TypeError)."""
    X = np.random.default_rng(0).standard_normal((20, 4)) * 10
    X = {"float32": X.astype(np.float32), "float64, F-ordered": np.asfortranarray(X),
         "int64": X.astype(np.int64)}[layout]
    y = np.arange(20) % 2
    model = mlp.MLP([4, 8, 2], activation="relu", output="softmax", seed=0)
    model.preprocessing = mlp.Preprocessing.from_scaler(mlp.StandardScaler().fit(X), None, None)
    model.compile(loss="cross_entropy", optimizer="adam")
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(float(model.train_step(X[:4], y[:4])))
    assert model.predict(X).shape == (20, 2) and np.isfinite(model.predict(X)).all()
