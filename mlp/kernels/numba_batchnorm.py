"""BatchNorm's passes over a batch for Numba, generated per activation from its one definition: the
formulas are mlp.batchnorm's (and Backend.batch_norm_* their NumPy reference), here in as few
passes over the batch as they allow: the column statistics in two, the forward (normalise, scale
and shift, activate) in one, the backward's column sums with the activation's derivative in one,
and the input delta in one.

Each pass is written once, through the block writer, on array names: the per-layer path's kernels
(`batchnorm_source`) and the whole compiled step (mlp.kernels.numba_codegen, where a layer's
product, its statistics and its activation share the workspace) print the same passes."""
from __future__ import annotations

from mlp.kernels.formulas import HEADER, derivative_call, function_table, parameter_args
from mlp.kernels.numba_plan import layer_plan
from mlp.kernels.writer import Source


def statistics_pass(src: Source, X, mean, var, n, m):
    """mean[j], var[j] (biased) of the n x m array X's columns, in two passes with float64 sums
    (a float32 running sum over many rows drifts); `column_total` a local."""
    src.line(f"column_total = np.zeros({m}, np.float64)")
    with src.loop("i", n), src.loop("j", m):
        src.line(f"column_total[j] += {X}[i, j]")
    with src.loop("j", m):
        src.line(f"{mean}[j] = column_total[j] / {n}")
    src.line("column_total[:] = 0.0")
    with src.loop("i", n), src.loop("j", m):
        src.line(f"deviation = {X}[i, j] - {mean}[j]")
        src.line("column_total[j] += deviation * deviation")
    with src.loop("j", m):
        src.line(f"{var}[j] = column_total[j] / {n}")


def forward_pass(src: Source, layer, X, mean, inv_std, gamma, beta, X_hat, Z, A, n, m):
    """X_hat = (X - mean) inv_std, Z = gamma X_hat + beta (stored only where the derivative of
    `layer`'s activation reads it: Z None otherwise), A = f(Z). A may be X (each element is read
    before it is written)."""
    with src.loop("i", n), src.loop("j", m):
        src.line(f"x_hat = ({X}[i, j] - {mean}[j]) * {inv_std}[j]")
        src.line(f"{X_hat}[i, j] = x_hat")
        src.line(f"z = x_hat * {gamma}[j] + {beta}[j]")
        if Z is not None:
            src.line(f"{Z}[i, j] = z")
        src.line(f"{A}[i, j] = f_{layer.activation}(z{parameter_args(layer)})")


def sums_pass(src: Source, layer, Z, A, dA, X_hat, dZ, sum_dZ, sum_dZ_X_hat, n, m):
    """dZ = f'(Z) dA (from what the derivative reads), sum_dZ and sum_dZ_X_hat its column sums
    and those of dZ X_hat, with float64 sums. dZ may be dA."""
    derivative = derivative_call(layer, f"{Z}[i, j]", f"{A}[i, j]", f"{dA}[i, j]")
    src.line(f"first = np.zeros({m}, np.float64)")
    src.line(f"second = np.zeros({m}, np.float64)")
    with src.loop("i", n), src.loop("j", m):
        src.line(f"dz = {derivative}")
        src.line(f"{dZ}[i, j] = dz")
        src.line("first[j] += dz")
        src.line(f"second[j] += dz * {X_hat}[i, j]")
    with src.loop("j", m):
        src.line(f"{sum_dZ}[j] = first[j]")
        src.line(f"{sum_dZ_X_hat}[j] = second[j]")


def input_delta_pass(src: Source, dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat, rows, dX, n, m):
    """dX = gamma inv_std / rows (rows dZ - sum_dZ - X_hat sum_dZ_X_hat). dX may be dZ."""
    src.line(f"scale = {gamma} * {inv_std} / {rows}")
    with src.loop("i", n), src.loop("j", m):
        src.line(f"{dX}[i, j] = scale[j] * ({rows} * {dZ}[i, j] - {sum_dZ}[j] - {X_hat}[i, j] * {sum_dZ_X_hat}[j])")


def batchnorm_source(activation, dtype="float64") -> str:
    """`statistics(X, mean, var)`, `forward(X, mean, inv_std, gamma, beta, X_hat, [Z,] A)` (Z only
    where the derivative reads it: the pass writes what the backward pass reads, nothing more),
    `sums(<Z and/or A, as declared>, dA, X_hat, dZ, sum_dZ, sum_dZ_X_hat)` and
    `input_delta(dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat, rows, dX)`: X, Z, A, dA, dZ, dX
    (batch, n); the rest (n,); `rows` a scalar of the float type."""
    from mlp.activations import derivative_inputs

    layer = layer_plan(activation)
    z = "Z" if layer.keeps_input else None
    src = Source("python")
    kernels = (
        ("statistics(X, mean, var)", lambda: statistics_pass(src, "X", "mean", "var", "n", "m")),
        (f"forward(X, mean, inv_std, gamma, beta, X_hat, {'Z, ' * layer.keeps_input}A)",
         lambda: forward_pass(src, layer, "X", "mean", "inv_std", "gamma", "beta", "X_hat", z, "A", "n", "m")),
        (f"sums({', '.join(derivative_inputs(layer.needs, 'Z', 'A'))}, dA, X_hat, dZ, sum_dZ, sum_dZ_X_hat)",
         lambda: sums_pass(src, layer, "Z", "A", "dA", "X_hat", "dZ", "sum_dZ", "sum_dZ_X_hat", "n", "m")),
        ("input_delta(dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat, rows, dX)",
         lambda: input_delta_pass(src, "dZ", "X_hat", "gamma", "inv_std", "sum_dZ", "sum_dZ_X_hat", "rows", "dX",
                                  "n", "m")),
    )
    for signature, body in kernels:
        src.extend(["", "", "@_jit"])
        with src.block(f"def {signature}"):
            src.line(f"n, m = {signature[signature.index('(') + 1:].split(',')[0]}.shape")
            body()
    return "\n".join([HEADER, function_table([layer], None, dtype), src.text()]) + "\n"
