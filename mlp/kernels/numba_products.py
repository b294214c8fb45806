"""The one register-blocked product every generated Numba step and forward pass calls
(`product`, and `product_parallel` split across threads), compiled once per float type and
array layout, not once per architecture."""
from __future__ import annotations

from mlp.kernels.formulas import HEADER
from mlp.kernels.numba_plan import DEPTH_CHUNK, GEMM_COLUMNS, GEMM_ROWS, SPLIT_PARTS


def product_import(split=False):
    """The line that binds the shared register-blocked `product` (`split`: split across
    threads) in a generated module. It names the product's source by its hash: Numba's disk
    cache of a generated step refers to the product's module by that name, and would
    otherwise keep calling an old product after product_source changed (the step's own
    source unchanged)."""
    import hashlib

    digest = hashlib.sha1(product_source().encode()).hexdigest()[:16]
    name = "product_parallel" if split else "product"
    return f"_product = _cpu.products().{name}  # product source {digest}\n"


def _block(height, width, indent):
    """A register block of `product`: C[p:p + height, q:q + width] += alpha L R there."""
    pairs = [(r, v) for r in range(height) for v in range(width)]
    lines = [f"{indent}acc{r}_{v} = zero" for r, v in pairs]
    lines += [f"{indent}for kk in range(depth):"]
    lines += [f"{indent}    lhs{r} = L[p + {r}, kk]" for r in range(height)]
    lines += [f"{indent}    rhs{v} = R[kk, q + {v}]" for v in range(width)]
    lines += [f"{indent}    acc{r}_{v} += lhs{r} * rhs{v}" for r, v in pairs]
    return lines + [f"{indent}C[p + {r}, q + {v}] += alpha * acc{r}_{v}" for r, v in pairs]


def product_source() -> str:
    """`product(alpha, L, R, C)`: C += alpha L R, L: (m, depth), R: (depth, n) with contiguous
    rows, C: (m, n). One compiled kernel (per float type and layout) that every generated step
    calls for its products: the forward pass (C holding the bias), the input delta and the
    weight gradient (C zeroed), or plain SGD folded into the weight gradient (alpha = -lr,
    C = W).

    Register blocks of GEMM_ROWS x GEMM_COLUMNS accumulators, unrolled as scalars that LLVM's
    SLP vectoriser packs into vectors: per kk, GEMM_ROWS broadcasts, two vector loads and
    2 GEMM_ROWS FMAs, and the accumulators never leave registers (64x64 products over 32-512
    rows: 17-23 GMAC/s on one core, against about 11 for the loops of unblocked steps, which
    keep a row of C in memory). Unrolled once here, not per architecture: Numba types and
    lowers each generated line, and a step with its products unrolled in took 14-39 s to
    compile. The blocks are inlined, not block functions: a function's row and column
    arguments could be negative for all Numba knows, and its index wraparound turned the loads
    into gathers (4-5 GMAC/s)."""
    lines = [HEADER, "# Without reassoc: allowed to reorder a sum, LLVM's loop vectoriser takes the blocks'",
             "# loops over kk (the reduction axis) and the SLP vectoriser finds nothing left to pack.",
             '_jit_blocks = njit(cache=True, fastmath={"contract"}, error_model="numpy", nogil=True)', "",
             "@_jit_blocks", "def product(alpha, L, R, C):",
             "    m, depth = L.shape", "    n = R.shape[1]",
             "    zero = C.dtype.type(0)  # not 0.0, a float64 that would make float32 sums float64",
             f"    rows = m - m % {GEMM_ROWS}", f"    columns = n - n % {GEMM_COLUMNS}",
             f"    for q in range(0, columns, {GEMM_COLUMNS}):",
             f"        for p in range(0, rows, {GEMM_ROWS}):"]
    lines += _block(GEMM_ROWS, GEMM_COLUMNS, "            ")
    lines += ["        for p in range(rows, m):"] + _block(1, GEMM_COLUMNS, "            ")
    lines += ["    for p in range(m):  # the last columns, fewer than a block",
              "        for q in range(columns, n):", "            acc = zero", "            for kk in range(depth):",
              "                acc += L[p, kk] * R[kk, q]",
              "            C[p, q] += alpha * acc"]
    return "\n".join(lines + _parallel_product()) + "\n"


def _parallel_product():
    """`product_parallel(alpha, L, R, C)`: `product` with the rows of C split into up to
    SPLIT_PARTS parts of whole register blocks, which prange deals out to Numba's threads
    (serial where C has rows for one block only). Each part writes its own rows of C: no
    partial sums to add. Slices of a transposed factor are typed as arrays of any layout;
    their loads are the blocks' broadcasts, and a half product over them measured as fast
    as over the whole (64x64 weight gradient over 2048 rows: 219 against 455 us). A fixed
    count of parts, not get_num_threads(): a function that calls it cannot be cached.
    A long depth (a weight gradient's: the batch) is taken DEPTH_CHUNK rows at a time, so
    that the rows of R a chunk reads stay in cache across C's register blocks (64x64 weight
    gradient over 8192 rows: 723 against 1142 us; over 2048: 213 against 242)."""
    def call(rows, indent):  # rows: C's rows of this call, a slice expression
        whole = "" if rows == ":" else f"[{rows}]"
        return [f"{indent}if depth <= {4 * DEPTH_CHUNK}:", f"{indent}    product(alpha, L{whole}, R, C{whole})",
                f"{indent}else:", f"{indent}    for k in range(0, depth, {DEPTH_CHUNK}):",
                f"{indent}        product(alpha, L[{rows}, k:k + {DEPTH_CHUNK}], R[k:k + {DEPTH_CHUNK}], C{whole})"]

    lines = ["", "", '_jit_split = njit(cache=True, error_model="numpy", nogil=True, parallel=True)', "",
             "@_jit_split", "def product_parallel(alpha, L, R, C):", "    m, depth = L.shape",
             f"    parts = min({SPLIT_PARTS}, m // {GEMM_ROWS})", "    if parts <= 1:"]
    lines += call(":", "        ") + ["        return",
                         f"    size = -(-m // (parts * {GEMM_ROWS})) * {GEMM_ROWS}  # rows per part, whole blocks",
                         "    for part in prange(parts):", "        start = part * size",
                         "        stop = min(m, start + size)", "        if start < stop:"]
    return lines + call("start:stop", "            ")
