"""Activations: one record per name, each formula written once.

Every formula is element-wise and branch-free (masks multiply, no `if` on values,
nothing in place), so NumPy runs it on arrays as it stands, Numba compiles the very
same function for scalars, and mlp.kernels.translate prints it as CUDA C.

`forward(z, *params) -> a` is the forward pass. The derivative times the incoming delta
declares what it reads, by `needs` and its positional arguments:
- "output": `derivative(a, da, *params)`, from the layer's output (sigmoid: a(1-a), tanh:
  1-a^2, relu: a>0): the backward pass needs only what the forward pass returns;
- "input": `derivative(z, da, *params)`, from the pre-activation (GELU, Mish);
- "both": `derivative(z, a, da, *params)` (SiLU: s + a(1 - s) with s = sigmoid(z)).
Every backend keeps what the declaration asks for (Z beside A only where it is read), and
compiles or prints the derivative with its arguments bound by position.
Softmax is the one activation that is not element-wise: it works along the last axis.

`register` adds an activation of one's own, on the same terms.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from mlp import initializers
from mlp.validation import number

NEEDS = ("output", "input", "both")  # what a derivative may read


def derivative_inputs(needs, Z, A) -> tuple:
    """What a derivative declaring `needs` reads, in its order, from Z and A (arrays, or
    expressions in generated code)."""
    if needs == "output":  # no table built per call: a backward pass asks once per layer and step
        return (A,)
    return (Z,) if needs == "input" else (Z, A)


@dataclass(frozen=True)
class Activation:
    """A named activation. `forward(z, **params)` and `derivative(..., da, **params)` are the
    formulas (plain module-level functions that compilers can take; see the module docstring
    for `needs`); `function(Z)` and `gradient(Z, A, dA)` apply them with this activation's
    parameters. `float32_forward`: a faster formula for compiled float32 code (within float32's
    resolution of `forward`); `init`: the weight initialiser layers with it start from."""

    name: str
    forward: Callable
    derivative: Optional[Callable]  # None: not differentiable (step)
    elementwise: bool = True
    params: dict = field(default_factory=dict)
    needs: str = "output"
    float32_forward: Optional[Callable] = None
    init: str = "xavier_normal"

    def function(self, Z):
        return self.forward(Z, **self.params)

    def gradient(self, Z, A, dA):
        """dL/dZ = f'(Z) * dA, from Z, A or both as `needs` declares (the other may be None)."""
        return self.derivative(*derivative_inputs(self.needs, Z, A), dA, **self.params)

    @property
    def keeps_input(self) -> bool:
        """Whether the backward pass reads Z, which the forward pass must then keep beside A."""
        return self.needs != "output"

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


# What compiled float32 code prints in place of tanh and sigmoid wherever a formula calls them
# (GELU, SiLU, Mish, a user's own): mlp.kernels.formulas.
FLOAT32_REPLACEMENTS = {"tanh": tanh_float32, sigmoid: sigmoid_float32}


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


def _row_exponentials(z):
    """(z - max, e^(z - max), the row sums of the latter) along the last axis: the shift keeps
    exp from overflowing. The row-wise softmax and log-softmax, defined once for NumPy (the
    generated kernels' is mlp.kernels.rowwise)."""
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return shifted, e, e.sum(axis=-1, keepdims=True)


def softmax(z):
    """Row-wise softmax along the last axis."""
    _, e, total = _row_exponentials(z)
    return e / total


def log_softmax(z):
    """Row-wise log of the softmax, exact where the softmax rounds to 0."""
    shifted, _, total = _row_exponentials(z)
    return shifted - np.log(total)


def softmax_backward(a, da):
    # Jacobian-vector product: dZ_i = A_i (dA_i - sum_j dA_j A_j), row by row.
    return a * (da - (da * a).sum(axis=-1, keepdims=True))


def softsign(z):
    return z / (1 + np.abs(z))


