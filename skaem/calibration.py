"""Normalizer calibration (Section 4.2): estimates against converged integration."""

import copy
import math
import warnings
from collections.abc import Iterable
from numbers import Integral

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._estimator import fitted_state
from .normalizers import (
    importance_noise,
    importance_samples,
    log_normalizer,
    n_defensive_samples,
)


def _log_trapezoid(log_f: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``log of the trapezoidal integral of exp(log_f)`` over ``grid`` (last axis)."""
    h = grid[1] - grid[0]
    ends = torch.logaddexp(log_f[..., 0], log_f[..., -1]) - math.log(2)
    inner = torch.logsumexp(log_f[..., 1:-1], dim=-1)
    return torch.logaddexp(inner, ends) + torch.log(h)


@torch.no_grad()
def trapezoid_log_normalizer(
    energy,
    context,
    lo: float,
    hi: float,
    rtol: float = 1e-7,
    widen: bool = True,
    start: int = 1025,
    max_points: int = 2**22,
) -> torch.Tensor:
    """Log normalizer of one conditional, refined until it converges.

    The grid on ``[lo, hi]`` doubles in density until ``log Z`` changes by
    less than ``rtol`` (relative, with an absolute floor of ``rtol``), then the
    interval doubles in width until the tails add less than that (``widen=False``
    keeps a bounded support); this gives
    seven significant figures with the default ``rtol``, as in the paper.
    ``context`` is a projected context of shape (1, hidden). No grid has
    more than ``max_points`` points: where the tails have not converged by
    then (an energy that flattens far from the data, as an undertrained one
    can), a RuntimeWarning says so and the integral over the last interval
    is returned.
    """

    def integral(a, b, n):
        grid = torch.linspace(a, b, n, dtype=context.dtype, device=context.device)
        # In blocks along the grid, so that the activations stay bounded.
        log_f = torch.cat([energy(part.view(1, -1), context) for part in grid.split(2**16)], -1)
        return _log_trapezoid(log_f, grid)[0]

    def converged(new, old):
        return abs(new - old) <= rtol * max(1.0, abs(old))

    n, previous = start, integral(lo, hi, start)
    while n < max_points:
        n = 2 * n - 1
        current = integral(lo, hi, n)
        if converged(current.item(), previous.item()):
            break
        previous = current
    while widen:
        half = hi - lo
        if 2 * n - 1 > max_points or half > 1e6:
            warnings.warn(
                f"the quadrature's tails did not converge by [{lo:.4g}, {hi:.4g}]; "
                "the log normalizer covers that interval only.",
                RuntimeWarning,
                stacklevel=3,  # the caller, past torch.no_grad's wrapper
            )
            break
        wider = integral(lo - half / 2, hi + half / 2, 2 * n - 1)
        if converged(wider.item(), current.item()):
            return wider
        lo, hi, n, current = lo - half / 2, hi + half / 2, 2 * n - 1, wider
    return current


def normalizer_calibration(
    estimator,
    X,
    n_samples=(10, 20, 100, 1000),
    features=None,
    rtol=1e-7,
    random_state=None,
    include_data=None,
    eval_normalizer=None,
) -> dict:
    """Compare estimated log normalizers with converged integration (Figure 5).

    For every row of X and every feature, the conditional ``p(x_d | x_<d)``
    of a fitted :class:`~skaem.AEMDensity` is integrated by a log-space
    trapezoidal rule refined until it converges, and estimated by importance
    sampling at each number of samples, with the estimator's own sampler
    (defensive fraction and stratification included) and, by default, its
    own estimator: the data point counted among the samples where
    ``normalizer_includes_data`` is set, as :meth:`~skaem.AEMDensity.score_samples`
    does; or, with ``eval_normalizer="quadrature"``, by the estimator's
    quadrature rule at each number of nodes.

    Parameters
    ----------
    estimator : AEMDensity
        A fitted estimator with a Gaussian or uniform proposal.
    X : array-like of shape (n_rows, n_features)
        Rows whose prefixes ``x_<d`` define the conditionals.
    n_samples : sequence of int, default=(10, 20, 100, 1000)
        Numbers of importance samples to evaluate.
    features : sequence of int, default=None
        Features (0-based) to calibrate; all by default.
    rtol : float, default=1e-7
        Convergence tolerance of the quadrature.
    random_state : int, RandomState instance or None, default=None
        Seeds the importance samples.
    include_data : bool or None, default=None
        Count the row's own point among the samples (``True``), or not, the
        paper's eq. 8 (``False``); None follows the estimator's
        ``normalizer_includes_data``, so that what is calibrated is what is
        scored. Counting the point biases the estimate of ``log Z`` high on
        average over data rows, eq. 8 biases it low.
    eval_normalizer : {"quadrature", "sampling"} or None, default=None
        The estimates to calibrate: the quadrature rule or importance
        samples; None follows the estimator's ``eval_normalizer`` (sampled
        where quadrature does not apply, as in scoring).

    Returns
    -------
    result : dict
        ``"log_z"``: (n_rows, n_selected) quadrature log normalizers;
        ``"estimates"``: (len(n_samples), n_rows, n_selected) estimates;
        ``"relative_error"``: ``|estimate - log_z| / max(|log_z|, 1)``, same shape;
        ``"n_samples"`` and ``"features"`` as used.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem import AEMDensity, normalizer_calibration
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> aem = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                  energy_n_blocks=1, context_features=4, max_iter=10, warmup_steps=5,
    ...                  random_state=0).fit(X)
    >>> result = normalizer_calibration(aem, X[:3], n_samples=[10, 100], random_state=0)
    >>> result["relative_error"].shape
    (2, 3, 2)
    """
    check_is_fitted(estimator)
    X = validate_data(estimator, X, reset=False, dtype=[np.float64, np.float32])
    features = _check_ints("features", range(X.shape[1]) if features is None else features,
                           low=0, high=X.shape[1] - 1)  # fmt: skip
    n_samples = _check_ints("n_samples", n_samples, low=1)
    if not rtol > 0:
        raise ValueError(f"rtol must be positive; got {rtol!r}.")
    seed = int(check_random_state(random_state).randint(2**31 - 1))
    if include_data is None:
        include_data = estimator.normalizer_includes_data
    model = copy.deepcopy(estimator.model_).cpu().double().eval()
    x = fitted_state(estimator).to_networks(X, "cpu").double()
    with torch.no_grad():
        params, context = model.conditionals(x)
    log_z = _quadrature(model, params, context, features, rtol)
    generator = torch.Generator().manual_seed(seed)
    fraction = estimator.defensive_fraction
    stratified = estimator.importance_sampling == "stratified"
    data = x if include_data else None
    if eval_normalizer is None:
        eval_normalizer = estimator.eval_normalizer
    if eval_normalizer not in ("quadrature", "sampling"):
        raise ValueError(
            f"eval_normalizer must be 'quadrature', 'sampling' or None; got {eval_normalizer!r}."
        )
    if eval_normalizer == "quadrature" and model.quadrature_applies():
        estimates = np.stack(
            [_rule_estimates(model, params, context, features, s) for s in n_samples]
        )
    else:
        estimates = np.stack(
            [
                _is_estimates(
                    model, params, context, features, s, fraction, stratified, generator, data
                )
                for s in n_samples
            ]
        )
    return {
        "log_z": log_z,
        "estimates": estimates,
        "relative_error": np.abs(estimates - log_z) / np.maximum(np.abs(log_z), 1.0),
        "n_samples": np.array(n_samples),
        "features": np.array(features),
    }


def _check_ints(name, values, low, high=None) -> list[int]:
    """``values`` as a non-empty list of ints in [low, high], or a ValueError naming them."""
    values = list(values) if isinstance(values, Iterable) else [values]
    bad = [
        v for v in values
        if not isinstance(v, Integral) or v < low or (high is not None and v > high)
    ]  # fmt: skip
    if bad or not values:
        bound = f"integers >= {low}" if high is None else f"integers in [{low}, {high}]"
        raise ValueError(f"{name} must be a non-empty sequence of {bound}; got {values!r}.")
    return [int(v) for v in values]


def _quadrature(model, params, context, features, rtol):
    out = np.empty((params.shape[0], len(features)))
    for j, d in enumerate(features):
        proposal = model.proposal.restrict(d)
        for i in range(params.shape[0]):
            lo, hi = _support(proposal, params[i, d])
            p = params[i, d : d + 1]

            def log_f(points, c, proposal=proposal, p=p):
                return model.log_unnormalized(proposal, p, c, points)

            out[i, j] = trapezoid_log_normalizer(
                log_f, context[i, d : d + 1], lo, hi, rtol, widen=proposal.n_params > 0
            ).item()
    return out


def _support(proposal, params):
    """An interval holding the proposal's mass (widened later if needed)."""
    if proposal.n_params == 0:
        return proposal.low.item(), proposal.high.item()
    _, loc, scale = proposal.split(params)
    return (loc - 10 * scale).min().item(), (loc + 10 * scale).max().item()


