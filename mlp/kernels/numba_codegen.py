"""Source generation for Numba: a whole training step, or a whole forward pass, of one
architecture as one compiled function with no Python per layer, from its plan
(mlp.kernels.numba_plan, where the blocking and threading rules are described).

The generated code calls the single definitions in mlp.activations and mlp.losses (compiled
by Numba for scalars); only the loop structure is generated. Layer sizes and offsets into
the flat parameter buffer are constants, so every loop bound is known to the compiler.
"""
from __future__ import annotations

from mlp.kernels import numba_batchnorm as batchnorm
from mlp.kernels import numba_update as update_code
from mlp.kernels import rowwise
from mlp.kernels.formulas import HEADER, derivative_call, function_table, parameter_args, to_real
from mlp.kernels.numba_plan import (GEMM_COLUMNS, ROW_BLOCK, UNIT_BLOCK, StepPlan, folds, forward_is_parallel,
                                    parallel_units, step_arguments, transposes, workspace_layout, writes_grads)
from mlp.kernels.numba_products import product_import
from mlp.kernels.writer import Source


def _offsets(layers):
    """(start, end of W, end of b) of each layer in the flat buffer; a batch-normalised layer's
    gamma is where b would be, its beta after it."""
    offset, result = 0, []
    for layer in layers:
        w_end = offset + layer.n_in * layer.n_out
        result.append((offset, w_end, w_end + layer.n_out))
        offset += layer.n_params
    return result


def _statistics_offsets(layers):
    """{layer number: offset of its running mean in the state buffer (its variance after it)}
    for the batch-normalised layers, as the model's BatchNorm layers bind the state."""
    offset, result = 0, {}
    for number, layer in enumerate(layers, start=1):
        if layer.norm:
            result[number] = offset
            offset += 2 * layer.n_out
    return result


class _Symbol:
    """A batch size not known when the source is written: a loss's normaliser applied to a
    shape holding one prints its expression (batch_rows: n; all_elements: (n * cols))."""

    def __init__(self, text):
        self.text = text

    def __mul__(self, other):
        return _Symbol(f"({self} * {other})")

    def __rmul__(self, other):
        return self if other == 1 else _Symbol(f"({other} * {self})")

    def __str__(self):
        return self.text


def _normaliser(loss, n_out) -> str:
    """The expression of `loss`'s normaliser for n rows of n_out outputs, from its definition."""
    from mlp import losses

    return str(losses.get(loss).normaliser((_Symbol("n"), n_out)))


def _views(layers, buffer="params", prefix="", indent="    "):
    """Per-layer W and b views into a flat buffer (params, or grads with prefix 'd')."""
    lines = []
    for number, ((start, w_end, end), layer) in enumerate(zip(_offsets(layers), layers), start=1):
        lines.append(f"{indent}{prefix}W{number} = {buffer}[{start}:{w_end}].reshape(({layer.n_out}, {layer.n_in}))")
        if layer.norm:  # BatchNorm's gamma and beta
            lines.append(f"{indent}{prefix}g{number} = {buffer}[{w_end}:{end}]")
            lines.append(f"{indent}{prefix}be{number} = {buffer}[{end}:{end + layer.n_out}]")
        else:
            lines.append(f"{indent}{prefix}b{number} = {buffer}[{w_end}:{end}]")
    return lines


def _rows(split):
    """The loop over the batch of a pass that writes only its own rows: split across Numba's
    threads (prange, the scalar loss a reduction) in steps and passes whose products are."""
    return "prange(n)" if split else "range(n)"


def _unit(u):
    return "o" if u == 0 else f"o + {u}"


def _row(r):
    return "i" if r == 0 else f"i + {r}"


def _row_blocks():
    """(range expression, rows per iteration): whole blocks of the batch, then the rest."""
    return ((f"range(0, whole, {ROW_BLOCK})", ROW_BLOCK), ("range(whole, n)", 1))


