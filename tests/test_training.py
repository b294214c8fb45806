"""Training converges, optimizers follow torch's rules, schedules, early stopping, diagnostics."""
import math

import numpy as np
import pytest

import mlp


def test_spirals_reach_95_percent():
    X, y = mlp.datasets.spirals(n=200, noise=0.1, seed=0)
    X = mlp.StandardScaler().fit_transform(X)
    model = mlp.MLP([2, 64, 64, 2], activation="tanh", output="softmax", seed=0)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
    history = model.fit(X, y, epochs=150, batch_size=32, verbose=0)
    assert history["accuracy"][-1] >= 0.95
    assert model.evaluate(X, y)["accuracy"] >= 0.95


def test_regression_reaches_small_mse():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(512, 1))
    y = np.sin(2 * X[:, 0]) + 0.1 * X[:, 0] ** 2
    model = mlp.MLP([1, 32, 32, 1], activation="tanh", seed=1)
    model.compile(loss="mse", optimizer=mlp.Adam(lr=0.01), metrics=["mse", "mae"])
    model.fit(X, y, epochs=150, batch_size=64, verbose=0)
    result = model.evaluate(X, y)
    assert result["mse"] < 5e-3 and result["loss"] == pytest.approx(result["mse"], rel=1e-5)


@pytest.mark.parametrize("batch_size", [None, 1, 16])
def test_full_online_and_minibatch_descent(batch_size):
    """Full batch: one update per epoch; online: one per sample; mini-batch: ceil(n/B)."""
    X, y = mlp.datasets.moons(n=20, seed=0)
    model = mlp.MLP([2, 8, 1], activation="tanh", output="sigmoid", seed=0)
    model.compile(loss="binary_cross_entropy", optimizer=mlp.Adam(lr=0.01))
    model.fit(X, y, epochs=2, batch_size=batch_size, verbose=0)
    expected = {None: 1, 1: 40, 16: 3}[batch_size]
    assert model.optimizer.step == 2 * expected


def test_full_batch_epoch_equals_one_manual_step():
    X, y = mlp.datasets.circles(n=30, seed=1)
    a = mlp.MLP([2, 6, 1], activation="tanh", output="sigmoid", seed=5, dtype="float64")
    b = a.clone()
    for model in (a, b):
        model.compile(loss="binary_cross_entropy", optimizer=mlp.SGD(lr=0.3))
    a.fit(X, y, epochs=1, batch_size=None, shuffle=False, verbose=0)
    b.train_step(X, y)
    np.testing.assert_array_equal(a.params, b.params)


def manual_sgd(p, grads, lr, momentum, nesterov):
    v = np.zeros_like(p)
    for g in grads:  # torch.optim.SGD, dampening 0
        v = momentum * v + g
        p = p - lr * ((g + momentum * v) if nesterov else v)
    return p


def manual_adam(p, grads, lr, b1, b2, eps):
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):  # torch.optim.Adam
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


@pytest.mark.parametrize("optimizer,reference", [
    (lambda: mlp.SGD(lr=0.1), lambda p, g: manual_sgd(p, g, 0.1, 0.0, False)),
    (lambda: mlp.SGD(lr=0.1, momentum=0.9), lambda p, g: manual_sgd(p, g, 0.1, 0.9, False)),
    (lambda: mlp.SGD(lr=0.1, momentum=0.9, nesterov=True), lambda p, g: manual_sgd(p, g, 0.1, 0.9, True)),
    (lambda: mlp.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-7), lambda p, g: manual_adam(p, g, 0.01, 0.8, 0.99, 1e-7)),
])
def test_optimizers_follow_torch_rules(optimizer, reference, rng):
    backend = mlp.get_backend("numpy")
    params = rng.normal(size=50)
    grads = [rng.normal(size=50) for _ in range(5)]
    opt = optimizer()
    p = params.copy()
    opt.build(backend, p)
    for g in grads:
        opt.apply(p, g.copy())
    np.testing.assert_allclose(p, reference(params, grads), rtol=1e-12, atol=1e-14)


def test_optimizer_names_and_errors():
    assert isinstance(mlp.optimizers.get("adam"), mlp.Adam)
    assert mlp.optimizers.get("sgd").lr == 0.01
    with pytest.raises(ValueError, match="Valid optimizers"):
        mlp.optimizers.get("bogus")
    with pytest.raises(ValueError, match="lr"):
        mlp.SGD(lr=-1)


