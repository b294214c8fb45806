"""Data-parallel training across processes: MPI (mpi4py) and, for GPUs, NCCL (CuPy).

Every rank holds a full replica of the model. `fit(..., distributed=True)` (or
MLP_DISTRIBUTED=1 in the environment) under `mpiexec -n N`:
- checks first that every rank holds the same data (shape, dtype and a fingerprint of X and of
  the encoded targets), the same model and compile settings and the same fit settings, and
  stops every rank with one DistributedError naming what differs, and on which ranks, instead
  of letting unequal step counts pair collectives wrongly (or train different models silently);
- broadcasts the initial weights and the shuffling state from rank 0, so every rank draws
  the same permutation of the data each epoch;
- splits every global batch of `batch_size` rows as evenly as possible across the ranks
  (`np.array_split` order: the first `rows % N` ranks take one row more; a rank may get none
  when a last batch has fewer rows than there are ranks);
- after each backward pass sums the gradients (the one flat buffer) in one all-reduce, each
  rank's share weighted by its rows, so the update is the one a single process makes on the
  whole global batch; L1/L2 penalties are added once, after the reduction;
- reduces the epoch's loss and metrics so every rank reports the same numbers (validation
  runs on every rank's identical replica), and lets only rank 0 print and write checkpoints.

A collective that does not complete within MLP_COLLECTIVE_TIMEOUT seconds (default 300)
raises CollectiveTimeoutError; an exception on any rank aborts the whole job (MPI_Abort)
with the rank and the error, instead of leaving the others waiting forever.

Engines: gradients on the host go through MPI. Gradients on a GPU (the cupy backend) go
through NCCL on CuPy's current stream, or through MPI directly when it is CUDA-aware, so no
gradient passes through host memory; each rank takes the GPU of its local rank. Without
distribution turned on, nothing here is imported and mpi4py is not needed.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import shutil
import sys
import time

import numpy as np

from mlp import config
from mlp.errors import MLPError

DEFAULT_TIMEOUT = config.DEFAULT_COLLECTIVE_TIMEOUT


class DistributedError(MLPError, RuntimeError):
    """Distributed training cannot start or a rank failed."""


class CollectiveTimeoutError(DistributedError, TimeoutError):
    """A collective operation did not complete in time: another rank is stuck or gone."""


def requested(distributed=None) -> bool:
    """Whether `fit` should train data-parallel: the argument, else MLP_DISTRIBUTED."""
    if distributed is not None:
        return bool(distributed)
    return config.flag("MLP_DISTRIBUTED", False)


def local_rank() -> int:
    """This process' index among the ranks on its machine, from the launcher's environment."""
    for variable in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK",
                     "PMI_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"):
        value = os.environ.get(variable)
        if value is not None and value.isdigit():
            return int(value)
    return 0


def timeout_seconds() -> float:
    """MLP_COLLECTIVE_TIMEOUT (see mlp.config.collective_timeout)."""
    return config.collective_timeout()


def mpiexec_path():
    """The `mpiexec` launcher: beside this Python (an `mpich` wheel in the environment) or on
    PATH; None when there is none."""
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def shard_bounds(rows: int, size: int, rank: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s share of `rows` rows split over `size` ranks."""
    base, extra = divmod(rows, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def choose_engine(on_device: bool, mpi_cuda_aware: bool, nccl_available: bool) -> str:
    """Which engine reduces the gradients: 'mpi' for host buffers; for device buffers NCCL
    when CuPy has it, else CUDA-aware MPI; anything else is an error (no host round trip)."""
    if not on_device:
        return "mpi"
    if nccl_available:
        return "nccl"
    if mpi_cuda_aware:
        return "mpi"
    raise DistributedError(
        "GPU gradients need NCCL (CuPy built with NCCL: pip install 'nvidia-nccl-cu13') or a CUDA-aware "
        "MPI; neither is available, and gradients are not copied through host memory.")


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise DistributedError(
            f"Distributed training needs mpi4py and an MPI library ({error}). Install them with: "
            "pip install 'mlp[mpi]' mpich (or use your cluster's MPI), then launch with "
            "mpiexec -n N python train.py") from None
    return MPI


def _mpi_cuda_aware(MPI) -> bool:
    query = getattr(MPI, "Query_cuda_support", None)  # MPIX_Query_cuda_support, where the MPI has it
    try:
        return bool(query()) if query else False
    except Exception:  # noqa: BLE001  (an MPI without the extension raises NotImplementedError)
        return False


FINGERPRINT_ROWS = 64  # rows hashed whole, evenly spaced from the first to the last


WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}  # an element's bits as one unsigned word


