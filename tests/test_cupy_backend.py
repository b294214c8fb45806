"""The CuPy backend on a machine without a GPU: importable, listed with its reason, and
failing only when used, with an error that says no CUDA device was found."""
import importlib

import numpy as np
import pytest

import mlp
from mlp import backends
from mlp.errors import BackendUnavailableError, DeviceMemoryError

cupy = pytest.importorskip("cupy")


no_gpu = pytest.mark.skipif(backends.unavailable_reason("cupy") is None,
                            reason="a CUDA device is present: tests/gpu covers it")


def test_the_module_imports_without_a_gpu():
    module = importlib.import_module("mlp.backends.cupy")
    assert module.Backend.name == "cupy" and module.Backend.xp is cupy


@no_gpu
def test_using_it_without_a_gpu_says_no_cuda_device_was_found(monkeypatch):
    backends._instances.pop("cupy", None)
    with pytest.raises(BackendUnavailableError, match="No CUDA device was found"):
        backends.get_backend("cupy")
    assert "cupy" not in backends.available()
    assert "No CUDA device" in backends.unavailable_reason("cupy")
    monkeypatch.setenv("MLP_BACKEND", "cupy")
    with pytest.raises(BackendUnavailableError, match="MLP_BACKEND=numpy"):
        mlp.MLP((2, 3, 1))


def test_mlp_device_must_name_an_existing_device(monkeypatch):
    module = importlib.import_module("mlp.backends.cupy")
    monkeypatch.setattr(module.cupy.cuda.runtime, "getDeviceCount", lambda: 2)
    monkeypatch.setenv("MLP_DEVICE", "5")
    with pytest.raises(ValueError, match="numbered 0 to 1"):
        module.find_device()
    monkeypatch.setenv("MLP_DEVICE", "1")
    assert module.find_device() == 1
    monkeypatch.delenv("MLP_DEVICE")
    monkeypatch.setenv("MLP_DISTRIBUTED", "1")
    monkeypatch.setenv("MPI_LOCALRANKID", "3")
    assert module.find_device() == 1  # local rank 3 of a 2-GPU machine


def test_out_of_memory_in_a_step_names_the_batch_size():
    model = mlp.MLP((4, 8, 1), backend="numpy", seed=0)
    model.compile(loss="mse", optimizer="sgd")

    def exhausted(X, Y, plan_batch=None, weights=None):
        raise MemoryError("cannot allocate 1.2 GiB")

    model._train_batch = exhausted
    with pytest.raises(DeviceMemoryError, match="batch size 16") as caught:
        model.fit(np.zeros((40, 4)), np.zeros(40), epochs=1, batch_size=16, verbose=0)
    assert "Lower batch_size" in str(caught.value)
