"""Source generation for Numba: a whole training step, or a whole forward pass, of one
architecture as one compiled function with no Python per layer.

The generated code calls the single definitions in mlp.activations and mlp.losses (compiled
by Numba for scalars); only the loop structure is generated. Layer sizes and offsets into
the flat parameter buffer are constants, so every loop bound is known to the compiler.

Loop order follows memory: W is (n_out, n_in) row-major, so the forward pass is a dot product
over contiguous rows, the input delta an axpy over rows of W, and the weight gradient an axpy
over rows of the layer input (for one sample: the outer product, never a matmul).

Loops are blocked so that each value loaded is used several times (measured 1.3-2.4x over one
row or unit at a time on 64x64 and 784x512 layers): the forward pass computes ROW_BLOCK rows of
the batch per load of a weight row; the input delta takes UNIT_BLOCK rows of W per pass over a
delta row; the weight gradient takes ROW_BLOCK rows of the batch per pass over the gradient
row. Each loop stores to one array only: with several stores in one loop LLVM cannot rule out
aliasing and leaves the loop scalar (measured 2-4x slower).

From BLOCKED_FROM rows on, small networks' steps (`blocks`) take their products from one shared
register-blocked kernel instead (`product_source`): the forward pass over W^T transposed into
the workspace, the input delta, and the weight gradient, with plain SGD folded into it. With
enough rows and work (`splits`), those products and the passes over the batch's rows are split
across Numba's threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mlp import regularization
from mlp.kernels import numba_update as update_code
from mlp.kernels import rowwise
from mlp.kernels.writer import Source
from mlp.kernels.formulas import compiled, to_real
from mlp.kernels.numba_workspace import Workspace


@dataclass(frozen=True)
class Layer:
    n_in: int
    n_out: int
    activation: str
    params: tuple = ()  # ((name, value), ...) in the activation's argument order
    needs: str = "output"  # what the activation's derivative reads (mlp.activations.NEEDS)

    @property
    def keeps_input(self) -> bool:
        return self.needs != "output"

    def formulas(self):
        """The registered Activation this layer plan names."""
        from mlp import activations

        return activations.get({"name": self.activation, **dict(self.params)})


def layer_plan(activation, n_in=0, n_out=0) -> Layer:
    return Layer(n_in, n_out, activation.name, tuple(activation.params.items()), activation.needs)


def dense_layers(model) -> tuple:
    """A model's Dense layers as Layer plans (the generators' view of it; Dropout left out).
    Also what the fused Numba-CUDA forward (mlp.kernels.cuda_fused) generates from."""
    return tuple(layer_plan(layer.activation, layer.n_in, layer.n_out) for layer in model.dense_layers)


def _derivative(layer, z, a, delta):
    """The call of `layer`'s compiled derivative, g_<name>, at the element whose
    pre-activation is `z` and output `a` (only what it declares it reads), times `delta`."""
    from mlp.activations import derivative_inputs

    inputs = [*derivative_inputs(layer.needs, z, a), delta]
    return f"g_{layer.activation}({', '.join(inputs)}{_args(layer)})"


@dataclass(frozen=True)
class StepPlan:
    layers: tuple  # of Layer
    loss: str
    fused: bool  # sigmoid + binary_cross_entropy or softmax + cross_entropy
    optimizer: object  # mlp.optimizers.UpdatePlan
    l1: bool
    l2: bool
    clip: bool
    dtype: str = "float64"
    blocked: bool = False  # register-blocked products (see `blocks`), else rows and units
    split: bool = False  # blocked products and row passes split across threads (see `splits`; implies blocked)


def blocks(batch: int, n_weights: int) -> bool:
    """Whether a step or forward pass of `batch` rows over `n_weights` weights takes its
    products in register blocks (`product_source`), else by rows and units. The blocks pay
    for the transposition of W and their repeated passes over panels of W from about an
    eighth of the width w of the [w, w, w, 10] net of as many weights (float32 steps, blocked
    against rows and units, alternated in one process: w = 64 (tiny) 1.23x at batch 8 and
    1.3x at 16-32; w = 128 0.77x at 8, 0.98x at 16, 1.24x at 32; w = 256 0.73x at 16, 0.97x
    at 32, 1.18x at 64; w = 512 (mnist) 0.41-0.69x at 8-32)."""
    return batch >= max(BLOCKED_FROM, math.sqrt(n_weights / 2) / 8)


SPLIT_FROM = 128  # the smallest batch whose blocked products are split across threads (see `splits`)
SPLIT_WORK = 1 << 21  # ... and the least work (batch x weights) of a step that is split
SPLIT_PARTS = 16  # parts of a split product, dealt out to the threads
DEPTH_CHUNK = 128  # rows of R per call in a split product of a long depth (see `_parallel_product`)


def splits(batch: int, n_weights: int) -> bool:
    """Whether a step or forward pass of `batch` rows over `n_weights` weights is blocked
    (`blocks`) and splits its products and its row passes across Numba's threads
    (`product_parallel`, prange). A compiled step runs no BLAS, so no second thread pool
    competes for the cores. Measured (float32, split against one thread, alternated in one
    process, before long depths were chunked): tiny (4288 weights) 0.76x at batch 256, 1.15x
    at 512, 1.38x at 2048, 1.75x at 8192; [128, 128, 128, 10] 0.94x at 64, 1.32x at 128,
    1.54x at 1024; [256, 256, 256, 10] 0.92x at 32 (each thread still reads all of W for
    few rows)."""
    return blocks(batch, n_weights) and batch >= SPLIT_FROM and batch * n_weights >= SPLIT_WORK


HEADER = '''"""Generated by mlp.kernels.numba_codegen. Do not edit: regenerated from the plan."""
import math

import numpy as np
from numba import float32, njit, prange

from mlp.kernels import numba_cpu as _cpu

_FLAGS = {"reassoc", "contract", "arcp", "nsz"}  # no nnan/ninf: NaN checks must survive
_jit = njit(cache=True, fastmath=_FLAGS, error_model="numpy", nogil=True)
_jit_parallel = njit(cache=True, fastmath=_FLAGS, error_model="numpy", nogil=True, parallel=True)
'''


def _args(layer: Layer):
    return "".join(f", {value!r}" for _, value in layer.params)


def _offsets(layers):
    offset, result = 0, []
    for layer in layers:
        w_end = offset + layer.n_in * layer.n_out
        result.append((offset, w_end, w_end + layer.n_out))
        offset = w_end + layer.n_out
    return result


class _Symbol:
    """A batch size not known when the source is written: a loss's normaliser applied to a
    shape holding one prints its expression (batch_rows: n; all_elements: (n * cols))."""

    def __init__(self, text):
        self.text = text

    def __mul__(self, other):
        return _Symbol(f"({self} * {other})")

    def __rmul__(self, other):
        return self if other == 1 else _Symbol(f"({other} * {self})")

    def __str__(self):
        return self.text


def _normaliser(loss, n_out) -> str:
    """The expression of `loss`'s normaliser for n rows of n_out outputs, from its definition."""
    from mlp import losses

    return str(losses.get(loss).normaliser((_Symbol("n"), n_out)))


