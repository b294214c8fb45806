"""Environment variables: each parsed in one place (mlp.config); a bad value is a
ConfigurationError naming the variable and what it accepts, never a silent default."""
import math

import pytest

import mlp
from mlp import config, distributed
from mlp.errors import ConfigurationError, MLPError

# variable -> (reader, {value: expected}, [refused values]); unset/empty is the default
SETTINGS = {
    "MLP_BACKEND": (config.backend_name, {"": "numpy", "numpy": "numpy", " NumPy ": "numpy"},
                    ["foo", "numpy2", "torch"]),
    "MLP_DTYPE": (config.default_dtype, {"": "float32", "float64": "float64", "FLOAT32": "float32"},
                  ["foo", "float16", "int32", "f8"]),
    "MLP_NUMBA_CROSSOVER": (config.numba_crossover, {"": None, "0": 0, "64": 64, " 8192 ": 8192},
                            ["abc", "-1", "1.5", "1e3", "+4"]),
    "MLP_NUMBA_COMPILE": (config.numba_compile, {"": None, "1": True, "off": False, "ON": True},
                          ["2", "auto", "always"]),
    "MLP_COLLECTIVE_TIMEOUT": (config.collective_timeout, {"": 300.0, "60": 60.0, "0.5": 0.5},
                               ["nan", "inf", "-inf", "0", "-1", "soon"]),
    "MLP_DEVICE": (config.device, {"": None, "0": 0, "3": 3}, ["-1", "gpu0", "1.0"]),
    "MLP_CUDA_FUSED": (config.cuda_fused, {"": None, "1": True, "0": False, "off": False},
                       ["2", "auto", "maybe"]),
    "MLP_KEEP_FREED_MEMORY": (config.keep_freed_memory, {"": True, "0": False, "yes": True},
                              ["2", "sometimes"]),
    "MLP_DISTRIBUTED": (distributed.requested, {"": False, "1": True, "false": False}, ["2", "y"]),
}


@pytest.mark.parametrize("variable", SETTINGS)
def test_each_setting_reads_its_values_and_names_itself_when_refusing(monkeypatch, variable):
    read, good, bad = SETTINGS[variable]
    for value, expected in good.items():
        monkeypatch.setenv(variable, value)
        assert read() == expected, value
    monkeypatch.delenv(variable)
    assert read() == good[""]
    for value in bad:
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigurationError, match=variable) as caught:
            read()
        assert "accepts" in str(caught.value) and repr(value.strip()) in str(caught.value)


def test_configuration_error_is_an_mlp_error_and_a_value_error():
    assert issubclass(ConfigurationError, MLPError) and issubclass(ConfigurationError, ValueError)


def test_bad_dtype_variable_is_refused_when_a_model_is_built(monkeypatch):
    monkeypatch.setenv("MLP_DTYPE", "foo")
    with pytest.raises(ConfigurationError, match="MLP_DTYPE='foo'.*float32 or float64"):
        mlp.MLP([2, 2])
    monkeypatch.setenv("MLP_DTYPE", "float64")
    assert mlp.MLP([2, 2]).dtype == "float64"


def test_bad_backend_variable_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MLP_BACKEND", "foo")
    with pytest.raises(ConfigurationError, match="MLP_BACKEND='foo'.*numpy"):
        mlp.get_backend()
    assert mlp.get_backend("numpy").name == "numpy"  # an explicit backend does not read it


def test_collective_timeout_is_never_disabled_or_zero(monkeypatch):
    for value in ("nan", "0", "-1"):
        monkeypatch.setenv("MLP_COLLECTIVE_TIMEOUT", value)
        with pytest.raises(ConfigurationError, match="finite and > 0"):
            distributed.timeout_seconds()
    monkeypatch.setenv("MLP_COLLECTIVE_TIMEOUT", "12.5")
    assert distributed.timeout_seconds() == 12.5 and math.isfinite(distributed.timeout_seconds())


# variable -> (a refused value, an accepted one, what the backend made with it then reads)
NUMBA_BACKEND_SETTINGS = {
    "MLP_NUMBA_CROSSOVER": ("-1", "16", lambda backend: backend.crossover_for(10_000) == 16),
    "MLP_NUMBA_COMPILE": ("maybe", "off", lambda backend: backend.compile_setting is False),
}


@pytest.mark.parametrize("variable", NUMBA_BACKEND_SETTINGS)
def test_numba_backend_reads_its_settings_through_config_when_made(monkeypatch, variable):
    """Read when the backend is made, so a bad value is refused before any model or fit uses it."""
    numba_backend = pytest.importorskip("mlp.backends.numba", exc_type=ImportError)
    refused, accepted, reads = NUMBA_BACKEND_SETTINGS[variable]
    monkeypatch.setenv(variable, refused)
    with pytest.raises(ConfigurationError, match=f"{variable}='{refused}'"):
        numba_backend.Backend()
    monkeypatch.setenv(variable, accepted)
    assert reads(numba_backend.Backend())


def test_keep_freed_memory_refuses_a_bad_value_before_tuning(monkeypatch):
    from mlp.backends import _memory

    monkeypatch.setattr(_memory, "_done", False)
    monkeypatch.setenv("MLP_KEEP_FREED_MEMORY", "nope")
    with pytest.raises(ConfigurationError, match="MLP_KEEP_FREED_MEMORY"):
        _memory.keep_freed_memory()
    assert _memory._done is False
    monkeypatch.setenv("MLP_KEEP_FREED_MEMORY", "0")
    assert _memory.keep_freed_memory() is False


def test_problems_lists_every_bad_variable(monkeypatch):
    for variable in (*SETTINGS, "MLP_TF32", "MLP_CUDA_GRAPHS"):
        monkeypatch.delenv(variable, raising=False)
    assert config.problems() == []
    monkeypatch.setenv("MLP_DTYPE", "foo")
    monkeypatch.setenv("MLP_CUDA_FUSED", "2")
    found = config.problems()
    assert len(found) == 2 and "MLP_DTYPE" in found[0] and "MLP_CUDA_FUSED" in found[1]
