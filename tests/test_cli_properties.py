"""Property-based tests of the command line (hypothesis, derandomized).

For any arguments, valid or not: exit code 0 with the promised output, or exit code 2 (a
problem with the arguments, data, files or settings) or 1 (a run that failed, e.g. diverged)
with the error said in one line, `mlp <command>: error: ...`, and never a traceback. A model
that `mlp train -o` saved scores on `mlp evaluate --split test` exactly what train reported,
and `mlp predict` gives one of the training labels per sample (a finite number per sample
for a regression, `--loss mse`).
"""
import contextlib
import io
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from mlp.cli import main
from mlp.optimizers import OPTIMIZERS

CLI = settings(deadline=None, database=None, derandomize=True, print_blob=False,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def run(argv):
    """(exit code, stdout, stderr) of `mlp argv...`, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's refusal of an argument
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def assert_the_contract(argv, code, out, err):
    """Exit 0, or 1/2 with one error line last on stderr; a traceback never."""
    if currently_in_test_context():  # pytest --hypothesis-show-statistics: both paths are taken
        event(f"mlp {argv[0]} exit {code}")
    shown = f"mlp {' '.join(argv)} -> {code}\nstdout: {out[-500:]}\nstderr: {err[-1500:]}"
    assert "Traceback" not in err and "internal error" not in err, shown
    assert code in (0, 1, 2), shown
    if code != 0:
        last = err.rstrip("\n").split("\n")[-1].split("\r")[-1]
        assert re.match(rf"mlp {argv[0]}: error: \S", last), shown
    return shown


# --- files a user might point the CLI at -----------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_properties")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    names = np.array(["cat", "dog", "eel"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    paths = {}

    def write(name, text):
        path = folder / name
        path.write_text(text)
        paths[name] = str(path)

    write("animals.csv", "a,b,c,label\n" + "".join(f"{a},{b},{c},{n}\n" for (a, b, c), n in zip(X, names)))
    write("ones_and_twos.csv", "".join(f"{a},{b},{1 + (a > 0)}\n" for a, b, _ in X))
    write("nan_label.csv", "1,2,0\n3,4,nan\n5,6,1\n")
    write("ragged.csv", "1,2,0\n3,4\n5,6,1\n")
    write("text_features.csv", "1,x,0\n3,4,1\n")
    write("empty.csv", "")
    np.savez(folder / "arrays.npz", X=X, y=(X[:, 0] > 0).astype(int))
    paths["arrays.npz"] = str(folder / "arrays.npz")
    np.savez(folder / "no_labels.npz", X=X)
    paths["no_labels.npz"] = str(folder / "no_labels.npz")
    (folder / "noise.npz").write_bytes(rng.bytes(300))
    paths["noise.npz"] = str(folder / "noise.npz")
    paths["missing.csv"] = str(folder / "missing.csv")
    paths["a folder"] = str(folder)
    (folder / "empty_idx").mkdir()
    paths["empty_idx"] = str(folder / "empty_idx")

    model = str(folder / "moons_model.npz")
    code, out, err = run(["train", "--data", "moons", "--epochs", "2", "--hidden", "8", "-o", model])
    assert code == 0, err
    paths["model"] = model
    data = open(model, "rb").read()
    (folder / "truncated_model.npz").write_bytes(data[: len(data) // 2])
    paths["truncated_model.npz"] = str(folder / "truncated_model.npz")
    paths["out"] = str(folder / "trained.npz")
    paths["out in a missing folder"] = str(folder / "no" / "such" / "m.npz")
    return paths


TRAIN_OPTIONS = {  # option: (values that should work, values that should be refused)
    "--data": (["moons", "xor", "circles", "spirals", "animals.csv", "ones_and_twos.csv", "arrays.npz"],
               ["bogus", "nan_label.csv", "ragged.csv", "text_features.csv", "empty.csv", "no_labels.npz",
                "noise.npz", "missing.csv", "a folder", "mnist"]),
    "--hidden": (["8", "4,4"], ["0", "a", "-3", "", "8,,x"]),
    "--activation": (["relu", "tanh", "sigmoid", "elu", "leaky_relu"], ["bogus", "", "RELU "]),
    "--loss": (["cross_entropy", "mse"], ["bogus"]),
    "--optimizer": (list(OPTIMIZERS), ["bogus"]),
    "--lr": (["0.01", "0.1", "1e-4"], ["nan", "inf", "-1", "1e300", "x"]),
    "--l2": (["0", "1e-3"], ["-1", "nan"]),
    "--dropout": (["0", "0.2"], ["1", "-0.1", "nan"]),
    "--epochs": (["1", "2"], ["0", "-1", "x", "1e3"]),
    "--batch-size": (["16", "64", "100000"], ["0", "-2", "a"]),
    "--test": (["0.25", "0.5"], ["0", "1", "nan", "-0.1"]),
    "--validation": (["0", "0.2"], ["1", "-1", "0.999"]),
    "--seed": (["0", "7", str(2**70)], ["-1", "x"]),
    "--backend": (["numpy"], ["bogus", "cupy", ""]),
    "-o": (["out"], ["out in a missing folder", "a folder"]),
}


@st.composite
def train_arguments(draw):
    """`mlp train` arguments: each option left out or given, at most one of them broken
    (about half the runs are valid)."""
    argv, broken_one = ["train"], draw(st.one_of(st.none(), st.sampled_from(list(TRAIN_OPTIONS))))
    for option, (valid, broken) in TRAIN_OPTIONS.items():
        if option == broken_one:
            argv += [option, draw(st.sampled_from(broken))]
        elif option in ("--epochs", "--data") or draw(st.booleans()):  # a short run on small data
            argv += [option, draw(st.sampled_from(valid))]
    return argv


def _resolved(argv, files):
    return [files.get(a, a) for a in argv]


def _value(argv, option, default=None):
    return argv[argv.index(option) + 1] if option in argv else default


@settings(CLI, max_examples=70)
@given(train_arguments())
def test_train_succeeds_or_says_why_in_one_line_and_its_model_scores_the_same_later(files, argv):
    if os.path.exists(files["out"]):
        os.remove(files["out"])
    argv = _resolved(argv, files)
    code, out, err = run(argv)
    shown = assert_the_contract(argv, code, out, err)
    if code != 0:
        assert not os.path.exists(files["out"]) or "diverged" in err, shown  # refused: nothing written
        return
    reported = re.search(r"test loss (\S+)(.*)", out)
    assert reported, shown
    if _value(argv, "-o") != files["out"]:
        return
    code, scored, err = run(["evaluate", files["out"], "--split", "test"])
    assert code == 0, err
    assert scored.rstrip().endswith(f"loss {reported[1]}{reported[2]}"), (shown, scored)
    code, predicted, err = run(["predict", files["out"]])
    assert code == 0, err
    if _value(argv, "--loss", "cross_entropy") == "mse":  # a regression on the labels' values
        assert np.isfinite([float(value) for value in predicted.split()]).all(), (shown, predicted[:200])
        return
    labels = {"animals.csv": {"cat", "dog", "eel"}, "ones_and_twos.csv": {"1", "2"}}.get(
        os.path.basename(_value(argv, "--data")), {"0", "1"})
    assert set(predicted.split()) <= labels, (shown, predicted[:200])


USE_OPTIONS = {
    "model": (["model"], ["noise.npz", "truncated_model.npz", "missing.csv", "a folder", "animals.csv"]),
    "data": (["moons", ""], ["arrays.npz", "animals.csv", "bogus", "noise.npz", "empty.csv", "mnist"]),
    "--split": (["test", "train", "all"], ["bogus", ""]),
    "--seed": (["0", "3"], ["-1", "x"]),
    "--backend": (["numpy"], ["bogus"]),
    "--data-dir": (["empty_idx"], ["missing.csv"]),
}


@st.composite
def use_arguments(draw):
    """`mlp evaluate|predict` arguments, at most one of them broken."""
    command = draw(st.sampled_from(["evaluate", "predict"]))
    broken_one = draw(st.one_of(st.none(), st.sampled_from(list(USE_OPTIONS))))
    argv = [command]
    for option, (valid, broken) in USE_OPTIONS.items():
        value = draw(st.sampled_from(broken if option == broken_one else valid))
        if option == "model":
            argv.append(value)
        elif option == "data":
            argv += [value] if value else []
        elif option == broken_one or draw(st.booleans()):
            argv += [option, value]
    if command == "predict" and draw(st.booleans()):
        argv.append("--proba")
    return argv


@settings(CLI, max_examples=60)
@given(use_arguments())
def test_evaluate_and_predict_succeed_or_say_why_in_one_line(files, argv):
    argv = _resolved(argv, files)
    code, out, err = run(argv)
    shown = assert_the_contract(argv, code, out, err)
    if code == 0 and argv[0] == "evaluate":
        assert re.search(r"loss \S+ - accuracy \S+$", out.strip()), shown
    elif code == 0:
        rows = out.strip().split("\n")
        assert rows and all(row.strip() for row in rows), shown


def test_the_contract_catches_a_traceback_and_a_second_line():
    """The property is only as good as its check: a traceback, a bare error or an exit code
    outside 0-2 must each fail it."""
    with pytest.raises(AssertionError):
        assert_the_contract(["train"], 2, "", "Traceback (most recent call last):\nmlp train: error: x\n")
    with pytest.raises(AssertionError):
        assert_the_contract(["train"], 2, "", "ValueError: x\n")
    with pytest.raises(AssertionError):
        assert_the_contract(["train"], 3, "", "mlp train: error: x\n")
    assert_the_contract(["train"], 2, "", "Epoch 1/2 ...\rmlp train: error: x\n")