def fingerprint(array) -> str:
    """A cheap digest of an array (rows of anything): its shape, dtype, a hash of up to
    FINGERPRINT_ROWS evenly spaced rows, and two integer sums over every element's bits (each
    element read as one unsigned word, the sums taken modulo 2**64): the plain sum, which any
    one changed value changes (its change is below 2**64, so it cannot vanish), and the rows'
    sums weighted by row position, which reordered rows change (but for a rare coincidence).
    Integer sums are exact, so ranks agree bit for bit whatever their memory alignment or SIMD
    width. Cost: one pass over the data; 60000 x 784 float32 (188 MB) takes about 45 ms."""
    a = np.ascontiguousarray(array)
    rows = a.reshape(a.shape[0] if a.ndim else 1, math.prod(a.shape[1:]))
    rows = rows.view(WORDS[a.dtype.itemsize]) if a.dtype.itemsize in WORDS else rows.view(np.uint8)
    row_sums = rows.sum(axis=1, dtype=np.uint64)
    positions = np.arange(1, row_sums.size + 1, dtype=np.uint64)
    total, weighted = int(row_sums.sum(dtype=np.uint64)), int((row_sums * positions).sum(dtype=np.uint64))
    digest = hashlib.blake2b(f"{a.shape}|{a.dtype.str}|{total}|{weighted}|".encode(), digest_size=16)
    if rows.shape[0]:
        sample = np.linspace(0, rows.shape[0] - 1, min(rows.shape[0], FINGERPRINT_ROWS)).astype(np.int64)
        digest.update(rows[np.unique(sample)].tobytes())
    return digest.hexdigest()


def _plain_attributes(value) -> dict:
    """A settings object's public attributes that are plain values (no arrays, no objects)."""
    return {key: describe(item) for key, item in sorted(getattr(value, "__dict__", {}).items())
            if not key.startswith("_") and (item is None or isinstance(item, (bool, str, numbers.Real)))}


def describe(value):
    """A JSON-able description of a setting, equal on two ranks exactly when the settings are
    equal: numbers as numbers, arrays by shape, dtype and fingerprint, settings objects
    (EarlyStopping, schedules) by type and their plain attributes."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "dtype": str(value.dtype), "fingerprint": fingerprint(value)}
    if isinstance(value, dict):
        return {str(key): describe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(item) for item in value]
    return {"type": type(value).__name__, **_plain_attributes(value)}


def data_and_settings(model, X=None, Y=None, settings=None) -> dict:
    """What must agree on every rank of a data-parallel fit, by name: the model and compile
    settings, the data after validation where given (X: (rows, features), Y: (rows, outputs),
    in the model's dtype) and `settings` (fit's arguments, by name)."""
    summary = {}
    for letter, array, width in (("X", X, "features of X"), ("y", Y, "shape of a target")):
        if array is not None:
            array = model.backend.to_numpy(array)
            summary.update({f"rows of {letter}": int(array.shape[0]), width: list(array.shape[1:]),
                            f"dtype of {letter}": str(array.dtype), f"fingerprint of {letter}": fingerprint(array)})
    summary.update({
        "model layers": describe(model.config()["layers"]), "model dtype": str(model.dtype),
        "model loss": model.loss.name, "model optimizer": describe(model.optimizer.config()),
        "model l1": model.l1, "model l2": model.l2, "model clip_norm": describe(model.clip_norm),
        "model metrics": list(model.metrics),
    })
    summary.update({name: describe(value) for name, value in (settings or {}).items()})
    return summary


def _shown(encoded: str | None) -> str:
    """A setting's value as the error shows it: strings bare, digests shortened, long values cut."""
    if encoded is None:
        return "not given"
    value = json.loads(encoded)
    if isinstance(value, str):
        return value[:16] if len(value) == 32 and all(c in "0123456789abcdef" for c in value) else value
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _ranks(ranks) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


