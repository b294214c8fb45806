"""The Numba backend's two paths, each held to the NumPy reference: the whole compiled step
(small batches) and BLAS GEMMs with fused element-wise kernels (large batches)."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import mlp
from mlp import activations
from tests import test_conformance as conformance
from tests.conftest import assert_close, every_optimizer

pytest.importorskip("numba")

HIDDEN = sorted(set(activations.ACTIVATIONS) - {"step", "softmax"})

# The long tier (`python -m pytest -m long`, run by CI after the README's command): on the
# compiled whole step every registry entry and row tail compiles a module of its own (seconds
# each, cold). The quick tier keeps every entry on the BLAS path; the whole step is held to the
# reference there by the conformance suite, warmup and the register-blocked step.
LONG = pytest.mark.long
EVERY_PATH = [pytest.param("whole-step", marks=LONG), "blas"]


@pytest.fixture(params=["whole-step", "blas"])
def numba_path(request, monkeypatch):
    backend = mlp.get_backend("numba")
    monkeypatch.setattr(backend, "crossover_override", 10**9 if request.param == "whole-step" else 0)
    return request.param


def one_step(backend, hidden, output, loss, optimizer, X, y, sizes, **compile_args):
    model = mlp.MLP(list(sizes), activation=hidden, output=output, backend=backend, dtype="float64", seed=2)
    model.compile(loss=loss, optimizer=optimizer(), **compile_args)
    values = [float(model.train_step(X, y)) for _ in range(3)]
    return values, model.backend.to_numpy(model.params)


def check_against_numpy(hidden, output, loss, optimizer, batch=6, sizes=(5, 9, 7, 3), **compile_args):
    rng = np.random.default_rng(0)
    X, y = conformance.problem(loss, sizes[-1], batch, rng)
    X = X[:, :sizes[0]]
    ref_losses, ref_params = one_step("numpy", hidden, output, loss, optimizer, X, y, sizes, **compile_args)
    losses, params = one_step("numba", hidden, output, loss, optimizer, X, y, sizes, **compile_args)
    assert_close(losses, ref_losses, "float64", scale=100)
    assert_close(params, ref_params, "float64", scale=100)


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_every_activation_follows_finite_differences(numba_path, hidden):
    conformance.test_a_training_step_follows_finite_differences("numba", hidden, np.random.default_rng(7))


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_every_activation(numba_path, hidden):
    check_against_numpy(hidden, "softmax", "cross_entropy", lambda: mlp.SGD(lr=0.1))


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
@pytest.mark.parametrize("output,loss", conformance.OUTPUT_LOSS + [("softmax", "mse"), ("sigmoid", "mae")])
def test_every_loss(numba_path, output, loss):
    check_against_numpy("tanh", output, loss, lambda: mlp.SGD(lr=0.1))


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
@pytest.mark.parametrize("optimizer", every_optimizer(), ids=repr)
def test_every_optimizer(numba_path, optimizer):
    check_against_numpy("relu", "softmax", "cross_entropy", lambda: mlp.optimizers.get(optimizer.config()))


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
def test_penalties_and_clipping(numba_path):
    check_against_numpy("elu", "sigmoid", "binary_cross_entropy", lambda: mlp.Adam(lr=0.01),
                        l1=0.01, l2=0.02, clip_norm=0.05)


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
@pytest.mark.parametrize("optimizer", [lambda: mlp.SGD(lr=0.1, momentum=0.9), lambda: mlp.Adam(lr=0.01)],
                         ids=["momentum", "adam"])
def test_penalties_without_clipping(numba_path, optimizer):
    # the whole step then updates each row of W as soon as its gradient (penalty included) is known
    check_against_numpy("tanh", "softmax", "cross_entropy", optimizer, l1=0.01, l2=0.02)


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
@pytest.mark.parametrize("batch", [4, 8, 11])
def test_batch_sizes_around_the_row_blocks(numba_path, batch):
    # the generated loops take the batch 4 rows at a time, then the rest one by one
    check_against_numpy("relu", "softmax", "cross_entropy", lambda: mlp.SGD(lr=0.1), batch=batch)


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
@pytest.mark.parametrize("batch", [1, 6])
def test_inference_splits_large_layers_across_cores(numba_path, batch):
    from mlp.kernels.numba_plan import PARALLEL_WEIGHTS

    assert 260 * 257 >= PARALLEL_WEIGHTS  # the compiled forward takes this layer's units in parallel
    X = np.random.default_rng(1).standard_normal((batch, 6))
    outputs = [mlp.MLP([6, 260, 257, 3], activation="tanh", output="softmax", backend=name, dtype="float64",
                       seed=4).predict(X) for name in ("numpy", "numba")]
    assert_close(outputs[1], outputs[0], "float64", scale=100)


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
@pytest.mark.parametrize("batch", [3, 40])
def test_one_unit_output_layer(numba_path, batch):
    # its input delta is an outer product: a compiled kernel on the BLAS path
    check_against_numpy("tanh", "sigmoid", "binary_cross_entropy", lambda: mlp.SGD(lr=0.5), batch=batch,
                        sizes=(2, 8, 6, 1))


@pytest.mark.parametrize("numba_path", EVERY_PATH, indirect=True)
def test_batch_of_one(numba_path):
    check_against_numpy("tanh", "softmax", "cross_entropy", lambda: mlp.SGD(lr=0.1, momentum=0.9), batch=1)


def test_conformance_suite_on_both_paths(numba_path, rng):
    for dtype in ("float32", "float64"):
        conformance.test_forward_matches_reference("numba", dtype, "relu", 7, rng)
        conformance.test_training_trajectory_matches_reference("numba", lambda: mlp.Adam(lr=0.01), dtype, rng)


# Register-blocked steps: widths across GEMM_COLUMNS (16) with column tails, batches across
# GEMM_ROWS (4) with row tails, a first layer of few inputs (blocks along its units).
BLOCKED_SIZES = (3, 37, 18, 5)


OPTIMIZERS = {"sgd": lambda: mlp.SGD(lr=0.1), "momentum": lambda: mlp.SGD(lr=0.1, momentum=0.9),
              "adam": lambda: mlp.Adam(lr=0.01)}


@pytest.fixture
def blocked(monkeypatch):
    """A function that sends the compiled path's blocked steps and passes to one thread
    ("serial") or splits them across threads ("split", from batch 0 on, so that small problems
    take the split code)."""
    from mlp.kernels import numba_plan

    monkeypatch.setattr(mlp.get_backend("numba"), "crossover_override", 10**9)

    def choose(how):
        for name in ("SPLIT_FROM", "SPLIT_WORK"):
            monkeypatch.setattr(numba_plan, name, 0 if how == "split" else 10**9)
    return choose


# Every optimizer and row tail on one thread; split, fewer (each plan compiles for seconds; the
# quick tier keeps one serial step, and the blocked inference on both).
@pytest.mark.parametrize("how,batch,optimizer", [
    ("serial", 8, "sgd"), pytest.param("serial", 8, "momentum", marks=LONG),
    pytest.param("serial", 8, "adam", marks=LONG), pytest.param("serial", 13, "sgd", marks=LONG),
    pytest.param("serial", 21, "momentum", marks=LONG), pytest.param("serial", 21, "adam", marks=LONG),
    pytest.param("split", 13, "sgd", marks=LONG), pytest.param("split", 21, "adam", marks=LONG)])
def test_register_blocked_steps(blocked, how, batch, optimizer):
    from mlp.kernels import numba_plan

    blocked(how)
    weights = sum(a * b for a, b in itertools.pairwise(BLOCKED_SIZES))
    assert numba_plan.blocks(batch, weights) and not numba_plan.blocks(4, weights)
    check_against_numpy("tanh", "softmax", "cross_entropy", OPTIMIZERS[optimizer], batch=batch, sizes=BLOCKED_SIZES)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_every_product_a_step_calls_writes_rows_not_a_transposed_view(blocked, optimizer):
    """The first layer of BLOCKED_SIZES (3 inputs) is blocked along its units, through a scratch:
    no product writes a transposed target, so the shared product compiles two layouts, not three
    (2 s cold per float type)."""
    import re

    from mlp.kernels import numba_codegen, numba_plan

    blocked("serial")
    model = mlp.MLP(list(BLOCKED_SIZES), activation="tanh", output="softmax", backend="numba", seed=0)
    model.compile(loss="cross_entropy", optimizer=OPTIMIZERS[optimizer]())
    source = numba_codegen.step_source(numba_plan.step_plan(model, 8))
    targets = re.findall(r"_product\(.*, (\S+)\)\n", source)
    assert "G1" in targets and not [target for target in targets if target.endswith(".T")], targets


@pytest.mark.parametrize("tail", [1, 3, 6])
def test_a_short_last_batch_runs_the_code_of_the_full_batches(blocked, monkeypatch, tail):
    """fit's last, shorter batch takes the step compiled for its batch_size (one compile, not a
    second one mid-fit): the blocked code holds for any number of rows, and the fit matches NumPy's."""
    from mlp.kernels import numba_codegen

    blocked("serial")
    plans = []
    step_source = numba_codegen.step_source
    monkeypatch.setattr(numba_codegen, "step_source", lambda plan: plans.append(plan) or step_source(plan))
    X, y = conformance.problem("cross_entropy", BLOCKED_SIZES[-1], 2 * 13 + tail, np.random.default_rng(3))
    X = X[:, :BLOCKED_SIZES[0]]
    params = []
    for name in ("numpy", "numba"):
        model = mlp.MLP(list(BLOCKED_SIZES), activation="tanh", output="softmax", backend=name, dtype="float64",
                        seed=2)
        model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
        model.fit(X, y, epochs=2, batch_size=13, shuffle=False, verbose=0)
        params.append(model.backend.to_numpy(model.params))
    assert_close(params[1], params[0], "float64", scale=100)
    assert plans and all(plan.blocked for plan in plans)  # a batch of `tail` rows alone would not be


