"""Scalar formulas, written once in Python, printed as CUDA C or as scalar Python.

The activations, losses and optimizer rules are plain element-wise Python functions (see
mlp.activations). NumPy runs them on arrays and Numba's CPU target compiles them as they
are. CUDA code cannot call them directly: CuPy kernels are C++, and Numba-CUDA (without a
GPU to ask for its compute capability) cannot compile a call to another Python function.
So this module reads a formula's syntax tree and prints the same arithmetic as

- `to_c`: CUDA C++ statements for CuPy's ElementwiseKernel / RawKernel (the same text also
  compiles with a host C++ compiler, which is how the tests check its arithmetic on a CPU);
- `to_python`: scalar Python statements on `math` functions, which Numba-CUDA compiles (and
  its simulator runs) inline in a generated kernel.

The accepted subset is what the formulas use: arguments, local assignments, one `return`
(of an expression or a tuple), + - * / **, unary minus, comparisons (as 0/1 masks),
`a if c else b`, numeric constants, module-level float constants, and the NumPy/math
functions in FUNCTIONS. Anything else is an error naming the construct.
"""
from __future__ import annotations

import ast
import inspect
import itertools
import math
import numbers
import textwrap

# name -> (arity, C++ template, scalar Python template). {0}, {1}: the arguments, already
# printed. The C++ helpers (mlp_*) are defined in C_PRELUDE; T is the kernel's float type.
FUNCTIONS = {
    "exp": (1, "exp({0})", "math.exp({0})"),
    "expm1": (1, "expm1({0})", "math.expm1({0})"),
    "log": (1, "log({0})", "math.log({0})"),
    "log1p": (1, "log1p({0})", "math.log1p({0})"),
    "sqrt": (1, "sqrt({0})", "math.sqrt({0})"),
    "tanh": (1, "tanh({0})", "math.tanh({0})"),
    "abs": (1, "fabs({0})", "abs({0})"),
    "sign": (1, "mlp_sign({0})", "((({0}) > 0) - (({0}) < 0))"),
    "maximum": (2, "fmax({0}, {1})", "max({0}, {1})"),
    "minimum": (2, "fmin({0}, {1})", "min({0}, {1})"),
    "logaddexp": (2, "mlp_logaddexp({0}, {1})",
                  "(max({0}, {1}) + math.log1p(math.exp(-abs(({0}) - ({1})))))"),
    "heaviside": (2, "mlp_heaviside({0}, {1})", "(1.0 if ({0}) > 0 else ({1}) if ({0}) == 0 else 0.0)"),
}

# Helpers the C text calls. `T` is a template parameter so one definition serves float and
# double; `__device__` is defined away when a host compiler builds the same text.
C_PRELUDE = r"""
#ifndef __CUDACC__
#ifndef __device__
#define __device__
#endif
#endif
template <typename T> __device__ inline T mlp_sign(T x) { return T((x > T(0)) - (x < T(0))); }
template <typename T> __device__ inline T mlp_logaddexp(T a, T b) {
    T hi = a > b ? a : b;
    return hi + log1p(exp(-fabs(a - b)));
}
template <typename T> __device__ inline T mlp_heaviside(T x, T at_zero) {
    return x > T(0) ? T(1) : (x == T(0) ? at_zero : T(0));
}
"""

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_COMPARE = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}


class UnsupportedFormula(ValueError):
    pass


def _tree(func):
    func = getattr(func, "py_func", func)  # a Numba dispatcher: its Python function
    source = textwrap.dedent(inspect.getsource(func))
    node = ast.parse(source).body[0]
    if not isinstance(node, ast.FunctionDef):
        raise UnsupportedFormula(f"{func.__qualname__} is not a plain function")
    body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return func, [a.arg for a in node.args.args], body


