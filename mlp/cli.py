"""The `mlp` command line: train, evaluate, predict, info (and bench, in mlp.bench).

A model trained here carries its preprocessing (input scaling, class labels, where its data
came from and how the test split was drawn), so evaluate and predict read data as train did.

Exit codes: 0 done; 2 a problem with the arguments, data, files or settings, said in one line
`mlp <command>: error: ...`; 1 a run that failed (training diverged, a rank failed), also in
one line; only a bug in mlp shows a traceback, and asks to be reported.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import numpy as np

from mlp import optimizers

FILE_DATASETS = ("mnist", "fashion-mnist")
CLASSIFICATION = ("cross_entropy", "binary_cross_entropy")
SPLITS = ("test", "train", "all")
MISSING_LABELS = ("", "nan", "na", "n/a", "null", "none")  # read as "no label", never as a class


# --- argument types ----------------------------------------------------------------------------
def positive_ints(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _number(convert, accept, expected):
    """An argument type: `convert(text)`, kept if `accept(value)`, else one line saying what was expected."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = _number(int, lambda value: value >= 1, "a positive integer")
non_negative_int = _number(int, lambda value: value >= 0, "an integer >= 0")
finite_float = _number(float, math.isfinite, "a finite number")
share = _number(float, lambda value: 0.0 < value < 1.0, "a share between 0 and 1 (exclusive)")  # NaN fails too
seconds = _number(float, lambda value: math.isfinite(value) and value > 0, "a number of seconds > 0")


# --- data -----------------------------------------------------------------------------------
def _read_npz(path):
    """(X, y or None) from an .npz holding X (and y)."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            if "X" not in f:
                raise ValueError(f"{path} must hold an array named 'X' (and 'y' for labels); it has {list(f.keys())}")
            return f["X"], f.get("y")
    except (zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from None
    except ValueError as error:
        if "allow_pickle" in str(error):  # never suggest unpickling a data file
            raise ValueError(f"{path} holds object arrays; X and y must be plain numeric "
                             "(or, for y, string) arrays") from None
        raise


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def _read_csv(path, n_features=None):
    """(X, y or None) from a CSV file: one sample per row, the class or target in the last
    column; a first row that is not numeric is a header. With `n_features`, a row of exactly
    that many columns has no label (data to predict)."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if rows and any(_number(cell) is None for cell in rows[0][:-1]):
        rows = rows[1:]  # a header
    if not rows:
        raise ValueError(f"{path} holds no data rows")
    width = len(rows[0])
    for number, row in enumerate(rows, 1):
        if len(row) != width:
            raise ValueError(f"{path}: data row {number} has {len(row)} columns but the first has {width}")
    labelled = n_features is None or width != n_features
    if labelled and width < 2:
        raise ValueError(f"{path} needs feature columns and a last column of labels; it has {width} column")
    table = np.array(rows, dtype=str)
    features = table[:, :-1] if labelled else table
    try:
        X = features.astype(np.float64)
    except ValueError:
        r, c = next((r, c) for r, row in enumerate(features) for c, cell in enumerate(row) if _number(cell) is None)
        raise ValueError(f"{path}: data row {r + 1}, column {c + 1} is {features[r, c]!r}, not a number") from None
    return X, (_csv_labels(table[:, -1], path) if labelled else None)


def _csv_labels(cells, path):
    """The label column as numbers when every label is one, else as strings."""
    cells = np.char.strip(cells)
    missing = np.isin(np.char.lower(cells), MISSING_LABELS)
    if missing.any():
        raise ValueError(f"{path}: data row {int(np.argmax(missing)) + 1} has no label ({str(cells[missing][0])!r} in "
                         "the last column): remove or fill in the rows without a label")
    numbers = [_number(cell) for cell in cells]
    return cells if any(n is None for n in numbers) else np.array(numbers)


