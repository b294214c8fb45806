"""Numba CPU kernels: loading generated modules (cached on disk), and the few kernels that
need no generating."""
from __future__ import annotations

import functools
import hashlib
import os
import sys
import threading
import types

from numba import njit
from numba.core import config
from numba.core.compiler_lock import global_compiler_lock

from mlp.io import atomic_write
from mlp.kernels import dump
from mlp.kernels.cache import module_folder

_FLAGS = {"reassoc", "contract", "arcp", "nsz"}  # no nnan/ninf: NaN checks must survive
_jit = njit(cache=True, fastmath=_FLAGS, error_model="numpy", nogil=True)
_modules = {}
_loading = threading.RLock()  # reentrant: a step's module loads the products' module as it imports


def load(source: str, kind="module", plan=None):
    """Import generated source as a module from a file named by its hash, so Numba's
    cache=True finds the compiled code again in later processes. The file opens with a header
    saying what it was generated for (`kind`, `plan`: mlp.kernels.dump), and MLP_DUMP_KERNELS
    gets the same text."""
    text = dump.header(kind, plan, ".py") + source
    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
    module = _modules.get(digest)
    if module is not None:
        return module
    with _loading:  # threads of one process: one imports (and compiles) each module
        module = _modules.get(digest)
        if module is None:
            dump.write(text, kind, suffix=".py", headed=True)
            module = _import(text, digest)
        return module


def _import(source, digest):
    """Execute `source` as module mlp_generated_<digest>, from its file in the cache folder.
    The file is compared with `source` first and rewritten unless it holds exactly that (a
    damaged or planted file is never executed), and the code executed is `source` itself,
    compiled under the file's name (which Numba's disk cache keys on), not a second read of
    the file."""
    path = os.path.join(module_folder(), f"mlp_generated_{digest}.py")
    expected = source.encode()
    if _file_bytes(path, len(expected)) != expected:  # atomic: concurrent processes never see half a file
        atomic_write(path, lambda f: f.write(expected))
    name = f"mlp_generated_{digest}"
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    try:
        exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102  (our own generated code)
    except BaseException:
        del sys.modules[name]
        raise
    _modules[digest] = module
    return module


def _file_bytes(path, expected_size):
    """The file's content, or None if it is missing, unreadable or of another size."""
    try:
        with open(path, "rb") as f:
            return f.read(expected_size + 1)
    except OSError:
        return None


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
    pass calls (mlp.kernels.numba_products): compiled once per float type and
    array layout, not once per architecture."""
    from mlp.kernels.numba_products import product_source

    module = load(product_source(), "product")
    if not isinstance(module.product.compile, functools.partial):
        module.product.compile = functools.partial(_compile_slp_vectorized, module.product.compile)
    return module


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
