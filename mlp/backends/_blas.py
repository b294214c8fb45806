"""NumPy's own BLAS, called for the one product NumPy has no spelling for: a GEMM that adds
into its output, C += alpha A^T B (cblas ?gemm with beta = 1).

Plain SGD folded into the weight gradient is that product: W -= lr dZ^T X in one pass, with
no gradient array written and read back (measured 1.6-2.5x over matmul + update at batch
8-32 on 784x512 and 512x512 layers, 1.05-1.2x from batch 512 up). It must be NumPy's BLAS:
a second library's thread pool (SciPy's) spins against NumPy's on a small machine (a step
measured 5x slower). dlsym through NumPy's extension module finds the symbols of the BLAS it
was linked with, whatever their naming: wheels carry scipy-openblas with 64-bit integers
(`scipy_cblas_sgemm64_`), other builds a plain `cblas_sgemm`.
"""
from __future__ import annotations

import ctypes

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
# (symbol prefix, suffix, integer type): the builds' spellings of cblas_?gemm
SPELLINGS = (("scipy_cblas_", "64_", ctypes.c_int64), ("cblas_", "64_", ctypes.c_int64),
             ("scipy_cblas_", "", ctypes.c_int), ("cblas_", "", ctypes.c_int))
REALS = {np.dtype(np.float32): ("s", ctypes.c_float), np.dtype(np.float64): ("d", ctypes.c_double)}


def _numpy_library():
    try:
        from numpy._core import _multiarray_umath as module
    except ImportError:  # NumPy 1.x
        from numpy.core import _multiarray_umath as module
    try:
        return ctypes.CDLL(module.__file__)
    except OSError:
        return None


def _find(dtype):
    letter, real = REALS[dtype]
    library = _numpy_library()
    if library is None:
        return None
    for prefix, suffix, integer in SPELLINGS:
        function = getattr(library, f"{prefix}{letter}gemm{suffix}", None)
        if function is not None:
            function.argtypes = [ctypes.c_int] * 3 + [integer] * 3 + [real, ctypes.c_void_p, integer,
                                                                       ctypes.c_void_p, integer, real,
                                                                       ctypes.c_void_p, integer]
            function.restype = None
            return function
    return None


_gemms: dict = {}


def gemm(dtype):
    """NumPy's BLAS ?gemm for float32 or float64 (a ctypes function), or None."""
    dtype = np.dtype(dtype)
    if dtype not in REALS:
        return None
    if dtype not in _gemms:
        _gemms[dtype] = _find(dtype)
    return _gemms[dtype]


def add_transposed_product(C, A, B, alpha) -> bool:
    """C += alpha A^T B in place. A: (k, m), B: (k, n), C: (m, n), one dtype, all C-contiguous.
    False (and nothing done) where NumPy's BLAS cannot be called for these arrays."""
    function = gemm(C.dtype)
    if (function is None or not (A.dtype == B.dtype == C.dtype)
            or not (A.flags.c_contiguous and B.flags.c_contiguous and C.flags.c_contiguous)):
        return False
    k, m = A.shape
    n = B.shape[1]
    if B.shape[0] != k or C.shape != (m, n):
        raise ValueError(f"shapes do not chain: A^T {A.shape[::-1]} B {B.shape} into C {C.shape}")
    function(ROW_MAJOR, TRANS, NO_TRANS, m, n, k, alpha, A.ctypes.data, m, B.ctypes.data, n, 1.0,
             C.ctypes.data, n)
    return True
