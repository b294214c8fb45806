"""The standard benchmark networks and their synthetic data."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LR = 0.01  # SGD learning rate of every implementation in a benchmark


@dataclass(frozen=True)
class Network:
    name: str
    sizes: tuple
    activation: str
    output: str
    loss: str
    batch_norm: bool = False  # a BatchNorm between each hidden Dense layer (no bias) and its activation

    @property
    def n_weights(self) -> int:
        return sum(i * o + o for i, o in zip(self.sizes, self.sizes[1:]))

    @property
    def n_units(self) -> int:
        return sum(self.sizes[1:])

    def flops(self, batch: int, mode: str) -> float:
        """Multiply-adds x 2 of the GEMMs, plus ~10 element-wise operations per unit and sample
        (bias, activation, its derivative, the update amortised). Forward: one product per layer.
        Training adds the weight gradients of every layer and the deltas of all but the first:
        no implementation computes the gradient of the inputs (on mnist that is 60% of the
        weights, which counted as 6 per weight made steps read 112% of the GEMM peak)."""
        forward = 2 * batch * self.n_weights
        if mode != "train":
            return forward + 3 * batch * self.n_units
        first_layer = self.sizes[0] * self.sizes[1] + self.sizes[1]  # (biases counted as weights throughout)
        return 2 * forward + 2 * batch * (self.n_weights - first_layer) + 10 * batch * self.n_units

    def label(self):
        return f"{self.name} ({'-'.join(map(str, self.sizes))})"


NETWORKS = {
    "tiny": Network("tiny", (2, 64, 64, 1), "tanh", "sigmoid", "binary_cross_entropy"),
    "mnist": Network("mnist", (784, 512, 512, 10), "relu", "softmax", "cross_entropy"),
    "mnist-bn": Network("mnist-bn", (784, 512, 512, 10), "relu", "softmax", "cross_entropy", batch_norm=True),
    # the lectures' deep narrow network (digits-shaped): where BatchNorm's cost is the element-wise
    # passes, not the products, and the whole compiled step runs
    "deep": Network("deep", (64,) + (64,) * 10 + (10,), "sigmoid", "softmax", "cross_entropy"),
    "deep-bn": Network("deep-bn", (64,) + (64,) * 10 + (10,), "sigmoid", "softmax", "cross_entropy",
                       batch_norm=True),
    "wide": Network("wide", (1024, 4096, 4096, 1024), "relu", "identity", "mse"),
}

# Run once before any case is measured, by every implementation in its process: what a framework
# sets up on its first model (Numba and LLVM, autograd's engine, XLA's client) is then not counted
# in the first case's memory.
PRIMER = Network("primer", (2, 4, 1), "tanh", "sigmoid", "binary_cross_entropy")


def custom(sizes) -> Network:
    return Network("custom", tuple(sizes), "relu", "softmax" if sizes[-1] > 1 else "sigmoid",
                   "cross_entropy" if sizes[-1] > 1 else "binary_cross_entropy")


def synthetic_data(network: Network, batch: int, seed=0, dtype="float32"):
    """X: (batch, n_in) standard normal; Y: (batch, n_out) targets fitting the loss."""
    rng = np.random.default_rng(seed)
    n_in, n_out = network.sizes[0], network.sizes[-1]
    X = rng.standard_normal((batch, n_in)).astype(dtype)
    if network.loss == "cross_entropy":
        Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, batch)]
    elif network.loss == "binary_cross_entropy":
        Y = rng.integers(0, 2, (batch, n_out)).astype(dtype)
    else:
        Y = rng.standard_normal((batch, n_out)).astype(dtype)
    return X, Y
