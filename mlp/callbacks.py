"""Callbacks: code of yours that `fit` runs at the edges of training, epochs and batches, as
in Keras. Subclass Callback, override the hooks you need, pass `fit(..., callbacks=[...])`.

    class StopAt(mlp.Callback):
        def on_epoch_end(self, epoch, logs):
            if logs["loss"] < 0.01:
                self.model.stop_training = True

`self.model` is the model being trained; `self.params` holds fit's epochs, steps per epoch,
samples and verbose. Setting `model.stop_training = True` stops after the current epoch (from
`on_batch_end`: after the current batch, the partial epoch not logged, as with Ctrl-C).

Costs: the epoch hooks run once an epoch and cost nothing per step. `on_batch_end(batch,
logs)` runs after every step with logs {"loss": that batch's loss, "size": its rows}: the
loss is read back as a Python float, one host round trip a step (on a GPU a device sync;
on the CPU about a microsecond), paid only when a callback overrides on_batch_end.

In data-parallel training every rank runs the callbacks: the epoch logs are the reduced ones,
the same everywhere, so a callback that decides from them decides alike on every rank (one that
stops a single rank would leave the others waiting in a collective); `on_batch_end`'s loss is
that rank's share of the batch's.

Early stopping, learning-rate schedules, checkpoints and the progress display are callbacks
too (EarlyStopping can be given in `callbacks` or as `early_stopping=`); fit runs its own
ones first, yours after them, and a checkpoint last, so that it saves what the others did.
"""
from __future__ import annotations

import math
import numbers
import sys

from mlp import validation


class Callback:
    model = None
    params: dict = {}
    reads_batch_loss = True  # on_batch_end's logs carry the batch's loss (a host round trip)

    def on_train_begin(self, logs=None):
        """Before the first epoch (after a resumed checkpoint is restored)."""

    def on_train_end(self, logs=None):
        """After the last epoch, an early stop or a Ctrl-C (not after an error)."""

    def on_epoch_begin(self, epoch, logs=None):
        """Before epoch `epoch` (counting from 0)."""

    def on_epoch_end(self, epoch, logs=None):
        """After epoch `epoch`, with its logs (loss, metrics, val_*, lr, seconds)."""

    def on_batch_end(self, batch, logs=None):
        """After step `batch` of the epoch, logs {"loss": float, "size": rows}: see the costs above."""

    @property
    def wants_batches(self) -> bool:
        """Whether fit must call on_batch_end (it reads each batch's loss to the host when so)."""
        return type(self).on_batch_end is not Callback.on_batch_end


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs, and
    restore the weights of the best epoch. `mode`: "min", "max", or "auto": losses and errors
    are minimised, the registered scores (accuracy, precision, recall, f1, auc, top_k_accuracy,
    r2) maximised, a metric function minimised unless mode="max" says otherwise."""

    def __init__(self, patience=5, min_delta=0.0, monitor="val_loss", restore_best_weights=True, mode="auto"):
        from mlp.metrics import METRICS

        self.patience = validation.positive_int(patience, "patience")
        self.min_delta = validation.number(min_delta, "min_delta", low=0.0)
        if not isinstance(monitor, str):
            raise ValueError(f"monitor must be the name of a logged value, e.g. 'val_loss'; got {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'; got {mode!r}")
        self.monitor = monitor
        self.restore_best_weights = restore_best_weights
        name = monitor[4:] if monitor.startswith("val_") else monitor
        rises = mode == "max" or (mode == "auto" and name in METRICS and METRICS[name].higher_is_better)
        self.sign = -1.0 if rises else 1.0  # the value minimised is sign * monitor (mode is kept as this)
        self.start()

    def start(self):
        """Forget any earlier run: fit calls this unless it resumes a checkpoint."""
        self.best = math.inf
        self.wait = 0
        self.best_epoch = self.stopped_epoch = self.best_params = self.best_state = None

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
            if self.restore_best_weights:  # the weights and the running statistics that go with them
                self.best_params, self.best_state = model.params.copy(), model.state.copy()
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def restore(self, model):
        if self.restore_best_weights and self.best_params is not None:
            model.params[...] = self.best_params
            if self.best_state is not None:
                model.state[...] = self.best_state

    def on_epoch_end(self, epoch, logs=None):
        if self.update(epoch, logs, self.model):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.restore(self.model)
        if self.stopped_epoch is None or not self.params.get("verbose"):
            return
        if self.best_epoch is None:  # the monitored value never improved on infinity
            kept = "no epoch improved on it; the last epoch's weights are kept"
        elif self.restore_best_weights:
            kept = f"the weights of epoch {self.best_epoch + 1} are restored"
        else:
            kept = "the last epoch's weights are kept (restore_best_weights=False)"
        print(f"Early stopping after epoch {self.stopped_epoch + 1}: {self.monitor} has not improved "
              f"for {self.patience} epochs; {kept}", file=sys.stderr, flush=True)


class CallbackList:
    """The callbacks of one fit, called in order."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            callback.model, callback.params = model, params
        self.batch_callbacks = [c for c in self.callbacks if c.wants_batches]
        self.reads_loss = any(c.reads_batch_loss for c in self.batch_callbacks)

    def on_train_begin(self):
        for callback in self.callbacks:
            callback.on_train_begin({})

    def on_train_end(self):
        for callback in self.callbacks:
            callback.on_train_end({})

    def on_epoch_begin(self, epoch):
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, {})

    def on_epoch_end(self, epoch, logs):
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_batch_end(self, batch, value, size):
        if self.batch_callbacks:
            logs = {"size": size}
            if self.reads_loss:
                logs["loss"] = float(value)
            for callback in self.batch_callbacks:
                callback.on_batch_end(batch, logs)


def checked(callbacks) -> list:
    """`fit`'s callbacks argument as a list of Callback objects, refused before training otherwise."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise ValueError(f"callbacks must be a list of mlp.Callback objects; got {callbacks!r:.80}") from None
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise ValueError(f"callbacks must be mlp.Callback objects (subclass it and override its hooks); "
                             f"got {callback!r:.80}")
    if len({id(c) for c in callbacks}) != len(callbacks):
        raise ValueError("a callback is given twice in callbacks; its hooks would run twice")
    return callbacks
