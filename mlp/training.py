"""The training loop behind `model.fit`: checks first (nothing changes before they pass), then
epochs of steps, with early stopping, schedules, checkpoints, progress and your own code as
callbacks (mlp.callbacks) around them.
"""
from __future__ import annotations

import math
import time

from mlp import batchnorm, callbacks as callbacks_mod, checkpoint as checkpoint_mod, distributed as distributed_mod
from mlp import interrupt, metrics as metrics_mod, progress, schedules, validation
from mlp import weights as weights_mod
from mlp.callbacks import Callback, CallbackList
from mlp.errors import DeviceMemoryError, TrainingDivergedError


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


# --- fit's own callbacks ----------------------------------------------------------------
class ScheduleCallback(Callback):
    """Sets the learning rate of each epoch from a schedule (mlp.schedules) and shows it the
    monitored loss after the epoch."""

    def __init__(self, schedule, base_lr, current_lr):
        self.schedule, self.base_lr, self.current_lr = schedule, base_lr, current_lr

    def on_epoch_begin(self, epoch, logs=None):
        self.current_lr = schedules.rate(self.schedule, epoch, self.base_lr, self.current_lr)
        self.model.optimizer.lr = self.current_lr

    def on_epoch_end(self, epoch, logs=None):
        self.schedule.observe(logs.get("val_loss", logs["loss"]))


class ProgressCallback(Callback):
    """The progress bar (tqdm) or one line per epoch; nothing with verbose=0."""

    reads_batch_loss = False

    def __init__(self, bar):
        self.bar = bar

    def on_epoch_begin(self, epoch, logs=None):
        self.bar.start_epoch(epoch)

    def on_batch_end(self, batch, logs=None):
        self.bar.step()

    def on_epoch_end(self, epoch, logs=None):
        self.bar.end_epoch(logs)

    @property
    def wants_batches(self):
        return self.bar.verbose > 0


class CheckpointCallback(Callback):
    """Saves the model and the whole training state every `every` epochs, at an early stop
    and after the last epoch (mlp.checkpoint)."""

    def __init__(self, path, every, epochs, history, fit_start_rng, schedule, stopper):
        self.path, self.every, self.epochs, self.history = path, every, epochs, history
        self.fit_start_rng, self.schedule, self.stopper = fit_start_rng, schedule, stopper

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or self.model.stop_training or epoch == self.epochs - 1:
            checkpoint_mod.save(self.path, self.model, next_epoch=epoch + 1, history=self.history,
                                fit_start_rng=self.fit_start_rng, schedule=self.schedule, stopper=self.stopper)


# --- the loop ---------------------------------------------------------------------------
def fit(model, X, y, **options):
    """Model.fit's work (see its docstring): every check first, then the epochs. Returns a History."""
    run = _prepare(model, X, y, **options)
    history, bar = run.history, run.bar
    ctrl_c = interrupt.StopRequest(active=run.parallel is None).start()
    model.stop_training = False
    if run.parallel is not None:
        run.parallel.attach()
    try:
        with model.backend.fitting(model, run.epochs * run.epoch.steps, run.epoch.batch):
            _epochs(run, ctrl_c)
    except Exception as error:
        if run.parallel is not None and run.parallel.size > 1:  # stop every rank, not just this one
            run.parallel.world.abort(f"training failed on this rank: {type(error).__name__}: {error}")
        raise
    finally:
        ctrl_c.stop()
        bar.close()
        if run.parallel is not None:
            run.parallel.detach()
        model.optimizer.lr = run.base_lr  # a schedule shapes this run only
    if run.stopper is not None:
        history.best_epoch, history.stopped_epoch = run.stopper.best_epoch, run.stopper.stopped_epoch
    return history


