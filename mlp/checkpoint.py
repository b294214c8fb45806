"""Training checkpoints: everything `fit` needs to continue as if never interrupted.

A checkpoint is a model file (mlp.io format: JSON header, arrays, written atomically, no
pickle) with the training state added: optimizer moments and step count, the epoch to run
next, the history so far, the random generators' states (shuffling, dropout), the schedule's
and early stopping's state (including whether the run had already stopped). `mlp.load(path)`
opens it as a plain model.

A checkpoint is untrusted input: its state is checked against a schema (types, ranges, a
history consistent with the epoch count, well-formed generator states, the arrays the state
implies) and covered by the header's checksum, as its arrays are by theirs; anything else is a
ModelFileError, raised before the model or the run is touched. Resuming continues the
original run: the schedule's and early stopping's settings and state come from the file.
"""
from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from mlp import io
from mlp.errors import ModelFileError

_SCALARS = (int, float, bool, str, type(None))
_STATE_KEYS = {"next_epoch", "optimizer", "history", "shuffle_rng", "fit_start_rng", "dropout_rng",
               "schedule", "stopper"}
_ARRAY_NAME = re.compile(r"optimizer_[a-z][a-z0-9_]{0,31}|stopper_best_params|stopper_best_state")
_MAX_ARRAYS = 8
_PCG64_KEYS = {"bit_generator", "state", "has_uint32", "uinteger"}


_ARRAY_FIELDS = {"best_params", "best_state"}  # early stopping's best weights (and statistics): arrays


def _scalars(obj) -> dict:
    """The settings and state of a schedule or early stopping that the JSON header holds."""
    return {k: v for k, v in vars(obj).items() if isinstance(v, _SCALARS) and k not in _ARRAY_FIELDS}