def _function_table(layers, loss, dtype, penalties=False, clip=False):
    """Module-level compiled versions of the formulas the plan uses (in float32, an
    activation's `float32_forward` where it declares one: the vectorisable tanh and sigmoid)."""
    from mlp import losses

    lines, seen = [], set()
    for layer in layers:
        name = layer.activation
        if name not in seen and name != "softmax":
            seen.add(name)
            activation = layer.formulas()
            forward = activation.float32_forward if dtype == "float32" and activation.float32_forward else \
                activation.forward
            lines.append(compiled(forward, f"f_{name}", dtype))
            lines.append(compiled(activation.derivative, f"g_{name}", dtype))
    if loss is not None:
        definition = losses.get(loss)
        lines.append(compiled(definition.term, "loss_term", dtype))
        lines.append(compiled(definition.term_gradient, "loss_gradient", dtype))
        lines.append(compiled(losses.binary_cross_entropy_logit_term, "bce_logit_term", dtype))
    if penalties:
        lines.append(compiled(regularization.penalty, "penalty", dtype))
        lines.append(compiled(regularization.penalty_gradient, "penalty_gradient", dtype))
    if clip:
        lines.append(compiled(regularization.clip_scale, "clip_scale", dtype))
    return "\n".join(lines) + "\n"


def _views(layers, buffer="params", prefix="", indent="    "):
    """Per-layer W and b views into a flat buffer (params, or grads with prefix 'd')."""
    lines = []
    for number, ((start, w_end, end), layer) in enumerate(zip(_offsets(layers), layers), start=1):
        lines.append(f"{indent}{prefix}W{number} = {buffer}[{start}:{w_end}].reshape(({layer.n_out}, {layer.n_in}))")
        lines.append(f"{indent}{prefix}b{number} = {buffer}[{w_end}:{end}]")
    return lines


def workspace_layout(layers, training, blocked=False) -> Workspace:
    """The workspace of a step (`training`) or forward pass: see mlp.kernels.numba_workspace;
    W_l^T for the layers whose forward pass is a register-blocked product (`_transposes`)."""
    transposed = [k for k, layer in enumerate(layers, start=1) if blocked and _transposes(layer)]
    return Workspace.of(layers, training, transposed)


def workspace(layers, batch, training, dtype, blocked=False):
    """(work, A_L): the buffer a generated step (training) or forward pass takes as `work`
    for `batch` rows, and the view of it that holds the output activations."""
    return workspace_layout(layers, training, blocked).allocate(batch, dtype, f"A{len(layers)}")


def step_arguments(plan) -> list:
    """The generated step's arguments: only those its plan uses (dispatch costs per argument)."""
    names = ["X", "Y", "params"] + (["grads"] if _writes_grads(plan) else [])
    names += update_code.state_arguments(plan.optimizer) + ["work"] + update_code.scalar_arguments(plan.optimizer)
    return names + [name for name, used in (("l1", plan.l1), ("l2", plan.l2), ("clip", plan.clip)) if used]