def _forward_layer(number, layer, last, fused_softmax_or_sigmoid, dtype, blocked, indent="    ", parallel=False,
                   rows="range(n)", training=False):
    """A_l = f(A_{l-1} W_l^T + b_l). `blocked` (for layers of at least GEMM_COLUMNS units):
    W_l is transposed into the workspace and the product taken in register blocks; else as
    dot products over rows of W, ROW_BLOCK rows per pass over each row. The output layer
    keeps Z when the loss needs it. A float32 tanh or sigmoid (the vectorisable formulas)
    runs as its own loop after the products, which doubles tanh networks' throughput; every
    other activation is applied as each output is stored.
    `parallel`: the units of a large layer are split across cores (prange; safe for inference,
    where every unit only writes its own output). `rows`: the loop over the batch of the
    blocked passes (`_rows`). `training`: Z_l is kept beside A_l when the activation's
    derivative reads it (`Layer.keeps_input`), stored by the same separate loop. A batch-normalised
    layer (`Layer.norm`) is the product alone here, without bias: `_batch_norm_forward` follows."""
    if layer.norm:
        split_units = parallel and parallel_units(layer)
        if blocked and transposes(layer) and not split_units:
            return _blocked_forward(number, layer, None, indent, rows, bias=False)
        return _dot_forward(number, layer, lambda value: value, indent, split_units, bias=False)
    keep_z = last and (layer.activation == "softmax" or fused_softmax_or_sigmoid)
    keep_input = not keep_z and training and layer.keeps_input
    separate = not keep_z and (keep_input or (dtype == "float32" and layer.formulas().float32_forward is not None))

    inline = not (keep_z or separate)

    def activated(value):
        return f"f_{layer.activation}({value}{parameter_args(layer)})" if inline else value

    split_units = parallel and parallel_units(layer)
    if blocked and transposes(layer) and not split_units:
        lines = _blocked_forward(number, layer, activated if inline else None, indent, rows)
    else:
        lines = _dot_forward(number, layer, activated, indent, split_units)
    if keep_input:
        lines += [f"{indent}for i in {rows}:", f"{indent}    for o in range({layer.n_out}):",
                  f"{indent}        z = A{number}[i, o]", f"{indent}        Z{number}[i, o] = z",
                  f"{indent}        A{number}[i, o] = f_{layer.activation}(z{parameter_args(layer)})"]
    elif separate:
        lines += [f"{indent}for i in {rows}:", f"{indent}    for o in range({layer.n_out}):",
                  f"{indent}        A{number}[i, o] = f_{layer.activation}(A{number}[i, o]{parameter_args(layer)})"]
    return lines


def _dot_forward(number, layer, activated, indent, split, bias=True):
    """A_l as dot products over rows of W, ROW_BLOCK rows of the batch per pass over a row
    (`bias`: plus b_l)."""
    src = "X" if number == 1 else f"A{number - 1}"
    lines = []
    for rows_range, rows in _row_blocks():
        lines += [f"{indent}for i in {rows_range}:",
                  f"{indent}    for o in {'prange' if split else 'range'}({layer.n_out}):",
                  f"{indent}        bias = {f'b{number}[o]' if bias else 'zero'}"]
        lines += [f"{indent}        acc{r} = bias" for r in range(rows)]  # not s1, s2: optimizer state
        lines += [f"{indent}        for k in range({layer.n_in}):", f"{indent}            w = W{number}[o, k]"]
        lines += [f"{indent}            acc{r} += {src}[{_row(r)}, k] * w" for r in range(rows)]
        lines += [f"{indent}        A{number}[{_row(r)}, o] = {activated(f'acc{r}')}" for r in range(rows)]
    return lines


def _blocked_forward(number, layer, activated, indent, rows, bias=True):
    """W_l^T into the workspace (contiguous stores), then A_l = A_{l-1} W_l^T + b_l (`bias`,
    else without) by the shared register-blocked `product`, then `activated` (value -> source)
    over A_l unless None. `rows`: the loop over the batch (`_rows`)."""
    src = "X" if number == 1 else f"A{number - 1}"
    lines = [f"{indent}for k in range({layer.n_in}):", f"{indent}    for o in range({layer.n_out}):",
             f"{indent}        WT{number}[k, o] = W{number}[o, k]",
             f"{indent}for i in {rows}:", f"{indent}    for o in range({layer.n_out}):",
             f"{indent}        A{number}[i, o] = {f'b{number}[o]' if bias else 'zero'}",
             f"{indent}_product(one, {src}, WT{number}, A{number})"]
    if activated is not None:
        lines += [f"{indent}for i in {rows}:", f"{indent}    for o in range({layer.n_out}):",
                  f"{indent}        A{number}[i, o] = {activated(f'A{number}[i, o]')}"]
    return lines


