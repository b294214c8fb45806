"""BatchNorm and Residual blocks (mlp/batchnorm.py, mlp/residual.py): the hand-derived backward
passes against finite differences in float64 (training mode: batch statistics) and against torch
autograd, the running statistics against torch's over 10 steps, every backend against NumPy, and
the running statistics saved, loaded, checkpointed and resumed exactly."""
import numpy as np
import pytest

import mlp
from tests.conftest import assert_close


def networks():
    """(name, layers) of small networks with each new piece: BatchNorm with and without an
    activation, a Residual block on the identity and one with a projection."""
    return {
        "batchnorm": lambda: [mlp.Dense(5, 8, bias=False), mlp.BatchNorm(8, activation="tanh"),
                              mlp.Dense(8, 3, "softmax")],
        "batchnorm-relu-twice": lambda: [mlp.Dense(5, 8, bias=False), mlp.BatchNorm(8, activation="relu"),
                                         mlp.Dense(8, 6, bias=False), mlp.BatchNorm(6), mlp.Dense(6, 3, "softmax")],
        "residual": lambda: [mlp.Dense(5, 8, "tanh"),
                             mlp.Residual([mlp.Dense(8, 8, "tanh"), mlp.Dense(8, 8)], activation="tanh"),
                             mlp.Dense(8, 3, "softmax")],
        "residual-projection-bn": lambda: [mlp.Residual([mlp.Dense(5, 7, bias=False),
                                                         mlp.BatchNorm(7, activation="silu")],
                                                        activation="gelu"),
                                           mlp.Dense(7, 3, "softmax")],
    }


NETWORKS = networks()


def build(name, backend="numpy", dtype="float64", seed=0):
    model = mlp.Sequential(NETWORKS[name](), backend=backend, dtype=dtype, seed=seed)
    return model.compile(loss="cross_entropy", optimizer=mlp.Adam(0.01))


def problem(rows=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 5)), rng.integers(0, 3, size=rows)


