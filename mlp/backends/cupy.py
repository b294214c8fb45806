"""The CuPy backend: NVIDIA GPUs.

Parameters, gradients, optimizer state and the training set live on the GPU (the set moves
once per `fit`, or streams batch by batch when it does not fit). GEMMs go to cuBLAS through
CuPy; everything element-wise is one generated kernel per pass (mlp.kernels.cuda_source,
from the same formulas as NumPy): bias + activation, activation derivative x delta, output
activation + loss + output delta, and the optimizer over the whole flat buffer.

CUDA graphs: for a fixed batch size, `fit` and `train_step` run one uncaptured warm-up step,
then capture the whole step (forward, loss, backward, update) once and replay it, so a step
is one launch from Python. The learning rate and Adam's step count are read from device
memory, so a replayed graph follows a schedule; nothing in a step waits for the host.

Environment:
- MLP_DEVICE=N: the GPU to use (default: CuPy's current device, 0; with MLP_DISTRIBUTED=1,
  the local rank's).
- MLP_TF32=1: TensorFloat-32 tensor-core GEMMs for float32 (CuPy's CUPY_TF32, set before
  CuPy is imported; about 10 mantissa bits in the products).
- MLP_CUDA_GRAPHS=0: run every step uncaptured.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np

from mlp import activations as activations_mod, config
from mlp.activations import derivative_inputs
from mlp.backends._base import Backend as _Base
from mlp.backends._base import require
from mlp.errors import BackendUnavailableError, ConfigurationError, DeviceMemoryError

if config.flag("MLP_TF32", False):
    os.environ.setdefault("CUPY_TF32", "1")  # CuPy reads it once, at import

cupy = require("cupy", "cupy", "cuda")

from mlp.kernels import cuda_source, dump  # noqa: E402 (after CUPY_TF32 is set)

THREADS = 256
MAX_BLOCKS = 4096  # kernels stride over the grid: more blocks than this only add scheduling


def find_device():
    """The CUDA device id to use, or BackendUnavailableError saying why there is none."""
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        count, reason = 0, str(error)
    else:
        reason = "the CUDA runtime reports 0 devices"
    if count == 0:
        raise BackendUnavailableError(
            f"No CUDA device was found ({reason}). The 'cupy' backend needs an NVIDIA GPU and its "
            "driver; on this machine use MLP_BACKEND=numpy or MLP_BACKEND=numba.")
    wanted = config.device()
    if wanted is None:
        from mlp import distributed

        if distributed.requested():  # one GPU per rank on each machine
            return distributed.local_rank() % count
        return cupy.cuda.runtime.getDevice()
    if wanted >= count:
        raise ConfigurationError(f"MLP_DEVICE={wanted}: this machine has {count} CUDA device(s), "
                                 f"numbered 0 to {count - 1}")
    return wanted


class _CounterRNG:
    """Dropout randomness as (seed, counter) on the device: masks are a hash of them and the
    element index, so a replayed graph draws fresh masks and a checkpoint is two integers."""

    def __init__(self, seed):
        self.state = cupy.asarray(np.array([seed & (2**64 - 1), 0], dtype=np.uint64))


class _DeviceHyper:
    """An optimizer's scalars in device memory (float64), written from the host only when the
    host's values differ from what the device holds."""

    def __init__(self, params, plan):
        self.params = params  # keeps the id it is filed under alive
        self.plan = plan
        self.array = cupy.zeros(len(cuda_source.device_scalars(plan)), dtype=np.float64)
        self.host = None

    def ensure(self, values):
        if values != self.host:
            padded = np.zeros(self.array.size)
            padded[:len(values)] = values
            self.array.set(padded)
            self.host = values


