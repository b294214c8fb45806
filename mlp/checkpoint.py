"""Training checkpoints: everything `fit` needs to continue as if never interrupted.

A checkpoint is a model file (mlp.io format: JSON header, arrays, written atomically, no
pickle) with the training state added: optimizer moments and step count, the epoch to run
next, the history so far, the random generators' states (shuffling, dropout), the schedule's
and early stopping's state. `mlp.load(path)` opens it as a plain model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlp import io
from mlp.errors import ModelFileError

_SCALARS = (int, float, bool, str, type(None))


def _scalars(obj) -> dict:
    return {k: v for k, v in vars(obj).items() if isinstance(v, _SCALARS)}


def save(path, model, *, next_epoch, history, fit_start_rng, schedule=None, stopper=None):
    backend = model.backend
    optimizer = model.optimizer
    arrays = {f"optimizer_{name}": backend.to_numpy(value)
              for name, value in optimizer.state_arrays().items()}
    state = {
        "next_epoch": next_epoch,
        "optimizer": {"type": optimizer.name, "step": getattr(optimizer, "step", 0)},
        "history": {"history": dict(history.history), "epoch": history.epoch},
        "shuffle_rng": model._shuffle_rng.bit_generator.state,
        "fit_start_rng": fit_start_rng,
        "dropout_rng": backend.rng_state(model._dropout_rng),
        "schedule": _scalars(schedule) if schedule is not None else None,
        "stopper": _scalars(stopper) if stopper is not None else None,
    }
    if stopper is not None and stopper.best_params is not None:
        arrays["stopper_best_params"] = backend.to_numpy(stopper.best_params)
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


def load(path) -> Checkpoint:
    header, params, arrays = io.read(path)
    if "checkpoint" not in header:
        raise ModelFileError(f"{path!r} is a model file but not a checkpoint (no training state in it)")
    return Checkpoint(str(path), header, params, arrays)


def restore(saved: Checkpoint, model, history, schedule=None, stopper=None) -> int:
    """Put the state of a loaded checkpoint into `model` (and the schedule, early stopping
    and history of this fit). Returns the epoch to run next."""
    state, arrays, path = saved.state, saved.arrays, saved.path
    if saved.params.shape != (model.n_params,) or saved.header["layers"] != model.config()["layers"]:
        raise ModelFileError(f"the checkpoint {path!r} was saved from another architecture")
    optimizer = model.optimizer
    if state["optimizer"]["type"] != optimizer.name:
        raise ModelFileError(f"the checkpoint {path!r} was saved with optimizer "
                             f"{state['optimizer']['type']!r}; this model is compiled with {optimizer.name!r}")
    backend = model.backend
    model.params[...] = backend.asarray(saved.params, model.dtype)
    for name, value in optimizer.state_arrays().items():
        value[...] = backend.asarray(arrays[f"optimizer_{name}"], model.dtype)
    if hasattr(optimizer, "step"):
        optimizer.step = state["optimizer"]["step"]
    model._shuffle_rng.bit_generator.state = state["shuffle_rng"]
    backend.set_rng_state(model._dropout_rng, state["dropout_rng"])
    history.history.update(state["history"]["history"])
    history.epoch[:] = state["history"]["epoch"]
    if schedule is not None and state["schedule"]:
        vars(schedule).update(state["schedule"])
    if stopper is not None and state["stopper"]:
        vars(stopper).update(state["stopper"])
        if "stopper_best_params" in arrays:
            stopper.best_params = backend.asarray(arrays["stopper_best_params"], model.dtype)
    model._kernel_cache.clear()
    return state["next_epoch"]


__all__ = ["Checkpoint", "save", "load", "restore"]