def flat_gradient(model, X, y, training=True):
    """The loss and the whole flat gradient (every layer's parameters) by the backward pass."""
    X, Y = model._device_data(X, y, model.loss.name)
    value, _ = model._compute_gradients(X, Y, model.loss, 0.0, 0.0, training=training)
    return float(value), model.backend.to_numpy(model.grads).copy()


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("training", [True, False])
def test_the_backward_pass_follows_finite_differences(name, training):
    model = build(name)
    X, y = problem()
    model.state[...] = np.random.default_rng(1).uniform(0.5, 1.5, model.state.size)  # running stats off 0/1
    saved_state = model.state.copy()
    _, analytic = flat_gradient(model, X, y, training)
    numeric = np.empty_like(analytic)
    eps = 1e-6
    for j in range(model.params.size):
        value = model.params[j]
        losses = []
        for shifted in (value + eps, value - eps):
            model.params[j] = shifted
            model.state[...] = saved_state  # a training pass moves the running statistics
            losses.append(flat_gradient(model, X, y, training)[0])
        model.params[j] = value
        numeric[j] = (losses[0] - losses[1]) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def torch_twin(model):
    """The same network in torch, from the model's weights."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    acts = {"identity": nn.Identity, "tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU,
            "gelu": lambda: nn.GELU(approximate="tanh"), "softmax": nn.Identity}

    def dense(layer):
        linear = nn.Linear(layer.n_in, layer.n_out, bias=layer.bias).double()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.array(layer.W)))
            if layer.bias:
                linear.bias.copy_(torch.from_numpy(np.array(layer.b)))
        return [linear, acts[layer.activation.name]()]

    def batchnorm(layer):
        norm = nn.BatchNorm1d(layer.n_out, momentum=layer.momentum, eps=layer.eps).double()
        with torch.no_grad():
            norm.weight.copy_(torch.from_numpy(np.array(layer.gamma)))
            norm.bias.copy_(torch.from_numpy(np.array(layer.beta)))
        return [norm, acts[layer.activation.name]()]

    class Block(nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.inner = nn.Sequential(*convert(layer.layers))
            self.projection = nn.Sequential(*dense(layer.projection)[:1]) if layer.projection else None
            self.activation = acts[layer.activation.name]()

        def forward(self, x):
            return self.activation(self.inner(x) + (x if self.projection is None else self.projection(x)))

    def convert(layers):
        out = []
        for layer in layers:
            if isinstance(layer, mlp.Residual):
                out.append(Block(layer))
            elif isinstance(layer, mlp.BatchNorm):
                out += batchnorm(layer)
            else:
                out += dense(layer)
        return out

    return nn.Sequential(*convert(model.layers))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_ten_training_steps_match_torch(name):
    """Forward, every gradient, the running statistics, and the weights after 10 SGD steps."""
    torch = pytest.importorskip("torch")
    model = build(name)
    model.compile(loss="cross_entropy", optimizer=mlp.SGD(0.1))
    net = torch_twin(model)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(10):
        X, y = problem(seed=step)
        net.train()
        logits = net(torch.from_numpy(X))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        optimizer.zero_grad()
        loss.backward()
        expected = np.concatenate([p.grad.numpy().ravel() for p in net.parameters()])
        value, grads = flat_gradient(model, X, y)
        np.testing.assert_allclose(value, loss.item(), rtol=1e-10)
        np.testing.assert_allclose(grads, expected, rtol=1e-8, atol=1e-10)
        model._apply_gradients()
        optimizer.step()
    np.testing.assert_allclose(model.params, np.concatenate([p.detach().numpy().ravel() for p in net.parameters()]),
                               rtol=1e-8, atol=1e-10)
    running = [b.numpy() for name_, b in net.named_buffers() if "running" in name_]
    running = np.concatenate([np.concatenate(running[i:i + 2]) for i in range(0, len(running), 2)]) if running \
        else np.zeros(0)
    np.testing.assert_allclose(model.state, running, rtol=1e-10)
    net.eval()  # inference by the running statistics
    X, _ = problem(seed=99)
    logits = net(torch.from_numpy(X)).detach()
    np.testing.assert_allclose(model.predict(X), torch.softmax(logits, dim=1).numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_backend_trains_as_numpy(backend_name, name, dtype):
    X, y = problem(rows=40)
    results = []
    for backend in ("numpy", backend_name):
        model = build(name, backend=backend, dtype=dtype)
        history = model.fit(X, y, epochs=3, batch_size=8, verbose=0)
        results.append((history["loss"], model.backend.to_numpy(model.params), model.backend.to_numpy(model.state),
                        model.predict(X)))
    for ours, reference in zip(results[1], results[0]):
        assert_close(ours, reference, dtype, scale=50)


def test_batch_norm_option_of_mlp_is_torchs_linear_batchnorm_activation():
    model = mlp.MLP([5, 8, 8, 3], activation="relu", output="softmax", batch_norm=True)
    kinds = [(type(layer).__name__, layer.activation.name) for layer in model.layers]
    assert kinds == [("Dense", "identity"), ("BatchNorm", "relu"), ("Dense", "identity"), ("BatchNorm", "relu"),
                     ("Dense", "softmax")]
    assert [layer.bias for layer in model.dense_layers] == [False, False, True]
    assert model.n_params == 5 * 8 + 16 + 8 * 8 + 16 + 8 * 3 + 3


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_saved_and_loaded_with_the_running_statistics(name, tmp_path):
    model = build(name)
    X, y = problem(rows=40)
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = mlp.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.state, model.state)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    twin = model.clone(dtype="float32")
    np.testing.assert_allclose(twin.state, model.state, rtol=1e-6)


def test_a_resumed_run_ends_with_the_uninterrupted_one(tmp_path):
    X, y = problem(rows=40)
    whole = build("residual-projection-bn")
    whole.fit(X, y, epochs=4, batch_size=8, verbose=0)

    class Stop(mlp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    first = build("residual-projection-bn")
    first.fit(X, y, epochs=4, batch_size=8, verbose=0, checkpoint=tmp_path / "ck.npz", callbacks=[Stop()])
    resumed = build("residual-projection-bn")
    resumed.fit(X, y, epochs=4, batch_size=8, verbose=0, resume=tmp_path / "ck.npz")
    np.testing.assert_array_equal(resumed.params, whole.params)
    np.testing.assert_array_equal(resumed.state, whole.state)


def test_a_damaged_state_is_refused(tmp_path):
    import zipfile

    model = build("batchnorm")
    model.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    state = bytearray(members["state.npy"])
    state[-1] ^= 1
    members["state.npy"] = bytes(state)
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    with pytest.raises(mlp.ModelFileError, match="running statistics"):
        mlp.load(tmp_path / "bad.npz")


def test_a_batch_of_one_row_in_training_is_refused_before_training():
    model = build("batchnorm")
    X, y = problem(rows=9)
    before = model.params.copy()
    with pytest.raises(ValueError, match="at least 2 rows"):
        model.fit(X, y, epochs=1, batch_size=4, verbose=0)  # 9 = 4 + 4 + 1
    np.testing.assert_array_equal(model.params, before)
    assert model.warmup(1, 4) >= 0  # a batch of one row is inference only


def test_residual_blocks_check_their_widths():
    with pytest.raises(ValueError, match="needs a projection"):
        mlp.Residual([mlp.Dense(4, 6)], projection=False)
    with pytest.raises(ValueError, match="do not chain"):
        mlp.Residual([mlp.Dense(4, 6), mlp.Dense(5, 4)])
    with pytest.raises(TypeError, match="Dense and BatchNorm"):
        mlp.Residual([mlp.Dropout(0.5)])
    assert mlp.Residual([mlp.Dense(4, 4)]).projection is None


def test_diagnostics_report_every_layer_with_parameters():
    model = build("batchnorm-relu-twice")
    X, y = problem(rows=40)
    history = model.fit(X, y, epochs=2, batch_size=8, verbose=0, diagnostics=True)
    record = history["diagnostics"][-1]
    assert [entry["kind"] for entry in record] == ["Dense", "BatchNorm", "Dense", "BatchNorm", "Dense"]
    norm = record[1]
    assert norm["grad_norm"] > 0 and 0 < norm["update_ratio"] < 1
    assert norm["running_var"] == pytest.approx(float(model.layers[1].running_var.mean()))
    assert "running_mean" in mlp.diagnostics.format_table(record)


ELEMENTWISE = sorted(name for name, make in mlp.activations.ACTIVATIONS.items()
                     if make().elementwise and make().differentiable)


@pytest.mark.parametrize("hidden", ELEMENTWISE)  # every registered activation after a BatchNorm
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_backends_batch_norm_kernels_are_the_reference(backend_name, hidden, dtype):
    """Each Backend.batch_norm_* method (the Numba backend's generated kernels, the CuPy
    backend's) against the NumPy reference's, for every activation the registry holds."""
    from mlp.backends import get_backend

    reference, backend = get_backend("numpy"), get_backend(backend_name)
    activation = mlp.activations.get(hidden)
    rng = np.random.default_rng(0)
    X, dA = (rng.normal(size=(33, 7)).astype(dtype) for _ in range(2))
    gamma, beta = rng.uniform(0.5, 2, 7).astype(dtype), rng.normal(size=7).astype(dtype)
    on = backend.asarray

    def host(values):
        return [backend.to_numpy(value) for value in values]

    mean, var = reference.batch_norm_statistics(X)
    assert_close(host(backend.batch_norm_statistics(on(X))), [mean, var], dtype)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    expected = reference.batch_norm_forward(X, mean, inv_std, gamma, beta, activation)
    got = backend.batch_norm_forward(on(X), on(mean), on(inv_std), on(gamma), on(beta), activation)
    for ours, theirs in zip(got, expected):  # Z may be None where the derivative reads A only
        if ours is not None or activation.keeps_input:
            assert_close(backend.to_numpy(ours), theirs, dtype)
    X_hat, Z, A = expected
    expected = reference.batch_norm_sums(Z, A, dA, X_hat, activation)
    got = backend.batch_norm_sums(on(Z), on(A), on(dA), on(X_hat), activation)
    for ours, theirs in zip(host(got), expected):
        assert_close(ours, theirs, dtype, scale=10)
    dZ, sum_dZ, sum_dZ_X_hat = expected
    expected = reference.batch_norm_input_delta(dZ, X_hat, gamma, inv_std, sum_dZ, sum_dZ_X_hat, 33)
    got = backend.batch_norm_input_delta(on(dZ), on(X_hat), on(gamma), on(inv_std), on(sum_dZ), on(sum_dZ_X_hat), 33)
    assert_close(backend.to_numpy(got), expected, dtype, scale=10)


def test_plain_sgd_folded_into_the_backward_pass_is_the_unfolded_step(monkeypatch):
    """Where the backend folds plain SGD into the backward pass, BatchNorm's gamma and beta take
    their step there too (after dX), and a Dense layer without bias keeps its zeros."""
    X, y = problem(rows=64)
    results = []
    for folds in (True, False):
        model = mlp.MLP([5, 300, 300, 3], output="softmax", batch_norm=True, dtype="float64", seed=0)
        model.compile(loss="cross_entropy", optimizer=mlp.SGD(0.1))
        monkeypatch.setattr(model.backend, "folds_sgd", lambda model, folds=folds: folds)
        assert (model._folded_sgd_rate() is not None) == folds
        model.fit(X, y, epochs=2, batch_size=16, verbose=0)
        assert not any(layer.b.any() for layer in model.dense_layers if not layer.bias)
        results.append(model.params.copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("edit,message", [
    (lambda h: h["layers"][1].update(n=10**9), "architecture needs"),  # 2e9 parameters and statistics claimed
    (lambda h: h["layers"][1].update(momentum=7), "invalid"),
    (lambda h: h["layers"][1].update(type="Residual", layers=[{"type": "Residual", "layers": []}]), "invalid"),
    (lambda h: h.pop("state_sha256"), "running statistics"),
])
def test_a_hostile_header_is_refused_without_allocating_what_it_claims(edit, message, tmp_path):
    """Sealed headers (their own checksum recomputed): only the schema and the arrays' real sizes
    can object, before anything the header claims is allocated."""
    from tests.model_files import rewrite_header

    build("batchnorm").save(tmp_path / "m.npz")
    rewrite_header(tmp_path / "m.npz", tmp_path / "bad.npz", edit, seal=True)
    with pytest.raises(mlp.ModelFileError, match=message):
        mlp.load(tmp_path / "bad.npz")


def test_divergence_and_early_stopping_put_back_the_running_statistics_with_the_weights(tmp_path):
    X, y = problem(rows=40)
    model = build("batchnorm")
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    params, state = model.params.copy(), model.state.copy()
    model.compile(loss="cross_entropy", optimizer=mlp.SGD(1e300))  # the weights overflow
    with pytest.raises(mlp.TrainingDivergedError):
        model.fit(X, y, epochs=3, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.params, params)
    np.testing.assert_array_equal(model.state, state)
    whole = build("batchnorm")
    stopper = mlp.EarlyStopping(patience=2, monitor="loss", min_delta=10.0)
    whole.fit(X, y, epochs=6, batch_size=8, verbose=0, early_stopping=stopper)
    assert stopper.best_epoch == 0
    np.testing.assert_array_equal(whole.params, stopper.best_params)
    np.testing.assert_array_equal(whole.state, stopper.best_state)  # the statistics of the best epoch
    assert not np.array_equal(whole.state, build("batchnorm").state)

    class Stop(mlp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    first = build("batchnorm")
    first.fit(X, y, epochs=6, batch_size=8, verbose=0, checkpoint=tmp_path / "ck.npz", callbacks=[Stop()],
              early_stopping=mlp.EarlyStopping(patience=2, monitor="loss", min_delta=10.0))
    resumed = build("batchnorm")
    resumed.fit(X, y, epochs=6, batch_size=8, verbose=0, resume=tmp_path / "ck.npz",
                early_stopping=mlp.EarlyStopping(patience=2, monitor="loss", min_delta=10.0))
    np.testing.assert_array_equal(resumed.params, whole.params)
    np.testing.assert_array_equal(resumed.state, whole.state)


def test_dropout_before_the_first_layer_with_parameters():
    model = mlp.Sequential([mlp.Dropout(0.2), mlp.BatchNorm(5, activation="relu"), mlp.Dense(5, 3, "softmax")],
                           seed=0).compile(loss="cross_entropy", optimizer="adam")
    X, y = problem(rows=40)
    assert np.isfinite(model.fit(X, y, epochs=2, batch_size=8, verbose=0)["loss"]).all()
    with pytest.raises(ValueError, match="projection must be"):
        mlp.Residual([mlp.Dense(4, 4)], projection="no")


# --- Numba's whole compiled step with BatchNorm (a Dense without bias, then BatchNorm: one plan) -------------
# (batch, optimizer, compile settings): unblocked rows and units, blocked products, plain SGD folded into
# them, clipping with a penalty (gradients into `grads`, one flat update), row weights
WHOLE_STEP_CASES = {
    "rows-adam": (6, lambda: mlp.Adam(0.01), {}, False),
    "blocked-folded-sgd": (16, lambda: mlp.SGD(0.1), {}, False),
    "blocked-clip-l2-momentum": (16, lambda: mlp.SGD(0.05, momentum=0.9), {"clip_norm": 1.0, "l2": 1e-3}, False),
    "rows-l1-weighted": (6, lambda: mlp.RMSprop(0.01), {"l1": 1e-3}, True),
}
# one activation per derivative kind (reads A, Z and A, Z) in the quick tier; every one in the long tier
QUICK_KINDS = {"tanh": "rows-adam", "silu": "blocked-folded-sgd", "gelu": "blocked-clip-l2-momentum",
               "relu": "rows-l1-weighted"}


def whole_step_cases():
    for hidden in ELEMENTWISE:
        for case in WHOLE_STEP_CASES:
            # identity: beta of the first BatchNorm only shifts the second one's input, which it takes out
            # again: its true gradient is zero and Adam, RMSprop amplify float32 rounding noise in it
            for dtype in ("float64",) if hidden == "identity" else ("float64", "float32"):
                quick = QUICK_KINDS.get(hidden) == case and (dtype == "float32") == (case.startswith("blocked"))
                yield pytest.param(hidden, case, dtype, marks=() if quick else pytest.mark.long)


@pytest.mark.parametrize("hidden,case,dtype", list(whole_step_cases()))
def test_numbas_whole_compiled_step_with_batch_norm_is_the_reference(hidden, case, dtype, monkeypatch):
    """Two epochs of MLP(batch_norm=True) through Numba's whole compiled step against NumPy's
    per-layer reference: losses, weights, gamma and beta, running statistics, predictions."""
    pytest.importorskip("numba")
    batch, optimizer, settings, weighted = WHOLE_STEP_CASES[case]
    monkeypatch.setattr(mlp.get_backend("numba"), "crossover_override", 10**9)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(3 * batch + 4, 5)), rng.integers(0, 3, size=3 * batch + 4)
    weights = rng.uniform(0.5, 2.0, size=len(y)) if weighted else None
    results = []
    for backend in ("numpy", "numba"):
        model = mlp.MLP([5, 24, 20, 3], activation=hidden, output="softmax", batch_norm=True, backend=backend,
                        dtype=dtype, seed=0)
        model.compile(loss="cross_entropy", optimizer=optimizer(), **settings)
        history = model.fit(X, y, epochs=2, batch_size=batch, sample_weight=weights, verbose=0)
        results.append((history["loss"], model.backend.to_numpy(model.params), model.backend.to_numpy(model.state),
                        model.predict(X)))
    assert model.backend.fused_train_step(model, batch, weighted=weighted) is not None  # (the compiled step ran)
    for ours, reference in zip(results[1], results[0]):
        assert_close(ours, reference, dtype, scale=50)


def test_which_networks_numbas_whole_step_takes(monkeypatch):
    """Dense -> BatchNorm (no bias, no activation between) as MLP(batch_norm=True) builds it; not a
    synchronised BatchNorm, one after an activation or a bias, nor blocks;
    inference (running statistics) and a batch of one row (refused) stay on the per-layer path."""
    pytest.importorskip("numba")
    backend = mlp.get_backend("numba")
    monkeypatch.setattr(backend, "crossover_override", 10**9)

    def takes(layers, batch=8, inference=False):
        model = mlp.Sequential(layers(), backend="numba", seed=0).compile(loss="cross_entropy")
        return backend._fusable(model, batch, inference)

    def norm(dense=lambda: mlp.Dense(5, 8, bias=False), **options):
        return lambda: [dense(), mlp.BatchNorm(8, "relu", **options), mlp.Dense(8, 3, "softmax")]

    assert takes(norm()) and takes(norm(momentum=0.3, eps=1e-3))
    assert not takes(norm(sync=True))
    assert not takes(norm(lambda: mlp.Dense(5, 8)))  # a bias before it
    assert not takes(norm(lambda: mlp.Dense(5, 8, "tanh", bias=False)))  # an activation before it
    assert not takes(NETWORKS["residual"]) and not takes(NETWORKS["residual-projection-bn"])
    assert not takes(norm(), inference=True) and not takes(norm(), batch=1)
    model = mlp.MLP([5, 8, 3], output="softmax", batch_norm=True, backend="numba", seed=0).compile(loss="cross_entropy")
    before = model.params.copy()
    with pytest.raises(ValueError, match="at least 2 rows"):
        model.train_step(np.ones((1, 5)), [0])
    np.testing.assert_array_equal(model.params, before)
