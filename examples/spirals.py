"""Two spirals with a decision-boundary plot (needs matplotlib for the picture)."""
import sys

import mlp

X, y = mlp.datasets.spirals(n=200, noise=0.1, seed=0)
scaler = mlp.StandardScaler().fit(X)
model = mlp.MLP([2, 64, 64, 2], activation="tanh", output="softmax", seed=0)
model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
history = model.fit(scaler.transform(X), y, epochs=150, batch_size=32, verbose=0)
print("training accuracy:", history["accuracy"][-1])

try:
    from mlp import plots
except ImportError:
    sys.exit(0)
out = sys.argv[1] if len(sys.argv) > 1 else "spirals.png"


class Scaled:  # predict on raw coordinates, so the plot shows the data as it is
    def predict(self, points):
        return model.predict(scaler.transform(points))


try:
    plots.decision_boundary(Scaled(), X, y, path=out, title="two spirals, 2-64-64-2 tanh")
    print("wrote", out)
except ImportError as error:
    print(error)
