"""mlp: multilayer perceptrons with hand-derived backpropagation on swappable array
backends (NumPy reference, Numba, CuPy), chosen by MLP_BACKEND or `backend=`."""
from mlp import activations, backends, callbacks, checkpoint, data, datasets, losses, metrics, preprocessing, schedules
from mlp.backends import available as available_backends, get_backend
from mlp.data import MinMaxScaler, StandardScaler, one_hot, train_test_split, train_val_test_split
from mlp.diagnostics import diagnose
from mlp.errors import (BackendUnavailableError, ConfigurationError, DataFileError, DeviceMemoryError, MLPError,
                        ModelFileError, TrainingDivergedError)
from mlp.gradcheck import gradcheck
from mlp.io import load
from mlp.layers import Dense, Dropout
from mlp.linear import Perceptron, least_squares
from mlp.batchnorm import BatchNorm
from mlp.callbacks import Callback, EarlyStopping
from mlp.model import MLP, Sequential
from mlp.training import History
from mlp.optimizers import OPTIMIZERS as _OPTIMIZERS
from mlp.preprocessing import Preprocessing
from mlp.residual import Residual
from mlp.schedules import CosineLR, ExponentialLR, ReduceLROnPlateau, StepLR

__version__ = "0.1.0"

# every registered optimizer as mlp.<Class> (mlp.SGD, mlp.Adam, mlp.AdamW, ...)
globals().update({_cls.__name__: _cls for _cls in _OPTIMIZERS.values()})


def __getattr__(name):
    # the scikit-learn estimators load scikit-learn only when asked for
    if name in ("MLPClassifier", "MLPRegressor"):
        from mlp import sklearn as _sklearn

        return getattr(_sklearn, name)
    raise AttributeError(f"module 'mlp' has no attribute {name!r}")

__all__ = [
    "MLP", "Sequential", "Dense", "Dropout", "BatchNorm", "Residual",
    *(_cls.__name__ for _cls in _OPTIMIZERS.values()), "EarlyStopping",
    "Callback", "History",
    "StepLR", "ExponentialLR", "CosineLR", "ReduceLROnPlateau", "Perceptron", "least_squares",
    "gradcheck", "diagnose", "load", "get_backend", "available_backends", "one_hot",
    "StandardScaler", "MinMaxScaler", "train_test_split", "train_val_test_split",
    "Preprocessing", "MLPError", "BackendUnavailableError", "ConfigurationError", "DataFileError", "DeviceMemoryError",
    "ModelFileError", "TrainingDivergedError",
    "activations", "backends", "callbacks", "checkpoint", "data", "datasets", "losses", "metrics", "preprocessing",
    "schedules",
    "MLPClassifier", "MLPRegressor",
]
