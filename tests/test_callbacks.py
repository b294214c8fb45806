"""Callbacks (mlp.callbacks): the hooks run in order with the logs fit records, a callback can
stop training after an epoch or a batch, early stopping works as a callback, bad callbacks are
refused before training, and a function schedule receives (epoch, current_lr)."""
import numpy as np
import pytest

import mlp


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, (X[:, 0] > 0).astype(int)


def model(seed=1):
    return mlp.MLP([4, 8, 2], output="softmax", seed=seed).compile(loss="cross_entropy", optimizer=mlp.SGD(0.1))


class Recorder(mlp.Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", self.params["epochs"], self.params["steps"]))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, logs["size"], logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, logs["loss"]))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_hooks_run_in_order_with_the_logged_values():
    X, y = data()
    recorder = Recorder()
    net = model()
    history = net.fit(X, y, epochs=2, batch_size=24, verbose=0, callbacks=[recorder])
    kinds = [call[0] for call in recorder.calls]
    assert kinds == ["train_begin"] + (["epoch_begin"] + ["batch_end"] * 3 + ["epoch_end"]) * 2 + ["train_end"]
    assert recorder.calls[0] == ("train_begin", 2, 3)
    assert [call[2] for call in recorder.calls if call[0] == "batch_end"] == [24, 24, 16] * 2
    assert [call[2] for call in recorder.calls if call[0] == "epoch_end"] == history["loss"]
    assert recorder.model is net
    # the epoch's loss is the batches' losses weighted by their rows
    batches = [call for call in recorder.calls if call[0] == "batch_end"][:3]
    assert np.isclose(sum(size * value for _, _, size, value in batches) / 64, history["loss"][0])


def test_a_callback_stops_training_after_an_epoch():
    class StopAtTwo(mlp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    X, y = data()
    history = model().fit(X, y, epochs=10, verbose=0, callbacks=[StopAtTwo()])
    assert history.epoch == [0, 1]


def test_a_callback_stops_training_after_a_batch():
    class StopAfterFive(mlp.Callback):
        steps = 0

        def on_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 5:
                self.model.stop_training = True

    X, y = data()
    net, twin = model(), model()
    history = net.fit(X, y, epochs=10, batch_size=16, verbose=0, callbacks=[StopAfterFive()])
    assert history.epoch == [0]  # the second epoch stopped after its first step: not logged
    twin.fit(X, y, epochs=1, batch_size=16, verbose=0)
    rows = twin._shuffle_rng.permutation(64)[:16]  # and the second epoch's first step
    twin.train_step(X[rows], y[rows])
    np.testing.assert_array_equal(net.params, twin.params)


def test_early_stopping_as_a_callback_is_early_stopping():
    X, y = data()
    results = []
    for kwargs in ({"early_stopping": mlp.EarlyStopping(patience=2, monitor="loss", min_delta=10.0)},
                   {"callbacks": [mlp.EarlyStopping(patience=2, monitor="loss", min_delta=10.0)]}):
        net = model()
        history = net.fit(X, y, epochs=20, verbose=0, **kwargs)
        results.append((history.epoch, history.best_epoch, history.stopped_epoch, net.params.copy()))
    assert results[0][:3] == results[1][:3] == ([0, 1, 2], 0, 2)
    np.testing.assert_array_equal(results[0][3], results[1][3])


@pytest.mark.parametrize("callbacks,message", [
    (["print"], "mlp.Callback objects"),
    ([lambda epoch: None], "mlp.Callback objects"),
    (42, "a list of mlp.Callback"),
])
def test_bad_callbacks_are_refused_before_training(callbacks, message):
    X, y = data()
    net = model()
    before = net.params.copy()
    with pytest.raises(ValueError, match=message):
        net.fit(X, y, epochs=1, verbose=0, callbacks=callbacks)
    np.testing.assert_array_equal(net.params, before)


def test_the_same_callback_twice_and_two_early_stoppings_are_refused():
    X, y = data()
    recorder = Recorder()
    with pytest.raises(ValueError, match="given twice"):
        model().fit(X, y, verbose=0, callbacks=[recorder, recorder])
    with pytest.raises(ValueError, match="one EarlyStopping"):
        model().fit(X, y, verbose=0, early_stopping=3, callbacks=[mlp.EarlyStopping(monitor="loss")])


def test_no_batch_hook_costs_nothing_per_step():
    """Without a callback that overrides on_batch_end (and without a progress bar) fit reads no
    batch loss back to the host."""
    from mlp.callbacks import CallbackList
    from mlp.training import ProgressCallback
    from mlp.progress import Progress

    quiet = CallbackList([ProgressCallback(Progress(0, 1, 1, 1)), mlp.EarlyStopping(monitor="loss")], None, {})
    assert quiet.batch_callbacks == []
    shown = CallbackList([ProgressCallback(Progress(1, 1, 1, 1))], None, {})
    assert len(shown.batch_callbacks) == 1 and not shown.reads_loss
    assert CallbackList([Recorder()], None, {}).reads_loss


def test_a_function_schedule_receives_the_current_rate():
    X, y = data()
    seen = []

    def halve(epoch, lr):
        seen.append((epoch, lr))
        return lr / 2

    history = model().fit(X, y, epochs=3, verbose=0, lr_schedule=halve)
    assert seen == [(0, 0.1), (1, 0.05), (2, 0.025)]
    assert history["lr"] == [0.05, 0.025, 0.0125]


def test_a_resumed_function_schedule_goes_on_from_the_last_rate(tmp_path):
    X, y = data()
    path = tmp_path / "ck.npz"
    whole = model().fit(X, y, epochs=4, verbose=0, lr_schedule=lambda epoch, lr: lr * 0.5)

    class Interrupt(mlp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    first = model()
    first.fit(X, y, epochs=4, verbose=0, lr_schedule=lambda epoch, lr: lr * 0.5, checkpoint=path,
              callbacks=[Interrupt()])
    resumed = model()
    history = resumed.fit(X, y, epochs=4, verbose=0, lr_schedule=lambda epoch, lr: lr * 0.5, resume=path)
    assert history["lr"] == whole["lr"]


def test_summary_prints_and_returns_the_text(capsys):
    text = model().summary()
    assert capsys.readouterr().out.strip() == text.strip() and "total params: 58" in text
    assert model().summary(print_fn=None) == text and capsys.readouterr().out == ""


def test_a_stop_asked_before_any_step_takes_none():
    class StopAtOnce(mlp.Callback):
        def on_train_begin(self, logs=None):
            self.model.stop_training = True

    X, y = data()
    net = model()
    before = net.params.copy()
    history = net.fit(X, y, epochs=3, verbose=0, callbacks=[StopAtOnce()])
    assert history.epoch == [] and np.array_equal(net.params, before)


@pytest.mark.parametrize("monitor,mode,sign", [
    ("val_loss", "auto", 1.0), ("val_accuracy", "auto", -1.0), ("val_auc", "auto", -1.0), ("r2", "auto", -1.0),
    ("val_mae", "auto", 1.0), ("val_my_score", "auto", 1.0), ("val_my_score", "max", -1.0), ("val_f1", "min", 1.0),
])
def test_early_stopping_knows_which_way_each_metric_improves(monitor, mode, sign):
    assert mlp.EarlyStopping(monitor=monitor, mode=mode).sign == sign
    with pytest.raises(ValueError, match="mode must be"):
        mlp.EarlyStopping(mode="up")
