"""OrderingEnsemble: the mean density of autoregressive fits over feature orderings."""

import inspect
import math
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, DensityMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from . import backend
from .backend import MAX_SEED

__all__ = ["OrderingEnsemble", "feature_orderings"]


def feature_orderings(n_features: int, n_orderings: int, random_state=None) -> list[np.ndarray]:
    """The column orders an :class:`OrderingEnsemble` fits.

    The identity, then its reverse, then random permutations: in two
    dimensions the two orders are the two factorisations
    ``p(x1) p(x2 | x1)`` and ``p(x2) p(x1 | x2)``.

    Parameters
    ----------
    n_features : int
        Number of columns.
    n_orderings : int
        Number of orders.
    random_state : int, RandomState instance or None, default=None
        Seeds the permutations after the first two.

    Returns
    -------
    orderings : list of ndarray of shape (n_features,)
        Each a permutation of ``range(n_features)``, all distinct while
        ``n_features`` has at least ``n_orderings`` orders; beyond that the
        distinct orders repeat in turn (two features, four orderings: the
        identity, its reverse, the identity, its reverse).

    Examples
    --------
    >>> from skaem.ensemble import feature_orderings
    >>> [order.tolist() for order in feature_orderings(3, 2)]
    [[0, 1, 2], [2, 1, 0]]
    >>> [order.tolist() for order in feature_orderings(2, 4)]
    [[0, 1], [1, 0], [0, 1], [1, 0]]
    """
    rng = check_random_state(random_state)
    identity = np.arange(n_features)
    orderings = [identity, identity[::-1].copy()][: min(n_orderings, 1 + (n_features > 1))]
    n_distinct = math.factorial(n_features) if n_features < 20 else math.inf
    seen = {tuple(order) for order in orderings}
    while len(orderings) < n_orderings:
        if len(orderings) >= n_distinct:
            # Every order is taken: repeat them in turn, so each gets its share of members.
            orderings.append(orderings[len(orderings) % n_distinct].copy())
            continue
        order = rng.permutation(n_features)
        if tuple(order) not in seen:
            seen.add(tuple(order))
            orderings.append(order)
    return orderings