def check_target(path):
    """Refuse a checkpoint path that cannot be written, before training starts (not after
    the first epoch, naming a temporary file)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"checkpoint={path!r}: the folder {folder!r} does not exist; create it first")
    if os.path.isdir(path):
        raise ValueError(f"checkpoint={path!r} is a folder; give a file name, e.g. {os.path.join(path, 'ck.npz')!r}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"checkpoint={path!r}: the folder {folder!r} is not writable")


def save(path, model, *, next_epoch, history, fit_start_rng, schedule=None, stopper=None):
    """Write the state of a run after epoch `next_epoch - 1` (its logs recorded, the schedule
    and early stopping updated with them)."""
    backend = model.backend
    optimizer = model.optimizer
    arrays = {f"optimizer_{name}": backend.to_numpy(value)
              for name, value in optimizer.state_arrays().items()}
    state = {
        "next_epoch": next_epoch,
        "optimizer": {"type": optimizer.name, "step": int(getattr(optimizer, "step", 0))},
        "history": {"history": dict(history.history), "epoch": list(history.epoch)},
        "shuffle_rng": model._shuffle_rng.bit_generator.state,
        "fit_start_rng": fit_start_rng,
        "dropout_rng": backend.rng_state(model._dropout_rng),
        "schedule": {"type": type(schedule).__name__, "fields": _scalars(schedule)} if schedule is not None else None,
        "stopper": {"fields": _scalars(stopper)} if stopper is not None else None,
    }
    if stopper is not None and stopper.best_params is not None:
        arrays["stopper_best_params"] = backend.to_numpy(stopper.best_params)
        if stopper.best_state is not None and stopper.best_state.size:
            arrays["stopper_best_state"] = backend.to_numpy(stopper.best_state)
    io.save(model, path, extra_header={"checkpoint": state}, extra_arrays=arrays)


@dataclass
class Checkpoint:
    """A checkpoint file, read and verified once: its training state, weights and arrays."""

    path: str
    header: dict
    params: np.ndarray
    arrays: dict

    @property
    def state(self) -> dict:
        return self.header["checkpoint"]


def load(path, model=None, schedule=None, stopper=None) -> Checkpoint:
    """The checkpoint at `path`, its state checked against the schema and its checksums; given
    the `model` that will resume it (and the fit's schedule and early stopping), also against
    its architecture, optimizer, backend, schedule and early stopping: all before anything
    changes."""
    path = os.fspath(path)
    header, params, arrays = io.read(path, extra_arrays=lambda header: _array_names(header, path))
    _check_state(header["checkpoint"], path)
    if "stopper_best_params" in arrays and header["checkpoint"]["stopper"] is None:
        raise _invalid(path, "it holds early stopping's best weights but no early stopping state")
    saved = Checkpoint(path, header, params, arrays)
    if model is not None:
        _check_fits(saved, model)
        _checked_run_state(saved, schedule, stopper)
    return saved


# --- the schema --------------------------------------------------------------------------------
def _invalid(path, what) -> ModelFileError:
    return ModelFileError(f"the training state in the checkpoint {path!r} is invalid: {what}")


def _array_names(header, path) -> list:
    """The arrays a checkpoint holds besides its weights (named by their checksums, which the
    header's own checksum covers)."""
    if "checkpoint" not in header:
        raise ModelFileError(f"{path!r} is a model file but not a checkpoint (no training state in it)")
    if "header_sha256" not in header:
        raise ModelFileError(f"{path!r} is a checkpoint from an earlier version of mlp, whose training state "
                             "has no checksum: it cannot be resumed (mlp.load still opens its weights)")
    names = header.get("array_sha256", {})
    if not isinstance(names, dict) or len(names) > _MAX_ARRAYS:
        raise _invalid(path, f"its arrays are {names!r:.80}")
    for name in names:
        if not _ARRAY_NAME.fullmatch(name):
            raise _invalid(path, f"it holds an unknown array {name!r:.60}")
    return sorted(names)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expect(condition, path, what):
    if not condition:
        raise _invalid(path, what)


def _check_dict(value, keys, path, what):
    _expect(isinstance(value, dict), path, f"{what} is {value!r:.80}, not a dict")
    _expect(set(value) == set(keys), path, f"{what} has the entries {sorted(map(str, value))}; "
                                           f"expected {sorted(keys)}")


def _check_pcg64(value, path, what):
    """A NumPy PCG64 generator state, checked field by field (then by NumPy itself)."""
    _check_dict(value, _PCG64_KEYS, path, what)
    _expect(value["bit_generator"] == "PCG64", path, f"{what} is not a PCG64 generator state")
    _check_dict(value["state"], {"state", "inc"}, path, f"{what}['state']")
    for key in ("state", "inc"):
        number = value["state"][key]
        _expect(_is_int(number) and 0 <= number < 2**128, path, f"{what} has {key}={number!r:.60}")
    _expect(value["has_uint32"] in (0, 1) and _is_int(value["has_uint32"]), path,
            f"{what} has has_uint32={value['has_uint32']!r:.40}")
    _expect(_is_int(value["uinteger"]) and 0 <= value["uinteger"] < 2**32, path,
            f"{what} has uinteger={value['uinteger']!r:.40}")
    try:
        np.random.PCG64().state = value
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise _invalid(path, f"{what} is not a usable generator state: {error}") from None


def _check_dropout_state(value, path):
    """A NumPy generator's state (NumPy, Numba backends) or a counter-based one (CuPy: a seed
    and the count of masks drawn); the backend that resumes checks it fits it."""
    what = "the dropout generator's state"
    if isinstance(value, dict) and set(value) == {"seed", "counter"}:
        for key in ("seed", "counter"):
            _expect(_is_int(value[key]) and 0 <= value[key] < 2**64, path, f"{what} has {key}={value[key]!r:.40}")
    else:
        _check_pcg64(value, path, what)


def _check_history(history, next_epoch, path):
    _check_dict(history, {"history", "epoch"}, path, "history")
    _expect(history["epoch"] == list(range(next_epoch)), path,
            f"its history lists the epochs {history['epoch']!r:.80}; a run stopped before epoch {next_epoch} "
            f"has 0..{next_epoch - 1}")
    logs = history["history"]
    _expect(isinstance(logs, dict), path, "history['history'] is not a dict")
    for key, values in logs.items():
        _expect(isinstance(values, list), path, f"history[{key!r:.40}] is not a list")
        if key == "diagnostics":  # recorded only in the epochs that asked for it
            _expect(len(values) <= next_epoch, path, f"history['diagnostics'] has {len(values)} entries for "
                                                     f"{next_epoch} epochs")
            continue
        _expect(len(values) == next_epoch, path, f"history[{key!r:.40}] has {len(values)} values for "
                                                 f"{next_epoch} epochs")
        _expect(all(_is_number(v) for v in values), path, f"history[{key!r:.40}] holds a value that is not a number")


def _check_fields_entry(entry, keys, path, what):
    if entry is None:
        return
    _check_dict(entry, keys, path, what)
    fields = entry["fields"]
    _expect(isinstance(fields, dict), path, f"{what}['fields'] is not a dict")
    for name, value in fields.items():
        _expect(isinstance(value, _SCALARS), path, f"{what} field {name!r:.40} is {value!r:.60}, not a scalar")


def _check_state(state, path):
    """The file's training state, checked without a model: types, ranges, consistency."""
    _check_dict(state, _STATE_KEYS, path, "the state")
    next_epoch = state["next_epoch"]
    _expect(_is_int(next_epoch) and next_epoch >= 0, path,
            f"next_epoch is {next_epoch!r:.40}; expected an integer >= 0")
    _check_dict(state["optimizer"], {"type", "step"}, path, "the optimizer state")
    _expect(isinstance(state["optimizer"]["type"], str), path, "the optimizer type is not a name")
    step = state["optimizer"]["step"]
    _expect(_is_int(step) and step >= 0, path, f"the optimizer step is {step!r:.40}; expected an integer >= 0")
    _check_history(state["history"], next_epoch, path)
    _check_pcg64(state["shuffle_rng"], path, "the shuffling generator's state")
    _check_pcg64(state["fit_start_rng"], path, "the validation split's generator state")
    _check_dropout_state(state["dropout_rng"], path)
    _check_fields_entry(state["schedule"], {"type", "fields"}, path, "the schedule state")
    if state["schedule"] is not None:
        _expect(isinstance(state["schedule"]["type"], str), path, "the schedule type is not a name")
    _check_fields_entry(state["stopper"], {"fields"}, path, "the early stopping state")


def _checked_fields(saved, obj, path, what) -> dict:
    """The saved fields of a schedule or early stopping, checked against the object this fit
    uses: the same names, values of the same kinds, integers >= 0, no NaN (inf only for the
    best value so far)."""
    current = _scalars(obj)
    _expect(set(saved) == set(current), path, f"{what} has the fields {sorted(saved)}; this fit's "
                                              f"{type(obj).__name__} has {sorted(current)}")
    checked = {}
    for name, value in saved.items():
        now = current[name]
        if isinstance(now, bool) or isinstance(value, bool):
            ok = isinstance(now, bool) and isinstance(value, bool)
        elif now is None:  # set once something happened: an epoch number
            ok = value is None or _is_int(value)
        elif value is None:  # only epoch numbers are null until something happens (best=null is not)
            ok = name.endswith("_epoch")
        elif isinstance(now, str):
            ok = isinstance(value, str)
        elif _is_int(now):
            ok = _is_int(value)
        else:  # a float field; JSON writes 1.0 as 1.0, but accept an integer
            ok = _is_number(value)
            value = float(value) if ok else value
        _expect(ok, path, f"{what} field {name!r} is {value!r:.60}; this fit's value is {now!r:.60}")
        if _is_int(value):
            _expect(value >= 0, path, f"{what} field {name!r} is {value}; expected >= 0")
        if isinstance(value, float):
            _expect(not math.isnan(value) and (name == "best" or math.isfinite(value)), path,
                    f"{what} field {name!r} is {value}")
        checked[name] = value
    if "scale" in checked:
        _expect(0.0 < checked["scale"] <= 1.0, path, f"{what} field 'scale' is {checked['scale']}; expected (0, 1]")
    _check_settings(checked, obj, path, what)
    return checked


def _check_settings(fields, obj, path, what):
    """The saved settings pass the checks of the class's own constructor (factor in (0, 1),
    patience >= 1, ...): the fields named like its parameters are given to a new instance."""
    cls = type(obj)
    parameters = [p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"]
    if any(p.default is p.empty and p.name not in fields for p in parameters):
        return  # set by what the file cannot hold (a function schedule's function): nothing to check
    names = [p.name for p in parameters]
    try:
        cls(**{name: fields[name] for name in names if name in fields})
    except (TypeError, ValueError) as error:
        raise _invalid(path, f"{what} has settings that {cls.__name__} refuses: {error}") from None


def _check_fits(saved: Checkpoint, model):
    """The checkpoint matches `model`: architecture, optimizer and its state arrays, and a
    dropout generator state that the model's backend can take."""
    state, path, optimizer = saved.state, saved.path, model.optimizer
    if saved.params.shape != (model.n_params,) or _shapes(saved.header["layers"]) != _shapes(model.config()["layers"]):
        raise ModelFileError(f"the checkpoint {path!r} was saved from another architecture")
    if saved.header.get("dtype") != str(model.dtype):
        raise ModelFileError(f"the checkpoint {path!r} was saved from a {saved.header.get('dtype')} model; this one "
                             f"is {model.dtype}: resume with the dtype of the saved run")
    if state["optimizer"]["type"] != optimizer.name:
        raise ModelFileError(f"the checkpoint {path!r} was saved with optimizer "
                             f"{state['optimizer']['type']!r}; this model is compiled with {optimizer.name!r}")
    wanted = {f"optimizer_{name}" for name in optimizer.state_arrays()}
    held = {name for name in saved.arrays if name.startswith("optimizer_")}
    if held != wanted:
        raise ModelFileError(f"the checkpoint {path!r} holds the optimizer state {sorted(held)}, but this model's "
                             f"{optimizer.name} keeps {sorted(wanted)}: compile it with the optimizer "
                             "settings of the saved run (momentum, ...)")
    backend = model.backend
    try:
        backend.set_rng_state(backend.rng(0), state["dropout_rng"])
    except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as error:
        raise _invalid(path, f"the dropout generator's state does not fit the {backend.name} backend: "
                             f"{error}") from None


def _shapes(layers) -> list:
    """The layers' configurations without their initialisers: once weights are restored, how they
    were first drawn does not matter (and a default initialiser may have changed since)."""
    def strip(layer):
        if not isinstance(layer, dict):
            return layer
        return {key: _shapes(value) if key == "layers" and isinstance(value, list) else value
                for key, value in layer.items() if key != "init"}
    return [strip(layer) for layer in layers]


def check_logged(saved: Checkpoint, names):
    """The resumed run logs what the saved one did (`names`: this fit's, e.g. with val_loss when
    it validates): otherwise its history would mix runs, and early stopping could monitor a value
    the saved epochs lack."""
    logged = {name for name in saved.state["history"]["history"] if name != "diagnostics"}
    if saved.state["next_epoch"] > 0 and logged != set(names):
        raise ModelFileError(f"the checkpoint {saved.path!r} is of a run that logged {sorted(logged)}; this fit logs "
                             f"{sorted(names)}: resume with the same validation and metrics as the saved run")


def _checked_run_state(saved: Checkpoint, schedule, stopper):
    """(schedule fields, early stopping fields) to restore, each None when the checkpoint or
    this fit has none, checked against this fit's objects."""
    state, path = saved.state, saved.path
    schedule_fields = stopper_fields = None
    if schedule is not None and state["schedule"] is not None:
        if state["schedule"]["type"] != type(schedule).__name__:
            raise ModelFileError(f"the checkpoint {path!r} was saved with lr_schedule {state['schedule']['type']}; "
                                 f"this fit has {type(schedule).__name__}: resume with the same schedule")
        schedule_fields = _checked_fields(state["schedule"]["fields"], schedule, path, "the schedule state")
    if stopper is not None and state["stopper"] is not None:
        stopper_fields = _checked_fields(state["stopper"]["fields"], stopper, path, "the early stopping state")
    return schedule_fields, stopper_fields


def restore(saved: Checkpoint, model, history, schedule=None, stopper=None) -> int:
    """Put the state of a loaded checkpoint into `model` (and the schedule, early stopping
    and history of this fit). Returns the epoch to run next. Everything is checked first:
    a checkpoint that does not fit this model and fit leaves them untouched."""
    state = saved.state
    _check_fits(saved, model)
    optimizer, backend = model.optimizer, model.backend
    best_params = saved.arrays.get("stopper_best_params") if stopper is not None else None
    schedule_fields, stopper_fields = _checked_run_state(saved, schedule, stopper)

    model.params[...] = backend.asarray(saved.params, model.dtype)
    if "state" in saved.arrays:
        model.state[...] = backend.asarray(saved.arrays["state"], model.dtype)
    for name, value in optimizer.state_arrays().items():
        value[...] = backend.asarray(saved.arrays[f"optimizer_{name}"], model.dtype)
    if hasattr(optimizer, "step"):
        optimizer.step = state["optimizer"]["step"]
    model._shuffle_rng.bit_generator.state = state["shuffle_rng"]
    backend.set_rng_state(model._dropout_rng, state["dropout_rng"])
    history.history.update(state["history"]["history"])
    history.epoch[:] = state["history"]["epoch"]
    if schedule_fields is not None:
        vars(schedule).update(schedule_fields)
    if stopper_fields is not None:
        vars(stopper).update(stopper_fields)
        stopper.best_params = backend.asarray(best_params, model.dtype) if best_params is not None else None
        best_state = saved.arrays.get("stopper_best_state")
        stopper.best_state = backend.asarray(best_state, model.dtype) if best_state is not None else \
            (model.state.copy() if best_params is not None else None)
    model._kernel_cache.clear()
    return state["next_epoch"]


def finished(stopper) -> bool:
    """Whether a restored run had already stopped early (nothing left to train)."""
    return stopper is not None and stopper.stopped_epoch is not None


__all__ = ["Checkpoint", "check_target", "finished", "load", "restore", "save"]