# A fingerprint differs whenever its array's shape or dtype does: then only those are named.
FINGERPRINT_OF = {"fingerprint of X": ("rows of X", "features of X", "dtype of X"),
                  "fingerprint of y": ("rows of y", "shape of a target", "dtype of y")}


def disagreements(summaries) -> list[str]:
    """For each name whose value is not the same in every rank's summary (or that some rank
    lacks): 'name: value on ranks a, b; other value on rank c' (values in order of the lowest
    rank holding them). Every rank, given the same summaries, finds the same lines."""
    differing = {}
    for name in dict.fromkeys(name for summary in summaries for name in summary):
        holders = {}
        for rank, summary in enumerate(summaries):
            holders.setdefault(json.dumps(summary[name], sort_keys=True) if name in summary else None, []).append(rank)
        if len(holders) > 1:
            differing[name] = "; ".join(f"{_shown(value)} on {_ranks(ranks)}" for value, ranks in holders.items())
    return [f"{name}: {values}" for name, values in differing.items()
            if not any(shape in differing for shape in FINGERPRINT_OF.get(name, ()))]


class MPIWorld:
    """The ranks of an MPI job and the collectives data-parallel training needs (with one
    rank every collective returns at once)."""

    def __init__(self, backend):
        self.MPI = _mpi()
        self.comm = self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = timeout_seconds()
        self.on_device = not backend.on_host
        self.backend = backend
        nccl = None
        if self.on_device:
            try:
                from cupy.cuda import nccl
            except ImportError:
                nccl = None
            nccl = nccl if nccl is not None and getattr(nccl, "available", True) else None
        self.engine = choose_engine(self.on_device, _mpi_cuda_aware(self.MPI), nccl is not None)
        self.nccl = None
        if self.engine == "nccl" and self.size > 1:
            unique_id = nccl.get_unique_id() if self.rank == 0 else None
            unique_id = self.comm.bcast(unique_id, root=0)
            self.nccl = nccl.NcclCommunicator(self.size, unique_id, self.rank)
            self._nccl_module = nccl

    def _wait(self, request, what):
        """Wait for a non-blocking collective, at most `timeout` seconds."""
        deadline = time.monotonic() + self.timeout
        spins = 0
        while not request.Test():
            if time.monotonic() > deadline:
                raise CollectiveTimeoutError(
                    f"rank {self.rank}: {what} did not complete within {self.timeout:g} s "
                    "(MLP_COLLECTIVE_TIMEOUT): another rank has stopped or is stuck")
            spins += 1
            if spins > 1000:
                time.sleep(0.0005)

    def allreduce_sum(self, buffer):
        if self.size == 1:
            return
        if self.nccl is not None:
            import cupy

            nccl = self._nccl_module
            kinds = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
            stream = cupy.cuda.get_current_stream()
            self.nccl.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, kinds[buffer.dtype],
                                nccl.NCCL_SUM, stream.ptr)
            return
        if self.on_device:  # CUDA-aware MPI reads device memory; the kernels before must be done
            self.backend.synchronize()
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM), "the gradient all-reduce")

    def allreduce_host(self, values):
        values = np.ascontiguousarray(values, dtype=np.float64)
        if self.size > 1:
            self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, values, op=self.MPI.SUM), "a metrics all-reduce")
        return values

    def broadcast(self, buffer, root=0):
        if self.size == 1:
            return
        if self.nccl is not None:  # once per fit: the weights may pass through the host
            host = self.backend.to_numpy(buffer).copy()
            self._wait(self.comm.Ibcast(host, root=root), "the weight broadcast")
            buffer[...] = self.backend.asarray(host)
            return
        if self.on_device:  # CUDA-aware MPI reads device memory; the kernels before must be done
            self.backend.synchronize()
        self._wait(self.comm.Ibcast(buffer, root=root), "the weight broadcast")

    def allgather_json(self, value, what) -> list:
        """Every rank's `value` (JSON-able), in rank order, on every rank; at most `timeout`
        seconds, like every other collective (a rank that never arrives is a timeout, not a hang)."""
        payload = np.frombuffer(json.dumps(value, sort_keys=True).encode(), dtype=np.uint8)
        if self.size == 1:
            return [json.loads(payload.tobytes())]
        lengths = np.zeros(self.size, dtype=np.int64)
        self._wait(self.comm.Iallgather(np.array([payload.size], dtype=np.int64), lengths), what)
        padded = np.zeros(int(lengths.max()), dtype=np.uint8)
        padded[:payload.size] = payload
        gathered = np.zeros((self.size, padded.size), dtype=np.uint8)
        self._wait(self.comm.Iallgather(padded, gathered), what)
        return [json.loads(row[:length].tobytes()) for row, length in zip(gathered, lengths)]

    def broadcast_object(self, value, root=0):
        return self.comm.bcast(value, root=root) if self.size > 1 else value

    def abort(self, message):
        sys.stderr.write(f"[mlp rank {self.rank}/{self.size}] {message}\n")
        sys.stderr.flush()
        time.sleep(0.5)  # let the launcher forward the message before MPI_Abort tears the job down
        self.comm.Abort(1)


