"""A small writer of generated source with block-scoped indentation, for Python (Numba,
Numba-CUDA) and C++ (CUDA): the generators say what a block holds, the writer indents it and,
in C, closes it and ends each statement.

    src = Source("python", indent=1)
    with src.loop("j", "cols"):
        src.line("total += row[j]")
"""
from __future__ import annotations

import contextlib


class Source:
    def __init__(self, lang="python", indent=0, real=None):
        """`real`: the float type's name (C: "T" by default; Python: a Numba type such as
        "float32" for constants that must stay in it, else None for plain floats)."""
        if lang not in ("python", "c"):
            raise ValueError(f"lang must be 'python' or 'c'; got {lang!r}")
        self.lang, self.depth = lang, indent
        self.real = real or ("T" if lang == "c" else None)
        self.lines = []

    def line(self, text):
        """One statement (in C, ended by ';' unless it is a block's own line or a comment)."""
        if self.lang == "c" and not text.rstrip().endswith(("{", "}", ";")) and not text.lstrip().startswith("//"):
            text += ";"
        self.lines.append("    " * self.depth + text)

    def extend(self, lines):
        """Lines already written (by another writer or a translated formula), indented here."""
        for text in lines:
            self.lines.append("    " * self.depth + text)

    def declare(self, name, value):
        """A new local of the kernel's float type (C), or a plain assignment (Python)."""
        self.line(f"{self.real} {name} = {value}" if self.lang == "c" else f"{name} = {value}")

    @contextlib.contextmanager
    def block(self, head):
        """`head` (an `if`, a `for`, a `def`: without its ':' or '{') and an indented body."""
        self.lines.append("    " * self.depth + (f"{head} {{" if self.lang == "c" else f"{head}:"))
        self.depth += 1
        try:
            yield self
        finally:
            self.depth -= 1
            if self.lang == "c":
                self.lines.append("    " * self.depth + "}")

    def loop(self, var, stop, start=0, parallel=False):
        """for var in range(start, stop), in the writer's language (`parallel`: Numba's prange)."""
        if self.lang == "c":
            return self.block(f"for (long long {var} = {start}; {var} < {stop}; ++{var})")
        kind = "prange" if parallel else "range"
        return self.block(f"for {var} in {kind}({stop})" if start == 0 else f"for {var} in {kind}({start}, {stop})")

    def zero(self) -> str:
        return f"{self.real}(0)" if self.real else "0.0"

    def maximum(self, a, b):
        return f"fmax({a}, {b})" if self.lang == "c" else f"max({a}, {b})"

    def call(self, name, *args):
        """exp, log: the math function in the writer's language."""
        return f"{name}({', '.join(args)})" if self.lang == "c" else f"math.{name}({', '.join(args)})"

    def text(self) -> str:
        return "\n".join(self.lines)