def _batch_norm_forward(plan, number, statistics):
    """Layer `number`'s BatchNorm in training (mlp.batchnorm), on its product in A_l: the batch's
    column statistics, the running statistics at `statistics` in `stats` updated as torch does,
    then A_l = f(gamma X_hat + beta) in place, X_hat kept in H_l (Z_l where f' reads it). The
    passes are mlp.kernels.numba_batchnorm's, the per-layer path's."""
    layer = plan.layers[number - 1]
    m, (momentum, eps) = layer.n_out, layer.norm
    src = Source("python", 1)
    for name in (f"mean{number}", f"var{number}", f"inv_std{number}"):
        src.line(f"{name} = np.empty({m}, dtype=params.dtype)")
    src.line(f"momentum{number} = {momentum!r}")
    src.line(f"unbiased{number} = momentum{number} * n / (n - 1)")  # running variance: unbiased, as torch's
    src.line(f"eps{number} = {eps!r}")
    src.extend(to_real([f"momentum{number}", f"unbiased{number}", f"eps{number}"], plan.dtype, indent=""))
    batchnorm.statistics_pass(src, f"A{number}", f"mean{number}", f"var{number}", "n", m)
    with src.loop("j", m):
        src.line(f"inv_std{number}[j] = one / math.sqrt(var{number}[j] + eps{number})")
        for name, offset, weight in (("mean", statistics, f"momentum{number}"),
                                     ("var", statistics + m, f"unbiased{number}")):
            src.line(f"stats[{offset} + j] = stats[{offset} + j] * (one - momentum{number}) "
                     f"+ {weight} * {name}{number}[j]")
    batchnorm.forward_pass(src, layer, f"A{number}", f"mean{number}", f"inv_std{number}", f"g{number}",
                           f"be{number}", f"H{number}", f"Z{number}" if layer.keeps_input else None, f"A{number}",
                           "n", m)
    return src.lines


def _batch_norm_backward(plan, number):
    """Layer `number`'s BatchNorm backward pass, D_l from dL/dA_l to dL/d(product) in place: dZ
    and its column sums, the input delta (mlp.kernels.numba_batchnorm's passes), then gamma's and
    beta's gradients (the sums) into `grads`, or their update (after the input delta, which
    reads gamma)."""
    layer = plan.layers[number - 1]
    m, (_, w_end, end) = layer.n_out, _offsets(plan.layers)[number - 1]
    src = Source("python", 1)
    D = f"D{number}"
    for name in (f"sum_dZ{number}", f"sum_dZ_X_hat{number}"):
        src.line(f"{name} = np.empty({m}, dtype=params.dtype)")
    batchnorm.sums_pass(src, layer, f"Z{number}", f"A{number}", D, f"H{number}", D, f"sum_dZ{number}",
                        f"sum_dZ_X_hat{number}", "n", m)
    batchnorm.input_delta_pass(src, D, f"H{number}", f"g{number}", f"inv_std{number}", f"sum_dZ{number}",
                               f"sum_dZ_X_hat{number}", "rows", D, "n", m)
    with src.loop("j", m):
        if writes_grads(plan):
            src.line(f"dg{number}[j] = sum_dZ_X_hat{number}[j]")
            src.line(f"dbe{number}[j] = sum_dZ{number}[j]")
        else:
            src.extend(_update(plan, f"g{number}[j]", f"sum_dZ_X_hat{number}[j]", f"{w_end} + j", ""))
            src.extend(_update(plan, f"be{number}[j]", f"sum_dZ{number}[j]", f"{end} + j", ""))
    return src.lines


def _softmax_rows(number, n_out, split, indent=1):
    """A_l = softmax(A_l) row by row, in place (mlp.kernels.rowwise)."""
    src = Source("python", indent)
    rowwise.softmax_rows(src, "n", n_out, lambda i, j: f"A{number}[{i}, {j}]", lambda i, j: f"A{number}[{i}, {j}]",
                         parallel=split)
    return src.lines


