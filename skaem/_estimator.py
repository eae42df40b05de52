"""AEMDensity: the scikit-learn face of the Autoregressive Energy Machine."""

import warnings
from dataclasses import fields
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_memory, validate_data

from . import backend, collective
from .backend import MAX_SEED, FitInterrupted, FittedState
from .nn import ACTIVATIONS

# Below this many rows fit warns that a density network overfits: on scikit-learn's
# wine (106 training rows) and breast_cancer (341) the default AEM scored far
# below a tuned KernelDensity (benchmarks/results_quality.txt).
_FEW_ROWS = 500
# Parameters that leave the trained networks as they are: how a fitted model
# scores or samples, and the controls of caching and warm starts.
_PARAMS_OUTSIDE_TRAINING = {
    "density",
    "kde_bandwidth",
    "kde_proposal_weight",
    "n_eval_importance_samples",
    "eval_normalizer",
    "n_sampling_proposals",
    "memory",
    "warm_start",
}
# The estimator's fitted attribute for each field of the backend's FittedState.
_FITTED_ATTRIBUTES = {
    "model": "model_",
    "mean": "mean_",
    "scale": "scale_",
    "data_min": "data_min_",
    "data_max": "data_max_",
    "seed": "_seed_",
    "scoring_seed": "scoring_seed_",
    "model_params": "_model_params_",
    "early_stopping": "do_early_stopping_",
    "n_iter": "n_iter_",
    "eval_steps": "eval_steps_",
    "train_scores": "train_scores_",
    "validation_scores": "validation_scores_",
    "best_validation_score": "best_validation_score_",
    "resume_point": "_resume_point_",
}


def fitted_state(estimator) -> FittedState:
    """The backend's view of a fitted estimator's networks, scaling and curves.

    Attributes that a model pickled by an earlier release lacks are None.
    """
    return FittedState(
        **{
            f.name: getattr(estimator, _FITTED_ATTRIBUTES[f.name], None)
            for f in fields(FittedState)
        }
    )


def _set_fitted_state(estimator, state: FittedState) -> None:
    for name, attribute in _FITTED_ATTRIBUTES.items():
        setattr(estimator, attribute, getattr(state, name))


