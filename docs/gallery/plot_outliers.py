"""
Outlier detection, with the feature to blame
============================================

Three sensor readings where the third follows from the first two. Planted
outliers break that relation in the third reading only: each of their values
is ordinary on its own, so a per-feature range check misses them. The
:class:`~skaem.AEMOutlierDetector` flags them by their low log-density, and
``explain`` splits each score into the conditional terms
``log p(x_d | x_<d)``: the third term is the one that collapses.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from skaem import AEMOutlierDetector
from skaem.plotting import plot_explanation

rng = np.random.default_rng(0)


def readings(n):
    a, b = rng.normal(size=(2, n))
    return pd.DataFrame({"flow": a, "pressure": b, "power": a * b + 0.1 * rng.normal(size=n)})


train = readings(4000)
test = readings(200)
outliers = readings(10)
outliers["power"] = rng.permutation(outliers["power"].to_numpy())  # relation broken
X_test = pd.concat([test, outliers], ignore_index=True)
is_outlier = np.r_[np.zeros(len(test)), np.ones(len(outliers))]

detector = AEMOutlierDetector(
    contamination=0.05,
    hidden_features=64,
    n_blocks=2,
    context_features=16,
    energy_hidden_features=64,
    energy_n_blocks=2,
    learning_rate=2e-3,
    max_iter=400,
    n_eval_importance_samples=200,
    random_state=0,
).fit(train)
scores = detector.score_samples(X_test)
print(f"ROC-AUC of the log-density as an outlier score: {roc_auc_score(is_outlier, -scores):.3f}")
print(
    f"flagged: {(detector.predict(X_test) == -1).sum()} rows "
    f"({(detector.predict(outliers) == -1).sum()} of the {len(outliers)} planted)"
)

# %%
# Which reading made the most abnormal row unlikely? The explanation is a
# DataFrame with the input's column names.
worst = X_test.iloc[[np.argmin(scores)]]
print(detector.explain(worst).round(2))

fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
plot_explanation(detector, test.iloc[[0]], ax=axes[0])
axes[0].set_title("a typical row")
plot_explanation(detector, worst, ax=axes[1])
axes[1].set_title("the most abnormal row")
fig.tight_layout()
