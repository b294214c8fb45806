"""Exact resume: a run interrupted at any point and resumed from its last checkpoint ends with
the weights, history and learning rates of the uninterrupted run (early stopping and plateau
schedules included); checkpoints are checked against a schema before anything changes."""
import zipfile

import numpy as np
import pytest

import mlp
from mlp import checkpoint as checkpoint_mod
from mlp import progress
from tests.conftest import every_optimizer
from tests.model_files import rewrite_header

EPOCHS = 24
X, Y = mlp.datasets.spirals(n=40, noise=0.5, seed=0)


def _stopper():
    return mlp.EarlyStopping(patience=3)


def _plateau():
    return mlp.schedules.ReduceLROnPlateau(factor=0.5, patience=1)


CONFIGS = {
    "plain": {},
    "early_stopping": {"early_stopping": _stopper},
    "plateau": {"lr_schedule": _plateau},
    "both": {"early_stopping": _stopper, "lr_schedule": _plateau},
    "checkpoint_every_2": {"early_stopping": _stopper, "lr_schedule": _plateau, "checkpoint_every": 2},
    "dropout": {"early_stopping": _stopper, "lr_schedule": _plateau, "dropout": 0.2},
}


class Interrupted(Exception):
    """Stands for a kill: nothing after it runs (the checkpoint file is what survives)."""


def _train(backend, config, epochs=EPOCHS, **kwargs):
    """A fresh model, trained with `config`; returns (model, history)."""
    model = mlp.MLP([2, 8, 2], activation="tanh", output="softmax", dropout=config.get("dropout", 0.0),
                    backend=backend, seed=3)
    model.compile(loss="cross_entropy", optimizer=config.get("optimizer", lambda: mlp.Adam(lr=0.1))())
    settings = {key: (value() if callable(value) else value) for key, value in config.items()
                if key not in ("dropout", "optimizer")}
    if "checkpoint" not in kwargs:
        settings.pop("checkpoint_every", None)
    history = model.fit(X, Y, epochs=epochs, batch_size=16, validation_split=0.25, verbose=0, **settings, **kwargs)
    return model, history


def _same_run(resumed, reference):
    (model, history), (model_ref, history_ref) = resumed, reference
    np.testing.assert_array_equal(model.backend.to_numpy(model.params), model_ref.backend.to_numpy(model_ref.params))
    assert history.epoch == history_ref.epoch
    assert {k: v for k, v in history.history.items() if k != "seconds"} == \
           {k: v for k, v in history_ref.history.items() if k != "seconds"}
    assert (history.best_epoch, history.stopped_epoch) == (history_ref.best_epoch, history_ref.stopped_epoch)


def _killed_after_write(monkeypatch, backend, config, path, writes):
    """Train until the checkpoint has been written `writes` times, then die."""
    save, count = checkpoint_mod.save, [0]

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        count[0] += 1
        if count[0] == writes:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_mod, "save", save_then_die)
        try:
            _train(backend, config, checkpoint=path)
        except Interrupted:
            pass


def _killed_during_epoch(monkeypatch, backend, config, path, epoch):
    """Train until `epoch` has been logged (its schedule updated) but not checkpointed, then die."""
    end_epoch = progress.Progress.end_epoch
    seen = []

    def end_epoch_or_die(self, logs):
        seen.append(logs)
        if len(seen) == epoch + 1:
            raise Interrupted
        return end_epoch(self, logs)

    with monkeypatch.context() as patch:
        patch.setattr(progress.Progress, "end_epoch", end_epoch_or_die)
        try:
            _train(backend, config, checkpoint=path)
        except Interrupted:
            pass


