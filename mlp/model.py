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

from mlp import activations, config, losses, metrics as metrics_mod, optimizers
from mlp import preprocessing as preprocessing_mod
from mlp import regularization, validation
from mlp import weights as weights_mod
from mlp.backends import get_backend
from mlp.errors import TrainingDivergedError
from mlp.batchnorm import BatchNorm
from mlp.layers import Dense, Dropout, Layer, from_config
from mlp.residual import Residual

PREDICT_BATCH = 8192
WARMUP_BYTES = 2**30
DTYPES = ("float32", "float64")


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
                raise TypeError(f"layers must be mlp layers (Dense, Dropout, BatchNorm, Residual); got {layer!r}")
        if not isinstance(self.layers[-1], Dense):
            raise ValueError("the last layer must be Dense: it produces the outputs")
        _check_unshared(self.layers)
        _check_widths(self.layers)
        self.dense_layers = [dense for layer in self.layers for dense in layer.dense()]
        self.backend = get_backend(backend)
        self.dtype = _checked_dtype(dtype or config.default_dtype())
        self.seed = validation.seed(seed)
        init_seed, shuffle_seed, dropout_seed = np.random.SeedSequence(self.seed).spawn(3)
        self._shuffle_rng = np.random.default_rng(shuffle_seed)
        self._dropout_rng = self.backend.rng(int(dropout_seed.generate_state(1)[0]))
        self.params = self.backend.zeros(self.n_params, self.dtype)
        self.grads = self.backend.zeros(self.n_params, self.dtype)
        self.state = self.backend.zeros(sum(layer.n_state for layer in self.layers), self.dtype)
        self._bind_layers()
        init_rng = np.random.default_rng(init_seed)  # drawn on the host in float64: equal on every backend

        def put(view, values):
            view[...] = self.backend.asarray(values, self.dtype)

        for layer in self.layers:
            layer.initialize(init_rng, put)
        self._first_dense = next(i for i, layer in enumerate(self.layers) if layer.n_params)
        self.loss = self.optimizer = None
        self.l1 = self.l2 = 0.0
        self.clip_norm = None
        self.metrics = []
        self._metrics = {}  # logged name -> mlp.metrics.Metric
        self._preprocessing = None
        self._kernel_cache = {}  # a backend's compiled whole steps for this model
        for layer in _every_layer(self.layers):  # last: a model refused above claims nothing
            layer.owner = self

    def _bind_layers(self):
        """Point each layer's parameters (a Dense layer's W, b, dW, db) at its slices of the flat
        buffers, and its non-trainable state (BatchNorm's running statistics) at the state buffer's."""
        offset = state = 0
        for layer in self.layers:
            end = offset + layer.n_params
            layer.bind(self.params[offset:end], self.grads[offset:end])
            layer.bind_state(self.state[state:state + layer.n_state])
            offset, state = end, state + layer.n_state

    def __getstate__(self):
        """Pickled without the compiled steps (rebuilt on first use)."""
        return {**self.__dict__, "_kernel_cache": {}}

    def __setstate__(self, state):
        # Pickle copies views: the layers' W and b arrive as arrays of their own, which
        # training would never update. They are views of the flat buffers again.
        self.__dict__.update(state)
        self.__dict__.setdefault("_preprocessing", None)  # pickled before models carried it
        if "state" not in self.__dict__:  # pickled before models had a state buffer
            self.state = self.backend.zeros(0, self.dtype)
        if "_metrics" not in self.__dict__:  # pickled before models kept their metric definitions
            self._metrics = {name: metrics_mod.METRICS[name] for name in self.metrics}
        self._bind_layers()
        for owned in [*_every_layer(self.layers), *([self.optimizer] if self.optimizer is not None else [])]:
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
        return sum(layer.n_params for layer in self.layers)

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

    def summary(self, print_fn=print) -> str:
        """The layers, their parameter counts and the total: printed (through `print_fn`; None
        prints nothing) and returned."""
        lines = [f"Sequential on {self.backend.name} ({self.dtype})"]
        for layer in self.layers:
            lines.append(f"  {layer!r:<48} params: {layer.n_params:,}")
        lines.append(f"  total params: {self.n_params:,}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self):
        return f"Sequential({self.layers!r}, backend={self.backend.name!r}, dtype={str(self.dtype)!r})"

    def clone(self, backend=None, dtype=None):
        """A copy with the same architecture and weights, on another backend or dtype."""
        model = Sequential([from_config(c) for c in self.config()["layers"]],
                           backend=backend or self.backend, dtype=dtype or self.dtype, seed=self.seed)
        model.params[...] = model.backend.asarray(self.backend.to_numpy(self.params), model.dtype)
        model.state[...] = model.backend.asarray(self.backend.to_numpy(self.state), model.dtype)
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
            if not layer.bias and np.any(b):
                raise ValueError(f"layer {i} has no bias (Dense(..., bias=False)): its b must be zeros")
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
        self._metrics = metrics_mod.resolve(metrics, self.n_out)
        self.loss, self.l1, self.l2, self.clip_norm, self.metrics = loss, l1, l2, clip_norm, list(self._metrics)
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
        for layer in _every_layer(self.layers):
            if hasattr(layer, "activation") and not layer.activation.differentiable:
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
            elif not isinstance(layer, Dense):  # BatchNorm, Residual: they know training from inference
                X = layer.forward(self.backend, X, training, keep)
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
        for i in range(last, self._first_dense - 1, -1):  # (layers before the first with parameters: no delta)
            layer = self.layers[i]
            if isinstance(layer, Dropout):
                delta = layer.backward(delta)
            elif isinstance(layer, BatchNorm):
                delta = layer.backward(self.backend, outputs[i], outputs[i + 1], delta, i > self._first_dense, lr=lr)
            elif not isinstance(layer, Dense):
                delta = layer.backward(self.backend, outputs[i], outputs[i + 1], delta, need_dX=i > self._first_dense)
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

    def _compute_gradients(self, X, Y, loss, l1, l2, training, lr=None, weights=None):
        """Forward, loss and backward on one batch; fills `grads` (or, with `lr`, takes the
        plain SGD step layer by layer). `weights`: row weights (batch, 1), or None. Returns
        (loss value as a backend scalar, outputs of every layer)."""
        fused = loss.fused_with is not None
        outputs, logits = self._forward(X, training, keep_logits=fused, activate_last=not fused, keep=True)
        if fused:
            value, A, delta = self.backend.output_and_loss(logits, Y, loss, self.layers[-1].activation, weights)
            outputs.append(A)
        else:
            value, delta = self.backend.loss_and_gradient(outputs[-1], Y, loss, weights)
        if lr is not None and not math.isfinite(value):  # a folded step would update in the backward pass
            return value, outputs  # (lr is only given on the host: a float to test)
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
                or self.l1 or self.l2 or any(isinstance(layer, Residual) for layer in self.layers)):
            return None  # (Dense and BatchNorm layers take the folded step; blocks do not)
        folds = self._kernel_cache.get("folds_sgd")  # asked once (2 us), not on every step
        if folds is None:
            folds = self._kernel_cache["folds_sgd"] = self.backend.folds_sgd(self)
        return optimizer.lr if folds else None

    def _layerwise_step(self, X, Y, weights=None):
        """One training step layer by layer: gradients into `grads`, then the optimizer (or
        with plain SGD where the backend folds it, each layer's step in the backward pass,
        `grads` then not necessarily written, as with a backend's compiled whole step)."""
        lr = self._folded_sgd_rate()
        value, outputs = self._compute_gradients(X, Y, self.loss, self.l1, self.l2, training=True, lr=lr,
                                                 weights=weights)
        if lr is None and (not self.backend.on_host or math.isfinite(value)):  # an overflowing batch: no step
            self._apply_gradients()
        return value, outputs

    def _train_batch(self, X, Y, plan_batch=None, weights=None):
        """One step on a device batch; `plan_batch`: see Backend.fused_train_step; `weights`:
        row weights (batch, 1) or None."""
        row_weights = () if weights is None else (weights,)
        fused = self.backend.fused_train_step(self, X.shape[0], plan_batch, weighted=weights is not None)
        if fused is not None:  # a whole compiled step; it may update without writing `grads`
            return fused(X, Y, *row_weights)
        return self._layerwise_step(X, Y, *row_weights)

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
        if self._preprocessing is None:
            X, Y = validation.batch(X, y, self.n_in, self.n_out, loss_name, self.dtype)
        else:
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
        with self.backend.inferring(self):
            return self._forward(X, True)[0][-1] if training else self._infer(X)

    def __call__(self, X, training=False):
        return self.forward(X, training)

    def predict(self, X, batch_size=PREDICT_BATCH):
        """Output activations as a NumPy array, computed in batches of `batch_size`."""
        X = self._inputs(X)
        batch_size = validation.batch_size(batch_size, X.shape[0])
        with self.backend.inferring(self):
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

    def loss_and_gradients(self, X, y, loss=None, l1=None, l2=None, training=False, sample_weight=None,
                           class_weight=None):
        """(loss: float, [(dW, db), ...] as NumPy arrays), by the hand-derived backward pass.
        `loss`, `l1`, `l2` default to the compiled ones; `training=True` applies dropout and
        normalises BatchNorm layers by the batch (updating their running statistics, as a
        training step does; False: the running statistics, left alone);
        `sample_weight`, `class_weight` as in fit (normalised to mean 1 over these rows)."""
        loss = self._checked_loss(loss if loss is not None else (self.loss or "mse"))
        l1 = self.l1 if l1 is None else validation.number(l1, "l1", low=0.0)  # as compile checks them
        l2 = self.l2 if l2 is None else validation.number(l2, "l2", low=0.0)
        X, Y = self._device_data(X, y, loss.name)
        R = weights_mod.row_weights(sample_weight, class_weight, self.backend.to_numpy(Y), loss.name,
                                    self.preprocessing)
        R = None if R is None else self.backend.asarray(R, self.dtype)
        value, _ = self._compute_gradients(X, Y, loss, l1, l2, training, weights=R)
        to_numpy = self.backend.to_numpy
        grads = [(to_numpy(layer.dW).copy(), to_numpy(layer.db).copy() * layer.bias) for layer in self.dense_layers]
        return float(value), grads

    def train_step(self, X, y):
        """One update on one batch. Returns the loss as a backend scalar (no device sync). On a
        CPU backend a batch whose loss is not finite (inputs so large that the products
        overflow) takes no step and raises TrainingDivergedError: the weights stay as they were."""
        self._require_compiled()
        X, Y = self._device_data(X, y, self.loss.name)
        value = self._train_batch(X, Y)[0]
        if self.backend.on_host and not math.isfinite(value):
            raise TrainingDivergedError(f"the loss of this batch is {float(value)}: no step was taken. Scale the "
                                        "inputs (StandardScaler), or lower the learning rate")
        return value

    def warmup(self, *batch_sizes) -> float:
        """Compile, ahead of time, what the first training step (once compiled with a loss) and
        the first inference pass at each batch size would (default: fit's 32), without touching
        this model's weights or optimizer state: a copy runs them on zeros. Numba compiles per
        architecture and batch-size range (seconds, then cached on disk), CuPy per kernel. On
        Numba, `train_step` and inference run what it compiled; a fit runs it only where
        compiling pays (or with MLP_NUMBA_COMPILE=1), a shorter one NumPy's code. Returns the
        seconds it took."""
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
            if self.loss is not None and (n > 1 or not self.state.size):  # (BatchNorm trains on 2 rows or more)
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
        with self.backend.inferring(self):
            return self._evaluated(X, Y, batch_size)

    def _evaluated(self, X, Y, batch_size):
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
                totals[name] = metrics_mod.add(totals[name], self._metrics[name].totals(A, Yb))
        result = total / loss.normaliser(Y.shape)
        if self.l1 or self.l2:
            result = result + self._penalty(self.l1, self.l2, add_gradients=False)
        logs = {"loss": float(result)}
        logs.update({name: self._metrics[name].result(totals[name]) for name in self.metrics})
        return logs

    # --- training loop --------------------------------------------------------------
    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, validation_data=None,
            validation_split=0.0, early_stopping=None, lr_schedule=None, verbose=1,
            diagnostics=False, checkpoint=None, checkpoint_every=1, resume=None, distributed=None,
            callbacks=None, sample_weight=None, class_weight=None):
        """Train for `epochs` passes over (X, y). batch_size=None is full-batch gradient
        descent, 1 online (per-sample), anything else mini-batch. `validation_split` holds
        out a seeded random share of the data. `early_stopping` (patience or EarlyStopping)
        restores the best weights. `lr_schedule`: a Schedule (mlp.schedules) or a function
        (epoch, current_lr) -> lr, as Keras' LearningRateScheduler. `diagnostics=True` records
        per-layer statistics of the last step of each epoch in history['diagnostics'] (off: no
        cost). `callbacks`: mlp.Callback objects whose hooks run around epochs and batches
        (mlp.callbacks); one may stop training (`model.stop_training = True`).
        `sample_weight` (n,) and `class_weight` ("balanced" or {label: weight}) weigh each
        sample's loss (mlp.weights; validation and metrics stay unweighted).
        `checkpoint=path` saves the model and the whole training state atomically every
        `checkpoint_every` epochs; `resume=path` continues from such a file, so that an
        interrupted and resumed run ends with the same weights as an uninterrupted one
        (`epochs` counts from the start of the original run).
        `distributed=True` (or MLP_DISTRIBUTED=1) trains data-parallel on the ranks of an
        `mpiexec -n N` job (see mlp.distributed); `batch_size` is then the global batch.
        Ctrl-C stops after the step under way; the History then has `interrupted=True`.
        Returns a History."""
        from mlp import training

        return training.fit(self, X, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                            validation_data=validation_data, validation_split=validation_split,
                            early_stopping=early_stopping, lr_schedule=lr_schedule, verbose=verbose,
                            diagnostics=diagnostics, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                            resume=resume, distributed=distributed, callbacks=callbacks,
                            sample_weight=sample_weight, class_weight=class_weight)

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

    def _split_validation(self, X, Y, R, validation_data, validation_split):
        """(X, Y, R, X_val, Y_val) from checked arguments (R: row weights or None, the training
        part's renormalised to mean 1); a split draws from the shuffling state."""
        if validation_data is not None:
            return (X, Y, R) + validation_data
        if not validation_split:
            return X, Y, R, None, None
        n = X.shape[0]
        before = self._shuffle_rng.bit_generator.state
        order = self._shuffle_rng.permutation(n)
        n_val = int(round(n * validation_split))
        val, train = order[:n_val], order[n_val:]
        if R is not None:
            R = R[train]
            if not R.any():
                self._shuffle_rng.bit_generator.state = before  # refused: as if never drawn
                raise ValueError(f"the {len(train)} samples the validation split leaves for training all have "
                                 "weight zero; give more samples a weight, or lower validation_split")
            R = weights_mod.normalised(R)
        return X[train], Y[train], R, X[val], Y[val]

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


