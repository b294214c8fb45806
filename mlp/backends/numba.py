"""The Numba backend: compiled, fused CPU kernels from the same formulas as NumPy.

- Small batches: the whole training step (forward, loss, backward, penalties, clipping,
  update) and the whole forward pass are one compiled call, generated per architecture with
  BLAS-free loops (mlp.kernels.numba_codegen), no Python per layer; small networks from
  batch 8 take their products from one shared register-blocked kernel, split across threads
  with enough rows and work.
- Large batches: GEMMs on NumPy's BLAS (faster here than the SciPy BLAS that np.dot inside
  njit calls); bias + activation, and activation derivative x delta + bias gradient, are
  each one fused compiled pass; the optimizer is one fused pass over the flat buffer.
- Which one runs is decided by the measured range of batch sizes where the compiled path is
  faster, per network size, for training and inference apart: measured on this machine by
  `python -m mlp.kernels.numba_crossover` (into the cache directory), else the table shipped in
  mlp/kernels/numba_crossover.json (measured on the CI machine); MLP_NUMBA_CROSSOVER=N overrides it.
Compiled code is cached on disk (MLP_CACHE_DIR, default ~/.cache/mlp/numba).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import math
import os
import threading
import types

import numpy as np

from mlp import activations, config
from mlp.backends._base import require
from mlp.backends.numpy import Backend as _NumpyBackend
from mlp.activations import derivative_inputs
from mlp.optimizers import SGD

if importlib.util.find_spec("numba") is None:  # (imported by the first kernel compiled: `_compiler`)
    require("numba", "numba", "numba")

from mlp.kernels import cache  # noqa: E402
from mlp.kernels import numba_plan as plan_rules  # noqa: E402
from mlp.kernels import numba_cost as cost  # noqa: E402


@functools.cache
def _compiler():
    """mlp.kernels.numba_cpu, which imports Numba (a quarter of a second here): imported by the first
    kernel a process compiles or loads, never by a fit that runs NumPy's reference code."""
    try:
        from mlp.kernels import numba_cpu
    except ImportError:
        require("numba", "numba", "numba")  # an installed Numba that does not import: say so
        raise
    return numba_cpu


@functools.cache
def _sources():
    """The source generators (mlp.kernels.numba_codegen, the element-wise and BatchNorm kernels';
    the update's comes with the plan rules): imported with the first kernel generated, never by
    a fit that runs NumPy's reference code (the backend's import took 23 ms with them, 14-19
    without)."""
    from mlp.kernels import numba_batchnorm, numba_codegen, numba_elementwise, numba_update

    return types.SimpleNamespace(codegen=numba_codegen, elementwise=numba_elementwise, batchnorm=numba_batchnorm,
                                 update=numba_update)


SHIPPED_CROSSOVER = os.path.join(os.path.dirname(plan_rules.__file__), "numba_crossover.json")


def own_crossover_file() -> str:
    """Where `python -m mlp.kernels.numba_crossover` writes this machine's own table."""
    return os.path.join(cache.module_folder(), "numba_crossover.json")  # checked: private, ours


def crossover_file() -> str:
    """This machine's own measured table if there is one, else the shipped one: where the
    compiled path stops winning moves with the machine (tiny-sized nets: batch 1024 on the
    Intel Xeon that measured the first table, 512 on an AMD EPYC, both 2 cores, one thread)."""
    own = own_crossover_file()
    return own if os.path.exists(own) else SHIPPED_CROSSOVER


def load_crossover(path=None, key="by_width", activation=None) -> dict | None:
    """{width w of the measured [w, w, w, 10] nets: a batch size}: the largest at which the
    whole compiled step (key "by_width") or forward pass ("inference_by_width") is faster, or
    the smallest ("from_by_width", "inference_from_by_width"); of nets with `activation` in
    their hidden layers (None if the file has no table of its own for it), else the narrower
    of all measured."""
    with open(path or crossover_file()) as f:
        return _table(json.load(f), key, activation)