def _checked_labels(y, source):
    """Labels without NaN; whole-number floats (1.0, 2.0 from a CSV) become integers, so
    the classes read 1 and 2."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise ValueError(f"the labels of {source} contain {y[bad][0]} (sample {int(np.argmax(bad.reshape(-1)))}): "
                             "remove or fill in those samples")
        if (y == np.round(y)).all() and (np.abs(y) < 2**53).all():
            y = y.astype(np.int64)
    elif y.dtype.kind not in "iubUS":
        raise ValueError(f"the labels of {source} must be numbers or strings; got an array of {y.dtype}")
    return y


def load_data(source, seed=None, data_dir=None, split="train", n_features=None):
    """(X, y) of a built-in dataset, mnist/fashion-mnist (IDX files in `data_dir`), an .npz
    (arrays X and y) or a .csv file (labels in the last column); y is None for a file without
    labels (only with `n_features`, for predict)."""
    from mlp import datasets

    if source in FILE_DATASETS:
        if not data_dir:
            raise ValueError(f"{source} reads the original IDX files: give their folder with --data-dir")
        try:
            X, y = datasets.mnist(data_dir, split)
        except EOFError as error:  # gzip's message names no file
            raise ValueError(f"a {split} IDX file in {data_dir!r} is truncated: {error}") from None
    elif source == "digits":
        X, y = datasets.digits()
    elif source == "xor":
        X, y = datasets.xor()
    elif source in datasets.DATASETS:
        X, y = datasets.load(source, seed=seed)
    elif source.endswith(".npz"):
        X, y = _read_npz(source)
    elif source.endswith(".csv"):
        X, y = _read_csv(source, n_features)
    else:
        raise ValueError(f"unknown data {source!r}: give a built-in dataset "
                         f"({', '.join(datasets.DATASETS)}, digits), mnist/fashion-mnist with --data-dir, "
                         "or a .npz/.csv file")
    if y is not None:
        y = _checked_labels(y, source)
        if len(y) != len(X):
            raise ValueError(f"{source} has {len(X)} samples in X but {len(y)} labels")
    return X, y


def _classes(y, loss, source):
    """The sorted class labels of a classification task, checked for `loss`."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ValueError(f"--loss {loss} needs one class label per sample; {source} has labels of shape "
                         f"{y.shape} (for one-hot rows, give their argmax)")
    classes = np.unique(y)
    needed = "2" if loss == "binary_cross_entropy" else "at least 2"
    if len(classes) < 2 or (loss == "binary_cross_entropy" and len(classes) != 2):
        raise ValueError(f"--loss {loss} needs {needed} classes; {source} has {len(classes)} "
                         f"({', '.join(map(str, classes[:10]))})")
    return classes