class _Printer:
    """Prints one function body with its arguments bound to given expressions."""

    def __init__(self, func, bindings, lang, dtype, counter=None, tag=None, replacements=None):
        self.func, self.lang, self.dtype = func, lang, dtype
        self.replacements = replacements or {}  # a formula or np function name -> the formula printed instead
        # locals are named from the translated function and a count within this translation,
        # so the same formula always prints the same text (compilers' caches hash it)
        self.counter = counter if counter is not None else itertools.count()
        self.tag = tag or func.__name__
        self.names = dict(bindings)  # Python name -> printed expression
        self.globals = func.__globals__
        self.pending = []  # statements of formulas inlined into the expression being printed

    def literal(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise UnsupportedFormula(f"constant {value!r} in {self.func.__qualname__}")
        text = repr(float(value))
        return f"{self.dtype}({text})" if self.dtype else text

    def expr(self, node):
        if isinstance(node, ast.Constant):
            return self.literal(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            value = self.globals.get(node.id)
            if isinstance(value, numbers.Real):
                return self.literal(value)
            raise UnsupportedFormula(f"name {node.id!r} in {self.func.__qualname__}")
        if isinstance(node, ast.BinOp):
            left, right = self.expr(node.left), self.expr(node.right)
            if isinstance(node.op, ast.Pow):
                return f"pow({left}, {right})" if self.lang == "c" else f"(({left}) ** ({right}))"
            if type(node.op) not in _OPS:
                raise UnsupportedFormula(f"operator {type(node.op).__name__} in {self.func.__qualname__}")
            return f"({left} {_OPS[type(node.op)]} {right})"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = "-" if isinstance(node.op, ast.USub) else "+"
            return f"({sign}{self.expr(node.operand)})"
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            test = f"({self.expr(node.left)} {_COMPARE[type(node.ops[0])]} {self.expr(node.comparators[0])})"
            if self.lang == "c":
                return f"{self.dtype}{test}"
            return f"({self.literal(1)} if {test} else {self.literal(0)})"
        if isinstance(node, ast.IfExp):
            test, yes, no = self.expr(node.test), self.expr(node.body), self.expr(node.orelse)
            return f"(({test}) ? ({yes}) : ({no}))" if self.lang == "c" else f"(({yes}) if ({test}) else ({no}))"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in ("np", "math"):
            name = node.func.attr
            if name in self.replacements:
                return self._inline(self.replacements[name], node)
            if name not in FUNCTIONS or node.keywords:
                raise UnsupportedFormula(f"function {node.func.value.id}.{name} in {self.func.__qualname__}")
            arity, c_text, py_text = FUNCTIONS[name]
            if len(node.args) != arity:
                raise UnsupportedFormula(f"{name} takes {arity} arguments in {self.func.__qualname__}")
            args = [self.expr(a) for a in node.args]
            return (c_text if self.lang == "c" else py_text).format(*args)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            callee = self.globals.get(node.func.id)
            if callable(callee) and not node.keywords:  # another formula: printed inline
                return self._inline(self.replacements.get(callee, callee), node)
        raise UnsupportedFormula(f"{ast.unparse(node)!r} in {self.func.__qualname__}")

    def _inline(self, callee, node):
        """The call `node` of the formula `callee`, printed inline (its statements pending)."""
        inner = _Printer(callee, {}, self.lang, self.dtype, self.counter, self.tag, self.replacements)
        _, params, body = _tree(callee)
        if len(params) != len(node.args):
            raise UnsupportedFormula(f"call of {callee.__name__} with {len(node.args)} arguments")
        inner.names = {p: self.expr(a) for p, a in zip(params, node.args)}
        lines, result = inner.body(body, 1)
        self.pending.extend(lines)
        return result[0]

    def body(self, statements, n_results):
        """(lines for the local assignments, printed results of the return)."""
        lines = []
        for statement in statements:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                    and isinstance(statement.targets[0], ast.Name):
                name = f"mlp_{self.tag}_{statement.targets[0].id}_{next(self.counter)}"
                value = self.expr(statement.value)
                lines.extend(self.pending)
                self.pending.clear()
                lines.append(f"{self.dtype} {name} = {value};" if self.lang == "c" else f"{name} = {value}")
                self.names[statement.targets[0].id] = name
            elif isinstance(statement, ast.Return) and statement is statements[-1]:
                values = statement.value.elts if isinstance(statement.value, ast.Tuple) else [statement.value]
                if len(values) != n_results:
                    raise UnsupportedFormula(
                        f"{self.func.__qualname__} returns {len(values)} values; {n_results} expected")
                results = [self.expr(v) for v in values]
                return lines + self.pending, results
            else:
                raise UnsupportedFormula(f"statement {ast.unparse(statement)!r} in {self.func.__qualname__}")
        raise UnsupportedFormula(f"{self.func.__qualname__} has no final return")


def _translate(func, bindings, outputs, lang, dtype, replacements=None):
    func, params, statements = _tree(func)
    missing = [p for p in params if p not in bindings]
    if missing:
        raise UnsupportedFormula(f"{func.__qualname__}: no value for {missing}")
    printer = _Printer(func, {p: bindings[p] for p in params}, lang, dtype, replacements=replacements)
    lines, results = printer.body(statements, len(outputs))
    if lang == "c":
        return "\n".join(lines + [f"{out} = {value};" for out, value in zip(outputs, results)])
    return "\n".join(lines + [f"{out} = {value}" for out, value in zip(outputs, results)])


def to_c(func, bindings: dict, outputs, dtype="T") -> str:
    """C++ statements computing `func` with its parameters bound to C expressions
    (`bindings`: parameter name -> text) and assigning its results to `outputs`."""
    return _translate(func, bindings, list(outputs), "c", dtype)


def to_python(func, bindings: dict, outputs, dtype="", replacements=None) -> str:
    """Scalar Python statements (math functions) doing the same. With `dtype` (a name such as
    "float32" that the generated module defines) constants are cast to it, so float32 code
    stays float32. `replacements`: {formula or NumPy function name: formula} printed in place
    of each call of the former (the float32 approximations of tanh and sigmoid)."""
    return _translate(func, bindings, list(outputs), "python", dtype, replacements)


def c_number(value, dtype="T") -> str:
    """A parameter value (an activation's slope, say) as a C literal of the kernel type."""
    return f"{dtype}({float(value)!r})" if math.isfinite(value) else f"{dtype}({value})"


def bind(func, positional, named=None) -> dict:
    """Bindings for `to_c`/`to_python`: `func`'s first parameters, whatever their names, to the
    expressions in `positional`, the rest by name from `named`."""
    _, params, _ = _tree(func)
    bindings = dict(zip(params, positional))
    for name in params[len(positional):]:
        if name not in (named or {}):
            raise UnsupportedFormula(f"{func.__qualname__}: no value for its parameter {name!r}")
        bindings[name] = named[name]
    return bindings
