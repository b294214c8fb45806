"""Weight initialisation (the lectures' Xavier/Glorot and He, plus LeCun and PyTorch's).

Each initialiser draws W: (n_out, n_in) in float64 on the host from a seeded NumPy
generator, so the same seed gives the same network on every backend and dtype. Biases start
at zero, except under `uniform_fan_in`, which draws them as PyTorch's nn.Linear does.

`uniform_fan_in` is the default of the ReLU family (mlp.activations): on scikit-learn's bundled
data sets its smaller weights (Var = 1 / (3 n_in), half of He's 2 / n_in is 6x larger) and its
spread biases train to the scores of PyTorch's and scikit-learn's MLPs, where He-normal with
zero biases fell short (benchmarks/defaults_vs_peers.py, README). He stays a name away
(init="he_normal"): the lectures' choice for deep ReLU stacks, whose signal it keeps at scale.
"""
from __future__ import annotations

import math

import numpy as np


def _normal(std):
    return lambda rng, n_in, n_out: rng.normal(0.0, std(n_in, n_out), size=(n_out, n_in))


def _uniform(limit):
    return lambda rng, n_in, n_out: rng.uniform(-limit(n_in, n_out), limit(n_in, n_out),
                                                size=(n_out, n_in))


INITIALIZERS = {
    # Xavier/Glorot: Var(W) = 2 / (n_in + n_out); for sigmoid and tanh.
    "xavier_normal": _normal(lambda i, o: math.sqrt(2.0 / (i + o))),
    "xavier_uniform": _uniform(lambda i, o: math.sqrt(6.0 / (i + o))),
    # He: Var(W) = 2 / n_in; for the ReLU family.
    "he_normal": _normal(lambda i, o: math.sqrt(2.0 / i)),
    "he_uniform": _uniform(lambda i, o: math.sqrt(6.0 / i)),
    # LeCun: Var(W) = 1 / n_in.
    "lecun_normal": _normal(lambda i, o: math.sqrt(1.0 / i)),
    "lecun_uniform": _uniform(lambda i, o: math.sqrt(3.0 / i)),
    # PyTorch's nn.Linear (kaiming_uniform with a = sqrt(5)): U(-1/sqrt(n_in), 1/sqrt(n_in)),
    # Var(W) = 1 / (3 n_in); biases drawn the same way (BIASES).
    "uniform_fan_in": _uniform(lambda i, o: 1.0 / math.sqrt(i)),
}

# initialisers that draw biases too (after the weights, from the same generator); the others start them at zero
BIASES = {
    "uniform_fan_in": lambda rng, n_in, n_out: rng.uniform(-1.0 / math.sqrt(n_in), 1.0 / math.sqrt(n_in), size=n_out),
}

ALIASES = {
    "xavier": "xavier_normal", "glorot": "xavier_normal", "glorot_normal": "xavier_normal",
    "glorot_uniform": "xavier_uniform", "he": "he_normal", "kaiming": "he_normal",
    "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform", "lecun": "lecun_normal",
    "pytorch": "uniform_fan_in", "torch": "uniform_fan_in",
}

def resolve(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"init must be the name of an initialiser ({', '.join(sorted(INITIALIZERS))}); "
                         f"got {name!r}")
    key = ALIASES.get(name.lower(), name.lower())
    if key == "zeros":
        raise ValueError(
            "init='zeros' is for biases only (biases start at zero, or uniform_fan_in's): zero weights make "
            "every unit of a layer identical, so they never learn different features. "
            f"Use one of: {', '.join(sorted(INITIALIZERS))}."
        )
    if key not in INITIALIZERS:
        raise ValueError(
            f"Unknown init {name!r}. Valid initialisers: {', '.join(sorted(INITIALIZERS))} "
            f"(aliases: {', '.join(sorted(ALIASES))})."
        )
    return key


def initial_weights(name: str, rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    return INITIALIZERS[resolve(name)](rng, n_in, n_out)


def initial_biases(name: str, rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    """b: (n_out,), drawn after the layer's weights; zeros for initialisers that do not draw them."""
    draw = BIASES.get(resolve(name))
    return np.zeros(n_out) if draw is None else draw(rng, n_in, n_out)
