"""The Numba backend's BatchNorm kernels (per-layer path), generated per activation from its one
definition: the formulas are mlp.batchnorm's (and Backend.batch_norm_* their NumPy reference),
here in as few passes over the batch as they allow: the column statistics in two, the forward
(normalise, scale and shift, activate) in one, the backward's column sums with the activation's
derivative in one, and the input delta in one."""
from __future__ import annotations

from mlp.kernels.formulas import HEADER, derivative_call, function_table, parameter_args
from mlp.kernels.numba_plan import layer_plan


def batchnorm_source(activation, dtype="float64") -> str:
    """`statistics(X, mean, var)`, `forward(X, mean, inv_std, gamma, beta, X_hat, [Z,] A)` (Z only
    where the derivative reads it: the pass writes what the backward pass reads, nothing more),
    `sums(<Z and/or A, as declared>, dA, X_hat, dZ, sum_dZ, sum_dZ_X_hat)` and
    `input_delta(dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat, rows, dX)`: X, Z, A, dA, dZ, dX
    (batch, n); the rest (n,); `rows` a scalar of the float type."""
    from mlp.activations import derivative_inputs

    layer = layer_plan(activation)
    inputs = ", ".join(derivative_inputs(layer.needs, "Z", "A"))
    derivative = derivative_call(layer, "Z[i, j]", "A[i, j]", "dA[i, j]")
    keep_z = layer.keeps_input
    kernels = f'''
@_jit
def statistics(X, mean, var):
    n, m = X.shape
    total = np.zeros(m, np.float64)  # float64 sums: a float32 running sum over many rows drifts
    for i in range(n):
        for j in range(m):
            total[j] += X[i, j]
    for j in range(m):
        mean[j] = total[j] / n
    total[:] = 0.0
    for i in range(n):
        for j in range(m):
            deviation = X[i, j] - mean[j]
            total[j] += deviation * deviation
    for j in range(m):
        var[j] = total[j] / n


@_jit
def forward(X, mean, inv_std, gamma, beta, X_hat, {"Z, " * keep_z}A):
    n, m = X.shape
    for i in range(n):
        for j in range(m):
            x_hat = (X[i, j] - mean[j]) * inv_std[j]
            X_hat[i, j] = x_hat
            z = x_hat * gamma[j] + beta[j]{"""
            Z[i, j] = z""" * keep_z}
            A[i, j] = f_{layer.activation}(z{parameter_args(layer)})


@_jit
def sums({inputs}, dA, X_hat, dZ, sum_dZ, sum_dZ_X_hat):
    n, m = dA.shape
    first = np.zeros(m, np.float64)  # float64 sums, as in statistics
    second = np.zeros(m, np.float64)
    for i in range(n):
        for j in range(m):
            dz = {derivative}
            dZ[i, j] = dz
            first[j] += dz
            second[j] += dz * X_hat[i, j]
    for j in range(m):
        sum_dZ[j] = first[j]
        sum_dZ_X_hat[j] = second[j]


@_jit
def input_delta(dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat, rows, dX):
    n, m = dZ.shape
    scale = gamma * inv_std / rows
    for i in range(n):
        for j in range(m):
            dX[i, j] = scale[j] * (rows * dZ[i, j] - sum_dZ[j] - X_hat[i, j] * sum_dZ_X_hat[j])
'''
    return "\n".join([HEADER, function_table([layer], None, dtype), kernels])
