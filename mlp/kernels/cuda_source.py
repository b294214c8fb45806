"""The CUDA C++ source of the CuPy backend's fused kernels, generated from the one Python
definition of each formula (mlp.kernels.translate). Plain Python: nothing here needs CuPy
or a GPU, so the source can be compiled (NVRTC) and its arithmetic run (a host C++ compiler,
through HOST_SHIM) on any machine.

One module per float type (`T`) and set of activations. Every kernel is `extern "C"`, takes
its sizes as arguments, and strides over the grid, so any launch shape covers the data:
- `forward_<act>`: Z = f(Z + b) in place (bias and activation in one pass);
- `backward_<act>`: dZ = f'(A) * dA, from the layer output A;
- `loss_<name>`: the per-element loss terms and dL/dA (scaled) in one pass;
- `sigmoid_binary_cross_entropy`, `softmax_cross_entropy`: output activation, loss terms
  from the logits and the output delta (A - Y) * scale in one pass;
- `softmax_rows`: softmax for inference;
- `sgd`, `momentum`, `adam_tick`, `adam`: the optimizer over the whole flat buffer, with the
  hyperparameters (and Adam's step count) in device memory, so a captured CUDA graph
  replays with the current learning rate and step;
- `dropout_mask`, `counter_tick`: counter-based random masks (seed and counter on the device).
"""
from __future__ import annotations

import re

from mlp import activations, losses
from mlp.kernels import rules
from mlp.kernels.translate import C_PRELUDE, c_number, to_c

C_TYPES = {"float32": "float", "float64": "double"}

# Device-resident hyperparameters (always double): the host writes them only when they change.
# Adam uses every slot; SGD only the first two, as (lr, momentum).
ADAM_HYPER = ("lr", "beta1", "beta2", "eps", "step", "step_size", "root_bias2")

# name -> parameters (C type, name); the kernels' single declaration, used for the CUDA
# source, the host launchers and the argument order callers follow.
SIGNATURES = {
    "loss": [("const T*", "A"), ("const T*", "Y"), ("T*", "dA"), ("T*", "term"),
             ("long long", "total"), ("T", "scale")],
    "sigmoid_binary_cross_entropy": [("const T*", "Z"), ("const T*", "Y"), ("T*", "A"), ("T*", "dZ"),
                                     ("T*", "term"), ("long long", "total"), ("T", "scale")],
    "softmax_cross_entropy": [("const T*", "Z"), ("const T*", "Y"), ("T*", "A"), ("T*", "dZ"),
                              ("T*", "row_loss"), ("long long", "rows"), ("long long", "cols"),
                              ("T", "scale")],
    "softmax_rows": [("const T*", "Z"), ("T*", "A"), ("long long", "rows"), ("long long", "cols")],
    "forward": [("T*", "Z"), ("const T*", "b"), ("long long", "n_out"), ("long long", "total")],
    "backward": [("const T*", "A"), ("const T*", "dA"), ("T*", "dZ"), ("long long", "total")],
    "sgd": [("T*", "p"), ("const T*", "g"), ("const double*", "hyper"), ("long long", "n")],
    "momentum": [("T*", "p"), ("const T*", "g"), ("T*", "v"), ("const double*", "hyper"),
                 ("long long", "n"), ("int", "nesterov")],
    "adam_tick": [("double*", "hyper")],
    "adam": [("T*", "p"), ("const T*", "g"), ("T*", "m"), ("T*", "v"), ("const double*", "hyper"),
             ("long long", "n")],
    "dropout_mask": [("T*", "mask"), ("const unsigned long long*", "state"), ("long long", "total"),
                     ("T", "keep")],
    "counter_tick": [("unsigned long long*", "state")],
}

_GRID_STRIDE = "for (long long {i} = blockIdx.x * (long long)blockDim.x + threadIdx.x; {i} < {n}; " \
               "{i} += (long long)gridDim.x * blockDim.x)"


def activation_key(activation) -> str:
    """A C identifier naming an activation with its parameters (leaky_relu_0p01)."""
    text = "_".join([activation.name] + [f"{v:g}" for _, v in sorted(activation.params.items())])
    return re.sub(r"[^0-9a-zA-Z_]", "p", text.replace("-", "m"))


def _kernel(name, kind, body):
    params = ", ".join(f"{ctype} {pname}" for ctype, pname in SIGNATURES[kind])
    return f'extern "C" __global__ void {name}({params}) {{\n{body}\n}}\n'


def _indent(text, depth=2):
    return "\n".join("    " * depth + line for line in text.splitlines())


