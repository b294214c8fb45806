"""Compiling GPU code without a GPU: NVRTC for CUDA C++ source, nvJitLink for PTX (what
Numba-CUDA emits), both from NVIDIA's wheels (`pip install "numba-cuda[cu13]"`). Each returns
the compiled binary and ptxas' report, parsed into registers, spills and shared memory per
kernel, so tests can hold kernels to "no spills" for sm_80 and sm_90.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


class ToolchainUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Resources:
    registers: int
    spill_stores: int
    spill_loads: int
    stack: int
    shared: int = 0


def _bindings(module):
    try:
        return __import__(f"cuda.bindings.{module}", fromlist=[module])
    except ImportError as error:
        raise ToolchainUnavailable(
            f"CUDA compilation needs NVIDIA's cuda-bindings and compiler wheels ({error}). "
            "Install them with: pip install 'numba-cuda[cu13]'") from None


def parse_ptxas(log: str) -> dict[str, Resources]:
    """{kernel: Resources} from ptxas' verbose report (-Xptxas -v / -verbose)."""
    found = {}
    blocks = re.split(r"Compiling entry function '([^']+)'", log)
    for name, text in zip(blocks[1::2], blocks[2::2]):
        registers = re.search(r"Used (\d+) registers", text)
        spills = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", text)
        shared = re.search(r"(\d+) bytes smem", text)
        if registers and spills:
            found[name] = Resources(int(registers.group(1)), int(spills.group(2)), int(spills.group(3)),
                                    int(spills.group(1)), int(shared.group(1)) if shared else 0)
    return found


def nvrtc_compile(source: str, arch: str = "sm_90", name: str = "mlp.cu") -> tuple[bytes, str]:
    """CUDA C++ -> (cubin for `arch`, ptxas report). Raises RuntimeError with the compiler's
    log when the source does not compile."""
    nvrtc = _bindings("nvrtc")
    _, program = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    try:
        options = [f"--gpu-architecture={arch}".encode(), b"-Xptxas", b"-v", b"--std=c++17"]
        (result,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        _, size = nvrtc.nvrtcGetProgramLogSize(program)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(program, log)
        log = log.decode(errors="replace").rstrip("\x00 ")
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC could not compile {name} for {arch}:\n{log}")
        _, size = nvrtc.nvrtcGetCUBINSize(program)
        cubin = b" " * size
        nvrtc.nvrtcGetCUBIN(program, cubin)
        return cubin, log
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def link_ptx(ptx: str, arch: str = "sm_90") -> tuple[bytes, str]:
    """PTX -> (cubin for `arch`, ptxas report), through nvJitLink."""
    nvjitlink = _bindings("nvjitlink")
    handle = nvjitlink.create(2, [f"-arch={arch}".encode(), b"-verbose"])
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
        nvjitlink.complete(handle)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
        return bytes(cubin), log.decode(errors="replace").rstrip("\x00")
    finally:
        nvjitlink.destroy(handle)
