"""
Saving, loading and the training curve
======================================

A fitted estimator is saved with ``joblib.dump`` (or ``pickle``): the
weights travel on the CPU, so a model trained on a GPU loads and scores on a
machine without one. Scores are a deterministic function of each row, so the
loaded model gives identical numbers. The training curve travels with it.
"""

import os
import tempfile

import joblib
import matplotlib.pyplot as plt
import numpy as np

from skaem import AEMDensity
from skaem.datasets import make_spirals
from skaem.plotting import plot_training_curve

X = make_spirals(4000, random_state=0)
aem = AEMDensity(
    hidden_features=64,
    n_blocks=2,
    context_features=16,
    energy_hidden_features=64,
    energy_n_blocks=2,
    learning_rate=2e-3,
    max_iter=300,
    eval_interval=20,
    n_eval_importance_samples=200,
    early_stopping=True,
    random_state=0,
).fit(X)

path = os.path.join(tempfile.mkdtemp(), "aem.joblib")
joblib.dump(aem, path)
loaded = joblib.load(path)
print("identical scores after loading:", np.array_equal(loaded.score_samples(X[:100]),
                                                       aem.score_samples(X[:100])))  # fmt: skip
print(f"file size: {os.path.getsize(path) / 1024:.0f} KiB")

fig, ax = plt.subplots(figsize=(6, 4))
plot_training_curve(loaded, ax=ax)
ax.set_title("training curve of the loaded model")
fig.tight_layout()
