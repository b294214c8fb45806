"""Data-parallel training on real MPI ranks (`mpiexec -n 2` and `-n 3`, MPICH from the
package registry with mpi4py): same weights as one process on the same global batch,
failures that stop the whole job, uneven last batches, one writer for checkpoints."""
import itertools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import mlp
from mlp import datasets, distributed
from tests import mpi_worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "mpi_worker.py")
MPIEXEC = distributed.mpiexec_path()


def _mpi_ready():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'mlp[mpi]' mpich)"
    return None if MPIEXEC else "no mpiexec on PATH (pip install mpich)"


needs_mpi = pytest.mark.skipif(_mpi_ready() is not None, reason=str(_mpi_ready()))


def launch(ranks, config, tmp_path, timeout=120, **env):
    config = dict(config, out=str(tmp_path / "run"))
    environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       MLP_BACKEND="numpy", OMP_NUM_THREADS="1", **env)
    started = time.monotonic()
    done = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, WORKER, json.dumps(config)],
                          env=environment, capture_output=True, text=True, timeout=timeout, check=False)
    results = [dict(np.load(tmp_path / f"run.rank{r}.npz")) for r in range(ranks)
               if (tmp_path / f"run.rank{r}.npz").exists()]
    return done, results, time.monotonic() - started