def _table(data, key, activation=None):
    """One table of a crossover file's `data` (see `load_crossover`). A file measured before
    a table was: inference takes the training one, and the smallest batch is 1."""
    if activation is not None:
        data = data.get("by_activation", {}).get(activation)
        if data is None:
            return None
    if key in data:
        return {int(width): int(batch) for width, batch in data[key].items()}
    last = data.get(key.replace("from_", ""), data["by_width"])
    return {int(width): int(batch) if "from_" not in key else min(1, int(batch)) for width, batch in last.items()}


_weights = plan_rules.n_weights


# Numba's threading layer where neither OpenMP nor TBB is installed, "workqueue", aborts the
# process when two Python threads run parallel code at once (two models trained in threads
# did). Compiled calls that run on Numba's threads take this lock: each already has every
# core, so one at a time costs nothing, whichever layer runs them.
_THREADED_CALLS = threading.Lock()


def _one_at_a_time(function):
    """`function` (a compiled call that runs on Numba's threads) called under the lock."""
    def call(*args):
        with _THREADED_CALLS:
            return function(*args)
    return call


# This thread runs NumPy's reference code (`Backend.fitting`): a fit too short to win back
# what compiling its kernels costs, or inference by a model such a fit trained.
_REFERENCE = threading.local()


def _reference() -> bool:
    return getattr(_REFERENCE, "on", False)


@contextlib.contextmanager
def _running_reference(on: bool):
    before = _reference()
    _REFERENCE.on = on
    try:
        yield
    finally:
        _REFERENCE.on = before


def _or_reference(name, compiled):
    """Backend method `name`: `compiled` (which may compile), or NumPy's own where this thread
    runs the reference code."""
    reference = getattr(_NumpyBackend, name)

    @functools.wraps(compiled)
    def choose(self, *args, **kwargs):
        return (reference if _reference() else compiled)(self, *args, **kwargs)
    return choose


