"""Saving and loading: identical predictions, atomic writes, no pickle, clear errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

import mlp
from tests.model_files import rewrite_header


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


def test_unknown_backend_is_the_backends_error(trained):
    model, _, _, path = trained
    model.save(path)
    with pytest.raises(ValueError, match="Unknown backend 'foo'") as error:
        mlp.load(path, backend="foo")
    assert not isinstance(error.value, mlp.ModelFileError)


@pytest.mark.parametrize("content", [b"", b"hello", b"\x93NUMPY\x01\x00v\x00{'descr': '|O'}", bytes(range(256))])
def test_other_files_are_not_model_files_and_pickle_is_never_suggested(tmp_path, content):
    path = tmp_path / "other.npz"
    path.write_bytes(content)
    with pytest.raises(mlp.ModelFileError, match="is not an mlp model file") as error:
        mlp.load(path)
    assert "pickle" not in str(error.value) and "other.npz" in str(error.value)


def test_header_checksum_covers_the_settings(trained):
    model, _, _, path = trained
    model.save(path)
    rewrite_header(path, path, lambda header: header["compile"].update(l2=0.5))
    with pytest.raises(mlp.ModelFileError, match="header .* checksum"):
        mlp.load(path)


def test_files_saved_before_the_header_checksum_still_load(trained):
    model, X, _, path = trained
    model.save(path)
    rewrite_header(path, path, lambda header: header.pop("header_sha256"))
    np.testing.assert_array_equal(mlp.load(path).predict(X), model.predict(X))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_follow_the_umask(trained, umask):
    model, _, _, path = trained
    previous = os.umask(umask)
    try:
        model.save(path)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_temporaries_of_killed_saves_are_removed(trained):
    """A save removes the temporaries a killed save of the same file left (its process is
    gone, or the file has not been written to for an hour); a live writer's stays."""
    model, _, _, path = trained
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    folder = path.parent
    killed = folder / f".model.npz.tmp-{dead_pid}-0123456789ab"
    live = folder / f".model.npz.tmp-{os.getpid()}-0123456789ab"
    abandoned = folder / f".model.npz.tmp-{os.getpid()}-ba9876543210"
    other_target = folder / f".other.npz.tmp-{dead_pid}-0123456789ab"
    for temporary in (killed, live, abandoned, other_target):
        temporary.write_bytes(b"half a model")
    os.utime(abandoned, (0, 0))
    model.save(path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["model.npz", live.name, other_target.name])
    mlp.load(path)