def test_gradient_clipping_by_global_norm(rng):
    model = mlp.MLP([3, 5, 2], activation="tanh", dtype="float64", seed=0)
    model.compile(loss="mse", optimizer=mlp.SGD(lr=1.0), clip_norm=0.01)
    X, y = rng.normal(size=(8, 3)), 10 * rng.normal(size=(8, 2))
    _, grads = model.loss_and_gradients(X, y)
    flat = np.concatenate([np.concatenate([dW.ravel(), db]) for dW, db in grads])
    before = model.params.copy()
    model.train_step(X, y)
    step = before - model.params
    assert np.linalg.norm(flat) > 0.01
    np.testing.assert_allclose(np.linalg.norm(step), 0.01, rtol=1e-4)
    np.testing.assert_allclose(step / np.linalg.norm(step), flat / np.linalg.norm(flat), atol=1e-10)


@pytest.mark.parametrize("schedule,expected", [
    (mlp.StepLR(step_size=2, gamma=0.5), [1.0, 1.0, 0.5, 0.5, 0.25]),
    (mlp.ExponentialLR(gamma=0.5), [1.0, 0.5, 0.25, 0.125, 0.0625]),
    (mlp.CosineLR(period=4), [1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4), 0.0]),
])
def test_schedules(schedule, expected):
    assert [schedule(e, 1.0) for e in range(5)] == pytest.approx(expected)


def test_reduce_on_plateau():
    s = mlp.ReduceLROnPlateau(factor=0.5, patience=1)
    lrs = []
    for loss in [1.0, 0.9, 0.9, 0.9, 0.9, 0.8]:
        lrs.append(s(0, 1.0))
        s.observe(loss)
    # as torch: reduce once the bad epochs exceed `patience` (after the 4th epoch here)
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]


def test_schedule_sets_lr_per_epoch_in_fit():
    X, y = mlp.datasets.moons(n=20, seed=0)
    model = mlp.MLP([2, 4, 1], output="sigmoid", seed=0)
    model.compile(loss="binary_cross_entropy", optimizer=mlp.SGD(lr=0.1))
    history = model.fit(X, y, epochs=3, lr_schedule=mlp.ExponentialLR(0.5), verbose=0)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert model.optimizer.lr == 0.1


def test_early_stopping_stops_and_restores_best_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] > 0).astype(int)
    y[rng.random(60) < 0.3] ^= 1  # noisy labels: a big network overfits
    model = mlp.MLP([5, 128, 128, 2], output="softmax", seed=0)
    model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
    history = model.fit(X, y, epochs=300, batch_size=8, validation_split=0.3,
                        early_stopping=mlp.EarlyStopping(patience=5), verbose=0)
    epochs_run = len(history.epoch)
    assert epochs_run < 300 and history.stopped_epoch == epochs_run - 1
    best = history.best_epoch
    assert history["val_loss"][best] == min(history["val_loss"])
    assert epochs_run == best + 1 + 5
    # the restored weights give the best epoch's validation loss
    order = np.random.default_rng(np.random.SeedSequence(0).spawn(3)[1]).permutation(60)
    val = order[:18]
    assert model.evaluate(X[val], y[val])["loss"] == pytest.approx(history["val_loss"][best], rel=1e-5)


def test_early_stopping_needs_validation():
    model = mlp.MLP([2, 1], seed=0).compile()
    with pytest.raises(ValueError, match="validation"):
        model.fit(np.zeros((4, 2)), np.zeros(4), early_stopping=3, verbose=0)


def test_diagnostics_recorded_per_epoch():
    X, y = mlp.datasets.spirals(n=50, seed=0)
    model = mlp.Sequential([mlp.Dense(2, 16, "relu"), mlp.Dense(16, 16, "sigmoid"), mlp.Dense(16, 2, "softmax")],
                           seed=0)
    model.compile(loss="cross_entropy", optimizer=mlp.SGD(lr=0.1))
    history = model.fit(X, y, epochs=3, verbose=0, diagnostics=True)
    records = history["diagnostics"]
    assert len(records) == 3 and len(records[0]) == 3
    relu, sig, _ = records[-1]
    assert 0 <= relu["dead_fraction"] <= 1 and "saturated_fraction" in sig
    assert all(0 < r["update_ratio"] < 1 and r["grad_norm"] > 0 for r in records[-1])
    # without diagnostics nothing is recorded
    assert "diagnostics" not in model.fit(X, y, epochs=1, verbose=0).history


