"""AEMOutlierDetector: scikit-learn's outlier-detection contract."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skaem import AEMOutlierDetector
from tests.test_sklearn_checks import TINY_CHECKED


@parametrize_with_checks([AEMOutlierDetector(**TINY_CHECKED.get_params())])
def test_sklearn_compatible_outlier_detector(estimator, check):
    check(estimator)


@pytest.fixture
def detector_and_data(tiny):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    X[:, 2] = X[:, 0] + 0.1 * rng.normal(size=400)  # feature 2 follows feature 0
    detector = AEMOutlierDetector(
        **{**tiny, "max_iter": 400}, contamination=0.05, random_state=0
    ).fit(X)
    return detector, X


def test_contamination_sets_the_share_of_training_outliers(detector_and_data):
    detector, X = detector_and_data
    labels = detector.predict(X)
    assert set(np.unique(labels)) == {-1, 1}
    assert np.mean(labels == -1) == pytest.approx(0.05, abs=0.01)
    np.testing.assert_allclose(
        detector.decision_function(X), detector.score_samples(X) - detector.offset_
    )


def test_explanation_points_at_the_broken_dependence(detector_and_data):
    pd = pytest.importorskip("pandas")
    detector, X = detector_and_data
    odd = pd.DataFrame([[0.0, 0.0, 3.0]], columns=["a", "b", "c"], index=["row"])
    detector.fit(pd.DataFrame(X, columns=["a", "b", "c"]))
    explanation = detector.explain(odd)
    assert list(explanation.columns) == ["a", "b", "c"] and list(explanation.index) == ["row"]
    assert explanation.loc["row"].idxmin() == "c"  # c should be near a = 0
    assert detector.predict(odd)[0] == -1
    np.testing.assert_allclose(explanation.sum(axis=1), detector.score_samples(odd))


def test_auto_contamination_uses_three_sigma_rule(tiny):
    X = np.random.default_rng(1).normal(size=(300, 2))
    detector = AEMOutlierDetector(**tiny, random_state=0).fit(X)
    scores = detector.score_samples(X)
    assert detector.offset_ == pytest.approx(scores.mean() - 3 * scores.std())


def test_detector_takes_every_density_parameter_with_the_same_default():
    import inspect

    from skaem import AEMDensity

    density = inspect.signature(AEMDensity.__init__).parameters
    detector = inspect.signature(AEMOutlierDetector.__init__).parameters
    assert list(detector) == ["self", "contamination", *list(density)[1:]]
    for name in list(density)[1:]:
        assert detector[name].default == density[name].default, name
    assert AEMOutlierDetector(max_iter=7).get_params()["max_iter"] == 7
