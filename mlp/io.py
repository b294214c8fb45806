"""Saving and loading models without pickle.

A model file is an uncompressed NumPy .npz archive (a zip of .npy members): `header`, the JSON
architecture (plus the SHA-256 of the weights) as bytes, and `params`, the flat parameter
buffer; checkpoints add their arrays (mlp.checkpoint). It is written to a temporary file
beside the target and renamed over it, so a crash mid-save never leaves a half-written model.

A file is untrusted input. Loading opens the zip itself and reads only the members it needs;
each member's .npy header (dtype, shape) and its size in the zip's directory are checked
against what the JSON header's architecture implies *before* anything is allocated, and the
data are read with that bound. Members must be stored uncompressed (as `save` writes them),
so loading never holds more than the file's own size. Anything malformed, at any layer (zip,
.npy, JSON, architecture, checksum), is a ModelFileError that names the file and what is
wrong. Nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
import time
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy_format

from mlp import metrics
from mlp.errors import ModelFileError

FORMAT = "mlp-model"
VERSION = 1

MAX_HEADER_BYTES = 16 * 2**20  # the JSON header; a 100,000-feature input scaling is ~4 MB
MAX_NESTING = 32  # depth of the JSON header (layers, activations, history, diagnostics: < 10)
MAX_MEMBERS = 16  # zip members; a checkpoint has at most 5
MAX_DIRECTORY_BYTES = 64 * 2**10  # the zip's central directory: < 1 KB for our members
MAX_NPY_HEADER = 10_000  # numpy's own default bound on an .npy header
READ_CHUNK = 2**22  # bytes per read of an array member

_ZIP_MAGIC = b"PK\x03\x04"
_END_OF_DIRECTORY = b"PK\x05\x06"
_ARRAY_DTYPES = {np.dtype(t).newbyteorder(o) for t in ("f4", "f8") for o in "<>"}

# What a damaged zip can raise from the standard library: a flipped compression method is
# NotImplementedError, a flipped "encrypted" flag RuntimeError, a cut stream EOFError...
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
               RuntimeError, ValueError, struct.error, zlib.error, KeyError, UnicodeDecodeError, OverflowError)


# --- writing ---------------------------------------------------------------------------------
STALE_TEMPORARY_SECONDS = 3600


def _temporary_prefix(path) -> str:
    """Temporaries of `path` are `.{name}.tmp-{pid}-{random}`: hidden, next to the target (an
    atomic rename needs the same file system), and naming the writer's process."""
    return f".{os.path.basename(path)}.tmp-"


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process, or not a pid
        return pid > 0
    return True


