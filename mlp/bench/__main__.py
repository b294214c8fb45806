"""`mlp bench` / `python -m mlp.bench`: the benchmark harness from the command line."""
from __future__ import annotations

import argparse
import sys


def _csv(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser):
    from mlp.bench import DEFAULT_BATCH_SIZES
    from mlp.bench.references import FRAMEWORKS

    parser.add_argument("--backends", type=_csv, default=None,
                        help="comma-separated backends (default: every available one)")
    parser.add_argument("--net", type=_csv, default=["tiny", "mnist"],
                        help="networks: tiny, mnist, wide (default: tiny,mnist)")
    parser.add_argument("--sizes", type=_csv, default=None, help="a custom network, e.g. 784,256,10")
    parser.add_argument("--batch-sizes", type=_csv, default=[str(b) for b in DEFAULT_BATCH_SIZES])
    parser.add_argument("--modes", type=_csv, default=["train", "infer"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--references", type=_csv, default=None,
                        help=f"any of {', '.join(FRAMEWORKS)}, or 'none' (default: those installed)")
    parser.add_argument("--threads", type=int, default=None, help="threads for every implementation")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per repeat, at least")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure everything this many times in turn and keep each case's fastest "
                             "round (a shared, noisy machine)")
    parser.add_argument("--device", default="cpu", help="device for the references: cpu or cuda")
    parser.add_argument("--out", default="bench-results", help="folder for JSON, table and plot")
    parser.add_argument("--stem", default="bench", help="file name stem of the outputs")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--scaling", default=None, metavar="RANKS",
                        help="data-parallel scaling instead: rank counts such as 1,2,4 (mpiexec jobs; "
                             "the first --net, --batch-sizes per rank or global, the first --backends)")


def run_from_args(args):
    if args.scaling:
        from mlp.bench import scaling

        return scaling.main(["--ranks", args.scaling, "--net", args.net[0], "--batch", args.batch_sizes[0],
                             "--backend", (args.backends or ["numpy"])[0], "--dtype", args.dtype,
                             "--out", args.out, "--stem", args.stem])
    import mlp.bench as bench
    from mlp.backends import available, get_backend
    from mlp.bench.networks import NETWORKS, custom

    backends = args.backends or available()
    for name in backends:
        get_backend(name)  # unknown or unavailable: a clear error before anything runs
    networks = []
    for name in args.net:
        if name not in NETWORKS:
            raise ValueError(f"unknown network {name!r}; standard networks: {', '.join(NETWORKS)} "
                             "(or --sizes 784,256,10)")
        networks.append(NETWORKS[name])
    if args.sizes:
        networks = [custom([int(s) for s in args.sizes])]
    batch_sizes = [int(b) for b in args.batch_sizes]
    references = [] if args.references == ["none"] else args.references
    report = bench.run(backends, networks, batch_sizes, args.modes, args.dtype, references,
                       args.threads, {"repeats": args.repeats, "min_repeat_time": args.min_time},
                       progress=not args.quiet, device=args.device, rounds=args.rounds)
    paths = bench.write(report, args.out, args.stem)
    print(bench.table(report))
    print("wrote " + ", ".join(paths.values()), file=sys.stderr)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mlp bench", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except (ValueError, ImportError, OSError) as error:
        print(f"mlp bench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
