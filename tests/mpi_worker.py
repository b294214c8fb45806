"""Run by tests/test_distributed.py under `mpiexec -n N python tests/mpi_worker.py CONFIG`:
one data-parallel training run, each rank writing what it saw to OUT.rank<k>.npz.

CONFIG may hold `cases`: a list of {rank: {setting: value}} overrides, one fit each, run one
after another in the same job (each a rank holding other data or settings than the rest); a
DistributedError of a case is recorded (`errors`, one entry per case) and the next case runs.
The last fit's weights and history are what the file holds."""
import json
import sys
import time

import numpy as np

import mlp
from mlp import checkpoint, datasets, distributed


def data(config):
    """The spirals set of `config['n']` rows, as this rank was told to hold it."""
    X, y = datasets.spirals(config["n"] // 2, seed=0)
    if "perturb" in config:  # one value of one row nudged: same shape, other data
        X[config["perturb"], 0] += 1e-6
    if config.get("permute"):  # the same rows in another order
        X, y = X[::-1].copy(), y[::-1].copy()
    return X, y


def sample_weight(config):
    """Weights of the rows (the same on every rank), when the run is weighted."""
    return np.linspace(0.0, 2.0, config["n"]) if config.get("weighted") else None


def build(config, rank):
    model = mlp.MLP((2, 16, 2), activation="tanh", output="softmax", dtype=config.get("dtype", "float64"),
                    seed=rank if config.get("different_seeds") else 0, batch_norm=config.get("batch_norm", False))
    optimizer = mlp.Adam(0.01) if config["optimizer"] == "adam" else mlp.SGD(0.1, momentum=0.9)
    model.compile(loss="cross_entropy", optimizer=optimizer, l2=config.get("l2", 0.0), metrics=["accuracy", "f1"])
    return model


def inject_fault(model, fault):
    real, calls = model._compute_gradients, []

    def faulty(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            if fault == "raise":
                raise RuntimeError("injected failure on rank 1")
            time.sleep(120)  # "hang": stuck outside every collective
        return real(*args, **kwargs)

    model._compute_gradients = faulty


def train(config, rank):
    model = build(config, rank)
    if config.get("fault") and rank == 1:
        inject_fault(model, config["fault"])
    X, y = data(config)
    history = model.fit(X, y, epochs=config["epochs"], batch_size=config["batch"], verbose=0,
                        shuffle=config.get("shuffle", True), distributed=True, checkpoint=config.get("checkpoint"),
                        validation_split=config.get("validation_split", 0.0), sample_weight=sample_weight(config))
    return model, history


def main(config):
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    saves = []
    real_save = checkpoint.save
    checkpoint.save = lambda path, *a, **k: (saves.append(rank), real_save(path, *a, **k))
    errors, model, history = [], None, None
    for overrides in config.get("cases", [{}]):
        try:
            model, history = train(dict(config, **overrides.get(str(rank), {})), rank)
            errors.append("")
        except distributed.CollectiveTimeoutError:
            raise  # a stuck rank: the job stops (tested as such)
        except distributed.DistributedError as error:
            model = history = None
            errors.append(str(error))
    results = {"saves": np.array(saves, dtype=int), "errors": np.array(errors)}
    if model is not None:
        results["state"] = np.asarray(model.state)
    if model is not None:
        results.update(params=model.params, loss=history["loss"], accuracy=history["accuracy"], f1=history["f1"],
                       val_loss=history["val_loss"] if "val_loss" in history.history else np.zeros(0))
    np.savez(f"{config['out']}.rank{rank}.npz", **results)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
