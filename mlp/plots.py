"""Plots (matplotlib, the [plot] extra): training curves, the decision boundary of a 2-D
classifier, and throughput against batch size (mlp.bench.plot)."""
from __future__ import annotations

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'mlp[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history, path=None, title=None):
    """Loss (and accuracy when recorded) per epoch, training and validation."""
    plt = _pyplot()
    h = history.history if hasattr(history, "history") else history
    panels = [k for k in ("loss", "accuracy", "mse", "mae") if k in h]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, key in zip(axes[0], panels):
        epochs = np.arange(1, len(h[key]) + 1)
        ax.plot(epochs, h[key], label=f"training {key}")
        if f"val_{key}" in h:
            ax.plot(epochs, h[f"val_{key}"], label=f"validation {key}")
        ax.set(xlabel="epoch", ylabel=key, yscale="log" if key == "loss" else "linear")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(plt, fig, path)


def decision_boundary(model, X, y, path=None, resolution=300, title=None):
    """The predicted class over the plane, with the data on top (2-D inputs only)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"decision_boundary needs 2-D inputs (n, 2); got shape {X.shape}")
    plt = _pyplot()
    pad = 0.1 * (X.max(axis=0) - X.min(axis=0))
    (x0, y0), (x1, y1) = X.min(axis=0) - pad, X.max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    out = model.predict(np.column_stack([gx.ravel(), gy.ravel()]))
    labels = (out[:, 0] >= 0.5).astype(int) if out.shape[1] == 1 else out.argmax(axis=1)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.contourf(gx, gy, labels.reshape(gx.shape), alpha=0.3, cmap="coolwarm")
    ax.scatter(X[:, 0], X[:, 1], c=y, s=10, cmap="coolwarm", edgecolors="k", linewidths=0.3)
    ax.set(title=title or "decision boundary", xlim=(x0, x1), ylim=(y0, y1))
    return _finish(plt, fig, path)


def throughput(report, path):
    """Samples/s against batch size from an `mlp bench` report (its JSON, loaded)."""
    from mlp.bench import plot

    plot(report, path)
    return path


def _finish(plt, fig, path):
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    return fig
