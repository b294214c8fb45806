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

import inspect
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
    from sklearn.utils import check_random_state
    from sklearn.utils.class_weight import compute_sample_weight
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("mlp.MLPClassifier and mlp.MLPRegressor need scikit-learn: "
                      "pip install 'mlp[sklearn]'") from None

import mlp
from mlp import validation
from mlp.optimizers import OPTIMIZERS
from mlp.preprocessing import Preprocessing


SCHEDULES = ("constant", "invscaling", "adaptive")
_RENAMED = {"optimizer": "solver", "l2": "alpha"}  # this library's first names, still taken with a warning


class _InvScaling(mlp.Callback):
    """scikit-learn's learning_rate="invscaling": lr = learning_rate_init / (t + 1) ** power_t,
    t the number of samples trained on so far (set before each step; reads no batch loss)."""

    reads_batch_loss = False

    def __init__(self, rate, power_t):
        self.rate, self.power_t, self.seen = rate, power_t, 0

    def on_train_begin(self, logs=None):
        self.model.optimizer.lr = self.rate

    def on_batch_end(self, batch, logs=None):
        self.seen += logs["size"]
        self.model.optimizer.lr = self.rate / (self.seen + 1) ** self.power_t


class _StopBelow(mlp.Callback):
    """scikit-learn's learning_rate="adaptive" stops once the rate has fallen to 1e-6."""

    def on_epoch_end(self, epoch, logs=None):
        if self.model.optimizer.lr <= 1e-6:
            self.model.stop_training = True


