"""The harness's peak-memory figures (mlp/bench/memory.py): what a case's model and steps hold
and allocate counts, what its first call (compiling) only passes through does not, and a
system that cannot tell gives no figure rather than a wrong one."""
import numpy as np
import pytest

import mlp.bench as bench
from mlp.bench import memory

MIB = 2**20
on_linux_glibc = pytest.mark.skipif(not memory.host_measurable(), reason="needs Linux's clear_refs and glibc")


def touched(mib):
    return np.ones(mib * MIB // 8)  # written, so resident


@on_linux_glibc
def test_host_peak_counts_what_the_model_holds_and_a_step_allocates_not_the_first_calls_scratch():
    peak = memory.HostPeak().start()
    model = touched(8)
    scratch = touched(64)  # what compiling uses on the way
    del scratch
    peak.first_call_done()
    for _ in range(3):
        step_temporary = touched(16)
        del step_temporary
    got = peak.bytes() / MIB
    assert 8 + 16 - 1 <= got < 8 + 16 + 6, got  # (the interpreter's own allocations: a few MiB at most)
    del model


@on_linux_glibc
def test_memory_freed_before_the_baseline_is_not_reused_unseen():
    touched(4)  # (one freed block of 4 MiB raises glibc's mmap threshold: the next come from its heap)
    freed = [touched(4) for _ in range(8)]  # freed, but kept by the allocator unless handed back
    del freed
    peak = memory.HostPeak().start()
    peak.first_call_done()
    held = [touched(4) for _ in range(8)]
    assert peak.bytes() / MIB >= 31
    del held


def test_no_host_figure_where_the_system_cannot_tell(monkeypatch):
    monkeypatch.setattr(memory, "CLEAR_REFS", "/nonexistent/clear_refs")
    peak = memory.HostPeak().start()
    peak.first_call_done()
    assert peak.bytes() is None
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    assert not memory.host_measurable()
    assert memory.HostPeak().start().bytes() is None


def test_device_peak_is_the_used_memorys_rise_from_emptied_pools():
    used, emptied = iter([1000, 1000 + 5 * MIB]), []
    peak = memory.DevicePeak(lambda: next(used), lambda: emptied.append(True)).start()
    peak.first_call_done()
    assert emptied == [True] and peak.bytes() == 5 * MIB
    results = memory.Peaks(memory.DevicePeak(lambda: 7, lambda: None)).start().result()
    assert set(results) == {"peak_memory_bytes", "peak_device_memory_bytes"}
    assert results["peak_device_memory_bytes"] == 0


def test_rounds_keep_the_first_rounds_memory_and_the_table_shows_it(monkeypatch):
    """Round 1 builds and compiles each case for the first time in its process: its memory is
    reported, whichever round was fastest."""
    import mlp.bench.timing

    seconds, memories = iter([0.5, 0.1]), iter([3 * MIB, 1 * MIB])

    class FakePeaks:
        def __init__(self, device=None):
            pass

        def start(self):
            return self

        def first_call_done(self):
            pass

        def result(self):
            return {"peak_memory_bytes": next(memories)}

    def fake_measure(step, synchronize, after_first_call=None, **timing):
        value = next(seconds)
        return {"seconds": value, "q1": value, "q3": value, "calls": 1, "repeats": 1, "first_call_seconds": 1.0}

    monkeypatch.setattr(bench, "measure", fake_measure)
    monkeypatch.setattr(bench.memory, "Peaks", FakePeaks)
    monkeypatch.setattr(bench, "peak_gemm_flops", lambda backend, dtype, **timing: (1e9, 64))
    monkeypatch.setattr(mlp.bench.timing, "peak_gemm_flops", lambda backend, dtype, **timing: (1e9, 64))
    report = bench.run(["numpy"], ["tiny"], [4], modes=["train"], reference_names=[], progress=False, rounds=2)
    [row] = report["results"]
    assert row["seconds"] == 0.1 and row["peak_memory_bytes"] == 3 * MIB
    assert "peak memory MiB |" in bench.table(report) and "| 3.0 |" in bench.table(report)


def test_a_reference_case_holds_nothing_of_the_last_one_at_its_baseline(monkeypatch, capsys):
    """A reference's process runs its cases one after another: every object of a case (JAX's
    synchronisation holds the parameters and the last output) must be gone before the next
    case's baseline, or the next case reuses that memory without the resident size moving."""
    import gc
    import json
    import weakref

    from mlp.bench import references

    class Held:  # stands for a case's parameters
        pass

    last_case, alive_at_baseline = [], []

    def fake_build(framework, network, X, Y, device, on_data=lambda: None):
        gc.collect()  # (what Peaks.start does first)
        alive_at_baseline.append(any(case() is not None for case in last_case))
        on_data()
        held = Held()
        last_case.append(weakref.ref(held))
        return (lambda: held), (lambda: held), (lambda: held)

    monkeypatch.setattr(references, "build", fake_build)
    network = json.dumps({"name": "tiny", "sizes": [2, 4, 2], "activation": "tanh", "output": "softmax",
                          "loss": "cross_entropy"})
    timing = json.dumps({"min_repeat_time": 0.0, "repeats": 1, "warmup": 0})
    references.main(["--framework", "numpy-naive", "--network", network, "--batch-sizes", "1,2",
                     "--modes", "train,infer", "--timing", timing])
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert alive_at_baseline == [False] * 5, alive_at_baseline  # the primer, then four cases
