"""The harness's figures under noise: contention is detected and flagged, ratios carry their
interval over rounds, a share above the GEMM peak is flagged, and --compare calls a cell slower
or faster only beyond the noise both runs show."""
import json
import subprocess
import sys
import time

import pytest

import mlp.bench as bench
from mlp.bench import compare, contention
from mlp.bench.networks import NETWORKS

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")


@linux
def test_a_process_spinning_beside_the_benchmark_is_seen_as_contention():
    sampler = contention.Sampler().start()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        record = sampler.stop()  # before the spinner is waited for: its CPU time is not ours
    finally:
        spinner.kill()
        spinner.wait()
    assert record["others_cpu_share"] > contention.OTHERS_LIMIT and record["contended"]
    verdict = contention.summary([record])
    assert verdict["contended"] and "other processes used up to" in contention.warning(verdict)


def test_shares_are_others_busy_time_and_steal_over_all_cores_time(monkeypatch):
    # 4 s of all cores' time (400 jiffies at 100/s): 1.5 s busy, of which 1.0 s was this process
    # and its reaped children, 0.1 s stolen: others 0.5 / 4, steal 0.1 / 4
    jiffies = iter([(1000, 0, 10_000), (1150, 10, 10_400)])
    own = iter([5.0, 6.0])
    monkeypatch.setattr(contention, "_cpu_jiffies", lambda: next(jiffies))
    monkeypatch.setattr(contention, "_own_seconds", lambda: next(own))
    monkeypatch.setattr(contention.os, "sysconf", lambda name: 100)
    record = contention.Sampler().start().stop()
    assert record["others_cpu_share"] == pytest.approx(0.125) and record["steal_share"] == pytest.approx(0.025)
    assert record["contended"]  # 12.5% > OTHERS_LIMIT


def test_unknown_contention_is_not_a_verdict():
    verdict = contention.summary([{"contended": None, "others_cpu_share": None, "steal_share": None}])
    assert verdict["contended"] is None and contention.warning(verdict) is None


def _row(implementation, seconds_by_round, kind="backend", batch=32, mode="train"):
    rounds = [{"seconds": s, "q1": s * 0.95, "q3": s * 1.05} for s in seconds_by_round]
    fastest = min(rounds, key=lambda r: r["seconds"])
    return {"implementation": implementation, "kind": kind, "network": "tiny", "mode": mode, "batch": batch,
            **fastest, "rounds": rounds, "first_call_seconds": 0.1}


def test_ratios_carry_their_interval_over_rounds_and_name_the_best_reference():
    # torch eager read 10x slower in one round than in the other (a busy spell): the ratio's
    # interval shows it instead of printing one round's ratio as a fact
    rows = [_row("numba", [1e-3, 1e-3]), _row("torch-eager", [2e-3, 2e-2], kind="reference"),
            _row("jax-jit", [1.5e-3, 1.5e-3], kind="reference"), _row("numpy-naive", [1e-4, 1e-4], kind="reference")]
    bench._annotate(rows, {"tiny": NETWORKS["tiny"]}, {"numba": {"flops": 1e15, "n": 64}})
    numba = rows[0]
    assert numba["ratio_torch_eager"] == pytest.approx(2.0)
    low, high = numba["ratio_torch_eager_interval"]
    assert low == pytest.approx(2e-3 * 0.95 / 1.05e-3) and high == pytest.approx(2e-2 * 1.05 / 0.95e-3)
    assert numba["best_reference"] == "jax-jit"  # numpy-naive is faster but not a framework
    assert numba["ratio_best_reference"] == pytest.approx(1.5)
    report = {"results": rows, "peak_gemm": {"numba": {"flops": 1e15, "n": 64}}, "columns": bench.COLUMNS}
    text = bench.table(report)
    assert "| 2.00 [1.81-22.11] |" in text and "1.50 [1.36-1.66] jax-jit" in text
    assert "x best ref: samples/s over the fastest framework reference" in text


