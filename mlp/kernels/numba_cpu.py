"""Numba CPU kernels: loading generated modules (cached on disk), and the few kernels that
need no generating."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import threading

from numba import njit
from numba.core import config
from numba.core.compiler_lock import global_compiler_lock

from mlp.io import atomic_write
from mlp.kernels import rules

_FLAGS = {"reassoc", "contract", "arcp", "nsz"}  # no nnan/ninf: NaN checks must survive
_jit = njit(cache=True, fastmath=_FLAGS, error_model="numpy", nogil=True)


def cache_dir() -> str:
    """Where generated kernels and their compiled code live (MLP_CACHE_DIR to move it)."""
    base = os.environ.get("MLP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mlp")
    return os.path.join(base, "numba")


_modules = {}
_loading = threading.RLock()  # reentrant: a step's module loads the products' module as it imports


def load(source: str):
    """Import generated source as a module from a file named by its hash, so Numba's
    cache=True finds the compiled code again in later processes."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    module = _modules.get(digest)
    if module is not None:
        return module
    with _loading:  # threads of one process: one imports (and compiles) each module
        return _modules.get(digest) or _import(source, digest)


def _import(source, digest):
    folder = cache_dir()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"mlp_generated_{digest}.py")
    if not os.path.exists(path):  # atomic: concurrent processes never import half a file
        atomic_write(path, lambda f: f.write(source.encode()))
    name = f"mlp_generated_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _modules[digest] = module
    return module


def _compile_slp_vectorized(compile, signature):
    """A dispatcher's `compile`, run with LLVM's SLP vectoriser, which Numba leaves off by
    default (numba#8852: miscompiled integer code in 2023). The register blocks of `product`
    are unrolled scalars that only SLP packs into vectors (2-3x on a 64x64 product); the
    conformance tests hold it to the NumPy reference. Numba reads the setting whenever it
    builds an optimisation pipeline: it is switched on under Numba's compiler lock, for this
    compilation only, and restored after."""
    with global_compiler_lock:
        saved, config.SLP_VECTORIZE = config.SLP_VECTORIZE, 1
        try:
            return compile(signature)
        finally:
            config.SLP_VECTORIZE = saved


def products():
    """The module of the register-blocked `product` that every generated step and forward
    pass calls (mlp.kernels.numba_codegen.product_source): compiled once per float type and
    array layout, not once per architecture."""
    from mlp.kernels.numba_codegen import product_source

    module = load(product_source())
    if not isinstance(module.product.compile, functools.partial):
        module.product.compile = functools.partial(_compile_slp_vectorized, module.product.compile)
    return module


# Adam's bias corrections, compiled (a scalar computation, in float64): the generated steps
# and flat updates call it (mlp.kernels.numba_codegen); the update rules themselves are
# compiled into each generated module, in its float type.
adam_scales = _jit(rules.adam_scales)


@_jit
def square_norm(values):
    total = 0.0
    for j in range(values.size):
        total += values[j] * values[j]
    return total


@_jit
def outer_rows(dZ, W, dX):
    """dX = dZ W for a one-unit layer, dZ: (batch, 1), W: (1, n_in): an outer product that
    NumPy's broadcast `dZ * W` writes at a quarter of this speed (8192 x 64: 598 vs 128 us)."""
    n, m = dX.shape
    for i in range(n):
        d = dZ[i, 0]
        for k in range(m):
            dX[i, k] = d * W[0, k]