@pytest.mark.parametrize("config", CONFIGS)
def test_interrupted_and_resumed_runs_match_the_uninterrupted_one(backend_name, config, monkeypatch, tmp_path):
    settings = CONFIGS[config]
    reference = _train(backend_name, settings)
    path = tmp_path / "ck.npz"
    every = settings.get("checkpoint_every", 1)
    last_write = -(-len(reference[1].epoch) // every)  # the last (or the stopping) epoch is always written
    interruptions = [("after write", 1), ("after write", last_write), ("during epoch", 4)]
    for how, when in interruptions:
        path.unlink(missing_ok=True)
        if how == "after write":
            _killed_after_write(monkeypatch, backend_name, settings, path, when)
        else:
            _killed_during_epoch(monkeypatch, backend_name, settings, path, when)
        _same_run(_train(backend_name, settings, checkpoint=path, resume=path), reference)
    # Shorter runs, each continued by the next: epochs counts from the start of the first.
    path.unlink()
    for epochs in (3, 7):
        _train(backend_name, settings, epochs=epochs, checkpoint=path, resume=path if path.exists() else None)
    _same_run(_train(backend_name, settings, checkpoint=path, resume=path), reference)


@pytest.mark.parametrize("optimizer", every_optimizer(), ids=repr)
def test_every_optimizer_resumes_exactly(optimizer, monkeypatch, tmp_path):
    """Its state arrays and step count checkpointed by the names its descriptor declares."""
    settings = {"optimizer": lambda: mlp.optimizers.get(optimizer.config())}
    reference = _train("numpy", settings)
    path = tmp_path / "ck.npz"
    _killed_after_write(monkeypatch, "numpy", settings, path, 5)
    _same_run(_train("numpy", settings, checkpoint=path, resume=path), reference)


def test_resuming_a_run_that_stopped_early_trains_no_more(tmp_path):
    """The checkpoint of an early-stopped run is complete: resuming it restores the best weights
    and trains no further epoch (it trained one more, and more with a plateau schedule)."""
    config = CONFIGS["both"]
    reference = _train("numpy", config, checkpoint=tmp_path / "ck.npz")
    assert reference[1].stopped_epoch is not None and len(reference[1].epoch) < EPOCHS
    resumed = _train("numpy", config, resume=tmp_path / "ck.npz")
    _same_run(resumed, reference)


def test_missing_checkpoint_folder_fails_before_training(tmp_path):
    model = mlp.MLP([2, 8, 2], output="softmax", seed=0).compile(loss="cross_entropy", optimizer="adam")
    before = model.params.copy()
    target = tmp_path / "missing" / "dir" / "c.npz"
    with pytest.raises(ValueError, match="missing/dir' does not exist"):
        model.fit(X, Y, epochs=2, checkpoint=target, verbose=0)
    np.testing.assert_array_equal(model.params, before)
    assert model.optimizer.step == 0
    with pytest.raises(ValueError, match="is a folder"):
        model.fit(X, Y, epochs=2, checkpoint=tmp_path, verbose=0)


# --- the schema -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "ck.npz"
    _train("numpy", CONFIGS["both"], epochs=4, checkpoint=path)
    return path


def _set(*keys, value):
    def edit(header):
        node = header["checkpoint"]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


def _drop_array(name):
    def edit(header):
        del header["array_sha256"][name]
    return edit


SCHEMA_BREAKS = {
    "empty state": (lambda header: header.update(checkpoint={}), "entries"),
    "negative next_epoch": (_set("next_epoch", value=-5), "next_epoch"),
    "next_epoch beyond the history": (_set("next_epoch", value=9), "epochs"),
    "float next_epoch": (_set("next_epoch", value=4.0), "next_epoch"),
    "negative step": (_set("optimizer", "step", value=-1), "step"),
    "boolean step": (_set("optimizer", "step", value=True), "step"),
    "short history": (lambda header: header["checkpoint"]["history"]["history"]["loss"].pop(), "values for"),
    "text in history": (_set("history", "history", "loss", value=["a", 1.0, 1.0, 1.0]), "not a number"),
    "bad shuffle state": (_set("shuffle_rng", "state", "state", value=-1), "state"),
    "other generator": (_set("fit_start_rng", "bit_generator", value="MT19937"), "PCG64"),
    "bad dropout state": (_set("dropout_rng", value={"x": 1}), "dropout"),
    "unknown stopper field": (_set("stopper", "fields", "surprise", value=1), "fields"),
    "negative wait": (_set("stopper", "fields", "wait", value=-2), "wait"),
    "NaN plateau best": (_set("schedule", "fields", "best", value=float("nan")), "best"),
    "scale above one": (_set("schedule", "fields", "scale", value=2.0), "scale"),
    "factor above one": (_set("schedule", "fields", "factor", value=5.0), "factor"),
    "zero patience": (_set("stopper", "fields", "patience", value=0), "patience"),
    "text patience": (_set("schedule", "fields", "patience", value="1"), "patience"),
    "other schedule": (_set("schedule", "type", value="StepLR"), "StepLR"),
    # null where this fit's object holds a number (found by the file fuzz: TypeErrors mid-fit)
    "null best so far": (_set("stopper", "fields", "best", value=None), "best"),
    "null sign": (_set("stopper", "fields", "sign", value=None), "sign"),
    "null plateau scale": (_set("schedule", "fields", "scale", value=None), "scale"),
    "missing optimizer array": (_drop_array("optimizer_m"), "optimizer state"),
    "unknown array": (lambda header: header["array_sha256"].update(evil="0" * 64), "unknown array"),
}


@pytest.mark.parametrize("case", SCHEMA_BREAKS)
def test_checkpoint_state_is_checked_before_anything_changes(saved_checkpoint, tmp_path, case):
    edit, message = SCHEMA_BREAKS[case]
    path = rewrite_header(saved_checkpoint, tmp_path / "broken.npz", edit, seal=True)
    model = mlp.MLP([2, 8, 2], activation="tanh", output="softmax", seed=3)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.1))
    before, rng_before = model.params.copy(), model._shuffle_rng.bit_generator.state
    settings = {key: value() for key, value in CONFIGS["both"].items()}
    with pytest.raises(mlp.ModelFileError, match=message) as error:
        model.fit(X, Y, epochs=6, batch_size=16, validation_split=0.25, verbose=0, resume=path, **settings)
    assert "broken.npz" in str(error.value)
    np.testing.assert_array_equal(model.params, before)
    assert model.optimizer.step == 0 and model._shuffle_rng.bit_generator.state == rng_before