PARALLEL_WEIGHTS = 1 << 16  # inference splits a layer's units across cores from this size on
ROW_BLOCK = 4  # rows of the batch per pass over a weight row (unblocked passes)
UNIT_BLOCK = 4  # rows of W per pass over a row of the input delta (unblocked steps)
GEMM_ROWS = 4  # a register block of a product: GEMM_ROWS x GEMM_COLUMNS accumulators
GEMM_COLUMNS = 16  # two AVX2 vectors of float32
BLOCKED_FROM = 8  # the smallest batch whose products are taken in register blocks (see `blocks`)


def _transposes(layer):
    """Whether a blocked forward pass takes this layer as a register-blocked product over
    W^T (else as dot products over rows of W, as unblocked passes do)."""
    return layer.n_out >= GEMM_COLUMNS


def _product_import(split=False):
    """The line that binds the shared register-blocked `product` (`split`: split across
    threads) in a generated module. It names the product's source by its hash: Numba's disk
    cache of a generated step refers to the product's module by that name, and would
    otherwise keep calling an old product after product_source changed (the step's own
    source unchanged)."""
    import hashlib

    digest = hashlib.sha1(product_source().encode()).hexdigest()[:16]
    name = "product_parallel" if split else "product"
    return f"_product = _cpu.products().{name}  # product source {digest}\n"


def _block(height, width, indent):
    """A register block of `product`: C[p:p + height, q:q + width] += alpha L R there."""
    pairs = [(r, v) for r in range(height) for v in range(width)]
    lines = [f"{indent}acc{r}_{v} = zero" for r, v in pairs]
    lines += [f"{indent}for kk in range(depth):"]
    lines += [f"{indent}    lhs{r} = L[p + {r}, kk]" for r in range(height)]
    lines += [f"{indent}    rhs{v} = R[kk, q + {v}]" for v in range(width)]
    lines += [f"{indent}    acc{r}_{v} += lhs{r} * rhs{v}" for r, v in pairs]
    return lines + [f"{indent}C[p + {r}, q + {v}] += alpha * acc{r}_{v}" for r, v in pairs]


def product_source() -> str:
    """`product(alpha, L, R, C)`: C += alpha L R, L: (m, depth), R: (depth, n) with contiguous
    rows, C: (m, n). One compiled kernel (per float type and layout) that every generated step
    calls for its products: the forward pass (C holding the bias), the input delta and the
    weight gradient (C zeroed), or plain SGD folded into the weight gradient (alpha = -lr,
    C = W).

    Register blocks of GEMM_ROWS x GEMM_COLUMNS accumulators, unrolled as scalars that LLVM's
    SLP vectoriser packs into vectors: per kk, GEMM_ROWS broadcasts, two vector loads and
    2 GEMM_ROWS FMAs, and the accumulators never leave registers (64x64 products over 32-512
    rows: 17-23 GMAC/s on one core, against about 11 for the loops of unblocked steps, which
    keep a row of C in memory). Unrolled once here, not per architecture: Numba types and
    lowers each generated line, and a step with its products unrolled in took 14-39 s to
    compile. The blocks are inlined, not block functions: a function's row and column
    arguments could be negative for all Numba knows, and its index wraparound turned the loads
    into gathers (4-5 GMAC/s)."""
    lines = [HEADER, "# Without reassoc: allowed to reorder a sum, LLVM's loop vectoriser takes the blocks'",
             "# loops over kk (the reduction axis) and the SLP vectoriser finds nothing left to pack.",
             '_jit_blocks = njit(cache=True, fastmath={"contract"}, error_model="numpy", nogil=True)', "",
             "@_jit_blocks", "def product(alpha, L, R, C):",
             "    m, depth = L.shape", "    n = R.shape[1]",
             "    zero = C.dtype.type(0)  # not 0.0, a float64 that would make float32 sums float64",
             f"    rows = m - m % {GEMM_ROWS}", f"    columns = n - n % {GEMM_COLUMNS}",
             f"    for q in range(0, columns, {GEMM_COLUMNS}):",
             f"        for p in range(0, rows, {GEMM_ROWS}):"]
    lines += _block(GEMM_ROWS, GEMM_COLUMNS, "            ")
    lines += ["        for p in range(rows, m):"] + _block(1, GEMM_COLUMNS, "            ")
    lines += ["    for p in range(m):  # the last columns, fewer than a block",
              "        for q in range(columns, n):", "            acc = zero", "            for kk in range(depth):",
              "                acc += L[p, kk] * R[kk, q]",
              "            C[p, q] += alpha * acc"]
    return "\n".join(lines + _parallel_product()) + "\n"