# --- train -----------------------------------------------------------------------------------
def _check_writable(path, option):
    """Before training: the folder of an output file exists, and the path is not a folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{option} {path!r} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path!r}: the folder {folder!r} is not writable")


def _check_resumed_data(path, record):
    """--resume continues one run: the checkpoint's data and split must be this run's (the
    model, optimizer, validation and dtype are checked by fit)."""
    import mlp

    saved = (mlp.checkpoint.load(path).header.get("preprocessing") or {}).get("data")
    if saved != record:
        def describe(r):
            if not isinstance(r, dict):
                return "data it does not record"
            return f"{r.get('source')} (seed {r.get('seed')}, test share {r.get('test')})"

        raise ValueError(f"--resume {path}: the checkpoint's run trained on {describe(saved)}; this run's data is "
                         f"{describe(record)}, or differs in content: give the same --data, --seed and --test")


def _check_plot(path):
    _check_writable(path, "--plot")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'mlp[plot]'") from None
    formats = Figure().canvas.get_supported_filetypes()
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in formats:
        raise ValueError(f"--plot {path!r}: give a file name ending in one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")


def _split(args):
    """(X_train, X_test, y_train, y_test, record of the data and its split)."""
    from mlp import train_test_split
    from mlp.preprocessing import fingerprint

    X, y = load_data(args.data, args.seed, args.data_dir, "train")
    if args.data in FILE_DATASETS:  # the dataset's own test files
        X_test, y_test = load_data(args.data, args.seed, args.data_dir, "test")
        return X, X_test, y, y_test, {"source": args.data}
    n_test = round(len(X) * args.test)
    if not 1 <= n_test < len(X):
        raise ValueError(f"--test {args.test} holds out {n_test} of {len(X)} samples; both the training "
                         "and the test part need at least one")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test=args.test, seed=args.seed)
    record = {"source": args.data, "seed": args.seed, "test": args.test, "n_samples": len(X),
              "sha256": fingerprint(X, y)}
    return X_train, X_test, y_train, y_test, record


def cmd_train(args):
    import mlp
    from mlp.preprocessing import Preprocessing

    for path, option in ((args.output, "--output"), (args.plot, "--plot"), (args.checkpoint, "--checkpoint")):
        if path:
            _check_writable(path, option)
    if args.plot:
        _check_plot(args.plot)
    X_train, X_test, y_train, y_test, record = _split(args)
    if args.resume:
        _check_resumed_data(args.resume, record)
    classification = args.loss in CLASSIFICATION
    classes = _classes(np.concatenate([y_train, y_test]), args.loss, args.data) if classification else None
    if classification:
        n_out = len(classes) if args.loss == "cross_entropy" else 1
    else:
        n_out = 1 if np.ndim(y_train) == 1 else np.shape(y_train)[1]
    sizes = [X_train.shape[1], *args.hidden, n_out]
    output = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(args.loss, "identity")
    model = mlp.MLP(sizes, activation=args.activation, output=output, backend=args.backend,
                    seed=args.seed, dropout=args.dropout, dtype=args.dtype)
    options = {"momentum": 0.9} if args.optimizer == "sgd" else {}  # SGD with momentum; the others as defined
    optimizer = optimizers.OPTIMIZERS[args.optimizer](lr=args.lr, **options)
    model.compile(loss=args.loss, optimizer=optimizer, l2=args.l2)
    # Scaling fitted on the training part only; classes from all labels (the task's classes).
    # The model applies both wherever data enters, here and after loading.
    model.preprocessing = Preprocessing.from_scaler(mlp.StandardScaler().fit(X_train), classes, record)
    distributed = mlp.distributed.requested(args.distributed or None)
    rank = mlp.distributed.get_world(model.backend).rank if distributed else 0
    if rank != 0:  # rank 0 speaks and writes for the job
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (for the rest of the process)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    say(f"training {'-'.join(map(str, sizes))} ({args.activation}, {output} output) on {args.data}: "
        f"{len(X_train)} train / {len(X_test)} test samples, backend {model.backend.name}, {model.dtype}")
    stopper = None
    if args.early_stopping:
        stopper = mlp.EarlyStopping(patience=args.early_stopping, monitor="val_loss" if args.validation else "loss")
    history = model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=args.validation, verbose=0 if args.quiet else 1, distributed=distributed,
                        early_stopping=stopper, checkpoint=args.checkpoint, resume=args.resume)
    result = model.evaluate(X_test, y_test)
    print("test " + " - ".join(f"{k} {v:.4f}" for k, v in result.items()))
    if args.output and rank == 0:  # saved before plotting: a failed plot must not lose the model
        model.save(args.output)
        say(f"saved the model to {args.output} (`mlp evaluate {args.output} --split test` scores the same "
            "test split)")
    if args.plot and rank == 0 and history.epoch:  # (no epoch finished before a Ctrl-C: nothing to plot)
        from mlp import plots

        plots.training_curves(history, args.plot, title=f"{args.data}: {'-'.join(map(str, sizes))}")
        say(f"wrote the training curves to {args.plot}")
    return 130 if history.interrupted else 0  # Ctrl-C: the partial model is scored and saved, as said


# --- evaluate and predict ------------------------------------------------------------------------
def _record(model):
    return model.preprocessing.data if model.preprocessing is not None and model.preprocessing.data else None


def _scored_data(args, model, labelled):
    """(X, y, description) of what evaluate/predict score: DATA (or the model's recorded
    training data) and --split of it."""
    from mlp import datasets, train_test_split
    from mlp.preprocessing import fingerprint

    record = _record(model)
    source = args.data or (record or {}).get("source")
    if source is None:
        raise ValueError(f"give the data to score: {args.model} does not record the data it was trained on")
    same_source = record is not None and record["source"] == source
    if source in FILE_DATASETS:
        split = args.split or "test"
        if split == "all":
            raise ValueError(f"{source} comes as a train and a test set: give --split train or --split test")
        X, y = load_data(source, None, args.data_dir, split, n_features=model.n_in)
        return X, y, f"{source} {split} set ({len(X)} samples)"
    split = args.split or "all"
    if split == "all":
        seed = args.seed if args.seed is not None else (record.get("seed") if same_source else None)
        seed = 0 if seed is None else seed  # what mlp train uses by default
        X, y = load_data(source, seed, args.data_dir, n_features=model.n_in)
        seeded = source in datasets.DATASETS and source != "xor"
        described = f"{source}{f' (seed {seed})' if seeded else ''}, all {len(X)} samples"
        if same_source and record.get("test") and record.get("n_samples") == len(X) and labelled:
            described += f" (the model trained on {len(X) - round(len(X) * record['test'])} of them: " \
                         "--split test scores the held-out part)"
        return X, y, described
    if not same_source or record.get("test") is None:
        trained = f"trained on {record['source']!r}" if record else "does not record its training data"
        raise ValueError(f"--split {split} redraws the split mlp train made, but {args.model} {trained}; "
                         f"score all of {source} with --split all")
    if args.seed is not None and args.seed != record["seed"]:
        raise ValueError(f"--split {split} uses the seed train recorded ({record['seed']}); leave out --seed")
    X, y = load_data(source, record["seed"], args.data_dir, n_features=model.n_in)
    if y is None or len(X) != record["n_samples"] or fingerprint(X, y) != record["sha256"]:
        raise ValueError(f"{source} is not the data {args.model} was trained on (it has changed: "
                         f"{len(X)} samples now, {record['n_samples']} then), so its split cannot be redrawn")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test=record["test"], seed=record["seed"])
    X, y = (X_test, y_test) if split == "test" else (X_train, y_train)
    return X, y, (f"{source}, held-out test split" if split == "test" else f"{source}, training split") + \
        f": {len(X)} of {record['n_samples']} samples (seed {record['seed']}, test share {record['test']})"


def cmd_evaluate(args):
    import mlp

    model = mlp.load(args.model, backend=args.backend)
    if model.loss is None:
        raise ValueError(f"{args.model} was saved before compile(): it has no loss to evaluate")
    X, y, described = _scored_data(args, model, labelled=True)
    if y is None:
        raise ValueError(f"{args.data} has no labels to evaluate against (a label column after the "
                         f"{model.n_in} features)")
    print(f"{described}: " + " - ".join(f"{k} {v:.4f}" for k, v in model.evaluate(X, y).items()))
    return 0


def _is_classifier(model):
    """Whether the model gives one class per sample (see Sequential.predict_classes)."""
    classes = model.preprocessing is not None and model.preprocessing.classes is not None
    output = model.dense_layers[-1].activation.name
    return classes or output == "softmax" or (output == "sigmoid" and model.n_out == 1)


def cmd_predict(args):
    import mlp

    model = mlp.load(args.model, backend=args.backend)
    X, _, described = _scored_data(args, model, labelled=False)
    print(f"predicting {described}", file=sys.stderr)
    if not _is_classifier(model):
        if args.proba:
            raise ValueError(f"--proba: {args.model} is not a classifier (its outputs are not class probabilities)")
        np.savetxt(sys.stdout, model.predict(X), fmt="%.6g", delimiter=",")
        return 0
    if not args.proba:
        sys.stdout.write("".join(f"{label}\n" for label in model.predict_classes(X).tolist()))
        return 0
    probabilities = model.predict(X).astype(np.float64)
    if probabilities.shape[1] == 1:  # one sigmoid unit: P(second class)
        probabilities = np.hstack([1.0 - probabilities, probabilities])
    classes = model.preprocessing.classes if model.preprocessing is not None and model.preprocessing.classes \
        else range(probabilities.shape[1])
    csv.writer(sys.stdout, lineterminator="\n").writerow([str(c) for c in classes])
    np.savetxt(sys.stdout, probabilities, fmt="%.6g", delimiter=",")
    return 0


# --- info ------------------------------------------------------------------------------------
def cuda_libraries() -> dict:
    """Where each CUDA library (driver, runtime, cuBLAS, NVRTC) is found: by the system's dynamic
    loader, else in NVIDIA's pip wheels (where CuPy and Numba-CUDA load them from), else None."""
    import ctypes.util
    import glob
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    wheel_dirs = [os.path.join(root, "*", "lib") for root in (spec.submodule_search_locations or [])] if spec else []
    found = {}
    for name, lib in (("driver", "cuda"), ("runtime", "cudart"), ("cuBLAS", "cublas"), ("NVRTC", "nvrtc")):
        system = ctypes.util.find_library(lib)
        wheel = sorted(f for d in wheel_dirs for f in glob.glob(os.path.join(d, f"lib{lib}.so*")))
        found[name] = system or (f"{os.path.basename(wheel[0])} (pip wheel)" if wheel else None)
    return found


