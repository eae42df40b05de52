"""scikit-learn's own estimator checks."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skaem import AEMDensity

TINY_CHECKED = AEMDensity(
    hidden_features=16,
    n_blocks=1,
    context_features=4,
    energy_hidden_features=16,
    energy_n_blocks=1,
    n_components=3,
    max_iter=5,
    warmup_steps=2,
    eval_interval=5,
    n_eval_importance_samples=16,
    n_sampling_proposals=8,
    random_state=0,
)


@parametrize_with_checks([TINY_CHECKED])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