def _feature_names(estimator) -> list[str]:
    """``feature_names_in_`` where X had column names, else x0, x1, ... as in scikit-learn."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return [f"x{d}" for d in range(estimator.n_features_in_)]
    return [str(name) for name in names]


def _warn_if_few_rows(n_samples: int) -> None:
    if n_samples < _FEW_ROWS:
        warnings.warn(
            f"AEMDensity is fitting only n_samples={n_samples} rows (fewer than "
            f"{_FEW_ROWS}). Its networks have far more parameters than that and "
            "overfit; a tuned KernelDensity or GaussianMixture is usually better here.",
            UserWarning,
            stacklevel=4,  # the caller of fit, past scikit-learn's fit wrapper
        )


def _changed_params(built: dict, current: dict) -> list[str]:
    """Names of the parameters whose value differs between the two dicts."""

    def same(a, b):
        if a is None or b is None or isinstance(a, str) or isinstance(b, str):
            return type(a) is type(b) and a == b
        return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float))

    return [name for name in built if not same(built[name], current[name])]


class AEMDensity(DensityMixin, BaseEstimator):
    """Autoregressive Energy Machine density estimator.

    Models ``p(x) = prod_d exp(-E(x_d; x_<d)) / Z_d``: a ResMADE maps x to a
    proposal distribution and a context vector for each dimension, a
    residual energy network shared across dimensions scores ``x_d`` given
    its context, and each one-dimensional normalizer ``Z_d`` is estimated by
    importance sampling from the proposal (Nash & Durkan, 2019).

    Parameters
    ----------
    hidden_features : int, default=128
        Width of the ResMADE's hidden layers. The paper's 256 overfit a few
        thousand rows and cost more per step (``benchmarks/quality.py``).
        64 did better on smooth data of a few thousand rows and worse on
        sharp edges (the user guide's "Parameters" page has the figures).
    n_blocks : int, default=4
        Number of residual blocks in the ResMADE.
    context_features : int, default=64
        Size of the context vector passed to the energy network.
    energy_hidden_features : int, default=64
        Width of the energy network.
    energy_n_blocks : int, default=2
        Number of residual blocks in the energy network. It runs on every
        importance sample, so its size sets the cost of a step: the paper's
        128 x 4 blocks cost about eight times as much, and in a fixed time
        the smaller network's extra steps did better.
    activation : {"relu", "tanh", "elu", "gelu", "silu"}, default="relu"
        Activation of the ResMADE.
    energy_activation : {"relu", "tanh", "elu", "gelu", "silu"}, default="relu"
        Activation of the energy network.
    dropout : float, default=0.0
        Dropout rate between the two layers of each ResMADE block.
    energy_dropout : float, default=0.0
        Dropout rate between the two layers of each energy-network block.
    energy_base : {"proposal", "flat"}, default="proposal"
        What the energy network reshapes. ``"proposal"``: each conditional is
        ``q(x_d | x_<d) exp(-E(x_d; x_<d)) / Z_d``, the proposal times a
        learned correction that starts at zero, so training starts from the
        proposal and the importance weights stay bounded; gradients through
        q in this product are stopped, as for the samples. ``"flat"``: the
        paper's ``exp(-E) / Z_d`` (eq. 3), where the energy must learn the
        whole shape, tails included.
    proposal : {"gaussian", "uniform"}, default="gaussian"
        Proposal distribution of each conditional: a learned mixture of
        Gaussians, or a fixed uniform on a box (see ``uniform_bounds``).
    n_components : int, default=32
        Number of mixture components of the Gaussian proposal. Components
        are cheap (they add outputs, not layers), and the proposal is the
        model's starting point: 32 beat the paper's 10 on many-mode data.
    min_scale : float, default=1e-3
        Smallest standard deviation of a mixture component, in standardised
        units. Where a column is recorded coarsely (at least half of 500
        or more training rows hold a value that 10 rows or more share, the
        values 10 ``min_scale`` or more apart), the
        likelihood rewards components this narrow at the recorded values,
        and its components' scales move six times as fast in log terms
        (``skaem.model.COARSE_SCALE_GAIN``); other columns are unaffected.
    uniform_bounds : array-like of shape (2, n_features) or (2,), default=None
        Lower and upper bounds of the uniform proposal in the units of X;
        a pair ``(low, high)`` bounds every feature alike. ``None`` takes
        the training range widened by 5% on each side.
        The model's density is zero outside the box, so the box must
        contain the training data.
    defensive_fraction : float, default=0.1
        Fraction of the importance samples (in training, scoring and
        sampling) drawn from a heavy-tailed partner of the Gaussian proposal
        (Cauchy components with the same weights, locations and scales),
        every sample being weighted by the mixture (defensive importance
        sampling). The energy's tails decay exponentially while a Gaussian's
        decay faster, so without this the weights are unbounded and the
        normalizer estimate has infinite variance; the estimate of ``Z``
        stays unbiased either way. Ignored by the uniform proposal.
    importance_sampling : {"stratified", "independent"}, default="stratified"
        How the importance samples of each conditional are drawn (in
        training, scoring and calibration). ``"independent"`` draws them
        independently, as the paper does. ``"stratified"`` draws a Latin
        hypercube over (component choice, position within the component):
        components receive samples in proportion to their weights and
        positions cover the quantiles evenly. Each sample keeps its marginal
        distribution, so the estimate of ``Z`` keeps its expectation, with
        less variance (measured in ``benchmarks/normalizer_variance.py``).
        Scoring and calibration draw two samples in each of half as many
        strata of the proposal's mass, so that every score's standard error
        is estimated without bias (``score_samples(X, return_std=True)``).
    precision : {"float32", "bfloat16"}, default="float32"
        Precision of the networks' matrix products in training, scoring and
        sampling. ``"bfloat16"`` runs them under bfloat16 autocast while
        mixture densities, normalizers and losses stay in float32. It pays
        only on hardware with bfloat16 matrix units (AVX512-BF16 or AMX on a
        CPU, most GPUs); without them it is slower. The user guide's cost
        page has the measured speed and accuracy.
    n_importance_samples : int, default=20
        Importance samples S per conditional during training. A step costs
        about ``batch_size x n_features x (S + 1)`` energy evaluations: S = 4
        fits about 3x faster at 6-8 features (1.5-2x at 2) and scored about
        0.01 nats lower on held-out rows (``docs/design.md``).
    n_eval_importance_samples : int or "auto", default="auto"
        Points per conditional at which :meth:`score_samples` evaluates the
        energy: the nodes of the quadrature rule, or the importance samples
        (see ``eval_normalizer``). "auto" takes 200 nodes, or 1,000 samples
        (also the AEM-KDE's kernels). A rule takes at least
        ``n_components + 1`` nodes. The sampled log-likelihood is biased low
        on average over data with ``normalizer_includes_data=True`` (about
        ``chi^2(p||q) / S``) and high without it (Jensen's
        ``Var(w) / (2 S Z^2)``); more samples reduce either at a linear cost.
    eval_normalizer : {"quadrature", "sampling"}, default="quadrature"
        How :meth:`score_samples` estimates each normalizer ``Z_d`` of the
        AEM (and how ``early_stopping`` scores the validation rows, with 100
        nodes). ``"quadrature"``: a deterministic rule in the proposal's own
        coordinates: every mixture component gets one node, plus a share of
        the others in proportion to its weight, at the midpoints of equal-mass
        cells (the uniform proposal: the midpoint rule on its box). The first
        feature's normalizer, the same for every row, is computed once, with
        nodes doubled until it converges. ``"sampling"``: importance samples
        drawn as ``importance_sampling`` says, the data point counted
        among them where ``normalizer_includes_data`` is set. On the
        benchmark tasks 200 nodes came closer to the exact log-likelihood
        than 1,000 samples at a tenth of the time or less
        (``benchmarks/normalizer_variance.py``). With
        ``energy_base="flat"`` and a Gaussian proposal the normalizers are
        always sampled: there the integrand is unbounded in the proposal's
        coordinates and its tails can hold mass that no node sees.
    normalizer_includes_data : bool, default=True
        Count the scored point among the importance samples, so that
        ``Z_d ~ (w(x_d) + sum_s w_s) / (S + 1)``. This caps each conditional
        at ``log q(x_d) + log(S + 1)``, which prevents the energy from
        learning spikes at training points that the proposal never samples
        (a failure of short trainings); the estimate converges to the same
        normalizer as S grows. ``False`` gives the paper's estimator (eq. 8).
    density : {"aem", "proposal", "kde"}, default="aem"
        What :meth:`score_samples` and :meth:`sample` use: the energy model,
        the exact proposal alone (the paper's ResMADE-MoG baseline), or the
        AEM-KDE (Section 4.3), a normalised approximation: per conditional,
        Gaussian kernels of width ``kde_bandwidth`` at the
        ``n_eval_importance_samples`` proposal samples, weighted by their
        normalised importance weights, mixed with the proposal itself.
    kde_bandwidth : float, default=0.05
        Kernel standard deviation of the AEM-KDE, in standardised units
        (multiples of each feature's standard deviation when
        ``standardize=True``).
    kde_proposal_weight : float, default=0.1
        Weight of the proposal in the AEM-KDE mixture; it keeps density
        where the samples are sparse.
    n_sampling_proposals : int, default=100
        Proposal candidates per dimension and sample in importance resampling.
    standardize : bool, default=True
        Fit on standardised features. Scores remain log-densities of X in its
        own units (the Jacobian is accounted for) and samples come back in
        those units.
    batch_size : int, default=256
        Rows per optimisation step (capped at the number of training rows).
    learning_rate : float, default=2e-3
        Initial Adam learning rate, annealed to zero by a cosine schedule.
        Runs of thousands of steps need more than the paper's 5e-4, which
        it spent over 10^5 steps or more.
    max_iter : "auto" or int, default="auto"
        Number of optimisation steps (not epochs), warm-up included, with
        the learning rate annealed over exactly these steps (early stopping
        may end the run sooner). "auto" allows a budget of ``max(1000,
        10000 // n_features)`` steps, a few minutes on two CPU cores. With
        early stopping it takes the whole budget and validation decides
        where to stop; without, 50 passes over the training rows
        (``50 * n_samples / batch_size`` steps) at two features and fewer
        with more, ``50 * (2 / n_features) ** 0.25`` (35 at eight, where a
        later conditional's many inputs overfit sooner; columns recorded
        coarsely, which need the steps, do not count), within the budget
        and at least 100 steps: 5,000 x 2 rows get up to 5,000 validated
        steps, 25,000 x 2 rows 4,883 steps, 5,000 x 6 rows 742, 25,000 x 8
        rows 1,250. Above 25,000
        rows the ``10000 // n_features`` grows in proportion to the rows, up
        to twice at 50,000 (100,000 x 7 rows: 2,856 steps), where more
        steps paid and 50 passes cannot overfit.
        The paper trains for 10^5-10^6 steps; docs/user_guide/cost.rst gives
        the default's fit times.
    warmup_steps : int, default=50
        Initial steps that train the proposal alone, so that it covers the
        data before importance sampling starts. ``fit`` warns where training
        ends within them (counting earlier steps with ``warm_start``).
    early_stopping : "auto" or bool, default="auto"
        Hold out ``validation_fraction`` of the rows and score them every
        ``eval_interval`` steps. After ``n_iter_no_change`` evaluations
        without improvement, go back to the best weights and anneal the
        learning rate to zero over as many steps, then stop. The final
        weights are kept unless the best ones beat them on the held-out
        rows by more than choosing the best there flatters it (a bootstrap
        over those rows measures it); the best are then restored. "auto"
        does so where the steps allowed (``max_iter``, or
        for "auto" its budget) pass over the rows 100 times or more
        (``steps * min(batch_size, n_samples) >= 100 * n_samples``: at the
        defaults, fewer than 12,800 rows of 2 features or 2,560 of 10) and
        at least 5 rows would be held out: there the networks can overfit
        and the validation curve sets the training length, which on
        many-mode data is thousands of steps more than a fixed count gave.
        On more rows it cost held-out rows and cut the anneal short
        (``benchmarks/quality.py``).
    validation_fraction : float, default=0.1
        Fraction of rows held out when early stopping is on.
    n_iter_no_change : int, default=10
        Evaluations without improvement before stopping early.
    eval_interval : "auto" or int, default="auto"
        Steps between two records of the training curve (and validations).
        "auto" takes 15 passes over the training rows, at most 50 steps:
        small data sets overfit within a few dozen passes, and with one
        step a pass 50 steps would step over their best weights (seeds
        0-2, on test rows: wine, 106 rows, 12.6 nats higher; diabetes, 265
        rows, 0.5). Fits of about 950 rows or more (853 training rows)
        evaluate every 50 steps, as before.
    device : str, default="auto"
        "cpu", "cuda", "cuda:i", or "auto" for CUDA when available. A model
        fitted on a GPU scores on the CPU where no GPU is available.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batches, dropout, importance samples and the
        fixed noise used by :meth:`score_samples`. The same seed gives the
        same model on the same device and thread count. Without a seed, a
        fit runs with fewer threads while other processes keep the cores
        busy, which is several times faster there
        (:func:`skaem.threads.adaptive_threads` sets where skaem may do so).
    verbose : int, default=0
        Show a progress bar with the running train (and validation)
        log-likelihood.
    warm_start : bool, default=False
        Continue training the fitted networks instead of starting afresh,
        with Adam's state kept. After a completed fit, a new cosine cycle of
        ``max_iter`` steps (a warm restart); after an interrupted one, the
        rest of the interrupted run, exactly as it would have gone on, from
        the weights it kept. Training parameters (``max_iter``,
        ``learning_rate``, ...) may change in between; those that shape the
        networks or the scaling (widths, depths, activations, dropout,
        ``proposal``, ``n_components``, ``min_scale``, ``uniform_bounds``,
        ``standardize``) may not, and a changed one raises a ValueError.
    memory : str or object with a ``cache`` method, default=None
        Cache the trained networks, as ``Pipeline(memory=...)`` does
        (a path or a ``joblib.Memory``). A refit whose data and training
        parameters are unchanged then reuses them: grid searches over the
        scoring parameters (``density``, ``kde_bandwidth``,
        ``kde_proposal_weight``, ``n_eval_importance_samples``,
        ``eval_normalizer``, ``n_sampling_proposals``) train once per fold. Needs an integer
        ``random_state``, otherwise every fit differs and nothing is reused.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained network (``skaem.model.AEM``).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features,)
        Names of the features, when X has string column names.
    n_iter_ : int
        Optimisation steps run, summed over warm starts.
    mean_ : ndarray of shape (n_features,)
        Feature means subtracted before the network (zeros when
        ``standardize=False``).
    scale_ : ndarray of shape (n_features,)
        Feature standard deviations divided out before the network (ones
        when ``standardize=False``).
    data_min_ : ndarray of shape (n_features,)
        Smallest value of each feature in the training data (over all
        processes when data-parallel).
    data_max_ : ndarray of shape (n_features,)
        Largest value of each feature in the training data.
    eval_steps_ : ndarray
        Steps at which the curves were recorded.
    train_scores_ : ndarray
        Mean training log-likelihood estimate (log p, in the units of X)
        over each interval.
    do_early_stopping_ : bool
        Whether the last fit held out validation rows (see ``early_stopping``).
    validation_scores_ : ndarray or None
        Mean validation log-likelihood at each evaluation, or ``None``
        without early stopping.
    best_validation_score_ : float or None
        Validation score of the weights kept: the best one, or the final
        one where it is not clearly below the best (see ``early_stopping``).

    See Also
    --------
    sklearn.neighbors.KernelDensity : Kernel density estimation.
    sklearn.mixture.GaussianMixture : Gaussian mixture model.

    References
    ----------
    C. Nash and C. Durkan. "Autoregressive Energy Machines". ICML 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem import AEMDensity
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> aem = AEMDensity(hidden_features=32, n_blocks=1, energy_hidden_features=32,
    ...                  energy_n_blocks=1, context_features=8, max_iter=20, warmup_steps=10,
    ...                  n_eval_importance_samples=50, random_state=0).fit(X)
    >>> aem.score_samples(X[:3]).shape
    (3,)
    >>> aem.sample(5, random_state=0).shape
    (5, 2)
    """

    _parameter_constraints: dict = {
        "hidden_features": [Interval(Integral, 1, None, closed="left")],
        "n_blocks": [Interval(Integral, 0, None, closed="left")],
        "context_features": [Interval(Integral, 1, None, closed="left")],
        "energy_hidden_features": [Interval(Integral, 1, None, closed="left")],
        "energy_n_blocks": [Interval(Integral, 0, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "energy_activation": [StrOptions(set(ACTIVATIONS))],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "energy_dropout": [Interval(Real, 0, 1, closed="left")],
        "energy_base": [StrOptions({"proposal", "flat"})],
        "proposal": [StrOptions({"gaussian", "uniform"})],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "min_scale": [Interval(Real, 0, None, closed="neither")],
        "uniform_bounds": ["array-like", None],
        "defensive_fraction": [Interval(Real, 0, 1, closed="left")],
        "importance_sampling": [StrOptions({"stratified", "independent"})],
        "precision": [StrOptions({"float32", "bfloat16"})],
        "n_importance_samples": [Interval(Integral, 1, None, closed="left")],
        "n_eval_importance_samples": [
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "eval_normalizer": [StrOptions({"quadrature", "sampling"})],
        "normalizer_includes_data": ["boolean"],
        "density": [StrOptions({"aem", "proposal", "kde"})],
        "kde_bandwidth": [Interval(Real, 0, None, closed="neither")],
        "kde_proposal_weight": [Interval(Real, 0, 1, closed="both")],
        "n_sampling_proposals": [Interval(Integral, 1, None, closed="left")],
        "standardize": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "warmup_steps": [Interval(Integral, 0, None, closed="left")],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "eval_interval": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "memory": [None, str, HasMethods(["cache"])],
    }

    def __init__(
        self,
        *,
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
        min_scale=1e-3,
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
        learning_rate=2e-3,
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
        self.hidden_features = hidden_features
        self.n_blocks = n_blocks
        self.context_features = context_features
        self.energy_hidden_features = energy_hidden_features
        self.energy_n_blocks = energy_n_blocks
        self.activation = activation
        self.energy_activation = energy_activation
        self.dropout = dropout
        self.energy_dropout = energy_dropout
        self.energy_base = energy_base
        self.proposal = proposal
        self.n_components = n_components
        self.min_scale = min_scale
        self.uniform_bounds = uniform_bounds
        self.defensive_fraction = defensive_fraction
        self.importance_sampling = importance_sampling
        self.precision = precision
        self.n_importance_samples = n_importance_samples
        self.n_eval_importance_samples = n_eval_importance_samples
        self.eval_normalizer = eval_normalizer
        self.normalizer_includes_data = normalizer_includes_data
        self.density = density
        self.kde_bandwidth = kde_bandwidth
        self.kde_proposal_weight = kde_proposal_weight
        self.n_sampling_proposals = n_sampling_proposals
        self.standardize = standardize
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.warmup_steps = warmup_steps
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.eval_interval = eval_interval
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.memory = memory

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the networks on X.

        An interrupt (Ctrl-C, a notebook's stop button) ends training early
        without losing it: ``fit`` returns with the weights of the last
        evaluation (the best one with ``early_stopping``) and a
        RuntimeWarning; ``warm_start=True`` goes on from there. Such a fit is
        not cached by ``memory``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; every feature must vary.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : AEMDensity
            The fitted estimator.
        """
        continuing = self.warm_start and hasattr(self, "model_")
        X = validate_data(
            self,
            X,
            reset=not continuing,
            dtype=[np.float64, np.float32],
            ensure_min_samples=2,
        )
        if continuing:
            self._check_model_params_unchanged()
            state = fitted_state(self)
            if state.seed is None:  # pickled before the seed was kept
                state.seed = int(check_random_state(self.random_state).randint(MAX_SEED))
            # The first fit's seed: the same rows held out, so validation stays unseen.
            self._fit_backend(self.get_params(), X, state.seed, state)
            return self
        self._check_width(X.shape[1])
        _warn_if_few_rows(X.shape[0])
        seed = int(check_random_state(self.random_state).randint(MAX_SEED))
        seed = backend.shared_seed(seed)  # one model across processes: rank 0's seed
        params = self.get_params()
        training_params = {  # subclasses add scoring-side parameters of their own
            k: params[k] for k in AEMDensity._get_param_names() if k not in _PARAMS_OUTSIDE_TRAINING
        }
        # A cache hit on some processes only would leave the others waiting.
        memory = check_memory(None if collective.active() is not None else self.memory)
        self._fit_backend(training_params, X, seed, None, memory.cache(backend.fit_networks))
        return self

    def _fit_backend(self, params, X, seed, state, fit_networks=backend.fit_networks):
        """Train through the backend and keep what it returns, an interrupted
        run included (which the cache does not keep)."""
        try:
            # Without a seed nothing is repeated, so the fit may take fewer
            # threads on a busy machine (which changes the last bits).
            state = fit_networks(params, X, seed, state, self.random_state is not None)
        except FitInterrupted as interrupted:
            state = interrupted.state
        _set_fitted_state(self, state)

    def _check_model_params_unchanged(self):
        # Models pickled before this check have no record and are not checked.
        built = getattr(self, "_model_params_", None)
        changed = [] if built is None else _changed_params(built, self.get_params())
        if changed:
            details = ", ".join(f"{name}={built[name]!r}" for name in changed)
            raise ValueError(
                f"warm_start=True continues the fitted networks, which were built "
                f"with {details}; the parameters now differ. Set them back, or set "
                "warm_start=False to train new networks."
            )

    def _check_width(self, n_features: int) -> None:
        """A ResMADE narrower than D - 1 would give no hidden unit the degrees
        of the last features, and silently ignore them."""
        needed = n_features - 1
        if self.hidden_features < needed:
            raise ValueError(
                f"hidden_features={self.hidden_features} is below n_features - 1 = "
                f"{needed}: the ResMADE would ignore features "
                f"{self.hidden_features}..{needed - 1} when modelling the later ones. "
                f"Set hidden_features to at least {needed}."
            )

    # ---------------------------------------------------------------- score
    def _check_fitted_and_params(self):
        # Scoring parameters may change after fit (set_params, grid searches
        # over them), so they are checked again where they are used.
        check_is_fitted(self)
        self._validate_params()

    def score_samples_per_feature(self, X):
        """Log-density of each conditional, ``log p(x_d | x_<d)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to score.

        Returns
        -------
        terms : ndarray of shape (n_samples, n_features)
            Column d is the log-density of feature d given the features
            before it, in the units of X; rows sum to :meth:`score_samples`.
            Small values show which feature made a point unlikely.
        """
        return self._terms(X)

    def _terms(self, X, return_variance=False):
        """Validated per-feature log-densities (and their variances), warning about zeros."""
        self._check_fitted_and_params()
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        state, params = fitted_state(self), self.get_params()
        result = backend.log_density_terms(state, X, params, return_variance)
        terms = result[0] if return_variance else result
        n_zero = int(np.isneginf(terms).any(axis=1).sum())
        if n_zero:
            warnings.warn(
                f"{n_zero} of {len(terms)} rows have a log-density of -inf (a density of "
                "zero to working precision): they lie far outside the training data, or "
                "outside the uniform proposal's box.",
                UserWarning,
                stacklevel=3,
            )
        return result

    def score_samples(self, X, return_std=False):
        """Estimated log-density of each row of X.

        Deterministic: a row gets the same score however often it is
        scored, and whatever other rows are scored with it to float32
        rounding.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to score.
        return_std : bool, default=False
            Also return each row's estimated error (as
            ``GaussianProcessRegressor.predict`` returns a standard
            deviation), the features' errors added in quadrature. Under the
            default quadrature: for each feature, the change from a rule
            with half the nodes (which costs half as much again), plus float
            rounding. On the benchmark's tasks of 6 and 8 features the
            actual error exceeded it in 16% and 20% of rows, and twice it
            in 5% and 11% (``benchmarks/normalizer_variance.py``): read it
            as a standard error with heavy tails. Under
            ``eval_normalizer="sampling"``: the standard error over the
            importance noise, by the delta method on each conditional's
            importance weights; rows share the noise, so the error of a
            mean over rows is at most the mean of their errors. Stratified
            scoring draws two samples to a stratum, whose differences give
            each stratum's variance without bias: on the benchmark's default
            fits the z-scores between noise seeds had standard deviations
            0.83-1.02 (1 when the errors are right) at S = 100 and 1,000
            (``benchmarks/score_errors.py``). Zero with
            ``density="proposal"`` (exact) and ``density="kde"`` (a
            normalised density for its fixed samples).

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            ``log p(x)`` in the units of X; with ``density="aem"`` an
            estimate whose normalizers come from ``eval_normalizer`` with
            ``n_eval_importance_samples`` points per conditional, with
            ``density="proposal"`` exact, with ``density="kde"`` the
            normalised AEM-KDE.
        log_density_std : ndarray of shape (n_samples,)
            With ``return_std=True``: the estimated errors.
        """
        if not return_std:
            return self._terms(X).sum(axis=1)
        terms, variances = self._terms(X, return_variance=True)
        return terms.sum(axis=1), np.sqrt(variances.sum(axis=1))

    def score(self, X, y=None, return_std=False):
        """Mean log-likelihood of X (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to score.
        y : None
            Ignored; present for API consistency.
        return_std : bool, default=False
            Also return the estimate's error: the mean of the rows' errors
            (``score_samples(X, return_std=True)``). Rows share the
            importance noise or the quadrature rule, so their errors move
            together and the mean's error is at most the mean of theirs.
            It is the error of the normalizers' estimate alone; the spread
            of the rows' scores (their standard deviation over
            ``sqrt(n_samples)``) measures how well X represents the density.

        Returns
        -------
        score : float
            Mean of :meth:`score_samples` over the rows.
        score_std : float
            With ``return_std=True``: the estimated error of ``score``.
        """
        if not return_std:
            return float(np.mean(self.score_samples(X)))
        scores, errors = self.score_samples(X, return_std=True)
        return float(np.mean(scores)), float(np.mean(errors))

    def sample(self, n_samples=1, random_state=None):
        """Draw samples by autoregressive importance resampling.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds the draw.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            Samples in the units of the training data.
        """
        self._check_fitted_and_params()
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
        seed = int(check_random_state(random_state).randint(MAX_SEED))
        return backend.draw_rows(fitted_state(self), int(n_samples), seed, self.get_params())

    # --------------------------------------------------------------- pickle
    def __getstate__(self):
        state = self.__dict__.copy()
        if "model_" in state:  # the networks and Adam's state on the CPU
            portable = fitted_state(self).portable()
            state["model_"], state["_resume_point_"] = portable.model, portable.resume_point
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