@LONG
@pytest.mark.parametrize("how", ["serial", "split"])
def test_register_blocked_steps_with_penalties_and_clipping(blocked, how):
    blocked(how)
    check_against_numpy("relu", "sigmoid", "binary_cross_entropy", lambda: mlp.SGD(lr=0.1), batch=9,
                        sizes=BLOCKED_SIZES[:3] + (1,), l1=0.01, l2=0.02, clip_norm=0.05)
    check_against_numpy("elu", "softmax", "cross_entropy", lambda: mlp.Adam(lr=0.01), batch=10,
                        sizes=BLOCKED_SIZES, l2=0.02)


@pytest.mark.parametrize("how,batch", [("serial", 8), ("serial", 30), pytest.param("split", 30, marks=LONG)])
def test_register_blocked_inference(blocked, how, batch):
    blocked(how)
    X = np.random.default_rng(1).standard_normal((batch, 3))
    outputs = [mlp.MLP(list(BLOCKED_SIZES), activation="relu", output="softmax", backend=name, dtype="float64",
                       seed=4).predict(X) for name in ("numpy", "numba")]
    assert_close(outputs[1], outputs[0], "float64", scale=100)


@pytest.mark.parametrize("dtype", [pytest.param("float32", marks=LONG), "float64"])
@pytest.mark.parametrize("m,depth,n", [(1, 1, 1), (4, 3, 16), (9, 20, 37), (21, 2, 64), (70, 5, 33), (70, 700, 33),
                                     (3, 1000, 20)])
