"""Keep freed memory in the process (glibc only), so large temporaries are not faulted in anew
on every training step.

NumPy allocates each temporary with malloc. By default glibc serves blocks above 128 KiB with
mmap and gives freed memory back to the OS, so a 2 MiB activation array costs 512 page faults
every step. Raising the mmap and trim thresholds keeps that memory for reuse. Measured on the
2-core CI machine (tiny net, batch 8192, NumPy backend): ~450k -> ~820k samples/s; mnist at
8192: ~32k -> ~38k. The cost is that freed memory below the peak stays with the process, as
PyTorch's caching allocator also does. MLP_KEEP_FREED_MEMORY=0 turns this off.
"""
import ctypes
import sys

from mlp import config

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit
TRIM_THRESHOLD = 256 * 1024 * 1024

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process. True when they were set."""
    global _done
    if _done or not config.keep_freed_memory() or not sys.platform.startswith("linux"):
        return False
    _done = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
