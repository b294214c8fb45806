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
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Built-in datasets: {', '.join(DATASETS)}.")
    return DATASETS[name](**kwargs)
