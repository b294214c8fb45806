"""Bad input raises a clear error that says what was wrong and how to fix it."""
import numpy as np
import pytest

import mlp


@pytest.fixture
def classifier():
    return mlp.MLP([2, 4, 3], output="softmax", seed=0).compile(loss="cross_entropy")


def test_shape_mismatch_with_first_layer(classifier):
    with pytest.raises(ValueError, match="3 features per sample but the first layer expects n_in=2"):
        classifier.predict(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="2-D"):
        classifier.predict(np.zeros((5, 2, 1)))


def test_labels_out_of_range(classifier):
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\].*got labels from 0 to 3"):
        classifier.fit(np.zeros((4, 2)), [0, 1, 2, 3], verbose=0)
    with pytest.raises(ValueError, match="integer class indices"):
        classifier.fit(np.zeros((2, 2)), [0.5, 1], verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mlp.MLP([2, 1], output="sigmoid").compile(loss="bce").fit(np.zeros((2, 2)), [0, 2], verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_inputs(classifier, bad):
    X = np.zeros((4, 2))
    X[2, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite values \(first at index \(2, 1\)\)"):
        classifier.fit(X, [0, 1, 2, 0], verbose=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        classifier.fit(np.zeros((4, 2)), [0, 1, np.nan, 0], verbose=0)


def test_empty_batch(classifier):
    with pytest.raises(ValueError, match="empty"):
        classifier.train_step(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="empty"):
        classifier.predict([])


def test_sample_count_mismatch(classifier):
    with pytest.raises(ValueError, match="X has 4 samples but y has 3"):
        classifier.fit(np.zeros((4, 2)), [0, 1, 2], verbose=0)


def test_unknown_names():
    with pytest.raises(ValueError, match="Unknown activation .relux.. Valid activations: .*identity.*relu"):
        mlp.Dense(2, 2, activation="relux")
    with pytest.raises(ValueError, match="Unknown loss 'l3'. Valid losses: binary_cross_entropy"):
        mlp.MLP([2, 1]).compile(loss="l3")
    with pytest.raises(ValueError, match="Unknown init"):
        mlp.Dense(2, 2, init="orthogonalish")
    with pytest.raises(ValueError, match="biases only"):
        mlp.Dense(2, 2, init="zeros")
    with pytest.raises(ValueError, match="Unknown metric"):
        mlp.MLP([2, 1]).compile(metrics=["f2_score"])
    with pytest.raises(ValueError, match="Unknown backend 'jax'. Valid backends: .*numpy"):
        mlp.MLP([2, 1], backend="jax")
    with pytest.raises(ValueError, match="dtype must be one of float32, float64"):
        mlp.MLP([2, 1], dtype="float16")


def test_unknown_backend_from_environment(monkeypatch):
    monkeypatch.setenv("MLP_BACKEND", "tensorflow")
    with pytest.raises(mlp.ConfigurationError, match="MLP_BACKEND accepts a backend name"):
        mlp.MLP([2, 1])


def test_missing_backend_package_names_the_extra(monkeypatch):
    import sys

    from mlp.backends._base import require

    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` fail, as if absent
    with pytest.raises(mlp.BackendUnavailableError, match=r"needs the package 'numba'.*pip install 'mlp\[numba\]'"):
        require("numba", "numba", "numba")
    monkeypatch.delitem(sys.modules, "mlp.backends.numba", raising=False)
    monkeypatch.setattr(mlp.backends, "_instances", {})
    with pytest.raises(mlp.BackendUnavailableError, match=r"pip install 'mlp\[numba\]'"):
        mlp.MLP([2, 1], backend="numba")


def test_loss_output_mismatch():
    with pytest.raises(ValueError, match="needs a softmax output layer.*output='softmax'"):
        mlp.MLP([2, 3]).compile(loss="cross_entropy")
    with pytest.raises(ValueError, match="needs a sigmoid output layer"):
        mlp.MLP([2, 1], output="softmax").compile(loss="binary_cross_entropy")


def test_step_activation_cannot_be_trained_by_gradients():
    model = mlp.MLP([2, 3, 1], activation="step")
    with pytest.raises(ValueError, match="no derivative.*Perceptron"):
        model.compile(loss="mse")


def test_training_before_compile():
    with pytest.raises(RuntimeError, match="compile"):
        mlp.MLP([2, 1]).fit(np.zeros((2, 2)), np.zeros(2))


def test_layer_sizes_must_chain_and_bad_arguments():
    with pytest.raises(ValueError, match="do not chain"):
        mlp.Sequential([mlp.Dense(2, 3), mlp.Dense(4, 1)])
    with pytest.raises(ValueError, match="last layer must be Dense"):
        mlp.Sequential([mlp.Dense(2, 3), mlp.Dropout(0.5)])
    with pytest.raises(ValueError, match="Dropout rate"):
        mlp.Dropout(1.0)
    with pytest.raises(ValueError, match="n_out must be a positive integer"):
        mlp.Dense(2, 0)
    model = mlp.MLP([2, 1]).compile()
    for kwargs, match in [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"),
                          ({"validation_split": 1.5}, "validation_split")]:
        with pytest.raises(ValueError, match=match):
            model.fit(np.zeros((4, 2)), np.zeros(4), verbose=0, **kwargs)
    with pytest.raises(ValueError, match=r"2 \(W, b\) pairs|1 \(W, b\) pairs"):
        model.set_weights([])


def test_wrong_target_shape():
    model = mlp.MLP([2, 3]).compile(loss="mse")
    with pytest.raises(ValueError, match=r"y must have shape \(batch, 3\)"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 2)), verbose=0)


def test_keep_freed_memory_is_applied_once_and_can_be_turned_off(monkeypatch):
    import subprocess
    import sys

    code = "import mlp.backends._memory as m; print(m.keep_freed_memory(), m.keep_freed_memory())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert on[1] == "False" and on[0] in ("True", "False")  # True on glibc; never twice
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "MLP_KEEP_FREED_MEMORY": "0"}).stdout.split()
    assert off == ["False", "False"]
