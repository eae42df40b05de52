"""The backend's entry points: fit, score and sample an AEM on numpy rows.

The estimators (:mod:`skaem._estimator`) hold parameters, validation and the
scikit-learn contract, and delegate here. This module knows nothing of
scikit-learn: it takes the estimator's parameters as a plain dict, already
validated, and owns what lies between numpy rows and the torch modules: the
scaling to the networks' units, devices, seeds, the processes of a
data-parallel fit, and copies fit to pickle. A fit's result is a
:class:`FittedState`.
"""

import copy
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from . import collective
from ._device import resolve_device, seeded
from .inference import conditional_log_densities, sample_rows
from .model import AEM, coarse_columns
from .proposal import UniformProposal, make_proposal
from .threads import governed_threads
from .training import ResumePoint, TrainingConfig, train

MAX_SEED = 2**31 - 1
# early_stopping="auto" holds out validation rows where the step budget below
# would pass over the training rows this many times or more (and at least
# this many rows would be held out); max_iter="auto" then takes the whole
# budget and the validation curve decides where to stop. A fixed 50 passes
# left the AEM far from converged on many-mode data (diamond, 5,000 rows:
# -2.42 against -2.15 stopped by validation) and overfit small data sets,
# while on data the budget cannot overfit, validation only cost rows and cut
# the anneal short (25,000 checkerboard rows: -3.520 against -3.508;
# benchmarks/results_quality*.txt, docs/user_guide/parameters.rst). Even 5
# held-out rows see a small data set's overfitting, which costs nats a row
# (iris, 90 rows, seeds 0-2: -3.9 / -9.7 / -3.3 validated against -12.8 /
# -17.6 / -13.8 after 500 steps).
_AUTO_EARLY_STOPPING_PASSES = 100
_AUTO_EARLY_STOPPING_ROWS = 5
# max_iter="auto": at most _AUTO_STEP_BUDGET / n_features steps and at least
# _AUTO_MIN_STEPS (a step costs about n_features times a 1-D step: the budget
# is a few minutes on two CPU cores). Without early stopping, _AUTO_PASSES
# passes over the training rows at two features, within those bounds and at
# least _AUTO_MIN_PASS_STEPS steps (the default warm-up's 50 and as many
# for the energy: more steps are more passes over fewer rows, which
# overfit); with more features, fewer passes (times
# (2 / n_features) ** _AUTO_PASSES_EXPONENT): a later conditional has more
# inputs, which the rows fill more thinly, so it overfits sooner.
_AUTO_PASSES = 50
_AUTO_PASSES_EXPONENT = 0.25
_AUTO_MIN_PASS_STEPS = 100
_AUTO_MIN_STEPS = 1000
_AUTO_STEP_BUDGET = 10000
# Above _AUTO_BUDGET_ROWS rows the budget grows with them, up to
# _AUTO_BUDGET_GROWTH times: 50 passes cannot overfit there, and the budget,
# not the rows, had left the fit short (household power, 100,000 x 7 rows:
# 9.7 nats at 1,428 steps, 11.4 at 2,856; docs/design.md).
_AUTO_BUDGET_ROWS = 25_000
_AUTO_BUDGET_GROWTH = 2.0
# eval_interval="auto": record the curve (and validate) every
# _AUTO_EVAL_PASSES passes over the training rows, at most every
# _AUTO_EVAL_STEPS steps. Small data sets peak within a few dozen passes
# (wine, 95 training rows, one step a pass: within the 50-step warm-up),
# which evaluations 50 passes apart stepped over. From 853 training rows
# on, 15 passes are 50 steps or more, so fits of about 950 rows or more
# are unchanged: every 3 passes also cut the patience to 30 passes, which
# ended 1,000-row fits of heavy6 too soon (-0.124 +- 0.042, docs/design.md).
_AUTO_EVAL_PASSES = 15
_AUTO_EVAL_STEPS = 50
# n_eval_importance_samples="auto": 200 quadrature nodes came closer to the
# exact log-likelihood than 1,000 stratified samples, the sampling default,
# on the benchmark tasks (benchmarks/normalizer_variance.py).
AUTO_QUADRATURE_NODES = 200
AUTO_IMPORTANCE_SAMPLES = 1000
# Parameters fixed in the networks and the scaling when they are built; a
# warm start keeps them.
MODEL_PARAMS = (
    "hidden_features",
    "n_blocks",
    "context_features",
    "energy_hidden_features",
    "energy_n_blocks",
    "activation",
    "energy_activation",
    "dropout",
    "energy_dropout",
    "energy_base",
    "proposal",
    "n_components",
    "min_scale",
    "uniform_bounds",
    "standardize",
)