@pytest.mark.parametrize("name", ["product", pytest.param("product_parallel", marks=LONG)])  # parfors: slow to compile
def test_product_against_numpy(name, dtype, m, depth, n):
    """C += alpha L R in every layout a step passes: L as rows or a transposed view, C as rows."""
    from mlp.kernels import numba_cpu

    product = getattr(numba_cpu.products(), name)
    rng = np.random.default_rng(0)
    L, R = rng.standard_normal((m, depth)).astype(dtype), rng.standard_normal((depth, n)).astype(dtype)
    for left in (L, np.ascontiguousarray(L.T).T):
        C = rng.standard_normal((m, n)).astype(dtype)
        expected = C - 0.5 * (L.astype(np.float64) @ R)
        product(C.dtype.type(-0.5), left, R, C)
        assert_close(C, expected, dtype, scale=10 * depth)


@LONG
def test_split_steps_are_cached_on_disk(blocked):
    """A step whose products run in parallel is still written to Numba's disk cache (a
    parallel function that calls get_num_threads() is not: it says so in a warning)."""
    import warnings

    blocked("split")
    model = mlp.MLP([3, 20, 2], output="softmax", backend="numba", seed=0)
    model.compile(loss="cross_entropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train_step(np.ones((12, 3)), [0, 1] * 6)
        model.predict(np.ones((12, 3)))
    assert not [w for w in caught if "Cannot cache" in str(w.message)]


THREADED_TRAINING = """
import sys, threading
import numpy as np
import mlp
from mlp.kernels import numba_plan
numba_plan.SPLIT_FROM = numba_plan.SPLIT_WORK = 0  # every blocked step split across threads
mlp.get_backend("numba").crossover_override = 10**9
X = np.random.default_rng(0).standard_normal((12, 3))
y = [0, 1] * 6

def train(backend, results, index):
    model = mlp.MLP([3, 20, 2], output="softmax", backend=backend, seed=0)
    model.compile(loss="cross_entropy")
    for _ in range(30):
        model.train_step(X, y)
    wide = mlp.MLP([6, 260, 257, 3], activation="tanh", output="softmax", backend=backend, dtype="float64", seed=4)
    results[index] = (model.backend.to_numpy(model.params), wide.predict(np.ones((6, 6))))

results = [None] * 3
train("numpy", results, 2)
threads = [threading.Thread(target=train, args=("numba", results, i)) for i in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
import numba
for params, outputs in results[:2]:
    assert np.allclose(params, results[2][0]) and np.allclose(outputs, results[2][1])
print(numba.threading_layer())
"""


@LONG  # compiles its plan cold in a process of its own
def test_two_threads_can_train_with_the_workqueue_threading_layer():
    """Numba's fallback threading layer (no OpenMP, no TBB) aborts the process when two
    Python threads run parallel code at once; the backend calls such code one at a time."""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    done = subprocess.run([sys.executable, "-c", THREADED_TRAINING], env=env, capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "workqueue"


def test_generated_modules_load_from_many_threads_at_once(monkeypatch, tmp_path):
    """Threads of one process that need the same new kernel at once (two models starting to train
    on a cold cache) get one module, and none fails writing its file."""
    import threading

    from mlp.kernels import numba_cpu

    def load(source, start, loaded, failed):
        start.wait()
        try:
            loaded.append(numba_cpu.load(source))
        except Exception as error:  # noqa: BLE001  (what a thread raised is the finding)
            failed.append(error)

    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path))
    for attempt in range(20):
        source = f"VALUE = {attempt}  # test_generated_modules_load_from_many_threads_at_once {tmp_path}\n"
        loaded, failed = [], []
        arguments = (source, threading.Barrier(4), loaded, failed)
        threads = [threading.Thread(target=load, args=arguments) for _ in range(4)]
        [thread.start() for thread in threads]
        [thread.join() for thread in threads]
        assert not failed and len({id(module) for module in loaded}) == 1 and loaded[0].VALUE == attempt