def forward_source(layers, dtype="float64", blocked=False, split=False) -> str:
    """`forward(X, params, work) -> AL`: inference, no Python per layer (`work`: see
    `workspace`; `blocked` and `split` as in StepPlan)."""
    L = len(layers)
    parallel = any(parallel_units(layer) for layer in layers)
    lines = [HEADER, function_table(layers, None, dtype), product_import(split), "",
             "@_jit_parallel" if forward_is_parallel(layers, split) else "@_jit",
             "def forward(X, params, work):", "    n = X.shape[0]",
             f"    whole = n - n % {ROW_BLOCK}", "    one = 1.0", *to_real(["one"], dtype)]
    lines += workspace_layout(layers, False, blocked).views() + _views(layers)
    for number, layer in enumerate(layers, start=1):
        lines += _forward_layer(number, layer, number == L, False, dtype, blocked, parallel=parallel, rows=_rows(split))
        if layer.activation == "softmax":
            lines += _softmax_rows(number, layer.n_out, split)
    lines.append(f"    return A{L}")
    return "\n".join(lines) + "\n"


def step_source(plan: StepPlan) -> str:
    """`step(X, Y, params, [grads], *state, work, *hyperparameters, [t], [l1], [l2], [clip])
    -> loss`: one whole training step, with the arguments its plan uses (`step_arguments`).
    `work` holds A_l, then D_l = dL/dZ_l (see `workspace`); the optimizer's state, scalars and
    update are those its descriptor declares (mlp.kernels.numba_update). A float32 step takes
    its scalars to float32 first (`to_real`), as NumPy's float32 update stays float32."""
    layers, L = plan.layers, len(plan.layers)
    out = layers[-1]
    norm = _normaliser(plan.loss, out.n_out)
    arguments = step_arguments(plan)
    split = plan.split
    rows = _rows(split)
    lines = [HEADER, function_table(layers, plan.loss, plan.dtype, plan.l1 or plan.l2, plan.clip),
             update_code.rule_table(plan.optimizer, plan.dtype),
             product_import(split), "", "@_jit_parallel" if split else "@_jit",
             f"def step({', '.join(arguments)}):",
             "    n = X.shape[0]",
             f"    whole = n - n % {ROW_BLOCK}",
             f"    inv_norm = 1.0 / ({norm})", "    one = 1.0"]
    normalised = any(layer.norm for layer in layers)  # BatchNorm's products start at zero; its delta takes rows
    lines += ["    zero = 0.0", "    rows = 1.0 * n"] * normalised
    lines += update_code.prepare(plan.optimizer, plan.dtype)
    # a penalty formula takes both rates: the one not in use is a zero of the float type
    unused = [name for name, used in (("l1", plan.l1), ("l2", plan.l2)) if not used]
    lines += [f"    {name} = 0.0" for name in unused if plan.l1 or plan.l2]
    lines += to_real(["inv_norm", "one"] + ["zero", "rows"] * normalised + ["l1", "l2"] * (plan.l1 or plan.l2)
                     + ["clip"] * plan.clip, plan.dtype)
    lines += workspace_layout(layers, True, plan.blocked).views()
    lines += _views(layers)
    if writes_grads(plan):
        lines += _views(layers, buffer="grads", prefix="d")
    # forward
    statistics = _statistics_offsets(layers)
    for number, layer in enumerate(layers, start=1):
        lines += _forward_layer(number, layer, number == L, plan.fused, plan.dtype, plan.blocked, rows=rows,
                                training=True)
        if layer.norm:
            lines += _batch_norm_forward(plan, number, statistics[number])
    # loss and output delta
    lines.append("    loss = 0.0")
    lines += _loss_and_output_delta(plan, L, out, split)
    lines.append("    loss *= inv_norm")
    lines += ["    if not math.isfinite(loss):  # a batch whose loss overflows takes no step (the caller says so)",
              "        return loss"]
    lines += _backward_products(plan) if plan.blocked else _backward_rows(plan)
    lines.append("    return loss")
    return "\n".join(lines) + "\n"


