"""Scaling of data-parallel training: samples/s of the training step on 1, 2, ... ranks.

- weak scaling: a fixed batch per rank (the global batch grows with the ranks);
  efficiency = throughput(k) / (k x throughput(1));
- strong scaling: a fixed global batch split over the ranks; the same efficiency formula
  (perfect scaling keeps it at 1).

    python -m mlp.bench.scaling --ranks 1,2,4 --net mnist --batch 256 --out DIR --stem NAME

launches `mpiexec -n k` for each k (it must be on PATH: `pip install mpich mpi4py`); each
job times full data-parallel steps (forward, backward, gradient all-reduce, update) with
every rank in step, and rank 0 reports. Writes NAME.json and NAME.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from mlp.bench.__main__ import _names, stem
from mlp.cli import Parser, positive_int, positive_ints


def worker(args):
    import mlp
    from mlp import distributed
    from mlp.bench.networks import LR, NETWORKS, synthetic_data

    network = NETWORKS[args.net]
    model = mlp.MLP(network.sizes, activation=network.activation, output=network.output,
                    backend=args.backend, dtype=args.dtype, seed=0)
    model.compile(loss=network.loss, optimizer=mlp.SGD(lr=LR), metrics=[])
    world = distributed.get_world(model.backend)
    parallel = distributed.DataParallel(model, world)
    parallel.start()
    global_batch = args.batch * world.size if args.mode == "weak" else args.batch
    X, Y = synthetic_data(network, global_batch, seed=0, dtype=args.dtype)
    rows, _ = parallel.shard(slice(0, global_batch))
    Xs, Ys = model.backend.asarray(X[rows]), model.backend.asarray(Y[rows])

    def steps(count):
        for _ in range(count):
            parallel.train_batch(Xs, Ys, global_batch)
        model.backend.synchronize()

    steps(args.warmup)
    seconds = []
    for _ in range(args.repeats):
        world.allreduce_host(np.zeros(1))  # all ranks start the repeat together
        started = time.perf_counter()
        steps(args.steps)
        elapsed = world.allreduce_host(np.array([time.perf_counter() - started]))[0] / world.size
        seconds.append(elapsed / args.steps)
    if world.rank == 0:
        median = float(np.median(seconds))
        print(json.dumps({"ranks": world.size, "mode": args.mode, "global_batch": global_batch,
                          "seconds_per_step": median, "samples_per_s": global_batch / median,
                          "engine": world.engine}))


def run(ranks, net, batch, modes=("weak", "strong"), backend="numpy", dtype="float32", steps=20,
        repeats=5, warmup=3, timeout=600):
    """Launch one mpiexec job per rank count and mode; returns the rows with efficiencies."""
    from mlp.distributed import mpiexec_path

    mpiexec = mpiexec_path()
    if mpiexec is None:
        raise RuntimeError("the scaling benchmark needs mpiexec on PATH: pip install mpich mpi4py")
    rows = []
    for mode in modes:
        for k in ranks:
            command = [mpiexec, "-n", str(k), sys.executable, "-m", "mlp.bench.scaling", "--worker",
                       "--mode", mode, "--net", net, "--batch", str(batch), "--backend", backend,
                       "--dtype", dtype, "--steps", str(steps), "--repeats", str(repeats),
                       "--warmup", str(warmup)]
            env = dict(os.environ, MLP_DISTRIBUTED="1")
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for row in rows:
        one = next(r for r in rows if r["mode"] == row["mode"] and r["ranks"] == min(ranks))
        row["efficiency"] = (row["samples_per_s"] / row["ranks"]) / (one["samples_per_s"] / one["ranks"])
    return rows


def table(rows, net, batch) -> str:
    lines = [f"Data-parallel scaling, {net}, batch {batch} (per rank for weak, global for strong)", "",
             "| mode | ranks | global batch | samples/s | efficiency | engine |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['mode']} | {row['ranks']} | {row['global_batch']} | "
                     f"{row['samples_per_s']:,.0f} | {row['efficiency']:.2f} | {row['engine']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = Parser(prog="python -m mlp.bench.scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=positive_ints, default=[1, 2], help="rank counts, e.g. 1,2,4")
    parser.add_argument("--net", default="tiny", choices=["tiny", "mnist", "wide"])
    parser.add_argument("--batch", type=positive_int, default=256)
    parser.add_argument("--modes", type=_names(("weak", "strong"), "mode"), default=["weak", "strong"])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--warmup", type=positive_int, default=3)
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--stem", type=stem, default="scaling")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="weak", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    from mlp.bench import machine

    rows = run(args.ranks, args.net, args.batch, args.modes, args.backend, args.dtype,
               args.steps, args.repeats, args.warmup)
    os.makedirs(args.out, exist_ok=True)
    report = {"machine": machine.describe([args.backend], dtype=args.dtype), "command": machine.command_line(),
              "net": args.net, "batch": args.batch, "rows": rows}
    with open(os.path.join(args.out, f"{args.stem}.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = table(rows, args.net, args.batch)
    with open(os.path.join(args.out, f"{args.stem}.md"), "w") as f:
        f.write(text + f"\n\nCommand: `{report['command']}`\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