def _compiled_signatures():
    from mlp.kernels import numba_cpu

    return sum(len(value.signatures) for module in list(numba_cpu._modules.values())
               for value in vars(module).values() if hasattr(value, "signatures"))


@pytest.mark.parametrize("crossover", [10**9, 0], ids=["whole-step", "blas"])
def test_warmup_compiles_what_the_first_steps_would(monkeypatch, crossover):
    monkeypatch.setattr(mlp.get_backend("numba"), "crossover_override", crossover)
    X = np.random.default_rng(0).standard_normal((6, 5))
    y = [0, 1, 2] * 2

    def model(slope):  # a slope no other test uses: kernels of their own (a step, or element-wise passes)
        built = mlp.MLP([5, 12, 3], activation={"name": "leaky_relu", "slope": slope}, output="softmax",
                        backend="numba", dtype="float32", seed=0)
        return built.compile(loss="cross_entropy", optimizer=mlp.SGD(lr=0.1, momentum=0.5), l1=0.01)

    cold = model(0.13)
    before = _compiled_signatures()
    cold.train_step(X, y)
    cold.predict(X)
    assert _compiled_signatures() > before  # without warmup, the first steps compile
    warm = model(0.17)
    warm.warmup(6)
    before = _compiled_signatures()
    warm.train_step(X, y)
    warm.predict(X)
    assert _compiled_signatures() == before


