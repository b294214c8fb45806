"""The model: a stack of layers over one flat parameter buffer.

All weights and biases live in `model.params` (one contiguous backend array); each Dense
layer's W and b are views into it, and `model.grads` mirrors it. That makes the optimizer
one update over one buffer, a gradient all-reduce one call, and a checkpoint one array.

A training step is two halves with a seam between them:
`_compute_gradients` (forward, loss, the delta recursion backward, into `grads`) and
`_apply_gradients` (clipping, optimizer update). Data-parallel training reduces `grads`
between the two; a GPU backend may capture both as one graph. With plain SGD (no momentum,
penalty or clipping) a CPU backend may fold the halves together: each layer takes its step as
soon as its gradient is known, in one GEMM that adds into W (`_folded_sgd_rate`).
"""
from __future__ import annotations

import math
import numbers
import time
from collections.abc import Iterable

import numpy as np

from mlp import config, initializers, interrupt, losses, metrics as metrics_mod, optimizers, progress
from mlp import distributed as distributed_mod
from mlp import preprocessing as preprocessing_mod
from mlp import regularization, schedules, validation
from mlp.backends import get_backend
from mlp.errors import DeviceMemoryError, TrainingDivergedError
from mlp.layers import Dense, Dropout, Layer, from_config

PREDICT_BATCH = 8192
WARMUP_BYTES = 2**30
DTYPES = ("float32", "float64")


class History:
    """What `fit` returns: per-epoch logs in `history` (loss, val_loss, metrics, lr)."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.best_epoch = None
        self.stopped_epoch = None
        self.interrupted = False  # Ctrl-C stopped fit: the epochs listed are those that finished

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        """The per-epoch values of a logged name; an unknown name is a KeyError that lists the
        logged ones (a typo must not read as an empty list, or add the key)."""
        if key not in self.history:
            raise KeyError(f"{key!r} was not logged by this fit; it logged {', '.join(map(repr, self.history))}")
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def __repr__(self):
        last = {k: v[-1] for k, v in self.history.items() if v and isinstance(v[-1], float)}
        return f"History(epochs={len(self.epoch)}, last={last})"


class EarlyStopping:
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs, and
    restore the weights of the best epoch. Losses are minimised, accuracies maximised."""

    def __init__(self, patience=5, min_delta=0.0, monitor="val_loss", restore_best_weights=True):
        self.patience = validation.positive_int(patience, "patience")
        self.min_delta = validation.number(min_delta, "min_delta", low=0.0)
        if not isinstance(monitor, str):
            raise ValueError(f"monitor must be the name of a logged value, e.g. 'val_loss'; got {monitor!r}")
        self.monitor = monitor
        self.restore_best_weights = restore_best_weights
        self.sign = -1.0 if "accuracy" in monitor else 1.0
        self.start()

    def start(self):
        """Forget any earlier run: fit calls this unless it resumes a checkpoint."""
        self.best = math.inf
        self.wait = 0
        self.best_epoch = self.stopped_epoch = self.best_params = None

    @classmethod
    def from_arg(cls, value):
        if value is None or value is False:
            return None
        if isinstance(value, cls):
            return value
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return cls(patience=value)
        raise ValueError(f"early_stopping must be a patience (int) or mlp.EarlyStopping(...); got {value!r}")

    def check_monitor(self, logged):
        """Refuse, before training, a monitored value that fit will not log (`logged`: names)."""
        if self.monitor in logged:
            return
        if self.monitor.startswith("val_") and self.monitor[4:] in logged:
            raise ValueError(f"early stopping monitors {self.monitor!r}: give validation_data "
                             "or validation_split, or EarlyStopping(monitor='loss')")
        raise ValueError(f"early stopping monitors {self.monitor!r}, which fit does not "
                         f"report; available: {', '.join(logged)}")

    def update(self, epoch, logs, model) -> bool:
        """Record an epoch; True when training should stop."""
        if self.monitor not in logs:
            raise ValueError(f"early stopping monitors {self.monitor!r}, which fit does not "
                             f"report; available: {', '.join(logs)}")
        value = self.sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_params = model.params.copy()
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def restore(self, model):
        if self.restore_best_weights and self.best_params is not None:
            model.params[...] = self.best_params