def _check_widths(layers):
    """Each layer takes the width the one before gives (Dropout passes any width through)."""
    width = None
    for layer in layers:
        n_in = getattr(layer, "n_in", None)
        if n_in is None:
            continue
        if width is not None and n_in != width[1]:
            raise ValueError(f"layer sizes do not chain: {width[0]!r} gives {width[1]} outputs "
                             f"but the next layer {layer!r} expects n_in={n_in}")
        width = (layer, layer.n_out)


def _every_layer(layers):
    """The layers and, within blocks (Residual), theirs."""
    for layer in layers:
        yield layer
        yield from _every_layer(getattr(layer, "sublayers", list)())


def _check_unshared(layers):
    """A layer object belongs to one place in one model: its W and b are views into that
    model's parameter buffer (and Dropout keeps its mask for the backward pass), so a second
    use would train one copy and predict with another."""
    seen = set()
    for layer in _every_layer(layers):
        if id(layer) in seen:
            raise ValueError(f"{layer!r} is used twice in this model; give each position a layer of "
                             "its own (a new Dense(...) or Dropout(...))")
        seen.add(id(layer))
        if layer.owner is not None:
            raise ValueError(f"{layer!r} already belongs to another model, which trains its weights; "
                             "build this model from new layers, or copy the other with model.clone()")


