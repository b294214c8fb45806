"""The CuPy backend's CUDA kernels, checked without a GPU.

- The very source CuPy loads is compiled by a host C++ compiler (CUDA built-ins become a loop
  over blocks and threads) and every kernel is run on the CPU against the NumPy reference
  formulas it was generated from: a typo in the translation cannot hide.
- The same source is compiled by NVRTC for sm_80 and sm_90 (float32 and float64), and ptxas'
  report must show no register spills.
"""
import shutil

import numpy as np
import pytest

from mlp import activations, losses, optimizers
from mlp.backends import get_backend
from mlp.kernels import cuda_source, cuda_toolchain
from tests import cupy_on_cpu

ACTIVATIONS = [activations.get(name) for name in activations.ACTIVATIONS if name != "softmax"] + [
    activations.get("leaky_relu", slope=0.2), activations.get("elu", alpha=0.5)]
LOSSES = [losses.LOSSES[name] for name in ("mse", "sse", "mae", "binary_cross_entropy", "cross_entropy")]
# every registered optimizer, with the settings that change its rule's path
OPTIMIZERS = [cls() for cls in optimizers.OPTIMIZERS.values()] + [
    optimizers.SGD(0.05, momentum=0.9), optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    optimizers.RMSprop(0.01, momentum=0.5, centered=True, weight_decay=0.1),
    optimizers.AdamW(0.01, weight_decay=0.1), optimizers.Adagrad(0.1, lr_decay=0.1, weight_decay=0.1)]
OPTIMIZER_PLANS = [optimizer.plan() for optimizer in OPTIMIZERS]
GRID, BLOCK = 3, 7  # 21 threads: every kernel's grid-stride loop goes round more than once
TOLERANCE = {"float64": 1e-12, "float32": 2e-6}