def _default_backend_line():
    from mlp import config
    from mlp.errors import ConfigurationError

    try:
        name = config.backend_name()
    except ConfigurationError:
        return "  default backend: none, MLP_BACKEND is invalid (see below)"
    set_by = f"MLP_BACKEND={os.environ['MLP_BACKEND'].strip()}" if os.environ.get("MLP_BACKEND", "").strip() \
        else "MLP_BACKEND unset"
    return f"  default backend: {name} ({set_by})"


def cmd_kernels(args):
    """Write every kernel source a model (a saved file, or an architecture) compiles."""
    import mlp
    from mlp.kernels import dump

    if os.path.exists(args.model):
        model = mlp.load(args.model, backend="numpy")
    else:
        try:
            sizes = positive_ints(args.model)
        except argparse.ArgumentTypeError:
            sizes = []
        if len(sizes) < 2:
            raise ValueError(f"{args.model!r} is neither a model file nor an architecture such as 784,128,10")
        model = mlp.MLP(sizes, activation=args.activation, output=args.output, dtype=args.dtype, seed=0)
    if model.loss is None:
        model.compile(loss=args.loss, optimizer=args.optimizer)
    backends = ("numba", "cupy") if args.backend == "all" else (args.backend,)
    for kind, plan, source, suffix in dump.model_sources(model, args.batch, backends):
        print(dump.write(source, kind, plan, suffix, folder=args.out))
    return 0