@dataclass
class FittedState:
    """What a fit leaves: the networks, the scaling between the data's units
    and theirs, the seeds, the training curves, and what a later fit needs
    to go on.

    :class:`~skaem.AEMDensity` keeps each field as a fitted attribute
    (``model_``, ``mean_``, ``n_iter_``, ...).

    Parameters
    ----------
    model : AEM
        The networks (:class:`skaem.model.AEM`).
    mean, scale : ndarray of shape (n_features,)
        The networks see a row ``x`` as ``(x - mean) / scale``.
    data_min, data_max : ndarray of shape (n_features,)
        The training data's column ranges.
    seed : int or None
        The first fit's seed: a warm start holds out the same validation rows.
    scoring_seed : int
        Fixes the importance noise of scoring and validation.
    model_params : dict or None
        The parameters the networks were built with.
    early_stopping : bool
        Whether the last fit held out validation rows.
    n_iter : int
        Optimisation steps taken, over every fit.
    eval_steps, train_scores, validation_scores : ndarray
        The training curves in the data's units, one entry per evaluation
        (``validation_scores`` None without early stopping).
    best_validation_score : float or None
        The best validation score of the last fit with early stopping.
    resume_point : ResumePoint or None
        Optimiser, schedule and batch state, for a warm start to go on.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem import AEMDensity, backend
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> params = AEMDensity(hidden_features=16, n_blocks=1, context_features=4,
    ...                     energy_hidden_features=16, energy_n_blocks=1,
    ...                     max_iter=10, warmup_steps=5).get_params()
    >>> state = backend.fit_networks(params, X, seed=0)
    >>> state.to_networks(X[:3], "cpu").shape
    torch.Size([3, 2])
    """

    model: AEM
    mean: np.ndarray
    scale: np.ndarray
    data_min: np.ndarray
    data_max: np.ndarray
    seed: int | None
    scoring_seed: int
    model_params: dict | None = None
    early_stopping: bool = False
    n_iter: int = 0
    eval_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    train_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    validation_scores: np.ndarray | None = None
    best_validation_score: float | None = None
    resume_point: ResumePoint | None = None

    @property
    def log_jacobian(self) -> float:
        """``log |d z / d x|`` of the scaling, which every log-density in the
        networks' units carries against the data's units."""
        return float(np.log(self.scale).sum())

    def to_networks(self, X: np.ndarray, device, check_range: bool = False) -> torch.Tensor:
        """Rows ``X`` (data units) as a float32 tensor in the networks' units.

        ``check_range`` raises where a value leaves float32's range (training
        data; scoring maps such values to a density of zero instead).
        """
        z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        if check_range:
            _check_float32_range(z)
        return torch.as_tensor(z, dtype=torch.float32, device=device)

    def to_data(self, z: torch.Tensor) -> np.ndarray:
        """Rows in the networks' units back in the data's, as float64."""
        return z.double().cpu().numpy() * self.scale + self.mean

    def portable(self) -> "FittedState":
        """A copy on the CPU, for pickling, that leaves this state's devices as they are."""
        resume = None if self.resume_point is None else self.resume_point.cpu()
        return replace(self, model=copy.deepcopy(self.model).cpu(), resume_point=resume)


