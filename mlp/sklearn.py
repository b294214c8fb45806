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

import functools
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


def _unchanged_on_error(method):
    """A fit or partial_fit that raises leaves the estimator as it was (classes_, n_features_in_,
    model_, ...): the attributes are put back. A network trained in place (partial_fit) is left to
    mlp's own guarantee: its fit refuses bad arguments before changing anything."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        saved = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise
    return guarded
_RENAMED = {"optimizer": "solver", "l2": "alpha"}  # this library's first names, still taken with a warning


class _InvScaling(mlp.Callback):
    """scikit-learn's learning_rate="invscaling": after each epoch lr = learning_rate_init /
    (t + 1) ** power_t, t the number of samples trained on so far (`t_`)."""

    def __init__(self, rate, power_t, seen):
        self.rate, self.power_t, self.seen = rate, power_t, seen

    def on_epoch_end(self, epoch, logs=None):
        self.seen += self.params["samples"]
        self.model.optimizer.lr = self.rate / (self.seen + 1) ** self.power_t


class _Convergence(mlp.Callback):
    """scikit-learn's stopping rule, as its MLPs apply it after each epoch: an epoch that does not
    improve the training loss by `tol` (with early_stopping: the validation score, accuracy or R^2)
    counts; more than `n_iter_no_change` in a row stop training, or with learning_rate="adaptive"
    divide the rate by 5 (stopping once it is at most 1e-6). With early_stopping the weights of
    the best validation score are put back at the end."""

    def __init__(self, monitor, tol, n_iter_no_change, adaptive):
        self.monitor, self.tol, self.n_iter_no_change, self.adaptive = monitor, tol, n_iter_no_change, adaptive
        self.rises = monitor.startswith("val_")  # a score; else the loss
        self.best, self.count, self.best_params, self.scores = -np.inf if self.rises else np.inf, 0, None, []

    def on_epoch_end(self, epoch, logs=None):
        value = logs[self.monitor]
        self.scores.append(value)
        if self.rises:
            self.count = self.count + 1 if value < self.best + self.tol else 0
            if value > self.best:
                self.best, self.best_params = value, self.model.params.copy()
        else:
            self.count = self.count + 1 if value > self.best - self.tol else 0
            self.best = min(self.best, value)
        if self.count > self.n_iter_no_change:
            if self.adaptive and self.model.optimizer.lr > 1e-6:
                self.model.optimizer.lr /= 5.0
                self.count = 0
            else:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_params is not None:
            self.model.params[...] = self.best_params


class _MLPEstimator(BaseEstimator):
    """Parameters are scikit-learn's MLP ones where they mean the same thing: hidden_layer_sizes,
    activation (any of mlp.activations), solver (any of mlp.optimizers; scikit-learn's "lbfgs"
    is not one), alpha (L2 penalty on weights), batch_size ("auto": min(200, n_samples)),
    learning_rate ("constant", "invscaling", "adaptive": for solver="sgd", as scikit-learn),
    learning_rate_init, power_t, max_iter (epochs), shuffle, random_state (an int or a
    RandomState), tol and n_iter_no_change (training stops when the loss, or with
    early_stopping the validation score, has not improved by tol for more than that many epochs,
    scikit-learn's rule),
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
    def _build(self, n_features, n_outputs, batch_weight, model=None):
        """A compiled network for this fit: a new one, or `model`'s weights (a warm start) under
        the current parameters, as scikit-learn makes a new optimizer for every fit.
        `batch_weight`: a batch's rows, or the sum of their sample weights (their mean x rows)."""
        if model is None:
            sizes = [n_features, *np.atleast_1d(self.hidden_layer_sizes).tolist(), n_outputs]
            # an int seeds the model as given; a RandomState (scikit-learn's convention) gives one draw
            seed = self.random_state if isinstance(self.random_state, (int, np.integer)) or self.random_state is None \
                else int(check_random_state(self.random_state).randint(2**31))
            model = mlp.MLP(sizes, activation=self.activation, output=self._output, backend=self.backend,
                            dtype=self.dtype, seed=seed, init=self.init)
        else:
            model = model.clone()
        solver, alpha, _, rate = self._settings()
        # scikit-learn's penalty is alpha/2 ||W||^2 over a batch's (weighted) rows: alpha W / rows in the gradient
        model.compile(loss=self._loss, optimizer=self._optimizer(solver, rate), l2=alpha / (2 * batch_weight),
                      clip_norm=self.clip_norm, metrics=self._metrics)
        return model

    def _batch_size(self, n):
        size = min(200, n) if self.batch_size == "auto" else self.batch_size
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                          UserWarning, stacklevel=4)
            size = n  # as scikit-learn: clipped
        return size

    def _fit(self, X, targets, epochs, incremental, sample_weight=None):
        """Train a new network, a warm start (the weights of the last fit under the current
        parameters), or partial_fit's next epoch on the same network and optimizer."""
        solver, _, schedule, rate = self._settings()
        fitted = hasattr(self, "model_")
        reuse = fitted and (incremental or self.warm_start)
        if reuse and self.model_.n_out != self._n_outputs(targets):
            raise ValueError(f"the targets have {self._n_outputs(targets)} outputs (classes) but the fitted "
                             f"model has {self.model_.n_out}; fit anew without warm_start")
        batch_size = self._batch_size(X.shape[0])
        if incremental and fitted:
            model = self.model_  # partial_fit goes on with the same optimizer state, as scikit-learn's
        else:
            mean_weight = 1.0 if sample_weight is None else float(np.mean(sample_weight)) or 1.0
            model = self._build(X.shape[1], self._n_outputs(targets), batch_size * mean_weight,
                                self.model_ if reuse else None)
        model.preprocessing = self._preprocessing()  # the classes of this fit, saved with the model
        convergence = None if incremental else self._convergence(schedule, solver)
        callbacks = [] if convergence is None else [convergence]
        if schedule == "invscaling" and solver == "sgd" and not incremental:
            callbacks.append(_InvScaling(rate, self.power_t, self.t_ if reuse else 0))
        split = self.validation_fraction if self.early_stopping and not incremental else 0.0
        history = model.fit(X, targets, epochs=epochs, batch_size=batch_size, shuffle=self.shuffle,
                            validation_split=split, callbacks=callbacks, sample_weight=sample_weight,
                            verbose=int(self.verbose))
        self.model_ = model
        self._record(history, X.shape[0], reuse, convergence)
        if convergence is not None and not model.stop_training:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def _convergence(self, schedule, solver):
        tol = validation.number(self.tol, "tol", low=0.0)
        patience = validation.integer(self.n_iter_no_change, "n_iter_no_change", low=1)
        monitor = f"val_{self._metrics[0]}" if self.early_stopping else "loss"
        return _Convergence(monitor, tol, patience, adaptive=schedule == "adaptive" and solver == "sgd")

    def _record(self, history, n, reuse, convergence):
        """The fitted attributes scikit-learn's MLPs have, from this fit's History."""
        self.loss_curve_ = (self.loss_curve_ if reuse else []) + history["loss"]
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = (self.n_iter_ if reuse else 0) + len(history.epoch)
        self.t_ = (self.t_ if reuse else 0) + len(history.epoch) * n
        early = convergence is not None and self.early_stopping
        self.best_loss_ = None if early else min(self.loss_curve_)
        self.validation_scores_ = convergence.scores if early else None
        self.best_validation_score_ = convergence.best if early else None
        self.n_layers_ = len(self.model_.dense_layers) + 1
        self.n_outputs_ = self.model_.n_out
        self.out_activation_ = self._output
        # predictions are computed in float64 from the trained weights (exact in float64): a
        # float32 GEMM's rounding depends on the batch's shape (BLAS kernels per row count), and a
        # sample's prediction must not depend on the samples beside it
        self._predictor = self.model_ if self.model_.dtype == np.float64 else self.model_.clone(dtype="float64")

    @property
    def coefs_(self):
        """The weight matrices as scikit-learn lays them out: (n_in, n_out) per layer."""
        check_is_fitted(self, "model_")
        return [W.T for W, _ in self.model_.get_weights()]

    @property
    def intercepts_(self):
        check_is_fitted(self, "model_")
        return [b for _, b in self.model_.get_weights()]

    @_unchanged_on_error
    def fit(self, X, y, sample_weight=None):
        """Train for max_iter epochs (fewer when it converges, see tol). `sample_weight`: (n_samples,)."""
        X, targets = self._validate(X, y, reset=not self._warm())
        sample_weight = self._checked_weights(sample_weight, X)
        return self._fit(X, targets, self.max_iter, incremental=False, sample_weight=sample_weight)

    def _warm(self):
        """Whether this fit starts from the last one's weights (checked against its features)."""
        return bool(self.warm_start) and hasattr(self, "model_")

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

    _loss, _output, _metrics = "cross_entropy", "softmax", ["accuracy"]

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
        if self._warm() and classes is None and not np.array_equal(np.unique(y), self.classes_):
            raise ValueError("warm_start can only be used where `y` has the same classes as in the previous call "
                             f"to fit. Previously got {self.classes_}, `y` has {np.unique(y)}")
        if reset or not hasattr(self, "classes_"):
            self.classes_ = np.unique(y) if classes is None else np.unique(classes)
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 classes; got 1 class: {list(self.classes_)}")
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y contains labels {list(unknown)} that are not in classes_ {list(self.classes_)}")
        return X, y  # the original labels: the model maps them to its output units by its classes

    @_unchanged_on_error
    def fit(self, X, y, sample_weight=None):
        """Train for max_iter epochs (fewer when it converges, see tol). `sample_weight`: (n_samples,),
        multiplied by the weight of each sample's class from `class_weight`."""
        X, targets = self._validate(X, y, reset=not self._warm())
        weights = self._class_weighted(self._checked_weights(sample_weight, X), targets)
        return self._fit(X, targets, self.max_iter, incremental=False, sample_weight=weights)

    @_unchanged_on_error
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on (X, y). The first call must give `classes` (all labels there will be)."""
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if isinstance(self.class_weight, str):
            raise ValueError(f"class_weight={self.class_weight!r} is not supported for partial_fit: each call sees "
                             "part of the data. Use compute_class_weight on all of y and pass the dict")
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

    _loss, _output, _metrics = "mse", "identity", ["r2"]

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

    @_unchanged_on_error
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
