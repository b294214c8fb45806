"""Synthetic 2-D datasets for demos and tests, all generated from a seed.
Each returns X: (n, 2) float64 and y: (n,) integer labels."""
from __future__ import annotations

import numpy as np

from mlp.errors import DataFileError
from mlp.validation import generator, number, positive_int


def _generator(n, noise, seed) -> np.random.Generator:
    """The seeded generator of a synthetic set, once its size and noise are checked."""
    positive_int(n, "n")
    number(noise, "noise", low=0.0)
    return generator(seed)


def xor(n=None, noise=0.0, seed=None):
    """The four XOR points (n=None), or n noisy samples around them."""
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1, 0])
    if n is None:
        return corners.copy(), labels.copy()
    rng = _generator(n, noise, seed)
    pick = rng.integers(0, 4, size=n)
    return corners[pick] + rng.normal(0.0, noise, size=(n, 2)), labels[pick]


def spirals(n=200, noise=0.2, turns=1.5, seed=None):
    """Two interleaved spirals, n points each (class 0 and class 1)."""
    rng = _generator(n, noise, seed)
    turns = number(turns, "turns", low=0.0, low_open=True)
    t = np.sqrt(rng.uniform(0.0, 1.0, n)) * turns * 2 * np.pi
    arm = np.column_stack([t * np.cos(t), t * np.sin(t)]) / (turns * 2 * np.pi) * 5
    X = np.concatenate([arm, -arm]) + rng.normal(0.0, noise, size=(2 * n, 2))
    y = np.concatenate([np.zeros(n, int), np.ones(n, int)])
    return X, y


def circles(n=200, noise=0.05, factor=0.5, seed=None):
    """An inner circle (class 1, radius `factor`) inside an outer one (class 0), n points each."""
    rng = _generator(n, noise, seed)
    factor = number(factor, "factor", low=0.0, low_open=True)
    angles = rng.uniform(0.0, 2 * np.pi, size=(2, n))
    outer = np.column_stack([np.cos(angles[0]), np.sin(angles[0])])
    inner = factor * np.column_stack([np.cos(angles[1]), np.sin(angles[1])])
    X = np.concatenate([outer, inner]) + rng.normal(0.0, noise, size=(2 * n, 2))
    return X, np.concatenate([np.zeros(n, int), np.ones(n, int)])


def moons(n=200, noise=0.1, seed=None):
    """Two interleaving half circles, n points each."""
    rng = _generator(n, noise, seed)
    angles = rng.uniform(0.0, np.pi, size=(2, n))
    upper = np.column_stack([np.cos(angles[0]), np.sin(angles[0])])
    lower = np.column_stack([1 - np.cos(angles[1]), 0.5 - np.sin(angles[1])])
    X = np.concatenate([upper, lower]) + rng.normal(0.0, noise, size=(2 * n, 2))
    return X, np.concatenate([np.zeros(n, int), np.ones(n, int)])


DATASETS = {"xor": xor, "spirals": spirals, "circles": circles, "moons": moons}


def load(name, **kwargs):
    """A built-in synthetic dataset by name, or 'digits' (scikit-learn's 8x8 digits)."""
    if name == "digits":
        return digits()
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Built-in datasets: {', '.join(DATASETS)}, digits "
                         "(and mnist/fashion_mnist from local files).")
    return DATASETS[name](**kwargs)


# --- MNIST and Fashion-MNIST from local IDX files (nothing is downloaded) ---------------------

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


_GZIP_MAX_RATIO = 1032  # deflate's largest possible expansion (258-byte matches in ~2 bits)
_IDX_CHUNK = 2**22


