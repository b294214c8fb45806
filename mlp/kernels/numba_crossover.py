"""Measure where the Numba backend's whole compiled step stops beating its BLAS path.

For networks [w, w, w, 10] (ReLU and tanh hidden layers, softmax cross-entropy, SGD) at widths
w, time one training step, and one forward pass, both ways over batch sizes 1, 2, 4, ...; the
crossover of a width is the range from the smallest to the largest batch at which the compiled
path is faster before it loses at two sizes in a row (so a near-tie does not end the sweep, and
one noisy slow measurement of the other path cannot carry it past a real loss), the narrower of
the two activations' (networks with other hidden activations take it), and each one's own
(`by_activation`, for networks whose hidden layers all have it). The two paths are timed
alternately, best of ROUNDS each.
Written to this machine's own table in the cache directory, which the Numba backend then
prefers to the shipped one (--out mlp/kernels/numba_crossover.json replaces the shipped one).

    python -m mlp.kernels.numba_crossover [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from mlp.io import atomic_write

WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096)
# Small enough that repeating one batch leaves the network where it started: at lr 0.01 one
# step took a 4096-wide ReLU net's softmax outputs below FLT_MIN, and every later step ran on
# denormal numbers, 5x slower on both paths (222 vs 45 ms at batch 1), hiding the difference.
LR = 1e-6
ROUNDS = 5
LOSSES = 2  # the sweep ends at this many sizes in a row where the compiled path is slower
ACTIVATIONS = ("relu", "tanh")


def time_path(backend, model, run, override, settle=0.0):
    from mlp.bench.timing import measure

    backend.crossover_override = override
    model._kernel_cache.clear()
    time.sleep(settle)
    return measure(run, backend.synchronize, min_repeat_time=0.02, repeats=3, warmup=2)["seconds"]


def sweep(backend, model, run_for, label, max_batch, timings, verbose):
    """Time the compiled path of `run_for(batch)` (a function of no arguments) against the
    BLAS path at batch 1, 2, 4, ..., into `timings` ("label/batch"), until the compiled path
    is slower at LOSSES sizes in a row (its range: `measured_range`). At width 4096 BLAS GEMV
    wins inference at batch 1, the compiled pass at 2-8 (1.3-2.1x over OpenBLAS's small-M
    GEMM). One near-tie lost (mnist's forward pass at batch 2: 128 against 112 us, then 2.7x
    faster at 8) does not end the sweep. The two paths are alternated, best of ROUNDS each: a
    slow spell of this shared machine then hits both instead of deciding. A step split across
    threads is timed after SETTLE seconds, the BLAS path's spinning threads asleep."""
    from mlp.backends.numba import _weights
    from mlp.bench.timing import SETTLE
    from mlp.kernels import numba_plan

    weights = _weights(model)
    batch, losses = 1, 0
    while batch <= max_batch and losses < LOSSES:
        run = run_for(batch)
        settle = SETTLE if numba_plan.splits(batch, weights) else 0.0
        fused = blas = float("inf")
        for _ in range(ROUNDS):
            fused = min(fused, time_path(backend, model, run, 10**9, settle))
            blas = min(blas, time_path(backend, model, run, 0))
        timings[f"{label}/{batch}"] = {"whole_step_s": fused, "blas_s": blas}
        if verbose:
            print(f"{label:>16} batch {batch:5d}: compiled {fused * 1e6:9.1f} us, BLAS path {blas * 1e6:9.1f} us",
                  flush=True)
        losses = 0 if fused < blas else losses + 1
        batch *= 2


def measure_crossover(widths=WIDTHS, activations=ACTIVATIONS, max_batch=8192, verbose=True):
    """The timings of both paths ({"[infer/]activation/width/batch": {"whole_step_s",
    "blas_s"}}), training and inference, for nets [w, w, w, 10] of each width and activation
    (`tables` turns them into ranges). Inference has its own: the compiled forward pass runs
    on one core, the BLAS path's GEMMs on all."""
    import mlp

    backend = mlp.get_backend("numba")
    saved = backend.crossover_override
    timings = {}
    try:
        for width in widths:
            for activation in activations:
                model = mlp.MLP([width, width, width, 10], activation=activation, output="softmax",
                                backend="numba", seed=0)
                model.compile(loss="cross_entropy", optimizer=mlp.SGD(lr=LR), metrics=[])

                def data(batch, width=width):
                    rng = np.random.default_rng(0)
                    X = rng.standard_normal((batch, width)).astype(np.float32)
                    return X, np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]

                def step_for(batch, model=model, data=data):
                    X, Y = data(batch)
                    return lambda: model._train_batch(X, Y)

                def forward_for(batch, model=model, data=data):
                    X, _ = data(batch)
                    return lambda: model._infer(X)

                for run_for, label in ((step_for, f"{activation}/{width}"),
                                       (forward_for, f"infer/{activation}/{width}")):
                    sweep(backend, model, run_for, label, max_batch, timings, verbose)
    finally:
        backend.crossover_override = saved
    return timings


def measured_range(timings, label):
    """(first, last) of one sweep from its recorded timings (entries "label/batch"): the
    smallest and the largest batch at which the compiled path was faster ((0, 0) if never).
    A sweep records up to its stop (LOSSES sizes lost in a row), so no later win counts."""
    wins = [int(key.rsplit("/", 1)[1]) for key, t in timings.items()
            if key.rsplit("/", 1)[0] == label and t["whole_step_s"] < t["blas_s"]]
    return (min(wins), max(wins)) if wins else (0, 0)


def tables(timings, activation=None) -> dict:
    """The four tables the backend reads ({width: batch} for "by_width", "from_by_width",
    "inference_by_width", "inference_from_by_width") from recorded timings: one activation's,
    or (None) the narrower range of all activations measured."""
    labels = {}
    for key in timings:
        label = key.rsplit("/", 1)[0]
        *mode, name, width = label.split("/")
        if activation in (None, name):
            labels.setdefault((bool(mode), int(width)), []).append(label)
    ranges = {}
    for (inference, width), found in labels.items():
        for label in found:
            ranges[inference, width] = _narrower(ranges.get((inference, width)), measured_range(timings, label))
    result = {}
    for inference, prefix in ((False, ""), (True, "inference_")):
        widths = sorted(w for i, w in ranges if i == inference)
        result[f"{prefix}by_width"] = {str(w): ranges[inference, w][1] for w in widths}
        result[f"{prefix}from_by_width"] = {str(w): ranges[inference, w][0] for w in widths}
    return result


def _narrower(a, b):
    if a is None:
        return b
    first, last = max(a[0], b[0]), min(a[1], b[1])
    return (first, last) if 0 < first <= last else (0, 0)


def main(argv=None):
    from mlp.backends.numba import own_crossover_file
    from mlp.bench.machine import command_line, cpu_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="where to write the table (default: this machine's own, "
                                                    f"{own_crossover_file()})")
    args = parser.parse_args(argv)
    args.out = args.out or own_crossover_file()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    timings = measure_crossover()
    result = {**tables(timings), "by_activation": {name: tables(timings, name) for name in ACTIVATIONS},
              "machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "command": command_line() if "numba_crossover" not in command_line() else
              "python -m mlp.kernels.numba_crossover", "timings": timings}
    # atomic: a backend starting meanwhile reads the old table or the new
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1).encode()))
    print(f"wrote {args.out}: " + "; ".join(f"{key} {result[key]}" for key in tables({})))

if __name__ == "__main__":
    main()
