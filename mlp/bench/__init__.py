"""The benchmark harness behind `mlp bench`: training-step and inference throughput
(samples/s) of every chosen backend across batch sizes, beside reference implementations
(plain NumPy, PyTorch eager, torch.compile, JAX jit) measured in the same run, and beside the
machine's measured GEMM peak. Writes a table, JSON and a log-log plot."""
from __future__ import annotations

import contextlib
import json
import os
import time

from mlp.bench import contention, machine, memory
from mlp.bench.networks import LR, NETWORKS, PRIMER, Network, synthetic_data
from mlp.bench.timing import SETTLE, measure, peak_gemm_flops, peak_repeat_time

DEFAULT_BATCH_SIZES = (1, 8, 32, 128, 512, 2048, 8192)
# What a case's first round reports whichever round was fastest: there every implementation builds
# and compiles the case for the first time in its process, as a user's run does.
FIRST_ROUND = ("first_call_seconds", "peak_memory_bytes", "peak_device_memory_bytes")


def thread_limit(threads):
    """Limit BLAS/OpenMP pools in this process (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def backend_step(backend_name, network: Network, batch, mode, dtype="float32", seed=0, footprint=None):
    """(step, synchronize, model) for one mlp backend: data made on the device once,
    outside the timed region; step = one full training step or one inference pass.
    `footprint` (memory.Peaks) starts once the data is in place, before the model is built."""
    import mlp

    backend = mlp.get_backend(backend_name)
    X, Y = synthetic_data(network, batch, seed=seed, dtype=dtype)
    X, Y = backend.asarray(X), backend.asarray(Y)
    if footprint is not None:
        footprint.start()
    model = mlp.MLP(network.sizes, activation=network.activation, output=network.output,
                    backend=backend, dtype=dtype, seed=seed, batch_norm=network.batch_norm)
    model.compile(loss=network.loss, optimizer=mlp.SGD(lr=LR), metrics=[])
    if mode == "train":
        def step():
            return model._train_batch(X, Y)[0]
    else:
        def step():
            return model._infer(X)  # what predict() runs on each batch
    return step, model.backend.synchronize, model


def run(backends=("numpy",), networks=("mnist",), batch_sizes=DEFAULT_BATCH_SIZES,
        modes=("train", "infer"), dtype="float32", reference_names=None, threads=None,
        timing=None, progress=True, device="cpu", rounds=1):
    """Measure everything; returns the report dict (see README: benchmarks).
    `rounds` > 1 measures every implementation that many times over, in turn, and keeps each
    case's fastest round: a slow spell of a shared machine then has to last through every
    round of one implementation to bias a ratio, not just the seconds it measures in."""
    import mlp
    from mlp.bench import references  # not at import time: it is also run as a script

    threads = threads or os.cpu_count()
    timing = timing or {}
    networks = [NETWORKS[n] if isinstance(n, str) else n for n in networks]
    if reference_names is None:
        reference_names = [r for r in references.FRAMEWORKS if references.installed(r)
                           and (device == "cuda" or r not in references.GPU_ONLY)
                           and any(references.supports(r, network.activation, network.batch_norm)
                                   for network in networks)]
    backend_objects = [mlp.get_backend(name) for name in backends]
    cases = [(b, n, s, m) for b in backends for n in networks for s in batch_sizes for m in modes]
    bar = _bar(progress, rounds * (len(cases) + len(reference_names) * len(networks)))
    best, peaks, every_round, stretches = {}, {}, {}, []
    for round_index in range(rounds):
        sampler = contention.Sampler().start()
        for result in _one_round(backend_objects, cases, networks, batch_sizes, modes, dtype,
                                 reference_names, threads, device, timing, peaks, bar):
            key = (result["implementation"], result["network"], result.get("mode"), result.get("batch"))
            if "error" not in result:
                every_round.setdefault(key, []).append({"round": round_index,
                                                        **{k: result[k] for k in ("seconds", "q1", "q3")}})
            kept = best.get(key)
            if kept is None or ("error" in kept and "error" not in result):
                best[key] = result
            elif "error" not in result and result["seconds"] < kept["seconds"]:
                best[key] = {**result, **{field: kept.get(field) for field in FIRST_ROUND}}
        stretches.append(sampler.stop())
    bar.close()
    results = list(best.values())
    for key, result in best.items():
        if "error" not in result:
            result["rounds"] = every_round[key]
    by_name = {n.name: n for n in networks}
    _annotate(results, by_name, peaks)
    return {"machine": machine.describe(backend_objects, threads, dtype), "peak_gemm": peaks,
            "settings": {"batch_sizes": list(batch_sizes), "modes": list(modes), "timing": timing,
                         "rounds": rounds, "optimizer": f"SGD(lr={LR})"},
            "contention": contention.summary(stretches), "columns": COLUMNS,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}


def _one_round(backend_objects, cases, networks, batch_sizes, modes, dtype, reference_names,
               threads, device, timing, peaks, bar):
    """Every case once: the mlp backends here, each reference in its own process. Yields
    results; GEMM peaks go into `peaks` (the highest seen)."""
    import mlp
    from mlp.bench import references

    def keep_peak(name, peak):
        if name not in peaks or peak["flops"] > peaks[name]["flops"]:
            peaks[name] = peak

    with thread_limit(threads):
        for backend in backend_objects:
            flops, size = peak_gemm_flops(backend, dtype, min_repeat_time=peak_repeat_time(timing))
            keep_peak(backend.name, {"flops": flops, "n": size})
        for backend in backend_objects:
            for mode in modes:
                step, sync, _ = backend_step(backend.name, PRIMER, 2, mode, dtype)
                step(), sync()
        for backend_name, network, batch, mode in cases:
            backend = mlp.get_backend(backend_name)
            footprint = memory.Peaks(None if backend.on_host else memory.cupy_device_peak())
            step, sync, model = backend_step(backend_name, network, batch, mode, dtype, footprint=footprint)
            time.sleep(SETTLE)  # the last case's BLAS threads asleep
            result = measure(step, sync, **timing, after_first_call=footprint.first_call_done)
            yield {"implementation": backend_name, "kind": "backend", "network": network.name,
                   "sizes": list(network.sizes), "mode": mode, "batch": batch, **result, **footprint.result()}
            del step, model
            bar.update(1)
    for name in reference_names:
        for network in networks:
            if not references.supports(name, network.activation, network.batch_norm):
                bar.update(1)
                continue  # (numpy-naive and JAX: no BatchNorm, relu and tanh only)
            for result in references.run_in_subprocess(name, network, batch_sizes, modes, dtype,
                                                       threads, device, timing):
                if "peak_gemm" in result:
                    keep_peak(result["framework"], result["peak_gemm"])
                    continue
                if "error" in result:
                    yield {"implementation": name, "kind": "reference", "network": network.name,
                           "error": result["error"]}
                    continue
                result.pop("framework")
                yield {"implementation": name, "kind": "reference", "sizes": list(network.sizes), **result}
            bar.update(1)


# Whose measured GEMM peak an implementation's share is of: its own library's (numpy-naive runs on
# NumPy's BLAS, torch's variants on torch's); JAX's peak is not measured, so it has no share.
PEAK_OF = {"numpy-naive": "numpy", "torch-compile": "torch-eager", "torch-cudagraph": "torch-eager"}


def _annotate(results, networks, peaks):
    """samples/s, FLOP/s, share of the GEMM peak, ratios to torch eager and to the best
    reference, each ratio with its interval over rounds (see COLUMNS)."""
    for r in results:
        if "error" in r:
            continue
        network = networks[r["network"]]
        r["samples_per_s"] = r["batch"] / r["seconds"]
        r["flops_per_s"] = network.flops(r["batch"], r["mode"]) / r["seconds"]
        peak = peaks.get(PEAK_OF.get(r["implementation"], r["implementation"]))
        r["fraction_of_peak"] = r["flops_per_s"] / peak["flops"] if peak else None
        r["above_peak"] = bool(peak) and r["fraction_of_peak"] > 1.0
    point = lambda r: (r["network"], r["mode"], r["batch"])  # noqa: E731
    refs = {}
    for r in results:
        if r["kind"] == "reference" and "error" not in r:
            refs.setdefault(point(r), {})[r["implementation"]] = r
    for r in results:
        if "error" in r:
            continue
        peers = refs.get(point(r), {})
        eager = peers.get("torch-eager")
        frameworks = {k: v for k, v in peers.items() if k != "numpy-naive"} or peers
        best = max(frameworks.values(), key=lambda p: p["samples_per_s"]) if frameworks else None
        r["best_reference"] = best["implementation"] if best else None
        for name, peer in (("torch_eager", eager), ("best_reference", best)):
            r[f"ratio_{name}"] = r["samples_per_s"] / peer["samples_per_s"] if peer else None
            r[f"ratio_{name}_interval"] = ratio_interval(r, peer) if peer else None


def ratio_interval(row, peer):
    """[low, high] of row's speed over peer's, round by round (round i of each was measured in
    the same stretch of the machine's time), each round's from its quartiles: the ratio as the
    most and least favourable readings of the same run give it. None if no round holds both."""
    peer_rounds = {p.get("round", i): p for i, p in enumerate(peer["rounds"])}
    pairs = [(m, peer_rounds[m.get("round", i)]) for i, m in enumerate(row["rounds"])
             if m.get("round", i) in peer_rounds]
    if not pairs:
        return None
    return [min(p["q1"] / m["q3"] for m, p in pairs), max(p["q3"] / m["q1"] for m, p in pairs)]


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(progress, total):
    if not progress:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="benchmark", unit="case")


# --- reports --------------------------------------------------------------------------------
def si(value) -> str:
    """A number with a k/M/G suffix, three significant digits."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


# What every column of the table, and every field of a result in the JSON, means.
COLUMNS = {
    "samples_per_s": "samples/s: batch / seconds, the median over repeats of the fastest round",
    "spread": "spread (IQR): samples/s at the third and first quartile of that round's repeats",
    "first_call_seconds": "first call: the first step of the first round (compilation, autotuning), "
                          "not in samples/s",
    "fraction_of_peak": "% GEMM peak: FLOP/s over the measured GEMM peak of the implementation's own library "
                        "(numpy-naive: NumPy's; torch.compile and CUDA graphs: torch's; JAX: not measured, '-'): "
                        "the best square product over sizes and repeats; a share above 100% is flagged, not hidden",
    "ratio_torch_eager": "x torch eager: samples/s over PyTorch eager's, with [low-high] from each round's "
                         "quartiles over all rounds",
    "ratio_best_reference": "x best ref: samples/s over the fastest framework reference (torch eager, "
                            "torch.compile, torch CUDA graphs, JAX jit; numpy-naive only when none of them ran), "
                            "named in best_reference, with [low-high] as above",
    "peak_memory_bytes": "peak memory: how far the process's resident memory rose above what it was just before "
                         "the model was built (data in place): the model, optimizer state, workspaces, what a step "
                         "allocates, and what compiling keeps (not what it uses on the way: the high-water mark is "
                         "reset after the first call); from the first round; '-' where the OS cannot tell (Linux "
                         "and glibc only)",
    "peak_device_memory_bytes": "device: the same for the GPU's used memory (total less free; pools and caching "
                                "allocators emptied before the model is built, never shrinking after)",
    "rounds": "per round (its index in round): seconds (median), q1, q3 per call",
}


def mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _ratio(value, interval, name=None) -> str:
    if not value:
        return "-"
    spread = f" [{interval[0]:.2f}-{interval[1]:.2f}]" if interval else ""
    return f"{value:.2f}{spread}" + (f" {name}" if name else "")


def _memory(row, device) -> str:
    host = mib(row.get("peak_memory_bytes"))
    return f"{host} / {mib(row.get('peak_device_memory_bytes'))}" if device else host


def table(report) -> str:
    """A markdown table: one row per implementation, network, mode and batch size, then what
    each column means and whether the machine was shared while it ran."""
    device = any(r.get("peak_device_memory_bytes") is not None for r in report["results"])
    lines = ["| network | mode | batch | implementation | samples/s | spread (IQR) | first call | "
             "% GEMM peak | x torch eager | x best ref | peak memory MiB" + (" (host / device)" if device else "")
             + " |", "|" + "---|" * 11]
    rows = [r for r in report["results"] if "error" not in r]
    rows.sort(key=lambda r: (r["network"], r["mode"], r["batch"], r["kind"], -r["samples_per_s"]))
    for r in rows:
        spread = f"{si(r['batch'] / r['q3'])}-{si(r['batch'] / r['q1'])}"
        peak = f"{100 * r['fraction_of_peak']:.1f}" if r.get("fraction_of_peak") else "-"
        if r.get("above_peak"):
            peak += " (above the measured peak)"
        eager = _ratio(r.get("ratio_torch_eager"), r.get("ratio_torch_eager_interval"))
        best = _ratio(r.get("ratio_best_reference"), r.get("ratio_best_reference_interval"), r.get("best_reference"))
        lines.append(f"| {r['network']} | {r['mode']} | {r['batch']} | {r['implementation']} | "
                     f"{si(r['samples_per_s'])} | {spread} | {r['first_call_seconds'] * 1e3:.1f} ms | {peak} | "
                     f"{eager} | {best} | {_memory(r, device)} |")
    for r in report["results"]:
        if "error" in r:
            lines.append(f"\n{r['implementation']} on {r['network']} failed: {r['error']}")
    peaks = ", ".join(f"{name} {si(p['flops'])}FLOP/s (n={p['n']})" for name, p in report["peak_gemm"].items())
    legend = "\n".join(f"- {text}" for text in report.get("columns", COLUMNS).values())
    notes = [f"Measured GEMM peak: {peaks}.", legend]
    warning = contention.warning(report["contention"]) if "contention" in report else None
    if warning:
        notes.insert(0, f"**{warning}**")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def plot(report, path):
    """Throughput against batch size, log-log, one line per implementation; one panel per
    network and mode. Needs matplotlib (the [plot] extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "error" not in r]
    panels = sorted({(r["network"], r["mode"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (network, mode) in zip(axes[0], panels):
        for name in sorted({r["implementation"] for r in rows}):
            points = sorted((r["batch"], r["samples_per_s"]) for r in rows
                            if (r["network"], r["mode"], r["implementation"]) == (network, mode, name))
            if points:
                style = "-o" if any(r["kind"] == "backend" and r["implementation"] == name for r in rows) else "--s"
                ax.plot(*zip(*points), style, label=name, markersize=4)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="samples/s",
               title=f"{network} - {'training step' if mode == 'train' else 'inference'}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['machine']['cpu']} ({report['machine']['cores']} cores)"
                 + (f", {report['machine']['gpu']}" if report["machine"]["gpu"] else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report, out_dir, stem="bench"):
    """JSON, markdown table and (if matplotlib is installed) PNG plot; returns their paths.
    `stem` is a file name: the files go into `out_dir` and nowhere else."""
    if not isinstance(stem, str) or not stem or stem in (".", "..") or os.path.basename(stem) != stem \
            or (os.altsep and os.altsep in stem):
        raise ValueError(f"the stem of the benchmark files must be a file name without folders; got {stem!r}")
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, f"{stem}.json"), "table": os.path.join(out_dir, f"{stem}.md")}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=1)
    with open(paths["table"], "w") as f:
        m = report["machine"]
        f.write(f"# {stem}\n\nMachine: {m['cpu']}, {m['cores']} cores"
                + (f", GPU {m['gpu']}" if m["gpu"] else "") + f"; {m['dtype']}, {m['threads']} threads; "
                f"{report['date']}.\nCommand: `{m['command']}`\n\n" + table(report))
    if not any("error" not in r for r in report["results"]):
        return paths  # every case failed: nothing to plot
    try:
        plot(report, os.path.join(out_dir, f"{stem}.png"))
        paths["plot"] = os.path.join(out_dir, f"{stem}.png")
    except ImportError:
        pass
    return paths