class OrderingEnsemble(DensityMixin, BaseEstimator):
    """The equal mixture of one density estimator fitted under several feature orders.

    An autoregressive model such as the AEM factorises ``p(x)`` in one order
    of the features, and on finite data each order makes its own errors:
    where one order must learn a conditional with many modes from few
    rows, another may find it easy. The mean of the densities fitted in
    different orders is a normalised density that averages those errors
    out, as MADE's ensembles over orders do (Germain et al., 2015). On
    5,000 rows of three 2-D tasks, seeds 0-2, two orders of the default
    AEM scored above one default fit by 0.080 nats (diamond), 0.017
    (Einstein) and 0.018 (spirals), where three seeds of one order gained
    0.034 on the diamond (``benchmarks/results_quality_orderings_*.txt``,
    ``docs/design.md``).
    Each member is fitted separately, so fitting costs ``n_orderings``
    fits and scoring ``n_orderings`` scorings of CPU time; ``n_jobs=2``
    runs two at a time in worker processes with one torch thread each. The
    AEM's small networks gain little from a second thread, so on two cores
    two members side by side take about the wall time of one fit with both
    threads: on 25,000 x 2 checkerboard rows 172 s against 177 s
    (``benchmarks/results_quality_orderings_25k.txt``).

    Parameters
    ----------
    estimator : estimator object, default=None
        The density estimator to fit in each order (cloned; it needs
        ``fit`` and ``score_samples``, and ``sample`` for :meth:`sample`);
        None is ``AEMDensity()``.
    n_orderings : int, default=2
        Number of orders: the data's own, its reverse, then random ones.
    random_state : int, RandomState instance or None, default=None
        Seeds the random orders and, where the estimator has a
        ``random_state`` parameter, gives each member a seed of its own.
    n_jobs : int, default=None
        Members fitted and scored at the same time by joblib (None: one
        at a time, unless inside a :func:`joblib.parallel_config` context;
        -1: as many as cores). In worker processes joblib gives each
        member ``cores // n_jobs`` threads, and a seeded AEM repeats its
        fit exactly only at the same thread count, so seeded results with
        ``n_jobs=2`` may differ in the last bits from ``n_jobs=None``.
    budget : {"each", "shared"}, default="each"
        Training steps of each member. ``"each"``: every member gets the
        estimator's own ``max_iter``, so fitting costs ``n_orderings``
        fits. ``"shared"``: the members share one fit's steps, each taking
        ``1 / n_orderings`` of them (for :class:`AEMDensity`, of the steps
        ``max_iter`` resolves to on these rows, with early stopping on
        wherever one fit would validate), so fitting costs at most one
        fit's step budget (more than one fit's time where that fit stops
        early). Where one fit validates, its budget is more than its rows
        need: on 5,000 x 2 rows two orders on half the steps each scored
        0.016-0.048 nats above one default fit on four tasks. Where one fit
        takes all its steps they split (5,000 rows: heavy6 +0.14, edges8
        -0.12; 25,000 x 2 rows: the diamond -0.05), so share only where
        the AEM validates (``docs/design.md``). Needs an estimator with a
        ``max_iter`` parameter.

    Attributes
    ----------
    estimators_ : list of estimators
        The fitted members, each on the columns in ``orderings_``'s order.
    orderings_ : list of ndarray of shape (`n_features_in_`,)
        Each member's order of the columns.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, where X had string column names.

    See Also
    --------
    AEMDensity : The autoregressive energy machine, the default member.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.mixture import GaussianMixture
    >>> from skaem.ensemble import OrderingEnsemble
    >>> X = np.random.default_rng(0).normal(size=(300, 2))
    >>> ensemble = OrderingEnsemble(GaussianMixture(3), random_state=0).fit(X)
    >>> [order.tolist() for order in ensemble.orderings_]
    [[0, 1], [1, 0]]
    >>> ensemble.score_samples(X[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "score_samples"]), None],
        "n_orderings": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "budget": [StrOptions({"each", "shared"})],
    }

    def __init__(
        self, estimator=None, n_orderings=2, random_state=None, n_jobs=None, budget="each"
    ):
        self.estimator = estimator
        self.n_orderings = n_orderings
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.budget = budget

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit one clone of ``estimator`` on X's columns in each order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : OrderingEnsemble
            The fitted ensemble.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        rng = check_random_state(self.random_state)
        self.orderings_ = feature_orderings(X.shape[1], self.n_orderings, rng)
        base = self._base_estimator()
        steps = {}
        if self.budget == "shared":
            steps = _budget_share(base, X, len(self.orderings_))
        members = []
        for _ in self.orderings_:
            member = clone(base).set_params(**steps)
            if self.random_state is not None and "random_state" in member.get_params():
                member.set_params(random_state=int(rng.randint(MAX_SEED)))
            members.append(member)
        # Seeds are drawn above, in order, so that they do not depend on n_jobs.
        self.estimators_ = Parallel(n_jobs=self.n_jobs)(
            delayed(member.fit)(X[:, order])
            for member, order in zip(members, self.orderings_, strict=True)
        )
        return self

    def _base_estimator(self):
        if self.estimator is not None:
            return self.estimator
        from ._estimator import AEMDensity

        return AEMDensity()

    def score_samples(self, X, return_std=False):
        """Log-density of each row under the mean of the members' densities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to score.
        return_std : bool, default=False
            Also return each row's estimated error, from the members' own
            (``score_samples(X, return_std=True)``, as :class:`AEMDensity`
            reports them) by the delta method: member k's error weighted
            by its share ``p_k(x) / sum_j p_j(x)`` of the mixture's
            density, the members' errors taken as independent (each
            estimates its own normalizers).

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            ``log((1 / K) sum_k p_k(x))`` over the ``K`` members.
        std : ndarray of shape (n_samples,)
            Only with ``return_std=True``: the estimated error of each
            log-density.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        if return_std and not all(_reports_std(member) for member in self.estimators_):
            raise ValueError(
                "return_std=True needs members whose score_samples takes return_std "
                f"(such as AEMDensity); {type(self.estimators_[0]).__name__} does not."
            )
        kwargs = {"return_std": True} if return_std else {}
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(member.score_samples)(X[:, order], **kwargs)
            for member, order in zip(self.estimators_, self.orderings_, strict=True)
        )
        if return_std:
            results, stds = zip(*results, strict=True)
        members = np.stack(results)
        log_density = logsumexp(members, axis=0) - np.log(len(self.estimators_))
        if not return_std:
            return log_density
        stds = np.stack(stds)
        # d log p / d log p_k is member k's share of the mixture's density
        # (none where every member gives the row zero density).
        with np.errstate(invalid="ignore"):
            shares = np.nan_to_num(np.exp(members - logsumexp(members, axis=0)))
        return log_density, np.sqrt(np.sum(np.square(shares * stds), axis=0))

    def score(self, X, y=None):
        """Mean log-likelihood of X (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to score.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        score : float
            Mean of :meth:`score_samples` over the rows.
        """
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1, random_state=None):
        """Draw from the mixture: each row from a member chosen uniformly.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds the choice of members and their draws.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            Samples in the columns' original order, rows shuffled.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
        rng = check_random_state(random_state)
        counts = rng.multinomial(
            n_samples, np.full(len(self.estimators_), 1 / len(self.estimators_))
        )
        blocks = []
        for member, order, count in zip(self.estimators_, self.orderings_, counts, strict=True):
            if count:
                drawn = _draw(member, int(count), int(rng.randint(MAX_SEED)))
                drawn = drawn[0] if isinstance(drawn, tuple) else drawn  # GaussianMixture's (X, y)
                blocks.append(np.asarray(drawn)[:, np.argsort(order)])
        rows = np.concatenate(blocks)
        return rows[rng.permutation(n_samples)]


def _budget_share(member, X: np.ndarray, n_members: int) -> dict:
    """The parameters that give each of ``n_members`` members its share of one fit's steps."""
    from ._estimator import AEMDensity

    params = member.get_params()
    if isinstance(member, AEMDensity):
        # Resolved for one fit on these rows, so that the members validate where it would.
        early_stopping = backend.early_stopping_for(params, *X.shape)
        n_coarse = backend.coarse_column_count(params, X)
        steps = backend.max_iter_for(params, *X.shape, early_stopping, n_coarse)
        return {"max_iter": max(1, steps // n_members), "early_stopping": early_stopping}
    name = type(member).__name__
    if "max_iter" not in params:
        raise ValueError(
            f"budget='shared' divides the estimator's max_iter among the orders; {name} "
            "has no max_iter parameter. Use budget='each'."
        )
    steps = params["max_iter"]
    if not isinstance(steps, Integral) or isinstance(steps, bool):
        raise ValueError(
            f"budget='shared' divides the estimator's max_iter among the orders, which needs "
            f"an integer; {name} has max_iter={steps!r}. Use budget='each'."
        )
    return {"max_iter": max(1, steps // n_members)}


def _reports_std(member) -> bool:
    return "return_std" in inspect.signature(member.score_samples).parameters


def _draw(member, n_samples: int, seed: int):
    """``member.sample``, seeded where it takes a seed (GaussianMixture uses its own)."""
    if "random_state" in inspect.signature(member.sample).parameters:
        return member.sample(n_samples, random_state=seed)
    return member.sample(n_samples)
