"""The same code on another backend: run it as `MLP_BACKEND=numba python examples/switch_backend.py`."""
import time

import mlp

X, y = mlp.datasets.moons(n=500, seed=0)
model = mlp.MLP([2, 32, 32, 2], output="softmax", seed=0)
model.compile(loss="cross_entropy", optimizer=mlp.Adam(lr=0.01))
start = time.perf_counter()
model.fit(X, y, epochs=20, batch_size=16, verbose=0)
print(f"backend {model.backend.name}: accuracy {model.evaluate(X, y)['accuracy']:.3f} "
      f"in {time.perf_counter() - start:.2f} s (the first run on numba includes compilation)")