class Backend(_NumpyBackend):
    name = "numba"

    def __init__(self):
        super().__init__()
        with open(crossover_file()) as f:
            data = json.load(f)
        self.crossover = _table(data, "by_width")
        self.crossover_from = _table(data, "from_by_width")
        self.inference_crossover = _table(data, "inference_by_width")
        self.inference_crossover_from = _table(data, "inference_from_by_width")
        # Networks whose hidden layers all have one measured activation take its own tables
        # (width 64: tanh's compiled forward pass measured faster up to batch 8192, ReLU's up
        # to 64): {name: (by_width, from_by_width, inference_by_width, inference_from_by_width)}.
        self.crossover_by_activation = {}
        for name in data.get("by_activation", {}):
            self.crossover_by_activation[name] = tuple(
                _table(data, key, name) for key in ("by_width", "from_by_width", "inference_by_width",
                                                    "inference_from_by_width"))
        self.crossover_override = config.numba_crossover()
        self.compile_setting = config.numba_compile()  # (read here: a bad value is refused before any fit)
        self._generated = {}
        self._plain_sgd_plan = SGD().plan()

    # --- whether compiling pays ----------------------------------------------------------
    def fitting(self, model, steps, batch):
        """A fit runs compiled kernels only where its `steps` are expected to win back their
        compilation (`compiling_pays`), else NumPy's reference code (the same weights as the numpy
        backend's): decided from the settings alone, never from timing or from what the cache
        holds, so the same fit gives the same weights, cold or warm. Inference afterwards runs as
        the fit did (`inferring`)."""
        reference = not self.compiling_pays(model, steps, batch)
        model._kernel_cache["reference"] = reference
        return _running_reference(reference)

    def inferring(self, model):
        return _running_reference(model._kernel_cache.get("reference", False))

    def compiling_pays(self, model, steps, batch) -> bool:
        """Whether `steps` training steps of `batch` rows save more than compiling costs (cold):
        MLP_NUMBA_COMPILE decides where set; see `cost.compiling_pays`."""
        if self.compile_setting is not None:
            return self.compile_setting
        if self._fusable(model, batch):
            return cost.compiling_pays(model, steps, batch, "whole", plan_rules.step_plan(model, batch).split)
        return cost.compiling_pays(model, steps, batch, "layers")

    # --- which path -----------------------------------------------------------------
    def crossover_for(self, n_weights: int, table=None) -> int:
        """The crossover batch size of a network with `n_weights` weights: that of the measured
        net [w, w, w, 10] (2w^2 + 10w weights) nearest to it in log scale. A step's work
        scales with its weights, not its widest layer: mnist (784-512-512-10, the weights of
        w = 578) measured 742 us compiled against 1.3-1.5 ms on the BLAS path at batch 8,
        where the 1024-wide net, the next wider, is faster on the BLAS path."""
        if self.crossover_override is not None:
            return self.crossover_override
        table = self.crossover if table is None else table
        width = math.sqrt(n_weights / 2)
        nearest = min(table, key=lambda w: abs(math.log(w / width)))
        return table[nearest]

    def _fusable(self, model, batch, inference=False):
        layers = plan_rules.step_layers(model)
        if layers is None:
            return False  # dropout, blocks, a synchronised BatchNorm...: the per-layer path
        if any(layer.norm for layer in layers) and (inference or batch < 2):
            return False  # BatchNorm: inference by the running statistics and its refusals, per layer
        if any(not layer.formulas().elementwise for layer in layers[:-1]):
            return False
        if self.crossover_override is not None:
            return batch <= self.crossover_override
        hidden = {layer.activation for layer in layers[:-1]}
        last_train, first_train, last_infer, first_infer = self.crossover_by_activation.get(
            hidden.pop() if len(hidden) == 1 else None,
            (self.crossover, self.crossover_from, self.inference_crossover, self.inference_crossover_from))
        tables = (first_infer, last_infer) if inference else (first_train, last_train)
        first, last = (self.crossover_for(_weights(model), table) for table in tables)
        return first <= batch <= last

    # --- the whole step as one compiled call ----------------------------------------
    def fused_train_step(self, model, batch, plan_batch=None, weighted=False):
        """A function (X, Y[, R]) -> (loss, [A_L]) doing one training step, or None when the
        per-layer path is the faster (or the only) one for this model and batch size.
        Decided once per model, batch size, optimizer and override, not on every step.
        Path and code are chosen for `plan_batch` (fit's batch_size) when given: an epoch's
        last, shorter batch then runs the module its full batches compiled, not a second
        one compiled mid-fit (seconds, cold), and a fit's results depend on its settings only."""
        if _reference():  # (checked here, not by `_or_reference`: this runs on every step)
            return None
        plan_batch = max(batch, plan_batch or 0)
        key = ("step", batch, plan_batch, id(model.optimizer), self.crossover_override, weighted)
        cache = model._kernel_cache
        if key not in cache:
            fusable = self._fusable(model, plan_batch)
            cache[key] = self._train_step(model, batch, plan_batch, weighted) if fusable else None
        return cache[key]

    def _train_step(self, model, batch, plan_batch, weighted):
        optimizer = model.optimizer
        update = optimizer.update_plan
        plan = plan_rules.step_plan(model, plan_batch, weighted)
        step = _compiler().load(_sources().codegen.step_source(plan), "step", plan).step
        if plan.split:
            step = _one_at_a_time(step)
        work, output = plan_rules.workspace(plan.layers, batch, True, model.dtype, plan.blocked)
        arrays = {"params": model.params, "grads": model.grads, "work": work, "stats": model.state,
                  **{f"s_{name}": optimizer.arrays[name] for name in update.state}}
        names = plan_rules.step_arguments(plan)
        fixed = tuple(arrays[name] for name in names[names.index("params"):names.index("work") + 1])
        settings = tuple(value for value, used in ((model.l1, plan.l1), (model.l2, plan.l2),
                                                   (model.clip_norm, plan.clip)) if used)
        hyperparameters = _scalars(optimizer, update)

        def train(X, Y, *row_weights):  # R (batch, 1) when weighted
            loss = step(X, Y, *row_weights, *fixed, *hyperparameters(), *settings)
            if math.isfinite(loss):  # (a non-finite loss took no step)
                optimizer.count_step()
            return loss, [output]

        return train

    def fused_forward(self, model, batch):
        """A function X -> A_L (a buffer reused between calls), or None. Inference has its
        own measured crossover: the compiled forward pass runs on one core, the BLAS path's
        GEMMs on all (tiny, 2-64-64-1: the compiled pass 1.32x at batch 128, 0.85x at 512,
        where the compiled step still trains 1.48x faster)."""
        if _reference():
            return None
        # one per thread: a pass writes into its workspace, and threads may predict at once
        key = ("forward", batch, self.crossover_override, threading.get_ident())
        cache = model._kernel_cache
        if key not in cache:
            fusable = self._fusable(model, batch, inference=True)
            cache[key] = self._forward(model, batch) if fusable else None
        return cache[key]

    def _forward(self, model, batch):
        plan = plan_rules.forward_plan(model, batch)
        layers, _, blocked, split = plan
        forward = _compiler().load(_sources().codegen.forward_source(*plan), "forward", plan).forward
        if plan_rules.forward_is_parallel(layers, split):
            forward = _one_at_a_time(forward)
        work, _ = plan_rules.workspace(layers, batch, False, model.dtype, blocked)
        return lambda X: forward(X, model.params, work)

    # --- the per-layer path: BLAS GEMMs, fused element-wise passes ---------------------
    def _kernels_for(self, activation, dtype):
        key = (activation.name, tuple(activation.params.items()), dtype)  # str(dtype) takes 7.5 us: 4 calls a step
        if key not in self._generated:
            source = _sources().elementwise.elementwise_source(activation, str(dtype))
            self._generated[key] = _compiler().load(source, "elementwise", (activation, str(dtype)))
        return self._generated[key]

    def dense_forward(self, X, W, b, activation):
        Z = X @ W.T
        self._kernels_for(activation, Z.dtype).bias_activation(Z, b)
        return Z

    def dense_inference(self, X, W, b, activation):
        if not self._transposes(X, W) or not activation.elementwise:
            return super().dense_inference(X, W, b, activation)
        Zt = np.matmul(W, X.T)  # (see the NumPy backend's TRANSPOSE_FROM)
        # a pass in Zt's own order: bias_activation over the F-ordered Z strides, 0.86-0.94x NumPy's
        self._kernels_for(activation, Zt.dtype).bias_activation_t(Zt, b)
        return Zt.T

    def dense_forward_keeping_input(self, X, W, b, activation):
        Z = X @ W.T
        A = np.empty_like(Z)
        self._kernels_for(activation, Z.dtype).bias_activation_keep(Z, b, A)
        return Z, A

    def delta_and_bias_gradient(self, A, dA, activation, db, Z=None):
        if activation is None:
            return super().delta_and_bias_gradient(A, dA, None, db)
        dZ = np.empty_like(dA)
        inputs = derivative_inputs(activation.needs, Z, A)
        self._kernels_for(activation, dA.dtype).backward_bias(*inputs, np.ascontiguousarray(dA), dZ, db)
        return dZ

    # --- BatchNorm: generated kernels per activation (mlp.kernels.numba_batchnorm) -------
    def _batchnorm_kernels(self, activation, dtype):
        key = ("batchnorm", activation.name, tuple(activation.params.items()), dtype)
        if key not in self._generated:
            source = _sources().batchnorm.batchnorm_source(activation, str(dtype))
            self._generated[key] = _compiler().load(source, "batchnorm", (activation, str(dtype)))
        return self._generated[key]

    def _step_array(self, owner, role, like):
        """An array shaped as `like` that lives within the step: a kept buffer (no fresh pages
        to fault in at large batches), else a new one."""
        buffer = self.buffer(owner, role, like.shape, like.dtype)
        return np.empty_like(like) if buffer is None else buffer

    def batch_norm_statistics(self, X):
        X = np.ascontiguousarray(X)
        mean, var = np.empty(X.shape[1], X.dtype), np.empty(X.shape[1], X.dtype)
        self._batchnorm_kernels(activations.get("identity"), X.dtype).statistics(X, mean, var)
        return mean, var

    def batch_norm_forward(self, X, mean, inv_std, gamma, beta, activation):
        if not activation.elementwise:
            return super().batch_norm_forward(X, mean, inv_std, gamma, beta, activation)
        X = np.ascontiguousarray(X)
        X_hat, A = (self._step_array(gamma, role, X) for role in ("bn_X_hat", "bn_A"))
        Z = self._step_array(gamma, "bn_Z", X) if activation.keeps_input else None  # (None: the derivative reads A)
        inv_std = np.ascontiguousarray(inv_std, dtype=X.dtype)
        kept = (X_hat, Z, A) if Z is not None else (X_hat, A)
        self._batchnorm_kernels(activation, X.dtype).forward(X, mean, inv_std, gamma, beta, *kept)
        return X_hat, Z, A

    def batch_norm_sums(self, Z, A, dA, X_hat, activation):
        if not activation.elementwise:
            return super().batch_norm_sums(Z, A, dA, X_hat, activation)
        dA = np.ascontiguousarray(dA)
        dZ, sums = self._step_array(X_hat, "bn_dZ", dA), np.empty((2, dA.shape[1]), dA.dtype)
        inputs = derivative_inputs(activation.needs, Z, A)
        self._batchnorm_kernels(activation, dA.dtype).sums(*inputs, dA, X_hat, dZ, sums[0], sums[1])
        return dZ, sums[0], sums[1]

    def batch_norm_input_delta(self, dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat, rows):
        dX = self._step_array(gamma, "bn_dX", dZ)
        identity = self._batchnorm_kernels(activations.get("identity"), dZ.dtype)
        identity.input_delta(dZ, X_hat, gamma, np.ascontiguousarray(inv_std, dtype=dZ.dtype), sum_dZ, sum_dZ_X_hat,
                             dZ.dtype.type(rows), dX)
        return dX

    def input_delta(self, dZ, W):
        if W.shape[0] != 1:
            return super().input_delta(dZ, W)
        shape = (dZ.shape[0], W.shape[1])
        dX = self.buffer(W, "dX", shape, dZ.dtype)
        dX = np.empty(shape, dZ.dtype) if dX is None else dX
        _compiler().outer_rows(np.ascontiguousarray(dZ), np.ascontiguousarray(W), dX)
        return dX

    def square_norm(self, v):
        return v.dtype.type(_compiler().square_norm(np.ascontiguousarray(v)))

    def _update_kernel(self, plan, dtype):
        key = ("update", plan, dtype)
        if key not in self._generated:
            source = _sources().update.update_source(plan, str(dtype))
            self._generated[key] = _compiler().load(source, "update", (plan, str(dtype))).update
        return self._generated[key]

    def plain_sgd(self, params, grads, lr):
        plan = self._plain_sgd_plan
        self._update_kernel(plan, params.dtype)(params.reshape(-1), grads.reshape(-1), lr)  # flat views

    def optimizer_update(self, optimizer, params, grads):
        plan = optimizer.update_plan
        states = [optimizer.arrays[name] for name in plan.state]
        self._update_kernel(plan, params.dtype)(params, grads, *states, *_scalars(optimizer, plan)())


# Every override of a NumPy backend method may compile: each gives way to NumPy's own while this
# thread runs the reference code (derived from the class, not a list that could miss one), but for
# those that decide it themselves: the contexts, and the whole-step takeovers, asked on every step
# (NumPy's answer is None; a wrapper measured 0.9-1.6 us of a 6 us step, tiny at batch 1).
_DECIDE_THEMSELVES = ("fitting", "inferring", "fused_train_step", "fused_forward")
for _name, _method in list(vars(Backend).items()):
    if callable(_method) and not _name.startswith("_") and hasattr(_NumpyBackend, _name) \
            and _name not in _DECIDE_THEMSELVES:
        setattr(Backend, _name, _or_reference(_name, _method))


def _scalars(optimizer, plan):
    """A function () -> the scalar arguments of the next step's update (hyperparameters, then
    t when counted), as the generated code takes them (mlp.kernels.numba_update)."""
    read = plan.read_hyperparameters  # one attrgetter call: a small net's step takes microseconds
    if plan.counts_steps:
        return lambda: (*read(optimizer), optimizer.step + 1)
    return lambda: read(optimizer)