class Backend(_Base):
    name = "cupy"
    xp = cupy
    on_host = False
    memory_errors = (MemoryError, cupy.cuda.memory.OutOfMemoryError)

    def __init__(self):
        self.device_id = find_device()
        self.device = cupy.cuda.Device(self.device_id)
        self.device.use()
        self.graphs = config.flag("MLP_CUDA_GRAPHS", True)
        self.tf32 = os.environ.get("CUPY_TF32") == "1"
        self._modules = {}
        self._hyper = {}
        self._capturing = False

    # --- arrays -------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        try:
            return cupy.asarray(x, dtype=dtype)
        except cupy.cuda.memory.OutOfMemoryError as error:
            nbytes = np.asarray(x).nbytes if not isinstance(x, cupy.ndarray) else x.nbytes
            raise DeviceMemoryError(f"GPU {self.device_id} is out of memory copying {nbytes / 2**20:.1f} MiB "
                                    f"to it ({error}); lower the batch size") from error

    def to_numpy(self, a):
        return cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else np.asarray(a)

    def synchronize(self):
        cupy.cuda.get_current_stream().synchronize()

    def resident(self, X):
        """On the GPU when it takes at most half of the free memory; else it stays in host
        memory and each batch is copied when it is taken."""
        if not isinstance(X, cupy.ndarray):
            free, _ = cupy.cuda.runtime.memGetInfo()
            if X.nbytes > free // 2:
                return X
        return self.asarray(X)

    def take_rows(self, X, index):
        if not isinstance(X, cupy.ndarray):  # a streamed training set
            rows = index if isinstance(index, slice) else cupy.asnumpy(index)
            return self.asarray(np.ascontiguousarray(X[rows]))
        return X[index]

    # --- randomness ----------------------------------------------------------------
    def rng(self, seed):
        return _CounterRNG(int(seed))

    def rng_state(self, rng):
        seed, counter = (int(v) for v in cupy.asnumpy(rng.state))
        return {"seed": seed, "counter": counter}

    def set_rng_state(self, rng, state):
        rng.state.set(np.array([state["seed"], state["counter"]], dtype=np.uint64))

    def dropout_mask(self, rng, shape, rate, dtype):
        mask = cupy.empty(shape, dtype)
        kernels = self._kernels(dtype)
        self._launch(kernels["dropout_mask"], mask.size, mask, rng.state, np.int64(mask.size),
                     np.dtype(dtype).type(1.0 - rate))
        self._launch(kernels["counter_tick"], 1, rng.state)
        return mask

    # --- kernels ------------------------------------------------------------------
    def _kernels(self, dtype, activations=(), losses=(), optimizers=()):
        """{kernel name: cupy.RawKernel} from the module for this dtype with these
        activations, losses and optimizer plans (compiled once; CuPy also caches the binary on disk)."""
        key = (np.dtype(dtype).name, tuple(cuda_source.activation_key(a) for a in activations),
               tuple(loss.name for loss in losses), tuple(optimizers))
        if key not in self._modules:
            source = cuda_source.module_source(key[0], activations, losses, optimizers)
            dump.write(source, "cuda_module", key, ".cu")
            module = cupy.RawModule(code=source, options=("--std=c++17",))
            self._modules[key] = {name: module.get_function(name) for name in cuda_source.kernel_names(source)}
        return self._modules[key]

    @staticmethod
    def _launch(kernel, work, *args):
        blocks = max(1, min(MAX_BLOCKS, math.ceil(work / THREADS)))
        kernel((blocks,), (THREADS,), args)

    # --- dense layer --------------------------------------------------------------
    def dense_forward(self, X, W, b, activation):
        if not activation.elementwise:
            return super().dense_forward(X, W, b, activation)
        Z = cupy.matmul(X, W.T)
        kernel = self._kernels(Z.dtype, (activation,))[f"forward_{cuda_source.activation_key(activation)}"]
        self._launch(kernel, Z.size, Z, b, np.int64(Z.shape[1]), np.int64(Z.size))
        return Z

    def dense_forward_keeping_input(self, X, W, b, activation):
        Z = cupy.matmul(X, W.T)
        A = cupy.empty_like(Z)
        kernel = self._kernels(Z.dtype, (activation,))[f"forward_keep_{cuda_source.activation_key(activation)}"]
        self._launch(kernel, Z.size, Z, b, A, np.int64(Z.shape[1]), np.int64(Z.size))
        return Z, A

    def delta_and_bias_gradient(self, A, dA, activation, db, Z=None):
        if activation is None or not activation.elementwise:
            return super().delta_and_bias_gradient(A, dA, activation, db, Z)
        dA = cupy.ascontiguousarray(dA)
        dZ = cupy.empty_like(dA)
        kernel = self._kernels(dA.dtype, (activation,))[f"backward_{cuda_source.activation_key(activation)}"]
        self._launch(kernel, dZ.size, *derivative_inputs(activation.needs, Z, A), dA, dZ, np.int64(dZ.size))
        cupy.sum(dZ, axis=0, out=db)
        return dZ

    # --- BatchNorm: generated kernels per activation (cuda_source.batchnorm_source) -------
    def _batchnorm_kernels(self, dtype, activation):
        key = ("batchnorm", np.dtype(dtype).name, cuda_source.activation_key(activation))
        if key not in self._modules:
            source = cuda_source.batchnorm_source(key[1], activation)
            dump.write(source, "cuda_batchnorm", key, ".cu")
            module = cupy.RawModule(code=source, options=("--std=c++17",))
            self._modules[key] = {name: module.get_function(name) for name in cuda_source.kernel_names(source)}
        return self._modules[key]

    def batch_norm_statistics(self, X):
        X = cupy.ascontiguousarray(X)
        rows, cols = X.shape
        mean, var = cupy.empty(cols, X.dtype), cupy.empty(cols, X.dtype)
        kernels = self._batchnorm_kernels(X.dtype, activations_mod.get("identity"))
        self._launch(kernels["bn_statistics"], cols, X, mean, var, np.int64(rows), np.int64(cols))
        return mean, var

    def batch_norm_forward(self, X, mean, inv_std, gamma, beta, activation):
        if not activation.elementwise:
            return super().batch_norm_forward(X, mean, inv_std, gamma, beta, activation)
        X = cupy.ascontiguousarray(X)
        X_hat, Z, A = cupy.empty_like(X), cupy.empty_like(X), cupy.empty_like(X)
        inv_std = cupy.ascontiguousarray(inv_std, dtype=X.dtype)
        kernel = self._batchnorm_kernels(X.dtype, activation)[f"bn_forward_{cuda_source.activation_key(activation)}"]
        self._launch(kernel, X.size, X, mean, inv_std, gamma, beta, X_hat, Z, A, np.int64(X.shape[0]),
                     np.int64(X.shape[1]))
        return X_hat, Z, A

    def batch_norm_sums(self, Z, A, dA, X_hat, activation):
        if not activation.elementwise:
            return super().batch_norm_sums(Z, A, dA, X_hat, activation)
        dA = cupy.ascontiguousarray(dA)
        dZ, sum_dZ, sum_dZ_X_hat = cupy.empty_like(dA), cupy.empty(dA.shape[1], dA.dtype), cupy.empty(dA.shape[1],
                                                                                                        dA.dtype)
        kernel = self._batchnorm_kernels(dA.dtype, activation)[f"bn_sums_{cuda_source.activation_key(activation)}"]
        self._launch(kernel, dA.shape[1], *derivative_inputs(activation.needs, Z, A), dA, X_hat, dZ, sum_dZ,
                     sum_dZ_X_hat, np.int64(dA.shape[0]), np.int64(dA.shape[1]))
        return dZ, sum_dZ, sum_dZ_X_hat

    def batch_norm_input_delta(self, dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat, rows):
        dX = cupy.empty_like(dZ)
        kernels = self._batchnorm_kernels(dZ.dtype, activations_mod.get("identity"))
        inv_std = cupy.ascontiguousarray(inv_std, dtype=dZ.dtype)
        self._launch(kernels["bn_input_delta"], dZ.size, dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat,
                     dZ.dtype.type(rows), dX, np.int64(dZ.shape[0]), np.int64(dZ.shape[1]))
        return dX

    # --- the loss ------------------------------------------------------------------
    def output_and_loss(self, Z, Y, loss, activation, weights=None):
        if weights is not None:  # the fused kernels are unweighted; weighted fits take the xp definition
            return super().output_and_loss(Z, Y, loss, activation, weights)
        real = Z.dtype.type
        A, dZ = cupy.empty_like(Z), cupy.empty_like(Z)
        Y = cupy.ascontiguousarray(Y, dtype=Z.dtype)
        kernels = self._kernels(Z.dtype)
        if loss.name == "cross_entropy":
            rows, cols = Z.shape
            row_loss = cupy.empty(rows, Z.dtype)
            self._launch(kernels["softmax_cross_entropy"], rows, Z, Y, A, dZ, row_loss,
                         np.int64(rows), np.int64(cols), real(1.0 / rows))
            return row_loss.sum() * real(1.0 / rows), A, dZ
        if loss.name == "binary_cross_entropy":
            term = cupy.empty_like(Z)
            scale = real(1.0 / Z.size)
            self._launch(kernels["sigmoid_binary_cross_entropy"], Z.size, Z, Y, A, dZ, term,
                         np.int64(Z.size), scale)
            return term.sum() * scale, A, dZ
        return super().output_and_loss(Z, Y, loss, activation)

    def loss_and_gradient(self, A, Y, loss, weights=None):
        if weights is not None:
            return super().loss_and_gradient(A, Y, loss, weights)
        A = cupy.ascontiguousarray(A)
        Y = cupy.ascontiguousarray(Y, dtype=A.dtype)
        dA, term = cupy.empty_like(A), cupy.empty_like(A)
        scale = A.dtype.type(1.0 / loss.normaliser(A.shape))
        kernel = self._kernels(A.dtype, (), (loss,))[f"loss_{loss.name}"]
        self._launch(kernel, A.size, A, Y, dA, term, np.int64(A.size), scale)
        return term.sum() * scale, dA

    # --- the optimizer over the flat buffer ------------------------------------------
    def _device_hyper(self, params, optimizer):
        """The device's copy of `optimizer`'s scalars for the buffer `params`, made current
        (unless capturing: capture replays what the device holds, made current before)."""
        plan = optimizer.update_plan
        hyper = self._hyper.get(id(params))
        if hyper is None or hyper.params is not params or hyper.plan != plan:
            hyper = self._hyper[id(params)] = _DeviceHyper(params, plan)
        if not self._capturing:
            values = tuple(optimizer.values(plan).values())
            hyper.ensure(values + ((float(optimizer.step),) if plan.counts_steps else ()))
        return hyper

    def sync_optimizer(self, params, optimizer):
        """Make the device's copy of the optimizer's scalars current (before a graph replay)."""
        self._device_hyper(params, optimizer)

    def counted_step(self, params, optimizer):
        """After a step: the device counted one more step where the optimizer counts them."""
        hyper = self._hyper[id(params)]
        if optimizer.update_plan.counts_steps:
            hyper.host = hyper.host[:-1] + (hyper.host[-1] + 1.0,)

    def optimizer_update(self, optimizer, params, grads):
        plan = optimizer.update_plan
        hyper = self._device_hyper(params, optimizer)
        kernels = self._kernels(params.dtype, optimizers=(plan,))
        if plan.derive is not None:
            self._launch(kernels[f"tick_{plan.name}"], 1, hyper.array)
        states = [optimizer.arrays[name] for name in plan.state]
        self._launch(kernels[f"update_{plan.name}"], params.size, params, grads, *states, hyper.array,
                     np.int64(params.size))
        self.counted_step(params, optimizer)

    # --- the whole step as a CUDA graph ----------------------------------------------
    def fused_train_step(self, model, batch, plan_batch=None, weighted=False):  # a graph per shape: not plan_batch
        if not self.graphs:
            return None
        optimizer = model.optimizer
        key = ("graph", batch, id(optimizer), tuple(id(a) for a in optimizer.state_arrays().values()), weighted)
        cache = model._kernel_cache
        if key not in cache:
            cache[key] = GraphStep(self, model, batch)
        return cache[key]

    def fused_forward(self, model, batch):
        from mlp.kernels import cuda_fused

        return cuda_fused.forward_for(self, model, batch)


