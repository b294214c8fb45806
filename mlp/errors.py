"""Exceptions that say what was wrong and how to fix it."""


class MLPError(Exception):
    """Base class of this library's own errors."""


class BackendUnavailableError(MLPError, ImportError):
    """A known backend cannot run here: its package is missing or it has no device."""


class TrainingDivergedError(MLPError, FloatingPointError):
    """The loss became NaN or infinite during training."""


class ModelFileError(MLPError, ValueError):
    """A saved model file is missing, truncated, tampered with or not a model file."""


class DataFileError(MLPError, ValueError):
    """A data file (an IDX file of MNIST's format) is truncated, damaged or not of its format."""


class DeviceMemoryError(MLPError, MemoryError):
    """The device (or the host) ran out of memory; the message names the batch size."""


class ConfigurationError(MLPError, ValueError):
    """An environment variable (MLP_BACKEND, MLP_DTYPE, ...) has a value it does not accept;
    the message names the variable and what it accepts."""
