"""The CUDA C++ source of the CuPy backend's fused kernels, generated from the one Python
definition of each formula (mlp.kernels.translate). Plain Python: nothing here needs CuPy
or a GPU, so the source can be compiled (NVRTC) and its arithmetic run (a host C++ compiler,
through HOST_SHIM) on any machine.

One module per float type (`T`) and set of activations. Every kernel is `extern "C"`, takes
its sizes as arguments, and strides over the grid, so any launch shape covers the data:
- `forward_<act>`: Z = f(Z + b) in place (bias and activation in one pass), and
  `forward_keep_<act>` keeping Z beside A where the derivative reads it;
- `backward_<act>`: dZ = f'(Z) * dA, from what the activation declares it reads (Z, A, both);
- `loss_<name>`: the per-element loss terms and dL/dA (scaled) in one pass;
- `sigmoid_binary_cross_entropy`, `softmax_cross_entropy`: output activation, loss terms
  from the logits and the output delta (A - Y) * scale in one pass;
- `softmax_rows`: softmax for inference;
- `update_<optimizer>` (and `tick_<optimizer>` where it counts steps): the optimizer's rule
  over the whole flat buffer, from its descriptor (mlp.optimizers), with the hyperparameters,
  step count and derived scalars in device memory (`device_scalars`), so a captured CUDA
  graph replays with the current learning rate and step;
- `dropout_mask`, `counter_tick`: counter-based random masks (seed and counter on the device).
"""
from __future__ import annotations

import re

from mlp import activations, losses
from mlp.kernels import rowwise
from mlp.kernels.translate import C_PRELUDE, bind, c_number, to_c
from mlp.kernels.writer import Source

C_TYPES = {"float32": "float", "float64": "double"}

# name -> parameters (C type, name) of the fixed kernels; the generated ones declare theirs
# in their source, which `signatures` reads back (for the host launchers and the tests).
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
    "forward_keep": [("T*", "Z"), ("const T*", "b"), ("T*", "A"), ("long long", "n_out"), ("long long", "total")],
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


def _kernel(name, kind, body, signature=None):
    params = ", ".join(f"{ctype} {pname}" for ctype, pname in (signature or SIGNATURES[kind]))
    return f'extern "C" __global__ void {name}({params}) {{\n{body}\n}}\n'


def _indent(text, depth=2):
    return "\n".join("    " * depth + line for line in text.splitlines())


def _activation_kernels(activation) -> str:
    """`forward_<key>`: Z = f(Z + b) in place; `forward_keep_<key>` (an activation whose
    derivative reads Z): Z += b and A = f(Z); `backward_<key>`: dZ = f'(Z) dA from Z, A or both,
    as the activation declares, bound to the derivative's arguments by position."""
    key = activation_key(activation)
    params = {name: c_number(value) for name, value in activation.params.items()}
    loop = _GRID_STRIDE.format(i="i", n="total")
    apply = bind(activation.forward, ["z"], params)
    forward = "T z = Z[i] + b[i % n_out];\n" + to_c(activation.forward, apply, ["Z[i]"])
    source = _kernel(f"forward_{key}", "forward", f"    {loop} {{\n{_indent(forward)}\n    }}")
    if activation.keeps_input:
        keep = "T z = Z[i] + b[i % n_out];\nZ[i] = z;\n" + to_c(activation.forward, apply, ["A[i]"])
        source += _kernel(f"forward_keep_{key}", "forward_keep", f"    {loop} {{\n{_indent(keep)}\n    }}")
    if activation.derivative is not None:
        inputs = activations.derivative_inputs(activation.needs, "Z", "A")
        backward = to_c(activation.derivative,
                        bind(activation.derivative, [f"{name}[i]" for name in inputs] + ["dA[i]"], params), ["dZ[i]"])
        signature = [("const T*", name) for name in inputs] + [("const T*", "dA"), ("T*", "dZ"), ("long long", "total")]
        source += _kernel(f"backward_{key}", None, f"    {loop} {{\n{_indent(backward)}\n    }}", signature)
    return source