def _activation_kernels(activation) -> str:
    key = activation_key(activation)
    params = {name: c_number(value) for name, value in activation.params.items()}
    forward = "T z = Z[i] + b[i % n_out];\n" + to_c(activation.forward, {"z": "z", **params}, ["Z[i]"])
    source = _kernel(f"forward_{key}", "forward",
                     f"    {_GRID_STRIDE.format(i='i', n='total')} {{\n{_indent(forward)}\n    }}")
    if activation.derivative is not None:
        backward = to_c(activation.derivative, {"a": "A[i]", "da": "dA[i]", **params}, ["dZ[i]"])
        source += _kernel(f"backward_{key}", "backward",
                          f"    {_GRID_STRIDE.format(i='i', n='total')} {{\n{_indent(backward)}\n    }}")
    return source


def _loss_kernel(loss) -> str:
    term = to_c(loss.term, {"a": "A[i]", "y": "Y[i]"}, ["term[i]"])
    gradient = to_c(loss.term_gradient, {"a": "A[i]", "y": "Y[i]"}, ["T gradient"])
    return _kernel(f"loss_{loss.name}", "loss",
                   f"    {_GRID_STRIDE.format(i='i', n='total')} {{\n{_indent(term)}\n{_indent(gradient)}\n"
                   "        dA[i] = gradient * scale;\n    }")


def _fixed_kernels() -> str:
    sigmoid = to_c(activations.sigmoid, {"z": "Z[i]"}, ["T a"])
    logit_term = to_c(losses.binary_cross_entropy_logit_term, {"z": "Z[i]", "y": "Y[i]"}, ["term[i]"])
    sgd = to_c(rules.sgd_step, {"p": "p[i]", "g": "g[i]", "lr": "lr"}, ["p[i]"])
    momentum = to_c(rules.momentum_step, {"p": "p[i]", "g": "g[i]", "v": "v[i]", "lr": "lr",
                                          "momentum": "mu", "nesterov": "nesterov"}, ["p[i]", "v[i]"])
    scales = to_c(rules.adam_scales, {"lr": "hyper[0]", "beta1": "hyper[1]", "beta2": "hyper[2]",
                                      "step": "hyper[4]"}, ["hyper[5]", "hyper[6]"], dtype="double")
    adam = to_c(rules.adam_step, {"p": "p[i]", "g": "g[i]", "m": "m[i]", "v": "v[i]",
                                  "step_size": "step_size", "beta1": "beta1", "beta2": "beta2",
                                  "root_bias2": "root_bias2", "eps": "eps"}, ["p[i]", "m[i]", "v[i]"])
    rows = _GRID_STRIDE.format(i="r", n="rows")
    return "".join([
        _kernel("sigmoid_binary_cross_entropy", "sigmoid_binary_cross_entropy",
                f"    {_GRID_STRIDE.format(i='i', n='total')} {{\n{_indent(sigmoid)}\n        A[i] = a;\n"
                f"        dZ[i] = (a - Y[i]) * scale;\n{_indent(logit_term)}\n    }}"),
        # Row-wise, one thread per row: the output layer is narrow (its classes). The loss
        # term is -sum_j y_j log_softmax(z)_j, from the logits, exact where A rounds to 0.
        _kernel("softmax_cross_entropy", "softmax_cross_entropy", f"""    {rows} {{
        const T* z = Z + r * cols;
        const T* y = Y + r * cols;
        T top = z[0];
        for (long long j = 1; j < cols; ++j) top = fmax(top, z[j]);
        T total = T(0);
        for (long long j = 0; j < cols; ++j) total += exp(z[j] - top);
        T log_total = log(total);
        T loss = T(0);
        for (long long j = 0; j < cols; ++j) {{
            T shifted = z[j] - top;
            T a = exp(shifted) / total;
            A[r * cols + j] = a;
            dZ[r * cols + j] = (a - y[j]) * scale;
            loss -= y[j] * (shifted - log_total);
        }}
        row_loss[r] = loss;
    }}"""),
        _kernel("softmax_rows", "softmax_rows", f"""    {rows} {{
        const T* z = Z + r * cols;
        T top = z[0];
        for (long long j = 1; j < cols; ++j) top = fmax(top, z[j]);
        T total = T(0);
        for (long long j = 0; j < cols; ++j) total += exp(z[j] - top);
        for (long long j = 0; j < cols; ++j) A[r * cols + j] = exp(z[j] - top) / total;
    }}"""),
        _kernel("sgd", "sgd", f"    const T lr = T(hyper[0]);\n    {_GRID_STRIDE.format(i='i', n='n')} {{\n"
                              f"{_indent(sgd)}\n    }}"),
        _kernel("momentum", "momentum",
                f"    const T lr = T(hyper[0]), mu = T(hyper[1]);\n    {_GRID_STRIDE.format(i='i', n='n')} {{\n"
                f"{_indent(momentum)}\n    }}"),
        # One thread counts the step and computes Adam's bias corrections for it; the update
        # kernel launched after it on the same stream reads them.
        _kernel("adam_tick", "adam_tick",
                f"    if (blockIdx.x == 0 && threadIdx.x == 0) {{\n        hyper[4] += 1.0;\n"
                f"{_indent(scales)}\n    }}"),
        _kernel("adam", "adam",
                "    const T beta1 = T(hyper[1]), beta2 = T(hyper[2]), eps = T(hyper[3]);\n"
                "    const T step_size = T(hyper[5]), root_bias2 = T(hyper[6]);\n"
                f"    {_GRID_STRIDE.format(i='i', n='n')} {{\n{_indent(adam)}\n    }}"),
        # Inverted dropout from a counter-based hash (splitmix64 of seed, counter, index): the
        # same mask for the same state on every device and in every replay of a graph.
        _kernel("dropout_mask", "dropout_mask",
                f"    {_GRID_STRIDE.format(i='i', n='total')} {{\n"
                "        unsigned long long x = state[0] ^ (state[1] * 0x9E3779B97F4A7C15ULL) ^ "
                "((unsigned long long)i * 0xD1B54A32D192ED03ULL);\n"
                "        x += 0x9E3779B97F4A7C15ULL;\n"
                "        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;\n"
                "        x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;\n"
                "        x ^= x >> 31;\n"
                "        T uniform = T((x >> 40) * (1.0 / 16777216.0));  // 24 bits: [0, 1)\n"
                "        mask[i] = uniform < keep ? T(1) / keep : T(0);\n    }"),
        _kernel("counter_tick", "counter_tick",
                "    if (blockIdx.x == 0 && threadIdx.x == 0) state[1] += 1ULL;"),
    ])


