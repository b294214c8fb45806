"""Penalties on the weights and clipping of the gradient, each formula written once:
element-wise, so NumPy applies them to arrays, and the compiled steps print them
(mlp.kernels.translate) where they add a weight's penalty as its gradient is formed."""
import numpy as np


def penalty(w, l1, l2):
    """One weight's share of the loss: l2 w^2 + l1 |w| (biases are not penalised)."""
    return l2 * w * w + l1 * np.abs(w)


def penalty_gradient(w, l1, l2):
    return 2.0 * l2 * w + l1 * np.sign(w)


def clip_scale(norm, max_norm):
    """What clipping by global norm multiplies the gradient by: min(1, max_norm / (norm + 1e-6))."""
    return np.minimum(1.0, max_norm / (norm + 1e-6))