def MLP(sizes, activation="relu", output="identity", dropout=0.0, init=None,
        backend=None, dtype=None, seed=None, batch_norm=False):
    """A multilayer perceptron from its layer sizes, e.g. MLP([784, 128, 64, 10], output="softmax").
    Hidden layers use `activation` (and Dropout(dropout) after each when dropout > 0). `init`
    names the initialiser of every layer, the output layer's included (as PyTorch's and Keras'
    layers share one); by default the hidden activation's own (mlp.initializers).
    `batch_norm=True` puts a BatchNorm between each hidden Dense layer and its activation
    (Dense(n_in, n, bias=False), then BatchNorm(n, activation)), as torch's
    Sequential(Linear(bias=False), BatchNorm1d, ReLU): a bias there would be cancelled by the
    normalisation (its true gradient is zero; rounding noise, which Adam would amplify, is not).
    batch_norm="sync": BatchNorm(sync=True), the global batch's statistics in data-parallel training."""
    if batch_norm not in (False, True, "sync"):
        raise ValueError(f"batch_norm must be False, True or 'sync'; got {batch_norm!r}")
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise ValueError(f"sizes must be a list of layer widths, e.g. [784, 128, 10]; got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output size; got {sizes!r}")
    if init is None and len(sizes) > 2:
        init = activations.get(activation).init
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        last = i == len(sizes) - 2
        if batch_norm and not last:
            layers += [Dense(n_in, n_out, init=init, bias=False),
                       BatchNorm(n_out, activation=activation, sync=batch_norm == "sync")]
        else:
            layers.append(Dense(n_in, n_out, activation=output if last else activation, init=init))
        if dropout and not last:
            layers.append(Dropout(dropout))
    return Sequential(layers, backend=backend, dtype=dtype, seed=seed)
