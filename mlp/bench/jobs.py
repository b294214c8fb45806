"""Time to result: whole training jobs, each in a fresh process the way a user runs a script,
first with an empty kernel cache, then with the cache that run left (`mlp bench --jobs ...`).

Step throughput leaves out what a user waits for: starting Python, importing, compiling
(Numba, per plan), loading cached kernels, partial last batches, evaluation passes. A job
reports the seconds from starting its process to the end of its first training step, and
to its end (data made, model built, fit, evaluated)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    sizes: tuple
    activation: str
    samples: int
    epochs: int
    batch_size: int
    data: str = "synthetic"  # or a dataset of mlp.datasets, scaled as the README does


JOBS = {
    "readme": Job("readme", "the README's example: spirals, early stopping, cosine schedule",
                  (2, 64, 64, 2), "tanh", 200, 100, 32, "spirals"),
    "digits": Job("digits", "the 8x8 digits (1797 samples), 64-128-128-10 relu", (64, 128, 128, 10), "relu",
                  1797, 30, 32, "digits"),
    "tiny": Job("tiny", "2-64-64-2 tanh, 2000 samples", (2, 64, 64, 2), "tanh", 2000, 20, 32),
    "mnist": Job("mnist", "784-512-512-10 relu, 4096 samples", (784, 512, 512, 10), "relu", 4096, 3, 128),
    # long enough that compiling pays (mlp.kernels.numba_cost): the Numba backend compiles its kernels
    "mnist-long": Job("mnist-long", "784-512-512-10 relu, 16384 samples", (784, 512, 512, 10), "relu",
                      16384, 20, 128),
    "deep": Job("deep", "10 layers 32-64x9-10 relu, 4000 samples", (32,) + (64,) * 9 + (10,), "relu",
                4000, 10, 32),
}
CACHES = ("cold", "warm")


def run_here(job: Job) -> dict:
    """The job itself, in this process, with the backend MLP_BACKEND names: what a user's
    script does. Every job uses Adam, L2 and clipping, float32 data (the README's spirals
    are float64) and a validation split. Returns when its first step ended (time.time())."""
    import numpy as np

    import mlp

    if job.data == "spirals":
        X, y = mlp.datasets.spirals(n=job.samples, seed=0)
        X = mlp.StandardScaler().fit_transform(X)
    elif job.data == "digits":
        X, y = mlp.datasets.digits()
        X = mlp.StandardScaler().fit_transform(X)
    else:
        X = np.random.default_rng(0).standard_normal((job.samples, job.sizes[0])).astype("float32")
        y = (X[:, 0] > 0).astype(int) * (job.sizes[-1] - 1)
    model = mlp.MLP(list(job.sizes), activation=job.activation, output="softmax", seed=0)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01), l2=1e-4, clip_norm=5.0)
    first_step_at = []
    train_batch = model._train_batch

    def timed_train_batch(*args, **kwargs):  # the fit's own steps; only the first one's end is noted
        result = train_batch(*args, **kwargs)
        if not first_step_at:
            float(result[0])  # the step is done (a device scalar on CuPy)
            first_step_at.append(time.time())
        return result

    model._train_batch = timed_train_batch
    model.fit(X, y, epochs=job.epochs, batch_size=job.batch_size, validation_split=0.2, verbose=0,
              early_stopping=mlp.EarlyStopping(patience=10), lr_schedule=mlp.CosineLR(period=job.epochs))
    accuracy = model.evaluate(X, y)["accuracy"]
    return {"first_step_at": first_step_at[0], "accuracy": float(accuracy)}


def time_job(job: Job, backend: str, cache_dir: str, threads=None) -> dict:
    """Run `job` in a fresh process on `backend` with the kernel cache in `cache_dir` (and
    `threads` threads, if given); seconds from the process's start to its first step's end and
    to its end, or {'error': ...}."""
    from mlp.bench.references import THREAD_VARIABLES

    env = dict(os.environ, MLP_BACKEND=backend, MLP_CACHE_DIR=cache_dir,
               NUMBA_CACHE_DIR=os.path.join(cache_dir, "numba-own"))  # mlp's own jit functions too
    if threads:
        env.update({name: str(threads) for name in THREAD_VARIABLES}, NUMBA_NUM_THREADS=str(threads))
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "mlp.bench.jobs", job.name], env=env, capture_output=True,
                          text=True, timeout=3600)
    ended = time.time()
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or [f"no output (exit code {done.returncode})"])[-1]}
    child = json.loads(lines[-1])
    return {"first_step": child["first_step_at"] - started, "total": ended - started, "accuracy": child["accuracy"]}


def run(job_names, backends, progress=print, threads=None, rounds=1) -> list:
    """Every job on every backend, cold then warm (each backend with a cache folder of its own,
    made empty for the cold run), `rounds` times, the backends interleaved within each round so
    that every ratio compares runs made under the same conditions. One dict per job, backend,
    cache and round."""
    results = []
    for round_ in range(rounds):
        for name in job_names:
            for backend in backends:
                with tempfile.TemporaryDirectory(prefix="mlp-jobs-") as cache_dir:
                    for cache in CACHES:
                        timing = time_job(JOBS[name], backend, cache_dir, threads)
                        results.append({"job": name, "backend": backend, "cache": cache, "round": round_, **timing})
                        if progress:
                            progress(f"{name} {backend} {cache}: " + (timing.get("error") or
                                     f"first step {timing['first_step']:.2f} s, total {timing['total']:.2f} s"))
    return results


def _median(rows, key):
    values = [r[key] for r in rows if key in r]
    return statistics.median(values) if values else None


def table(results) -> str:
    """Markdown: one row per job and backend, cold and warm side by side, and the ratio of each
    backend's total to the first backend's (numpy when it ran)."""
    cells = {}
    for r in results:
        cells.setdefault((r["job"], r["backend"], r["cache"]), []).append(r)
    for key, rows in cells.items():  # the median over rounds; an error if any round failed
        failed = [r for r in rows if "error" in r]
        cells[key] = failed[0] if failed else {k: _median(rows, k) for k in ("first_step", "total")}
    backends = list(dict.fromkeys(r["backend"] for r in results))
    reference = "numpy" if "numpy" in backends else backends[0]
    lines = ["| job | backend | first step, cold | total, cold | first step, warm | total, warm | "
             f"total / {reference}'s, cold | warm |", "|" + "---|" * 8]
    for job in dict.fromkeys(r["job"] for r in results):
        for backend in backends:
            row = [cells.get((job, backend, cache), {}) for cache in CACHES]
            base = [cells.get((job, reference, cache), {}) for cache in CACHES]
            seconds = [f"{r[k]:.2f} s" if k in r else r.get("error", "-") for r in row for k in ("first_step", "total")]
            ratios = [f"{r['total'] / b['total']:.2f}" if "total" in r and "total" in b else "-"
                      for r, b in zip(row, base)]
            lines.append(f"| {job} | {backend} | " + " | ".join(seconds + ratios) + " |")
    described = "\n".join(f"- {job.name}: {job.description}; {job.epochs} epochs, batch {job.batch_size}"
                          for job in JOBS.values() if job.name in {r["job"] for r in results})
    rounds = len({r.get("round", 0) for r in results})
    return ("\n".join(lines) + f"\n\nMedians of {rounds} round(s), the backends interleaved in each. "
            "Each job runs in a fresh process: first step = seconds from starting the "
            "process to the end of the fit's first training step (Python, imports, data, compiling); total = "
            "to the process's end (fit with a validation split and early stopping, then evaluate). Cold: an "
            "empty kernel cache (MLP_CACHE_DIR and NUMBA_CACHE_DIR); warm: the cache the cold run left.\n\n"
            + described + "\n")


if __name__ == "__main__":
    print(json.dumps(run_here(JOBS[sys.argv[1]])))
