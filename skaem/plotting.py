"""Figures of fitted AEMs (needs matplotlib: ``pip install skaem[plot]``).

Every function draws on given Axes (or new ones) and returns them.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._estimator import _feature_names


def _check_model(estimator, function, two_features=False):
    """NotFittedError for an unfitted model, ValueError for a 2-D plot of another."""
    check_is_fitted(estimator)
    if two_features and estimator.n_features_in_ != 2:
        raise ValueError(
            f"{function} draws models of two features; this one has {estimator.n_features_in_}."
        )


def _axes(ax, n=1, width=4.0):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax
    # Constrained layout keeps every label inside a plain fig.savefig(...).
    _, axes = plt.subplots(1, n, figsize=(width * n, 4), squeeze=False, layout="constrained")
    return axes[0] if n > 1 else axes[0, 0]


def _grid(bounds, resolution):
    (x0, x1), (y0, y1) = bounds
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    return xs, ys, np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)


def _training_bounds(estimator, margin=0.05):
    """The training data's range of each feature, widened by ``margin`` of it."""
    low = getattr(estimator, "data_min_", None)
    high = getattr(estimator, "data_max_", None)
    if low is None or high is None:  # models pickled before the range was kept
        low = estimator.mean_ - 3 * estimator.scale_
        high = estimator.mean_ + 3 * estimator.scale_
    pad = margin * (np.asarray(high) - np.asarray(low))
    return [(float(a), float(b)) for a, b in zip(low - pad, high + pad, strict=True)]


def plot_density_and_samples(
    estimator, n_samples=10000, bounds=None, resolution=100, random_state=0, axes=None
):
    """Density image and sample histogram of a 2-D model (the paper's Figure 4a).

    Parameters
    ----------
    estimator : AEMDensity
        A fitted model with two features; its ``density`` setting is used.
    n_samples : int, default=10000
        Samples drawn for the histogram.
    bounds : ((xmin, xmax), (ymin, ymax)), default=None
        Plotted region; by default the training data's range, widened by 5%
        on each side.
    resolution : int, default=100
        Grid points per axis for the density and histogram bins.

        The figure costs ``score_samples`` on ``resolution**2`` grid points
        plus ``sample(n_samples)``; at the defaults (10,000 points and 10,000
        samples) that is tens of seconds for a default model on two cores.
        Lower ``resolution``, ``n_samples`` or the model's
        ``n_eval_importance_samples`` for a quicker look.
    random_state : int, RandomState instance or None, default=0
        Seeds the samples.
    axes : sequence of two matplotlib Axes, default=None
        Where to draw; new ones by default.

    Returns
    -------
    axes : array of two Axes
        The density (left) and the samples (right), each with a colour bar
        and axes labelled with the feature names.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skaem import AEMDensity
    >>> from skaem.plotting import plot_density_and_samples
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> aem = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                  energy_n_blocks=1, context_features=4, max_iter=10, warmup_steps=5,
    ...                  n_eval_importance_samples=20, random_state=0).fit(X)
    >>> axes = plot_density_and_samples(aem, n_samples=200, resolution=20)
    >>> len(axes[0].images), len(axes[1].images)
    (1, 1)
    """
    _check_model(estimator, "plot_density_and_samples", two_features=True)
    bounds = _training_bounds(estimator) if bounds is None else bounds
    axes = _axes(axes, 2)
    xs, ys, points = _grid(bounds, resolution)
    density = np.exp(estimator.score_samples(points)).reshape(resolution, resolution)
    samples = estimator.sample(n_samples, random_state=random_state)
    hist, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=resolution, range=bounds)
    extent = [xs[0], xs[-1], ys[0], ys[-1]]
    names = _feature_names(estimator)
    panels = ((density, "density", "density"), (hist.T, "samples", "samples per bin"))
    for ax, (image, title, unit) in zip(axes, panels, strict=True):
        drawn = ax.imshow(image, origin="lower", extent=extent, aspect="auto", cmap="viridis")
        ax.figure.colorbar(drawn, ax=ax, label=unit)
        ax.set_title(title)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    return axes


def plot_conditionals(estimator, x1_values, bounds=None, resolution=400, ax=None):
    """Slices ``p(x2 | x1)`` of the AEM against its proposal (the paper's Figure 4b).

    Parameters
    ----------
    estimator : AEMDensity
        A fitted model with two features.
    x1_values : sequence of float
        Values of the first feature at which to slice.
    bounds : (x2min, x2max), default=None
        Range of the second feature; by default its training range, widened
        by 5% on each side.
    resolution : int, default=400
        Points per slice.
    ax : matplotlib Axes, default=None
        Where to draw.

    Returns
    -------
    ax : matplotlib Axes
        One solid line (AEM) and one dashed line (proposal) per slice; the
        legend sits to the right of the axes, clear of the curves.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skaem import AEMDensity
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> aem = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                  energy_n_blocks=1, context_features=4, max_iter=10, warmup_steps=5,
    ...                  n_eval_importance_samples=20, random_state=0).fit(X)
    >>> from skaem.plotting import plot_conditionals
    >>> ax = plot_conditionals(aem, [-1.0, 1.0], resolution=50)
    >>> len(ax.lines)  # AEM and proposal for each slice
    4
    """
    _check_model(estimator, "plot_conditionals", two_features=True)
    ax = _axes(ax, width=6.0)
    lo, hi = _training_bounds(estimator)[1] if bounds is None else bounds
    first, second = _feature_names(estimator)
    x2 = np.linspace(lo, hi, resolution)
    density = estimator.density
    try:
        for i, x1 in enumerate(x1_values):
            X = np.column_stack([np.full_like(x2, x1), x2])
            color = f"C{i % 10}"
            for kind, style in (("aem", "-"), ("proposal", "--")):
                estimator.set_params(density=kind)
                terms = estimator.score_samples_per_feature(X)[:, 1]
                label = f"{kind}, {first}={x1:.3g}"
                ax.plot(x2, np.exp(terms), style, color=color, label=label)
    finally:
        estimator.set_params(density=density)
    ax.set_xlabel(second)
    ax.set_ylabel(f"p({second} | {first})")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return ax