def _parallel_product():
    """`product_parallel(alpha, L, R, C)`: `product` with the rows of C split into up to
    SPLIT_PARTS parts of whole register blocks, which prange deals out to Numba's threads
    (serial where C has rows for one block only). Each part writes its own rows of C: no
    partial sums to add. Slices of a transposed factor are typed as arrays of any layout;
    their loads are the blocks' broadcasts, and a half product over them measured as fast
    as over the whole (64x64 weight gradient over 2048 rows: 219 against 455 us). A fixed
    count of parts, not get_num_threads(): a function that calls it cannot be cached.
    A long depth (a weight gradient's: the batch) is taken DEPTH_CHUNK rows at a time, so
    that the rows of R a chunk reads stay in cache across C's register blocks (64x64 weight
    gradient over 8192 rows: 723 against 1142 us; over 2048: 213 against 242)."""
    def call(rows, indent):  # rows: C's rows of this call, a slice expression
        whole = "" if rows == ":" else f"[{rows}]"
        return [f"{indent}if depth <= {4 * DEPTH_CHUNK}:", f"{indent}    product(alpha, L{whole}, R, C{whole})",
                f"{indent}else:", f"{indent}    for k in range(0, depth, {DEPTH_CHUNK}):",
                f"{indent}        product(alpha, L[{rows}, k:k + {DEPTH_CHUNK}], R[k:k + {DEPTH_CHUNK}], C{whole})"]

    lines = ["", "", '_jit_split = njit(cache=True, error_model="numpy", nogil=True, parallel=True)', "",
             "@_jit_split", "def product_parallel(alpha, L, R, C):", "    m, depth = L.shape",
             f"    parts = min({SPLIT_PARTS}, m // {GEMM_ROWS})", "    if parts <= 1:"]
    lines += call(":", "        ") + ["        return",
                         f"    size = -(-m // (parts * {GEMM_ROWS})) * {GEMM_ROWS}  # rows per part, whole blocks",
                         "    for part in prange(parts):", "        start = part * size",
                         "        stop = min(m, start + size)", "        if start < stop:"]
    return lines + call("start:stop", "            ")


def _rows(split):
    """The loop over the batch of a pass that writes only its own rows: split across Numba's
    threads (prange, the scalar loss a reduction) in steps and passes whose products are."""
    return "prange(n)" if split else "range(n)"


def _parallel(layer):
    """Only inference is split: splitting the step's forward or (by columns of W) its
    backward measured slower on 2 cores (mnist batch 1: 616 and 1438 us against 400 us)."""
    return layer.n_in * layer.n_out >= PARALLEL_WEIGHTS


def _unit(u):
    return "o" if u == 0 else f"o + {u}"


def _row(r):
    return "i" if r == 0 else f"i + {r}"


def _row_blocks():
    """(range expression, rows per iteration): whole blocks of the batch, then the rest."""
    return ((f"range(0, whole, {ROW_BLOCK})", ROW_BLOCK), ("range(whole, n)", 1))


def _forward_layer(number, layer, last, fused_softmax_or_sigmoid, dtype, blocked, indent="    ", parallel=False,
                   rows="range(n)", training=False):
    """A_l = f(A_{l-1} W_l^T + b_l). `blocked` (for layers of at least GEMM_COLUMNS units):
    W_l is transposed into the workspace and the product taken in register blocks; else as
    dot products over rows of W, ROW_BLOCK rows per pass over each row. The output layer
    keeps Z when the loss needs it. A float32 tanh or sigmoid (the vectorisable formulas)
    runs as its own loop after the products, which doubles tanh networks' throughput; every
    other activation is applied as each output is stored.
    `parallel`: the units of a large layer are split across cores (prange; safe for inference,
    where every unit only writes its own output). `rows`: the loop over the batch of the
    blocked passes (`_rows`). `training`: Z_l is kept beside A_l when the activation's
    derivative reads it (`Layer.keeps_input`), stored by the same separate loop."""
    keep_z = last and (layer.activation == "softmax" or fused_softmax_or_sigmoid)
    keep_input = not keep_z and training and layer.keeps_input
    separate = not keep_z and (keep_input or (dtype == "float32" and layer.formulas().float32_forward is not None))

    inline = not (keep_z or separate)

    def activated(value):
        return f"f_{layer.activation}({value}{_args(layer)})" if inline else value

    split_units = parallel and _parallel(layer)
    if blocked and _transposes(layer) and not split_units:
        lines = _blocked_forward(number, layer, activated if inline else None, indent, rows)
    else:
        lines = _dot_forward(number, layer, activated, indent, split_units)
    if keep_input:
        lines += [f"{indent}for i in {rows}:", f"{indent}    for o in range({layer.n_out}):",
                  f"{indent}        z = A{number}[i, o]", f"{indent}        Z{number}[i, o] = z",
                  f"{indent}        A{number}[i, o] = f_{layer.activation}(z{_args(layer)})"]
    elif separate:
        lines += [f"{indent}for i in {rows}:", f"{indent}    for o in range({layer.n_out}):",
                  f"{indent}        A{number}[i, o] = f_{layer.activation}(A{number}[i, o]{_args(layer)})"]
    return lines


