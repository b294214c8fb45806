"""The classic single-layer models of the lectures: the perceptron with its update rule,
and a linear layer solved by least squares."""
from __future__ import annotations

import numpy as np

from mlp.activations import step
from mlp.validation import as_finite_array, number, positive_int


class Perceptron:
    """Rosenblatt's perceptron: y = step(x . w + b) with step(z) = 1 for z >= 0.
    Learning rule, for each misclassified sample: w += lr (d - y) x, b += lr (d - y).
    Converges when the classes are linearly separable (it cannot learn XOR)."""

    def __init__(self, n_in, lr=1.0):
        self.w = np.zeros(positive_int(n_in, "n_in"))
        self.b = 0.0
        self.lr = number(lr, "lr", low=0.0, low_open=True)
        self.errors_ = []

    def net_input(self, X):
        """x . w + b for each row of X: (n, n_in) -> (n,)."""
        return self._inputs(X) @ self.w + self.b

    def _inputs(self, X):
        X = as_finite_array(X, "X").astype(float)
        if X.ndim == 1 and X.size == self.w.size:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != self.w.size:
            raise ValueError(f"X must be (n, {self.w.size}): {self.w.size} features per sample; got shape {X.shape}")
        return X

    def predict(self, X):
        return step(self.net_input(X)).astype(int)

    def fit(self, X, d, epochs=100):
        """Sweep the data until an epoch makes no mistake (or `epochs` sweeps).
        `errors_` holds the number of mistakes of each epoch."""
        epochs = positive_int(epochs, "epochs")
        X = self._inputs(X)
        d = as_finite_array(d, "d").reshape(-1)
        if X.shape[0] != d.size:
            raise ValueError(f"X must be (n, {self.w.size}) and d (n,); got {X.shape} and {d.shape}")
        if not np.isin(d, (0, 1)).all():
            raise ValueError("perceptron targets must be 0 or 1")
        self.errors_ = []
        for _ in range(epochs):
            mistakes = 0
            for x, target in zip(X, d):
                error = target - step(x @ self.w + self.b)
                if error:
                    self.w += self.lr * error * x
                    self.b += self.lr * error
                    mistakes += 1
            self.errors_.append(mistakes)
            if mistakes == 0:
                break
        return self


def least_squares(X, D, bias=True):
    """The least-squares linear layer Y = X W^T + b, W = (X^T X)^-1 X^T D, solved stably
    (SVD via numpy.linalg.lstsq, never an explicit inverse; rank-deficient X is fine).

    X: (n, n_in), D: (n, n_out) or (n,). Returns (W: (n_out, n_in), b: (n_out,)), the pair
    `Dense.set_weights` takes."""
    X = as_finite_array(X, "X").astype(float)
    D = as_finite_array(D, "D").astype(float)
    D = D.reshape(len(D), -1)
    if X.ndim != 2 or X.shape[0] != D.shape[0]:
        raise ValueError(f"X must be (n, n_in) with as many rows as D; got {X.shape} and {D.shape}")
    design = np.hstack([X, np.ones((X.shape[0], 1))]) if bias else X
    solution = np.linalg.lstsq(design, D, rcond=None)[0]  # (n_in [+1], n_out)
    if not np.isfinite(solution).all():  # X tiny against D (a subnormal X: weights beyond float64)
        raise ValueError("the least-squares weights overflow float64: X is too small against D "
                         f"(largest |X| {np.abs(X).max():.3g}, largest |D| {np.abs(D).max():.3g}); scale X, "
                         "e.g. with mlp.StandardScaler")
    W = solution[:X.shape[1]].T
    b = solution[X.shape[1]] if bias else np.zeros(D.shape[1])
    return W, b