def _loss_and_output_delta(plan, L, out, split) -> list:
    """The loss summed over the batch into `loss` and the output delta D_L, row by row. A
    weighted plan scales row i's terms and delta by its weight R[i, 0] (mlp.losses)."""
    src = Source("python", 1)
    weight = "row_weight * " if plan.weighted else ""
    scale = "row_scale" if plan.weighted else "inv_norm"
    with src.loop("i", "n", parallel=split):
        if plan.weighted:
            src.declare("row_weight", "R[i, 0]")
            src.declare("row_scale", "inv_norm * row_weight")
        if plan.fused and out.activation == "softmax":  # from the logits in A_L
            src.declare("row_loss", "0.0")
            rowwise.softmax_cross_entropy_row(
                src, out.n_out, lambda j: f"A{L}[i, {j}]", lambda j: f"Y[i, {j}]",
                lambda s, j: (s.line(f"A{L}[i, {j}] = a"), s.line(f"D{L}[i, {j}] = (a - Y[i, {j}]) * {scale}")),
                loss="row_loss")
            src.line(f"loss += {weight}row_loss")
        elif plan.fused:  # sigmoid + binary cross-entropy, from the logits
            with src.loop("j", out.n_out):
                src.declare("z", f"A{L}[i, j]")
                src.line(f"loss += {weight}bce_logit_term(z, Y[i, j])")
                src.declare("a", "f_sigmoid(z)")
                src.line(f"A{L}[i, j] = a")
                src.line(f"D{L}[i, j] = (a - Y[i, j]) * {scale}")
        elif out.activation == "softmax":  # softmax under another loss: the Jacobian row by row
            rowwise.softmax_row(src, out.n_out, lambda j: f"A{L}[i, {j}]", lambda s, j: s.line(f"A{L}[i, {j}] = a"))
            src.declare("inner", "0.0")
            with src.loop("j", out.n_out):
                src.line(f"loss += {weight}loss_term(A{L}[i, j], Y[i, j])")
                src.declare("da", f"loss_gradient(A{L}[i, j], Y[i, j]) * {scale}")
                src.line(f"D{L}[i, j] = da")
                src.line(f"inner += da * A{L}[i, j]")
            with src.loop("j", out.n_out):
                src.line(f"D{L}[i, j] = A{L}[i, j] * (D{L}[i, j] - inner)")
        else:
            with src.loop("j", out.n_out):
                src.declare("a", f"A{L}[i, j]")
                src.line(f"loss += {weight}loss_term(a, Y[i, j])")
                gradient = f"loss_gradient(a, Y[i, j]) * {scale}"
                src.line(f"D{L}[i, j] = {derivative_call(out, f'Z{L}[i, j]', 'a', gradient)}")
    return src.lines


def _update(plan, target, grad, index, indent):
    """One optimizer update of `target` (a parameter element) by gradient `grad`, with its
    optimizer state at flat position `index` (mlp.kernels.numba_update)."""
    return update_code.update(plan.optimizer, target, grad, index, indent)


def _input_delta_activation(plan, number):
    """D_{l-1} from dL/dA_{l-1} to dL/dZ_{l-1} in place, unless layer l-1 is batch-normalised
    (its BatchNorm backward pass applies f' with its column sums)."""
    prev, layer = plan.layers[number - 2], plan.layers[number - 1]
    if prev.norm:
        return []
    return [f"    for i in {_rows(plan.split)}:", f"        for k in range({layer.n_in}):",
            f"            D{number - 1}[i, k] = "
            f"{derivative_call(prev, f'Z{number - 1}[i, k]', f'A{number - 1}[i, k]', f'D{number - 1}[i, k]')}"]


def _penalty(plan, gradient, weight, indent):
    """A weight's penalty added to the loss and to its gradient (mlp.regularization)."""
    if not (plan.l1 or plan.l2):
        return []
    return [f"{indent}loss += penalty({weight}, l1, l2)", f"{indent}{gradient} += penalty_gradient({weight}, l1, l2)"]


