"""
An AEM in a pipeline, and what it does to the units
===================================================

``make_pipeline(PCA(...), AEMDensity())`` models the density of the
projected data, here the first four principal components of scikit-learn's
bundled handwritten digits. Its ``score_samples`` are log-densities in the
units of the PCA output (a density on a four-dimensional subspace), so they
compare with other models of the same projection, as cross-validation does
here against a GaussianMixture in the same pipeline.
"""

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from skaem import AEMDensity

X = load_digits().data
aem = AEMDensity(
    hidden_features=64,
    n_blocks=2,
    context_features=16,
    energy_hidden_features=64,
    energy_n_blocks=2,
    learning_rate=2e-3,
    max_iter=250,
    n_eval_importance_samples=100,
    random_state=0,
)
models = {
    "PCA(4) + AEM": make_pipeline(PCA(4, random_state=0), aem),
    "PCA(4) + GaussianMixture(10)": make_pipeline(
        PCA(4, random_state=0), GaussianMixture(10, random_state=0)
    ),
}
results = {name: cross_val_score(model, X, cv=3) for name, model in models.items()}
for name, scores in results.items():
    print(f"{name:30s} {scores.mean():.3f} +- {scores.std():.3f}")

fig, ax = plt.subplots(figsize=(6, 3))
ax.boxplot(list(results.values()), orientation="horizontal")
ax.set_yticks([1, 2], list(results))
ax.set_xlabel("held-out log-likelihood per digit (PCA units), 3 folds")
fig.tight_layout()
