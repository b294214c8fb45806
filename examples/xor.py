"""XOR: the problem a perceptron cannot solve and a 2-4-1 network can."""
import mlp

X, y = mlp.datasets.xor()
perceptron = mlp.Perceptron(2).fit(X, y, epochs=100)
print("perceptron accuracy:", mlp.metrics.accuracy(y, perceptron.predict(X)))

model = mlp.MLP([2, 4, 1], activation="tanh", output="sigmoid", seed=0)
model.compile(loss="binary_cross_entropy", optimizer=mlp.Adam(lr=0.05))
model.fit(X, y, epochs=1500, batch_size=None, verbose=0)
print("MLP accuracy:", model.evaluate(X, y)["accuracy"])
print("outputs:", model.predict(X).ravel().round(3))
