"""The reference backend: NumPy on the CPU.

Only memory handling differs from the base class: the GEMM outputs (Z = X W^T + b and the
input delta dZ W) and the update's scratch go into buffers kept between steps and written
with `out=`, and freed temporaries stay in the process (mlp.backends._memory), so a step does
not fault its multi-megabyte arrays in anew each time. The activation formulas still return
new arrays, so a layer's output never aliases a reused buffer.
"""
import math

import numpy as np

from mlp.backends._base import Backend as _Base
from mlp.backends._memory import keep_freed_memory


class Backend(_Base):
    name = "numpy"

    def __init__(self):
        self._buffers = {}
        keep_freed_memory()

    SMALL = 1 << 16  # bytes: below this a fresh array is cheaper than the bookkeeping

    def buffer(self, owner, role, shape, dtype):
        """A reusable array for `owner`'s `role` (one per owner and role: the latest shape);
        a fresh one for small arrays."""
        if math.prod(shape) * np.dtype(dtype).itemsize < self.SMALL:
            return np.empty(shape, dtype)
        key = (id(owner), role)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self._buffers[key] = np.empty(shape, dtype)
        return buffer

    def linear(self, X, W, b):
        Z = np.matmul(X, W.T, out=self.buffer(W, "Z", (X.shape[0], W.shape[0]), X.dtype))
        Z += b
        return Z

    def input_delta(self, dZ, W):
        if W.shape[0] == 1:
            return dZ * W
        return np.matmul(dZ, W, out=self.buffer(W, "dX", (dZ.shape[0], W.shape[1]), dZ.dtype))

    def sgd_update(self, params, grads, velocity, lr, momentum, nesterov):
        if momentum == 0.0:
            step = np.multiply(grads, lr, out=self.buffer(params, "step", params.shape, params.dtype))
            params -= step
            return
        super().sgd_update(params, grads, velocity, lr, momentum, nesterov)