def test_checksum_covers_the_training_state(saved_checkpoint, tmp_path):
    path = rewrite_header(saved_checkpoint, tmp_path / "tampered.npz", _set("next_epoch", value=3))
    with pytest.raises(mlp.ModelFileError, match="checksum"):
        mlp.checkpoint.load(path)
    with zipfile.ZipFile(saved_checkpoint) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    moments = bytearray(members["optimizer_m.npy"])
    moments[-1] ^= 1
    members["optimizer_m.npy"] = bytes(moments)
    with zipfile.ZipFile(tmp_path / "moments.npz", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)  # a valid zip (fresh CRC): only the array's checksum objects
    with pytest.raises(mlp.ModelFileError, match="optimizer_m.*checksum"):
        mlp.checkpoint.load(tmp_path / "moments.npz")


def test_checkpoints_of_earlier_versions_are_refused_clearly(saved_checkpoint, tmp_path):
    path = rewrite_header(saved_checkpoint, tmp_path / "old.npz", lambda header: header.pop("header_sha256"))
    with pytest.raises(mlp.ModelFileError, match="earlier version"):
        mlp.checkpoint.load(path)
    mlp.load(path)  # its weights still open as a model


def _fit_to_checkpoint(path, **fit_args):
    model = mlp.MLP([2, 4, 2], activation="tanh", output="softmax", seed=1)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
    X, y = mlp.datasets.moons(n=60, seed=0)
    model.fit(X, y, epochs=2, verbose=0, checkpoint=path, **fit_args)
    return model, X, y


def test_resume_refuses_a_run_with_other_validation_or_dtype_before_anything_changes(tmp_path):
    path = tmp_path / "ck.npz"
    model, X, y = _fit_to_checkpoint(path, validation_split=0.2)
    before = model.params.copy()
    with pytest.raises(mlp.ModelFileError, match="logged .*val_loss.*resume with the same validation"):
        model.fit(X, y, epochs=4, verbose=0, resume=path)  # no validation this time
    np.testing.assert_array_equal(model.params, before)
    other = mlp.MLP([2, 4, 2], activation="tanh", output="softmax", seed=1, dtype="float64")
    other.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
    with pytest.raises(mlp.ModelFileError, match="saved from a float32 model; this one is float64"):
        other.fit(X, y, epochs=4, verbose=0, validation_split=0.2, resume=path)


def test_an_early_stopping_object_from_an_earlier_fit_can_resume_a_checkpoint(tmp_path):
    X, y = mlp.datasets.moons(n=60, seed=0)
    stopper = mlp.EarlyStopping(patience=1, monitor="loss", min_delta=10.0)  # stops after its second epoch
    used = mlp.MLP([2, 4, 2], activation="tanh", output="softmax", seed=1)
    used.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
    used.fit(X, y, epochs=5, verbose=0, early_stopping=stopper)
    assert stopper.stopped_epoch is not None
    path = tmp_path / "ck.npz"
    model = mlp.MLP([2, 4, 2], activation="tanh", output="softmax", seed=1)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
    model.fit(X, y, epochs=1, verbose=0, checkpoint=path, early_stopping=mlp.EarlyStopping(patience=3, monitor="loss"))
    again = mlp.EarlyStopping(patience=3, monitor="loss")
    again.stopped_epoch = 1  # as if it had stopped an earlier fit: the checkpoint's null must still load
    model.fit(X, y, epochs=2, verbose=0, resume=path, early_stopping=again)


def test_a_checkpoint_resumes_whatever_initialiser_its_layers_were_drawn_with(tmp_path):
    """Once weights are restored, how they were first drawn does not matter: a checkpoint of a run
    whose layers name another initialiser (an older default) resumes."""
    X, y = mlp.datasets.moons(n=40, seed=0)
    path = tmp_path / "ck.npz"
    first = mlp.MLP([2, 8, 2], output="softmax", init="he_normal", seed=0).compile(loss="cross_entropy")
    first.fit(X, y, epochs=1, verbose=0, checkpoint=path)
    later = mlp.MLP([2, 8, 2], output="softmax", seed=0).compile(loss="cross_entropy")
    history = later.fit(X, y, epochs=2, verbose=0, resume=path)
    assert history.epoch == [0, 1]
    np.testing.assert_array_equal(mlp.load(path).params, first.params)
