"""The benchmark harness runs each case once (smoke mode), so it cannot rot unnoticed."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlp.bench as bench
from mlp.bench import memory
from mlp.bench.networks import NETWORKS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.long  # every case of benchmarks/ compiles its plan
def test_pytest_benchmark_suite_runs_each_case_once():
    env = dict(os.environ, MLP_BENCH_SMOKE="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                             "benchmarks/", "--benchmark-disable"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


def test_cli_writes_table_json_and_plot(tmp_path):
    earlier = tmp_path / "earlier.json"  # a run of long ago: one cell, far slower than any machine today
    earlier.write_text(json.dumps({"results": [{"implementation": "numpy", "network": "tiny", "mode": "train",
                                                "batch": 4, "seconds": 10.0, "q1": 9.0, "q3": 11.0}]}))
    result = subprocess.run([sys.executable, "-m", "mlp", "bench", "--backends", "numpy", "--net", "tiny",
                             "--batch-sizes", "1,4", "--references", "numpy-naive", "--repeats", "2",
                             "--min-time", "0.002", "--out", str(tmp_path), "--quiet", "--compare", str(earlier)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    comparison = (tmp_path / "bench-compare.md").read_text()
    assert "1 cells compared: 0 slower and 1 faster" in comparison and comparison in result.stdout
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = report["results"]
    assert {(r["implementation"], r["mode"], r["batch"]) for r in rows} == {
        (impl, mode, batch) for impl in ("numpy", "numpy-naive") for mode in ("train", "infer") for batch in (1, 4)}
    for r in rows:
        assert r["samples_per_s"] > 0 and r["first_call_seconds"] > 0 and r["q1"] <= r["seconds"] <= r["q3"]
        assert 0 < r["fraction_of_peak"] < 1
        if memory.host_measurable():  # (Linux with glibc, as CI)
            assert isinstance(r["peak_memory_bytes"], int) and r["peak_memory_bytes"] >= 0
    backend_row = next(r for r in rows if r["implementation"] == "numpy")
    assert backend_row["ratio_best_reference"] > 0  # the naive step is the only reference here
    assert report["machine"]["cores"] and report["machine"]["command"].startswith("mlp bench")
    assert report["peak_gemm"]["numpy"]["flops"] > 1e8
    table = (tmp_path / "bench.md").read_text()
    assert "| tiny | train | 4 | numpy |" in table and "x torch eager" in table and "peak memory MiB" in table
    if (tmp_path / "bench.png").exists():
        assert (tmp_path / "bench.png").stat().st_size > 1000
    assert "| tiny | train | 1 |" in result.stdout


def test_unknown_network_or_backend_is_a_clear_error():
    for args, message in ((["--net", "huge"], "unknown network"), (["--backends", "jax"], "Valid backends")):
        result = subprocess.run([sys.executable, "-m", "mlp", "bench", *args, "--quiet"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_flop_count_of_the_training_step():
    net = NETWORKS["mnist"]
    assert net.n_weights == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    # forward and weight gradients of every layer, deltas of the two upper ones (none for the inputs)
    deltas = 512 * 512 + 512 + 512 * 10 + 10
    assert net.flops(32, "train") == 4 * 32 * net.n_weights + 2 * 32 * deltas + 10 * 32 * (512 + 512 + 10)
    assert net.flops(32, "infer") == 2 * 32 * net.n_weights + 3 * 32 * (512 + 512 + 10)


def test_timing_reports_first_call_apart():
    calls = []

    def step():
        calls.append(1)
        if len(calls) == 1:
            sum(range(200_000))  # a slow first call, like a JIT compile

    result = bench.measure(step, lambda: None, min_repeat_time=0.001, repeats=3, warmup=1)
    assert result["first_call_seconds"] > 10 * result["seconds"]


def test_rounds_keep_each_cases_fastest_round_and_the_cold_first_call(monkeypatch):
    # round 1 is slow (a busy spell of the machine), round 2 fast: the fast one is kept,
    # with round 1's first call (the only one that compiled anything)
    import mlp.bench.timing

    seconds = iter([0.5, 0.5, 0.1, 0.1])  # train and infer of round 1, then of round 2
    first_calls = iter([2.0, 2.0, 0.01, 0.01])

    def fake_measure(step, synchronize, **timing):
        value = next(seconds)
        return {"seconds": value, "q1": value, "q3": value, "calls": 1, "repeats": 1,
                "first_call_seconds": next(first_calls)}

    monkeypatch.setattr(bench, "measure", fake_measure)
    monkeypatch.setattr(bench, "peak_gemm_flops", lambda backend, dtype, **timing: (1e9, 64))
    monkeypatch.setattr(mlp.bench.timing, "peak_gemm_flops", lambda backend, dtype, **timing: (1e9, 64))
    report = bench.run(["numpy"], ["tiny"], [4], reference_names=[], progress=False, rounds=2)
    rows = report["results"]
    assert len(rows) == 2 and report["settings"]["rounds"] == 2
    assert all(r["seconds"] == 0.1 and r["first_call_seconds"] == 2.0 for r in rows)


def test_time_to_result_runs_a_job_in_a_fresh_process_and_tables_it(tmp_path):
    from mlp.bench import jobs

    timing = jobs.time_job(jobs.JOBS["readme"], "numpy", str(tmp_path))
    assert 0 < timing["first_step"] < timing["total"] and timing["accuracy"] > 0.6
    results = [{"job": "readme", "backend": "numpy", "cache": cache, **timing} for cache in jobs.CACHES]
    results += [{"job": "readme", "backend": "numba", "cache": "cold", "first_step": 1.0, "total": 2 * timing["total"]},
                {"job": "readme", "backend": "numba", "cache": "warm", "error": "it broke"}]
    text = jobs.table(results)
    assert "| readme | numba | 1.00 s |" in text and "| 2.00 | - |" in text and "it broke" in text


def test_time_to_result_tables_the_median_of_its_rounds():
    from mlp.bench import jobs

    results = [{"job": "tiny", "backend": backend, "cache": cache, "round": round_, "first_step": 0.1,
                "total": total * (2 if backend == "numba" else 1)}
               for round_, total in enumerate((1.0, 5.0, 2.0)) for backend in ("numpy", "numba")
               for cache in jobs.CACHES]
    text = jobs.table(results)
    assert "| tiny | numpy | 0.10 s | 2.00 s |" in text and "| tiny | numba | 0.10 s | 4.00 s |" in text
    assert "| 2.00 | 2.00 |" in text and "Medians of 3 round(s)" in text


def test_mlp_bench_jobs_refuses_an_unknown_job_before_running_anything(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mlp", "bench", "--jobs", "readme,huge", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown job 'huge'" in result.stderr and not os.listdir(tmp_path)


def test_a_bad_file_to_compare_with_is_refused_before_measuring(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = subprocess.run([sys.executable, "-m", "mlp", "bench", "--backends", "numpy", "--net", "tiny",
                             "--compare", str(bad), "--out", str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not the JSON of an mlp bench run" in result.stderr
    assert not (tmp_path / "out").exists()


def test_activation_option_renames_the_networks_and_leaves_out_references_without_it(capsys):
    from mlp.bench.__main__ import _with_activation

    networks, kept = _with_activation([NETWORKS["tiny"]], ["numpy-naive", "torch-eager"], "swish")
    assert [(n.name, n.activation) for n in networks] == [("tiny-silu", "silu")] and kept == ["torch-eager"]
    assert "left out for silu: numpy-naive" in capsys.readouterr().err


def test_a_reference_measures_the_network_with_the_activation_asked_for(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mlp", "bench", "--backends", "numpy", "--net", "mnist",
                             "--batch-sizes", "2", "--modes", "infer", "--references", "numpy-naive",
                             "--activation", "tanh", "--repeats", "1", "--min-time", "0.001", "--out", str(tmp_path),
                             "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert {(r["implementation"], r["network"]) for r in rows} == {("numpy", "mnist-tanh"),
                                                                   ("numpy-naive", "mnist-tanh")}


def test_a_batch_norm_network_runs_in_mlp_and_in_torch_with_its_batch_norm():
    """mnist-bn's kind of network: mlp's MLP(batch_norm=True) beside torch's Linear(bias=False),
    BatchNorm1d, ReLU (the references without BatchNorm are left out for it)."""
    from mlp.bench import backend_step, references
    from mlp.bench.networks import Network, synthetic_data

    network = Network("small-bn", (6, 8, 3), "relu", "softmax", "cross_entropy", batch_norm=True)
    step, sync, model = backend_step("numpy", network, 16, "train")
    step()
    assert type(model.layers[1]).__name__ == "BatchNorm" and not model.layers[0].bias
    assert not references.supports("jax-jit", "relu", batch_norm=True)
    assert not references.supports("numpy-naive", "relu", batch_norm=True)
    twins = [name for name in NETWORKS if name.endswith("-bn")]
    assert "mnist-bn" in twins
    for name in twins:  # each BatchNorm network is its plain twin with batch_norm=True, nothing else
        plain = NETWORKS[name.removesuffix("-bn")]
        assert NETWORKS[name] == dataclasses.replace(plain, name=name, batch_norm=True) and not plain.batch_norm
    torch = pytest.importorskip("torch")
    X, Y = synthetic_data(network, 16)
    train, infer, _ = references.torch_steps(network, X, Y, "cpu")
    assert torch.isfinite(train()) and infer().shape == (16, 3)
