import contextlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import mlp
import mlp.preprocessing
from mlp import cli
from mlp.cli import main


def test_train_default_reports_accuracy_and_saves(tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["train", "--epochs", "40", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "test loss" in captured.out and "accuracy" in captured.out
    assert "Epoch 40/40" in captured.err
    model = mlp.load(out)
    assert model.n_in == 2 and model.n_out == 2


def test_evaluate_and_predict(tmp_path, capsys):
    model = mlp.MLP([2, 4, 2], output="softmax", seed=0).compile(loss="cross_entropy")
    model.save(tmp_path / "m.npz")
    X, y = mlp.datasets.moons(n=10, seed=0)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert main(["evaluate", str(tmp_path / "m.npz"), str(tmp_path / "d.npz")]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "d.npz")]) == 0
    rows = capsys.readouterr().out.strip().splitlines()  # a classifier without class names: unit indices
    np.testing.assert_array_equal(np.array(rows, dtype=int), model.predict_classes(X))
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "d.npz"), "--proba"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "0,1" and len(rows) == 21 and len(rows[1].split(",")) == 2


def test_errors_are_one_line_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mlp", "evaluate", str(tmp_path / "nope.npz"), "xor"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no model file" in result.stderr
    result = subprocess.run([sys.executable, "-m", "mlp", "train", "--backend", "nope", "--epochs", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Valid backends" in result.stderr and "Traceback" not in result.stderr


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backend numpy    available" in out
    assert "plain SGD folded into the weight-gradient GEMM: " in out


def test_argument_errors_are_one_line():
    for args in (["train", "--epochs", "many"], ["frobnicate"], ["train", "--hidden", "0"]):
        result = subprocess.run([sys.executable, "-m", "mlp", *args], capture_output=True, text=True)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1 and "error" in result.stderr, result.stderr


# --- the main job: a trained model carries its preprocessing -----------------------------------
def _metrics(line):
    """'... loss 0.1234 - accuracy 0.9500' -> 'loss 0.1234 - accuracy 0.9500'."""
    return line[line.index("loss"):].strip()


@pytest.mark.parametrize("data", ["moons", "spirals", "digits"])
def test_evaluate_on_the_held_out_split_gives_what_train_reported(tmp_path, capsys, data):
    if data == "digits":
        pytest.importorskip("sklearn")
    out = str(tmp_path / "m.npz")
    assert main(["train", "--data", data, "--epochs", "4", "--hidden", "16", "--seed", "3", "-o", out]) == 0
    reported = _metrics(capsys.readouterr().out)
    assert main(["evaluate", out, "--split", "test"]) == 0  # the data named by the model file
    scored = capsys.readouterr().out
    assert _metrics(scored) == reported
    assert scored.startswith(f"{data}, held-out test split: ")
    assert main(["evaluate", out, data, "--split", "test"]) == 0
    assert _metrics(capsys.readouterr().out) == reported
    assert main(["evaluate", out, data]) == 0  # all of it, and it says so
    assert ", all " in capsys.readouterr().out
    model = mlp.load(out)
    assert model.preprocessing.data["source"] == data and model.preprocessing.data["seed"] == 3


def _labelled_csv(path, labels, header=False):
    X, y = mlp.datasets.moons(n=40, seed=1)
    with open(path, "w") as f:
        f.write("x1,x2,label\n" if header else "")
        f.writelines(f"{a * 100:.6g},{b - 50:.6g},{labels[int(label)]}\n"  # unscaled inputs on purpose
                     for (a, b), label in zip(X, y))
    return X


@pytest.mark.parametrize("labels,header", [(("1", "2"), False), (("dog", "cat"), True)])
def test_csv_labels_train_evaluate_and_predict_as_given(tmp_path, capsys, labels, header):
    data, out = str(tmp_path / "d.csv"), str(tmp_path / "m.npz")
    _labelled_csv(data, labels, header)
    assert main(["train", "--data", data, "--epochs", "30", "--hidden", "8", "-o", out]) == 0
    reported = _metrics(capsys.readouterr().out)
    assert main(["evaluate", out, data, "--split", "test"]) == 0
    assert _metrics(capsys.readouterr().out) == reported
    assert main(["predict", out, data]) == 0
    predicted = capsys.readouterr().out.split()
    assert len(predicted) == 80 and set(predicted) == set(labels)
    assert main(["predict", out, data, "--proba"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == ",".join(sorted(labels)) and len(rows) == 81
    assert np.allclose(np.loadtxt(rows[1:], delimiter=",").sum(axis=1), 1.0, atol=1e-5)
    assert mlp.load(out).preprocessing.classes == tuple(int(c) if c.isdigit() else c for c in sorted(labels))


def test_predict_reads_a_csv_without_labels(tmp_path, capsys):
    data, features, out = tmp_path / "d.csv", tmp_path / "x.csv", str(tmp_path / "m.npz")
    _labelled_csv(data, ("1", "2"))
    features.write_text("".join(",".join(line.split(",")[:2]) + "\n" for line in data.read_text().splitlines()))
    assert main(["train", "--data", str(data), "--epochs", "5", "--hidden", "8", "-o", out]) == 0
    capsys.readouterr()
    assert main(["predict", out, str(data)]) == 0
    with_labels = capsys.readouterr().out
    assert main(["predict", out, str(features)]) == 0
    assert capsys.readouterr().out == with_labels
    assert main(["evaluate", out, str(features)]) == 2
    assert "no labels to evaluate against" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["0.1,0.2,nan\n0.3,0.1,1\n0.5,0.5,2\n", "0.1,0.2,\n0.3,0.1,1\n0.5,0.5,2\n",
                                     "0.1,0.2,1\n0.3,0.1,NaN\n0.5,0.5,2\n"])
def test_nan_or_missing_labels_are_refused_in_one_line(tmp_path, capsys, content):
    path = tmp_path / "n.csv"
    path.write_text(content)
    assert main(["train", "--data", str(path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "has no label" in err and err.count("\n") == 1


def test_nan_labels_in_an_npz_are_refused(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)), y=np.array([0.0, 1.0, np.nan, 1.0]))
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--epochs", "1"]) == 2
    assert "labels of" in capsys.readouterr().err


def test_split_test_is_refused_when_it_cannot_be_redrawn(tmp_path, capsys):
    data, out = str(tmp_path / "d.csv"), str(tmp_path / "m.npz")
    _labelled_csv(data, ("1", "2"))
    assert main(["train", "--data", data, "--epochs", "1", "--hidden", "4", "-o", out]) == 0
    with open(data, "a") as f:
        f.write("0.5,0.5,1\n")  # the data changed since training
    capsys.readouterr()
    assert main(["evaluate", out, "--split", "test"]) == 2
    assert "is not the data" in capsys.readouterr().err
    assert main(["evaluate", out, "moons", "--split", "test"]) == 2
    assert "trained on" in capsys.readouterr().err
    plain = str(tmp_path / "plain.npz")
    mlp.MLP([2, 2], output="softmax").compile(loss="cross_entropy").save(plain)
    assert main(["evaluate", plain, "--split", "test"]) == 2
    assert "does not record" in capsys.readouterr().err
    assert main(["train", "--data", "moons", "--epochs", "1", "--hidden", "4", "-o", out]) == 0
    capsys.readouterr()
    assert main(["evaluate", out, "--split", "test", "--seed", "5"]) == 2
    assert "leave out --seed" in capsys.readouterr().err


def test_scikit_learn_classifier_saves_its_classes(tmp_path, capsys):
    pytest.importorskip("sklearn")
    X, y = mlp.datasets.moons(n=40, seed=1)
    labels = np.array(["no", "yes"])[y]
    estimator = mlp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=np.random.RandomState(0))
    estimator.fit(X, labels)
    path = tmp_path / "est.npz"
    estimator.save(path)
    loaded = mlp.load(path)
    np.testing.assert_array_equal(loaded.predict_classes(X), estimator.predict(X))
    np.savez(tmp_path / "d.npz", X=X, y=labels)
    assert main(["predict", str(path), str(tmp_path / "d.npz")]) == 0
    assert capsys.readouterr().out.split() == estimator.predict(X).tolist()
    assert main(["evaluate", str(path), str(tmp_path / "d.npz")]) == 0
    assert f"accuracy {estimator.score(X, labels):.4f}" in capsys.readouterr().out


# --- errors: one line, exit code 2 (1 for a failed run); a bug says so ----------------------------
def _truncated_mnist(folder):
    import gzip
    import struct

    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, 50 * 784, dtype=np.uint8).tobytes()
    images = gzip.compress(struct.pack(">HBBIII", 0, 8, 3, 50, 28, 28) + pixels)
    labels = gzip.compress(struct.pack(">HBBI", 0, 8, 1, 50) + bytes(range(10)) * 5)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(images[:len(images) // 2])
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(labels)
    return str(folder)


def _bad_preprocessing_model(path):
    model = mlp.MLP([2, 2], output="softmax").compile(loss="cross_entropy")
    model.preprocessing = mlp.preprocessing.Preprocessing(classes=[0, 1])
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        header = json.loads(bytes(np.load(archive.open("header.npy"))).decode())
        params = np.load(archive.open("params.npy"))
    header["preprocessing"] = {"mean": [0.0, 0.0], "scale": [1.0, 0.0]}  # a zero scale
    np.savez(path, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), params=params)
    return str(path)


ERRORS = {  # name: (argv, environment, exit code, part of the message)
    "MLP_DTYPE": (["train", "--epochs", "1"], {"MLP_DTYPE": "foo"}, 2, "MLP_DTYPE='foo'"),
    "MLP_BACKEND": (["train", "--epochs", "1"], {"MLP_BACKEND": "foo"}, 2, "MLP_BACKEND='foo'"),
    "batch sizes 0": (["bench", "--batch-sizes", "0"], {}, 2, "--batch-sizes"),
    "scaling 0": (["bench", "--scaling", "0"], {}, 2, "--scaling"),
    "stem with folders": (["bench", "--stem", "../../x", "--out", "{tmp}/D"], {}, 2, "--stem"),
    "plot folder": (["train", "--epochs", "1", "--plot", "{tmp}/no/x.png"], {}, 2, "does not exist"),
    "plot format": (["train", "--epochs", "1", "--plot", "{tmp}/x.nope"], {}, 2, "ending in one of"),
    "output folder": (["train", "--epochs", "1", "-o", "{tmp}/no/m.npz"], {}, 2, "does not exist"),
    "test share": (["train", "--test", "1"], {}, 2, "--test"),
    "truncated mnist": (["train", "--data", "mnist", "--data-dir", "{mnist}", "--epochs", "1"], {}, 2, "truncated"),
    "crafted header": (["evaluate", "{crafted}", "xor"], {}, 2, "crafted.npz"),
    "missing data": (["evaluate", "{model}", "{tmp}/none.csv"], {}, 2, "No such file"),
    "diverged": (["train", "--data", "moons", "--loss", "mse", "--lr", "1e30", "--epochs", "3"], {}, 1, "diverged"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_are_one_line_with_their_exit_code(tmp_path, capsys, monkeypatch, case):
    argv, environment, code, message = ERRORS[case]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    places = {"tmp": str(tmp_path)}
    if case == "truncated mnist":
        places["mnist"] = _truncated_mnist(tmp_path / "mnist")
    if case == "crafted header":
        places["crafted"] = _bad_preprocessing_model(tmp_path / "crafted.npz")
    if case == "missing data":
        places["model"] = str(tmp_path / "m.npz")
        mlp.MLP([2, 2], output="softmax").compile(loss="cross_entropy").save(places["model"])
    argv = [arg.format(**places) for arg in argv]
    with pytest.raises(SystemExit) if case in ("batch sizes 0", "scaling 0", "stem with folders", "test share") \
            else contextlib.nullcontext() as parsed:
        assert main(argv) == code
    if parsed is not None:
        assert parsed.value.code == code
    err = capsys.readouterr().err.splitlines()
    assert err and err[-1].startswith(f"mlp {argv[0]}: error: ") and message in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert not os.path.exists(tmp_path / "x.json") and not os.path.exists(tmp_path.parent / "x.json")


def test_a_bug_shows_its_traceback_and_asks_to_be_reported(monkeypatch, capsys):
    def broken(args):
        return 1 / 0

    monkeypatch.setattr(cli, "cmd_info", broken)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "bug in mlp" in err


def test_bad_setting_is_one_line_from_the_command_line(tmp_path):
    env = dict(os.environ, MLP_DTYPE="foo")
    result = subprocess.run([sys.executable, "-m", "mlp", "train", "--epochs", "1"], capture_output=True,
                            text=True, env=env, timeout=120, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        ("mlp train: error: MLP_DTYPE='foo' is not a valid value: MLP_DTYPE accepts float32 or float64; "
         "unset it for the default")]


def test_info_shows_the_default_backend_and_flags_a_bad_setting(monkeypatch, capsys):
    monkeypatch.delenv("MLP_BACKEND", raising=False)
    assert main(["info"]) == 0
    assert "default backend: numpy (MLP_BACKEND unset)" in capsys.readouterr().out
    monkeypatch.setenv("MLP_BACKEND", "foo")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "MLP_BACKEND is invalid" in out and "INVALID SETTING: MLP_BACKEND='foo'" in out


def test_bench_write_refuses_a_stem_with_folders(tmp_path):
    from mlp import bench

    with pytest.raises(ValueError, match="file name without folders"):
        bench.write({"results": []}, str(tmp_path / "D"), "../x")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("args, option", [(["--ranks", "0"], "--ranks"), (["--stem", "../x"], "--stem"),
                                          (["--modes", "weird"], "--modes"), (["--batch", "-1"], "--batch")])
def test_the_scaling_benchmark_checks_its_options(args, option, capsys, tmp_path):
    from mlp.bench import scaling

    with pytest.raises(SystemExit) as exit_info:
        scaling.main([*args, "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and option in error and len(error.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_help_shows_the_defaults():
    result = subprocess.run([sys.executable, "-m", "mlp", "train", "--help"], capture_output=True, text=True,
                            timeout=120)
    text = " ".join(result.stdout.split())
    assert result.returncode == 0
    for shown in ("learning rate (default: 0.01)", "(default: 200)", "(default: adam)", "(default: 0.0)"):
        assert shown in text, shown
    assert "(default: None)" not in text and "(default: False)" not in text


def test_train_options_early_stopping_dtype_checkpoint_resume_quiet(tmp_path, capsys):
    out, ck = tmp_path / "m.npz", tmp_path / "ck.npz"
    common = ["train", "--data", "moons", "--validation", "0.2", "--dtype", "float64", "--checkpoint", str(ck)]
    assert main([*common, "--epochs", "6", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("test loss") and len(captured.out.splitlines()) == 1
    assert mlp.checkpoint.load(ck).state["next_epoch"] == 6
    # resumed to 12 epochs: the same weights as 12 epochs in one run
    assert main([*common, "--epochs", "12", "--resume", str(ck), "-o", str(out)]) == 0
    resumed = mlp.load(out)
    assert main([*common[:-2], "--epochs", "12", "-o", str(tmp_path / "whole.npz")]) == 0
    whole = mlp.load(tmp_path / "whole.npz")
    assert resumed.dtype == np.float64
    np.testing.assert_array_equal(resumed.backend.to_numpy(resumed.params), whole.backend.to_numpy(whole.params))
    capsys.readouterr()
    assert main(["train", "--data", "moons", "--epochs", "300", "--lr", "0.05", "--validation", "0.2",
                 "--early-stopping", "2"]) == 0
    assert "Early stopping after epoch" in capsys.readouterr().err


def test_resume_of_another_runs_data_is_one_line(tmp_path):
    ck = tmp_path / "ck.npz"
    assert main(["train", "--data", "moons", "--epochs", "2", "--checkpoint", str(ck), "--quiet"]) == 0
    result = subprocess.run([sys.executable, "-m", "mlp", "train", "--data", "moons", "--seed", "3", "--epochs", "4",
                             "--resume", str(ck)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the checkpoint's run trained on moons (seed 0, test share 0.25); this run's data is moons (seed 3" \
        in result.stderr


def test_ctrl_c_during_train_scores_and_saves_the_model_and_says_so(tmp_path):
    import signal
    import time

    out, ck = tmp_path / "m.npz", tmp_path / "ck.npz"
    process = subprocess.Popen([sys.executable, "-m", "mlp", "train", "--epochs", "100000", "--checkpoint", str(ck),
                                "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ck.exists() and time.monotonic() < deadline:  # the first epoch has finished
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Interrupted (Ctrl-C) in epoch" in stderr and "Traceback" not in stderr
    assert stdout.startswith("test loss") and mlp.load(out).n_in == 2


def test_info_cuda_lines_agree_on_nvrtc(capsys):
    """The library line finds NVRTC where the compiler line can use it (the pip wheels)."""
    from mlp.kernels import cuda_toolchain

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    try:
        cuda_toolchain._bindings("nvrtc")
        usable = True
    except cuda_toolchain.ToolchainUnavailable:
        usable = False
    if usable:
        assert "nvrtc yes" in out and "NVRTC not found" not in out, out


def test_missing_cupy_names_the_readme_extra(monkeypatch):
    """The README installs the GPU backend with the `cuda` extra; the error says the same."""
    import importlib
    from pathlib import Path

    from mlp.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "cupy", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "mlp.backends.cupy", raising=False)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'mlp\[cuda\]'"):
        importlib.import_module("mlp.backends.cupy")
    readme = Path(__file__).parents[1].joinpath("README.md").read_text()
    assert 'pip install -e ".[cuda]"' in readme