def _dot_forward(number, layer, activated, indent, split):
    """A_l as dot products over rows of W, ROW_BLOCK rows of the batch per pass over a row."""
    src = "X" if number == 1 else f"A{number - 1}"
    lines = []
    for rows_range, rows in _row_blocks():
        lines += [f"{indent}for i in {rows_range}:",
                  f"{indent}    for o in {'prange' if split else 'range'}({layer.n_out}):",
                  f"{indent}        bias = b{number}[o]"]
        lines += [f"{indent}        acc{r} = bias" for r in range(rows)]  # not s1, s2: optimizer state
        lines += [f"{indent}        for k in range({layer.n_in}):", f"{indent}            w = W{number}[o, k]"]
        lines += [f"{indent}            acc{r} += {src}[{_row(r)}, k] * w" for r in range(rows)]
        lines += [f"{indent}        A{number}[{_row(r)}, o] = {activated(f'acc{r}')}" for r in range(rows)]
    return lines


def _blocked_forward(number, layer, activated, indent, rows):
    """W_l^T into the workspace (contiguous stores), then A_l = A_{l-1} W_l^T + b_l by the
    shared register-blocked `product`, then `activated` (value -> source) over A_l unless None.
    `rows`: the loop over the batch (`_rows`)."""
    src = "X" if number == 1 else f"A{number - 1}"
    lines = [f"{indent}for k in range({layer.n_in}):", f"{indent}    for o in range({layer.n_out}):",
             f"{indent}        WT{number}[k, o] = W{number}[o, k]",
             f"{indent}for i in {rows}:", f"{indent}    for o in range({layer.n_out}):",
             f"{indent}        A{number}[i, o] = b{number}[o]",
             f"{indent}_product(one, {src}, WT{number}, A{number})"]
    if activated is not None:
        lines += [f"{indent}for i in {rows}:", f"{indent}    for o in range({layer.n_out}):",
                  f"{indent}        A{number}[i, o] = {activated(f'A{number}[i, o]')}"]
    return lines


def _softmax_rows(number, n_out, split, indent=1):
    """A_l = softmax(A_l) row by row, in place (mlp.kernels.rowwise)."""
    src = Source("python", indent)
    rowwise.softmax_rows(src, "n", n_out, lambda i, j: f"A{number}[{i}, {j}]", lambda i, j: f"A{number}[{i}, {j}]",
                         parallel=split)
    return src.lines


def forward_is_parallel(layers, split=False) -> bool:
    """Whether the compiled forward pass of `layers` runs on Numba's threads (a large layer's
    units, or the split products and rows of a `split` pass)."""
    return split or any(_parallel(layer) for layer in layers)


def forward_source(layers, dtype="float64", blocked=False, split=False) -> str:
    """`forward(X, params, work) -> AL`: inference, no Python per layer (`work`: see
    `workspace`; `blocked` and `split` as in StepPlan)."""
    L = len(layers)
    parallel = any(_parallel(layer) for layer in layers)
    lines = [HEADER, _function_table(layers, None, dtype), _product_import(split), "",
             "@_jit_parallel" if forward_is_parallel(layers, split) else "@_jit",
             "def forward(X, params, work):", "    n = X.shape[0]",
             f"    whole = n - n % {ROW_BLOCK}", "    one = 1.0", *to_real(["one"], dtype)]
    lines += workspace_layout(layers, False, blocked).views() + _views(layers)
    for number, layer in enumerate(layers, start=1):
        lines += _forward_layer(number, layer, number == L, False, dtype, blocked, parallel=parallel, rows=_rows(split))
        if layer.activation == "softmax":
            lines += _softmax_rows(number, layer.n_out, split)
    lines.append(f"    return A{L}")
    return "\n".join(lines) + "\n"


