"""AEMOutlierDetector: low AEM log-density as an outlier score."""

from numbers import Real

import numpy as np
from sklearn.base import OutlierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._estimator import AEMDensity, _feature_names

_AUTO_SIGMAS = 3.0


class AEMOutlierDetector(OutlierMixin, AEMDensity):
    """Outlier detection with an Autoregressive Energy Machine.

    Fits an :class:`AEMDensity` and flags rows whose estimated log-density
    falls below a threshold, following scikit-learn's outlier-detection
    contract (as :class:`~sklearn.ensemble.IsolationForest` does):
    ``score_samples`` is the log-density (lower is more abnormal),
    ``decision_function`` is ``score_samples - offset_`` (negative for
    outliers) and ``predict`` returns -1 for outliers and +1 for inliers.

    The log-densities are estimates (each normalizer by a quadrature rule,
    or by importance sampling). For a row near the threshold,
    ``score_samples(X, return_std=True)`` gives the estimate's error: a row
    whose ``decision_function`` lies within about two of them of zero is
    borderline, and raising ``n_eval_importance_samples`` (a scoring
    parameter: no retraining) settles it.

    Parameters
    ----------
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of outliers in the training data: ``offset_`` is that
        quantile of the training log-densities. With "auto", ``offset_`` is
        the mean training log-density minus three of its standard deviations.
    hidden_features, n_blocks, ..., memory
        Every parameter of :class:`AEMDensity`, with the same meaning and
        default.

    Attributes
    ----------
    offset_ : float
        Threshold on ``score_samples``: rows below it are outliers.
    Other attributes : see :class:`AEMDensity`.

    See Also
    --------
    AEMDensity : The density estimator behind the scores.
    sklearn.ensemble.IsolationForest : Isolation-based outlier detection.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem import AEMOutlierDetector
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> detector = AEMOutlierDetector(
    ...     contamination=0.05, hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...     energy_n_blocks=1, context_features=4, max_iter=30, warmup_steps=15,
    ...     n_eval_importance_samples=50, random_state=0).fit(X)
    >>> detector.predict([[0.0, 0.0], [8.0, -8.0]])
    array([ 1, -1])
    """

    _parameter_constraints: dict = {
        **AEMDensity._parameter_constraints,
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
    }

    def __init__(
        self,
        *,
        contamination="auto",
        hidden_features=128,
        n_blocks=4,
        context_features=64,
        energy_hidden_features=64,
        energy_n_blocks=2,
        activation="relu",
        energy_activation="relu",
        dropout=0.0,
        energy_dropout=0.0,
        energy_base="proposal",
        proposal="gaussian",
        n_components=32,
        min_scale=0.001,
        uniform_bounds=None,
        defensive_fraction=0.1,
        importance_sampling="stratified",
        precision="float32",
        n_importance_samples=20,
        n_eval_importance_samples="auto",
        eval_normalizer="quadrature",
        normalizer_includes_data=True,
        density="aem",
        kde_bandwidth=0.05,
        kde_proposal_weight=0.1,
        n_sampling_proposals=100,
        standardize=True,
        batch_size=256,
        learning_rate=0.002,
        max_iter="auto",
        warmup_steps=50,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=10,
        eval_interval="auto",
        device="auto",
        random_state=None,
        verbose=0,
        warm_start=False,
        memory=None,
    ):
        super().__init__(
            hidden_features=hidden_features,
            n_blocks=n_blocks,
            context_features=context_features,
            energy_hidden_features=energy_hidden_features,
            energy_n_blocks=energy_n_blocks,
            activation=activation,
            energy_activation=energy_activation,
            dropout=dropout,
            energy_dropout=energy_dropout,
            energy_base=energy_base,
            proposal=proposal,
            n_components=n_components,
            min_scale=min_scale,
            uniform_bounds=uniform_bounds,
            defensive_fraction=defensive_fraction,
            importance_sampling=importance_sampling,
            precision=precision,
            n_importance_samples=n_importance_samples,
            n_eval_importance_samples=n_eval_importance_samples,
            eval_normalizer=eval_normalizer,
            normalizer_includes_data=normalizer_includes_data,
            density=density,
            kde_bandwidth=kde_bandwidth,
            kde_proposal_weight=kde_proposal_weight,
            n_sampling_proposals=n_sampling_proposals,
            standardize=standardize,
            batch_size=batch_size,
            learning_rate=learning_rate,
            max_iter=max_iter,
            warmup_steps=warmup_steps,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            eval_interval=eval_interval,
            device=device,
            random_state=random_state,
            verbose=verbose,
            warm_start=warm_start,
            memory=memory,
        )
        self.contamination = contamination

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the density on X and set ``offset_`` from its training scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : AEMOutlierDetector
            The fitted detector.
        """
        super().fit(X)
        scores = self.score_samples(X)
        if self.contamination == "auto":
            finite = scores[np.isfinite(scores)]
            self.offset_ = float(finite.mean() - _AUTO_SIGMAS * finite.std())
        else:
            self.offset_ = float(np.percentile(scores, 100.0 * self.contamination))
        return self

    def decision_function(self, X):
        """Log-density minus ``offset_``: negative for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "offset_")
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """-1 for outliers, +1 for inliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to classify.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) < 0, -1, 1)

    def explain(self, X):
        """Per-feature terms ``log p(x_d | x_<d)`` of each row's score.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Rows to explain.

        Returns
        -------
        terms : DataFrame or ndarray of shape (n_samples, n_features)
            A pandas DataFrame with the feature names as columns (and X's
            index, if X is a DataFrame) when pandas is installed, else an
            array. Rows sum to :meth:`score_samples`; the most negative
            entries show which features made a row unlikely given the
            features before them.
        """
        terms = self.score_samples_per_feature(X)
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is optional
            return terms
        index = X.index if hasattr(X, "index") and hasattr(X, "columns") else None
        return pd.DataFrame(terms, columns=_feature_names(self), index=index)
