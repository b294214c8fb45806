import subprocess
import sys

import numpy as np

import mlp
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
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 20 and len(rows[0].split(",")) == 2


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