def step_source(plan: StepPlan) -> str:
    """`step(X, Y, params, [grads], *state, work, *hyperparameters, [t], [l1], [l2], [clip])
    -> loss`: one whole training step, with the arguments its plan uses (`step_arguments`).
    `work` holds A_l, then D_l = dL/dZ_l (see `workspace`); the optimizer's state, scalars and
    update are those its descriptor declares (mlp.kernels.numba_update). A float32 step takes
    its scalars to float32 first (`to_real`), as NumPy's float32 update stays float32."""
    layers, L = plan.layers, len(plan.layers)
    out = layers[-1]
    norm = _normaliser(plan.loss, out.n_out)
    arguments = step_arguments(plan)
    split = plan.split
    rows = _rows(split)
    lines = [HEADER, _function_table(layers, plan.loss, plan.dtype, plan.l1 or plan.l2, plan.clip),
             update_code.rule_table(plan.optimizer, plan.dtype),
             _product_import(split), "", "@_jit_parallel" if split else "@_jit",
             f"def step({', '.join(arguments)}):",
             "    n = X.shape[0]",
             f"    whole = n - n % {ROW_BLOCK}",
             f"    inv_norm = 1.0 / ({norm})", "    one = 1.0"]
    lines += update_code.prepare(plan.optimizer, plan.dtype)
    # a penalty formula takes both rates: the one not in use is a zero of the float type
    unused = [name for name, used in (("l1", plan.l1), ("l2", plan.l2)) if not used]
    lines += [f"    {name} = 0.0" for name in unused if plan.l1 or plan.l2]
    lines += to_real(["inv_norm", "one"] + ["l1", "l2"] * (plan.l1 or plan.l2) + ["clip"] * plan.clip, plan.dtype)
    lines += workspace_layout(layers, True, plan.blocked).views()
    lines += _views(layers)
    if _writes_grads(plan):
        lines += _views(layers, buffer="grads", prefix="d")
    # forward
    for number, layer in enumerate(layers, start=1):
        lines += _forward_layer(number, layer, number == L, plan.fused, plan.dtype, plan.blocked, rows=rows,
                                training=True)
    # loss and output delta
    lines.append("    loss = 0.0")
    if plan.fused and out.activation == "softmax":  # from the logits in A_L, one row at a time
        src = Source("python", 1)
        with src.loop("i", "n", parallel=split):
            rowwise.softmax_cross_entropy_row(
                src, out.n_out, lambda j: f"A{L}[i, {j}]", lambda j: f"Y[i, {j}]",
                lambda s, j: (s.line(f"A{L}[i, {j}] = a"), s.line(f"D{L}[i, {j}] = (a - Y[i, {j}]) * inv_norm")))
        lines += src.lines
    elif plan.fused:  # sigmoid + binary cross-entropy, from the logits
        lines += [
            f"    for i in {rows}:",
            f"        for j in range({out.n_out}):",
            f"            z = A{L}[i, j]",
            "            loss += bce_logit_term(z, Y[i, j])",
            "            a = f_sigmoid(z)",
            f"            A{L}[i, j] = a",
            f"            D{L}[i, j] = (a - Y[i, j]) * inv_norm",
        ]
    elif out.activation == "softmax":  # softmax under another loss: the Jacobian row by row
        lines += _softmax_rows(L, out.n_out, split)
        lines += [
            f"    for i in {rows}:",
            "        inner = 0.0",
            f"        for j in range({out.n_out}):",
            f"            loss += loss_term(A{L}[i, j], Y[i, j])",
            f"            da = loss_gradient(A{L}[i, j], Y[i, j]) * inv_norm",
            f"            D{L}[i, j] = da",
            f"            inner += da * A{L}[i, j]",
            f"        for j in range({out.n_out}):",
            f"            D{L}[i, j] = A{L}[i, j] * (D{L}[i, j] - inner)",
        ]
    else:
        lines += [
            f"    for i in {rows}:",
            f"        for j in range({out.n_out}):",
            f"            a = A{L}[i, j]",
            "            loss += loss_term(a, Y[i, j])",
            f"            D{L}[i, j] = {_derivative(out, f'Z{L}[i, j]', 'a', 'loss_gradient(a, Y[i, j]) * inv_norm')}",
        ]
    lines.append("    loss *= inv_norm")
    lines += _backward_products(plan) if plan.blocked else _backward_rows(plan)
    lines.append("    return loss")
    return "\n".join(lines) + "\n"


def _update(plan, target, grad, index, indent):
    """One optimizer update of `target` (a parameter element) by gradient `grad`, with its
    optimizer state at flat position `index` (mlp.kernels.numba_update)."""
    return update_code.update(plan.optimizer, target, grad, index, indent)


def _input_delta_activation(plan, number):
    prev, layer = plan.layers[number - 2], plan.layers[number - 1]
    return [f"    for i in {_rows(plan.split)}:", f"        for k in range({layer.n_in}):",
            f"            D{number - 1}[i, k] = "
            f"{_derivative(prev, f'Z{number - 1}[i, k]', f'A{number - 1}[i, k]', f'D{number - 1}[i, k]')}"]


def _penalty(plan, gradient, weight, indent):
    """A weight's penalty added to the loss and to its gradient (mlp.regularization)."""
    if not (plan.l1 or plan.l2):
        return []
    return [f"{indent}loss += penalty({weight}, l1, l2)", f"{indent}{gradient} += penalty_gradient({weight}, l1, l2)"]


def _input_delta(number, layer, units, indent):
    """D_{l-1}[i, :] += sum over `units` rows of W from o on, weighted by D_l[i, o + u]."""
    lines = [f"{indent}for i in range(n):"]
    lines += [f"{indent}    e{u} = D{number}[i, {_unit(u)}]" for u in range(units)]
    terms = " + ".join(f"e{u} * W{number}[{_unit(u)}, k]" for u in range(units))
    return lines + [f"{indent}    for k in range({layer.n_in}):", f"{indent}        D{number - 1}[i, k] += {terms}"]