def batchnorm_source(dtype: str, activation) -> str:
    """The CuPy backend's BatchNorm kernels for one activation, from mlp.batchnorm's formulas
    (Backend.batch_norm_* is their reference): `bn_statistics` and `bn_sums_<key>` take one
    feature (column) per thread over the rows, with double sums; `bn_forward_<key>` (normalise,
    scale and shift, activate) and `bn_input_delta` one element per thread."""
    key = activation_key(activation)
    params = {name: c_number(value) for name, value in activation.params.items()}
    columns = _GRID_STRIDE.format(i="j", n="cols")
    elements = _GRID_STRIDE.format(i="i", n="rows * cols")
    statistics = (f"    {columns} {{\n"
                  "        double total = 0.0;\n"
                  "        for (long long r = 0; r < rows; ++r) total += X[r * cols + j];\n"
                  "        double mu = total / rows, squares = 0.0;\n"
                  "        for (long long r = 0; r < rows; ++r) {\n"
                  "            double d = X[r * cols + j] - mu;\n            squares += d * d;\n        }\n"
                  "        mean[j] = (T)mu;\n        var[j] = (T)(squares / rows);\n    }")
    activate = to_c(activation.forward, bind(activation.forward, ["z"], params), ["A[i]"])
    forward = ("long long j = i % cols;\nT x_hat = (X[i] - mean[j]) * inv_std[j];\nX_hat[i] = x_hat;\n"
               "T z = x_hat * gamma[j] + beta[j];\nZ[i] = z;\n" + activate)
    inputs = activations.derivative_inputs(activation.needs, "Z", "A")
    derivative = to_c(activation.derivative, bind(activation.derivative, [f"{name}[k]" for name in inputs] + ["dA[k]"],
                                                  params), ["dZ[k]"])
    sums = (f"    {columns} {{\n        double first = 0.0, second = 0.0;\n"
            "        for (long long r = 0; r < rows; ++r) {\n            long long k = r * cols + j;\n"
            f"{_indent(derivative, 3)}\n            first += dZ[k];\n            second += dZ[k] * X_hat[k];\n"
            "        }\n        sum_dZ[j] = (T)first;\n        sum_dZ_X_hat[j] = (T)second;\n    }")
    delta = ("long long j = i % cols;\n"
             "dX[i] = gamma[j] * inv_std[j] / rows_t * (rows_t * dZ[i] - sum_dZ[j] - X_hat[i] * sum_dZ_X_hat[j]);")
    sizes = [("long long", "rows"), ("long long", "cols")]
    return "\n".join([
        f"typedef {C_TYPES[dtype]} T;", C_PRELUDE,
        _kernel("bn_statistics", None, statistics, [("const T*", "X"), ("T*", "mean"), ("T*", "var"), *sizes]),
        _kernel(f"bn_forward_{key}", None, f"    {elements} {{\n{_indent(forward)}\n    }}",
                [("const T*", "X"), ("const T*", "mean"), ("const T*", "inv_std"), ("const T*", "gamma"),
                 ("const T*", "beta"), ("T*", "X_hat"), ("T*", "Z"), ("T*", "A"), *sizes]),
        _kernel(f"bn_sums_{key}", None, sums,
                [("const T*", name) for name in inputs] + [("const T*", "dA"), ("const T*", "X_hat"), ("T*", "dZ"),
                                                           ("T*", "sum_dZ"), ("T*", "sum_dZ_X_hat"), *sizes]),
        _kernel("bn_input_delta", None, f"    {elements} {{\n{_indent(delta)}\n    }}",
                [("const T*", "dZ"), ("const T*", "X_hat"), ("const T*", "gamma"), ("const T*", "inv_std"),
                 ("const T*", "sum_dZ"), ("const T*", "sum_dZ_X_hat"), ("T", "rows_t"), ("T*", "dX"), *sizes]),
    ])


def _loss_kernel(loss) -> str:
    term = to_c(loss.term, {"a": "A[i]", "y": "Y[i]"}, ["term[i]"])
    gradient = to_c(loss.term_gradient, {"a": "A[i]", "y": "Y[i]"}, ["T gradient"])
    return _kernel(f"loss_{loss.name}", "loss",
                   f"    {_GRID_STRIDE.format(i='i', n='total')} {{\n{_indent(term)}\n{_indent(gradient)}\n"
                   "        dA[i] = gradient * scale;\n    }")


def _rows_kernel(row) -> str:
    """A kernel body taking the rows r = 0 .. rows - 1 over the grid, `row(src)` writing one."""
    src = Source("c", 1)
    with src.block(_GRID_STRIDE.format(i="r", n="rows")):
        row(src)
    return src.text()


def _softmax_cross_entropy_row(src):
    def write(s, j):
        s.line(f"A[r * cols + {j}] = a")
        s.line(f"dZ[r * cols + {j}] = (a - Y[r * cols + {j}]) * scale")
    src.declare("loss", "T(0)")
    rowwise.softmax_cross_entropy_row(src, "cols", lambda j: f"Z[r * cols + {j}]", lambda j: f"Y[r * cols + {j}]",
                                      write)
    src.line("row_loss[r] = loss")


