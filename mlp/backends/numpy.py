"""The reference backend: NumPy on the CPU.

Only memory handling differs from the base class: the buffers the base class asks for (the
GEMM outputs Z = X W^T + b and dZ W, the update's scratch) are kept between steps, and freed
temporaries stay in the process (mlp.backends._memory), so a step does
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
        None (a fresh array) for small ones."""
        if math.prod(shape) * np.dtype(dtype).itemsize < self.SMALL:
            return None
        key = (id(owner), role)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self._buffers[key] = np.empty(shape, dtype)
        return buffer
