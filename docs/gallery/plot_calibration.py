"""
How accurate is the estimated normalizer?
=========================================

Every conditional of an AEM is normalized by an estimate of its normalizer
``Z_d``. :func:`skaem.normalizer_calibration` compares the estimates of
``log Z_d`` at several numbers of points with numerical integration (a
refined trapezoidal rule), for held-out rows of your own data. With
importance samples the error falls as the samples grow (the paper's
Figure 5): here with the paper's independent draws and with stratified
draws. The default, a quadrature rule in the proposal's coordinates, is
far more accurate at a fraction of the points. Both ``importance_sampling``
and ``eval_normalizer`` are read when scoring, so switching them needs no
refit.
"""

import matplotlib.pyplot as plt
import numpy as np

from skaem import AEMDensity, normalizer_calibration
from skaem.datasets import make_diamond
from skaem.plotting import plot_normalizer_calibration

X = make_diamond(5000, random_state=0)
X_held_out = make_diamond(40, random_state=1)
aem = AEMDensity(
    hidden_features=64,
    n_blocks=2,
    context_features=16,
    energy_hidden_features=64,
    energy_n_blocks=2,
    learning_rate=2e-3,
    max_iter=300,
    random_state=0,
).fit(X)

fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
for ax, sampling in zip(axes[:2], ("independent", "stratified"), strict=True):
    aem.set_params(importance_sampling=sampling)
    result = normalizer_calibration(
        aem, X_held_out, [10, 20, 100, 1000], random_state=0, eval_normalizer="sampling"
    )
    print(
        f"{sampling:>11}: median relative error at S=1000 "
        f"{np.median(result['relative_error'][-1]):.2e}"
    )
    plot_normalizer_calibration(result, ax=ax)
    ax.set_title(f"{sampling} sampling")
result = normalizer_calibration(aem, X_held_out, [40, 100, 200, 1000], eval_normalizer="quadrature")
print(
    f" quadrature: median relative error at 200 nodes {np.median(result['relative_error'][2]):.2e}"
)
plot_normalizer_calibration(result, ax=axes[2])
axes[2].set_title("quadrature (the default)")
fig.tight_layout()