def cmd_info(args):
    import importlib.util
    import platform

    import mlp
    from mlp import config
    from mlp.backends import _blas, names, unavailable_reason
    from mlp.bench import machine
    from mlp.errors import MLPError
    from mlp.kernels import cuda_toolchain

    print(f"mlp {mlp.__version__} on Python {platform.python_version()} ({platform.machine()}), "
          f"NumPy {np.__version__}")
    print(f"CPU: {machine.cpu_model()}, {os.cpu_count()} cores")
    for name in names():
        try:
            reason = unavailable_reason(name)
        except MLPError as error:  # a setting it reads is invalid
            reason = str(error)
        print(f"  backend {name:<8} {'available' if reason is None else 'unavailable: ' + reason}")
    print(_default_backend_line())
    for problem in config.problems():
        print(f"  INVALID SETTING: {problem}")
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


# --- parser and errors ---------------------------------------------------------------------------
class _ShowDefaults(argparse.HelpFormatter):
    """--help with each option's default, where it has one (None and False are no default)."""

    def _get_help_string(self, action):
        text = action.help or ""
        no_default = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if no_default or "%(default)" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


class Parser(argparse.ArgumentParser):
    """An argument error is one line (which command, what was wrong), not a usage dump; --help
    shows every option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _ShowDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = Parser(prog="mlp", description="Train and run multilayer perceptrons.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and report test metrics")
    train.add_argument("--data", default="spirals",
                       help="spirals, moons, circles, xor, digits, mnist, fashion-mnist, or a .npz/.csv file")
    train.add_argument("--data-dir", default=None, help="folder of the MNIST-format IDX files")
    train.add_argument("--validation", type=finite_float, default=0.0,
                       help="share of training data for validation")
    train.add_argument("--plot", default=None, help="write the training curves to this PNG")
    train.add_argument("--hidden", type=positive_ints, default=[64, 64], help="hidden sizes, e.g. 64,64")
    train.add_argument("--activation", default="tanh", help="hidden layers' activation")
    train.add_argument("--loss", default="cross_entropy",
                       choices=["cross_entropy", "binary_cross_entropy", "mse", "mae", "sse"],
                       help="classification (cross_entropy, binary_cross_entropy) or regression on the label values")
    train.add_argument("--optimizer", default="adam", choices=list(optimizers.OPTIMIZERS),
                       help="the update rule (sgd: with momentum 0.9)")
    train.add_argument("--lr", type=finite_float, default=0.01, help="learning rate")
    train.add_argument("--l2", type=finite_float, default=0.0, help="L2 penalty on the weights")
    train.add_argument("--dropout", type=finite_float, default=0.0, help="dropout rate after each hidden layer")
    train.add_argument("--epochs", type=positive_int, default=200, help="passes over the training data")
    train.add_argument("--batch-size", type=positive_int, default=32, help="samples per step")
    train.add_argument("--early-stopping", type=positive_int, default=None, metavar="PATIENCE",
                       help="stop after PATIENCE epochs without improvement of the validation loss (the "
                            "training loss without --validation) and keep the best epoch's weights")
    train.add_argument("--dtype", choices=["float32", "float64"], default=None,
                       help="float type of the model (default: MLP_DTYPE, else float32)")
    train.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="save the model and the whole training state here after every epoch")
    train.add_argument("--resume", default=None, metavar="PATH",
                       help="continue the run saved in this checkpoint (the same data and options; --epochs "
                            "counts from the start of that run)")
    train.add_argument("--quiet", action="store_true",
                       help="no progress or status lines, the test metrics only (warnings still show)")
    train.add_argument("--test", type=share, default=0.25, help="share of data held out for testing")
    train.add_argument("--backend", default=None, help="numpy, numba, cupy (default: MLP_BACKEND)")
    train.add_argument("--seed", type=non_negative_int, default=0,
                       help="seed of the data (built-in datasets), the split and the initial weights")
    train.add_argument("--output", "-o", default=None, help="save the trained model here (.npz)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over the ranks of mpiexec -n N (or MLP_DISTRIBUTED=1)")
    train.set_defaults(run=cmd_train)

    for name, run, text in (("evaluate", cmd_evaluate, "evaluate a saved model on data"),
                            ("predict", cmd_predict, "print a saved model's predicted classes (or outputs)")):
        command = sub.add_parser(name, help=text)
        command.add_argument("model", help="a model file saved by mlp train -o or model.save()")
        command.add_argument("data", nargs="?", default=None,
                             help="a built-in dataset, mnist/fashion-mnist, or a .npz/.csv file (default: the "
                                  "data the model was trained on, as recorded by mlp train)")
        command.add_argument("--split", choices=SPLITS, default=None,
                             help="test: the held-out part mlp train reported (the same seed and share); "
                                  "train: the rest; all: every sample (default; mnist: its test set)")
        command.add_argument("--backend", default=None, help="numpy, numba, cupy (default: MLP_BACKEND)")
        command.add_argument("--seed", type=non_negative_int, default=None,
                             help="seed of a built-in synthetic dataset (default: the one train used)")
        command.add_argument("--data-dir", default=None, help="folder of the MNIST-format IDX files")
        if name == "predict":
            command.add_argument("--proba", action="store_true",
                                 help="print class probabilities (a header row of class names, then one "
                                      "row per sample) instead of the predicted classes")
        command.set_defaults(run=run)

    from mlp.bench.__main__ import add_arguments, run_from_args

    bench = sub.add_parser("bench", help="throughput across batch sizes and backends, beside PyTorch")
    add_arguments(bench)
    bench.set_defaults(run=run_from_args)

    kernels = sub.add_parser("kernels", help="write the Numba and CUDA sources a model compiles, with their plans")
    kernels.add_argument("model", help="a saved model file, or an architecture such as 784,512,512,10")
    kernels.add_argument("--out", default="mlp-kernels", help="the folder to write them to")
    kernels.add_argument("--batch", type=positive_int, default=32, help="the batch size they are generated for")
    kernels.add_argument("--backend", choices=["all", "numba", "cupy"], default="all", help="whose sources")
    kernels.add_argument("--activation", default="relu", help="an architecture's hidden activation")
    kernels.add_argument("--output", default="softmax", help="an architecture's output activation")
    kernels.add_argument("--loss", default="cross_entropy", help="the loss (of a model saved without one too)")
    kernels.add_argument("--optimizer", default="adam", choices=list(optimizers.OPTIMIZERS), help="the update rule")
    kernels.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="the float type")
    kernels.set_defaults(run=cmd_kernels)

    info = sub.add_parser("info", help="backends available on this machine, and why not")
    info.set_defaults(run=cmd_info)
    return parser


def _one_line(error) -> str:
    text = " | ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    return text or type(error).__name__


def run_command(command, run, args) -> int:
    """Run one command with the CLI's error contract (see the module docstring)."""
    import subprocess
    import traceback

    from mlp.distributed import DistributedError
    from mlp.errors import DeviceMemoryError, MLPError, TrainingDivergedError

    failed_run = (TrainingDivergedError, DistributedError, DeviceMemoryError, MemoryError, RuntimeError,
                  subprocess.SubprocessError)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (mlp predict ... | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except failed_run as error:
        print(f"mlp {command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except (MLPError, ValueError, OSError, ImportError, EOFError) as error:
        print(f"mlp {command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        traceback.print_exc()
        print(f"mlp {command}: internal error ({type(error).__name__}): this is a bug in mlp. Please report it "
              "with the command line and the traceback above.", file=sys.stderr)
        return 1


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(args.command, args.run, args)


if __name__ == "__main__":
    sys.exit(main())