class HostKernels:
    """The module built for the CPU by the CuPy stand-in (tests/cupy_on_cpu.py); `run(name,
    *args)` launches a kernel over a small grid on numpy arrays and Python numbers, converted
    to the types its signature declares."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.source = cuda_source.module_source(dtype, ACTIVATIONS, LOSSES, OPTIMIZER_PLANS)
        self.module = cupy_on_cpu.RawModule(self.source)

    def run(self, name, *args):
        signature = cuda_source.signatures(self.source)[name]
        scalars = {"T": np.dtype(self.dtype).type, "long long": np.int64, "int": np.int32}
        converted = [value.view(cupy_on_cpu.DeviceArray) if ctype.endswith("*") else scalars[ctype](value)
                     for (ctype, _), value in zip(signature, args)]
        assert len(converted) == len(args), name
        self.module.get_function(name)((GRID,), (BLOCK,), converted)


@pytest.fixture(scope="module", params=["float64", "float32"])
def host(request):
    if shutil.which("g++") is None:
        pytest.skip("no host C++ compiler (g++) to run the CUDA kernels' source on the CPU")
    return HostKernels(request.param)


def close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: cuda_source.activation_key(a))
def test_forward_and_backward_kernels_match_the_formulas(host, activation):
    rng = np.random.default_rng(0)
    dtype = host.dtype
    Z = (rng.standard_normal((9, 5)) * 4).astype(dtype)
    Z[0, :3] = [0.0, -30.0, 30.0]
    b = rng.standard_normal(5).astype(dtype)
    key = cuda_source.activation_key(activation)
    out = Z.copy()
    host.run(f"forward_{key}", out, b, 5, out.size)
    close(out, activation.function(Z + b), dtype)
    kept = Z + b
    if activation.keeps_input:
        kept, out = Z.copy(), np.empty_like(Z)
        host.run(f"forward_keep_{key}", kept, b, out, 5, out.size)
        close(kept, Z + b, dtype)
        close(out, activation.function(Z + b), dtype)
    if activation.differentiable:
        dA = rng.standard_normal(Z.shape).astype(dtype)
        dZ = np.empty_like(dA)
        host.run(f"backward_{key}", *activations.derivative_inputs(activation.needs, kept, out), dA, dZ, dZ.size)
        close(dZ, activation.gradient(kept, out, dA), dtype)


@pytest.mark.parametrize("loss", LOSSES[:3], ids=lambda loss: loss.name)
def test_loss_kernels_give_terms_and_scaled_gradients(host, loss):
    rng = np.random.default_rng(1)
    A, Y = (rng.standard_normal((2, 6, 3)).astype(host.dtype))
    dA, term = np.empty_like(A), np.empty_like(A)
    scale = 1.0 / loss.normaliser(A.shape)
    host.run(f"loss_{loss.name}", A, Y, dA, term, A.size, scale)
    close(term.sum() * scale, loss.value(A, Y), host.dtype)
    close(dA, loss.gradient(A, Y), host.dtype)


def test_sigmoid_binary_cross_entropy_kernel(host):
    rng = np.random.default_rng(2)
    Z = (rng.standard_normal((8, 3)) * 6).astype(host.dtype)
    Y = (rng.random((8, 3)) > 0.5).astype(host.dtype)
    A, dZ, term = np.empty_like(Z), np.empty_like(Z), np.empty_like(Z)
    loss = losses.LOSSES["binary_cross_entropy"]
    scale = 1.0 / Z.size
    host.run("sigmoid_binary_cross_entropy", Z, Y, A, dZ, term, Z.size, scale)
    close(A, activations.sigmoid(Z), host.dtype)
    close(dZ, loss.output_delta(A, Y), host.dtype)
    close(term.sum() * scale, loss.value_from_logits(Z, Y), host.dtype)


def test_softmax_cross_entropy_and_softmax_rows_kernels(host):
    rng = np.random.default_rng(3)
    Z = (rng.standard_normal((25, 4)) * 5).astype(host.dtype)  # 25 rows > 21 threads
    Y = np.eye(4, dtype=host.dtype)[rng.integers(0, 4, 25)]
    A, dZ, row_loss = np.empty_like(Z), np.empty_like(Z), np.empty(25, host.dtype)
    loss = losses.LOSSES["cross_entropy"]
    host.run("softmax_cross_entropy", Z, Y, A, dZ, row_loss, 25, 4, 1.0 / 25)
    close(A, activations.softmax(Z), host.dtype)
    close(dZ, loss.output_delta(A, Y), host.dtype)
    close(row_loss.sum() / 25, loss.value_from_logits(Z, Y), host.dtype)
    inference = np.empty_like(Z)
    host.run("softmax_rows", Z, inference, 25, 4)
    close(inference, A, host.dtype)


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
def test_optimizer_kernels_follow_the_reference_for_several_steps(host, optimizer):
    rng = np.random.default_rng(4)
    dtype = host.dtype
    plan = optimizer.plan()
    reference = get_backend("numpy")
    p = rng.standard_normal(50).astype(dtype)
    optimizer.build(reference, p.copy())
    p_ref = p.copy()
    states = {name: np.zeros_like(p) + value for name, value in optimizer.arrays.items()}
    slots = cuda_source.device_scalars(plan)
    hyper = np.zeros(len(slots))
    hyper[:len(plan.hyperparameters)] = list(optimizer.values(plan).values())
    for step in range(1, 4):
        g = rng.standard_normal(50).astype(dtype)
        if plan.derive is not None:
            host.run(f"tick_{plan.name}", hyper)
        host.run(f"update_{plan.name}", p, g, *states.values(), hyper, p.size)
        optimizer.apply(p_ref, g)
        if plan.counts_steps:
            assert hyper[slots.index("t")] == step
        close(p, p_ref, dtype)
        for name, state in states.items():
            close(state, optimizer.arrays[name], dtype)


def test_dropout_mask_kernel_is_a_seeded_counter_based_bernoulli(host):
    dtype = host.dtype
    mask = np.empty(4000, dtype)
    state = np.array([1234, 0], dtype=np.uint64)
    host.run("dropout_mask", mask, state, mask.size, 0.75)
    real = np.dtype(dtype).type
    assert set(np.unique(mask).tolist()) == {0.0, float(real(1) / real(0.75))}
    assert abs((mask > 0).mean() - 0.75) < 0.03
    again = np.empty_like(mask)
    host.run("dropout_mask", again, state, mask.size, 0.75)
    np.testing.assert_array_equal(again, mask)  # same state, same mask
    host.run("counter_tick", state)
    assert state[1] == 1
    host.run("dropout_mask", again, state, mask.size, 0.75)
    assert (again != mask).mean() > 0.2  # the next draw differs


def test_translated_formulas_refuse_what_they_cannot_print():
    from mlp.kernels import translate

    def uses_where(z):
        return np.where(z > 0, z, 0)

    with pytest.raises(translate.UnsupportedFormula, match="where"):
        translate.to_c(uses_where, {"z": "z"}, ["out"])


# --- NVRTC: the source compiles for the GPUs we target, without spills ----------------------

def _nvrtc_or_skip():
    try:
        cuda_toolchain._bindings("nvrtc")
    except cuda_toolchain.ToolchainUnavailable as error:
        pytest.skip(str(error))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_kernels_compile_with_nvrtc_without_spills(arch, dtype):
    _nvrtc_or_skip()
    source = cuda_source.module_source(dtype, ACTIVATIONS, LOSSES)
    cubin, log = cuda_toolchain.nvrtc_compile(source, arch)
    assert cubin
    report = cuda_toolchain.parse_ptxas(log)
    assert set(report) == set(cuda_source.kernel_names(source))
    for name, resources in report.items():
        assert resources.spill_stores == resources.spill_loads == 0, (name, resources)
        assert resources.registers <= 64, (name, resources)


def test_nvrtc_reports_a_compile_error_with_its_log():
    _nvrtc_or_skip()
    with pytest.raises(RuntimeError, match="could not compile"):
        cuda_toolchain.nvrtc_compile('extern "C" __global__ void k() { undeclared = 1; }')


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.long)])
def test_batchnorm_kernels_compile_with_nvrtc_for_every_activation(dtype):
    """BatchNorm's kernels (cuda_source.batchnorm_source) for each registered activation after it:
    one NVRTC compile of them all (their arithmetic runs on the CPU stand-in's tests)."""
    _nvrtc_or_skip()
    names = [name for name, make in activations.ACTIVATIONS.items() if make().elementwise and make().differentiable]
    for name in names:
        source = cuda_source.batchnorm_source(dtype, activations.get(name))
        cubin, log = cuda_toolchain.nvrtc_compile(source, "sm_90")
        report = cuda_toolchain.parse_ptxas(log)
        assert cubin and set(report) == set(cuda_source.kernel_names(source)), name
        assert all(r.spill_stores == r.spill_loads == 0 for r in report.values()), (name, report)