def softsign_backward(a, da):
    # 1 / (1 + |z|)^2 = (1 - |A|)^2, because |A| = |z| / (1 + |z|).
    return da * (1 - np.abs(a)) * (1 - np.abs(a))


SELU_ALPHA = 1.6732632423543772848170429916717  # Klambauer et al. 2017, as torch.nn.SELU
SELU_SCALE = 1.0507009873554804934193349852946


def selu(z):
    return SELU_SCALE * (np.maximum(z, 0) + SELU_ALPHA * np.expm1(np.minimum(z, 0)))


def selu_backward(a, da):
    # for z <= 0: A = scale alpha (e^z - 1), so f'(z) = scale alpha e^z = A + scale alpha.
    return da * SELU_SCALE * (a > 0) + (da * (a + SELU_SCALE * SELU_ALPHA)) * (a <= 0)


GELU_C = 0.7978845608028654  # sqrt(2 / pi)


def gelu(z):
    """The tanh approximation (Keras' default, torch's approximate="tanh")."""
    return 0.5 * z * (1 + np.tanh(GELU_C * (z + 0.044715 * z * z * z)))


def gelu_float32(z):
    return 0.5 * z * (1 + tanh_float32(GELU_C * (z + 0.044715 * z * z * z)))


def gelu_backward(z, da):
    t = np.tanh(GELU_C * (z + 0.044715 * z * z * z))
    return da * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * z * z))


def silu(z):
    return z * sigmoid(z)


def silu_backward(z, a, da):
    # f' = s + z s (1 - s) = s + A (1 - s), s = sigmoid(z)
    s = sigmoid(z)
    return da * (s + a * (1 - s))


def mish(z):
    return z * np.tanh(softplus(z))


def mish_backward(z, da):
    t = np.tanh(softplus(z))
    return da * (t + z * (1 - t * t) * sigmoid(z))


def hardswish(z):
    """z relu6(z + 3) / 6 (Howard et al. 2019, as torch.nn.Hardswish)."""
    return z * np.minimum(np.maximum(z + 3, 0), 6) / 6


def hardswish_backward(z, da):
    return da * ((z > 3) + (2 * z + 3) / 6 * (z >= -3) * (z <= 3))


# --- the table -------------------------------------------------------------------

# The derivatives read the output A, which tells the sign of Z only for slope >= 0 and alpha > 0.
def _leaky_relu(slope=0.01):
    slope = number(slope, "leaky_relu slope", low=0.0, high=1.0, high_open=True)
    return Activation("leaky_relu", leaky_relu, leaky_relu_backward, params={"slope": slope}, init="uniform_fan_in")


def _elu(alpha=1.0):
    alpha = number(alpha, "elu alpha", low=0.0, low_open=True)
    return Activation("elu", elu, elu_backward, params={"alpha": alpha}, init="uniform_fan_in")


ACTIVATIONS = {
    "identity": lambda: Activation("identity", identity, identity_backward),
    "sigmoid": lambda: Activation("sigmoid", sigmoid, sigmoid_backward, float32_forward=sigmoid_float32),
    "tanh": lambda: Activation("tanh", tanh, tanh_backward, float32_forward=tanh_float32),
    "relu": lambda: Activation("relu", relu, relu_backward, init="uniform_fan_in"),
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "softplus": lambda: Activation("softplus", softplus, softplus_backward, init="uniform_fan_in"),
    "softsign": lambda: Activation("softsign", softsign, softsign_backward),
    "selu": lambda: Activation("selu", selu, selu_backward, init="lecun_normal"),  # self-normalising with it
    "gelu": lambda: Activation("gelu", gelu, gelu_backward, needs="input", float32_forward=gelu_float32,
                               init="uniform_fan_in"),
    "silu": lambda: Activation("silu", silu, silu_backward, needs="both", init="uniform_fan_in"),
    "mish": lambda: Activation("mish", mish, mish_backward, needs="input", init="uniform_fan_in"),
    "hardswish": lambda: Activation("hardswish", hardswish, hardswish_backward, needs="input", init="uniform_fan_in"),
    "softmax": lambda: Activation("softmax", softmax, softmax_backward, elementwise=False),
    "step": lambda: Activation("step", step, None),
}

