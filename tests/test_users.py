"""What users touch: dataset files, scikit-learn estimators, checkpoints, plots, examples."""
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mlp

ROOT = Path(__file__).resolve().parents[1]


# --- MNIST-format files ------------------------------------------------------------------
def write_idx(path, array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(">u1" if type_code == 0x08 else array.dtype).tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(data)


@pytest.fixture
def mnist_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n, suffix in (("train", 50, ".gz"), ("t10k", 20, "")):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n))
    return tmp_path


def test_mnist_loader_reads_gzip_and_plain(mnist_folder):
    X, y = mlp.datasets.mnist(mnist_folder, "train")
    assert X.shape == (50, 784) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    assert y.shape == (50,) and set(y) <= set(range(10))
    X, y = mlp.datasets.fashion_mnist(mnist_folder, "test", flatten=False, normalize=False)
    assert X.shape == (20, 28, 28) and X.dtype == np.uint8


def test_mnist_missing_files_name_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*nothing is downloaded"):
        mlp.datasets.mnist(tmp_path)


def test_idx_truncated_or_bad_magic(mnist_folder):
    path = mnist_folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        mlp.datasets.mnist(mnist_folder, "test")
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(ValueError, match="magic number"):
        mlp.datasets.mnist(mnist_folder, "test")


def test_digits_dataset():
    pytest.importorskip("sklearn")
    X, y = mlp.datasets.load("digits")
    assert X.shape == (1797, 64) and set(y) == set(range(10))


# --- scikit-learn estimators -------------------------------------------------------------
sklearn = pytest.importorskip("sklearn")


def test_classifier_with_arbitrary_labels():
    X, y = mlp.datasets.moons(n=100, noise=0.1, seed=0)
    labels = np.where(y == 1, "yes", "no")
    clf = mlp.MLPClassifier(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.01, batch_size=32,
                            random_state=0)
    clf.fit(X, labels)
    assert list(clf.classes_) == ["no", "yes"]
    assert set(clf.predict(X)) <= {"no", "yes"}
    proba = clf.predict_proba(X)
    assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert clf.score(X, labels) > 0.9
    assert clf.n_features_in_ == 2 and len(clf.loss_curve_) == clf.n_iter_ <= 60


def test_estimators_in_model_selection_tools():
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = mlp.datasets.circles(n=60, seed=1)
    pipe = make_pipeline(StandardScaler(), mlp.MLPClassifier(max_iter=20, random_state=0))
    assert cross_val_score(pipe, X, y, cv=3).shape == (3,)
    search = GridSearchCV(mlp.MLPClassifier(max_iter=10, random_state=0),
                          {"hidden_layer_sizes": [(4,), (8,)], "learning_rate_init": [0.01, 0.001]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["hidden_layer_sizes"] in [(4,), (8,)]
    assert clone(mlp.MLPRegressor(alpha=0.5)).get_params()["alpha"] == 0.5
    assert mlp.MLPClassifier(backend="numpy").set_params(max_iter=3).max_iter == 3


def test_regressor_partial_fit_and_warm_start():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    reg = mlp.MLPRegressor(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01, batch_size=32,
                           random_state=0)
    reg.fit(X, y)
    assert reg.predict(X).shape == (200,) and reg.score(X, y) > 0.95
    before = reg.model_.params.copy()
    reg.set_params(warm_start=True, max_iter=1).fit(X, y)
    assert np.abs(reg.model_.params - before).max() < 0.1  # continued, not re-initialised
    online = mlp.MLPRegressor(random_state=0)
    for _ in range(3):
        online.partial_fit(X, y)
    assert online.n_iter_ == 3
    two_outputs = mlp.MLPRegressor(max_iter=2).fit(X, np.column_stack([y, -y]))
    assert two_outputs.predict(X).shape == (200, 2)


def test_classifier_partial_fit_needs_classes_first():
    X, y = mlp.datasets.moons(n=20, seed=0)
    clf = mlp.MLPClassifier()
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:10], y[:10], classes=[0, 1])
    clf.partial_fit(X[10:], y[10:])
    assert clf.n_iter_ == 2