def plot_normalizer_calibration(result, ax=None):
    """Relative error of log Z against the number of points per conditional (Figure 5).

    Parameters
    ----------
    result : dict
        The output of :func:`skaem.normalizer_calibration`.
    ax : matplotlib Axes, default=None
        Where to draw.

    Returns
    -------
    ax : matplotlib Axes
        One box per number of samples or nodes (whiskers at the 5th and 95th
        percentiles); errors below float64 rounding are drawn at it.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skaem import AEMDensity
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> aem = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                  energy_n_blocks=1, context_features=4, max_iter=10, warmup_steps=5,
    ...                  n_eval_importance_samples=20, random_state=0).fit(X)
    >>> from skaem import normalizer_calibration
    >>> from skaem.plotting import plot_normalizer_calibration
    >>> result = normalizer_calibration(aem, X[:5], n_samples=[10, 100])
    >>> ax = plot_normalizer_calibration(result)
    >>> [label.get_text() for label in ax.get_xticklabels()]
    ['10', '100']
    """
    ax = _axes(ax)
    floor = np.finfo(np.float64).eps  # a quadrature rule can be exact to rounding
    errors = [np.maximum(e.ravel(), floor) for e in result["relative_error"]]
    ax.boxplot(errors, whis=(5, 95), showfliers=False)
    ax.set_xticks(range(1, len(errors) + 1), [str(s) for s in result["n_samples"]])
    ax.set_yscale("log")
    ax.set_xlabel("importance samples or quadrature nodes")
    ax.set_ylabel("relative error of log Z")
    return ax


def plot_training_curve(estimator, ax=None):
    """Training (and validation) log-likelihood against the optimisation step.

    Parameters
    ----------
    estimator : AEMDensity
        A fitted model.
    ax : matplotlib Axes, default=None
        Where to draw.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skaem import AEMDensity
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> aem = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                  energy_n_blocks=1, context_features=4, max_iter=10, warmup_steps=5,
    ...                  n_eval_importance_samples=20, random_state=0).fit(X)
    >>> from skaem.plotting import plot_training_curve
    >>> ax = plot_training_curve(aem)
    >>> ax.lines[0].get_xdata().tolist() == aem.eval_steps_.tolist()
    True
    """
    _check_model(estimator, "plot_training_curve")
    ax = _axes(ax, width=6.0)
    ax.plot(estimator.eval_steps_, estimator.train_scores_, label="train (S-sample estimate)")
    if estimator.validation_scores_ is not None:
        ax.plot(estimator.eval_steps_, estimator.validation_scores_, label="validation")
    if estimator.warmup_steps:
        ax.axvline(estimator.warmup_steps, color="grey", linestyle=":", label="end of warm-up")
    ax.set_xlabel("step")
    ax.set_ylabel("mean log-likelihood")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return ax


def plot_explanation(estimator, x, ax=None):
    """Bar chart of a row's per-feature terms ``log p(x_d | x_<d)``.

    Parameters
    ----------
    estimator : AEMDensity or AEMOutlierDetector
        A fitted model.
    x : array-like of shape (n_features,) or (1, n_features)
        The row to explain.
    ax : matplotlib Axes, default=None
        Where to draw.

    Returns
    -------
    ax : matplotlib Axes
        One bar per feature; the lowest bars made the row unlikely.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skaem import AEMDensity
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> aem = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                  energy_n_blocks=1, context_features=4, max_iter=10, warmup_steps=5,
    ...                  n_eval_importance_samples=20, random_state=0).fit(X)
    >>> from skaem.plotting import plot_explanation
    >>> ax = plot_explanation(aem, X[0])
    >>> len(ax.patches)  # one bar per feature
    2
    """
    _check_model(estimator, "plot_explanation")
    ax = _axes(ax)
    row = x if hasattr(x, "columns") else np.asarray(x, dtype=float).reshape(1, -1)
    terms = estimator.score_samples_per_feature(row)[0]
    names = _feature_names(estimator)
    colors = ["C3" if t == terms.min() else "C0" for t in terms]
    ax.bar(names, terms, color=colors)
    if sum(len(name) for name in names) > 30:  # long or many names: upright labels would collide
        ax.tick_params(axis="x", labelrotation=90)
    ax.set_ylabel("log p(x_d | x_<d)")
    ax.set_title(f"log p(x) = {terms.sum():.3g}")
    return ax