@torch.no_grad()
def _rule_estimates(model, params, context, features, n_nodes):
    """The quadrature rule's log normalizers (the first feature's converged once)."""
    out = np.empty((params.shape[0], len(features)))
    for j, d in enumerate(features):
        if d == 0:
            out[:, j] = model.first_log_normalizer(n_nodes)[0].item()
            continue
        proposal = model.proposal.restrict(d)
        p, c = params[:, d : d + 1], context[:, d : d + 1]
        out[:, j] = model.quadrature_log_normalizer(proposal, p, c, n_nodes)[:, 0].numpy()
    return out


@torch.no_grad()
def _is_estimates(
    model, params, context, features, n_samples, fraction, stratified, generator, data=None
):
    """Independent estimates for every row (fresh noise per row and feature),
    counting the rows' own points ``data`` (N, D) among the samples if given."""
    out = np.empty((params.shape[0], len(features)))
    shape = (params.shape[0], 1, n_samples)
    for j, d in enumerate(features):
        proposal = model.proposal.restrict(d)
        n_heavy = n_defensive_samples(proposal, n_samples, fraction)
        p, c = params[:, d : d + 1], context[:, d : d + 1]
        # Paired strata where stratified, as score_samples draws them.
        u, e = importance_noise(
            shape, n_heavy, generator, stratified, dtype=torch.float64, paired=True
        )
        s = importance_samples(proposal, p, u, e, n_heavy, stratified)
        _, log_w = model.importance_log_weights(proposal, p, c, s, n_heavy, n_samples)
        log_w_data = None
        if data is not None:
            point = data[:, d].view(-1, 1, 1)
            _, log_w_data = model.importance_log_weights(proposal, p, c, point, n_heavy, n_samples)
            log_w_data = log_w_data[..., 0]
        out[:, j] = log_normalizer(log_w, log_w_data)[:, 0].numpy()
    return out
