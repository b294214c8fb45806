"""Training diagnostics the lectures recommend watching, per layer with parameters (Dense,
BatchNorm, Residual):
gradient norm, update-to-weight ratio (healthy near 1e-3), activation mean and std,
the share of dead ReLU units (zero for every sample of the batch) and of saturated
sigmoid/tanh outputs. `fit(diagnostics=True)` records them for the last step of each
epoch; with diagnostics off no extra work is done."""
from __future__ import annotations

import numpy as np

SATURATION = {"sigmoid": (0.01, 0.99), "tanh": (-0.99, 0.99)}
DEAD_FAMILY = {"relu", "leaky_relu"}


def _norm(backend, a):
    return float(np.sqrt(float(backend.square_norm(a.reshape(-1)))))


def layer_statistics(model, outputs, params_before=None):
    """One dict per layer with parameters from a step's layer outputs (and the weights before
    the update, for the update ratio): a Dense layer's weights W, a BatchNorm's gamma and beta
    (and the mean of its running mean and variance), a Residual block's parameters together."""
    backend = model.backend
    stats = []
    offset = 0
    for index, layer in enumerate(model.layers):
        if not layer.n_params:
            continue
        dense = layer in model.dense_layers
        values = layer.W.reshape(-1) if dense else model.params[offset:offset + layer.n_params]
        grads = layer.dW if dense else model.grads[offset:offset + layer.n_params]
        A = backend.to_numpy(outputs[index + 1])
        name = layer.activation.name
        entry = {
            "layer": index,
            "kind": type(layer).__name__,
            "activation": name,
            "grad_norm": _norm(backend, grads),
            "weight_norm": _norm(backend, values),
            "activation_mean": float(A.mean()),
            "activation_std": float(A.std()),
        }
        if params_before is not None:
            before = params_before[offset:offset + values.size]
            entry["update_ratio"] = _norm(backend, values - before) / max(_norm(backend, before), 1e-12)
        if getattr(layer, "running_mean", None) is not None:
            entry["running_mean"] = float(backend.to_numpy(layer.running_mean).mean())
            entry["running_var"] = float(backend.to_numpy(layer.running_var).mean())
        if name in DEAD_FAMILY:
            entry["dead_fraction"] = float(np.mean(np.all(A <= 0, axis=0)))
        if name in SATURATION:
            low, high = SATURATION[name]
            entry["saturated_fraction"] = float(np.mean((A < low) | (A > high)))
        stats.append(entry)
        offset += layer.n_params
    return stats


def recorded_step(model, X, Y, weights=None):
    """One training step that also returns the layer statistics of that step (`weights`: row
    weights (batch, 1) or None)."""
    before = model.params.copy()
    value, outputs = model._compute_gradients(X, Y, model.loss, model.l1, model.l2, training=True,
                                              weights=weights)
    grad_stats = layer_statistics(model, outputs)  # gradients before clipping
    model._apply_gradients()
    stats = layer_statistics(model, outputs, before)
    for entry, grads in zip(stats, grad_stats):
        entry["grad_norm"] = grads["grad_norm"]
    return value, outputs, stats


def diagnose(model, X, y, loss=None):
    """Statistics of one forward and backward pass on (X, y), without updating weights."""
    loss = model._checked_loss(loss if loss is not None else (model.loss or "mse"))
    X, Y = model._device_data(X, y, loss.name)
    _, outputs = model._compute_gradients(X, Y, loss, model.l1, model.l2, training=False)
    return layer_statistics(model, outputs)


def format_table(stats) -> str:
    keys = ["layer", "kind", "activation", "grad_norm", "update_ratio", "activation_mean",
            "activation_std", "dead_fraction", "saturated_fraction", "running_mean", "running_var"]
    keys = [k for k in keys if any(k in s for s in stats)]
    rows = [keys] + [[_fmt(s.get(k, "")) for k in keys] for s in stats]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(keys))]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows)


def _fmt(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)