def test_a_share_above_the_measured_peak_is_flagged():
    rows = [_row("numpy", [1e-3])]
    bench._annotate(rows, {"tiny": NETWORKS["tiny"]}, {"numpy": {"flops": 1.0, "n": 64}})
    assert rows[0]["above_peak"] and rows[0]["fraction_of_peak"] > 1
    text = bench.table({"results": rows, "peak_gemm": {"numpy": {"flops": 1.0, "n": 64}}})
    assert "(above the measured peak)" in text


def test_a_contended_run_says_so_in_its_table():
    rows = [_row("numpy", [1e-3])]
    bench._annotate(rows, {"tiny": NETWORKS["tiny"]}, {})
    verdict = contention.summary([{"contended": True, "others_cpu_share": 0.4, "steal_share": 0.0,
                                   "seconds": 1.0, "load_average": None}])
    text = bench.table({"results": rows, "peak_gemm": {}, "contention": verdict})
    assert "WARNING: other processes used up to 40% of the CPU" in text


def _report(rows, date="then"):
    return {"date": date, "machine": {"command": "mlp bench"}, "results": rows}


def test_compare_judges_mlp_against_the_drift_of_a_reference_at_the_same_point():
    # batch 32: torch eager ran as fast in both runs, numba 1.5x slower: a regression of mlp's.
    # batch 64: torch eager slowed 1.5x as well: the machine drifted, not mlp.
    # batch 8: no reference ran there: the reading stands, marked as not controlled.
    old = _report([_row("numba", [1e-3]), _row("torch-eager", [2e-3], kind="reference"),
                   _row("numba", [1e-3], batch=64), _row("torch-eager", [2e-3], kind="reference", batch=64),
                   _row("numpy", [1e-3], batch=8), _row("numpy", [1e-3], batch=4)])
    new = _report([_row("numba", [1.5e-3]), _row("torch-eager", [2e-3], kind="reference"),
                   _row("numba", [1.5e-3], batch=64), _row("torch-eager", [3e-3], kind="reference", batch=64),
                   _row("numpy", [0.5e-3], batch=8)])
    rows = {(r["implementation"], r["batch"]): r for r in compare.compare(old, new)}
    assert ("numpy", 4) not in rows  # only cells both runs hold
    assert rows["numba", 32]["verdict"] == "slower" and rows["numba", 32]["ratio"] == pytest.approx(1 / 1.5)
    assert rows["numba", 32]["control"] == "torch-eager"
    assert rows["numba", 64]["verdict"] == "within noise"
    assert rows["numba", 64]["controlled_ratio"] == pytest.approx(1.0)
    assert rows["torch-eager", 64]["verdict"] == "slower"  # the reference's own reading, shown as it is
    assert rows["numpy", 8]["verdict"] == "faster (drift not controlled)" and rows["numpy", 8]["control"] is None
    text = compare.table(list(rows.values()), old, new)
    assert "5 cells compared: 2 slower and 1 faster" in text and "(torch-eager) | **slower** |" in text


def test_compare_says_when_the_runs_are_not_like_for_like_or_share_nothing():
    old, new = _report([_row("numpy", [1e-3])]), _report([_row("numpy", [1e-3], batch=8)])
    old["machine"]["dtype"], new["machine"]["dtype"] = "float32", "float64"
    text = compare.table(compare.compare(old, new), old, new)
    assert "Not like for like: dtype differ: 'float32' then, 'float64' now" in text
    assert "share no cell" in text


def test_compare_of_a_run_with_itself_is_all_noise_and_old_reports_without_rounds_work(tmp_path):
    row = _row("numpy", [1e-3])
    del row["rounds"]  # a report written before rounds were kept
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_report([row])))
    result = subprocess.run([sys.executable, "-m", "mlp.bench.compare", str(path), str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| tiny | train | 32 | numpy | 32k | 32k | 1.00 [0.90-1.11] | - | within noise |" in result.stdout


ZERO_TIME = '{"results": [{"implementation": "numpy", "network": "tiny", "mode": "train", "batch": 1, "seconds": 0, ' \
            '"q1": 0, "q3": 0}]}'


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"results": [{"implementation": "numpy"}]}', ZERO_TIME])
def test_compare_refuses_a_file_that_is_not_a_bench_run_in_one_line(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "mlp.bench.compare", str(path), str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("mlp bench: error:") and len(result.stderr.strip().splitlines()) == 1
