"""MLP_DUMP_KERNELS=DIR: every generated kernel source, Numba's (.py) and CUDA's (.cu), written
to DIR as it is loaded, under a header naming what it was generated for (its kind and plan),
as tinygrad's DEBUG=4 prints its kernels and CuPy keeps its CUDA sources. A Numba module is
compiled with its header (a comment), so the dumped file and the one in the kernel cache are
the same text, named by its hash. `mlp kernels` writes a model's sources without training it.
"""
from __future__ import annotations

import hashlib
import os

from mlp import config


def header(kind, plan, suffix) -> str:
    mark = "#" if suffix == ".py" else "//"
    lines = [f"mlp generated {kind} source (exactly as compiled, below this header)", f"plan: {plan!r}"]
    return "".join(f"{mark} {line}\n" for line in lines) + "\n"


def write(source, kind, plan=None, suffix=".py", folder=None, headed=False):
    """Write `source` with its header (`headed`: it has one already) into `folder` (default:
    MLP_DUMP_KERNELS; nothing when neither is set). Returns the path written, or None."""
    folder = folder or config.dump_kernels()
    if folder is None:
        return None
    from mlp.io import atomic_write

    os.makedirs(folder, exist_ok=True)
    text = (source if headed else header(kind, plan, suffix) + source).encode()
    digest = hashlib.sha1(text).hexdigest()[:16]
    path = os.path.join(folder, f"{kind}_{digest}{suffix}")
    atomic_write(path, lambda f: f.write(text))
    return path


def model_sources(model, batch, backends=("numba", "cupy")):
    """[(kind, plan, source, suffix)]: every source `model`'s training and inference would
    compile at this batch size on the Numba and CuPy backends (generated, not compiled:
    no Numba, CuPy or GPU is needed)."""
    from mlp import activations as mlp_activations
    from mlp.batchnorm import BatchNorm
    from mlp.kernels import (cuda_fused, cuda_source, numba_batchnorm, numba_codegen, numba_elementwise, numba_plan,
                             numba_update)
    from mlp.kernels.numba_products import product_source
    from mlp.layers import Dense
    from mlp.model import _every_layer

    dtype = str(model.dtype)
    activations = list({layer.activation.name: layer.activation for layer in model.dense_layers}.values())
    update = model.optimizer.update_plan if model.optimizer is not None else None
    found = []
    whole = all(isinstance(layer, Dense) and layer.bias for layer in model.layers)  # what the forward pass takes
    norms = [layer.activation for layer in _every_layer(model.layers) if isinstance(layer, BatchNorm)]
    if "numba" in backends:
        if model.loss is not None and numba_plan.step_layers(model) is not None:  # what the whole step takes
            plan = numba_plan.step_plan(model, batch)
            found.append(("step", plan, numba_codegen.step_source(plan), ".py"))
        if whole:
            forward = numba_plan.forward_plan(model, batch)
            found.append(("forward", forward, numba_codegen.forward_source(*forward), ".py"))
        found += [("batchnorm", (activation, dtype), numba_batchnorm.batchnorm_source(activation, dtype), ".py")
                  for activation in {a.name: a for a in [mlp_activations.get("identity"), *norms]}.values()
                  if norms and activation.elementwise]
        found.append(("product", None, product_source(), ".py"))
        found += [("elementwise", (activation, dtype), numba_elementwise.elementwise_source(activation, dtype), ".py")
                  for activation in activations]
        if update is not None:
            found.append(("update", (update, dtype), numba_update.update_source(update, dtype), ".py"))
    if "cupy" in backends:
        losses = [model.loss] if model.loss is not None and model.loss.fused_with is None else []
        key = (dtype, [a.name for a in activations], [loss.name for loss in losses], [update] if update else [])
        source = cuda_source.module_source(dtype, activations, losses, [update] if update else [])
        found.append(("cuda_module", key, source, ".cu"))
        layers = numba_plan.dense_layers(model)
        if cuda_fused.model_layers(model) is not None and cuda_fused.eligible(layers):
            found.append(("cuda_fused_forward", (layers, dtype), cuda_fused.forward_source(layers, dtype), ".py"))
    return found