class Sequential:
    """A stack of layers. `backend` (default: MLP_BACKEND, else numpy) runs the arrays,
    `dtype` is float32 or float64, `seed` makes initialisation, shuffling and dropout
    reproducible (and initial weights equal on every backend)."""

    def __init__(self, layers, backend=None, dtype=None, seed=None):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a model needs at least one layer")
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"layers must be mlp layers (Dense, Dropout); got {layer!r}")
        if not isinstance(self.layers[-1], Dense):
            raise ValueError("the last layer must be Dense: it produces the outputs")
        _check_unshared(self.layers)
        self.dense_layers = [layer for layer in self.layers if isinstance(layer, Dense)]
        for before, after in zip(self.dense_layers, self.dense_layers[1:]):
            if before.n_out != after.n_in:
                raise ValueError(f"layer sizes do not chain: {before!r} gives {before.n_out} outputs "
                                 f"but the next layer {after!r} expects n_in={after.n_in}")
        self.backend = get_backend(backend)
        self.dtype = _checked_dtype(dtype or config.default_dtype())
        self.seed = validation.seed(seed)
        init_seed, shuffle_seed, dropout_seed = np.random.SeedSequence(self.seed).spawn(3)
        self._shuffle_rng = np.random.default_rng(shuffle_seed)
        self._dropout_rng = self.backend.rng(int(dropout_seed.generate_state(1)[0]))
        n = self.n_params
        self.params = self.backend.zeros(n, self.dtype)
        self.grads = self.backend.zeros(n, self.dtype)
        self._bind_layers()
        init_rng = np.random.default_rng(init_seed)
        for layer in self.dense_layers:  # drawn on the host in float64: equal on every backend
            W = initializers.initial_weights(layer.init, init_rng, layer.n_in, layer.n_out)
            layer.W[...] = self.backend.asarray(W, self.dtype)
        self._first_dense = self.layers.index(self.dense_layers[0])
        self.loss = self.optimizer = None
        self.l1 = self.l2 = 0.0
        self.clip_norm = None
        self.metrics = []
        self._preprocessing = None
        self._kernel_cache = {}  # a backend's compiled whole steps for this model
        for layer in self.layers:  # last: a model refused above claims nothing
            layer.owner = self

    def _bind_layers(self):
        """Point each Dense layer's W, b, dW, db at its slices of the flat buffers."""
        offset = 0
        for layer in self.dense_layers:
            end = offset + layer.n_params
            layer.bind(self.params[offset:end], self.grads[offset:end])
            offset = end

    def __getstate__(self):
        """Pickled without the compiled steps (rebuilt on first use)."""
        return {**self.__dict__, "_kernel_cache": {}}

    def __setstate__(self, state):
        # Pickle copies views: the layers' W and b arrive as arrays of their own, which
        # training would never update. They are views of the flat buffers again.
        self.__dict__.update(state)
        self.__dict__.setdefault("_preprocessing", None)  # pickled before models carried it
        self._bind_layers()
        for owned in [*self.layers, *([self.optimizer] if self.optimizer is not None else [])]:
            owned.owner = self

    # --- description --------------------------------------------------------------
    @property
    def n_in(self):
        return self.dense_layers[0].n_in

    @property
    def n_out(self):
        return self.dense_layers[-1].n_out

    @property
    def n_params(self):
        return sum(layer.n_params for layer in self.dense_layers)

    def count_params(self):
        return self.n_params

    def config(self):
        out = {"layers": [layer.config() for layer in self.layers], "dtype": str(self.dtype)}
        if self.preprocessing is not None:
            out["preprocessing"] = self.preprocessing.config()
        return out

    @property
    def preprocessing(self):
        """What the model does to data at its edges (mlp.preprocessing.Preprocessing, or None):
        X is scaled as in training wherever it enters, targets may be given as the original
        class labels, and `predict_classes` returns them. Saved with the model."""
        return self._preprocessing

    @preprocessing.setter
    def preprocessing(self, value):
        self._preprocessing = preprocessing_mod.checked_for(value, self.n_in, self.n_out)

    def summary(self) -> str:
        lines = [f"Sequential on {self.backend.name} ({self.dtype})"]
        for layer in self.layers:
            lines.append(f"  {layer!r:<48} params: {layer.n_params:,}")
        lines.append(f"  total params: {self.n_params:,}")
        return "\n".join(lines)

    def __repr__(self):
        return f"Sequential({self.layers!r}, backend={self.backend.name!r}, dtype={str(self.dtype)!r})"

    def clone(self, backend=None, dtype=None):
        """A copy with the same architecture and weights, on another backend or dtype."""
        model = Sequential([from_config(c) for c in self.config()["layers"]],
                           backend=backend or self.backend, dtype=dtype or self.dtype, seed=self.seed)
        model.params[...] = model.backend.asarray(self.backend.to_numpy(self.params), model.dtype)
        model.preprocessing = self.preprocessing
        return model

    # --- weights ------------------------------------------------------------------
    def get_weights(self):
        """One (W: (n_out, n_in), b: (n_out,)) pair of NumPy arrays per Dense layer."""
        to_numpy = self.backend.to_numpy
        return [(to_numpy(layer.W).copy(), to_numpy(layer.b).copy()) for layer in self.dense_layers]

    def set_weights(self, pairs):
        """pairs: one (W: (n_out, n_in), b: (n_out,)) per Dense layer, as get_weights gives."""
        pairs = list(pairs)
        if len(pairs) != len(self.dense_layers):
            raise ValueError(f"expected {len(self.dense_layers)} (W, b) pairs, one per Dense layer; "
                             f"got {len(pairs)}")
        for i, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
                raise ValueError(f"set_weights takes one (W, b) pair per Dense layer; item {i} is {pair!r:.80}")
        checked = []
        for i, ((W, b), layer) in enumerate(zip(pairs, self.dense_layers)):
            W = validation.as_finite_array(W, f"W of layer {i}")
            b = validation.as_finite_array(b, f"b of layer {i}")
            if W.shape != layer.W.shape or b.shape != layer.b.shape:
                raise ValueError(f"layer {i} needs W {layer.W.shape} and b {layer.b.shape}; "
                                 f"got W {W.shape} and b {b.shape}")
            checked.append((validation.as_dtype(W, self.dtype, f"W of layer {i}"),
                            validation.as_dtype(b, self.dtype, f"b of layer {i}")))
        for (W, b), layer in zip(checked, self.dense_layers):
            layer.W[...] = self.backend.asarray(W, self.dtype)
            layer.b[...] = self.backend.asarray(b, self.dtype)

    # --- configuration for training -------------------------------------------------
    def compile(self, loss="mse", optimizer="sgd", l1=0.0, l2=0.0, clip_norm=None, metrics=None):
        """Choose the loss, optimizer, L1/L2 penalties on weights (not biases), gradient
        clipping by global norm, and the metrics `fit` and `evaluate` report
        (default: accuracy for classification losses)."""
        loss = self._checked_loss(loss)
        l1, l2 = validation.number(l1, "l1", low=0.0), validation.number(l2, "l2", low=0.0)
        if clip_norm is not None:
            clip_norm = validation.number(clip_norm, "clip_norm (or None)", low=0.0, low_open=True)
        optimizer = optimizers.get(optimizer)
        if optimizer.owner is not None and optimizer.owner is not self:
            raise ValueError(f"this {type(optimizer).__name__} already trains another model (its state "
                             "mirrors that model's weights); give each model an optimizer of its own, e.g. "
                             f"optimizer={optimizer.config()!r}")
        if metrics is None:
            metrics = ["accuracy"] if loss.name in losses.CLASSIFICATION else []
        metrics = metrics_mod.check_names(metrics, self.n_out)
        self.loss, self.l1, self.l2, self.clip_norm, self.metrics = loss, l1, l2, clip_norm, metrics
        self._kernel_cache.clear()  # compiled steps depend on loss, optimizer and penalties
        self.optimizer = optimizer
        optimizer.owner = self
        self.optimizer.build(self.backend, self.params)
        return self

    def _checked_loss(self, loss):
        loss = losses.get(loss)
        output = self.dense_layers[-1].activation.name
        if loss.fused_with and output != loss.fused_with:
            raise ValueError(
                f"loss {loss.name!r} needs a {loss.fused_with} output layer, but the output "
                f"activation is {output!r}. Build the model with output={loss.fused_with!r}, "
                f"e.g. mlp.MLP(sizes, output={loss.fused_with!r})."
            )
        for layer in self.dense_layers:
            if not layer.activation.differentiable:
                raise ValueError(
                    f"activation {layer.activation.name!r} has no derivative, so {layer!r} cannot "
                    "be trained by gradient descent; use mlp.Perceptron for the step rule, or a "
                    "differentiable activation (sigmoid, tanh, relu...)"
                )
        return loss

    def _require_compiled(self):
        if self.loss is None:
            raise RuntimeError("call model.compile(loss=..., optimizer=...) before training")

    # --- forward and backward -------------------------------------------------------
    def _forward(self, X, training, keep_logits=False, activate_last=True, keep=False):
        """Outputs of every layer, [X, A_1, ..., A_L], and the output layer's Z when asked
        (without A_L when `activate_last` is False: the caller fuses it with the loss).
        `keep`: a backward pass follows, and layers keep what their derivative reads."""
        outputs, logits = [X], None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dropout):
                X = layer.forward(self.backend, X, training, self._dropout_rng)
            elif keep_logits and i == last:
                logits = self.backend.linear(X, layer.W, layer.b)
                if not activate_last:
                    break
                X = self.backend.activate(logits, layer.activation)
            else:
                X = layer.forward(self.backend, X, keep)
            outputs.append(X)
        return outputs, logits

    def _backward(self, outputs, delta, fused, lr=None):
        """The delta recursion, last layer first; fills `grads` (with `lr`: each layer takes
        its plain SGD step as soon as its gradient is known, see `_folded_sgd_rate`)."""
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            layer = self.layers[i]
            if isinstance(layer, Dropout):
                delta = layer.backward(delta)
            else:
                delta = layer.backward(self.backend, outputs[i], outputs[i + 1], delta,
                                       need_dX=i > self._first_dense, fused=fused and i == last, lr=lr)

    def _penalty(self, l1, l2, add_gradients):
        """lam2 * sum(W^2) + lam1 * sum(|W|) over weights (not biases): mlp.regularization."""
        penalty = 0.0
        for layer in self.dense_layers:
            penalty = penalty + self.backend.xp.sum(regularization.penalty(layer.W, l1, l2))
            if add_gradients:
                layer.dW += regularization.penalty_gradient(layer.W, l1, l2)
        return penalty

    def _compute_gradients(self, X, Y, loss, l1, l2, training, lr=None):
        """Forward, loss and backward on one batch; fills `grads` (or, with `lr`, takes the
        plain SGD step layer by layer). Returns (loss value as a backend scalar, outputs of
        every layer)."""
        fused = loss.fused_with is not None
        outputs, logits = self._forward(X, training, keep_logits=fused, activate_last=not fused, keep=True)
        if fused:
            value, A, delta = self.backend.output_and_loss(logits, Y, loss, self.layers[-1].activation)
            outputs.append(A)
        else:
            value, delta = self.backend.loss_and_gradient(outputs[-1], Y, loss)
        self._backward(outputs, delta, fused, lr)
        if l1 or l2:
            value = value + self._penalty(l1, l2, add_gradients=True)
        return value, outputs

    def _apply_gradients(self):
        if self.clip_norm is not None:
            self.backend.scale_to_norm(self.grads, self.clip_norm)
        self.optimizer.apply(self.params, self.grads)

    def _folded_sgd_rate(self):
        """The learning rate when plain SGD can take its step inside the backward pass (no
        momentum, penalty or clipping needs the whole gradient first, and the backend gains
        by it); None otherwise."""
        optimizer = self.optimizer
        if (type(optimizer) is not optimizers.SGD or optimizer.momentum != 0.0 or self.clip_norm is not None
                or self.l1 or self.l2):
            return None
        folds = self._kernel_cache.get("folds_sgd")  # asked once (2 us), not on every step
        if folds is None:
            folds = self._kernel_cache["folds_sgd"] = self.backend.folds_sgd(self)
        return optimizer.lr if folds else None

    def _layerwise_step(self, X, Y):
        """One training step layer by layer: gradients into `grads`, then the optimizer (or
        with plain SGD where the backend folds it, each layer's step in the backward pass,
        `grads` then not necessarily written, as with a backend's compiled whole step)."""
        lr = self._folded_sgd_rate()
        value, outputs = self._compute_gradients(X, Y, self.loss, self.l1, self.l2, training=True, lr=lr)
        if lr is None:
            self._apply_gradients()
        return value, outputs

    def _train_batch(self, X, Y, plan_batch=None):
        """One step on a device batch; `plan_batch`: see Backend.fused_train_step."""
        fused = self.backend.fused_train_step(self, X.shape[0], plan_batch)
        if fused is not None:  # a whole compiled step; it may update without writing `grads`
            return fused(X, Y)
        return self._layerwise_step(X, Y)

    # --- public steps ---------------------------------------------------------------
    def _inputs(self, X):
        """X checked, scaled by the model's preprocessing if any, as a (batch, n_in) host array."""
        if self._preprocessing is not None:
            X = self._preprocessing.transform_inputs(X, self.n_in)
        return validation.inputs(X, self.n_in, self.dtype)

    def _targets(self, y, loss_name, n_samples):
        """y checked as a (batch, n_out) host array; class labels mapped to units if the
        model's preprocessing has classes."""
        if self._preprocessing is not None:
            y = self._preprocessing.encode_targets(y, self.n_out)
        return validation.targets(y, self.n_out, loss_name, n_samples, self.dtype)

    def _device_data(self, X, y, loss_name):
        X = self._inputs(X)
        Y = self._targets(y, loss_name, X.shape[0])
        return self.backend.asarray(X), self.backend.asarray(Y)

    def _infer(self, X):
        """Output activations of a device batch, without dropout."""
        fused = self.backend.fused_forward(self, X.shape[0])
        if fused is not None:
            return fused(X).copy()  # the compiled pass reuses its output buffer (one per thread)
        return self._forward(X, False)[0][-1]

    def forward(self, X, training=False):
        """Output activations (batch, n_out) as a backend array; `model(X)` is the same."""
        X = self.backend.asarray(self._inputs(X))
        return self._forward(X, True)[0][-1] if training else self._infer(X)

    def __call__(self, X, training=False):
        return self.forward(X, training)

    def predict(self, X, batch_size=PREDICT_BATCH):
        """Output activations as a NumPy array, computed in batches of `batch_size`."""
        X = self._inputs(X)
        batch_size = validation.batch_size(batch_size, X.shape[0])
        chunks = [self.backend.to_numpy(self._infer(self.backend.asarray(X[i:i + batch_size])))
                  for i in range(0, X.shape[0], batch_size)]
        return np.concatenate(chunks)

    def predict_classes(self, X, batch_size=PREDICT_BATCH):
        """The predicted class of each sample (batch,): the most probable output unit (one
        sigmoid unit: above 0.5), as the original label when the model carries its classes
        (mlp train, the scikit-learn estimators), else as a unit index."""
        classes = self._preprocessing is not None and self._preprocessing.classes is not None
        output = self.dense_layers[-1].activation.name
        if not (classes or output == "softmax" or (output == "sigmoid" and self.n_out == 1)):
            raise ValueError("predict_classes needs a classifier: a softmax output, one sigmoid unit, or classes "
                             "in model.preprocessing; this model's outputs are not one class per sample")
        return preprocessing_mod.predicted_classes(self.predict(X, batch_size), self._preprocessing)

    def predict_proba(self, X, batch_size=PREDICT_BATCH):
        """Class probabilities (batch, n_classes), columns in the order of the model's classes (as
        scikit-learn's): a softmax's outputs, or [1 - p, p] for one sigmoid unit."""
        output = self.dense_layers[-1].activation.name
        if not (output == "softmax" or (output == "sigmoid" and self.n_out == 1)):
            raise ValueError("predict_proba needs a softmax output or one sigmoid unit; this model's outputs "
                             f"({output}, {self.n_out} units) are not the probabilities of classes")
        P = self.predict(X, batch_size)
        return P if output == "softmax" else np.hstack([1 - P, P])

    def loss_and_gradients(self, X, y, loss=None, l1=None, l2=None, training=False):
        """(loss: float, [(dW, db), ...] as NumPy arrays), by the hand-derived backward pass.
        `loss`, `l1`, `l2` default to the compiled ones; `training=True` applies dropout."""
        loss = self._checked_loss(loss if loss is not None else (self.loss or "mse"))
        l1 = self.l1 if l1 is None else l1
        l2 = self.l2 if l2 is None else l2
        X, Y = self._device_data(X, y, loss.name)
        value, _ = self._compute_gradients(X, Y, loss, l1, l2, training)
        to_numpy = self.backend.to_numpy
        grads = [(to_numpy(layer.dW).copy(), to_numpy(layer.db).copy()) for layer in self.dense_layers]
        return float(value), grads

    def train_step(self, X, y):
        """One update on one batch. Returns the loss as a backend scalar (no device sync)."""
        self._require_compiled()
        X, Y = self._device_data(X, y, self.loss.name)
        return self._train_batch(X, Y)[0]

    def warmup(self, *batch_sizes) -> float:
        """Compile, ahead of time, what the first training step (once compiled with a loss) and
        the first inference pass at each batch size would (default: fit's 32), without touching
        this model's weights or optimizer state: a copy runs them on zeros. Numba compiles per
        architecture and batch-size range (seconds, then cached on disk), CuPy per kernel.
        Returns the seconds it took."""
        sizes = [validation.positive_int(n, "batch size") for n in batch_sizes or (32,)]
        for n in sizes:
            self._check_warmup_size(n)
        start = time.perf_counter()
        twin = self.clone()
        if self.loss is not None:
            twin.compile(loss=self.loss, optimizer=self.optimizer.config(), l1=self.l1, l2=self.l2,
                         clip_norm=self.clip_norm, metrics=[])
        for n in sizes:
            X = twin.backend.zeros((n, self.n_in), self.dtype)
            if self.loss is not None:
                twin._train_batch(X, twin.backend.zeros((n, self.n_out), self.dtype))
            twin._infer(X)
        self.backend.synchronize()
        return time.perf_counter() - start

    def _check_warmup_size(self, n):
        """Refuse a batch whose activations alone would take more than WARMUP_BYTES: warmup
        runs on zeros it allocates, and a typo (10**9) must not take the machine's memory."""
        widths = self.n_in + 3 * sum(layer.n_out for layer in self.dense_layers)  # X, then Z, A, delta
        need = n * widths * self.dtype.itemsize
        if need > WARMUP_BYTES:
            raise ValueError(f"warmup({n}) would allocate about {need / 2**30:.1f} GiB for its activations "
                             f"(the bound is {WARMUP_BYTES / 2**30:.0f} GiB); warm up the batch sizes fit and "
                             "predict will run (fit uses at most the number of samples)")

    def evaluate(self, X, y, batch_size=PREDICT_BATCH):
        """{'loss': ..., metric: ...} over the whole set (penalties included in the loss)."""
        self._require_compiled()
        X, Y = self._device_data(X, y, self.loss.name)
        return self._evaluate(X, Y, validation.batch_size(batch_size, X.shape[0]))

    def _evaluate(self, X, Y, batch_size):
        loss, n = self.loss, X.shape[0]
        total = 0.0
        totals = dict.fromkeys(self.metrics)
        for start in range(0, n, batch_size):
            Xb, Yb = X[start:start + batch_size], Y[start:start + batch_size]
            outputs, logits = self._forward(Xb, False, keep_logits=loss.fused_with is not None)
            A = outputs[-1]
            value = loss.value_from_logits(logits, Yb) if loss.fused_with else loss.value(A, Yb)
            total = total + value * loss.normaliser(A.shape)
            for name in self.metrics:
                totals[name] = metrics_mod.add(totals[name], metrics_mod.METRICS[name].totals(A, Yb))
        result = total / loss.normaliser(Y.shape)
        if self.l1 or self.l2:
            result = result + self._penalty(self.l1, self.l2, add_gradients=False)
        logs = {"loss": float(result)}
        logs.update({name: metrics_mod.METRICS[name].result(totals[name]) for name in self.metrics})
        return logs

    # --- training loop --------------------------------------------------------------
    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, validation_data=None,
            validation_split=0.0, early_stopping=None, lr_schedule=None, verbose=1,
            diagnostics=False, checkpoint=None, checkpoint_every=1, resume=None, distributed=None):
        """Train for `epochs` passes over (X, y). batch_size=None is full-batch gradient
        descent, 1 online (per-sample), anything else mini-batch. `validation_split` holds
        out a seeded random share of the data. `early_stopping` (patience or EarlyStopping)
        restores the best weights. `diagnostics=True` records per-layer statistics of the
        last step of each epoch in history['diagnostics'] (off: no cost).
        `checkpoint=path` saves the model and the whole training state atomically every
        `checkpoint_every` epochs; `resume=path` continues from such a file, so that an
        interrupted and resumed run ends with the same weights as an uninterrupted one
        (`epochs` counts from the start of the original run).
        `distributed=True` (or MLP_DISTRIBUTED=1) trains data-parallel on the ranks of an
        `mpiexec -n N` job (see mlp.distributed); `batch_size` is then the global batch.
        Returns a History."""
        from mlp import checkpoint as checkpoint_mod
        from mlp import diagnostics as diagnostics_mod

        self._require_compiled()
        epochs = validation.positive_int(epochs, "epochs")
        X = self._inputs(X)
        Y = self._targets(y, self.loss.name, X.shape[0])
        checkpoint_every = validation.positive_int(checkpoint_every, "checkpoint_every")
        validation.batch_size(batch_size, X.shape[0])
        validation_data = self._checked_validation(X, validation_data, validation_split)
        stopper = EarlyStopping.from_arg(early_stopping)
        if stopper is not None:
            stopper.check_monitor(self._logged_names(bool(validation_data or validation_split)))
        schedule = schedules.get(lr_schedule)
        if checkpoint is not None:  # a missing folder fails now, not after the first epoch
            checkpoint_mod.check_target(checkpoint)
        parallel = None
        if distributed_mod.requested(distributed):
            if diagnostics:
                raise ValueError("diagnostics=True records one process' step; turn it off for distributed training")
            parallel = distributed_mod.DataParallel(self, distributed_mod.get_world(self.backend))
            parallel.start(X, Y, dict(  # same data and settings everywhere; then rank 0's weights and shuffling
                epochs=epochs, batch_size=batch_size, shuffle=shuffle, validation_split=validation_split,
                validation_data=validation_data, early_stopping=early_stopping, lr_schedule=lr_schedule,
                resume=resume is not None))  # (before the validation split, which draws from the shuffling state)
            if parallel.rank != 0:
                verbose, checkpoint = 0, None  # rank 0 alone prints and writes
        saved = None
        if resume is not None:  # checked against this model and fit before anything changes
            saved = checkpoint_mod.load(resume, model=self, schedule=schedule, stopper=stopper)
            checkpoint_mod.check_logged(saved, self._logged_names(bool(validation_data or validation_split)))
        if saved is not None:  # replay the validation split exactly as the original run drew it
            self._shuffle_rng.bit_generator.state = saved.state["fit_start_rng"]
        elif stopper is not None:
            stopper.start()  # an EarlyStopping given to an earlier fit starts afresh
        fit_start_rng = self._shuffle_rng.bit_generator.state
        X, Y, X_val, Y_val = self._split_validation(X, Y, validation_data, validation_split)
        n = X.shape[0]
        batch = validation.batch_size(batch_size, n)
        backend, loss = self.backend, self.loss
        X, Y = backend.resident(X), backend.resident(Y)  # the whole set moves to the device once
        if X_val is not None:
            X_val, Y_val = backend.asarray(X_val), backend.asarray(Y_val)
        history = History()
        base_lr = self.optimizer.lr
        first_epoch = 0
        if saved is not None:
            first_epoch = checkpoint_mod.restore(saved, self, history, schedule, stopper)
            if checkpoint_mod.finished(stopper):  # the saved run had stopped early: it is complete
                first_epoch = epochs
        steps = math.ceil(n / batch)
        last_finite = _Snapshot(self, first_epoch)
        bar = progress.Progress(verbose, epochs, steps, n)
        ctrl_c = interrupt.StopRequest(active=parallel is None).start()
        try:
            for epoch in range(first_epoch, epochs):
                if schedule is not None:
                    self.optimizer.lr = schedules.rate(schedule, epoch, base_lr)
                last_finite.take(epoch)
                index = backend.asarray(self._shuffle_rng.permutation(n)) if shuffle else None
                bar.start_epoch(epoch)
                started = time.perf_counter()
                total = 0.0
                totals = dict.fromkeys(self.metrics)
                record = None
                for step in range(steps):
                    start, stop = step * batch, min((step + 1) * batch, n)
                    rows = slice(start, stop) if index is None else index[start:stop]
                    if parallel is not None:
                        rows, global_rows = parallel.shard(rows)
                    Xb, Yb = backend.take_rows(X, rows), backend.take_rows(Y, rows)
                    try:
                        if parallel is not None:
                            value, outputs = parallel.train_batch(Xb, Yb, global_rows)
                        elif diagnostics and step == steps - 1:
                            value, outputs, record = diagnostics_mod.recorded_step(self, Xb, Yb)
                        else:
                            value, outputs = self._train_batch(Xb, Yb, plan_batch=batch)
                    except backend.memory_errors as error:
                        raise DeviceMemoryError(
                            f"Out of memory in a training step at batch size {stop - start} on the "
                            f"{backend.name} backend ({error}). Lower batch_size, or make the model "
                            "smaller.") from error
                    if backend.on_host and not math.isfinite(value):
                        self._diverged(value, epoch, step, last_finite, stopper)
                    total = total + value * loss.normaliser(outputs[-1].shape)
                    for name in self.metrics:
                        totals[name] = metrics_mod.add(totals[name], metrics_mod.METRICS[name].totals(outputs[-1], Yb))
                    bar.step()
                    if ctrl_c.requested:
                        break
                if ctrl_c.requested:  # the partial epoch is not logged: its weights are kept
                    history.interrupted = True
                    bar.close()
                    bar.say(f"Interrupted (Ctrl-C) in epoch {epoch + 1}, after step {step + 1} of {steps}: the "
                            f"weights are those of that step; the history holds the {len(history.epoch)} "
                            "epochs that finished")
                    break
                if parallel is not None:
                    total, totals = parallel.reduce_epoch(total, totals)
                logs = {"loss": float(total / loss.normaliser(Y.shape))}
                if not math.isfinite(logs["loss"]):
                    self._diverged(logs["loss"], epoch, None, last_finite, stopper)
                logs.update({name: metrics_mod.METRICS[name].result(totals[name]) for name in self.metrics})
                if X_val is not None:
                    logs.update({f"val_{k}": v for k, v in self._evaluate(X_val, Y_val, PREDICT_BATCH).items()})
                logs["lr"] = self.optimizer.lr
                logs["seconds"] = time.perf_counter() - started
                history.append(epoch, logs)
                if record is not None:
                    history.history.setdefault("diagnostics", []).append(record)
                if schedule is not None:
                    schedule.observe(logs.get("val_loss", logs["loss"]))
                bar.end_epoch(logs)
                stop = stopper is not None and stopper.update(epoch, logs, self)
                if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or stop or epoch == epochs - 1):
                    checkpoint_mod.save(checkpoint, self, next_epoch=epoch + 1, history=history,
                                        fit_start_rng=fit_start_rng, schedule=schedule, stopper=stopper)
                if stop:
                    break
        except Exception as error:
            if parallel is not None and parallel.size > 1:  # stop every rank, not just this one
                parallel.world.abort(f"training failed on this rank: {type(error).__name__}: {error}")
            raise
        finally:
            ctrl_c.stop()
            bar.close()
            self.optimizer.lr = base_lr  # a schedule shapes this run only
        if stopper:
            stopper.restore(self)
            history.best_epoch, history.stopped_epoch = stopper.best_epoch, stopper.stopped_epoch
            if stopper.stopped_epoch is not None:
                if stopper.best_epoch is None:  # the monitored value never improved on infinity
                    kept = "no epoch improved on it; the last epoch's weights are kept"
                elif stopper.restore_best_weights:
                    kept = f"the weights of epoch {stopper.best_epoch + 1} are restored"
                else:
                    kept = "the last epoch's weights are kept (restore_best_weights=False)"
                bar.say(f"Early stopping after epoch {stopper.stopped_epoch + 1}: {stopper.monitor} has not improved "
                        f"for {stopper.patience} epochs; {kept}")
        return history

    def _logged_names(self, validating: bool) -> list:
        """The names fit logs each epoch, in their order."""
        names = ["loss", *self.metrics]
        return names + [f"val_{name}" for name in names] * validating + ["lr", "seconds"]

    def _checked_validation(self, X, validation_data, validation_split):
        """validation_data as checked arrays (X_val, Y_val), or None; validation_split checked
        against X's rows. Nothing is drawn here: a refused argument leaves the shuffling state."""
        if validation_split and validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        if validation_data is not None:
            try:
                X_val, y_val = validation_data
            except (TypeError, ValueError):
                raise ValueError("validation_data must be a pair (X_val, y_val)") from None
            X_val = self._inputs(X_val)
            return X_val, self._targets(y_val, self.loss.name, X_val.shape[0])
        if not validation_split:
            return None
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
                or not 0.0 < validation_split < 1.0:
            raise ValueError(f"validation_split must be in (0, 1); got {validation_split!r}")
        n = X.shape[0]
        n_val = int(round(n * validation_split))
        if n_val < 1 or n_val >= n:
            raise ValueError(f"validation_split={validation_split} leaves {n_val} of {n} samples for "
                             "validation; both parts need at least one sample")
        return None

    def _split_validation(self, X, Y, validation_data, validation_split):
        """(X, Y, X_val, Y_val) from checked arguments; a split draws from the shuffling state."""
        if validation_data is not None:
            return (X, Y) + validation_data
        if not validation_split:
            return X, Y, None, None
        n = X.shape[0]
        order = self._shuffle_rng.permutation(n)
        n_val = int(round(n * validation_split))
        val, train = order[:n_val], order[n_val:]
        return X[train], Y[train], X[val], Y[val]

    def _diverged(self, value, epoch, step, last_finite, stopper):
        """Put back finite weights (early stopping's best, else the last epoch's end) and raise."""
        where = f"epoch {epoch + 1}" + (f", batch {step + 1}" if step is not None else "")
        restored = last_finite.restore()
        if stopper is not None and stopper.best_params is not None:
            self.params[...] = stopper.best_params
            restored = stopper.best_epoch
            kept = f"restored the best weights, from the end of epoch {restored + 1} (early stopping's)"
        elif restored is None:
            kept = "restored the weights from the start of this fit"
        else:
            kept = f"restored the weights from the end of epoch {restored + 1}, the last finite ones"
        error = TrainingDivergedError(
            f"the loss became {value} at {where}: training diverged; {kept}. Lower the learning rate "
            f"(now {self.optimizer.lr}), standardise the inputs, or set clip_norm in compile()."
        )
        error.epoch, error.restored_epoch = epoch, restored
        raise error

    # --- files ----------------------------------------------------------------------
    def save(self, path):
        """Architecture as JSON plus weights as arrays, written atomically; see mlp.io."""
        from mlp import io

        io.save(self, path)