def test_estimator_input_validation():
    from sklearn.exceptions import NotFittedError

    X, y = mlp.datasets.moons(n=20, seed=0)
    with pytest.raises(NotFittedError):
        mlp.MLPClassifier().predict(X)
    with pytest.raises(ValueError):
        mlp.MLPClassifier().fit(X, np.linspace(0, 1, 40))  # continuous labels
    clf = mlp.MLPClassifier(max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN|infinity"):
        clf.predict(np.full((2, 2), np.nan))


# --- checkpoints -----------------------------------------------------------------------------
TRAIN_SCRIPT = """
import sys, time, mlp
X, y = mlp.datasets.spirals(n=150, seed=0)
model = mlp.MLP([2, 32, 32, 2], activation="tanh", output="softmax", dropout=0.1, seed=3)
model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
class Slow(mlp.ExponentialLR):  # a slow epoch, so the parent can kill us mid-run
    def __call__(self, epoch, base_lr):
        time.sleep(float(sys.argv[3]))
        return super().__call__(epoch, base_lr)
kwargs = {"resume": sys.argv[2]} if sys.argv[1] == "resume" else {"checkpoint": sys.argv[2]}
model.fit(X, y, epochs=12, batch_size=32, validation_split=0.2, lr_schedule=Slow(0.9), verbose=0, **kwargs)
model.save(sys.argv[4])
"""


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    ckpt, killed_out, full_out = tmp_path / "ck.npz", tmp_path / "resumed.npz", tmp_path / "full.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLP_BACKEND="numpy")
    run = lambda *args: subprocess.run([sys.executable, str(script), *map(str, args)],  # noqa: E731
                                       cwd=ROOT, env=env, check=True, timeout=300)
    run("fresh", tmp_path / "unused.npz", 0, full_out)
    process = subprocess.Popen([sys.executable, str(script), "fresh", str(ckpt), "0.3", str(killed_out)],
                               cwd=ROOT, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists():
            state = mlp.checkpoint.load(ckpt).state
            if state["next_epoch"] >= 3:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not killed_out.exists(), "the run finished before it could be killed"
    state = mlp.checkpoint.load(ckpt).state  # a kill during a save never leaves a corrupt file
    assert 3 <= state["next_epoch"] < 12
    run("resume", ckpt, 0, killed_out)
    np.testing.assert_array_equal(mlp.load(killed_out).params, mlp.load(full_out).params)


def test_resume_checks_compatibility(tmp_path):
    X, y = mlp.datasets.moons(n=20, seed=0)
    model = mlp.MLP([2, 4, 2], output="softmax", seed=0).compile(loss="cross_entropy", optimizer="adam")
    model.fit(X, y, epochs=1, checkpoint=tmp_path / "ck.npz", verbose=0)
    other = mlp.MLP([2, 5, 2], output="softmax", seed=0).compile(loss="cross_entropy", optimizer="adam")
    with pytest.raises(mlp.ModelFileError, match="architecture"):
        other.fit(X, y, epochs=2, resume=tmp_path / "ck.npz", verbose=0)
    sgd = mlp.MLP([2, 4, 2], output="softmax", seed=0).compile(loss="cross_entropy", optimizer="sgd")
    with pytest.raises(mlp.ModelFileError, match="optimizer"):
        sgd.fit(X, y, epochs=2, resume=tmp_path / "ck.npz", verbose=0)
    model.save(tmp_path / "plain.npz")
    with pytest.raises(mlp.ModelFileError, match="not a checkpoint"):
        model.fit(X, y, epochs=2, resume=tmp_path / "plain.npz", verbose=0)


# --- plots and examples ------------------------------------------------------------------------
def test_plots_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from mlp import plots

    X, y = mlp.datasets.moons(n=30, seed=0)
    model = mlp.MLP([2, 8, 2], output="softmax", seed=0).compile(loss="cross_entropy", optimizer="adam")
    history = model.fit(X, y, epochs=3, validation_split=0.2, verbose=0)
    for path in (plots.training_curves(history, tmp_path / "curves.png"),
                 plots.decision_boundary(model, X, y, tmp_path / "boundary.png", resolution=50)):
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="2-D inputs"):
        plots.decision_boundary(model, np.zeros((3, 3)), [0, 1, 0])


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_examples_run(example, tmp_path):
    env = dict(os.environ, MLP_BACKEND="numpy", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(ROOT / "examples" / example), str(tmp_path / "out.png")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()