def read_idx(path) -> np.ndarray:
    """One IDX file (gzip or not): magic 0x0000TTDD (TT element type, DD dimensions), then DD
    big-endian uint32 sizes, then the data.

    An untrusted file: the magic number and the sizes are read and checked first (sizes in
    Python integers: no overflow), the data's size is checked against the file's (or, gzipped,
    against the most its compressed size can expand to) before anything is allocated, and
    decompression stops at the declared size. A malformed, truncated or oversized file is a
    ValueError naming the file and what is wrong."""
    import gzip
    import math
    import os
    import zlib

    path = os.fspath(path)
    compressed = path.endswith(".gz")
    try:
        stored = os.path.getsize(path)
        with (gzip.open if compressed else open)(path, "rb") as f:
            dtype, shape, header = _idx_header(f, path)
            nbytes = math.prod(shape) * dtype.itemsize
            if not compressed and stored != header + nbytes:
                raise DataFileError(f"{path} holds {stored} bytes but its header {shape} needs {header + nbytes}: "
                                 "the file is truncated or damaged")
            if compressed and header + nbytes > _GZIP_MAX_RATIO * stored:
                raise DataFileError(f"{path} is a {stored}-byte gzip file but its header {shape} declares "
                                 f"{header + nbytes} bytes, more than gzip can hold in that size: the file is "
                                 "damaged")
            data = _read_idx_data(f, nbytes, path)
    except (OSError, EOFError, zlib.error) as error:
        kind = "truncated or damaged" if isinstance(error, (EOFError, zlib.error, gzip.BadGzipFile)) else "unreadable"
        raise DataFileError(f"cannot read IDX file {path}: it is {kind} ({error})") from None
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _idx_header(f, path):
    """(element dtype, shape, header bytes) from the first bytes of an IDX file."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_TYPES or magic[3] == 0:
        raise DataFileError(f"{path} is not an IDX file (bad magic number {magic.hex()!r})")
    dims = magic[3]
    sizes = f.read(4 * dims)
    if len(sizes) < 4 * dims:
        raise DataFileError(f"{path} is truncated: its header ends before its {dims} dimensions")
    shape = tuple(int.from_bytes(sizes[4 * i: 4 * i + 4], "big") for i in range(dims))
    return np.dtype(_IDX_TYPES[magic[2]]), shape, 4 + 4 * dims


def _read_idx_data(f, nbytes, path) -> bytearray:
    """Exactly `nbytes` more bytes of `f`, read in bounded chunks (a lying header never makes
    this hold more than the stream really has), then nothing."""
    data = bytearray()
    while len(data) < nbytes:
        chunk = f.read(min(_IDX_CHUNK, nbytes - len(data)))
        if not chunk:
            raise DataFileError(f"{path} is truncated: its header declares {nbytes} bytes of data but it holds "
                             f"{len(data)}")
        data += chunk
    if f.read(1):
        raise DataFileError(f"{path} holds more data than its header declares ({nbytes} bytes): it is damaged")
    return data


def _find(folder, name):
    import os

    for candidate in (name, name + ".gz", name.replace("-idx", ".idx"), name.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.exists(path):
            return path
    return None


def mnist(folder, split="train", flatten=True, normalize=True):
    """MNIST (or Fashion-MNIST: same files, same format) from `folder`, which must hold the
    original IDX files, gzip or not: train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte. Returns X: (n, 784) floats in [0, 1]
    (or (n, 28, 28) uint8 with flatten=False, normalize=False) and y: (n,) labels 0..9."""
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    images_name, labels_name = IDX_FILES[split]
    images_path, labels_path = _find(folder, images_name), _find(folder, labels_name)
    if images_path is None or labels_path is None:
        raise FileNotFoundError(
            f"MNIST-format files for the {split} split are not in {folder!r}: expected "
            f"{images_name}[.gz] and {labels_name}[.gz] (from the dataset's original site; "
            "nothing is downloaded)"
        )
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
        raise DataFileError(f"{images_path} and {labels_path} do not have MNIST's shapes: "
                         f"images {images.shape}, labels {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataFileError(f"{images.shape[0]} images but {labels.shape[0]} labels in {folder!r}")
    X = images.reshape(len(images), -1) if flatten else images
    if normalize:
        X = X.astype(np.float32) / 255.0
    return X, labels.astype(np.int64)


fashion_mnist = mnist  # the same files and format, other pictures


def digits():
    """The 8x8 handwritten digits that scikit-learn ships: X (1797, 64) in [0, 16], y 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits dataset comes with scikit-learn: pip install 'mlp[sklearn]'") from None
    data = load_digits()
    return data.data.astype(np.float64), data.target.astype(np.int64)