def test_dropout_uses_the_per_layer_path():
    model = mlp.MLP([4, 8, 2], output="softmax", dropout=0.5, backend="numba", seed=0)
    model.compile(loss="cross_entropy")
    assert model.backend.fused_train_step(model, 4) is None
    X = np.ones((4, 4))
    assert np.isfinite(float(model.train_step(X, [0, 1, 0, 1])))


def test_crossover_is_measured_data_and_overridable(monkeypatch):
    backend = mlp.get_backend("numba")
    table = backend.crossover
    assert table and all(isinstance(w, int) and isinstance(b, int) for w, b in table.items())
    monkeypatch.setattr(backend, "crossover_override", 3)
    model = mlp.MLP([4, 8, 2], output="softmax", backend="numba").compile(loss="cross_entropy")
    assert backend.fused_train_step(model, 3) is not None
    assert backend.fused_train_step(model, 4) is None


def test_crossover_is_looked_up_by_weight_count(monkeypatch):
    """A network takes the crossover of the measured [w, w, w, 10] net nearest in weights."""
    backend = mlp.get_backend("numba")
    monkeypatch.setattr(backend, "crossover_by_activation", {})
    monkeypatch.setattr(backend, "crossover", {64: 100, 512: 8, 1024: 4, 4096: 0})
    monkeypatch.setattr(backend, "crossover_override", None)
    weights = {"calibration 512": 2 * 512**2 + 5120, "calibration 1024": 2 * 1024**2 + 10240,
               "mnist": 784 * 512 + 512 * 512 + 5120, "tiny": 2 * 64 + 64 * 64 + 64,
               "wide": 2 * 1024 * 4096 + 4096**2, "huge": 10**9}
    assert {name: backend.crossover_for(n) for name, n in weights.items()} == {
        "calibration 512": 8, "calibration 1024": 4, "mnist": 8, "tiny": 100, "wide": 0, "huge": 0}


def test_compiled_path_runs_within_its_measured_range(monkeypatch):
    """Each path has the range of batch sizes where it measured faster, inference its own:
    at width 1024, say, BLAS GEMV at batch 1 and the compiled forward pass at 2-16."""
    backend = mlp.get_backend("numba")
    monkeypatch.setattr(backend, "crossover_override", None)
    monkeypatch.setattr(backend, "crossover_by_activation", {})
    for name, table in (("crossover", {1024: 4}), ("crossover_from", {1024: 1}),
                        ("inference_crossover", {1024: 16}), ("inference_crossover_from", {1024: 2})):
        monkeypatch.setattr(backend, name, table)
    model = mlp.MLP([1024, 1024, 1024, 10], output="softmax", backend="numba").compile(loss="cross_entropy")
    assert [backend._fusable(model, b) for b in (1, 4, 8)] == [True, True, False]
    assert [backend._fusable(model, b, inference=True) for b in (1, 2, 16, 32)] == [False, True, True, False]


