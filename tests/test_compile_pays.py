"""A fit on the Numba backend compiles only where its steps win back the compilation: a short fit
runs NumPy's reference code (the numpy backend's weights, bit for bit, and nothing compiled), a long
one the compiled kernels; decided from the settings alone, so a fit gives the same weights cold or
warm, and a resumed fit decides as the whole one did. MLP_NUMBA_COMPILE overrides the choice."""
import numpy as np
import pytest

import mlp

pytest.importorskip("numba")

from mlp.backends import numba as numba_backend  # noqa: E402
from mlp.kernels import numba_cost as cost  # noqa: E402
from mlp.kernels import numba_cpu  # noqa: E402


@pytest.fixture
def auto(monkeypatch):
    """MLP_NUMBA_COMPILE unset (the tests set it on: conftest; the backend read it when made), and
    a record of what compiles."""
    monkeypatch.setattr(mlp.get_backend("numba"), "compile_setting", None)
    loaded, load = [], numba_cpu.load

    def recording_load(source, kind="module", plan=None):
        loaded.append(kind)
        return load(source, kind, plan)

    monkeypatch.setattr(numba_cpu, "load", recording_load)
    monkeypatch.setattr(mlp.get_backend("numba"), "_generated", {})  # (kernels loaded by earlier tests)
    return loaded


def _per_layer_path_only(monkeypatch):
    monkeypatch.setattr(numba_backend.Backend, "_fusable", lambda self, model, batch, inference=False: False)


def _fit(backend, epochs=3, batch=16, sizes=(4, 12, 3), **fit):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, sizes[0])), rng.integers(0, sizes[-1], 80)
    model = mlp.MLP(list(sizes), activation="tanh", output="softmax", backend=backend, seed=0)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(0.01))
    history = model.fit(X, y, epochs=epochs, batch_size=batch, validation_split=0.2, verbose=0, **fit)
    return model, history, model.predict(X), model.evaluate(X, y)


def test_a_short_fit_runs_the_reference_code_and_compiles_nothing(auto):
    model, history, predicted, evaluated = _fit("numba")
    assert auto == [] and model._kernel_cache["reference"]
    reference = _fit("numpy")
    np.testing.assert_array_equal(model.params, reference[0].params)  # the same code: the same bits
    assert history.history["loss"] == reference[1].history["loss"]
    np.testing.assert_array_equal(predicted, reference[2])  # inference as the fit ran
    assert evaluated == reference[3]


def test_a_long_fit_compiles_and_the_choice_follows_the_estimate(auto, monkeypatch):
    model = _fit("numba", epochs=1)[0]
    backend = model.backend
    steps = [1, 10, 100, 10**4, 10**6, 10**8]
    pays = [backend.compiling_pays(model, n, 16) for n in steps]
    assert pays == sorted(pays) and not pays[0] and pays[-1]  # never for one step, always for enough
    assert pays == [backend.compiling_pays(model, n, 16) for n in steps]  # a function of the settings
    monkeypatch.setattr(cost, "COMPILE_SECONDS", {"whole": 0.0, "layers": 0.0})
    monkeypatch.setattr(cost, "COMPILE_SECONDS_PER_LAYER", {"whole": 0.0, "layers": 0.0})
    _per_layer_path_only(monkeypatch)  # (its kernels compile in seconds, a whole step in ten)
    model = _fit("numba", epochs=1)[0]  # compiling free: it pays at once
    assert not model._kernel_cache["reference"] and auto


@pytest.mark.parametrize("setting,compiles", [("on", True), ("off", False)])
def test_mlp_numba_compile_decides_where_set(auto, monkeypatch, setting, compiles):
    monkeypatch.setenv("MLP_NUMBA_COMPILE", setting)
    monkeypatch.setattr(mlp.get_backend("numba"), "compile_setting", numba_backend.Backend().compile_setting)
    model = _fit("numba", epochs=1)[0]
    assert model._kernel_cache["reference"] is not compiles and bool(auto) is compiles
    assert model.backend.compiling_pays(model, 10**9 if not compiles else 1, 16) is compiles


def test_a_resumed_fit_decides_as_the_whole_one(auto, monkeypatch, tmp_path):
    """The choice is from epochs x steps per epoch of the whole run, not from the epochs left:
    a fit resumed from its checkpoint continues on the path it began on."""
    steps = 4 * 4  # 4 epochs of 64 training rows in batches of 16
    threshold = steps * cost.reference_step_seconds(_fit("numpy", epochs=1)[0], 16) * cost.SAVES["layers"]
    monkeypatch.setattr(cost, "COMPILE_SECONDS", {"whole": 1e9, "layers": threshold * 0.99})
    monkeypatch.setattr(cost, "COMPILE_SECONDS_PER_LAYER", {"whole": 0.0, "layers": 0.0})
    _per_layer_path_only(monkeypatch)
    whole = _fit("numba", epochs=4)
    assert not whole[0]._kernel_cache["reference"]  # 16 steps pay, 8 would not
    path = tmp_path / "ck.npz"
    _fit("numba", epochs=4, checkpoint=path, callbacks=[_StopAfter(2)])
    resumed = _fit("numba", epochs=4, checkpoint=path, resume=path)
    assert not resumed[0]._kernel_cache["reference"]
    np.testing.assert_array_equal(resumed[0].params, whole[0].params)


class _StopAfter(mlp.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs):
        self.model.stop_training = epoch + 1 >= self.epochs


def test_a_reference_fit_in_one_thread_leaves_another_threads_kernels_alone(auto):
    """The reference code is this thread's choice for this fit: a model trained elsewhere, or
    used after the fit, runs as before."""
    import threading

    model = _fit("numba", epochs=1)[0]
    with model.backend.fitting(model, 1, 16):
        assert numba_backend._REFERENCE.on
        seen = []
        thread = threading.Thread(target=lambda: seen.append(getattr(numba_backend._REFERENCE, "on", False)))
        thread.start()
        thread.join()
        assert seen == [False]
    assert not getattr(numba_backend._REFERENCE, "on", False)


def test_a_short_fit_in_a_fresh_process_imports_neither_numba_nor_the_generators():
    """What a short script on the Numba backend pays beside NumPy's: neither Numba (a quarter of a
    second) nor the source generators are imported, and `import mlp` leaves tqdm (and asyncio,
    which tqdm.auto brings) until a fit shows a bar."""
    import importlib.util
    import os
    import subprocess
    import sys

    code = """
import sys, numpy as np, mlp
before_fit = [name for name in ("tqdm", "asyncio") if name in sys.modules]
X = np.random.default_rng(0).normal(size=(64, 2)); y = (X[:, 0] > 0).astype(int)
model = mlp.MLP([2, 8, 2], activation="tanh", output="softmax", backend="numba", seed=0)
model.compile(loss="cross_entropy", optimizer="adam")
model.fit(X, y, epochs=2, batch_size=16, verbose=0)
model.predict(X)
heavy = ("numba", "mlp.kernels.numba_cpu", "mlp.kernels.numba_codegen", "mlp.kernels.numba_elementwise",
         "mlp.kernels.numba_batchnorm")
print(before_fit, [name for name in heavy if name in sys.modules])
model.fit(X, y, epochs=1, batch_size=16, verbose=1)
print("tqdm" in sys.modules)
"""
    env = {name: value for name, value in os.environ.items() if name != "MLP_NUMBA_COMPILE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    has_tqdm = importlib.util.find_spec("tqdm") is not None
    assert done.stdout.splitlines() == ["[] []", str(has_tqdm)]