class _MLPEstimator(BaseEstimator):
    """Parameters are scikit-learn's MLP ones where they mean the same thing: hidden_layer_sizes,
    activation (any of mlp.activations), solver (any of mlp.optimizers; scikit-learn's "lbfgs"
    is not one), alpha (L2 penalty on weights), batch_size ("auto": min(200, n_samples)),
    learning_rate ("constant", "invscaling", "adaptive": for solver="sgd", as scikit-learn),
    learning_rate_init, power_t, max_iter (epochs), shuffle, random_state (an int or a
    RandomState), tol and n_iter_no_change (training stops when the loss, or with
    early_stopping the validation loss, has not improved by tol for that many epochs),
    momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2,
    epsilon, warm_start, verbose. This library's own: backend, dtype (float64 by default here,
    as scikit-learn computes), init (a named initialiser), clip_norm."""

    _loss = _output = None

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, backend=None, dtype="float64",
                 init=None, clip_norm=None, optimizer=None, l2=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype
        self.init = init
        self.clip_norm = clip_norm
        self.optimizer = optimizer
        self.l2 = l2

    # --- settings -----------------------------------------------------------------------
    def _settings(self):
        """(solver, alpha, learning-rate schedule, initial rate), the renamed and deprecated
        parameters read with a FutureWarning that names the new ones."""
        values = {"solver": self.solver, "alpha": self.alpha}
        for old, new in _RENAMED.items():
            if getattr(self, old) is not None:
                warnings.warn(f"{type(self).__name__}({old}=...) is now {new}=..., scikit-learn's name; {old} "
                              "will be removed", FutureWarning, stacklevel=3)
                values[new] = getattr(self, old)
        schedule, rate = self.learning_rate, self.learning_rate_init
        if isinstance(schedule, (int, float, np.number)) and not isinstance(schedule, bool):
            warnings.warn(f"{type(self).__name__}(learning_rate={schedule}): the step size is learning_rate_init, as "
                          "in scikit-learn, and learning_rate names the schedule ('constant', 'invscaling', "
                          "'adaptive'); a number there will be refused", FutureWarning, stacklevel=3)
            schedule, rate = "constant", float(schedule)
        if schedule not in SCHEDULES:
            raise ValueError(f"The 'learning_rate' parameter of {type(self).__name__} must be one of "
                             f"{SCHEDULES}. Got {schedule!r} instead.")
        if values["solver"] not in OPTIMIZERS:
            raise ValueError(f"The 'solver' parameter of {type(self).__name__} must be one of {sorted(OPTIMIZERS)} "
                             f"(mlp.optimizers). Got {values['solver']!r} instead.")
        return values["solver"], values["alpha"], schedule, rate

    def _optimizer(self, solver, rate):
        options = {}
        if solver == "sgd":
            options = {"momentum": self.momentum, "nesterov": bool(self.nesterovs_momentum) and self.momentum > 0}
        elif solver in ("adam", "adamw"):
            options = {"betas": (self.beta_1, self.beta_2), "eps": self.epsilon}
        return OPTIMIZERS[solver](lr=rate, **options)

    # --- building -----------------------------------------------------------------------
    def _build(self, n_features, n_outputs):
        sizes = [n_features, *np.atleast_1d(self.hidden_layer_sizes).tolist(), n_outputs]
        # an int seeds the model as given; a RandomState (scikit-learn's convention) gives one draw
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) or self.random_state is None \
            else int(check_random_state(self.random_state).randint(2**31))
        model = mlp.MLP(sizes, activation=self.activation, output=self._output, backend=self.backend,
                        dtype=self.dtype, seed=seed, init=self.init)
        solver, alpha, _, rate = self._settings()
        model.compile(loss=self._loss, optimizer=self._optimizer(solver, rate), l2=alpha, clip_norm=self.clip_norm)
        return model

    def _fit(self, X, targets, epochs, incremental, sample_weight=None):
        solver, _, schedule, rate = self._settings()
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
        batch_size = min(200, X.shape[0]) if self.batch_size == "auto" else self.batch_size
        if isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) and batch_size > X.shape[0]:
            batch_size = X.shape[0]  # scikit-learn clips it (with a warning when asked for more)
        history = self.model_.fit(X, targets, epochs=epochs, batch_size=batch_size, shuffle=self.shuffle,
                                  **self._stopping(incremental, schedule, solver, rate),
                                  sample_weight=sample_weight, verbose=int(self.verbose))
        self.loss_curve_ = (getattr(self, "loss_curve_", []) if reuse else []) + history["loss"]
        self.loss_ = self.loss_curve_[-1]
        if "val_loss" in history:
            self.validation_loss_curve_ = history["val_loss"]
            self.best_loss_ = min(history["val_loss"])
        self.n_iter_ = getattr(self, "n_iter_", 0) * reuse + len(history.epoch)
        self.t_ = getattr(self, "t_", 0) * reuse + len(history.epoch) * X.shape[0]
        # predictions are computed in float64 from the trained weights (exact in float64): a
        # float32 GEMM's rounding depends on the batch's shape (BLAS kernels per row count), and a
        # sample's prediction must not depend on the samples beside it
        self._predictor = self.model_ if self.model_.dtype == np.float64 else self.model_.clone(dtype="float64")
        if not incremental and history.stopped_epoch is None and not self.model_.stop_training:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def _stopping(self, incremental, schedule, solver, rate):
        """fit's early stopping and schedule arguments for scikit-learn's tol, n_iter_no_change,
        early_stopping and learning_rate. partial_fit runs one epoch: none of them."""
        if incremental:
            return {}
        patience = validation.positive_int(self.n_iter_no_change, "n_iter_no_change")
        tol = validation.number(self.tol, "tol", low=0.0)
        monitor = "val_loss" if self.early_stopping else "loss"
        arguments = {"validation_split": self.validation_fraction if self.early_stopping else 0.0, "callbacks": []}
        adaptive = schedule == "adaptive" and solver == "sgd"
        if adaptive:  # the rate falls fivefold on a plateau; training ends when it reaches 1e-6
            arguments["lr_schedule"] = mlp.ReduceLROnPlateau(factor=0.2, patience=patience, min_delta=tol)
            arguments["callbacks"].append(_StopBelow())
        else:
            arguments["early_stopping"] = mlp.EarlyStopping(patience=patience, min_delta=tol, monitor=monitor,
                                                            restore_best_weights=bool(self.early_stopping))
        if schedule == "invscaling" and solver == "sgd":
            arguments["callbacks"].append(_InvScaling(rate, self.power_t))
        return arguments

    def fit(self, X, y, sample_weight=None):
        """Train for max_iter epochs (fewer when it converges, see tol). `sample_weight`: (n_samples,)."""
        X, targets = self._validate(X, y, reset=True)
        sample_weight = self._checked_weights(sample_weight, X)
        return self._fit(X, targets, self.max_iter, incremental=False, sample_weight=sample_weight)

    def _checked_weights(self, sample_weight, X):
        if sample_weight is None:
            return None
        return _check_sample_weight(sample_weight, X, dtype=np.float64)

    def _preprocessing(self):
        return None

    def save(self, path):
        """Write the fitted network (and a classifier's classes) to `path`, an mlp model file:
        `mlp.load(path)` reads it back as a model (see mlp.io)."""
        check_is_fitted(self, "model_")
        self.model_.save(path)

    def _predict_raw(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self._predictor.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False  # every backend: the same seed and settings give the same weights
        return tags


def _signature_with(init, name, default):
    signature = inspect.signature(init)
    added = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
    return signature.replace(parameters=[*signature.parameters.values(), added])


class MLPClassifier(ClassifierMixin, _MLPEstimator):
    """A multilayer perceptron classifier: softmax output, cross-entropy loss.
    Labels may be any values (strings, -1/1, ...): they are encoded to 0..k-1 and `classes_`
    maps them back."""

    _loss, _output = "cross_entropy", "softmax"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, class_weight=None, **options):
        """`class_weight`: None, "balanced" or {label: weight}, as scikit-learn's classifiers; the
        rest: see _MLPEstimator."""
        super().__init__(hidden_layer_sizes, activation, **options)
        self.class_weight = class_weight

    # scikit-learn reads an estimator's parameters from its __init__ signature: the shared ones
    # and class_weight, written once each
    __init__.__signature__ = _signature_with(_MLPEstimator.__init__, "class_weight", None)

    def _n_outputs(self, targets):
        return len(self.classes_)

    def _preprocessing(self):
        return Preprocessing(classes=self.classes_)

    def _validate(self, X, y, reset, classes=None):
        X, y = validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        if reset or not hasattr(self, "classes_"):
            self.classes_ = np.unique(y) if classes is None else np.unique(classes)
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 classes; got 1 class: {list(self.classes_)}")
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y contains labels {list(unknown)} that are not in classes_ {list(self.classes_)}")
        return X, y  # the original labels: the model maps them to its output units by its classes

    def fit(self, X, y, sample_weight=None):
        """Train for max_iter epochs (fewer when it converges, see tol). `sample_weight`: (n_samples,),
        multiplied by the weight of each sample's class from `class_weight`."""
        X, targets = self._validate(X, y, reset=True)
        weights = self._class_weighted(self._checked_weights(sample_weight, X), targets)
        return self._fit(X, targets, self.max_iter, incremental=False, sample_weight=weights)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on (X, y). The first call must give `classes` (all labels there will be)."""
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        X, targets = self._validate(X, y, reset=first, classes=classes)
        weights = self._class_weighted(self._checked_weights(sample_weight, X), targets)
        return self._fit(X, targets, 1, incremental=True, sample_weight=weights)

    def _class_weighted(self, sample_weight, y):
        """The sample weights times each sample's class weight (scikit-learn's compute_sample_weight)."""
        if self.class_weight is None:
            return sample_weight
        per_sample = compute_sample_weight(self.class_weight, y)
        return per_sample if sample_weight is None else per_sample * sample_weight

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
        X, y = validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32], multi_output=True,
                             y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:  # as scikit-learn's MLPRegressor: one target, predicted as (n,)
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape "
                          "of y to (n_samples, ), for example using ravel().", DataConversionWarning, stacklevel=3)
            y = y[:, 0]
        if reset:
            self._y_1d = y.ndim == 1
        return X, y.reshape(len(y), -1)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on (X, y)."""
        X, targets = self._validate(X, y, reset=not hasattr(self, "model_"))
        return self._fit(X, targets, 1, incremental=True, sample_weight=self._checked_weights(sample_weight, X))

    def predict(self, X):
        out = self._predict_raw(X).astype(np.float64)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
