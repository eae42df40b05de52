"""OrderingEnsemble: the mixture over feature orders."""

import os
import pickle

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity
from sklearn.utils.estimator_checks import parametrize_with_checks

from skaem import OrderingEnsemble
from skaem.ensemble import feature_orderings
from tests.test_sklearn_checks import TINY_CHECKED


@parametrize_with_checks([OrderingEnsemble(KernelDensity(bandwidth=0.5))])
def test_sklearn_compatible_ensemble(estimator, check):
    check(estimator)


def _skewed_rows(n=300, seed=0):
    """Columns on different scales and places, so that a column swap shows."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.normal(0.0, 1.0, n), rng.normal(10.0, 3.0, n)])


@pytest.mark.parametrize("n_features, n_orderings", [(1, 3), (2, 2), (3, 5), (4, 6)])
def test_orderings_are_identity_reverse_then_distinct_permutations(n_features, n_orderings):
    orderings = feature_orderings(n_features, n_orderings, random_state=0)
    assert len(orderings) == n_orderings
    for order in orderings:
        assert sorted(order.tolist()) == list(range(n_features))
    assert orderings[0].tolist() == list(range(n_features))
    assert orderings[1].tolist() == list(range(n_features))[::-1]
    if n_features > 1:  # 3 features have 6 orders: 5 can all differ
        assert len({tuple(order) for order in orderings}) == n_orderings


@pytest.mark.parametrize("n_features, n_orderings", [(2, 6), (3, 9)])
@pytest.mark.parametrize("seed", range(4))
def test_orderings_repeat_in_turn_once_all_are_taken(n_features, n_orderings, seed):
    # Members beyond the distinct orders are shared out evenly, not by chance.
    orderings = [tuple(order) for order in feature_orderings(n_features, n_orderings, seed)]
    n_distinct = 2 if n_features == 2 else 6
    assert len(set(orderings[:n_distinct])) == n_distinct
    assert orderings[n_distinct:] == orderings[: n_orderings - n_distinct]


def test_order_invariant_member_gives_its_own_density():
    # A Gaussian-kernel KDE scores a row as it scores the row with its
    # columns permuted together with its training rows': the mixture over
    # orders must equal it, which holds only if each member is fitted and
    # scored on the same permutation of the columns.
    X = _skewed_rows()
    kde = KernelDensity(bandwidth=0.7).fit(X)
    ensemble = OrderingEnsemble(KernelDensity(bandwidth=0.7), n_orderings=3).fit(X)
    queries = _skewed_rows(50, seed=1)
    np.testing.assert_allclose(ensemble.score_samples(queries), kde.score_samples(queries))
    assert ensemble.score(queries) == pytest.approx(kde.score_samples(queries).mean())


def test_density_is_the_mean_of_the_members_densities():
    X = _skewed_rows()
    ensemble = OrderingEnsemble(GaussianMixture(2), random_state=0).fit(X)
    members = [
        np.exp(member.score_samples(X[:, order]))
        for member, order in zip(ensemble.estimators_, ensemble.orderings_, strict=True)
    ]
    np.testing.assert_allclose(np.exp(ensemble.score_samples(X)), np.mean(members, axis=0))


class _KDEWithKnownError(KernelDensity):
    """A KDE that reports a fixed error of 0.1 on every log-density."""

    def score_samples(self, X, return_std=False):
        scores = super().score_samples(X)
        return (scores, np.full(len(scores), 0.1)) if return_std else scores


def test_errors_combine_by_each_members_share_of_the_density():
    X = _skewed_rows()
    queries = _skewed_rows(20, seed=1)
    # Equal members: each holds half the density, so two independent errors
    # of 0.1 make one of 0.1 / sqrt(2).
    ensemble = OrderingEnsemble(_KDEWithKnownError(bandwidth=0.7)).fit(X)
    scores, std = ensemble.score_samples(queries, return_std=True)
    np.testing.assert_allclose(scores, ensemble.score_samples(queries))
    np.testing.assert_allclose(std, 0.1 / np.sqrt(2))
    # Unequal members: the one that holds the density carries the error.
    mixed = OrderingEnsemble(_KDEWithKnownError(bandwidth=0.7)).fit(X)
    mixed.estimators_[1] = _KDEWithKnownError(bandwidth=0.1).fit(X[:, ::-1])
    members = np.stack(
        [
            m.score_samples(queries[:, o])
            for m, o in zip(mixed.estimators_, mixed.orderings_, strict=True)
        ]
    )
    shares = np.exp(members) / np.exp(members).sum(axis=0)
    _, std = mixed.score_samples(queries, return_std=True)
    np.testing.assert_allclose(std, 0.1 * np.sqrt((shares**2).sum(axis=0)))


def test_errors_need_members_that_report_them():
    ensemble = OrderingEnsemble(KernelDensity()).fit(_skewed_rows(50))
    with pytest.raises(ValueError, match="return_std"):
        ensemble.score_samples(_skewed_rows(5), return_std=True)


def test_samples_come_back_in_the_original_column_order():
    X = _skewed_rows(2000)
    ensemble = OrderingEnsemble(GaussianMixture(1), random_state=0).fit(X)
    drawn = ensemble.sample(2000, random_state=0)
    assert drawn.shape == (2000, 2)
    np.testing.assert_allclose(drawn.mean(axis=0), [0.0, 10.0], atol=0.3)
    np.testing.assert_allclose(drawn.std(axis=0), [1.0, 3.0], rtol=0.1)
    np.testing.assert_array_equal(drawn, ensemble.sample(2000, random_state=0))


@pytest.mark.filterwarnings("ignore:AEMDensity is fitting only")
def test_aem_members_get_their_own_seeds_and_round_trip():
    X = _skewed_rows(200)
    ensemble = OrderingEnsemble(TINY_CHECKED, random_state=0).fit(X)
    seeds = [member.random_state for member in ensemble.estimators_]
    assert len(set(seeds)) == 2
    scores = ensemble.score_samples(X[:20])
    assert np.all(np.isfinite(scores))
    with_std, std = ensemble.score_samples(X[:20], return_std=True)
    np.testing.assert_array_equal(with_std, scores)
    assert np.all(np.isfinite(std)) and np.all(std >= 0)
    again = OrderingEnsemble(TINY_CHECKED, random_state=0).fit(X)
    np.testing.assert_array_equal(again.score_samples(X[:20]), scores)
    restored = pickle.loads(pickle.dumps(ensemble))
    np.testing.assert_array_equal(restored.score_samples(X[:20]), scores)
    assert ensemble.sample(5, random_state=0).shape == (5, 2)


@pytest.mark.filterwarnings("ignore:AEMDensity is fitting only")
def test_members_fitted_in_parallel_match_one_at_a_time():
    X = _skewed_rows(200)
    for member in (GaussianMixture(2), TINY_CHECKED):
        alone = OrderingEnsemble(member, random_state=0).fit(X)
        parallel = OrderingEnsemble(member, random_state=0, n_jobs=2).fit(X)
        assert [m.random_state for m in parallel.estimators_] == [
            m.random_state for m in alone.estimators_
        ]
        # Worker processes run torch with one thread each: equal up to rounding.
        np.testing.assert_allclose(parallel.score_samples(X), alone.score_samples(X), atol=1e-4)


class _MixtureThatRecordsItsProcess(GaussianMixture):
    def fit(self, X, y=None):
        self.process_id_ = os.getpid()
        return super().fit(X)


def test_n_jobs_fits_members_in_worker_processes():
    X = _skewed_rows(200)
    ensemble = OrderingEnsemble(_MixtureThatRecordsItsProcess(2), n_jobs=2).fit(X)
    assert all(member.process_id_ != os.getpid() for member in ensemble.estimators_)
    alone = OrderingEnsemble(_MixtureThatRecordsItsProcess(2)).fit(X)
    assert all(member.process_id_ == os.getpid() for member in alone.estimators_)


@pytest.mark.filterwarnings("ignore:AEMDensity is fitting only")
def test_shared_budget_gives_each_aem_its_share_of_one_fits_steps():
    X = _skewed_rows(200)
    for n_orderings in (2, 3):
        ensemble = OrderingEnsemble(
            TINY_CHECKED, n_orderings=n_orderings, random_state=0, budget="shared"
        ).fit(X)
        steps = TINY_CHECKED.max_iter // n_orderings
        assert [member.n_iter_ for member in ensemble.estimators_] == [steps] * n_orderings
    each = OrderingEnsemble(TINY_CHECKED, random_state=0).fit(X)
    assert [member.n_iter_ for member in each.estimators_] == [TINY_CHECKED.max_iter] * 2


@pytest.mark.parametrize(
    "n_samples, n_features, steps, early_stopping",
    [
        (5000, 2, 2500, True),  # one fit validates over 5,000 steps
        (10000, 2, 2500, True),  # a member's 2,500 steps alone would not validate
        (25000, 2, 2441, False),  # one fit takes 50 passes: 4,883 steps
        (5000, 6, 371, False),  # 742 steps of 38 passes, halved
    ],
)
def test_shared_budget_resolves_the_aems_auto_steps_as_one_fit_would(
    n_samples, n_features, steps, early_stopping
):
    from skaem import AEMDensity
    from skaem.ensemble import _budget_share

    X = np.random.default_rng(0).normal(size=(n_samples, n_features))
    share = _budget_share(AEMDensity(), X, n_members=2)
    assert share == {"max_iter": steps, "early_stopping": early_stopping}


def test_shared_budget_divides_an_integer_max_iter():
    X = _skewed_rows(200)
    ensemble = OrderingEnsemble(
        GaussianMixture(2, max_iter=100), n_orderings=3, budget="shared"
    ).fit(X)
    assert [member.max_iter for member in ensemble.estimators_] == [33] * 3
    assert ensemble.estimator.max_iter == 100  # the template is left as it was


def test_default_member_is_an_aem():
    from skaem import AEMDensity

    assert isinstance(OrderingEnsemble()._base_estimator(), AEMDensity)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_orderings": 0}, "n_orderings"),
        ({"n_orderings": 1.5}, "n_orderings"),
        ({"estimator": object()}, "estimator"),
        ({"n_jobs": "two"}, "n_jobs"),
        ({"budget": "half"}, "budget"),
    ],
)
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        OrderingEnsemble(**params).fit(_skewed_rows(50))


def test_shared_budget_needs_a_max_iter():
    with pytest.raises(ValueError, match="KernelDensity has no max_iter"):
        OrderingEnsemble(KernelDensity(), budget="shared").fit(_skewed_rows(50))


def test_bad_sample_count_is_named():
    ensemble = OrderingEnsemble(KernelDensity()).fit(_skewed_rows(50))
    with pytest.raises(ValueError, match="n_samples"):
        ensemble.sample(0)


def test_wrong_width_is_named():
    ensemble = OrderingEnsemble(KernelDensity()).fit(_skewed_rows(50))
    with pytest.raises(ValueError, match="features"):
        ensemble.score_samples(np.zeros((3, 3)))
