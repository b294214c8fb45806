"""Does batch normalization help a deep narrow network, and do residual connections let the gradient
reach its first layers? The lectures' claims, measured.

Ten hidden layers of 64 units (sigmoid or tanh), trained with plain SGD on digits (64 features, 10
classes) and on two spirals (2 features), four ways: plain; with BatchNorm between each Dense layer
and its activation (`MLP(..., batch_norm=True)`); with residual connections (each hidden layer after
the first a block A = X + f(X W^T + b), the identity path free of the activation); with both.
Recorded: the training loss per epoch, the test accuracy at the end, and the gradient norm of every
layer's parameters at the last step of the first epoch (mlp's diagnostics). Plain SGD with momentum
0.9 (the "SGD" of the table).

    python benchmarks/deep_networks.py [--epochs 30] [--activation sigmoid] [--out benchmarks/results/deep-networks]

Writes OUT.json, OUT.md and OUT.png (loss curves; matplotlib).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import mlp

DEPTH, WIDTH = 10, 64


def network(n_in, n_out, activation, batch_norm, residual, seed):
    """The ten-hidden-layer network of one variant."""
    def hidden(n):  # one hidden layer's pre-activation and activation, with or without BatchNorm
        if batch_norm:
            return [mlp.Dense(n, WIDTH, bias=False), mlp.BatchNorm(WIDTH, activation=activation)]
        return [mlp.Dense(n, WIDTH, activation=activation)]

    layers = hidden(n_in)
    for _ in range(DEPTH - 1):  # a block adds its input to the layer's activation: A = X + f(...)
        layers += [mlp.Residual(hidden(WIDTH))] if residual else hidden(WIDTH)
    layers.append(mlp.Dense(WIDTH, n_out, activation="softmax"))
    return mlp.Sequential(layers, dtype="float32", seed=seed)


def data(name, seed):
    if name == "digits":
        X, y = mlp.datasets.digits()
    else:
        X, y = mlp.datasets.spirals(n=500, noise=0.2, seed=0)
    X_train, X_test, y_train, y_test = mlp.train_test_split(X, y, test=0.25, seed=seed)
    scaler = mlp.StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


VARIANTS = {"plain": (False, False), "batch norm": (True, False), "residual": (False, True),
            "batch norm + residual": (True, True)}


def run(name, activation, epochs, lr, seed=0):
    X_train, X_test, y_train, y_test = data(name, seed)
    n_out = len(np.unique(y_train))
    results = {}
    for variant, (batch_norm, residual) in VARIANTS.items():
        model = network(X_train.shape[1], n_out, activation, batch_norm, residual, seed)
        model.compile(loss="cross_entropy", optimizer=mlp.SGD(lr, momentum=0.9))
        started = time.perf_counter()
        history = model.fit(X_train, y_train, epochs=epochs, batch_size=32, verbose=0, diagnostics=True)
        first_epoch = history["diagnostics"][0]
        results[variant] = {
            "loss": history["loss"],
            "test_accuracy": float(np.mean(model.predict_classes(X_test) == y_test)),
            "grad_norms": [entry["grad_norm"] for entry in first_epoch],  # input side first
            "seconds": time.perf_counter() - started,
        }
        print(f"{name} {variant}: accuracy {results[variant]['test_accuracy']:.3f}, loss {history['loss'][-1]:.3f}",
              flush=True)
    return results


def markdown(table, activation, epochs):
    lines = ["| data set | variant | final training loss | test accuracy | gradient norm, first layer / last "
             "hidden layer (epoch 1) |", "|---|---|---|---|---|"]
    for name, results in table.items():
        for variant, result in results.items():
            norms = result["grad_norms"]
            lines.append(f"| {name} | {variant} | {result['loss'][-1]:.3f} | {result['test_accuracy']:.3f} | "
                         f"{norms[0]:.2e} / {norms[-2]:.2e} |")
    lines.append(f"\n{DEPTH} hidden layers of {WIDTH}, {activation}, SGD (momentum 0.9), batch 32, {epochs} epochs, "
                 "float32, seed 0.")
    return "\n".join(lines)


def plot(table, path, activation):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(6 * len(table), 4))
    for ax, (name, results) in zip(np.atleast_1d(axes), table.items()):
        for variant, result in results.items():
            ax.plot(range(1, len(result["loss"]) + 1), result["loss"], label=variant)
        ax.set_title(f"{name}: {DEPTH} x {WIDTH} {activation}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--activation", default="sigmoid")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    table = {name: run(name, args.activation, args.epochs, args.lr) for name in ("digits", "spirals")}
    text = markdown(table, args.activation, args.epochs)
    print(text)
    if args.out:
        command = (f"python benchmarks/deep_networks.py --epochs {args.epochs} --activation {args.activation} "
                   f"--lr {args.lr} --out {args.out}")
        with open(f"{args.out}.json", "w") as handle:
            json.dump({"command": command, "results": table}, handle, indent=1)
        with open(f"{args.out}.md", "w") as handle:
            handle.write(f"`{command}`\n\n{text}\n")
        plot(table, f"{args.out}.png", args.activation)


if __name__ == "__main__":
    main()