ALIASES = {"linear": "identity", "logistic": "sigmoid", "none": "identity", "swish": "silu"}


def get(spec, **params) -> Activation:
    """An Activation from a name ("relu"), a config dict ({"name": "elu", "alpha": 0.5})
    or an Activation (returned as is)."""
    if isinstance(spec, Activation):
        if spec.name not in ACTIVATIONS:  # it could train here, but not compile, clone, save or load
            raise ValueError(f"activation {spec.name!r} is not registered: register its formulas with "
                             f"mlp.activations.register({spec.name!r}, forward, derivative, needs=...) and name it")
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
            f"Unknown activation {spec!r}. Valid activations: {', '.join(sorted(ACTIVATIONS))}. An activation "
            "of your own must be registered (mlp.activations.register) before a model naming it is built or loaded."
        )
    try:
        return ACTIVATIONS[name](**params)
    except TypeError:
        raise ValueError(f"activation {name!r} takes no parameters {sorted(params)}") from None


def register(name, forward, derivative, needs="output", init="xavier_normal", **defaults):
    """Add the activation `name` to the registry: `forward(z, *params)` and `derivative` (its
    arguments as `needs` declares: (a, da, *params), (z, da, *params) or (z, a, da, *params))
    written in the element-wise subset every backend compiles (mlp.kernels.translate: + - * /
    **, comparisons, `x if c else y`, np/math functions such as exp, tanh, maximum, calls of
    other such functions). `defaults` gives each parameter after z its default value. It then
    trains on every backend, saves by name, and loads in a process that registered it too.
    A formula outside the subset is refused here, naming the construct. Returns the Activation.

        def softsign(z): return z / (1 + np.abs(z))
        def softsign_derivative(a, da): return da * (1 - np.abs(a)) ** 2
        mlp.activations.register("my_softsign", softsign, softsign_derivative)
    """
    from mlp.kernels import translate

    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"an activation's name must be a lower-case identifier; got {name!r}")
    if name in ACTIVATIONS or name in ALIASES:
        raise ValueError(f"activation {name!r} is already registered")
    if needs not in NEEDS:
        raise ValueError(f"needs must be one of {NEEDS}; got {needs!r}")
    params = list(inspect.signature(forward).parameters)[1:]
    expected = [*derivative_inputs(needs, "z", "a"), "da"]
    taken = list(inspect.signature(derivative).parameters)
    if len(taken) != len(expected) + len(params) or taken[len(expected):] != params:
        raise ValueError(f"the derivative of {name!r} must take {len(expected)} arguments for needs={needs!r} "
                         f"(like {', '.join(expected)}), then the forward's parameters by name {params}; "
                         f"it takes ({', '.join(taken)})")
    if set(defaults) != set(params):
        raise ValueError(f"give a default for each parameter of {name!r}'s forward {params}; got {sorted(defaults)}")
    values = {p: number(defaults[p], f"{name} {p}") for p in params}
    for formula, arguments in ((forward, 1), (derivative, len(expected))):
        bindings = translate.bind(formula, ["x"] * arguments, {p: "1.0" for p in params})
        translate.to_c(formula, bindings, ["out"])  # raises UnsupportedFormula naming the construct
        translate.to_python(formula, bindings, ["out"])
    init = initializers.resolve(init)

    def make(**given):
        unknown = set(given) - set(params)
        if unknown:
            raise TypeError(f"unknown parameters {sorted(unknown)}")
        merged = {p: number(given.get(p, values[p]), f"{name} {p}") for p in params}
        return Activation(name, forward, derivative, params=merged, needs=needs, init=init)

    ACTIVATIONS[name] = make
    return make()