class FitInterrupted(Exception):
    """Training stopped by an interrupt; ``state`` holds what it kept."""

    def __init__(self, state: FittedState):
        super().__init__("training was interrupted")
        self.state = state


def fit_networks(
    params: dict,
    X: np.ndarray,
    seed: int,
    state: FittedState | None = None,
    repeatable: bool = True,
) -> FittedState:
    """Train new networks on the rows ``X``, or go on training ``state`` (a warm start).

    A pure function of its arguments when ``state`` is None, so that it can
    be cached.

    Parameters
    ----------
    params : dict
        :class:`~skaem.AEMDensity`'s parameters (``get_params()``), valid.
    X : ndarray of shape (n_samples, n_features)
        Training rows.
    seed : int
        Seeds the validation split, the initial weights, the batches and
        the scoring noise.
    state : FittedState or None, default=None
        A fitted state to train on from (modified in place), or None for new
        networks.
    repeatable : bool, default=True
        Whether the same seed must give the same bits whatever else runs on
        the machine: if so, training keeps torch's thread count unless
        :func:`skaem.threads.adaptive_threads` allows more; if not, it
        takes fewer threads while other processes keep the cores busy.

    Returns
    -------
    state : FittedState
        The trained networks and their curves.

    Raises
    ------
    FitInterrupted
        After an interrupt (Ctrl-C); its ``state`` holds the training kept.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem import AEMDensity, backend
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> params = AEMDensity(hidden_features=16, n_blocks=1, context_features=4,
    ...                     energy_hidden_features=16, energy_n_blocks=1,
    ...                     max_iter=10, warmup_steps=5).get_params()
    >>> state = backend.fit_networks(params, X, seed=0)
    >>> state.n_iter
    10
    """
    continuing = state is not None
    device = resolve_device(params["device"])
    rng = np.random.RandomState(seed)
    early_stopping = early_stopping_for(params, *X.shape)
    x_train, x_valid = _split(X, rng, early_stopping, params["validation_fraction"])
    init_seed, train_seed = rng.randint(MAX_SEED, size=2)
    group = collective.active()
    rank = 0 if group is None else group.rank
    governed = device.type == "cpu" and group is None
    with (
        seeded(int(init_seed), device),
        governed_threads(governed, changes_promised_results=repeatable),
    ):
        if continuing:
            state.early_stopping = early_stopping
        else:
            state = _new_state(params, X, seed, early_stopping)
            state.scoring_seed = int(rng.randint(MAX_SEED))
        _check_inside_box(state, X)
        state.model.to(device)
        train_tensor = state.to_networks(x_train, device, check_range=True)
        if not continuing:  # from the training rows only: validation stays unseen
            state.model.initialize_proposal(train_tensor)
        history = train(
            state.model,
            train_tensor,
            None if x_valid is None else state.to_networks(x_valid, device, check_range=True),
            _training_config(
                params,
                _fit_steps(params, X, early_stopping, state),
                eval_interval_for(params, len(x_train)),
                state,
            ),
            # Each process, and each later cycle of a warm start, its own batches.
            torch.Generator(device).manual_seed(int(train_seed) + rank + 10007 * state.n_iter),
            step_offset=state.n_iter,
            group=group,
            resume=state.resume_point if continuing else None,
        )
    state.resume_point = history.resume_point
    _record(state, history)
    if history.interrupted:
        raise FitInterrupted(state)
    return state


