"""The reference backend: NumPy on the CPU.

Two things differ from the base class:
- Memory: the buffers the base class asks for (the GEMM outputs Z = X W^T + b and dZ W, the
  update's scratch) are kept between steps, and freed temporaries stay in the process
  (mlp.backends._memory), so a step does not fault its multi-megabyte arrays in anew each
  time. The activation formulas still return new arrays, so a layer's output never aliases
  a reused buffer.
- Plain SGD is folded into the backward pass: a large layer's weights take their step in
  one GEMM that adds into W (mlp.backends._blas), where no gradient is written and read back.
"""
import math
import threading
import weakref

import numpy as np

from mlp.backends import _blas
from mlp.backends._base import Backend as _Base
from mlp.backends._memory import keep_freed_memory


class Backend(_Base):
    name = "numpy"

    def __init__(self):
        self._buffers = {}
        keep_freed_memory()

    SMALL = 1 << 16  # bytes: below this a fresh array is cheaper than the bookkeeping

    def buffer(self, owner, role, shape, dtype):
        """A reusable array for `owner`'s `role` (one per owner, role and thread: the latest
        shape; threads predicting with one model at once must not write into each other's);
        None (a fresh array) for small ones."""
        if math.prod(shape) * np.dtype(dtype).itemsize < self.SMALL:
            return None
        key = (id(owner), role, threading.get_ident())
        buffer = self._buffers.get(key)
        if buffer is None:  # a new owner (a layer's W, ...): its buffers go when it does, with its model
            weakref.finalize(owner, self._buffers.pop, key, None)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self._buffers[key] = np.empty(shape, dtype)
        return buffer

    # Inference through a layer with at least this many outputs per row of the batch computes
    # Z^T = W X^T: OpenBLAS then splits W's rows between its threads and packs the batch, not W.
    # Measured (2 cores, float32, mnist 784-512-512-10, per-layer inference, transposed against
    # not, one process): 2.3x at batch 8, 1.9x at 32, 1.7x at 128. Training keeps Z = X W^T:
    # its backward pass over the transposed layout measured 0.6x at 32.
    TRANSPOSE_FROM = 4

    def _transposes(self, X, W) -> bool:
        return X.shape[0] * self.TRANSPOSE_FROM <= W.shape[0]

    def dense_inference(self, X, W, b, activation):
        if not self._transposes(X, W):
            return self.dense_forward(X, W, b, activation)
        Z = np.matmul(W, X.T).T  # (batch, n_out), F-ordered: the next layer's product reads it as is
        Z += b
        return self.activate(Z, activation)

    # Fold from this many weights on: 784x512, 512x512 and 256x256 layers measured 1.03-3x
    # faster folded, 64x64 0.46-0.98x (the BLAS call's overhead; 128x128: 0.77-1.34x).
    FOLD_WEIGHTS = 1 << 16

    def folds_sgd(self, model):
        return (_blas.gemm(model.dtype) is not None
                and any(layer.n_in * layer.n_out >= self.FOLD_WEIGHTS for layer in model.dense_layers))

    def descend(self, dZ, X, W, dW, lr):
        if W.size < self.FOLD_WEIGHTS or not _blas.add_transposed_product(W, dZ, X, -lr):
            super().descend(dZ, X, W, dW, lr)