def test_a_hidden_activation_with_its_own_tables_takes_them(monkeypatch):
    """Nets whose hidden layers all have one measured activation take its own ranges; any
    other (mixed, or not measured) the narrower of all."""
    backend = mlp.get_backend("numba")
    monkeypatch.setattr(backend, "crossover_override", None)
    for name, table in (("crossover", {64: 8}), ("crossover_from", {64: 1}),
                        ("inference_crossover", {64: 8}), ("inference_crossover_from", {64: 1})):
        monkeypatch.setattr(backend, name, table)
    monkeypatch.setattr(backend, "crossover_by_activation", {"tanh": ({64: 8}, {64: 1}, {64: 4096}, {64: 1})})
    tanh = mlp.MLP([64, 64, 64, 10], activation="tanh", output="softmax", backend="numba")
    relu = mlp.MLP([64, 64, 64, 10], activation="relu", output="softmax", backend="numba")
    mixed = mlp.Sequential([mlp.Dense(64, 64, "tanh"), mlp.Dense(64, 64, "relu"), mlp.Dense(64, 10, "softmax")],
                           backend="numba")
    assert backend._fusable(tanh, 2048, inference=True)
    assert not backend._fusable(relu, 2048, inference=True) and not backend._fusable(mixed, 2048, inference=True)
    assert backend._fusable(mixed, 8, inference=True) and not backend._fusable(tanh, 16)


def test_shipped_tables_are_those_of_their_timings():
    """The shipped file's tables are what its own recorded timings give (one rule, in
    mlp.kernels.numba_crossover), the narrower ones and each activation's."""
    import json

    from mlp.backends import numba as numba_backend
    from mlp.kernels import numba_crossover

    with open(numba_backend.SHIPPED_CROSSOVER) as f:
        data = json.load(f)
    narrower = numba_crossover.tables(data["timings"])
    assert narrower == {key: data[key] for key in narrower}
    for name, tables in data["by_activation"].items():
        assert numba_crossover.tables(data["timings"], name) == tables


def test_a_table_measured_on_this_machine_is_preferred(monkeypatch, tmp_path):
    """`python -m mlp.kernels.numba_crossover` writes this machine's own table into the cache
    directory; the backend takes it over the shipped one, and the shipped one without it."""
    import json

    from mlp.backends import numba as numba_backend

    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path))
    assert numba_backend.crossover_file() == numba_backend.SHIPPED_CROSSOVER
    own = numba_backend.own_crossover_file()
    os.makedirs(os.path.dirname(own), exist_ok=True)  # looking it up makes the checked folder
    with open(own, "w") as f:
        json.dump({"by_width": {"64": 77}, "from_by_width": {"64": 2}}, f)
    assert numba_backend.crossover_file() == own
    assert numba_backend.load_crossover() == {64: 77}
    assert numba_backend.load_crossover(key="from_by_width") == {64: 2}
    assert numba_backend.load_crossover(key="inference_by_width") == {64: 77}  # an older file: training's


def test_nan_still_detected_with_fastmath():
    model = mlp.MLP([2, 16, 1], backend="numba", seed=0)
    model.compile(loss="mse", optimizer=mlp.SGD(lr=10.0))
    X = np.array([[1e3, -1e3]] * 8)
    with np.errstate(all="ignore"), pytest.raises(mlp.TrainingDivergedError):
        model.fit(X, np.full(8, 1e3), epochs=50, verbose=0)


def test_compiled_kernels_are_cached_on_disk(tmp_path):
    """A second process finds the compiled step in the cache instead of compiling again."""
    code = ("import time, numpy as np, mlp; m = mlp.MLP([3, 5, 2], output='softmax', backend='numba', seed=0);"
            "m.compile(loss='cross_entropy'); t = time.perf_counter(); m.train_step(np.ones((2, 3)), [0, 1]);"
            "print(time.perf_counter() - t)")
    env = dict(os.environ, MLP_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_CACHE_DIR", None)  # it would move Numba's cache files out of MLP_CACHE_DIR

    def run():
        return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                    text=True, check=True).stdout)

    cold = run()
    assert any(name.endswith(".nbi") for _, _, files in os.walk(tmp_path) for name in files)
    warm = run()
    assert warm < cold / 2, (cold, warm)