def single_process(config):
    X, y = datasets.spirals(config["n"] // 2, seed=0)
    model = mlp.MLP((2, 16, 2), activation="tanh", output="softmax", dtype="float64", seed=0, backend="numpy",
                    batch_norm=config.get("batch_norm", False))
    optimizer = mlp.Adam(0.01) if config["optimizer"] == "adam" else mlp.SGD(0.1, momentum=0.9)
    model.compile(loss="cross_entropy", optimizer=optimizer, l2=config.get("l2", 0.0), metrics=["accuracy", "f1"])
    history = model.fit(X, y, epochs=config["epochs"], batch_size=config["batch"], verbose=0,
                        validation_split=config.get("validation_split", 0.0),
                        sample_weight=mpi_worker.sample_weight(config))
    return model, history


@needs_mpi
@pytest.mark.parametrize("ranks,config", [
    (2, {"n": 96, "batch": 32, "epochs": 3, "optimizer": "adam", "l2": 1e-3}),
    (3, {"n": 100, "batch": 16, "epochs": 2, "optimizer": "momentum"}),  # 100 = 6 x 16 + 4: uneven last batch
    (3, {"n": 62, "batch": 20, "epochs": 2, "optimizer": "adam", "different_seeds": True,
         "validation_split": 0.2}),  # last batch: 2 rows over 3 ranks; seeds differ until broadcast
    (3, {"n": 100, "batch": 16, "epochs": 2, "optimizer": "adam", "weighted": True, "validation_split": 0.2}),
    (3, {"n": 100, "batch": 16, "epochs": 2, "optimizer": "adam", "batch_norm": "sync", "weighted": True}),
])
def test_n_ranks_reach_the_weights_of_one_process_at_the_same_global_batch(ranks, config, tmp_path):
    done, results, _ = launch(ranks, config, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(results) == ranks
    expected, history = single_process(config)
    for result in results:
        np.testing.assert_allclose(result["params"], expected.params, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result["state"], expected.state, rtol=1e-9, atol=1e-12)  # sync BatchNorm's
        # every rank reports the same epoch loss and accuracy, those of one process
        np.testing.assert_allclose(result["loss"], history["loss"], rtol=1e-9)
        np.testing.assert_allclose(result["accuracy"], history["accuracy"], rtol=1e-12)
        np.testing.assert_allclose(result["f1"], history["f1"], rtol=1e-12)  # per-class totals, reduced
        if "val_loss" in history.history:
            np.testing.assert_allclose(result["val_loss"], history["val_loss"], rtol=1e-9)


@needs_mpi
def test_per_rank_batch_norm_trains_every_rank_to_the_same_model(tmp_path):
    """Plain BatchNorm normalises each shard by its own statistics (torch's BatchNorm under DDP):
    not one process's result, but every rank ends with the same weights and running statistics."""
    config = {"n": 96, "batch": 32, "epochs": 2, "optimizer": "adam", "batch_norm": True}
    done, results, _ = launch(2, config, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(results[0]["params"], results[1]["params"])
    np.testing.assert_array_equal(results[0]["state"], results[1]["state"])
    assert results[0]["state"].std() > 0  # the running statistics moved
    config = dict(config, batch=3)  # one row per rank: nothing to normalise by
    done, results, _ = launch(2, config, tmp_path)
    assert done.returncode != 0 and "choose a batch_size" in done.stdout + done.stderr


# Each case: {rank: what that rank holds or asks for differently}, what the error must name, what
# it must not (a fingerprint that differs only because the shape or dtype does).
DISAGREEING_RANKS = [
    ({"2": {"n": 80}}, ["rows of X: 96 on ranks 0, 1; 80 on rank 2"], ["fingerprint"]),
    ({"1": {"perturb": 37}}, ["fingerprint of X: ", " on ranks 0, 2; ", " on rank 1"], ["rows"]),  # one value
    ({"2": {"permute": True}}, ["fingerprint of X", "fingerprint of y", "rank 2"], ["rows"]),  # rows reordered
    ({"1": {"epochs": 3}}, ["epochs: 2 on ranks 0, 2; 3 on rank 1"], ["fingerprint"]),
    ({"0": {"batch": 16}}, ["batch_size: 16 on rank 0; 32 on ranks 1, 2"], []),
    ({"2": {"shuffle": False}}, ["shuffle: True on ranks 0, 1; False on rank 2"], []),
    ({"1": {"validation_split": 0.25}}, ["validation_split: 0.0 on ranks 0, 2; 0.25 on rank 1"], []),
    ({"1": {"dtype": "float32"}}, ["dtype of X: float64 on ranks 0, 2; float32 on rank 1", "model dtype"],
     ["fingerprint"]),
    ({"1": {"l2": 0.01}, "2": {"n": 94}}, ["rows of X: 96 on ranks 0, 1; 94 on rank 2", "model l2: 0.0 on ranks 0, 2"],
     []),  # two differences on two ranks: both named
]


@needs_mpi
def test_ranks_holding_different_data_or_settings_all_stop_naming_what_differs(tmp_path):
    """Before the fix: other rows per rank trained to rc 0 with other losses per rank, a
    nudged value went unnoticed, other epochs or dtypes timed out in a collective. Now every
    rank stops at the start of fit with the same DistributedError, and the job stays usable:
    the last, agreeing, fit trains as one process does."""
    config = {"n": 96, "batch": 32, "epochs": 2, "optimizer": "adam",
              "cases": [overrides for overrides, _, _ in DISAGREEING_RANKS] + [{}]}
    done, results, seconds = launch(3, config, tmp_path, MLP_COLLECTIVE_TIMEOUT="20")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(results) == 3
    for case, (overrides, named, not_named) in enumerate(DISAGREEING_RANKS):
        messages = {str(result["errors"][case]) for result in results}
        assert len(messages) == 1, messages  # every rank stops, with the same message
        message = messages.pop()
        assert message.startswith("the ranks of this data-parallel job disagree"), (overrides, message)
        assert all(part in message for part in named), (overrides, message)
        assert not any(part in message for part in not_named), (overrides, message)
    assert [str(result["errors"][-1]) for result in results] == ["", "", ""]
    expected, history = single_process(config)
    for result in results:
        np.testing.assert_allclose(result["params"], expected.params, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result["loss"], history["loss"], rtol=1e-9)
    assert seconds < 60  # no case waited for a collective timeout


def test_the_data_fingerprint_sees_one_changed_value_and_reordered_rows():
    X = np.random.default_rng(0).standard_normal((1000, 7))
    base = distributed.fingerprint(X)
    assert distributed.fingerprint(X.copy()) == base
    for row in (0, 1, 499, 999):
        nudged = X.copy()
        nudged[row, 3] = np.nextafter(nudged[row, 3], np.inf)  # the smallest change a float can make
        assert distributed.fingerprint(nudged) != base
    swapped = X.copy()
    swapped[[10, 11]] = swapped[[11, 10]]
    assert distributed.fingerprint(swapped) != base
    assert distributed.fingerprint(X.astype(np.float32)) != base
    both_halves = X.copy()  # a float64 is one word: a change split over its halves still shows
    words = both_halves.view(np.uint32)
    words[5, 0] += 1
    words[5, 1] -= 1
    assert distributed.fingerprint(both_halves) != base
    assert distributed.fingerprint(np.zeros((0, 3))) != distributed.fingerprint(np.zeros((0, 4)))
    assert distributed.fingerprint(X[:999]) != distributed.fingerprint(X[:999].reshape(999 * 7, 1))


class _TwoRankWorld:
    """Rank 0 of a fake two-rank world whose rank 1 reports `other(rank 0's summary)`."""

    rank, size = 0, 2

    def __init__(self, other):
        self.other, self.broadcasts = other, []

    def allgather_json(self, value, what):
        mine = json.loads(json.dumps(value))  # as it travels: a list of (name, value) pairs
        return [mine, list(self.other(dict(mine)).items())]

    def broadcast(self, buffer, root=0):
        self.broadcasts.append(buffer)

    def broadcast_object(self, value, root=0):
        return value


def test_start_checks_the_ranks_agree_before_it_broadcasts_anything(backend_name):
    model = mlp.MLP((2, 4, 2), output="softmax", seed=0, backend=backend_name)
    model.compile(loss="cross_entropy", optimizer="adam")
    X = np.arange(40.0).reshape(20, 2)
    Y = np.eye(2)[np.arange(20) % 2]
    settings = {"epochs": 2, "batch_size": np.int64(8), "shuffle": True, "early_stopping": mlp.EarlyStopping(3)}
    fewer_rows = _TwoRankWorld(lambda summary: dict(summary, **{"rows of X": 7}))
    with pytest.raises(distributed.DistributedError, match="rows of X: 20 on rank 0; 7 on rank 1"):
        distributed.DataParallel(model, fewer_rows).start(X, Y, settings)
    assert fewer_rows.broadcasts == []  # nothing sent, nothing received: the weights are as they were
    other_patience = dict(settings, early_stopping=mlp.EarlyStopping(4))
    summary_of_rank_1 = json.loads(json.dumps(distributed.data_and_settings(model, X, Y, other_patience)))
    with pytest.raises(distributed.DistributedError, match="early_stopping: .*patience.*: 3.* on rank 0; "):
        distributed.DataParallel(model, _TwoRankWorld(lambda _: summary_of_rank_1)).start(X, Y, settings)
    without_data = _TwoRankWorld(lambda summary: {k: v for k, v in summary.items() if "X" not in k})
    with pytest.raises(distributed.DistributedError, match="rows of X: 20 on rank 0; not given on rank 1"):
        distributed.DataParallel(model, without_data).start(X, Y, settings)  # rank 1 gave no data
    agreeing = _TwoRankWorld(lambda summary: summary)
    distributed.DataParallel(model, agreeing).start(X, Y, settings)
    assert len(agreeing.broadcasts) == 1  # the weights, once the ranks are known to agree


@needs_mpi
def test_only_rank_zero_writes_checkpoints(tmp_path):
    path = tmp_path / "ckpt.npz"
    done, results, _ = launch(2, {"n": 40, "batch": 10, "epochs": 2, "optimizer": "adam",
                                  "checkpoint": str(path)}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(results[0]["saves"]) == [0, 0] and list(results[1]["saves"]) == []
    assert mlp.checkpoint.load(str(path)).state["next_epoch"] == 2


@needs_mpi
def test_a_failing_rank_stops_the_whole_job_with_its_error(tmp_path):
    done, results, seconds = launch(2, {"n": 64, "batch": 16, "epochs": 2, "optimizer": "adam",
                                        "fault": "raise"}, tmp_path, MLP_COLLECTIVE_TIMEOUT="60")
    assert done.returncode != 0 and results == []
    assert "rank 1/2" in done.stderr and "injected failure on rank 1" in done.stderr
    assert seconds < 60  # aborted, not left to time out


@needs_mpi
def test_a_stuck_rank_makes_the_others_time_out_and_abort(tmp_path):
    done, results, seconds = launch(2, {"n": 64, "batch": 16, "epochs": 2, "optimizer": "adam",
                                        "fault": "hang"}, tmp_path, MLP_COLLECTIVE_TIMEOUT="3")
    assert done.returncode != 0 and results == []
    assert "did not complete within 3 s" in done.stderr
    assert seconds < 60


def test_shards_split_a_batch_evenly_and_cover_it():
    for rows in range(12):
        for size in (1, 2, 3, 5):
            bounds = [distributed.shard_bounds(rows, size, rank) for rank in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == rows
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_the_engine_choice_keeps_gpu_gradients_off_the_host():
    assert distributed.choose_engine(on_device=False, mpi_cuda_aware=False, nccl_available=True) == "mpi"
    assert distributed.choose_engine(on_device=True, mpi_cuda_aware=True, nccl_available=True) == "nccl"
    assert distributed.choose_engine(on_device=True, mpi_cuda_aware=True, nccl_available=False) == "mpi"
    with pytest.raises(distributed.DistributedError, match="NCCL"):
        distributed.choose_engine(on_device=True, mpi_cuda_aware=False, nccl_available=False)


def test_the_local_rank_comes_from_the_launcher(monkeypatch):
    for variable in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK",
                     "PMI_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    assert distributed.local_rank() == 0
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3")
    assert distributed.local_rank() == 3


def test_without_distribution_mpi_is_never_imported(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None\n"  # as if it were not installed
            "import numpy as np, mlp\n"
            "m = mlp.MLP((2, 4, 1), seed=0); m.compile(loss='mse', optimizer='sgd')\n"
            "m.fit(np.zeros((8, 2)), np.zeros(8), epochs=1, verbose=0)\n"
            "try:\n"
            "    m.fit(np.zeros((8, 2)), np.zeros(8), epochs=1, verbose=0, distributed=True)\n"
            "except mlp.distributed.DistributedError as e:\n"
            "    print('ERROR', e)\n")
    env = dict(os.environ, PYTHONPATH=ROOT, MLP_BACKEND="numpy")
    env.pop("MLP_DISTRIBUTED", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ERROR Distributed training needs mpi4py" in done.stdout and "mpiexec -n N" in done.stdout


def test_collective_timeout_setting_is_checked(monkeypatch):
    monkeypatch.setenv("MLP_COLLECTIVE_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="MLP_COLLECTIVE_TIMEOUT"):
        distributed.timeout_seconds()


@needs_mpi
def test_mpiexec_mlp_train_distributed_prints_and_saves_once(tmp_path):
    out = tmp_path / "model.npz"
    environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       MLP_BACKEND="numpy", OMP_NUM_THREADS="1")
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "mlp", "train", "--data", "xor",
                           "--epochs", "3", "--distributed", "-o", str(out)], env=environment,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test loss") == 1 and done.stderr.count("saved the model") == 1
    assert mlp.load(str(out)).n_params > 0


@needs_mpi
def test_the_scaling_benchmark_runs_weak_and_strong_on_real_ranks(tmp_path):
    from mlp.bench import scaling

    rows = scaling.run([1, 2], "tiny", 64, steps=2, repeats=2, warmup=1, timeout=120)
    assert [(r["mode"], r["ranks"]) for r in rows] == [("weak", 1), ("weak", 2), ("strong", 1), ("strong", 2)]
    assert [r["global_batch"] for r in rows] == [64, 128, 64, 64]
    assert all(r["samples_per_s"] > 0 and r["engine"] == "mpi" for r in rows)
    assert rows[0]["efficiency"] == 1.0 and rows[2]["efficiency"] == 1.0
    assert "| weak | 2 | 128 |" in scaling.table(rows, "tiny", 64)


class _FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size, self.broadcasts = rank, size, []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def bcast(self, value, root=0):
        self.broadcasts.append(value)
        return "unique-id-from-rank-0" if value is None else value


class _FakeNccl:
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = "f32", "f64", "sum"
    available = True

    def __init__(self):
        self.created, self.reductions = [], []
        fake = self

        class NcclCommunicator:
            def __init__(self, size, unique_id, rank):
                fake.created.append((size, unique_id, rank))

            def allReduce(self, send, receive, count, kind, op, stream):  # NCCL's name
                fake.reductions.append((send, receive, count, kind, op, stream))

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self):
        return "unique-id-from-rank-0"


def test_gpu_gradients_go_to_nccl_on_the_current_stream(monkeypatch):
    """The NCCL path without a GPU: a fake two-rank world, a fake NCCL and a fake device buffer."""
    import types

    nccl = _FakeNccl()
    stream = types.SimpleNamespace(ptr=4242)
    fake_cupy = types.ModuleType("cupy")
    fake_cupy.cuda = types.SimpleNamespace(nccl=nccl, get_current_stream=lambda: stream)
    cuda_module = types.ModuleType("cupy.cuda")
    cuda_module.nccl = nccl
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda_module)
    for rank in (0, 1):
        comm = _FakeComm(rank, 2)
        MPI = types.SimpleNamespace(COMM_WORLD=comm)
        monkeypatch.setattr(distributed, "_mpi", lambda MPI=MPI: MPI)
        device_backend = types.SimpleNamespace(on_host=False, synchronize=lambda: None)
        world = distributed.MPIWorld(device_backend)
        assert world.engine == "nccl" and (world.rank, world.size) == (rank, 2)
        assert nccl.created[-1] == (2, "unique-id-from-rank-0", rank)  # rank 0's id, broadcast
        grads = types.SimpleNamespace(data=types.SimpleNamespace(ptr=1000 + rank), size=123,
                                      dtype=np.dtype(np.float32))
        world.allreduce_sum(grads)
        assert nccl.reductions[-1] == (1000 + rank, 1000 + rank, 123, "f32", "sum", 4242)


@needs_mpi
def test_mlp_bench_scaling_writes_its_table_and_json(tmp_path):
    from mlp import cli

    assert cli.main(["bench", "--scaling", "1,2", "--net", "tiny", "--batch-sizes", "32",
                     "--out", str(tmp_path), "--stem", "s"]) == 0
    report = json.loads((tmp_path / "s.json").read_text())
    assert [row["ranks"] for row in report["rows"]] == [1, 2, 1, 2]
    assert "| strong | 2 | 32 |" in (tmp_path / "s.md").read_text()


@pytest.mark.parametrize("value,expected", [(None, False), ("", False), ("1", True), ("yes", True),
                                            ("ON", True), ("0", False), ("false", False), ("Off", False)])
def test_on_off_settings_read_one_way(monkeypatch, value, expected):
    # MLP_DISTRIBUTED, MLP_TF32 and MLP_CUDA_GRAPHS all go through config.flag
    from mlp import config

    if value is None:
        monkeypatch.delenv("MLP_DISTRIBUTED", raising=False)
    else:
        monkeypatch.setenv("MLP_DISTRIBUTED", value)
    assert distributed.requested() is expected
    assert config.flag("MLP_DISTRIBUTED", True) is (expected or value in (None, ""))