def _epochs(run, ctrl_c):
    """The epochs of a fit, from on_train_begin to on_train_end."""
    model, hooks, history, bar = run.model, run.hooks, run.history, run.bar
    hooks.on_train_begin()
    for epoch in range(run.first_epoch, run.epochs):
        if ctrl_c.requested or model.stop_training:  # asked between epochs (or before the first)
            break
        hooks.on_epoch_begin(epoch)
        logs = run.epoch(epoch, ctrl_c)
        if logs is None:  # stopped within the epoch: its partial result is not logged
            break
        run.log(epoch, logs)
        hooks.on_epoch_end(epoch, logs)
    if ctrl_c.requested:
        history.interrupted = True
        bar.close()
        bar.say(f"Interrupted (Ctrl-C) in epoch {run.epoch.epoch + 1}, after {run.epoch.done} of its "
                f"{run.epoch.steps} steps: the weights are those of the last step; the history holds the "
                f"{len(history.epoch)} epochs that finished")
    hooks.on_train_end()


class _Run:
    """What one fit's loop works with, once every argument is checked."""

    def log(self, epoch, logs):
        """Complete an epoch's logs (validation, lr, time) and record them."""
        from mlp.model import PREDICT_BATCH

        if self.X_val is not None:
            logs.update({f"val_{k}": v for k, v in self.model._evaluate(self.X_val, self.Y_val, PREDICT_BATCH).items()})
        logs["lr"] = self.model.optimizer.lr
        logs["seconds"] = time.perf_counter() - self.epoch.started
        self.history.append(epoch, logs)
        if self.epoch.record is not None:
            self.history.history.setdefault("diagnostics", []).append(self.epoch.record)


def _prepare(model, X, y, *, epochs, batch_size, shuffle, validation_data, validation_split, early_stopping,
             lr_schedule, verbose, diagnostics, checkpoint, checkpoint_every, resume, distributed, callbacks,
             sample_weight, class_weight) -> _Run:
    """Check every argument against the model and data (nothing changes before all pass), then
    set up the run: validation split, data on the device, a resumed checkpoint, the callbacks."""
    from mlp.callbacks import EarlyStopping

    model._require_compiled()
    run = _Run()
    run.model, run.epochs = model, validation.positive_int(epochs, "epochs")
    X = model._inputs(X)
    Y = model._targets(y, model.loss.name, X.shape[0])
    R = weights_mod.row_weights(sample_weight, class_weight, Y, model.loss.name, model.preprocessing)
    checkpoint_every = validation.positive_int(checkpoint_every, "checkpoint_every")
    validation.batch_size(batch_size, X.shape[0])
    validation_data = model._checked_validation(X, validation_data, validation_split)
    user_callbacks = callbacks_mod.checked(callbacks)
    run.stopper = stopper = _stopper(EarlyStopping, early_stopping, user_callbacks)
    validating = bool(validation_data or validation_split)
    if stopper is not None:
        stopper.check_monitor(model._logged_names(validating))
    schedule = schedules.get(lr_schedule)
    if checkpoint is not None:  # a missing folder fails now, not after the first epoch
        checkpoint_mod.check_target(checkpoint)
    run.parallel = None
    if distributed_mod.requested(distributed):
        run.parallel = _data_parallel(model, diagnostics, X, Y, R, dict(
            epochs=epochs, batch_size=batch_size, shuffle=shuffle, validation_split=validation_split,
            validation_data=validation_data, early_stopping=stopper, lr_schedule=lr_schedule,
            resume=resume is not None))
        if run.parallel.rank != 0:
            verbose, checkpoint = 0, None  # rank 0 alone prints and writes
    saved = None
    if resume is not None:  # checked against this model and fit before anything changes
        saved = checkpoint_mod.load(resume, model=model, schedule=schedule, stopper=stopper)
        checkpoint_mod.check_logged(saved, model._logged_names(validating))
    if saved is not None:  # replay the validation split exactly as the original run drew it
        model._shuffle_rng.bit_generator.state = saved.state["fit_start_rng"]
    elif stopper is not None:
        stopper.start()  # an EarlyStopping given to an earlier fit starts afresh
    fit_start_rng = model._shuffle_rng.bit_generator.state
    X, Y, R, X_val, Y_val = model._split_validation(X, Y, R, validation_data, validation_split)
    n = X.shape[0]
    batch = validation.batch_size(batch_size, n)
    batchnorm.check_batches(model, n, batch, 1 if run.parallel is None else run.parallel.size)
    backend = model.backend
    X, Y = backend.resident(X), backend.resident(Y)  # the whole set moves to the device once
    R = None if R is None else backend.resident(R.astype(model.dtype))
    run.X_val, run.Y_val = (None, None) if X_val is None else (backend.asarray(X_val), backend.asarray(Y_val))
    run.history = History()
    run.base_lr = model.optimizer.lr
    run.first_epoch = 0
    if saved is not None:
        run.first_epoch = checkpoint_mod.restore(saved, model, run.history, schedule, stopper)
        if checkpoint_mod.finished(stopper):  # the saved run had stopped early: it is complete
            run.first_epoch = run.epochs
    steps = math.ceil(n / batch)
    run.bar = progress.Progress(verbose, run.epochs, steps, n)
    own = [ProgressCallback(run.bar)]
    if schedule is not None:  # a resumed run goes on from the last epoch's rate
        current = run.history["lr"][-1] if run.history.epoch else run.base_lr
        own.append(ScheduleCallback(schedule, run.base_lr, current))
    if stopper is not None and stopper not in user_callbacks:
        own.append(stopper)
    last = [] if checkpoint is None else [CheckpointCallback(checkpoint, checkpoint_every, run.epochs, run.history,
                                                             fit_start_rng, schedule, stopper)]
    run.hooks = CallbackList(own + user_callbacks + last, model,
                             {"epochs": run.epochs, "steps": steps, "samples": n, "verbose": verbose})
    run.epoch = _Epoch(model, X, Y, R, batch, steps, shuffle, run.parallel, diagnostics, run.hooks,
                       _Snapshot(model, run.first_epoch, stopper))
    return run