def test_diagnostics_detects_dead_and_saturated_units():
    model = mlp.Sequential([mlp.Dense(2, 4, "relu"), mlp.Dense(4, 3, "sigmoid")], seed=0)
    (W1, b1), (W2, b2) = model.get_weights()
    model.set_weights([(W1, b1 - 100.0), (W2, b2 + 50.0)])
    stats = mlp.diagnose(model, np.ones((5, 2)), np.ones((5, 3)), loss="mse")
    assert stats[0]["dead_fraction"] == 1.0
    assert stats[1]["saturated_fraction"] == 1.0
    assert "grad_norm" in mlp.diagnostics.format_table(stats)


def test_dropout_is_inverted_and_off_at_inference():
    model = mlp.Sequential([mlp.Dense(4, 1000, "sigmoid"), mlp.Dropout(0.25), mlp.Dense(1000, 1)], seed=0)
    X = np.ones((1, 4), dtype=np.float32)
    np.testing.assert_array_equal(model.forward(X), model.forward(X))  # inference: identity
    hidden = model.layers[0].forward(model.backend, X)
    dropped = model.layers[1].forward(model.backend, hidden, True, model._dropout_rng)
    kept = model.layers[1].mask != 0
    assert 0.7 < kept.mean() < 0.8
    assert (dropped[~kept] == 0).all()
    np.testing.assert_allclose(dropped[kept], hidden[kept] / 0.75, rtol=1e-6)