_world = None


def get_world(backend) -> MPIWorld:
    """The job's world (created once per process: MPI is initialised on first use)."""
    global _world
    if _world is None:
        _world = MPIWorld(backend)
    return _world


class DataParallel:
    """What `fit` does differently on each rank of a data-parallel job."""

    def __init__(self, model, world: MPIWorld):
        from mlp.batchnorm import BatchNorm
        from mlp.model import _every_layer

        self.model, self.world = model, world
        self.rank, self.size = world.rank, world.size
        norms = [layer for layer in _every_layer(model.layers) if isinstance(layer, BatchNorm)]
        self.synced = [layer for layer in norms if layer.sync]
        self.per_rank = len(norms) > len(self.synced)  # running statistics averaged after each step

    def attach(self):
        """Give sync BatchNorm layers this job's all-reduce for the fit (detach() takes it back)."""
        for layer in self.synced:
            layer.collective = self.world

    def detach(self):
        for layer in self.synced:
            layer.collective = None

    def start(self, X=None, Y=None, settings=None):
        """Check that every rank holds the same model, data and settings (see `check_agreement`),
        then give every rank rank 0's initial weights and shuffling state.
        X: (rows, features) and Y: (rows, outputs), validated; settings: fit's arguments by name.
        A caller that shards data of its own making (the scaling benchmark) may leave them out."""
        self.check_agreement(X, Y, settings)
        self.world.broadcast(self.model.params)
        if self.model.state.size:  # BatchNorm's running statistics: rank 0's too
            self.world.broadcast(self.model.state)
        state = self.world.broadcast_object(self.model._shuffle_rng.bit_generator.state)
        self.model._shuffle_rng.bit_generator.state = state

    def check_agreement(self, X=None, Y=None, settings=None):
        """Raise the same DistributedError on every rank when any rank's data (shape, dtype,
        fingerprint), model or fit settings differ from another's: unequal numbers of rows or
        epochs would pair one rank's gradient all-reduce with another's metrics reduction, and
        unequal data or learning rates would train a model no single process would."""
        if self.size == 1:
            return
        pairs = list(data_and_settings(self.model, X, Y, settings).items())  # a list keeps the names' order
        summaries = [dict(pairs) for pairs in self.world.allgather_json(pairs, "the check that the ranks agree")]
        differences = disagreements(summaries)
        if differences:
            raise DistributedError(
                "the ranks of this data-parallel job disagree, so their collectives would not pair up (or "
                "they would train different models): " + ". ".join(differences) + ". Give every rank the same "
                "X, y, model, compile and fit arguments: each rank loads the whole data set, and fit gives "
                "each rank its share of every batch.")

    def shard(self, rows):
        """This rank's part of a global batch (a slice or an index array)."""
        if isinstance(rows, slice):
            count = rows.stop - rows.start
            lo, hi = shard_bounds(count, self.size, self.rank)
            return slice(rows.start + lo, rows.start + hi), count
        lo, hi = shard_bounds(len(rows), self.size, self.rank)
        return rows[lo:hi], len(rows)

    def train_batch(self, X, Y, global_rows, weights=None):
        """One step on this rank's shard (`weights`: its row weights, normalised over the whole
        training set, or None); every rank ends with the same weights. Returns (this shard's loss
        times its share, [this shard's output])."""
        model, loss = self.model, self.model.loss
        backend = model.backend
        rows, per_row = X.shape[0], tuple(Y.shape[1:])
        shard_norm, global_norm = loss.normaliser((rows,) + per_row), loss.normaliser((global_rows,) + per_row)
        share = model.dtype.type(shard_norm / global_norm)
        if rows and self.synced:  # the loss normalised by the global batch: sync BatchNorm sums dZ over ranks
            shares = backend.xp.full((rows, 1), share, dtype=model.dtype) if weights is None else weights * share
            value, outputs = model._compute_gradients(X, Y, loss, 0.0, 0.0, training=True, weights=shares)
            value = value / share  # reported as the other branch does
        elif rows:
            value, outputs = model._compute_gradients(X, Y, loss, 0.0, 0.0, training=True, weights=weights)
            model.grads *= share
        else:  # fewer rows than ranks in a last batch: this rank adds nothing
            model.grads[...] = 0
            value, outputs = 0.0, [backend.zeros((0, model.n_out), model.dtype)]
        self.world.allreduce_sum(model.grads)
        if model.l1 or model.l2:
            penalty = model._penalty(model.l1, model.l2, add_gradients=True)
            if self.rank == 0:  # counted once per global batch in the epoch's loss
                value = value + penalty * (global_norm / shard_norm)
        model._apply_gradients()
        if self.per_rank:  # each rank's running statistics came from its shard: all ranks keep their mean
            self.world.allreduce_sum(model.state)
            model.state /= model.dtype.type(self.size)
        return value, outputs

    def reduce_epoch(self, total, totals):
        """Sum the epoch's loss total and each metric's totals (tuples of scalars and small arrays,
        see mlp.metrics) over the ranks, in one collective."""
        to_host = self.model.backend.to_numpy
        pieces = [np.asarray(to_host(total), dtype=float).reshape(1)]
        shapes = {}
        for name, parts in totals.items():
            host = [np.asarray(to_host(part), dtype=float) for part in parts]
            shapes[name] = [part.shape for part in host]
            pieces += [part.ravel() for part in host]
        values = self.world.allreduce_host(np.concatenate(pieces))
        reduced, at = {}, 1
        for name, part_shapes in shapes.items():
            parts = []
            for shape in part_shapes:
                size = int(np.prod(shape))
                parts.append(values[at:at + size].reshape(shape))
                at += size
            reduced[name] = tuple(parts)
        return values[0], reduced

