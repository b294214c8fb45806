"""The 8x8 handwritten digits that scikit-learn ships, with the scikit-learn estimator."""
import sys

try:
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError:
    print("this example needs scikit-learn: pip install 'mlp[sklearn]'")
    sys.exit(0)

import mlp

X, y = mlp.datasets.digits()
classifier = make_pipeline(StandardScaler(), mlp.MLPClassifier(hidden_layer_sizes=(64,), max_iter=30,
                                                               learning_rate=0.01, random_state=0))
scores = cross_val_score(classifier, X, y, cv=3)
print("3-fold accuracy:", scores.round(3), "mean", scores.mean().round(3))