def log_density_terms(
    state: FittedState, X: np.ndarray, params: dict, return_variance: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``log p(x_d | x_<d)`` of each row and feature in the data's units.

    Parameters
    ----------
    state : FittedState
        A fit's result.
    X : ndarray of shape (n_samples, n_features)
        Rows to score.
    params : dict
        The estimator's parameters: ``density`` chooses the AEM's
        importance-sampling estimate, the AEM-KDE or the proposal, and the
        scoring parameters (``n_eval_importance_samples``, ...) apply.
    return_variance : bool, default=False
        Also return each term's variance over the importance noise.

    Returns
    -------
    terms : ndarray of shape (n_samples, n_features)
        Rows sum to the log-density; -inf where a value is beyond float range.
    variances : ndarray of shape (n_samples, n_features)
        With ``return_variance``: the delta-method variance of each term
        (:func:`skaem.normalizers.log_normalizer_variance`); zero for the
        proposal, which is exact, and for the AEM-KDE, a normalised density
        for its fixed samples.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem import AEMDensity, backend
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> params = AEMDensity(hidden_features=16, n_blocks=1, context_features=4,
    ...                     energy_hidden_features=16, energy_n_blocks=1,
    ...                     max_iter=10, warmup_steps=5).get_params()
    >>> state = backend.fit_networks(params, X, seed=0)
    >>> backend.log_density_terms(state, X[:3], params).shape
    (3, 2)
    """
    model, device = _placed(state, params["device"])
    normalizer = params["eval_normalizer"]
    if params["density"] != "aem" or not model.quadrature_applies():
        normalizer = "sampling"
    n_points = params["n_eval_importance_samples"]
    if n_points == "auto":
        n_points = AUTO_QUADRATURE_NODES if normalizer == "quadrature" else AUTO_IMPORTANCE_SAMPLES
    governed = _worth_governing(device, len(X) * X.shape[1] * n_points)
    with governed_threads(governed):
        result = conditional_log_densities(
            model,
            state.to_networks(X, device),
            n_points,
            state.scoring_seed,
            params["density"],
            params["normalizer_includes_data"],
            params["defensive_fraction"],
            (params["kde_bandwidth"], params["kde_proposal_weight"]),
            stratified=params["importance_sampling"] == "stratified",
            precision=params["precision"],
            return_variance=return_variance,
            normalizer=normalizer,
        )
    terms, variances = result if return_variance else (result, None)
    terms = terms.double().cpu().numpy() - np.log(state.scale)
    # A NaN can only come from float overflow on inputs far outside the
    # data, whose density is zero to working precision.
    terms[np.isnan(terms)] = -np.inf
    if not return_variance:
        return terms
    variances = variances.double().cpu().numpy()
    variances[np.isneginf(terms)] = 0.0
    return terms, variances


def draw_rows(state: FittedState, n_samples: int, seed: int, params: dict) -> np.ndarray:
    """Draw rows by autoregressive importance resampling.

    Parameters
    ----------
    state : FittedState
        A fit's result.
    n_samples : int
        Number of rows.
    seed : int
        Seeds the draw.
    params : dict
        The estimator's parameters: ``density`` chooses the AEM, the AEM-KDE
        or the proposal; ``n_sampling_proposals`` the candidates a feature.

    Returns
    -------
    rows : ndarray of shape (n_samples, n_features)
        In the data's units.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem import AEMDensity, backend
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> params = AEMDensity(hidden_features=16, n_blocks=1, context_features=4,
    ...                     energy_hidden_features=16, energy_n_blocks=1,
    ...                     max_iter=10, warmup_steps=5).get_params()
    >>> state = backend.fit_networks(params, X, seed=0)
    >>> backend.draw_rows(state, 4, seed=1, params=params).shape
    (4, 2)
    """
    model, device = _placed(state, params["device"])
    density = params["density"]
    with governed_threads(_worth_governing(device, n_samples * params["n_sampling_proposals"])):
        z = sample_rows(
            model,
            n_samples,
            params["n_sampling_proposals"],
            seed,
            resample=density != "proposal",
            defensive_fraction=params["defensive_fraction"],
            kde=(params["kde_bandwidth"], params["kde_proposal_weight"])
            if density == "kde"
            else None,
            precision=params["precision"],
        )
    return state.to_data(z)


def _worth_governing(device: torch.device, n_evaluations: int) -> bool:
    """Whether work of about ``n_evaluations`` energy evaluations is long
    enough (tenths of a second and up) to pay for the thread governor's
    first decision, which takes a few milliseconds."""
    return device.type == "cpu" and n_evaluations >= 2**20


def max_iter_for(
    params: dict,
    n_samples: int,
    n_features: int,
    early_stopping: bool | None = None,
    n_coarse: int = 0,
) -> int:
    """Optimisation steps of a fit on ``n_samples`` rows (resolves ``max_iter="auto"``).

    Parameters
    ----------
    params : dict
        The estimator's parameters (``max_iter``, ``batch_size`` and
        ``early_stopping`` count).
    n_samples, n_features : int
        The training data's shape.
    early_stopping : bool, default=None
        Whether the fit validates; None resolves ``params`` (see
        :func:`early_stopping_for`).
    n_coarse : int, default=0
        Columns recorded coarsely (:func:`coarse_column_count`), which do
        not count among the features that cut the passes.

    Returns
    -------
    max_iter : int
        ``max_iter``, or for "auto" ``max(1000, 10000 // n_features)`` steps
        where validation decides where to stop, else
        ``50 * min(1, 2 / n_continuous) ** 0.25`` passes over the rows
        within that budget and at least 100 steps (50 passes at two
        continuous features, 35 at eight; ``n_continuous`` is
        ``n_features - n_coarse``). Above 25,000 rows the ``10000 // n_features``
        grows in proportion to the rows, up to twice at 50,000. Training
        data-parallel, every process takes rank 0's count.

    Examples
    --------
    >>> from skaem import AEMDensity, backend
    >>> backend.max_iter_for(AEMDensity().get_params(), 5000, 2)  # validated
    5000
    >>> backend.max_iter_for(AEMDensity().get_params(), 25000, 2)  # 50 passes
    4883
    >>> backend.max_iter_for(AEMDensity().get_params(), 5000, 6)  # 38 passes
    742
    >>> backend.max_iter_for(AEMDensity().get_params(), 100000, 7)  # twice 10000 // 7
    2856
    """
    if params["max_iter"] != "auto":
        return params["max_iter"]
    if early_stopping is None:
        early_stopping = early_stopping_for(params, n_samples, n_features)
    most = _step_budget(n_samples, n_features)
    steps = _auto_passes(n_features - n_coarse) * n_samples / min(params["batch_size"], n_samples)
    steps = most if early_stopping else int(np.clip(round(steps), _AUTO_MIN_PASS_STEPS, most))
    group = collective.active()
    if group is not None:  # shards a row apart can round to different counts: rank 0 decides
        steps = group.broadcast_int(steps)
    return steps


def _fit_steps(params, X, early_stopping, state) -> int:
    # The coarse columns as the model found them on the training rows.
    n_coarse = state.model.n_coarse_columns
    return max_iter_for(params, *X.shape, early_stopping, n_coarse)


def shared_seed(seed: int) -> int:
    """``seed``, or rank 0's where the processes train one model data-parallel."""
    group = collective.active()
    return seed if group is None else group.broadcast_int(seed)


def _new_state(params, X, seed, early_stopping) -> FittedState:
    low, high = _column_range(X)
    constant = np.flatnonzero(high == low)
    if constant.size:
        raise ValueError(
            f"AEMDensity cannot model constant features (column(s) "
            f"{constant.tolist()}): their density is a point mass. Remove them, "
            "e.g. with sklearn.feature_selection.VarianceThreshold in a Pipeline."
        )
    mean, scale = _scaling(params, X, low, high)
    box = _uniform_box(params, low, high, mean, scale) if params["proposal"] == "uniform" else None
    return FittedState(
        model=build_model(params, X.shape[1], box),
        mean=mean,
        scale=scale,
        data_min=low,
        data_max=high,
        seed=seed,
        scoring_seed=0,  # drawn by the caller, after the networks' seeds
        model_params={name: params[name] for name in MODEL_PARAMS},
        early_stopping=early_stopping,
        validation_scores=np.zeros(0) if early_stopping else None,
    )


def build_model(params: dict, n_features: int, box=None) -> AEM:
    """The networks that ``params`` describe; ``box`` = (low, high) tensors
    in the networks' units for the uniform proposal."""
    low, high = (None, None) if box is None else box
    proposal = make_proposal(
        params["proposal"], params["n_components"], params["min_scale"], low, high
    )
    return AEM(
        n_features,
        proposal,
        hidden_features=params["hidden_features"],
        n_blocks=params["n_blocks"],
        context_features=params["context_features"],
        energy_hidden_features=params["energy_hidden_features"],
        energy_n_blocks=params["energy_n_blocks"],
        activation=params["activation"],
        energy_activation=params["energy_activation"],
        dropout=params["dropout"],
        energy_dropout=params["energy_dropout"],
        energy_base=params["energy_base"],
    )


def _uniform_box(params, low, high, mean, scale):
    """The uniform proposal's box in the networks' units: ``uniform_bounds``,
    or the data's range widened by 5%."""
    n_features = len(low)
    if params["uniform_bounds"] is None:
        margin = 0.05 * (high - low)
        low, high = low - margin, high + margin
    else:
        bounds = np.asarray(params["uniform_bounds"], dtype=np.float64)
        if bounds.shape == (2,):  # one interval for every feature
            bounds = np.repeat(bounds[:, None], n_features, axis=1)
        if (
            bounds.shape != (2, n_features)
            or not np.all(np.isfinite(bounds))
            or not np.all(bounds[0] < bounds[1])
        ):
            raise ValueError(
                "uniform_bounds must be finite, of shape (2,) or (2, n_features) "
                f"with lower bounds below upper bounds; got {params['uniform_bounds']!r}."
            )
        low, high = bounds
    return (
        torch.as_tensor((low - mean) / scale, dtype=torch.float32),
        torch.as_tensor((high - mean) / scale, dtype=torch.float32),
    )


def early_stopping_for(params: dict, n_samples: int, n_features: int) -> bool:
    """Whether a fit on ``n_samples`` rows holds out validation rows
    (resolves ``early_stopping="auto"``: where the step budget, or
    ``max_iter``, passes over the rows 100 times or more, and at least 5
    rows would be held out)."""
    if params["early_stopping"] != "auto":
        return bool(params["early_stopping"])
    steps = params["max_iter"]
    if steps == "auto":
        steps = _step_budget(n_samples, n_features)
    passes = steps * min(params["batch_size"], n_samples) / n_samples
    n_valid = _n_validation_rows(params["validation_fraction"], n_samples)
    auto = passes >= _AUTO_EARLY_STOPPING_PASSES and n_valid >= _AUTO_EARLY_STOPPING_ROWS
    group = collective.active()
    if group is not None:  # the processes must all validate, or none: rank 0 decides
        auto = bool(group.broadcast_int(int(auto)))
    return auto


def eval_interval_for(params: dict, n_train: int) -> int:
    """Steps between two evaluations of a fit on ``n_train`` training rows
    (resolves ``eval_interval="auto"``: every 15 passes over the rows, at
    most every 50 steps; rank 0's count where training data-parallel).

    Examples
    --------
    >>> from skaem import AEMDensity, backend
    >>> backend.eval_interval_for(AEMDensity().get_params(), 900)  # 3.5 steps a pass
    50
    >>> backend.eval_interval_for(AEMDensity().get_params(), 307)  # 1.2 steps a pass
    18
    >>> backend.eval_interval_for(AEMDensity().get_params(), 95)  # one step a pass
    15
    """
    if params["eval_interval"] != "auto":
        return params["eval_interval"]
    steps_per_pass = n_train / min(params["batch_size"], n_train)
    interval = int(min(_AUTO_EVAL_STEPS, max(1, round(_AUTO_EVAL_PASSES * steps_per_pass))))
    group = collective.active()
    if group is not None:  # the processes must evaluate, and so stop, together
        interval = group.broadcast_int(interval)
    return interval


def _auto_passes(n_continuous: int) -> float:
    return _AUTO_PASSES * min(1.0, 2 / max(n_continuous, 1)) ** _AUTO_PASSES_EXPONENT


def coarse_column_count(params: dict, X: np.ndarray) -> int:
    """How many columns of ``X`` a fresh fit on all its rows records as
    coarse (:func:`skaem.model.coarse_columns`, in the networks' units), as
    :func:`max_iter_for` counts them."""
    if params["proposal"] != "gaussian":  # the uniform proposal has no scales to sharpen
        return 0
    X = np.asarray(X, dtype=np.float64)
    mean, scale = _scaling(params, X, *_column_range(X))
    z = (X - mean) / np.where(scale > 0, scale, 1.0)  # a constant column fails in fit instead
    return int(coarse_columns(torch.as_tensor(z, dtype=torch.float32), params["min_scale"]).sum())


def _step_budget(n_samples: int, n_features: int) -> int:
    growth = min(max(n_samples / _AUTO_BUDGET_ROWS, 1.0), _AUTO_BUDGET_GROWTH)
    return max(_AUTO_MIN_STEPS, round(growth * (_AUTO_STEP_BUDGET // n_features)))


def _n_validation_rows(fraction: float, n_samples: int) -> int:
    return max(1, round(fraction * n_samples))


def _split(X, rng, early_stopping, fraction):
    """Training and validation rows (None without early stopping)."""
    if not early_stopping:
        return X, None
    n_valid = _n_validation_rows(fraction, X.shape[0])
    if X.shape[0] - n_valid < 2:
        raise ValueError(
            f"early_stopping with validation_fraction={fraction} "
            f"leaves fewer than 2 training rows out of n_samples={X.shape[0]}."
        )
    perm = rng.permutation(X.shape[0])
    return X[perm[n_valid:]], X[perm[:n_valid]]


def _training_config(
    params: dict, max_iter: int, eval_interval: int, state: FittedState
) -> TrainingConfig:
    return TrainingConfig(
        max_iter=max_iter,
        batch_size=params["batch_size"],
        learning_rate=params["learning_rate"],
        warmup_steps=params["warmup_steps"],
        n_importance_samples=params["n_importance_samples"],
        include_data=params["normalizer_includes_data"],
        defensive_fraction=params["defensive_fraction"],
        stratified=params["importance_sampling"] == "stratified",
        precision=params["precision"],
        cuda_graph=True,  # replays each step from a CUDA graph on GPUs
        eval_interval=eval_interval,
        n_iter_no_change=params["n_iter_no_change"] if state.early_stopping else None,
        validation_seed=state.scoring_seed,
        verbose=params["verbose"],
    )


def _record(state: FittedState, history) -> None:
    """Append a training run's curves (in the data's units) to ``state``."""
    log_det = state.log_jacobian
    steps = state.n_iter + np.asarray(history.steps, dtype=int)
    state.eval_steps = np.concatenate([state.eval_steps, steps])
    train_scores = np.asarray(history.train_scores) - log_det
    state.train_scores = np.concatenate([state.train_scores, train_scores])
    if state.early_stopping:
        scores = np.asarray(history.validation_scores) - log_det
        previous = np.zeros(0) if state.validation_scores is None else state.validation_scores
        state.validation_scores = np.concatenate([previous, scores])
        if history.best_step in history.steps:
            best = scores[history.steps.index(history.best_step)]
            state.best_validation_score = float(best)
        _warn_if_below_proposal(state, history.proposal_validation_score, log_det)
    state.n_iter += history.n_iter


def _warn_if_below_proposal(state, proposal_score, log_det):
    """Warn where the held-out rows score lower under the AEM than under its proposal."""
    if proposal_score is None or state.best_validation_score is None:
        return
    proposal_score -= log_det
    if state.best_validation_score < proposal_score:
        warnings.warn(
            f"On the held-out validation rows the AEM scored "
            f"{state.best_validation_score:.4f}, below its own proposal's "
            f"{proposal_score:.4f}: the energy network has not improved on the "
            "proposal. Train longer (max_iter), or use density='proposal'.",
            UserWarning,
            stacklevel=5,  # the caller of fit, past the estimator and the cache
        )


def _placed(state: FittedState, device_param: str):
    """The networks on the device that ``device_param`` resolves to, and that device."""
    device = resolve_device(device_param, strict=False)
    if next(state.model.parameters()).device != device:
        state.model.to(device)
    return state.model, device


def _column_range(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column minima and maxima, over all processes when training data-parallel."""
    low, high = X.min(axis=0), X.max(axis=0)
    group = collective.active()
    if group is None:
        return low, high
    return group.min(low), group.max(high)


def _scaling(params: dict, X: np.ndarray, low: np.ndarray, high: np.ndarray):
    """The means and scales that take ``X`` to the networks' units."""
    if params["standardize"]:
        return _column_moments(X, low, high)
    return np.zeros(X.shape[1]), np.ones(X.shape[1])


def _column_moments(
    X: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations, over all processes when data-parallel.

    ``low`` and ``high`` are the columns' ranges. The moments are taken in
    float64 on each column divided by its largest magnitude, so that squares
    neither overflow (data near 1e200, or 1e30 in float32) nor underflow to a
    zero deviation (data near 1e-300), whatever the data's units.
    """
    unit = np.maximum(np.abs(low), np.abs(high)).astype(np.float64)
    unit[unit == 0] = 1.0
    X = np.asarray(X, dtype=np.float64) / unit
    group = collective.active()
    if group is None:
        return X.mean(axis=0) * unit, X.std(axis=0) * unit
    n_rows = group.sum([X.shape[0]])[0]
    mean = group.sum(X.sum(axis=0)) / n_rows
    # Two passes: sums of squared deviations do not cancel as sum(x^2) - n mean^2 can.
    variance = group.sum(((X - mean) ** 2).sum(axis=0)) / n_rows
    return mean * unit, np.sqrt(variance) * unit


def _check_float32_range(z: np.ndarray) -> None:
    """Raise unless the scaled training data ``z`` fits in float32, the
    networks' precision: beyond it they would see infinities and the loss too."""
    outside = np.flatnonzero(np.abs(z).max(axis=0) > np.finfo(np.float32).max)
    if outside.size:
        raise ValueError(
            f"Feature(s) {outside.tolist()} of X exceed float32's range (3.4e38) "
            "after scaling, and the networks compute in float32. Use "
            "standardize=True or rescale X."
        )


def _check_inside_box(state: FittedState, X: np.ndarray) -> None:
    """Raise unless X lies in the uniform proposal's box, outside which the
    model's density is zero: the loss would be infinite."""
    proposal = state.model.proposal
    if not isinstance(proposal, UniformProposal):
        return
    low, high = (t.double().cpu().numpy() * state.scale + state.mean
                 for t in (proposal.low, proposal.high))  # fmt: skip
    data_low, data_high = _column_range(X)
    slack = 1e-6 * (high - low)  # the box's round trip through float32
    outside = np.flatnonzero((data_low < low - slack) | (data_high > high + slack))
    if outside.size:
        raise ValueError(
            "the training data must lie inside the uniform proposal's box "
            "(uniform_bounds, or the first fit's range widened by 5%); column(s) "
            f"{outside.tolist()} have values outside it."
        )