def test_seed_makes_training_reproducible():
    X, y = mlp.datasets.moons(n=40, seed=0)
    runs = []
    for _ in range(2):
        model = mlp.MLP([2, 8, 2], output="softmax", dropout=0.2, seed=42)
        model.compile(loss="cross_entropy", optimizer="adam")
        model.fit(X, y, epochs=3, batch_size=8, verbose=0)
        runs.append(model.params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_warmup_leaves_weights_and_optimizer_state_alone(backend):
    if backend == "numba":
        pytest.importorskip("numba")
    X, y = mlp.datasets.moons(n=40, seed=0)
    runs = []
    for warm in (False, True):
        model = mlp.MLP([2, 8, 2], output="softmax", dropout=0.2, seed=42, backend=backend)
        model.compile(loss="cross_entropy", optimizer="adam", l2=0.01)
        if warm:
            assert model.warmup(8, 3) >= 0
            assert model.optimizer.step == 0 and not model.optimizer.m.any()
        model.fit(X, y, epochs=2, batch_size=8, verbose=0)
        runs.append(model.params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    with pytest.raises(ValueError, match="batch size must be a positive integer; got 0"):
        model.warmup(0)
    uncompiled = mlp.MLP([2, 8, 2], output="softmax", backend=backend)
    before = uncompiled.params.copy()
    uncompiled.warmup()  # inference only
    np.testing.assert_array_equal(uncompiled.params, before)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_nan_loss_stops_training_with_clear_error():
    X = np.array([[1e3, -1e3]] * 8)
    y = np.array([1e3] * 8)
    model = mlp.MLP([2, 16, 1], seed=0)
    model.compile(loss="mse", optimizer=mlp.SGD(lr=10.0))
    with pytest.raises(mlp.TrainingDivergedError, match="learning rate"):
        model.fit(X, y, epochs=50, verbose=0)


def test_verbose_prints_progress(capsys):
    X, y = mlp.datasets.xor()
    model = mlp.MLP([2, 4, 1], output="sigmoid", seed=0).compile(loss="bce")
    model.fit(X, y, epochs=2, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 2/2" in err and "loss" in err


def test_history_refuses_a_name_it_did_not_log_and_model_call_is_forward():
    X, y = mlp.datasets.moons(n=40, seed=0)
    model = mlp.MLP([2, 4, 2], output="softmax", seed=0)
    model.compile(loss="cross_entropy")
    history = model.fit(X, y, epochs=2, verbose=0)
    with pytest.raises(KeyError, match="'val_loss' was not logged by this fit; it logged 'loss'"):
        history["val_loss"]
    assert "val_loss" not in history and "loss" in history and "val_loss" not in history.history
    np.testing.assert_array_equal(model.backend.to_numpy(model(X[:3])), model.predict(X[:3]))


def test_early_stopping_says_what_it_did_when_verbose(capsys):
    X, y = mlp.datasets.moons(n=200, seed=0)
    for verbose in (0, 1):
        model = mlp.MLP([2, 16, 2], output="softmax", seed=0)
        model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.05))
        history = model.fit(X, y, epochs=300, validation_split=0.2, early_stopping=2, verbose=verbose)
        err = capsys.readouterr().err
        said = (f"Early stopping after epoch {history.stopped_epoch + 1}: val_loss has not improved for 2 epochs; "
                f"the weights of epoch {history.best_epoch + 1} are restored")
        assert (said in err) == bool(verbose), err[-300:]


def test_early_stopping_that_never_improved_says_so(capsys):
    X, y = mlp.datasets.moons(n=40, seed=0)
    model = mlp.MLP([2, 4, 1], seed=0, dtype="float64")  # validation targets of 1e200: a loss of inf
    model.compile(loss="mse", optimizer=mlp.SGD(lr=1e-3))
    X_val = X[:10]
    model.fit(X, y, epochs=10, verbose=1, early_stopping=2, validation_data=(X_val, np.full(10, 1e200)))
    assert "no epoch improved on it; the last epoch's weights are kept" in capsys.readouterr().err


CTRL_C_IN_EPOCH_4 = """
import json, os, signal
import mlp
X, y = mlp.datasets.spirals(n=400, seed=0)
model = mlp.MLP([2, 16, 2], activation="tanh", output="softmax", seed=0)
model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))

def schedule(epoch, lr):  # called as each epoch starts: Ctrl-C as epoch 4 begins
    if epoch == 3:
        os.kill(os.getpid(), signal.SIGINT)
    return lr

history = model.fit(X, y, epochs=50, batch_size=32, verbose=1, lr_schedule=schedule)
print(json.dumps({"epochs": history.epoch, "interrupted": history.interrupted,
                  "accuracy": model.evaluate(X, y)["accuracy"],
                  "handler_restored": signal.getsignal(signal.SIGINT) is signal.default_int_handler}))
"""


def test_ctrl_c_stops_fit_after_the_step_under_way_and_returns_the_history():
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", CTRL_C_IN_EPOCH_4], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["epochs"] == [0, 1, 2] and outcome["interrupted"] and outcome["handler_restored"]
    assert 0 < outcome["accuracy"] <= 1
    assert "Interrupted (Ctrl-C) in epoch 4, after 0 of its 25 steps" in result.stderr  # asked before its first step


def test_predict_proba_and_predict_classes_and_accuracy_agree():
    X, y = mlp.datasets.moons(n=60, seed=0)
    for output, n_out, loss in (("sigmoid", 1, "binary_cross_entropy"), ("softmax", 2, "cross_entropy")):
        model = mlp.MLP([2, 8, n_out], output=output, seed=0)
        model.compile(loss=loss, optimizer=mlp.Adam(lr=0.05))
        model.fit(X, y, epochs=3, verbose=0)
        P = model.predict_proba(X)
        assert P.shape == (len(X), 2) and np.allclose(P.sum(axis=1), 1, atol=1e-6)
        np.testing.assert_array_equal(P.argmax(axis=1), model.predict_classes(X))
        assert model.evaluate(X, y)["accuracy"] == pytest.approx(np.mean(model.predict_classes(X) == y))
    with pytest.raises(ValueError, match="predict_proba needs a softmax output or one sigmoid unit"):
        mlp.MLP([2, 3]).predict_proba(X)
    # an output of exactly 0.5 is class 0 for predict_classes and for the accuracy metric alike
    half = mlp.MLP([1, 1], output="sigmoid", seed=0)
    half.set_weights([(np.zeros((1, 1)), np.zeros(1))])
    half.compile(loss="binary_cross_entropy")
    assert half.predict_classes(np.zeros((2, 1))).tolist() == [0, 0]
    assert half.evaluate(np.zeros((2, 1)), [0, 1])["accuracy"] == 0.5
    assert half.evaluate(np.zeros((2, 1)), [0, 0])["accuracy"] == 1.0
