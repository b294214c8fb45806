"""Synthetic 2-D datasets for demos and tests, all generated from a seed.
Each returns X: (n, 2) float64 and y: (n,) integer labels."""
from __future__ import annotations

import numpy as np


def xor(n=None, noise=0.0, seed=None):
    """The four XOR points (n=None), or n noisy samples around them."""
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1, 0])
    if n is None:
        return corners.copy(), labels.copy()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, 4, size=n)
    return corners[pick] + rng.normal(0.0, noise, size=(n, 2)), labels[pick]


def spirals(n=200, noise=0.2, turns=1.5, seed=None):
    """Two interleaved spirals, n points each (class 0 and class 1)."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.0, 1.0, n)) * turns * 2 * np.pi
    arm = np.column_stack([t * np.cos(t), t * np.sin(t)]) / (turns * 2 * np.pi) * 5
    X = np.concatenate([arm, -arm]) + rng.normal(0.0, noise, size=(2 * n, 2))
    y = np.concatenate([np.zeros(n, int), np.ones(n, int)])
    return X, y


def circles(n=200, noise=0.05, factor=0.5, seed=None):
    """An inner circle (class 1, radius `factor`) inside an outer one (class 0), n points each."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0.0, 2 * np.pi, size=(2, n))
    outer = np.column_stack([np.cos(angles[0]), np.sin(angles[0])])
    inner = factor * np.column_stack([np.cos(angles[1]), np.sin(angles[1])])
    X = np.concatenate([outer, inner]) + rng.normal(0.0, noise, size=(2 * n, 2))
    return X, np.concatenate([np.zeros(n, int), np.ones(n, int)])


def moons(n=200, noise=0.1, seed=None):
    """Two interleaving half circles, n points each."""
    rng = np.random.default_rng(seed)
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


def read_idx(path) -> np.ndarray:
    """One IDX file (gzip or not): magic 0x0000TTDD (TT element type, DD dimensions), then DD
    big-endian uint32 sizes, then the data. Checked for magic number and size."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ValueError(f"cannot read IDX file {path}: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    dims = data[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path} holds {len(data)} bytes but its header {shape} needs {expected}: "
                         "the file is truncated or damaged")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


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
        raise ValueError(f"{images_path} and {labels_path} do not have MNIST's shapes: "
                         f"images {images.shape}, labels {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels in {folder!r}")
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