def _data_parallel(model, diagnostics, X, Y, R, settings):
    """The DataParallel of a distributed fit, its ranks checked to agree on the data and settings
    (then holding rank 0's weights and shuffling: before the validation split, which draws from it)."""
    if diagnostics:
        raise ValueError("diagnostics=True records one process' step; turn it off for distributed training")
    functions = [name for name, metric in model._metrics.items() if not metrics_mod.is_summable(metric)]
    if functions:
        raise ValueError(f"metric functions ({', '.join(functions)}) see one rank's outputs only; compile with "
                         "the registered metrics for distributed training")
    parallel = distributed_mod.DataParallel(model, distributed_mod.get_world(model.backend))
    parallel.start(X, Y, {**settings, "row_weights": R})
    return parallel


def _stopper(EarlyStopping, early_stopping, user_callbacks):
    """The run's EarlyStopping: from `early_stopping=` or among the callbacks (not both)."""
    given = [c for c in user_callbacks if isinstance(c, EarlyStopping)]
    stopper = EarlyStopping.from_arg(early_stopping)
    if len(given) > 1 or (given and stopper is not None):
        raise ValueError("give one EarlyStopping: either early_stopping= or one in callbacks")
    return stopper if stopper is not None else (given[0] if given else None)


class _Epoch:
    """One epoch of steps: returns its logs (loss and training metrics), or None when Ctrl-C or
    a callback stopped it before its last step."""

    def __init__(self, model, X, Y, R, batch, steps, shuffle, parallel, diagnostics, hooks, last_finite):
        self.model, self.X, self.Y, self.R = model, X, Y, R
        self.batch, self.steps, self.shuffle = batch, steps, shuffle
        self.parallel, self.diagnostics, self.hooks = parallel, diagnostics, hooks
        self.last_finite = last_finite
        self.record, self.epoch, self.done = None, 0, 0

    def __call__(self, epoch, ctrl_c):
        from mlp import diagnostics as diagnostics_mod

        model, backend, loss, n = self.model, self.model.backend, self.model.loss, self.X.shape[0]
        self.last_finite.take(epoch)
        index = backend.asarray(model._shuffle_rng.permutation(n)) if self.shuffle else None
        self.started, self.epoch, self.done = time.perf_counter(), epoch, 0
        total, totals, self.record = 0.0, dict.fromkeys(model.metrics), None
        for step in range(self.steps):
            if ctrl_c.requested or model.stop_training:  # checked before a step: none runs once asked
                return None
            start, stop = step * self.batch, min((step + 1) * self.batch, n)
            rows = slice(start, stop) if index is None else index[start:stop]
            if self.parallel is not None:
                rows, global_rows = self.parallel.shard(rows)
            Xb, Yb = backend.take_rows(self.X, rows), backend.take_rows(self.Y, rows)
            Rb = None if self.R is None else backend.take_rows(self.R, rows)
            try:
                if self.parallel is not None:
                    value, outputs = self.parallel.train_batch(Xb, Yb, global_rows, Rb)
                elif self.diagnostics and step == self.steps - 1:
                    value, outputs, self.record = diagnostics_mod.recorded_step(model, Xb, Yb, Rb)
                else:
                    value, outputs = model._train_batch(Xb, Yb, plan_batch=self.batch, weights=Rb)
            except backend.memory_errors as error:
                raise DeviceMemoryError(
                    f"Out of memory in a training step at batch size {stop - start} on the {backend.name} "
                    f"backend ({error}). Lower batch_size, or make the model smaller.") from error
            if backend.on_host and not math.isfinite(value):
                self.last_finite.diverged(value, epoch, step)
            total = total + value * loss.normaliser(outputs[-1].shape)
            for name in model.metrics:
                totals[name] = metrics_mod.add(totals[name], model._metrics[name].totals(outputs[-1], Yb))
            self.done = step + 1
            self.hooks.on_batch_end(step, value, stop - start)
        if self.parallel is not None:
            total, totals = self.parallel.reduce_epoch(total, totals)
        logs = {"loss": float(total / loss.normaliser(self.Y.shape))}
        if not math.isfinite(logs["loss"]):
            self.last_finite.diverged(logs["loss"], epoch, None)
        if model.state.size:  # BatchNorm's running variance can overflow while the loss stays finite
            spread = float(backend.xp.abs(model.state).sum())
            if not math.isfinite(spread):
                self.last_finite.diverged(spread, epoch, None, what="the sum of BatchNorm's running statistics")
        logs.update({name: model._metrics[name].result(totals[name]) for name in model.metrics})
        return logs


