"""The `mlp` command line: train, evaluate, predict, info (and bench, in mlp.bench).
Errors in arguments or data are one clear line, never a traceback."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def _ints(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


FILE_DATASETS = ("mnist", "fashion-mnist")


def _load_data(source, seed, data_dir=None, split="train"):
    """A built-in dataset name, mnist/fashion-mnist (IDX files in --data-dir), or an .npz
    (arrays X and y) / .csv (last column y) file."""
    from mlp import datasets

    if source in FILE_DATASETS:
        if not data_dir:
            raise ValueError(f"--data {source} reads the original IDX files: give their folder with --data-dir")
        return datasets.mnist(data_dir, split)
    if source == "digits":
        return datasets.digits()
    if source in datasets.DATASETS:
        return datasets.load(source, seed=seed) if source != "xor" else datasets.xor()
    if source.endswith(".npz"):
        with np.load(source, allow_pickle=False) as f:
            if "X" not in f or "y" not in f:
                raise ValueError(f"{source} must hold arrays named 'X' and 'y'; it has {list(f.keys())}")
            return f["X"], f["y"]
    if source.endswith(".csv"):
        table = np.loadtxt(source, delimiter=",", ndmin=2)
        return table[:, :-1], table[:, -1]
    raise ValueError(f"unknown data {source!r}: give a built-in dataset "
                     f"({', '.join(datasets.DATASETS)}, digits), mnist/fashion-mnist with --data-dir, "
                     "or a .npz/.csv file")


def cmd_train(args):
    import mlp

    X, y = _load_data(args.data, args.seed, args.data_dir, "train")
    if args.data in FILE_DATASETS:  # the dataset's own test split
        X_train, y_train = X, y
        X_test, y_test = _load_data(args.data, args.seed, args.data_dir, "test")
    else:
        X_train, X_test, y_train, y_test = mlp.train_test_split(X, y, test=args.test, seed=args.seed)
    classification = args.loss in ("cross_entropy", "binary_cross_entropy")
    if classification:  # any label values: encoded as 0..k-1
        classes, y_train = np.unique(np.asarray(y_train).reshape(-1), return_inverse=True)
        y_test = np.searchsorted(classes, np.asarray(y_test).reshape(-1))
    n_out = (len(classes) if args.loss == "cross_entropy" else 1) if classification else \
        (1 if np.ndim(y) == 1 else np.shape(y)[1])
    sizes = [X.shape[1], *args.hidden, n_out]
    output = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(args.loss, "identity")
    scaler = mlp.StandardScaler().fit(X_train)
    model = mlp.MLP(sizes, activation=args.activation, output=output, backend=args.backend,
                    seed=args.seed, dropout=args.dropout)
    optimizer = mlp.Adam(lr=args.lr) if args.optimizer == "adam" else mlp.SGD(lr=args.lr, momentum=0.9)
    model.compile(loss=args.loss, optimizer=optimizer, l2=args.l2)
    distributed = mlp.distributed.requested(args.distributed or None)
    rank = mlp.distributed.get_world(model.backend).rank if distributed else 0
    if rank != 0:  # rank 0 speaks and writes for the job
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (for the rest of the process)
    print(f"training {'-'.join(map(str, sizes))} ({args.activation}, {output} output) on "
          f"{args.data}: {len(X_train)} train / {len(X_test)} test samples, backend "
          f"{model.backend.name}", file=sys.stderr)
    history = model.fit(scaler.transform(X_train), y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=args.validation, verbose=1, distributed=distributed)
    result = model.evaluate(scaler.transform(X_test), y_test)
    print("test " + " - ".join(f"{k} {v:.4f}" for k, v in result.items()))
    if args.plot:
        from mlp import plots

        plots.training_curves(history, args.plot, title=f"{args.data}: {'-'.join(map(str, sizes))}")
        print(f"wrote the training curves to {args.plot}", file=sys.stderr)
    if args.output and rank == 0:
        model.save(args.output)
        print(f"saved the model to {args.output}", file=sys.stderr)
    return 0


def cmd_evaluate(args):
    import mlp

    model = mlp.load(args.model, backend=args.backend)
    if model.loss is None:
        raise ValueError(f"{args.model} was saved before compile(): it has no loss to evaluate")
    X, y = _load_data(args.data, args.seed, args.data_dir, "test")
    print(" - ".join(f"{k} {v:.4f}" for k, v in model.evaluate(X, y).items()))
    return 0


def cmd_predict(args):
    import mlp

    model = mlp.load(args.model, backend=args.backend)
    X, _ = _load_data(args.data, args.seed, args.data_dir, "test")
    np.savetxt(sys.stdout, model.predict(X), fmt="%.6g", delimiter=",")
    return 0


def cuda_libraries() -> dict:
    """Which CUDA libraries the dynamic loader can find (driver, runtime, cuBLAS, NVRTC)."""
    import ctypes.util

    return {name: ctypes.util.find_library(lib) for name, lib in
            (("driver", "cuda"), ("runtime", "cudart"), ("cuBLAS", "cublas"), ("NVRTC", "nvrtc"))}


def cmd_info(args):
    import importlib.util
    import platform

    import mlp
    from mlp.backends import _blas, names, unavailable_reason
    from mlp.bench import machine
    from mlp.kernels import cuda_toolchain

    print(f"mlp {mlp.__version__} on Python {platform.python_version()} ({platform.machine()}), "
          f"NumPy {np.__version__}")
    print(f"CPU: {machine.cpu_model()}, {os.cpu_count()} cores")
    for name in names():
        reason = unavailable_reason(name)
        print(f"  backend {name:<8} {'available' if reason is None else 'unavailable: ' + reason}")
    for lib in machine.blas():
        print("  BLAS: " + ", ".join(f"{k} {v}" for k, v in lib.items() if v is not None))
    gemm = _blas.gemm(np.float32)
    print("  plain SGD folded into the weight-gradient GEMM: "
          + (f"yes ({gemm.__name__} from NumPy's BLAS)" if gemm else "no (NumPy's BLAS exports no cblas_sgemm)"))
    found = cuda_libraries()
    print("  CUDA libraries: " + ", ".join(f"{k} {v or 'not found'}" for k, v in found.items()))
    tools = []
    for module in ("nvrtc", "nvjitlink"):
        try:
            cuda_toolchain._bindings(module)
            tools.append(f"{module} yes")
        except cuda_toolchain.ToolchainUnavailable:
            tools.append(f"{module} no (pip install 'numba-cuda[cu13]')")
    print("  GPU compilers without a GPU: " + ", ".join(tools))
    mpi = "mpi4py " + ("yes" if importlib.util.find_spec("mpi4py") else "no (pip install 'mlp[mpi]' mpich)")
    print(f"  distributed: {mpi}, mpiexec {mlp.distributed.mpiexec_path() or 'not found'}")
    versions = machine.versions()
    print("  packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return 0


class Parser(argparse.ArgumentParser):
    """An argument error is one line (which command, what was wrong), not a usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = Parser(prog="mlp", description="Train and run multilayer perceptrons.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and report test metrics")
    train.add_argument("--data", default="spirals",
                       help="spirals, moons, circles, xor, digits, mnist, fashion-mnist, or a .npz/.csv file")
    train.add_argument("--data-dir", default=None, help="folder of the MNIST-format IDX files")
    train.add_argument("--validation", type=float, default=0.0, help="share of training data for validation")
    train.add_argument("--plot", default=None, help="write the training curves to this PNG")
    train.add_argument("--hidden", type=_ints, default=[64, 64], help="hidden sizes, e.g. 64,64")
    train.add_argument("--activation", default="tanh")
    train.add_argument("--loss", default="cross_entropy",
                       choices=["cross_entropy", "binary_cross_entropy", "mse", "mae", "sse"])
    train.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    train.add_argument("--lr", type=float, default=0.01)
    train.add_argument("--l2", type=float, default=0.0)
    train.add_argument("--dropout", type=float, default=0.0)
    train.add_argument("--epochs", type=int, default=200)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--test", type=float, default=0.25, help="share of data held out for testing")
    train.add_argument("--backend", default=None, help="numpy, numba, cupy (default: MLP_BACKEND)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output", "-o", default=None, help="save the trained model here (.npz)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over the ranks of mpiexec -n N (or MLP_DISTRIBUTED=1)")
    train.set_defaults(run=cmd_train)

    for name, run, text in (("evaluate", cmd_evaluate, "evaluate a saved model on data"),
                            ("predict", cmd_predict, "print a saved model's outputs as CSV")):
        command = sub.add_parser(name, help=text)
        command.add_argument("model", help="a model file saved by mlp train -o or model.save()")
        command.add_argument("data", help="a built-in dataset, mnist/fashion-mnist, or a .npz/.csv file")
        command.add_argument("--backend", default=None)
        command.add_argument("--seed", type=int, default=0, help="seed of a built-in synthetic dataset")
        command.add_argument("--data-dir", default=None, help="folder of the MNIST-format IDX files")
        command.set_defaults(run=run)

    from mlp.bench.__main__ import add_arguments, run_from_args

    bench = sub.add_parser("bench", help="throughput across batch sizes and backends, beside PyTorch")
    add_arguments(bench)
    bench.set_defaults(run=run_from_args)

    info = sub.add_parser("info", help="backends available on this machine, and why not")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from mlp.errors import MLPError

    try:
        return args.run(args)
    except (MLPError, ValueError, OSError, RuntimeError, ImportError) as error:
        print(f"mlp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
