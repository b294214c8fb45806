"""Activations: one record per name, each formula written once.

Every formula is element-wise and branch-free (masks multiply, no `if` on values,
nothing in place), so NumPy runs it on arrays as it stands, Numba compiles the very
same function for scalars, and CuPy takes it through NumPy's ufunc protocol.

`forward(Z) -> A` is the forward pass. `derivative(A, dA) -> dZ` is the derivative
times the incoming delta, written from the layer's *output* A, so the backward pass
needs only what the forward pass kept (sigmoid: A(1-A), tanh: 1-A^2, relu: A>0).
Softmax is the one activation that is not element-wise: it works along the last axis.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from mlp.validation import number


@dataclass(frozen=True)
class Activation:
    """A named activation. `forward(z, **params)` and `derivative(a, da, **params)` are the
    formulas (plain module-level functions that compilers can take); `function(Z)` and
    `backward(A, dA)` apply them with this activation's parameters."""

    name: str
    forward: Callable
    derivative: Optional[Callable]  # None: not differentiable (step)
    elementwise: bool = True
    params: dict = field(default_factory=dict)

    def function(self, Z):
        return self.forward(Z, **self.params)

    @property
    def backward(self):
        if self.derivative is None:
            return None
        return lambda A, dA: self.derivative(A, dA, **self.params)

    @property
    def differentiable(self) -> bool:
        return self.derivative is not None

    def config(self):
        """What `get` needs to rebuild this activation (used when saving models)."""
        return {"name": self.name, **self.params}

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"Activation({self.name}{', ' + args if args else ''})"


# --- the formulas ----------------------------------------------------------------

def identity(z):
    return z + 0  # a new array: formulas never alias their input


def identity_backward(a, da):
    return da + 0


def sigmoid(z):
    # 1 / (1 + e^-z) = exp(-log(1 + e^-z)); logaddexp never overflows and keeps full
    # relative precision in both tails (3.7e-15 over [-700, 700]).
    return np.exp(-np.logaddexp(0, -z))


def sigmoid_backward(a, da):
    return da * a * (1 - a)


def tanh(z):
    return np.tanh(z)


def tanh_backward(a, da):
    return da * (1 - a * a)


# Compiled float32 code without a vectorised tanh or exp (Numba without Intel SVML calls libm
# one element at a time, ~15x slower than NumPy) uses these instead: a rational approximation
# of tanh (Eigen's float tanh: odd and even polynomials on [-7.9, 7.9]) and sigmoid through it.
# Both stay within 3e-7 of the exact functions (a test holds them there): below float32's
# resolution near 1. float64 always uses the exact formulas above.
TANH_CLAMP = 7.90531110763549805


def tanh_float32(z):
    x = np.minimum(np.maximum(z, -TANH_CLAMP), TANH_CLAMP)
    x2 = x * x
    p = ((((((-2.76076847742355e-16 * x2 + 2.00018790482477e-13) * x2 - 8.60467152213735e-11) * x2
            + 5.12229709037114e-08) * x2 + 1.48572235717979e-05) * x2 + 6.37261928875436e-04) * x2
         + 4.89352455891786e-03)
    q = ((1.19825839466702e-06 * x2 + 1.18534705686654e-04) * x2 + 2.26843463243900e-03) * x2 \
        + 4.89352518554385e-03
    return x * p / q


def sigmoid_float32(z):
    return 0.5 + 0.5 * tanh_float32(0.5 * z)


FLOAT32_FORMULAS = {"tanh": "tanh_float32", "sigmoid": "sigmoid_float32"}


def relu(z):
    return np.maximum(z, 0)


def relu_backward(a, da):
    return da * (a > 0)


def softplus(z):
    return np.logaddexp(0, z)  # log(1 + e^z), without overflow for large |z|


def softplus_backward(a, da):
    # softplus'(z) = sigmoid(z) = 1 - e^-A, because e^A = 1 + e^z.
    return da * -np.expm1(-a)


def step(z):
    return np.heaviside(z, 1)  # 1 where z >= 0, as the perceptron's threshold


def leaky_relu(z, slope):
    return np.maximum(z, slope * z)  # valid because 0 <= slope < 1


def leaky_relu_backward(a, da, slope):
    return da * (a > 0) + (slope * da) * (a <= 0)


def elu(z, alpha):
    return np.maximum(z, 0) + alpha * np.expm1(np.minimum(z, 0))


def elu_backward(a, da, alpha):
    # for z <= 0: A = alpha(e^z - 1), so f'(z) = alpha e^z = A + alpha.
    return da * (a > 0) + (da * (a + alpha)) * (a <= 0)


def softmax(z):
    """Row-wise softmax along the last axis, shifted by the row maximum (no overflow)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(a, da):
    # Jacobian-vector product: dZ_i = A_i (dA_i - sum_j dA_j A_j), row by row.
    return a * (da - (da * a).sum(axis=-1, keepdims=True))


# --- the table -------------------------------------------------------------------

# The derivatives read the output A, which tells the sign of Z only for slope >= 0 and alpha > 0.
def _leaky_relu(slope=0.01):
    slope = number(slope, "leaky_relu slope", low=0.0, high=1.0, high_open=True)
    return Activation("leaky_relu", leaky_relu, leaky_relu_backward, params={"slope": slope})


def _elu(alpha=1.0):
    alpha = number(alpha, "elu alpha", low=0.0, low_open=True)
    return Activation("elu", elu, elu_backward, params={"alpha": alpha})


ACTIVATIONS = {
    "identity": lambda: Activation("identity", identity, identity_backward),
    "sigmoid": lambda: Activation("sigmoid", sigmoid, sigmoid_backward),
    "tanh": lambda: Activation("tanh", tanh, tanh_backward),
    "relu": lambda: Activation("relu", relu, relu_backward),
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "softplus": lambda: Activation("softplus", softplus, softplus_backward),
    "softmax": lambda: Activation("softmax", softmax, softmax_backward, elementwise=False),
    "step": lambda: Activation("step", step, None),
}

ALIASES = {"linear": "identity", "logistic": "sigmoid", "none": "identity"}


def get(spec, **params) -> Activation:
    """An Activation from a name ("relu"), a config dict ({"name": "elu", "alpha": 0.5})
    or an Activation (returned as is)."""
    if isinstance(spec, Activation):
        return spec if not params else ACTIVATIONS[spec.name](**{**spec.params, **params})
    if isinstance(spec, dict):
        params = {**spec, **params}
        if "name" not in params:
            raise ValueError(f"an activation given as a dict needs its 'name', e.g. "
                             f"{{'name': 'elu', 'alpha': 1.0}}; got {spec!r}")
        spec = params.pop("name")
    if not isinstance(spec, str):
        raise TypeError(f"activation must be a name or an Activation; got {type(spec).__name__}")
    name = ALIASES.get(spec.lower(), spec.lower())
    if name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {spec!r}. Valid activations: {', '.join(sorted(ACTIVATIONS))}."
        )
    try:
        return ACTIVATIONS[name](**params)
    except TypeError:
        raise ValueError(f"activation {name!r} takes no parameters {sorted(params)}") from None