def _input_delta(number, layer, units, indent):
    """D_{l-1}[i, :] += sum over `units` rows of W from o on, weighted by D_l[i, o + u]."""
    lines = [f"{indent}for i in range(n):"]
    lines += [f"{indent}    e{u} = D{number}[i, {_unit(u)}]" for u in range(units)]
    terms = " + ".join(f"e{u} * W{number}[{_unit(u)}, k]" for u in range(units))
    return lines + [f"{indent}    for k in range({layer.n_in}):", f"{indent}        D{number - 1}[i, k] += {terms}"]


def _unit_gradient(plan, number, unit, indent):
    """Unit `unit`'s weight-gradient row (into `row`, or straight into dW when clipping
    defers the update) and bias gradient `gb`, ROW_BLOCK rows of the batch per pass,
    penalties added; then, without clipping, its update."""
    layer = plan.layers[number - 1]
    src = "X" if number == 1 else f"A{number - 1}"
    start, w_end, _ = _offsets(plan.layers)[number - 1]
    columns = f"range({layer.n_in})"
    row = f"dW{number}[{unit}, k]" if plan.clip else "row[k]"
    bias = not layer.norm  # (a batch-normalised layer's product has none)
    lines = [f"{indent}for k in {columns}:", f"{indent}    {row} = 0.0"] + [f"{indent}gb = 0.0"] * bias
    for rows_range, rows in _row_blocks():
        lines += [f"{indent}for i in {rows_range}:"]
        lines += [f"{indent}    d{r} = D{number}[{_row(r)}, {unit}]" for r in range(rows)]
        lines += [f"{indent}    gb += " + " + ".join(f"d{r}" for r in range(rows))] * bias
        lines += [f"{indent}    for k in {columns}:",
                  f"{indent}        {row} += " + " + ".join(f"d{r} * {src}[{_row(r)}, k]" for r in range(rows))]
    penalty = _penalty(plan, row, f"W{number}[{unit}, k]", f"{indent}    ")
    if plan.clip:
        if penalty:
            lines += [f"{indent}for k in {columns}:"] + penalty
        return lines + [f"{indent}db{number}[{unit}] = gb"] * bias
    lines += [f"{indent}for k in {columns}:"] + penalty
    lines += _update(plan, f"W{number}[{unit}, k]", row, f"{start} + {unit} * {layer.n_in} + k", f"{indent}    ")
    return lines + (_update(plan, f"b{number}[{unit}]", "gb", f"{w_end} + {unit}", indent) if bias else [])


def _backward_rows(plan):
    """Unblocked steps: the delta recursion, last layer first, UNIT_BLOCK units at a time:
    their share of the input delta, then each one's gradient row. Without clipping, each row
    of W is updated as soon as its gradient is known (after it has given its share of the
    input delta): a step reads and writes every weight about three times in all, the least a
    training step can, and `grads` is not written. With clipping the update needs the global
    gradient norm first: gradients go to `grads`, then one scaled update pass over the flat
    buffer."""
    layers, lines = plan.layers, []
    if not plan.clip:
        lines.append(f"    row = np.empty({max(layer.n_in for layer in layers)}, dtype=params.dtype)")
    for number in range(len(layers), 0, -1):
        layer = layers[number - 1]
        whole = layer.n_out - layer.n_out % UNIT_BLOCK
        if layer.norm:
            lines += _batch_norm_backward(plan, number)
        if number > 1:
            lines += ["    for i in range(n):", f"        for k in range({layer.n_in}):",
                      f"            D{number - 1}[i, k] = 0.0"]
        if whole:
            lines.append(f"    for o in range(0, {whole}, {UNIT_BLOCK}):")
            if number > 1:
                lines += _input_delta(number, layer, UNIT_BLOCK, "        ")
            lines.append(f"        for u in range(o, o + {UNIT_BLOCK}):")
            lines += _unit_gradient(plan, number, "u", "            ")
        if whole < layer.n_out:
            lines.append(f"    for o in range({whole}, {layer.n_out}):")
            if number > 1:
                lines += _input_delta(number, layer, 1, "        ")
            lines += _unit_gradient(plan, number, "o", "        ")
        if number > 1:
            lines += _input_delta_activation(plan, number)
    return lines + _update_from_grads(plan) if plan.clip else lines


