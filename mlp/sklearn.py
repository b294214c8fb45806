"""scikit-learn compatible estimators: MLPClassifier and MLPRegressor on any mlp backend.

They follow scikit-learn's conventions (parameters stored as given in __init__, fitted
attributes ending in '_', input validation by scikit-learn's own checks), so they work in
Pipeline, GridSearchCV and cross_val_score. scikit-learn is an optional extra.

The fitted network is `model_`, an mlp model. A classifier's model carries its classes
(`model_.preprocessing`), so `est.save(path)` (or `est.model_.save(path)`) writes them into
the model file: `mlp.load(path).predict_classes(X)` gives the original labels, and
`mlp evaluate` / `mlp predict` read the file like one from `mlp train`.
"""
from __future__ import annotations

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_array, check_is_fitted, check_X_y
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("mlp.MLPClassifier and mlp.MLPRegressor need scikit-learn: "
                      "pip install 'mlp[sklearn]'") from None

import mlp
from mlp.optimizers import OPTIMIZERS
from mlp.preprocessing import Preprocessing


class _MLPEstimator(BaseEstimator):
    _loss = _output = None

    def __init__(self, hidden_layer_sizes=(64,), activation="relu", optimizer="adam",
                 learning_rate=0.001, momentum=0.9, batch_size=32, max_iter=200, l2=0.0,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 backend=None, dtype="float32", random_state=None, warm_start=False, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.l2 = l2
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose

    # --- building ---------------------------------------------------------------------
    def _build(self, n_features, n_outputs):
        sizes = [n_features, *np.atleast_1d(self.hidden_layer_sizes).tolist(), n_outputs]
        # an int seeds the model as given; a RandomState (scikit-learn's convention) gives one draw
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) or self.random_state is None \
            else int(check_random_state(self.random_state).randint(2**31))
        model = mlp.MLP(sizes, activation=self.activation, output=self._output, backend=self.backend,
                        dtype=self.dtype, seed=seed)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"The 'optimizer' parameter must be one of {sorted(OPTIMIZERS)}. "
                             f"Got {self.optimizer!r} instead.")
        # momentum is scikit-learn's for solver="sgd" only; the other rules keep their defaults
        options = {"momentum": self.momentum} if self.optimizer == "sgd" else {}
        optimizer = OPTIMIZERS[self.optimizer](lr=self.learning_rate, **options)
        model.compile(loss=self._loss, optimizer=optimizer, l2=self.l2)
        return model

    def _fit(self, X, targets, epochs, incremental):
        reuse = hasattr(self, "model_") and (incremental or self.warm_start)
        if reuse and (self.model_.n_in != X.shape[1] or self.model_.n_out != self._n_outputs(targets)):
            if self.model_.n_in != X.shape[1]:  # scikit-learn's own wording
                raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.model_.n_in} features as input.")
            raise ValueError(f"the targets have {self._n_outputs(targets)} outputs (classes) but the fitted "
                             f"model has {self.model_.n_out}; fit anew without warm_start")
        if not reuse:
            self.model_ = self._build(X.shape[1], self._n_outputs(targets))
        self.model_.preprocessing = self._preprocessing()  # the classes of this fit, saved with the model
        stopper = None
        validation = 0.0
        if self.early_stopping and not incremental:
            stopper = mlp.EarlyStopping(patience=self.n_iter_no_change)
            validation = self.validation_fraction
        history = self.model_.fit(X, targets, epochs=epochs, batch_size=self.batch_size,
                                  validation_split=validation, early_stopping=stopper,
                                  verbose=self.verbose)
        self.loss_curve_ = getattr(self, "loss_curve_", []) if reuse else []
        self.loss_curve_ = self.loss_curve_ + history["loss"]
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = getattr(self, "n_iter_", 0) * reuse + len(history.epoch)
        self.n_features_in_ = X.shape[1]
        return self

    def fit(self, X, y):
        """Train for max_iter epochs (fewer with early_stopping)."""
        X, targets = self._validate(X, y, reset=True)
        return self._fit(X, targets, self.max_iter, incremental=False)

    def _preprocessing(self):
        return None

    def save(self, path):
        """Write the fitted network (and a classifier's classes) to `path`, an mlp model file:
        `mlp.load(path)` reads it back as a model (see mlp.io)."""
        check_is_fitted(self, "model_")
        self.model_.save(path)

    def _predict_raw(self, X):
        check_is_fitted(self, "model_")
        X = check_array(X, dtype=[np.float64, np.float32])
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        return self.model_.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.backend not in (None, "numpy")
        return tags


class MLPClassifier(ClassifierMixin, _MLPEstimator):
    """A multilayer perceptron classifier: softmax output, cross-entropy loss.
    Labels may be any values (strings, -1/1, ...): they are encoded to 0..k-1 and `classes_`
    maps them back."""

    _loss, _output = "cross_entropy", "softmax"

    def _n_outputs(self, targets):
        return len(self.classes_)

    def _preprocessing(self):
        return Preprocessing(classes=self.classes_)

    def _validate(self, X, y, reset, classes=None):
        X, y = check_X_y(X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        if reset or not hasattr(self, "classes_"):
            self.classes_ = np.unique(y) if classes is None else np.unique(classes)
            if len(self.classes_) < 2:
                raise ValueError(f"MLPClassifier needs at least 2 classes; got 1 class: {list(self.classes_)}")
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y contains labels {list(unknown)} that are not in classes_ {list(self.classes_)}")
        return X, y  # the original labels: the model maps them to its output units by its classes

    def partial_fit(self, X, y, classes=None):
        """One epoch on (X, y). The first call must give `classes` (all labels there will be)."""
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        X, targets = self._validate(X, y, reset=not hasattr(self, "model_"), classes=classes)
        return self._fit(X, targets, 1, incremental=True)

    def predict_proba(self, X):
        return self._predict_raw(X).astype(np.float64)

    def predict(self, X):
        outputs = self._predict_raw(X)  # first: it raises NotFittedError before classes_ exists
        return self.classes_[np.argmax(outputs, axis=1)]


class MLPRegressor(RegressorMixin, _MLPEstimator):
    """A multilayer perceptron regressor: identity output, mean squared error."""

    _loss, _output = "mse", "identity"

    def _n_outputs(self, targets):
        return targets.shape[1]

    def _validate(self, X, y, reset):
        X, y = check_X_y(X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True)
        if reset:
            self._y_1d = y.ndim == 1
        return X, y.reshape(len(y), -1)

    def partial_fit(self, X, y):
        """One epoch on (X, y)."""
        X, targets = self._validate(X, y, reset=not hasattr(self, "model_"))
        return self._fit(X, targets, 1, incremental=True)

    def predict(self, X):
        out = self._predict_raw(X).astype(np.float64)
        return out[:, 0] if self._y_1d else out