def _fixed_kernels() -> str:
    sigmoid = to_c(activations.sigmoid, {"z": "Z[i]"}, ["T a"])
    logit_term = to_c(losses.binary_cross_entropy_logit_term, {"z": "Z[i]", "y": "Y[i]"}, ["term[i]"])
    return "".join([
        _kernel("sigmoid_binary_cross_entropy", "sigmoid_binary_cross_entropy",
                f"    {_GRID_STRIDE.format(i='i', n='total')} {{\n{_indent(sigmoid)}\n        A[i] = a;\n"
                f"        dZ[i] = (a - Y[i]) * scale;\n{_indent(logit_term)}\n    }}"),
        # Row-wise, one thread per row: the output layer is narrow (its classes). The loss
        # term is -sum_j y_j log_softmax(z)_j, from the logits, exact where A rounds to 0.
        _kernel("softmax_cross_entropy", "softmax_cross_entropy", _rows_kernel(_softmax_cross_entropy_row)),
        _kernel("softmax_rows", "softmax_rows", _rows_kernel(
            lambda src: rowwise.softmax_row(src, "cols", lambda j: f"Z[r * cols + {j}]",
                                            lambda s, j: s.line(f"A[r * cols + {j}] = a")))),
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


def device_scalars(plan) -> list:
    """The optimizer's scalars in device memory (doubles), in order: its hyperparameters, the
    steps taken when it counts them, then what `derive` computes for the next step."""
    return list(plan.hyperparameters) + (["t"] if plan.counts_steps else []) + list(plan.derived)


def _optimizer_kernels(plan) -> str:
    """`update_<name>(p, g, *state, hyper, n)`: the rule over the flat buffer, its scalars read
    from `hyper` (`device_scalars`); `tick_<name>(hyper)`: one thread counts the step and
    derives the step's scalars, for the update launched after it on the same stream."""
    slots = device_scalars(plan)
    signature = [("T*", "p"), ("const T*", "g")] + [("T*", f"s_{name}") for name in plan.state] + [
        ("const double*", "hyper"), ("long long", "n")]
    scalars = "".join(f"    const T h_{name} = T(hyper[{slots.index(name)}]);\n" for name in plan.rule_scalars)
    elements = ["p[i]", "g[i]"] + [f"s_{name}[i]" for name in plan.state]
    rule = to_c(plan.rule, bind(plan.rule, elements, {name: f"h_{name}" for name in plan.rule_scalars}),
                elements[:1] + elements[2:])
    source = _kernel(f"update_{plan.name}", None,
                     f"{scalars}    {_GRID_STRIDE.format(i='i', n='n')} {{\n{_indent(rule)}\n    }}", signature)
    if plan.derive is None:
        return source
    derive = to_c(plan.derive, {name: f"hyper[{slots.index(name)}]" for name in plan.derive_arguments},
                  [f"hyper[{slots.index(name)}]" for name in plan.derived], dtype="double")
    count = f"        hyper[{slots.index('t')}] += 1.0;\n" if plan.counts_steps else ""
    return source + _kernel(f"tick_{plan.name}", None, f"    if (blockIdx.x == 0 && threadIdx.x == 0) {{\n"
                                                      f"{count}{_indent(derive)}\n    }}", [("double*", "hyper")])


def module_source(dtype: str, activation_list=(), loss_list=(), optimizer_list=()) -> str:
    """The CUDA C++ module for float type `dtype` ("float32"/"float64") with forward and
    backward kernels for each activation (element-wise ones), loss kernels for each loss and
    update kernels for each optimizer plan (mlp.optimizers.UpdatePlan)."""
    seen, parts = set(), [f"typedef {C_TYPES[dtype]} T;", C_PRELUDE, _fixed_kernels()]
    for activation in activation_list:
        key = activation_key(activation)
        if activation.elementwise and key not in seen:
            seen.add(key)
            parts.append(_activation_kernels(activation))
    for loss in loss_list:
        parts.append(_loss_kernel(loss))
    for plan in dict.fromkeys(optimizer_list):
        parts.append(_optimizer_kernels(plan))
    return "\n".join(parts)


def kernel_names(source: str) -> list[str]:
    return list(signatures(source))


def signatures(source: str) -> dict:
    """{kernel name: [(C type, parameter name), ...]} as declared in `source`."""
    found = re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', source)
    return {name: [tuple(p.strip().rsplit(" ", 1)) for p in params.split(",") if p.strip()]
            for name, params in found}


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
    for name, signature in signatures(source).items():
        params = ", ".join(f"{ctype} {pname}" for ctype, pname in signature)
        args = ", ".join(pname for _, pname in signature)
        launchers.append(
            f'extern "C" void host_{name}(unsigned grid, unsigned block, {params}) {{\n'
            "    gridDim.x = grid; blockDim.x = block;\n"
            "    for (unsigned mlp_b = 0; mlp_b < grid; ++mlp_b) for (unsigned mlp_t = 0; mlp_t < block; ++mlp_t) {\n"
            f"        blockIdx.x = mlp_b; threadIdx.x = mlp_t; {name}({args});\n    }}\n}}\n")
    return HOST_SHIM + source + "\n" + "\n".join(launchers)
