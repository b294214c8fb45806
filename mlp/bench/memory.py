"""Peak memory of a benchmark case: how far the process's resident memory (host) and the GPU's
used memory (device) rise above what they were just before the model was built, the data
already in place. The same measure for mlp's backends and for every reference, in their own
processes, so the figures stand side by side.

Host: Linux's high-water mark of resident memory (VmHWM in /proc/self/status), reset after the
first call so that compiling (Numba's LLVM, Inductor, XLA) is not counted, only what it keeps.
Memory freed earlier is handed back first (glibc's malloc_trim); otherwise a case could reuse
it without the resident size moving. Where either is missing (not Linux, not glibc) there is
no host figure: None, never a guess.

Device: the GPU's used memory (total less free, as the driver counts it) after the timed steps,
the memory pools emptied before the model was built. Pools and caching allocators (CuPy's,
torch's) do not shrink, so this is their peak, workspaces and CUDA graphs included. Other
processes on the same GPU would be counted too."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library, or no C library found)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _status_kib(field) -> int | None:
    try:
        with open(STATUS) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_high_water_mark() -> bool:
    """Set VmHWM to the current resident size (Linux >= 4.0); whether it could."""
    try:
        with open(CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def host_measurable() -> bool:
    """Whether this system gives a host figure (Linux's clear_refs and glibc's malloc_trim)."""
    return _malloc_trim() is not None and os.path.exists(CLEAR_REFS)


class HostPeak:
    """start() before the model is built, first_call_done() after its first call, then bytes()
    after the timed steps: the peak resident growth in between, or None where unmeasurable."""

    def __init__(self):
        self.base = None
        self.reset = False

    def start(self):
        trim = _malloc_trim()
        if trim is not None:
            trim(0)
        self.base = _status_kib("VmRSS") if trim is not None else None
        return self

    def first_call_done(self):
        trim = _malloc_trim()
        if trim is not None:
            trim(0)
        self.reset = _reset_high_water_mark()

    def bytes(self) -> int | None:
        peak = _status_kib("VmHWM")
        if self.base is None or not self.reset or peak is None:
            return None
        return max(0, peak - self.base) * 1024


class DevicePeak:
    """The same for a GPU: `used` returns the device's used bytes, `empty_pools` hands every
    pool's free blocks back to the driver (CuPy: the default pools; torch: empty_cache)."""

    def __init__(self, used, empty_pools):
        self.used, self.empty_pools, self.base = used, empty_pools, None

    def start(self):
        self.empty_pools()
        self.base = self.used()
        return self

    def first_call_done(self):
        pass  # the driver keeps no high-water mark: the pools' final size is their peak

    def bytes(self) -> int | None:
        return max(0, self.used() - self.base) if self.base is not None else None


def cupy_device_peak():
    import cupy

    def used():
        cupy.cuda.runtime.deviceSynchronize()
        free, total = cupy.cuda.runtime.memGetInfo()
        return total - free

    def empty_pools():
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()

    return DevicePeak(used, empty_pools)


def torch_device_peak():
    import torch

    def used():
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        return total - free

    return DevicePeak(used, torch.cuda.empty_cache)


class Peaks:
    """Host and (on a GPU) device peaks of one case, measured together."""

    def __init__(self, device=None):
        self.meters = {"peak_memory_bytes": HostPeak()}
        if device is not None:
            self.meters["peak_device_memory_bytes"] = device

    def start(self):
        gc.collect()  # the last case's model, cycles included, gone before the baseline
        for meter in self.meters.values():
            meter.start()
        return self

    def first_call_done(self):
        for meter in self.meters.values():
            meter.first_call_done()

    def result(self) -> dict:
        return {name: meter.bytes() for name, meter in self.meters.items()}