class GraphStep:
    """One model's training step at one batch size: a warm-up call runs it uncaptured (kernels
    compile, cuBLAS sets up, memory is pooled), the next captures it into a CUDA graph, and
    every later call copies the batch into the graph's input buffers and replays it."""

    def __init__(self, backend, model, batch):
        self.backend, self.model, self.batch = backend, model, batch
        self.graph = None
        self.warm = False
        self.failed = False

    def __call__(self, X, Y, *row_weights):  # R (batch, 1) when weighted: a third graph input
        backend, model = self.backend, self.model
        if not self.warm or self.failed:
            self.warm = True
            return self.model._layerwise_step(X, Y, *row_weights)
        if self.graph is None:
            return self._capture_or_fall_back(X, Y, row_weights)
        for buffer, given in zip(self.inputs, (X, Y, *row_weights)):
            cupy.copyto(buffer, given)
        backend.sync_optimizer(model.params, model.optimizer)
        self.graph.launch()
        model.optimizer.count_step()
        backend.counted_step(model.params, model.optimizer)
        # the loss is copied (one tiny device copy): a caller may keep it across steps; the
        # output buffer is the graph's, overwritten by the next replay
        return self.value.copy(), [self.output]

    def _capture_or_fall_back(self, X, Y, row_weights):
        """Capture; if CUDA refuses (an operation that cannot be captured, an old driver), say
        so once and run this model's steps at this batch size uncaptured from then on. Host
        state that the aborted capture advanced (Adam's step, the device-scalar cache) is put
        back first, since none of the captured work ran."""
        optimizer = self.model.optimizer
        step = getattr(optimizer, "step", None)
        try:
            return self._capture(X, Y, row_weights)
        except Exception as error:  # noqa: BLE001  (any capture failure: reported, then uncaptured)
            self.failed = True
            if step is not None:
                optimizer.step = step
            self.backend._hyper.pop(id(self.model.params), None)
            warnings.warn(f"CUDA graph capture failed at batch size {self.batch} ({type(error).__name__}: "
                          f"{error}); running these steps uncaptured. MLP_CUDA_GRAPHS=0 skips capture.",
                          RuntimeWarning, stacklevel=3)
            return self.model._layerwise_step(X, Y, *row_weights)

    def _capture(self, X, Y, row_weights):
        backend, model = self.backend, self.model
        self.inputs = [cupy.array(given, copy=True) for given in (X, Y, *row_weights)]
        backend.sync_optimizer(model.params, model.optimizer)
        cupy.cuda.get_current_stream().synchronize()  # inputs and scalars in place before capture
        self.pool = cupy.cuda.MemoryPool()  # the graph's own memory: nothing else reuses it
        stream = cupy.cuda.Stream(non_blocking=True)
        backend._capturing = True
        try:
            with cupy.cuda.using_allocator(self.pool.malloc), stream:
                stream.begin_capture()
                try:
                    value, outputs = self.model._layerwise_step(*self.inputs)
                finally:
                    graph = stream.end_capture()
        finally:
            backend._capturing = False
        self.graph, self.value, self.output = graph, value, outputs[-1]
        self.graph.launch()  # the capture recorded this step without running it
        return self.value.copy(), [self.output]
