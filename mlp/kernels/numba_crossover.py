"""Measure where the Numba backend's whole compiled step stops beating its BLAS path.

For networks [w, w, w, 10] (ReLU and tanh hidden layers, softmax cross-entropy, SGD) at widths
w, time one training step both ways over batch sizes 1, 2, 4, ...; the crossover of a width is
the largest batch up to which the compiled step is faster at every size (the sweep stops at the
first loss, so one noisy slow measurement of the other path cannot carry it further), the
smaller of the two activations'. The two paths are timed alternately, best of ROUNDS each.
Written to numba_crossover.json beside this file (or --out).

    python -m mlp.kernels.numba_crossover [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096)
# Small enough that repeating one batch leaves the network where it started: at lr 0.01 one
# step took a 4096-wide ReLU net's softmax outputs below FLT_MIN, and every later step ran on
# denormal numbers, 5x slower on both paths (222 vs 45 ms at batch 1), hiding the difference.
LR = 1e-6
ROUNDS = 5


def time_step(backend, model, X, Y, override):
    from mlp.bench.timing import measure

    backend.crossover_override = override
    model._kernel_cache.clear()
    return measure(lambda: model._train_batch(X, Y), backend.synchronize,
                   min_repeat_time=0.02, repeats=3, warmup=2)["seconds"]


def measure_crossover(widths=WIDTHS, activations=("relu", "tanh"), max_batch=8192, verbose=True):
    import mlp

    backend = mlp.get_backend("numba")
    saved = backend.crossover_override
    table, timings = {}, {}
    try:
        for width in widths:
            for activation in activations:
                model = mlp.MLP([width, width, width, 10], activation=activation, output="softmax",
                                backend="numba", seed=0)
                model.compile(loss="cross_entropy", optimizer=mlp.SGD(lr=LR), metrics=[])
                best, batch = 0, 1
                while batch <= max_batch:
                    rng = np.random.default_rng(0)
                    X = rng.standard_normal((batch, width)).astype(np.float32)
                    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
                    # alternated, best of ROUNDS each: a slow spell of this shared machine
                    # then hits both paths instead of deciding the comparison
                    fused = blas = float("inf")
                    for _ in range(ROUNDS):
                        fused = min(fused, time_step(backend, model, X, Y, 10**9))
                        blas = min(blas, time_step(backend, model, X, Y, 0))
                    timings[f"{activation}/{width}/{batch}"] = {"whole_step_s": fused, "blas_s": blas}
                    if verbose:
                        print(f"{activation:>5} width {width:5d} batch {batch:5d}: whole step "
                              f"{fused * 1e6:9.1f} us, BLAS path {blas * 1e6:9.1f} us", flush=True)
                    if fused >= blas:
                        break
                    best, batch = batch, batch * 2
                table[width] = min(table.get(width, best), best)
    finally:
        backend.crossover_override = saved
    return table, timings


def main(argv=None):
    from mlp.backends.numba import CROSSOVER_FILE
    from mlp.bench.machine import command_line, cpu_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=CROSSOVER_FILE)
    args = parser.parse_args(argv)
    table, timings = measure_crossover()
    result = {"by_width": {str(w): b for w, b in table.items()},
              "machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "command": command_line() if "numba_crossover" not in command_line() else
              "python -m mlp.kernels.numba_crossover", "timings": timings}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"crossover by width: {table}; wrote {args.out}")


if __name__ == "__main__":
    main()
