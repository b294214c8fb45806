"""The row-wise pieces, each defined once and written out by every generator: the softmax of
a row (shifted by its maximum, so exp never overflows) and its log-sum-exp, for Numba's
steps, passes and per-layer kernels, and for the CUDA kernels (mlp.kernels.writer prints them
in either language). NumPy's versions are mlp.activations.softmax and log_softmax.
"""
from __future__ import annotations


def softmax_row(src, cols, logit, each, log=False):
    """Statements for one row of `cols` logits (`logit(j)`: the expression of logit j): its
    maximum `top`, `total` = sum_j exp(logit_j - top) (and `log_total` = log(total) with
    `log`), then per column j `each(src, j)`, where `shifted` (logit_j - top) and `a` (the
    softmax) are defined. The logits may be overwritten from `each` on: they are read first."""
    src.declare("top", logit(0))
    with src.loop("j", cols, start=1):
        src.line(f"top = {src.maximum('top', logit('j'))}")
    src.declare("total", src.zero())
    with src.loop("j", cols):
        term = f"{logit('j')} - top"
        src.line(f"total += {src.call('exp', term)}")
    if log:
        src.declare("log_total", src.call("log", "total"))
    with src.loop("j", cols):
        src.declare("shifted", f"{logit('j')} - top")
        src.declare("a", f"{src.call('exp', 'shifted')} / total")
        each(src, "j")


def softmax_rows(src, rows, cols, logit, out, row_var="i", parallel=False):
    """out(i, j) = softmax of the logits logit(i, j), row by row over `rows` (split across
    threads with `parallel`)."""
    with src.loop(row_var, rows, parallel=parallel):
        softmax_row(src, cols, lambda j: logit(row_var, j), lambda s, j: s.line(f"{out(row_var, j)} = a"))


def softmax_cross_entropy_row(src, cols, logit, target, write, loss="loss"):
    """One row of the softmax with cross-entropy from the logits: `loss` -= sum_j y_j
    log_softmax_j (exact where the softmax rounds to 0), and `write(src, j)` for each column
    with `a` the softmax (the output delta is (a - y) times the normaliser)."""
    def each(s, j):
        s.line(f"{loss} -= {target(j)} * (shifted - log_total)")
        write(s, j)
    softmax_row(src, cols, logit, each, log=True)
