"""Settings read from the environment, each parsed here and only here. Imports nothing heavy.

Every setting is read on each call (tests and users may change it), and a value a setting
does not accept raises ConfigurationError naming the variable, the value and what it accepts:
a typo never silently falls back to a default.
"""
from __future__ import annotations

import math
import os

from mlp.errors import ConfigurationError

DEFAULT_BACKEND = "numpy"
DEFAULT_DTYPE = "float32"
DTYPES = ("float32", "float64")
DEFAULT_COLLECTIVE_TIMEOUT = 300.0

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")


def _raw(name: str) -> str:
    """The variable's value, stripped; '' when unset (unset and empty mean the default)."""
    return os.environ.get(name, "").strip()


def _refuse(name: str, value: str, accepts: str):
    raise ConfigurationError(f"{name}={value!r} is not a valid value: {name} accepts {accepts}; "
                             f"unset it for the default")


def backend_name() -> str:
    """MLP_BACKEND: the default backend, one of mlp.backends.names(); numpy when unset."""
    value = _raw("MLP_BACKEND")
    if not value:
        return DEFAULT_BACKEND
    from mlp.backends import names  # not at import: mlp.backends imports this module

    known = names()
    if value.lower() not in known:
        _refuse("MLP_BACKEND", value, f"a backend name ({', '.join(known)})")
    return value.lower()


def default_dtype() -> str:
    """MLP_DTYPE: the default dtype of new models, float32 (unset) or float64."""
    value = _raw("MLP_DTYPE")
    if not value:
        return DEFAULT_DTYPE
    if value.lower() not in DTYPES:
        _refuse("MLP_DTYPE", value, " or ".join(DTYPES))
    return value.lower()


def flag(name: str, default: bool) -> bool:
    """An on/off setting (MLP_DISTRIBUTED, MLP_TF32, MLP_CUDA_GRAPHS, MLP_KEEP_FREED_MEMORY):
    unset or empty gives `default`; 1/true/yes/on and 0/false/no/off (any case) turn it on
    and off; anything else is an error."""
    value = tristate(name)
    return default if value is None else value


def tristate(name: str) -> bool | None:
    """An on/off setting whose unset state means "decide for me" (MLP_CUDA_FUSED): None when
    unset or empty, else True or False as in `flag`."""
    value = _raw(name)
    if not value:
        return None
    if value.lower() in ON:
        return True
    if value.lower() in OFF:
        return False
    _refuse(name, value, f"{'/'.join(ON)} to turn it on or {'/'.join(OFF)} to turn it off")


def _non_negative_int(name: str, accepts: str) -> int | None:
    value = _raw(name)
    if not value:
        return None
    if not value.isdigit():  # digits only: no sign, no fraction, no exponent
        _refuse(name, value, accepts)
    return int(value)


def numba_crossover() -> int | None:
    """MLP_NUMBA_CROSSOVER: the batch size up to which the Numba backend runs its whole
    compiled step, overriding the measured table (None when unset). 0 means never."""
    return _non_negative_int("MLP_NUMBA_CROSSOVER",
                             "a batch size, an integer >= 0 (0: never use the compiled whole step)")


def numba_compile() -> bool | None:
    """MLP_NUMBA_COMPILE: whether a fit on the Numba backend runs compiled kernels: on (always, as
    `train_step` does), off (never: NumPy's reference code), or unset: when the fit's steps are
    expected to win back the compilation (mlp.backends.numba, `Backend.compiling_pays`). Read
    when the backend is made, as MLP_NUMBA_CROSSOVER is."""
    return tristate("MLP_NUMBA_COMPILE")


def device() -> int | None:
    """MLP_DEVICE: the CUDA device number the cupy backend uses (None when unset). Whether
    that device exists is checked by the backend, which knows how many there are."""
    return _non_negative_int("MLP_DEVICE", "a CUDA device number, an integer >= 0")


def collective_timeout() -> float:
    """MLP_COLLECTIVE_TIMEOUT: seconds a collective may wait for the other ranks (300 when
    unset). Finite and positive: NaN or infinity would let a dead rank hang the job, and 0
    would fail every collective at once."""
    value = _raw("MLP_COLLECTIVE_TIMEOUT")
    if not value:
        return DEFAULT_COLLECTIVE_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        _refuse("MLP_COLLECTIVE_TIMEOUT", value, "a number of seconds, finite and > 0 (e.g. 300)")
    return seconds


def cuda_fused() -> bool | None:
    """MLP_CUDA_FUSED: force the fused Numba-CUDA inference kernel on (True) or off (False);
    None when unset (use it where it was measured faster)."""
    return tristate("MLP_CUDA_FUSED")


def keep_freed_memory() -> bool:
    """MLP_KEEP_FREED_MEMORY: raise glibc's mmap/trim thresholds (on unless turned off)."""
    return flag("MLP_KEEP_FREED_MEMORY", True)


def cache_dir() -> str | None:
    """MLP_CACHE_DIR: the folder of compiled kernels, `~` expanded (None when unset)."""
    value = _raw("MLP_CACHE_DIR")
    return os.path.expanduser(value) if value else None


def dump_kernels() -> str | None:
    """MLP_DUMP_KERNELS: a folder that receives every generated kernel source as it is loaded
    (mlp.kernels.dump), `~` expanded (None when unset)."""
    value = _raw("MLP_DUMP_KERNELS")
    return os.path.expanduser(value) if value else None


def problems() -> list[str]:
    """One message per environment variable set to a value it does not accept (for `mlp info`)."""
    found = []
    for read in (backend_name, default_dtype, numba_crossover, numba_compile, device, collective_timeout, cuda_fused,
                 keep_freed_memory, lambda: flag("MLP_DISTRIBUTED", False), lambda: flag("MLP_TF32", False),
                 lambda: flag("MLP_CUDA_GRAPHS", True)):
        try:
            read()
        except ConfigurationError as error:
            found.append(str(error))
    return found
