import numpy as np
import pytest

import mlp


def test_one_hot():
    np.testing.assert_array_equal(mlp.one_hot([2, 0, 1]), [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert mlp.one_hot([0, 1], n_classes=4).shape == (2, 4)
    with pytest.raises(ValueError, match="labels must be in"):
        mlp.one_hot([0, 5], n_classes=3)


def test_standard_scaler_fits_on_training_data_only():
    train = np.array([[1.0, 10.0], [3.0, 10.0]])
    scaler = mlp.StandardScaler().fit(train)
    np.testing.assert_allclose(scaler.transform(train), [[-1, 0], [1, 0]])  # constant column -> 0
    np.testing.assert_allclose(scaler.transform([[5.0, 12.0]]), [[3.0, 2.0]])
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(train)), train)
    with pytest.raises(RuntimeError, match="not fitted"):
        mlp.StandardScaler().transform(train)


def test_min_max_scaler():
    train = np.array([[0.0, -1.0], [10.0, 1.0]])
    scaler = mlp.MinMaxScaler(feature_range=(-1, 1)).fit(train)
    np.testing.assert_allclose(scaler.transform(train), [[-1, -1], [1, 1]])
    np.testing.assert_allclose(scaler.transform([[5.0, 0.0]]), [[0, 0]])
    np.testing.assert_allclose(scaler.inverse_transform([[1.0, 1.0]]), [[10.0, 1.0]])


def test_splits_are_disjoint_and_cover():
    X, y = np.arange(100).reshape(50, 2), np.arange(50)
    Xtr, Xva, Xte, ytr, yva, yte = mlp.train_val_test_split(X, y, val=0.2, test=0.1, seed=0)
    assert (len(ytr), len(yva), len(yte)) == (35, 10, 5)
    assert sorted(np.concatenate([ytr, yva, yte])) == list(range(50))
    np.testing.assert_array_equal(Xtr[:, 0] // 2, ytr)
    a_train, a_test = mlp.train_test_split(y, test=0.2, seed=1)
    assert len(a_train) == 40 and not set(a_train) & set(a_test)


def test_minibatches_cover_each_sample_once():
    X, y = np.arange(10).reshape(10, 1), np.arange(10)
    batches = list(mlp.data.minibatches(X, y, 4, seed=0))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate([b[1] for b in batches])) == list(range(10))


@pytest.mark.parametrize("name", ["spirals", "circles", "moons"])
def test_datasets_are_seeded(name):
    X1, y1 = mlp.datasets.load(name, n=30, seed=5)
    X2, y2 = mlp.datasets.load(name, n=30, seed=5)
    np.testing.assert_array_equal(X1, X2)
    assert X1.shape == (60, 2) and set(y1) == {0, 1} and (y1 == y2).all()
    assert not np.array_equal(X1, mlp.datasets.load(name, n=30, seed=6)[0])


def test_metric_helpers():
    assert mlp.metrics.accuracy([0, 1, 2], [[1, 0, 0], [0, 1, 0], [1, 0, 0]]) == pytest.approx(2 / 3)
    assert mlp.metrics.accuracy([1, 0], [0.9, 0.2]) == 1.0
    assert mlp.metrics.mean_squared_error([1, 2], [1, 4]) == 2.0
    assert mlp.metrics.mean_absolute_error([1, 2], [1, 4]) == 1.0
