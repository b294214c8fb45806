"""mlp's defaults against scikit-learn's and PyTorch's MLPs on scikit-learn's bundled data sets.

Each library trains the same network the way its users would write it, with its own default
initialisation: the same split (75/25, stratified for classes, per seed), inputs standardised
on the training part (and the diabetes target), (64, 64) ReLU, Adam at lr 1e-3, batch 32, the
same number of epochs, no penalty (scikit-learn's alpha=0, its tol-based stop off). The score is
the mean test accuracy (R^2 for diabetes) over the seeds. "mlp, He-normal" is mlp with init="he_normal"
(the lectures' initialiser for ReLU, zero biases), the default before this comparison.

    python benchmarks/defaults_vs_peers.py [--seeds 10] [--out benchmarks/results/defaults-vs-peers]

scikit-learn and torch (CPU) are needed; nothing is downloaded (the data sets ship with scikit-learn).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np

import mlp

EPOCHS = {"iris": 200, "wine": 100, "breast_cancer": 50, "digits": 20, "diabetes": 20, "moons": 50, "circles": 50}
HIDDEN, LR, BATCH = (64, 64), 1e-3, 32


def load(name):
    """(X, y, is_classification) of a bundled data set."""
    from sklearn import datasets

    if name == "moons":
        return (*datasets.make_moons(500, noise=0.25, random_state=0), True)
    if name == "circles":
        return (*datasets.make_circles(500, noise=0.1, factor=0.5, random_state=0), True)
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return X, y, name != "diabetes"


def split(X, y, classes, seed):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed,
                                                        stratify=y if classes else None)
    scaler = StandardScaler().fit(X_train)
    if not classes:
        mean, std = y_train.mean(), y_train.std()
        y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def score(classes, y_test, outputs):
    from sklearn.metrics import accuracy_score, r2_score

    return accuracy_score(y_test, outputs.argmax(axis=1)) if classes else r2_score(y_test, outputs[:, 0])


def train_mlp(X, y, X_test, classes, epochs, seed, init=None):
    n_out = len(np.unique(y)) if classes else 1
    model = mlp.MLP([X.shape[1], *HIDDEN, n_out], activation="relu", output="softmax" if classes else "identity",
                    init=init, backend="numpy", seed=seed)
    model.compile(loss="cross_entropy" if classes else "mse", optimizer=mlp.Adam(LR))
    model.fit(X, y, epochs=epochs, batch_size=BATCH, verbose=0)
    return model.predict(X_test)


def train_sklearn(X, y, X_test, classes, epochs, seed):
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    estimator = (MLPClassifier if classes else MLPRegressor)(
        hidden_layer_sizes=HIDDEN, activation="relu", solver="adam", alpha=0.0, batch_size=BATCH,
        learning_rate_init=LR, max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the epochs are fixed on purpose
        estimator.fit(X, y)
    return estimator.predict_proba(X_test) if classes else estimator.predict(X_test)[:, None]


def train_torch(X, y, X_test, classes, epochs, seed):
    import torch

    torch.manual_seed(seed)
    n_out = len(np.unique(y)) if classes else 1
    sizes = [X.shape[1], *HIDDEN]
    layers = []
    for n_in, width in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(n_in, width), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], n_out))
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    inputs = torch.tensor(X, dtype=torch.float32)
    targets = torch.tensor(y, dtype=torch.long) if classes else torch.tensor(y, dtype=torch.float32)[:, None]
    loss_fn = torch.nn.CrossEntropyLoss() if classes else torch.nn.MSELoss()
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        permutation = torch.randperm(len(inputs), generator=order)
        for start in range(0, len(inputs), BATCH):
            rows = permutation[start:start + BATCH]
            optimizer.zero_grad()
            loss_fn(net(inputs[rows]), targets[rows]).backward()
            optimizer.step()
    with torch.no_grad():
        return net(torch.tensor(X_test, dtype=torch.float32)).numpy()


TRAINERS = {
    "mlp (defaults)": train_mlp,
    "mlp, He-normal": lambda *args: train_mlp(*args, init="he_normal"),
    "scikit-learn": train_sklearn,
    "PyTorch": train_torch,
}


def compare(seeds):
    import torch

    torch.set_num_threads(1)
    table = {}
    for name, epochs in EPOCHS.items():
        X, y, classes = load(name)
        table[name] = {}
        for trainer, train in TRAINERS.items():
            scores = []
            for seed in range(seeds):
                X_train, X_test, y_train, y_test = split(X, y, classes, seed)
                scores.append(score(classes, y_test, train(X_train, y_train, X_test, classes, epochs, seed)))
            table[name][trainer] = {"mean": float(np.mean(scores)), "std": float(np.std(scores))}
        print(name, {k: round(v["mean"], 3) for k, v in table[name].items()}, flush=True)
    return table


def markdown(table, seeds):
    trainers = list(TRAINERS)
    lines = [f"| data set (epochs) | {' | '.join(trainers)} |", "|---" * (len(trainers) + 1) + "|"]
    for name, row in table.items():
        metric = "R^2" if name == "diabetes" else "accuracy"
        cells = [f"{row[t]['mean']:.3f} ± {row[t]['std']:.3f}" for t in trainers]
        lines.append(f"| {name} {metric} ({EPOCHS[name]}) | {' | '.join(cells)} |")
    lines.append(f"\nMean ± standard deviation of the test score over {seeds} seeds (split and initialisation).")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    import sklearn
    import torch

    started = time.perf_counter()
    table = compare(args.seeds)
    text = markdown(table, args.seeds)
    print(text)
    if args.out:
        meta = {"command": "python benchmarks/defaults_vs_peers.py " + f"--seeds {args.seeds} --out {args.out}",
                "seconds": round(time.perf_counter() - started, 1), "python": platform.python_version(),
                "mlp": mlp.__version__, "scikit-learn": sklearn.__version__, "torch": torch.__version__,
                "numpy": np.__version__}
        with open(f"{args.out}.json", "w") as handle:
            json.dump({"meta": meta, "epochs": EPOCHS, "scores": table}, handle, indent=1)
        with open(f"{args.out}.md", "w") as handle:
            handle.write(f"`{meta['command']}`\n\n{text}\n")


if __name__ == "__main__":
    main()
