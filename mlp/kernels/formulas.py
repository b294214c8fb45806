"""Formulas (activations, losses, optimizer rules: plain element-wise Python) as module-level
compiled functions in generated Numba source."""
from __future__ import annotations

import inspect

from mlp.kernels.translate import to_python


def compiled(func, name, dtype, n_results=1) -> str:
    """Source defining `name`, a compiled scalar version of the formula `func` (returning
    `n_results` values), printed from its definition (mlp.kernels.translate): the generated
    module is then self-contained (its hash, which Numba's disk cache keys on, changes with
    the formula) and any formula in the translatable subset compiles, a user's own included.
    In float32 the formula is printed with float32 constants and arguments: Numba types a
    Python float as float64, and one float64 constant turns a whole float32 polynomial into
    float64 arithmetic (measured 2x on the rational tanh; Adam's update, with its 1.0 - beta,
    2.6x)."""
    params = list(inspect.signature(func).parameters)
    results = [f"result{i}" for i in range(n_results)]
    if dtype == "float32":
        body = to_python(func, {p: f"float32({p})" for p in params}, results, "float32")
    else:
        body = to_python(func, {p: p for p in params}, results)
    lines = ["@_jit", f"def {name}({', '.join(params)}):"]
    lines += [f"    {line}" for line in body.splitlines()] + [f"    return {', '.join(results)}"]
    return "\n".join(lines)


def to_real(names, dtype, indent="    ") -> list:
    """Statements taking scalars to the float type: in a float32 loop one float64 value turns
    the whole loop into float64 arithmetic."""
    return [f"{indent}{name} = float32({name})" for name in names] if dtype == "float32" else []