def _unit_gradient(plan, number, unit, indent):
    """Unit `unit`'s weight-gradient row (into `row`, or straight into dW when clipping
    defers the update) and bias gradient `gb`, ROW_BLOCK rows of the batch per pass,
    penalties added; then, without clipping, its update."""
    layer = plan.layers[number - 1]
    src = "X" if number == 1 else f"A{number - 1}"
    start, w_end, _ = _offsets(plan.layers)[number - 1]
    columns = f"range({layer.n_in})"
    row = f"dW{number}[{unit}, k]" if plan.clip else "row[k]"
    lines = [f"{indent}for k in {columns}:", f"{indent}    {row} = 0.0", f"{indent}gb = 0.0"]
    for rows_range, rows in _row_blocks():
        lines += [f"{indent}for i in {rows_range}:"]
        lines += [f"{indent}    d{r} = D{number}[{_row(r)}, {unit}]" for r in range(rows)]
        lines += [f"{indent}    gb += " + " + ".join(f"d{r}" for r in range(rows)),
                  f"{indent}    for k in {columns}:",
                  f"{indent}        {row} += " + " + ".join(f"d{r} * {src}[{_row(r)}, k]" for r in range(rows))]
    penalty = _penalty(plan, row, f"W{number}[{unit}, k]", f"{indent}    ")
    if plan.clip:
        if penalty:
            lines += [f"{indent}for k in {columns}:"] + penalty
        return lines + [f"{indent}db{number}[{unit}] = gb"]
    lines += [f"{indent}for k in {columns}:"] + penalty
    lines += _update(plan, f"W{number}[{unit}, k]", row, f"{start} + {unit} * {layer.n_in} + k", f"{indent}    ")
    return lines + _update(plan, f"b{number}[{unit}]", "gb", f"{w_end} + {unit}", indent)


def _backward_rows(plan):
    """Unblocked steps: the delta recursion, last layer first, UNIT_BLOCK units at a time:
    their share of the input delta, then each one's gradient row. Without clipping, each row
    of W is updated as soon as its gradient is known (after it has given its share of the
    input delta): a step reads and writes every weight about three times in all, the least a
    training step can, and `grads` is not written. With clipping the update needs the global
    gradient norm first: gradients go to `grads`, then one scaled update pass over the flat
    buffer."""
    layers, lines = plan.layers, []
    if not plan.clip:
        lines.append(f"    row = np.empty({max(layer.n_in for layer in layers)}, dtype=params.dtype)")
    for number in range(len(layers), 0, -1):
        layer = layers[number - 1]
        whole = layer.n_out - layer.n_out % UNIT_BLOCK
        if number > 1:
            lines += ["    for i in range(n):", f"        for k in range({layer.n_in}):",
                      f"            D{number - 1}[i, k] = 0.0"]
        if whole:
            lines.append(f"    for o in range(0, {whole}, {UNIT_BLOCK}):")
            if number > 1:
                lines += _input_delta(number, layer, UNIT_BLOCK, "        ")
            lines.append(f"        for u in range(o, o + {UNIT_BLOCK}):")
            lines += _unit_gradient(plan, number, "u", "            ")
        if whole < layer.n_out:
            lines.append(f"    for o in range({whole}, {layer.n_out}):")
            if number > 1:
                lines += _input_delta(number, layer, 1, "        ")
            lines += _unit_gradient(plan, number, "o", "        ")
        if number > 1:
            lines += _input_delta_activation(plan, number)
    return lines + _update_from_grads(plan) if plan.clip else lines


def _bias_gradient(plan, number):
    """Layer `number`'s bias gradient (column sums of its delta, into `row`), then its
    plain SGD update (or, when the update is not folded, into db)."""
    layer = plan.layers[number - 1]
    _, w_end, _ = _offsets(plan.layers)[number - 1]
    lines = [f"    for o in range({layer.n_out}):", "        row[o] = 0.0", "    for i in range(n):",
             f"        for o in range({layer.n_out}):", f"            row[o] += D{number}[i, o]",
             f"    for o in range({layer.n_out}):"]
    if not _folds(plan):
        return lines + [f"        db{number}[o] = row[o]"]
    return lines + _update(plan, f"b{number}[o]", "row[o]", f"{w_end} + o", "        ")


def _writes_grads(plan):
    """Whether the step writes `grads`: with clipping, and in blocked steps whose update is
    not folded into the products."""
    return plan.clip or (plan.blocked and not _folds(plan))


def _folds(plan):
    """Whether plain SGD is folded into the weight-gradient products (W += -lr D^T A): no
    penalty to add, and no global norm to wait for."""
    return plan.optimizer.name == "sgd_plain" and not (plan.l1 or plan.l2 or plan.clip)


def _layer_backward(plan, number):
    """Layer `number`'s input delta D_{l-1} = D_l W_l (before W_l changes), then its weight
    gradient D_l^T A_{l-1}: folded into W_l with plain SGD, else into dW (`grads`), both by
    the shared register-blocked `product`. Its register blocks run along the layer's inputs
    when it has at least GEMM_COLUMNS of them (or more inputs than units), else along its
    units (a first layer of few inputs), through transposed views."""
    layer = plan.layers[number - 1]
    src = "X" if number == 1 else f"A{number - 1}"
    lines = []
    if number > 1:
        lines += [f"    D{number - 1}[:] = 0.0", f"    _product(one, D{number}, W{number}, D{number - 1})"]
    target, alpha = (f"W{number}", "-h_lr") if _folds(plan) else (f"dW{number}", "one")
    if not _folds(plan):
        lines.append(f"    {target}[:] = 0.0")
    if layer.n_in >= GEMM_COLUMNS or layer.n_in >= layer.n_out:
        return lines + [f"    _product({alpha}, D{number}.T, {src}, {target})"]
    return lines + [f"    _product({alpha}, {src}.T, D{number}, {target}.T)"]


