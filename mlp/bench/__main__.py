"""`mlp bench` / `python -m mlp.bench`: the benchmark harness from the command line.
Every option is checked as it is parsed: a bad value is one line and exit code 2, before
anything is measured or written."""
from __future__ import annotations

import argparse
import os
import sys

from mlp.bench import compare, contention
from mlp.cli import Parser, positive_int, positive_ints, run_command, seconds

MODES = ("train", "infer")


def _csv(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def _names(allowed, what, extra=()):
    """An argument type: comma-separated names, each one of `allowed` (or of `extra`)."""
    def parse(text):
        names = _csv(text)
        unknown = [name for name in names if name not in (*allowed, *extra)]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(map(repr, unknown or [text]))}; "
                                             f"choose from {', '.join((*allowed, *extra))}")
        return names
    return parse


def _sizes(text):
    sizes = positive_ints(text)
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(f"a network needs an input and an output size at least, e.g. 784,256,10; "
                                         f"got {text!r}")
    return sizes


def stem(text):
    """A file name without a folder: the outputs go into --out and nowhere else."""
    if not text or text in (".", "..") or any(sep and sep in text for sep in (os.sep, os.altsep, "/", "\\")) \
            or "\0" in text:
        raise argparse.ArgumentTypeError(f"--stem is a file name without folders (the files go into --out); "
                                         f"got {text!r}")
    return text


def add_arguments(parser):
    from mlp.bench import DEFAULT_BATCH_SIZES
    from mlp.bench.jobs import JOBS
    from mlp.bench.networks import NETWORKS
    from mlp.bench.references import FRAMEWORKS

    parser.add_argument("--backends", type=_csv, default=None,
                        help="comma-separated backends (default: every available one)")
    parser.add_argument("--net", type=_names(tuple(NETWORKS), "network"), default=["tiny", "mnist"],
                        help=f"networks: {', '.join(NETWORKS)} (default: tiny,mnist)")
    parser.add_argument("--sizes", type=_sizes, default=None, help="a custom network, e.g. 784,256,10")
    parser.add_argument("--activation", default=None,
                        help="the hidden layers' activation instead of each network's own (any registered one; "
                             "the references that lack it are left out)")
    parser.add_argument("--batch-sizes", type=positive_ints, default=list(DEFAULT_BATCH_SIZES),
                        help="comma-separated batch sizes")
    parser.add_argument("--modes", type=_names(MODES, "mode"), default=list(MODES), help="train, infer or both")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="float type of every implementation")
    parser.add_argument("--references", type=_names(FRAMEWORKS, "reference", ("none",)), default=None,
                        help=f"any of {', '.join(FRAMEWORKS)}, or 'none' (default: those installed)")
    parser.add_argument("--threads", type=positive_int, default=None, help="threads for every implementation")
    parser.add_argument("--repeats", type=positive_int, default=7,
                        help="timed repeats per case (the median is reported)")
    parser.add_argument("--min-time", type=seconds, default=0.05, help="seconds per repeat, at least")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="measure everything this many times in turn and keep each case's fastest "
                             "round (a shared, noisy machine)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for the references")
    parser.add_argument("--out", default="bench-results", help="folder for JSON, table and plot")
    parser.add_argument("--stem", type=stem, default="bench", help="file name stem of the outputs (no folders)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--compare", default=None, metavar="OLD.json",
                        help="an earlier run's JSON: print this run's ratio to it per cell, and which cells are "
                             "slower or faster beyond the noise both runs show (also written as STEM-compare.md)")
    parser.add_argument("--jobs", type=_names(tuple(JOBS), "job"), default=None,
                        help=f"time to result instead: whole jobs ({', '.join(JOBS)}), each in a fresh process, "
                             "cold and warm kernel cache, on --backends")
    parser.add_argument("--scaling", type=positive_ints, default=None, metavar="RANKS",
                        help="data-parallel scaling instead: rank counts such as 1,2,4 (mpiexec jobs; "
                             "the first --net, --batch-sizes per rank or global, the first --backends)")


def _check_out(folder):
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--out {folder!r} is a file; give a folder (it is created if missing)")


