"""The Numba-CUDA fused forward kernel, without a GPU: run by Numba's CUDA simulator (in a
subprocess, since NUMBA_ENABLE_CUDASIM must be set before numba is imported) against the
NumPy reference, and compiled to PTX for sm_80 and sm_90 and linked (nvJitLink) to check
registers, spills and shared memory."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import mlp
from mlp.kernels import cuda_fused, cuda_toolchain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [
    ((2, 64, 64, 1), "tanh", "identity", "float32"),
    ((5, 16, 9, 3), "relu", "softmax", "float64"),
    ((3, 40, 4), {"name": "elu", "alpha": 0.5}, "sigmoid", "float64"),
    ((7, 128, 2), {"name": "leaky_relu", "slope": 0.1}, "softplus", "float32"),
]

SIMULATED = textwrap.dedent("""
    import json, sys, threading
    import numpy as np
    import mlp
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support
    from mlp.kernels import cuda_fused
    from mlp.kernels.numba_cpu import load

    # The simulator's shared.array looks its block's array up by the calling line, then
    # creates it if missing, unlocked: two threads of a block can each create one, and a
    # kernel then reads an array its neighbours never wrote (once seen: error 0.30, tiny
    # net). The same lookup, under a lock.
    lock = threading.Lock()

    def shared_array(self, shape, dtype, alignment=None):
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        if not isinstance(dtype, np.dtype):
            dtype = numpy_support.as_dtype(dtype)
        with lock:
            if key not in self._allocations:
                self._allocations[key] = np.empty(shape, dtype)
            return self._allocations[key]

    kernelapi.FakeCUDAShared.array = shared_array
    results = []
    for sizes, activation, output, dtype in json.loads(sys.argv[1]):
        model = mlp.MLP(sizes, activation=activation, output=output, dtype=dtype, seed=3, backend="numpy")
        layers = cuda_fused.model_layers(model)
        kernel = load(cuda_fused.forward_source(layers, dtype)).forward
        rows = 19  # not a multiple of the tile: the last block is partly outside the batch
        X = np.random.default_rng(0).standard_normal((rows, sizes[0])).astype(dtype)
        out = np.full((rows, sizes[-1]), np.nan, dtype)
        blocks, threads = cuda_fused.launch_shape(layers, rows)
        kernel[blocks, threads](X, model.params, out, rows)
        results.append(float(np.abs(out - model.predict(X)).max()))
    print(json.dumps(results))
""")


def test_fused_forward_matches_the_reference_in_the_cuda_simulator(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", MLP_CACHE_DIR=str(tmp_path),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", SIMULATED, json.dumps(CASES)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    for (sizes, _, _, dtype), error in zip(CASES, errors):
        assert error < (2e-6 if dtype == "float32" else 1e-12), (sizes, error)


def test_the_simulator_does_not_make_the_cupy_backend_available(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", MLP_CACHE_DIR=str(tmp_path),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import numba.cuda, mlp.backends as b; print(numba.cuda.is_available(), 'cupy' in b.available())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    simulator_says, cupy_listed = done.stdout.split()
    assert simulator_says == "True" and cupy_listed == "False"


def test_eligibility_is_narrow_elementwise_networks():
    wide = cuda_fused.model_layers(mlp.MLP((784, 512, 10), backend="numpy"))
    narrow = cuda_fused.model_layers(mlp.MLP((2, 64, 64, 1), backend="numpy"))
    hidden_softmax = cuda_fused.model_layers(mlp.Sequential([mlp.Dense(2, 4, "softmax"), mlp.Dense(4, 1)],
                                                            backend="numpy"))
    with_dropout = cuda_fused.model_layers(mlp.MLP((2, 8, 1), dropout=0.5, backend="numpy"))
    assert cuda_fused.eligible(narrow) and not cuda_fused.eligible(wide)
    assert not cuda_fused.eligible(hidden_softmax) and with_dropout is None


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[0])))
def test_fused_forward_compiles_to_ptx_and_links_without_spills(cc, case, tmp_path, monkeypatch):
    pytest.importorskip("numba.cuda")
    try:
        cuda_toolchain._bindings("nvjitlink")
    except cuda_toolchain.ToolchainUnavailable as error:
        pytest.skip(str(error))
    from numba import cuda, float32, float64, int64

    from mlp.kernels.numba_cpu import load

    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path))
    sizes, activation, output, dtype = case
    model = mlp.MLP(sizes, activation=activation, output=output, dtype=dtype, backend="numpy")
    layers = cuda_fused.model_layers(model)
    kernel = load(cuda_fused.forward_source(layers, dtype)).forward
    real = {"float32": float32, "float64": float64}[dtype]
    signature = (real[:, ::1], real[::1], real[:, ::1], int64)
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
    _, log = cuda_toolchain.link_ptx(ptx, f"sm_{cc[0]}{cc[1]}")
    (resources,) = cuda_toolchain.parse_ptxas(log).values()
    assert resources.spill_stores == resources.spill_loads == 0, resources
    assert resources.shared <= 48 * 1024, resources
    assert resources.registers <= 64, resources


def test_without_a_measurement_the_backend_keeps_cublas(monkeypatch, tmp_path):
    monkeypatch.setattr(cuda_fused, "MEASURED_FILE", str(tmp_path / "none.json"))
    assert cuda_fused.measured_limit("NVIDIA H100 80GB HBM3") is None
    (tmp_path / "m.json").write_text(json.dumps({"NVIDIA H100 80GB HBM3": {"max_batch": 512}}))
    monkeypatch.setattr(cuda_fused, "MEASURED_FILE", str(tmp_path / "m.json"))
    assert cuda_fused.measured_limit("NVIDIA H100 80GB HBM3") == 512


def test_generated_source_is_plain_python_with_the_formulas_inline():
    source = cuda_fused.forward_source(cuda_fused.model_layers(mlp.MLP((2, 8, 1), activation="tanh",
                                                                      backend="numpy")), "float32")
    compile(source, "<generated>", "exec")
    assert "math.tanh" in source and "cuda.shared.array" in source
