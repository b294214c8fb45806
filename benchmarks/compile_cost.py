"""Measure what mlp.kernels.numba_cost models: for a few networks and batch sizes, the seconds of
one training step on NumPy's reference code, on Numba's whole compiled step and on its per-layer
path, and what compiling each costs with an empty kernel cache (each in a fresh process, so that
nothing is loaded or cached before it).

    python benchmarks/compile_cost.py [--out FILE.json]

Prints one row per case; the constants in mlp/kernels/numba_cost.py are fitted to these rows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

NETS = {  # (sizes, hidden activation)
    "tiny": ((2, 64, 64, 1), "tanh"),
    "digits": ((64, 128, 128, 10), "relu"),
    "deep": ((32,) + (64,) * 9 + (10,), "relu"),
    "mnist": ((784, 512, 512, 10), "relu"),
}


def _one(net, batch, path, optimizer):
    """In this process (a fresh one, its cache empty): (first step seconds, median step seconds)."""
    import numpy as np

    import mlp

    sizes, activation = NETS[net]
    backend = "numpy" if path == "reference" else "numba"
    output, loss = ("sigmoid", "binary_cross_entropy") if sizes[-1] == 1 else ("softmax", "cross_entropy")
    model = mlp.MLP(list(sizes), activation=activation, output=output, backend=backend, seed=0)
    model.compile(loss=loss, optimizer=optimizer, metrics=[])
    if backend == "numba":
        model.backend.crossover_override = batch if path == "whole" else 0
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, sizes[0])).astype(model.dtype)
    Y = np.eye(sizes[-1], dtype=model.dtype)[rng.integers(0, sizes[-1], batch)] if sizes[-1] > 1 else \
        rng.integers(0, 2, (batch, 1)).astype(model.dtype)
    start = time.perf_counter()
    model._train_batch(X, Y, plan_batch=batch)
    first = time.perf_counter() - start
    times = []
    for _ in range(7):
        repeats, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.05:
            model._train_batch(X, Y, plan_batch=batch)
            repeats += 1
        times.append((time.perf_counter() - start) / repeats)
    return first, sorted(times)[3]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # net,batch,path,optimizer: run in this process
    args = parser.parse_args(argv)
    if args.one:
        net, batch, path, optimizer = args.one.split(",")
        print(json.dumps(_one(net, int(batch), path, optimizer)))
        return
    rows = []
    for net in NETS:
        for batch in (32, 128):
            row = {"net": net, "layers": len(NETS[net][0]) - 1, "batch": batch,
                   "weights": sum(a * b for a, b in zip(NETS[net][0], NETS[net][0][1:]))}
            for path in ("reference", "whole", "layers"):
                with tempfile.TemporaryDirectory() as cache:
                    env = dict(os.environ, MLP_CACHE_DIR=cache, MLP_NUMBA_COMPILE="on")
                    done = subprocess.run([sys.executable, __file__, "--one", f"{net},{batch},{path},adam"],
                                          env=env, capture_output=True, text=True, check=True)
                first, step = json.loads(done.stdout.strip().splitlines()[-1])
                row[f"{path}_step_us"] = round(step * 1e6, 1)
                row[f"{path}_first_s"] = round(first, 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
