"""The plan of a generated Numba step or forward pass, and the rules that choose it: the
architecture as Layer plans, the step's settings (StepPlan), where products are taken in
register blocks (`blocks`) and split across threads (`splits`), the workspace layout, and the
step's arguments.

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

from mlp.kernels import numba_update as update_code
from mlp.kernels.numba_workspace import Workspace


@dataclass(frozen=True)
class Layer:
    n_in: int
    n_out: int
    activation: str
    params: tuple = ()  # ((name, value), ...) in the activation's argument order
    needs: str = "output"  # what the activation's derivative reads (mlp.activations.NEEDS)
    norm: tuple = ()  # (momentum, eps): the product (no bias) batch-normalised before the activation

    @property
    def keeps_input(self) -> bool:
        return self.needs != "output"

    @property
    def n_params(self) -> int:
        """W, then b; or W, then BatchNorm's gamma and beta (the flat buffer's layout)."""
        return self.n_in * self.n_out + self.n_out * (2 if self.norm else 1)

    def formulas(self):
        """The registered Activation this layer plan names."""
        from mlp import activations

        return activations.get({"name": self.activation, **dict(self.params)})


def layer_plan(activation, n_in=0, n_out=0, norm=()) -> Layer:
    return Layer(n_in, n_out, activation.name, tuple(activation.params.items()), activation.needs, norm)


def step_layers(model):
    """`model`'s layers as the Layer plans of a whole compiled step, or None where it has a layer
    the step does not compile (Dropout, a block, a synchronised BatchNorm, a BatchNorm after
    anything but a Dense layer without bias or activation, or as the output). Such a Dense layer
    and the BatchNorm after it are one plan (`norm`): Dense -> BatchNorm(f) as MLP(batch_norm=True)
    builds them."""
    from mlp.batchnorm import BatchNorm
    from mlp.layers import Dense

    layers, plans = list(model.layers), []
    while layers:
        dense = layers.pop(0)
        if not isinstance(dense, Dense):
            return None
        if layers and isinstance(layers[0], BatchNorm):
            norm = layers.pop(0)
            if dense.bias or dense.activation.name != "identity" or norm.sync or not layers:
                return None
            plans.append(layer_plan(norm.activation, dense.n_in, dense.n_out, (norm.momentum, norm.eps)))
        elif dense.bias:
            plans.append(layer_plan(dense.activation, dense.n_in, dense.n_out))
        else:
            return None
    return tuple(plans)


def dense_layers(model) -> tuple:
    """A model's Dense layers as Layer plans (the generators' view of it; Dropout left out).
    Also what the fused Numba-CUDA forward (mlp.kernels.cuda_fused) generates from."""
    return tuple(layer_plan(layer.activation, layer.n_in, layer.n_out) for layer in model.dense_layers)


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
    weighted: bool = False  # the step takes row weights R (batch, 1): sample or class weights


BLOCKED_FROM = 8  # the smallest batch whose products are taken in register blocks (see `blocks`)


def n_weights(model) -> int:
    return sum(layer.n_in * layer.n_out for layer in model.dense_layers)


def step_plan(model, plan_batch, weighted=False) -> StepPlan:
    """The plan of `model`'s whole compiled training step for batches of `plan_batch` rows
    (`weighted`: with row weights)."""
    weights, layers = n_weights(model), step_layers(model)
    # BatchNorm's column passes run on one thread; splitting the rest measured no faster (deep-bn,
    # 10 x 64 sigmoid, batch 128: 121k samples/s split, 125k not) and compiles for a minute
    normalised = any(layer.norm for layer in layers)
    return StepPlan(layers, model.loss.name, model.loss.fused_with is not None,
                    model.optimizer.update_plan, model.l1 > 0, model.l2 > 0, model.clip_norm is not None,
                    str(model.dtype), blocks(plan_batch, weights), splits(plan_batch, weights) and not normalised,
                    weighted)


def forward_plan(model, batch) -> tuple:
    """(layers, dtype, blocked, split): the arguments of `model`'s compiled forward pass for
    batches of `batch` rows (numba_codegen.forward_source)."""
    weights = n_weights(model)
    return dense_layers(model), str(model.dtype), blocks(batch, weights), splits(batch, weights)


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


PARALLEL_WEIGHTS = 1 << 16  # inference splits a layer's units across cores from this size on


ROW_BLOCK = 4  # rows of the batch per pass over a weight row (unblocked passes)


UNIT_BLOCK = 4  # rows of W per pass over a row of the input delta (unblocked steps)


GEMM_ROWS = 4  # a register block of a product: GEMM_ROWS x GEMM_COLUMNS accumulators


GEMM_COLUMNS = 16  # two AVX2 vectors of float32


def transposes(layer):
    """Whether a blocked forward pass takes this layer as a register-blocked product over
    W^T (else as dot products over rows of W, as unblocked passes do)."""
    return layer.n_out >= GEMM_COLUMNS


def parallel_units(layer):
    """Only inference is split: splitting the step's forward or (by columns of W) its
    backward measured slower on 2 cores (mnist batch 1: 616 and 1438 us against 400 us)."""
    return layer.n_in * layer.n_out >= PARALLEL_WEIGHTS


def forward_is_parallel(layers, split=False) -> bool:
    """Whether the compiled forward pass of `layers` runs on Numba's threads (a large layer's
    units, or the split products and rows of a `split` pass)."""
    return split or any(parallel_units(layer) for layer in layers)


def workspace_layout(layers, training, blocked=False) -> Workspace:
    """The workspace of a step (`training`) or forward pass: see mlp.kernels.numba_workspace;
    W_l^T for the layers whose forward pass is a register-blocked product (`transposes`)."""
    transposed = [k for k, layer in enumerate(layers, start=1) if blocked and transposes(layer)]
    return Workspace.of(layers, training, transposed)


def workspace(layers, batch, training, dtype, blocked=False):
    """(work, A_L): the buffer a generated step (training) or forward pass takes as `work`
    for `batch` rows, and the view of it that holds the output activations."""
    return workspace_layout(layers, training, blocked).allocate(batch, dtype, f"A{len(layers)}")


def step_arguments(plan) -> list:
    """The generated step's arguments: only those its plan uses (dispatch costs per argument)."""
    names = ["X", "Y"] + (["R"] if plan.weighted else []) + ["params"] + (["grads"] if writes_grads(plan) else [])
    names += ["stats"] if any(layer.norm for layer in plan.layers) else []  # BatchNorm's running statistics
    names += update_code.state_arguments(plan.optimizer) + ["work"] + update_code.scalar_arguments(plan.optimizer)
    return names + [name for name, used in (("l1", plan.l1), ("l2", plan.l2), ("clip", plan.clip)) if used]


def writes_grads(plan):
    """Whether the step writes `grads`: with clipping, and in blocked steps whose update is
    not folded into the products."""
    return plan.clip or (plan.blocked and not folds(plan))


def folds(plan):
    """Whether plain SGD is folded into the weight-gradient products (W += -lr D^T A): no
    penalty to add, and no global norm to wait for."""
    return plan.optimizer.name == "sgd_plain" and not (plan.l1 or plan.l2 or plan.clip)