def _flat_update(plan):
    """The update from `grads` when it is not folded into the products: penalties added to
    each layer's weights (not its biases), then `_update_from_grads`."""
    lines = []
    if plan.l1 or plan.l2:
        for start, w_end, _ in _offsets(plan.layers):
            lines += [f"    for j in range({start}, {w_end}):"] + _penalty(plan, "grads[j]", "params[j]", "        ")
    return lines + _update_from_grads(plan)


def _update_from_grads(plan):
    """One update pass over the flat buffer from `grads`, clipped first (when the plan clips)
    to the global norm, the clipped gradient kept in `grads`."""
    if not plan.clip:
        return ["    for j in range(params.size):"] + _update(plan, "params[j]", "grads[j]", "j", "        ")
    lines = ["    square = 0.0", "    for j in range(grads.size):", "        square += grads[j] * grads[j]",
             "    scale = clip_scale(math.sqrt(square), clip)", "    for j in range(params.size):",
             "        g = grads[j] * scale", "        grads[j] = g"]
    return lines + _update(plan, "params[j]", "g", "j", "        ")


def _backward_products(plan):
    """Blocked steps (`blocks`): the delta recursion, last layer first, by register-blocked
    products; then, unless plain SGD was folded into the weight-gradient products, the
    update from `grads`."""
    layers, lines = plan.layers, []
    lines.append(f"    row = np.empty({max(layer.n_out for layer in layers)}, dtype=params.dtype)")  # bias sums
    for number in range(len(layers), 0, -1):
        lines += _bias_gradient(plan, number)
        lines += _layer_backward(plan, number)
        if number > 1:
            lines += _input_delta_activation(plan, number)
    return lines if _folds(plan) else lines + _flat_update(plan)


def elementwise_source(activation, dtype="float64") -> str:
    """Fused element-wise kernels of one Activation for the BLAS path:
    `bias_activation(Z, b)`: Z <- f(Z + b) in place;
    `bias_activation_keep(Z, b, A)`: Z <- Z + b, A <- f(Z) (activations whose derivative reads Z);
    `backward_bias(<Z and/or A, as declared>, dA, dZ, db)`: dZ <- f'(Z) dA and db <- column sums,
    in one pass."""
    from mlp.activations import derivative_inputs

    layer = layer_plan(activation)
    args = _args(layer)
    inputs = derivative_inputs(layer.needs, "Z", "A")
    backward_head = ["@_jit", f"def backward_bias({', '.join(inputs)}, dA, dZ, db):", "    n, m = dA.shape",
                     "    db[:] = 0.0", "    for i in range(n):"]
    # db summed in its own loop over the row just written: one store stream per loop, which
    # LLVM vectorises (1.1-1.6x over storing dZ and db in one loop, 8192x64 to 128x512)
    bias_sum = ["        for j in range(m):", "            db[j] += dZ[i, j]"]
    if layer.activation == "softmax":
        src = Source("python", 1)
        with src.loop("i", "n"):
            with src.loop("j", "m"):
                src.line("Z[i, j] += b[j]")
            rowwise.softmax_row(src, "m", lambda j: f"Z[i, {j}]", lambda s, j: s.line(f"Z[i, {j}] = a"))
        forward = ["@_jit", "def bias_activation(Z, b):", "    n, m = Z.shape"] + src.lines
        backward = backward_head + [
            "        inner = 0.0",
            "        for j in range(m):",
            "            inner += dA[i, j] * A[i, j]",
            "        for j in range(m):",
            "            dZ[i, j] = A[i, j] * (dA[i, j] - inner)",
        ] + bias_sum
    else:
        forward = ["@_jit", "def bias_activation(Z, b):", "    n, m = Z.shape", "    for i in range(n):",
                   "        for j in range(m):", f"            Z[i, j] = f_{layer.activation}(Z[i, j] + b[j]{args})"]
        if layer.keeps_input:
            forward += ["", "", "@_jit", "def bias_activation_keep(Z, b, A):", "    n, m = Z.shape",
                        "    for i in range(n):", "        for j in range(m):", "            z = Z[i, j] + b[j]",
                        "            Z[i, j] = z", f"            A[i, j] = f_{layer.activation}(z{args})"]
        backward = backward_head + [
            "        for j in range(m):",
            f"            dZ[i, j] = {_derivative(layer, 'Z[i, j]', 'A[i, j]', 'dA[i, j]')}",
        ] + bias_sum
    table = _function_table([layer], None, dtype)
    return "\n".join([HEADER, table, ""] + forward + ["", ""] + backward) + "\n"
