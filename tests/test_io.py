"""Saving and loading: identical predictions, atomic writes, no pickle, clear errors."""

import numpy as np
import pytest

import mlp


@pytest.fixture
def trained(tmp_path):
    X, y = mlp.datasets.moons(n=50, seed=0)
    model = mlp.Sequential([mlp.Dense(2, 8, "elu"), mlp.Dropout(0.1),
                            mlp.Dense(8, 8, mlp.activations.get("leaky_relu", slope=0.2)),
                            mlp.Dense(8, 2, "softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01), l2=1e-4)
    model.fit(X, y, epochs=3, verbose=0)
    return model, X, y, tmp_path / "model.npz"


def test_save_load_gives_identical_predictions(trained):
    model, X, y, path = trained
    model.save(path)
    loaded = mlp.load(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.config() == model.config()
    assert loaded.layers[2].activation.params == {"slope": 0.2}
    assert loaded.evaluate(X, y) == pytest.approx(model.evaluate(X, y))
    assert loaded.l2 == 1e-4 and isinstance(loaded.optimizer, mlp.Adam)


def test_file_holds_no_pickle(trained):
    model, _, _, path = trained
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:  # would raise on object arrays
        assert sorted(archive.keys()) == ["header", "params"]


def test_save_is_atomic(trained, monkeypatch):
    model, _, _, path = trained
    model.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["model.npz"]  # no temporary left behind


def test_truncated_file(trained):
    model, _, _, path = trained
    model.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(mlp.ModelFileError, match="truncated"):
        mlp.load(path)


def test_tampered_weights(trained, tmp_path):
    model, _, _, path = trained
    model.save(path)
    with np.load(path) as archive:
        header, params = archive["header"], archive["params"].copy()
    params[3] += 1.0
    np.savez(tmp_path / "tampered.npz", header=header, params=params)
    with pytest.raises(mlp.ModelFileError, match="checksum"):
        mlp.load(tmp_path / "tampered.npz")


def test_not_a_model_file(tmp_path):
    np.savez(tmp_path / "other.npz", X=np.zeros(3))
    with pytest.raises(mlp.ModelFileError):
        mlp.load(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(mlp.ModelFileError):
        mlp.load(tmp_path / "text.npz")
    with pytest.raises(mlp.ModelFileError, match="no model file"):
        mlp.load(tmp_path / "missing.npz")
