"""Honest timing: the first call (compilation, autotuning) is reported apart, then warm-up,
then repeats of a calibrated number of calls, the device synchronised before each clock
read. The figure is the median over repeats; the spread is the interquartile range."""
from __future__ import annotations

import time

import numpy as np

# Seconds to wait before timing a step that follows other code's BLAS calls: OpenBLAS's
# threads spin for about 2^28 cycles (its THREAD_TIMEOUT) after a call, on the cores that a
# Numba step split across threads needs. [64, 64, 64, 10] at batch 2048 measured 2.54 ms
# straight after the BLAS path, 1.38 ms after 0.3 s; a training run takes one path and never
# sees it.
SETTLE = 0.2

# Square GEMM sizes whose best rate is a library's peak (each BLAS peaks at its own n).
PEAK_SIZES = {"cpu": (512, 1024, 2048), "gpu": (2048, 4096, 8192)}


def measure(step, synchronize, min_repeat_time=0.05, repeats=7, warmup=3, max_calls=100_000,
            after_first_call=None):
    """Time `step()`. Returns seconds per call (median, q1, q3) and the first call's time.
    `after_first_call()`, if given, runs once the first call is done (untimed)."""
    started = time.perf_counter()
    step()
    synchronize()
    first_call = time.perf_counter() - started
    if after_first_call is not None:
        after_first_call()
    for _ in range(warmup):
        step()
    synchronize()
    calls = 1  # grow until one repeat lasts at least min_repeat_time
    while True:
        elapsed = _run(step, synchronize, calls)
        if elapsed >= min_repeat_time or calls >= max_calls:
            break
        calls = min(max_calls, max(calls * 2, int(calls * min_repeat_time / max(elapsed, 1e-9))))
    per_call = [elapsed / calls] + [_run(step, synchronize, calls) / calls for _ in range(repeats - 1)]
    q1, median, q3 = np.percentile(per_call, [25, 50, 75])
    return {"seconds": float(median), "q1": float(q1), "q3": float(q3), "calls": calls,
            "repeats": repeats, "first_call_seconds": first_call}


def _run(step, synchronize, calls):
    synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    synchronize()
    return time.perf_counter() - start


def gemm_flops(multiply, synchronize, n, min_repeat_time=0.2):
    """FLOP/s of `multiply()`, one n x n @ n x n product: the first quartile over repeats
    (the best sustained rate; a shared machine only ever slows it down)."""
    result = measure(multiply, synchronize, min_repeat_time=min_repeat_time, repeats=5, warmup=1)
    return 2.0 * n ** 3 / result["q1"]


def peak_repeat_time(timing) -> float:
    """Seconds per repeat of a GEMM-peak measurement: 4x the steps' (0.2 s at the default), so that
    the peak is measured as carefully as the steps, by mlp and the references alike."""
    return 4 * timing.get("min_repeat_time", 0.05)


def peak_gemm_flops(backend, dtype="float32", sizes=None, min_repeat_time=0.2):
    """Measured GEMM peak of a backend: (FLOP/s, n), the best over square products of several
    sizes (BLAS libraries peak at different n), each the best sustained rate over its repeats."""
    sizes = sizes or PEAK_SIZES["cpu" if backend.on_host else "gpu"]
    return max((_square_gemm_flops(backend, n, dtype, min_repeat_time), n) for n in sizes)


def _square_gemm_flops(backend, n, dtype, min_repeat_time):
    rng = np.random.default_rng(0)
    a = backend.asarray(rng.standard_normal((n, n)).astype(dtype))
    b = backend.asarray(rng.standard_normal((n, n)).astype(dtype))
    out = backend.xp.empty((n, n), dtype=dtype)
    return gemm_flops(lambda: backend.xp.matmul(a, b, out=out), backend.synchronize, n, min_repeat_time)
