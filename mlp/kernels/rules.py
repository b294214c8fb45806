"""The optimizer update rules for one element, as torch.optim.SGD and torch.optim.Adam apply
them: plain scalar Python, written once. Numba compiles them for the CPU (numba_cpu) and
mlp.kernels.translate prints them as CUDA C for the GPU kernels."""
import math


def sgd_step(p, g, lr):
    return p - lr * g


def momentum_step(p, g, v, lr, momentum, nesterov):
    """-> (p, v): v = momentum v + g; p -= lr (g + momentum v if nesterov else v)."""
    v = momentum * v + g
    return p - lr * (g + momentum * v if nesterov else v), v


def adam_scales(lr, beta1, beta2, step):
    """(lr / (1 - beta1^t), sqrt(1 - beta2^t)): Adam's bias corrections at step t."""
    return lr / (1.0 - beta1 ** step), math.sqrt(1.0 - beta2 ** step)


def adam_step(p, g, m, v, step_size, beta1, beta2, root_bias2, eps):
    """-> (p, m, v) with bias-corrected moments."""
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    return p - step_size * m / (math.sqrt(v) / root_bias2 + eps), m, v


