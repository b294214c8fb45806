"""A stand-in for CuPy on the CPU, so the cupy backend's own code runs in CI without a GPU.

Arrays are NumPy arrays of a subclass (device arrays, apart from host ones); GEMMs and
reductions are NumPy's. `RawModule` takes the very CUDA source the backend generates, compiles
its host version (mlp.kernels.cuda_source.host_version) with g++, and launching a kernel runs
it over its grid on the CPU. What the stand-in cannot do is capture CUDA graphs: tests using
it run with graphs off, and tests/gpu covers graphs on a real device.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
import typing

import numpy as np

from mlp.kernels import cuda_source


class DeviceArray(np.ndarray):
    """An array 'on the device': a NumPy array with CuPy's `set`."""

    def set(self, host):
        self[...] = host


def _device(array):
    return np.asarray(array).view(DeviceArray)


def _on_device(function):
    """A NumPy function whose result is a device array."""
    def wrapped(*args, **kwargs):
        return _device(function(*args, **kwargs))
    return wrapped


class _Kernel:
    def __init__(self, library, name, real, signature):
        self.function = getattr(library, f"host_{name}")
        self.signature = signature
        self.real, self.name = real, name

    def __call__(self, grid, block, args):
        assert len(args) == len(self.signature), (self.name, len(args))
        converted = []
        for (ctype, pname), value in zip(self.signature, args):
            if ctype.endswith("*"):
                assert isinstance(value, DeviceArray), f"{self.name}: {pname} is not on the device"
                assert value.flags.c_contiguous, f"{self.name}: {pname} is not contiguous"
                converted.append(ctypes.c_void_p(value.ctypes.data))
            elif ctype == "T":
                assert isinstance(value, np.floating) and np.dtype(type(value)) == np.dtype(self.real), \
                    f"{self.name}: {pname} must be a {self.real} scalar, got {type(value)}"
                converted.append({"float32": ctypes.c_float, "float64": ctypes.c_double}[self.real](value))
            elif ctype == "long long":
                assert isinstance(value, np.int64), f"{self.name}: {pname} must be int64"
                converted.append(ctypes.c_longlong(int(value)))
            else:
                assert isinstance(value, np.int32), f"{self.name}: {pname} must be int32"
                converted.append(ctypes.c_int(int(value)))
        self.function(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), *converted)


class RawModule:
    _built: typing.ClassVar[dict] = {}  # source hash -> host library, for the whole session

    def __init__(self, code, options=()):
        real = "float32" if "typedef float T;" in code else "float64"
        key = hashlib.sha1(code.encode()).hexdigest()[:16]
        if key not in self._built:
            folder = tempfile.mkdtemp(prefix="mlp_cupy_on_cpu_")
            source, library = os.path.join(folder, "m.cpp"), os.path.join(folder, "m.so")
            with open(source, "w") as f:
                f.write(cuda_source.host_version(code))
            subprocess.run([shutil.which("g++"), "-O1", "-shared", "-fPIC", "-o", library, source], check=True)
            self._built[key] = ctypes.CDLL(library)
        self.library, self.real = self._built[key], real
        self.signatures = cuda_source.signatures(code)

    def get_function(self, name):
        assert name in self.signatures, name
        return _Kernel(self.library, name, self.real, self.signatures[name])


def make_module(devices=1) -> types.ModuleType:
    """A module object that the backend imports as `cupy`."""
    cupy = types.ModuleType("cupy")
    cupy.ndarray = DeviceArray
    cupy.RawModule = RawModule
    for name in ("zeros", "empty", "empty_like", "matmul", "asarray", "array", "ascontiguousarray"):
        setattr(cupy, name, _on_device(getattr(np, name)))
    for name in ("sum", "dot", "sqrt", "minimum", "abs", "sign", "multiply", "maximum", "exp", "log",
                 "tanh", "logaddexp", "expm1", "log1p", "heaviside", "float32", "float64"):
        setattr(cupy, name, getattr(np, name))
    cupy.copyto = np.copyto
    cupy.asnumpy = lambda a: np.asarray(a).view(np.ndarray).copy()
    cuda = types.SimpleNamespace()

    class CUDARuntimeError(RuntimeError):
        pass

    class OutOfMemoryError(MemoryError):
        pass

    stream = types.SimpleNamespace(synchronize=lambda: None, ptr=0)
    cuda.runtime = types.SimpleNamespace(
        getDeviceCount=lambda: devices, getDevice=lambda: 0, CUDARuntimeError=CUDARuntimeError,
        memGetInfo=lambda: (8 << 30, 16 << 30), getDeviceProperties=lambda i: {"name": b"CPU stand-in"})
    cuda.memory = types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError)
    cuda.Device = lambda i: types.SimpleNamespace(use=lambda: None, id=i)
    cuda.get_current_stream = lambda: stream
    cuda.using_allocator = lambda allocator: contextlib.nullcontext()
    cupy.cuda = cuda
    return cupy


@contextlib.contextmanager
def installed(devices=1):
    """Import mlp.backends.cupy against the stand-in and register it as the 'cupy' backend."""
    from mlp import backends

    saved = {name: sys.modules.get(name) for name in ("cupy", "mlp.backends.cupy")}
    saved_instance = backends._instances.pop("cupy", None)
    sys.modules["cupy"] = make_module(devices)
    sys.modules.pop("mlp.backends.cupy", None)
    try:
        backend = backends.get_backend("cupy")
        backend.graphs = False  # the stand-in cannot capture graphs
        yield backend
    finally:
        backends._instances.pop("cupy", None)
        if saved_instance is not None:
            backends._instances["cupy"] = saved_instance
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