def _bias_gradient(plan, number):
    """Layer `number`'s bias gradient (column sums of its delta, into `row`), then its
    plain SGD update (or, when the update is not folded, into db)."""
    layer = plan.layers[number - 1]
    _, w_end, _ = _offsets(plan.layers)[number - 1]
    lines = [f"    for o in range({layer.n_out}):", "        row[o] = 0.0", "    for i in range(n):",
             f"        for o in range({layer.n_out}):", f"            row[o] += D{number}[i, o]",
             f"    for o in range({layer.n_out}):"]
    if not folds(plan):
        return lines + [f"        db{number}[o] = row[o]"]
    return lines + _update(plan, f"b{number}[o]", "row[o]", f"{w_end} + o", "        ")


def _layer_backward(plan, number):
    """Layer `number`'s input delta D_{l-1} = D_l W_l (before W_l changes), then its weight
    gradient D_l^T A_{l-1}: folded into W_l with plain SGD, else into dW (`grads`), both by
    the shared register-blocked `product`. Its register blocks run along the layer's inputs
    when it has at least GEMM_COLUMNS of them (or more inputs than units), else along its
    units (a first layer of few inputs): A_{l-1}^T D_l into a C-ordered scratch, added into
    the target transposed. The product then takes the layouts of every other call: writing
    into the transposed target itself compiled a third layout of it (2 s cold per float type)."""
    layer = plan.layers[number - 1]
    src = "X" if number == 1 else f"A{number - 1}"
    lines = []
    if number > 1:
        lines += [f"    D{number - 1}[:] = 0.0", f"    _product(one, D{number}, W{number}, D{number - 1})"]
    target, alpha = (f"W{number}", "-h_lr") if folds(plan) else (f"dW{number}", "one")
    if not folds(plan):
        lines.append(f"    {target}[:] = 0.0")
    if layer.n_in >= GEMM_COLUMNS or layer.n_in >= layer.n_out:
        return lines + [f"    _product({alpha}, D{number}.T, {src}, {target})"]
    scratch = f"G{number}"  # (n_in, n_out)
    return lines + [f"    {scratch} = np.zeros(({layer.n_in}, {layer.n_out}), dtype=params.dtype)",
                    f"    _product(one, {src}.T, D{number}, {scratch})",
                    f"    for o in range({layer.n_out}):", f"        for k in range({layer.n_in}):",
                    f"            {target}[o, k] += {alpha} * {scratch}[k, o]"]


def _flat_update(plan):
    """The update from `grads` when it is not folded into the products: penalties added to
    each layer's weights (not its biases), then `_update_from_grads`."""
    lines = []
    if plan.l1 or plan.l2:
        for start, w_end, _ in _offsets(plan.layers):
            lines += [f"    for j in range({start}, {w_end}):"] + _penalty(plan, "grads[j]", "params[j]", "        ")
    return lines + _update_from_grads(plan)


def _update_from_grads(plan):
    """One update pass over the flat buffer from `grads`, clipped first (when the plan clips)
    to the global norm, the clipped gradient kept in `grads`."""
    if not plan.clip:
        return ["    for j in range(params.size):"] + _update(plan, "params[j]", "grads[j]", "j", "        ")
    lines = ["    square = 0.0", "    for j in range(grads.size):", "        square += grads[j] * grads[j]",
             "    scale = clip_scale(math.sqrt(square), clip)", "    for j in range(params.size):",
             "        g = grads[j] * scale", "        grads[j] = g"]
    return lines + _update(plan, "params[j]", "g", "j", "        ")


def _backward_products(plan):
    """Blocked steps (`blocks`): the delta recursion, last layer first, by register-blocked
    products; then, unless plain SGD was folded into the weight-gradient products, the
    update from `grads`."""
    layers, lines = plan.layers, []
    lines.append(f"    row = np.empty({max(layer.n_out for layer in layers)}, dtype=params.dtype)")  # bias sums
    for number in range(len(layers), 0, -1):
        lines += _batch_norm_backward(plan, number) if layers[number - 1].norm else _bias_gradient(plan, number)
        lines += _layer_backward(plan, number)
        if number > 1:
            lines += _input_delta_activation(plan, number)
    return lines if folds(plan) else lines + _flat_update(plan)
