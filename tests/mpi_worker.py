"""Run by tests/test_distributed.py under `mpiexec -n N python tests/mpi_worker.py CONFIG`:
one data-parallel training run, each rank writing what it saw to OUT.rank<k>.npz."""
import json
import sys
import time

import numpy as np

import mlp
from mlp import checkpoint, datasets


def main(config):
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    X, y = datasets.spirals(config["n"] // 2, seed=0)
    model = mlp.MLP((2, 16, 2), activation="tanh", output="softmax", dtype="float64",
                    seed=rank if config.get("different_seeds") else 0)
    optimizer = mlp.Adam(0.01) if config["optimizer"] == "adam" else mlp.SGD(0.1, momentum=0.9)
    model.compile(loss="cross_entropy", optimizer=optimizer, l2=config.get("l2", 0.0), metrics=["accuracy"])

    fault = config.get("fault")
    if fault and rank == 1:
        real, calls = model._compute_gradients, []

        def faulty(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                if fault == "raise":
                    raise RuntimeError("injected failure on rank 1")
                time.sleep(120)  # "hang": stuck outside every collective
            return real(*args, **kwargs)

        model._compute_gradients = faulty

    saves = []
    real_save = checkpoint.save
    checkpoint.save = lambda path, *a, **k: (saves.append(rank), real_save(path, *a, **k))
    history = model.fit(X, y, epochs=config["epochs"], batch_size=config["batch"], verbose=0,
                        distributed=True, checkpoint=config.get("checkpoint"),
                        validation_split=config.get("validation_split", 0.0))
    np.savez(f"{config['out']}.rank{rank}.npz", params=model.params, loss=history["loss"],
             accuracy=history["accuracy"], saves=np.array(saves, dtype=int),
             val_loss=history["val_loss"] if "val_loss" in history.history else np.zeros(0))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