class _Snapshot:
    """The weights and optimizer state at the start of an epoch: where a diverging fit returns
    to, so that a model never keeps NaN weights (a copy of the buffers per epoch)."""

    def __init__(self, model, first_epoch, stopper):
        self.model, self.first_epoch, self.stopper, self.epoch = model, first_epoch, stopper, None

    def take(self, epoch):
        optimizer = self.model.optimizer
        self.epoch, self.params, self.statistics = epoch, self.model.params.copy(), self.model.state.copy()
        self.state = {name: value.copy() for name, value in optimizer.state_arrays().items()}
        self.step = getattr(optimizer, "step", None)

    def restore(self):
        """Put the state back; returns the epoch whose end it is (None: the start of the fit)."""
        optimizer = self.model.optimizer
        self.model.params[...] = self.params
        self.model.state[...] = self.statistics  # (BatchNorm's running statistics)
        for name, value in optimizer.state_arrays().items():
            value[...] = self.state[name]
        if self.step is not None:
            optimizer.step = self.step
        self.model._kernel_cache.clear()  # compiled steps may cache derived state
        return self.epoch - 1 if self.epoch > self.first_epoch else None

    def diverged(self, value, epoch, step, what="the loss"):
        """Put back finite weights (early stopping's best, else the last epoch's end) and raise."""
        model, stopper = self.model, self.stopper
        where = f"epoch {epoch + 1}" + (f", batch {step + 1}" if step is not None else "")
        restored = self.restore()
        if stopper is not None and stopper.best_params is not None:
            stopper.restore(model)
            restored = stopper.best_epoch
            kept = f"restored the best weights, from the end of epoch {restored + 1} (early stopping's)"
        elif restored is None:
            kept = "restored the weights from the start of this fit"
        else:
            kept = f"restored the weights from the end of epoch {restored + 1}, the last finite ones"
        error = TrainingDivergedError(
            f"{what} became {value} at {where}: training diverged; {kept}. Lower the learning rate "
            f"(now {model.optimizer.lr}), standardise the inputs, or set clip_norm in compile()."
        )
        error.epoch, error.restored_epoch = epoch, restored
        raise error