def remove_stale_temporaries(path):
    """Remove temporaries of `path` that a killed save left behind (kill -9 runs no cleanup).

    A temporary is stale when the process named in it is not running on this machine, or
    when it has not been written to for an hour (a reused pid, or a writer on another machine
    sharing the folder: a live writer touches its file continuously). A concurrent save of
    the same target by a live process keeps its temporary."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = _temporary_prefix(path)
    try:
        names = [name for name in os.listdir(folder) if name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid_text = name[len(prefix):].split("-", 1)[0]
        candidate = os.path.join(folder, name)
        try:
            idle = time.time() - os.lstat(candidate).st_mtime
            dead = pid_text.isdigit() and not _writer_alive(int(pid_text))
            if dead or idle > STALE_TEMPORARY_SECONDS:
                os.unlink(candidate)
        except OSError:  # gone already (another save cleaned it), or not ours to remove
            continue


def _create_temporary(path):
    """(file descriptor, name) of a new temporary for `path`. Created with mode 0666, so the
    process's umask applies as to any other file (mkstemp's 0600 would not follow it)."""
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        name = os.path.join(folder, f"{_temporary_prefix(path)}{os.getpid()}-{secrets.token_hex(6)}")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), name
        except FileExistsError:
            continue


def atomic_write(path, write):
    """Write `path` atomically: `write(f)` into a temporary binary file in the same folder (a
    name of its own: concurrent writers never share one), fsync, rename over `path`. Readers
    see the old file or the new, never half of one. Temporaries that killed saves of the same
    `path` left behind are removed first."""
    path = os.fspath(path)
    remove_stale_temporaries(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_npz(path, arrays: dict):
    """Write an uncompressed .npz to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def digest(*parts) -> str:
    """SHA-256 (hex) of byte strings and arrays (their raw bytes, without copying them)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            part = memoryview(np.ascontiguousarray(part).reshape(-1).view(np.uint8))
        h.update(part)
    return h.hexdigest()


def _canonical(header) -> bytes:
    """The header as the bytes its checksum covers: sorted keys, no spaces, without the
    checksum itself (JSON round trips Python's floats and ints exactly)."""
    body = {key: value for key, value in header.items() if key != "header_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def header_digest(header) -> str:
    """The checksum a header carries in `header_sha256` (over everything else in it)."""
    return digest(_canonical(header))


def save(model, path, extra_header=None, extra_arrays=None):
    """Write `model` to `path` atomically; checkpoints add their state in the extras.

    Checksums: `sha256` of the weights, `array_sha256` of each extra array, and
    `header_sha256` of the whole header (which holds the other two): a reader verifies
    every part it reads without reading the others."""
    params = model.backend.to_numpy(model.params)
    extra_arrays = extra_arrays or {}
    header = {"format": FORMAT, "version": VERSION, **model.config(), "sha256": digest(params),
              **(extra_header or {})}
    if model.loss is not None:
        header["compile"] = {"loss": model.loss.name, "optimizer": model.optimizer.config(),
                             "l1": model.l1, "l2": model.l2, "clip_norm": model.clip_norm,
                             "metrics": [name for name in model.metrics if name in metrics.METRICS]}  # not functions
    if extra_arrays:
        header["array_sha256"] = {name: digest(array) for name, array in extra_arrays.items()}
    state = {}
    if model.state.size:  # non-trainable state (BatchNorm's running statistics), as long as its layers say
        state = {"state": model.backend.to_numpy(model.state)}
        header["state_sha256"] = digest(state["state"])
    header = json.loads(json.dumps(header))  # exactly what a reader will parse
    header["header_sha256"] = header_digest(header)
    atomic_write_npz(path, {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                            "params": params, **state, **extra_arrays})


# --- reading ---------------------------------------------------------------------------------
def _bad(path, what) -> ModelFileError:
    return ModelFileError(f"{path!r} is not a valid mlp model file: {what}")


def _check_directory(f, path, size):
    """Refuse a zip whose end record declares more members or a larger directory than any
    mlp file has, before zipfile parses (and allocates) that directory. The record ends the
    file (np.savez writes no comment); a tail of 64 KiB covers any comment."""
    tail_size = min(size, 22 + 0xFFFF)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(_END_OF_DIRECTORY)
    if at < 0 or len(tail) - at < 22:
        raise _bad(path, "its zip directory is missing (the file is truncated or damaged)")
    members, directory_bytes = struct.unpack("<HI", tail[at + 10:at + 16])
    if members > MAX_MEMBERS or directory_bytes > MAX_DIRECTORY_BYTES:
        raise _bad(path, f"its zip directory lists {members} members in {directory_bytes} bytes; an mlp "
                         f"file has at most {MAX_MEMBERS}")


def _open_archive(path) -> zipfile.ZipFile:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            start = f.read(4)
            if start != _ZIP_MAGIC:
                kind = "it is empty" if not start else f"it starts with the bytes {start!r}, not a zip archive's"
                raise ModelFileError(f"{path!r} is not an mlp model file (an .npz zip archive written by "
                                     f"model.save or a checkpoint): {kind}")
            _check_directory(f, path, size)
        archive = zipfile.ZipFile(path)
    except ModelFileError:
        raise
    except _ZIP_ERRORS as error:
        raise _bad(path, f"its zip structure is unreadable (truncated or damaged): {error}") from None
    if len(archive.infolist()) > MAX_MEMBERS:
        archive.close()
        raise _bad(path, f"it has more than {MAX_MEMBERS} members")
    return archive


def _member(archive, name, path, archive_size) -> zipfile.ZipInfo:
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise _bad(path, f"it has no {name!r} member") from None
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise _bad(path, f"its {name!r} member is compressed; mlp files store their arrays uncompressed, "
                         "so that loading never holds more than the file's size")
    if info.header_offset + info.compress_size > archive_size:
        raise _bad(path, f"its {name!r} member claims {info.file_size} bytes, more than the file holds "
                         "(truncated or damaged)")
    return info


def _read_exactly(stream, buffer: memoryview, path, name):
    """Fill `buffer` from `stream` in bounded reads; reaching the member's end checks its CRC."""
    position = 0
    while position < len(buffer):
        chunk = stream.read(min(READ_CHUNK, len(buffer) - position))
        if not chunk:
            raise _bad(path, f"its {name!r} member ends early (truncated)")
        buffer[position:position + len(chunk)] = chunk
        position += len(chunk)


def _read_array(archive, name, path, archive_size, dtypes, length=None, max_length=None) -> np.ndarray:
    """Member `name` as a 1-D array, checked before it is allocated: a plain dtype from
    `dtypes` (never object, never pickled), 1-D, `length` elements (or at most
    `max_length`), and exactly as many bytes in the zip as its .npy header says."""
    info = _member(archive, name, path, archive_size)
    try:
        with archive.open(info) as stream:
            version = npy_format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(stream, max_header_size=MAX_NPY_HEADER)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(stream, max_header_size=MAX_NPY_HEADER)
            else:
                raise _bad(path, f"its {name!r} member has .npy format version {version}")
            if dtype not in dtypes or dtype.hasobject or dtype.fields is not None:
                allowed = ", ".join(sorted({d.name for d in dtypes}))
                raise _bad(path, f"its {name!r} member holds {dtype} data; expected {allowed}")
            if not isinstance(shape, tuple) or len(shape) != 1:
                raise _bad(path, f"its {name!r} member has shape {shape}; expected a flat array")
            count = shape[0]
            if length is not None and count != length:
                raise _bad(path, f"its {name!r} member holds {count} values but its architecture needs {length}")
            if max_length is not None and count > max_length:
                raise _bad(path, f"its {name!r} member holds {count} values; at most {max_length} are allowed")
            header_size = stream.tell()
            if info.file_size != header_size + count * dtype.itemsize:  # Python ints: no overflow
                raise _bad(path, f"its {name!r} member is {info.file_size} bytes but its .npy header "
                                 f"({count} x {dtype}) implies {header_size + count * dtype.itemsize}")
            array = np.empty(count, dtype)
            _read_exactly(stream, memoryview(array.view(np.uint8)), path, name)
    except ModelFileError:
        raise
    except (*_ZIP_ERRORS, TypeError, IndexError) as error:  # numpy's .npy header parser on crafted input
        raise _bad(path, f"its {name!r} member is unreadable (damaged): {error}") from None
    return array


def _check_nesting(value, path):
    """Refuse JSON nested deeper than MAX_NESTING (walked without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_NESTING:
                raise _bad(path, f"its header is nested more than {MAX_NESTING} levels deep")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def _read_header(archive, path, archive_size) -> dict:
    raw = _read_array(archive, "header", path, archive_size, {np.dtype(np.uint8)}, max_length=MAX_HEADER_BYTES)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _bad(path, f"its header is not valid JSON: {error}") from None
    _check_nesting(header, path)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path!r} is an .npz archive but not an mlp model file (its header does not "
                             f"say format {FORMAT!r})")
    if header.get("version") != VERSION:
        raise ModelFileError(f"{path!r} has model format version {header.get('version')!r}; "
                             f"this library reads version {VERSION}")
    for key, kind in (("layers", list), ("dtype", str), ("sha256", str)):
        if not isinstance(header.get(key), kind):
            raise _bad(path, f"its header's {key!r} must be a {kind.__name__}; got {header.get(key)!r:.80}")
    if "header_sha256" in header and header["header_sha256"] != header_digest(header):
        raise ModelFileError(f"the header of {path!r} does not match its checksum: the file was modified "
                             "or damaged")  # files saved before the header had a checksum: weights only
    return header


def _array_digest(header, name, path) -> str:
    digests = header.get("array_sha256")
    if not isinstance(digests, dict) or not isinstance(digests.get(name), str):
        raise _bad(path, f"its header has no checksum for its {name!r} member")
    return digests[name]


def _layers(header, path):
    """The layers the header describes (no arrays allocated: layers get theirs from a model)."""
    from mlp.layers import from_config

    layers = []
    for i, config in enumerate(header["layers"]):
        if not isinstance(config, dict):
            raise _bad(path, f"layer {i} of its architecture is {config!r:.80}, not a layer description")
        try:
            layers.append(from_config(config))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as error:
            raise _bad(path, f"layer {i} of its architecture is invalid: {error}") from None
    if not layers:
        raise _bad(path, "its architecture has no layers")
    return layers


def read(path, extra_arrays=None):
    """(header dict, params array, other arrays by name) of a model file, checked.

    `extra_arrays(header)` names the other members to read (checkpoints: the optimizer's and
    early stopping's arrays), each as long as `params`; the layers' non-trainable `state` is read
    when they declare one; every other member is left unread."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"no model file at {path!r}")
    archive_size = os.path.getsize(path)
    with _open_archive(path) as archive:
        header = _read_header(archive, path, archive_size)
        n_params = sum(layer.n_params for layer in _layers(header, path))  # Python ints, nothing allocated
        if header["dtype"] not in ("float32", "float64"):
            raise _bad(path, f"its dtype is {header['dtype']!r:.40}; expected float32 or float64")
        dtype = np.dtype(header["dtype"])
        dtypes = {dtype.newbyteorder("<"), dtype.newbyteorder(">")}
        params = _read_array(archive, "params", path, archive_size, dtypes, length=n_params)
        if header["sha256"] != digest(params):
            raise ModelFileError(f"the weights in {path!r} do not match their checksum: "
                                 "the file was modified or damaged")
        names = list(extra_arrays(header)) if extra_arrays is not None else []
        extras = {}
        n_state = sum(layer.n_state for layer in _layers(header, path))  # Python ints, nothing allocated
        if n_state:
            extras["state"] = _read_array(archive, "state", path, archive_size, dtypes, length=n_state)
            if header.get("state_sha256") != digest(extras["state"]):
                raise ModelFileError(f"the state (running statistics) in {path!r} does not match its checksum: "
                                     "the file was modified or damaged")
        for name in names:
            expected = _array_digest(header, name, path)
            length = n_state if name.endswith("_state") else n_params  # (early stopping's best statistics)
            extras[name] = _read_array(archive, name, path, archive_size, _ARRAY_DTYPES, length=length)
            if digest(extras[name]) != expected:
                raise ModelFileError(f"the {name!r} array in {path!r} does not match its checksum: the file "
                                     "was modified or damaged")
    return header, params, extras


def load(path, backend=None):
    """The model saved at `path`, on `backend` (default: MLP_BACKEND, else numpy)."""
    from mlp.backends import get_backend
    from mlp.model import Sequential

    backend = get_backend(backend)  # an unknown backend is the caller's error, not the file's
    header, params, arrays = read(path)
    path = os.fspath(path)
    try:
        model = Sequential(_layers(header, path), backend=backend, dtype=header["dtype"])
    except (TypeError, ValueError) as error:  # layers that do not chain, a last layer that is not Dense
        raise _bad(path, f"its architecture is invalid: {error}") from None
    model.params[...] = model.backend.asarray(params, model.dtype)
    if "state" in arrays:
        model.state[...] = model.backend.asarray(arrays["state"], model.dtype)
    if header.get("preprocessing") is not None:
        from mlp import preprocessing

        try:
            model.preprocessing = preprocessing.from_config(header["preprocessing"])
        except (KeyError, TypeError, ValueError) as error:
            raise _bad(path, f"its preprocessing is invalid: {error}") from None
    if "compile" in header:
        settings = header["compile"]
        if not isinstance(settings, dict):
            raise _bad(path, f"its compile settings are {settings!r:.80}, not a dict")
        try:
            model.compile(**settings)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise _bad(path, f"its compile settings are invalid: {error}") from None
    return model
