"""The code generators' own pieces: the source writer, and every generated source dumped
(MLP_DUMP_KERNELS, `mlp kernels`) with the plan it was generated for."""
import ast
import os

import numpy as np
import pytest

import mlp
from mlp.cli import main
from mlp.kernels import cuda_toolchain, dump
from mlp.kernels.writer import Source


def test_the_writer_scopes_blocks_in_python_and_c():
    for lang, expected in (("python", "for j in range(1, n):\n    total += x[j]\nok = 1"),
                           ("c", "for (long long j = 1; j < n; ++j) {\n    total += x[j];\n}\nok = 1;")):
        src = Source(lang)
        with src.loop("j", "n", start=1):
            src.line("total += x[j]")
        src.line("ok = 1")
        assert src.text() == expected


def _body(path):
    """A dumped file's source below its header."""
    text = open(path).read()
    return text.split("\n\n", 1)[1], text.splitlines()[1]


def test_mlp_dump_kernels_writes_each_source_as_compiled_with_its_plan(tmp_path, monkeypatch):
    pytest.importorskip("numba")
    from mlp.kernels import numba_cpu

    monkeypatch.setattr(numba_cpu, "_modules", {})  # modules this process loaded before load (and dump) again
    loaded = []
    load = numba_cpu._import
    monkeypatch.setattr(numba_cpu, "_import", lambda source, digest: loaded.append(source) or load(source, digest))
    monkeypatch.setenv("MLP_DUMP_KERNELS", str(tmp_path))
    model = mlp.MLP([3, 20, 2], activation="gelu", output="softmax", backend="numba", seed=0)
    monkeypatch.setattr(model.backend, "crossover_override", 0)  # the per-layer path: quicker to compile
    model.compile(loss="cross_entropy", optimizer="adamw")
    model.fit(np.ones((8, 3)), [0, 1] * 4, epochs=1, batch_size=8, verbose=0)
    dumped = {open(tmp_path / name).read(): _body(tmp_path / name)[1] for name in os.listdir(tmp_path)}
    assert loaded and set(loaded) <= set(dumped)  # every module this process loaded, byte for byte
    assert all(text.startswith("# mlp generated") for text in loaded)  # and the cache's file says what it is
    plans = " ".join(dumped.values())
    assert "Activation(gelu)" in plans and "UpdatePlan(name='adamw'" in plans


@pytest.mark.parametrize("target", ["architecture", "saved"])
def test_mlp_kernels_writes_every_source_a_model_compiles(tmp_path, target, capsys):
    if target == "saved":
        model = mlp.MLP([4, 16, 3], activation="silu", output="softmax", seed=0)
        model.compile(loss="cross_entropy", optimizer="rmsprop")
        model.save(tmp_path / "m.npz")
        spec = str(tmp_path / "m.npz")
    else:
        spec = "4,16,16,3"
    assert main(["kernels", spec, "--out", str(tmp_path / "k"), "--batch", "64"]) == 0
    written = capsys.readouterr().out.split()
    kinds = {os.path.basename(path).rsplit("_", 1)[0] for path in written}
    assert {"step", "forward", "product", "elementwise", "update", "cuda_module", "cuda_fused_forward"} <= kinds
    for path in written:
        body, plan = _body(path)
        assert plan.lstrip("#/ ").startswith("plan:")
        if path.endswith(".py"):
            ast.parse(body)
        else:
            try:
                cuda_toolchain.nvrtc_compile(body, "sm_80")
            except cuda_toolchain.ToolchainUnavailable:
                pass


def test_mlp_kernels_refuses_what_is_neither_a_file_nor_an_architecture(capsys):
    assert main(["kernels", "not-a-model"]) == 2
    assert "neither a model file nor an architecture" in capsys.readouterr().err


def test_dump_writes_nothing_when_unset(monkeypatch):
    monkeypatch.delenv("MLP_DUMP_KERNELS", raising=False)
    assert dump.write("x = 1\n", "test") is None