def _checked_dtype(dtype) -> np.dtype:
    try:
        name = str(np.dtype(dtype))
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return np.dtype(name)


class _Snapshot:
    """The weights and optimizer state at the start of an epoch: where a diverging fit returns
    to, so that a model never keeps NaN weights (a copy of the buffers per epoch)."""

    def __init__(self, model, first_epoch):
        self.model, self.first_epoch, self.epoch = model, first_epoch, None

    def take(self, epoch):
        optimizer = self.model.optimizer
        self.epoch, self.params = epoch, self.model.params.copy()
        self.state = {name: value.copy() for name, value in optimizer.state_arrays().items()}
        self.step = getattr(optimizer, "step", None)

    def restore(self):
        """Put the state back; returns the epoch whose end it is (None: the start of the fit)."""
        optimizer = self.model.optimizer
        self.model.params[...] = self.params
        for name, value in optimizer.state_arrays().items():
            value[...] = self.state[name]
        if self.step is not None:
            optimizer.step = self.step
        self.model._kernel_cache.clear()  # compiled steps may cache derived state
        return self.epoch - 1 if self.epoch > self.first_epoch else None


def _check_unshared(layers):
    """A layer object belongs to one place in one model: its W and b are views into that
    model's parameter buffer (and Dropout keeps its mask for the backward pass), so a second
    use would train one copy and predict with another."""
    seen = set()
    for layer in layers:
        if id(layer) in seen:
            raise ValueError(f"{layer!r} is used twice in this model; give each position a layer of "
                             "its own (a new Dense(...) or Dropout(...))")
        seen.add(id(layer))
        if layer.owner is not None:
            raise ValueError(f"{layer!r} already belongs to another model, which trains its weights; "
                             "build this model from new layers, or copy the other with model.clone()")


def MLP(sizes, activation="relu", output="identity", dropout=0.0, init=None,
        backend=None, dtype=None, seed=None):
    """A multilayer perceptron from its layer sizes, e.g. MLP([784, 128, 64, 10], output="softmax").
    Hidden layers use `activation` (and Dropout(dropout) after each when dropout > 0)."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise ValueError(f"sizes must be a list of layer widths, e.g. [784, 128, 10]; got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output size; got {sizes!r}")
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(Dense(n_in, n_out, activation=output if last else activation, init=None if last else init))
        if dropout and not last:
            layers.append(Dropout(dropout))
    return Sequential(layers, backend=backend, dtype=dtype, seed=seed)