def module_source(dtype: str, activation_list=(), loss_list=()) -> str:
    """The CUDA C++ module for float type `dtype` ("float32"/"float64") with forward and
    backward kernels for each activation (element-wise ones) and loss kernels for each loss."""
    seen, parts = set(), [f"typedef {C_TYPES[dtype]} T;", C_PRELUDE, _fixed_kernels()]
    for activation in activation_list:
        key = activation_key(activation)
        if activation.elementwise and key not in seen:
            seen.add(key)
            parts.append(_activation_kernels(activation))
    for loss in loss_list:
        parts.append(_loss_kernel(loss))
    return "\n".join(parts)


def kernel_names(source: str) -> list[str]:
    return re.findall(r'extern "C" __global__ void (\w+)\(', source)


def kernel_kind(name: str) -> str:
    """The SIGNATURES entry a kernel name follows."""
    for prefix in ("forward_", "backward_", "loss_"):
        if name.startswith(prefix):
            return prefix.rstrip("_")
    return name


# Compiles the same module with a host C++ compiler: the CUDA built-ins become globals that
# a loop over blocks and threads sets, so every kernel runs, sequentially, on the CPU.
HOST_SHIM = r"""
#include <cmath>
#include <algorithm>
using namespace std;
struct mlp_dim3 { unsigned x, y, z; };
static mlp_dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
"""


def host_version(source: str) -> str:
    """A module's source made compilable by a host C++ compiler, plus, per kernel,
    `extern "C" void host_<name>(grid, block, args...)` running it over a grid on the CPU."""
    launchers = []
    for name in kernel_names(source):
        signature = SIGNATURES[kernel_kind(name)]
        params = ", ".join(f"{ctype} {pname}" for ctype, pname in signature)
        args = ", ".join(pname for _, pname in signature)
        launchers.append(
            f'extern "C" void host_{name}(unsigned grid, unsigned block, {params}) {{\n'
            "    gridDim.x = grid; blockDim.x = block;\n"
            "    for (unsigned mlp_b = 0; mlp_b < grid; ++mlp_b) for (unsigned mlp_t = 0; mlp_t < block; ++mlp_t) {\n"
            f"        blockIdx.x = mlp_b; threadIdx.x = mlp_t; {name}({args});\n    }}\n}}\n")
    return HOST_SHIM + source + "\n" + "\n".join(launchers)