def run_from_args(args):
    _check_out(args.out)
    if args.compare and (args.jobs or args.scaling):
        raise ValueError("--compare compares throughput runs; it does not apply to --jobs or --scaling")
    earlier = compare.load(args.compare) if args.compare else None  # a bad file: said before measuring
    if args.scaling:
        from mlp.bench import scaling
        from mlp.distributed import mpiexec_path

        if mpiexec_path() is None:
            raise ValueError("--scaling launches mpiexec jobs, and there is no mpiexec: pip install mpich mpi4py")
        return scaling.main(["--ranks", ",".join(map(str, args.scaling)), "--net", args.net[0],
                             "--batch", str(args.batch_sizes[0]), "--backend", (args.backends or ["numpy"])[0],
                             "--dtype", args.dtype, "--out", args.out, "--stem", args.stem])
    import mlp.bench as bench
    from mlp.backends import available, get_backend
    from mlp.bench.networks import NETWORKS, custom

    backends = args.backends or available()
    for name in backends:
        get_backend(name)  # unknown or unavailable: a clear error before anything runs
    if args.jobs:
        return _time_to_result(args, backends)
    networks = [custom(args.sizes)] if args.sizes else [NETWORKS[name] for name in args.net]
    references = [] if args.references == ["none"] else args.references
    if args.activation:
        networks, references = _with_activation(networks, references, args.activation)
    report = bench.run(backends, networks, args.batch_sizes, args.modes, args.dtype, references,
                       args.threads, {"repeats": args.repeats, "min_repeat_time": args.min_time},
                       progress=not args.quiet, device=args.device, rounds=args.rounds)
    paths = bench.write(report, args.out, args.stem)
    print(bench.table(report))
    warning = contention.warning(report["contention"])
    if warning:
        print(warning, file=sys.stderr)
    if earlier is not None:
        comparison = compare.table(compare.compare(earlier, report), earlier, report)
        paths["compare"] = os.path.join(args.out, f"{args.stem}-compare.md")
        with open(paths["compare"], "w") as f:
            f.write(comparison)
        print(comparison)
    print("wrote " + ", ".join(paths.values()), file=sys.stderr)
    return 0


def _with_activation(networks, references, name):
    """The networks with `name` in their hidden layers (named net-activation), and the
    references that have it (said on stderr when some are left out)."""
    import dataclasses

    from mlp import activations
    from mlp.bench.references import supports

    activation = activations.get(name).name  # an unknown name: the registry's message
    networks = [dataclasses.replace(n, name=f"{n.name}-{activation}", activation=activation) for n in networks]
    kept = [reference for reference in (references or []) if supports(reference, activation)]
    if references is None:
        kept = None  # those installed; the harness leaves out those without the activation
    elif kept != references:
        print(f"left out for {activation}: {', '.join(sorted(set(references) - set(kept)))}", file=sys.stderr)
    return networks, kept


def _time_to_result(args, backends):
    import json
    import time

    from mlp.bench import jobs, machine

    sampler = contention.Sampler().start()
    results = jobs.run(args.jobs, backends, progress=None if args.quiet else print, threads=args.threads,
                       rounds=args.rounds)
    verdict = contention.summary([sampler.stop()])
    report = {"machine": machine.describe(threads=args.threads), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "contention": verdict, "jobs": results}
    warning = contention.warning(verdict)
    text = jobs.table(results) + (f"\n**{warning}**\n" if warning else "")
    os.makedirs(args.out, exist_ok=True)
    paths = [os.path.join(args.out, f"{args.stem}.{ext}") for ext in ("json", "md")]
    with open(paths[0], "w") as f:
        json.dump(report, f, indent=1)
    with open(paths[1], "w") as f:
        f.write(f"# {args.stem}\n\nMachine: {report['machine']['cpu']}, {report['machine']['cores']} cores; "
                f"{report['date']}.\nCommand: `{report['machine']['command']}`\n\n{text}")
    print(text)
    print("wrote " + ", ".join(paths), file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


def main(argv=None):
    parser = Parser(prog="mlp bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command("bench", run_from_args, args)


if __name__ == "__main__":
    sys.exit(main())
