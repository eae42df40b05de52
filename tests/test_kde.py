"""AEM-KDE: a normalised approximation of the AEM (Section 4.3)."""

import numpy as np
import pytest

from skaem import AEMDensity


@pytest.mark.parametrize("proposal_weight", [0.0, 0.1])
def test_each_kde_conditional_integrates_to_one(tiny, gaussian_2d, proposal_weight):
    aem = AEMDensity(
        **tiny,
        density="kde",
        kde_bandwidth=0.1,
        kde_proposal_weight=proposal_weight,
        random_state=0,
    ).fit(gaussian_2d)
    grid = np.linspace(-15, 15, 12001)  # step 0.0025, far below the kernel width
    for x1 in [-1.0, 1.0, 3.0]:
        X = np.column_stack([np.full_like(grid, x1), grid])
        density = np.exp(aem.score_samples_per_feature(X)[:, 1])
        assert np.trapezoid(density, grid) == pytest.approx(1, abs=1e-3)
    first = np.exp(aem.score_samples_per_feature(np.column_stack([grid, grid]))[:, 0])
    assert np.trapezoid(first, grid) == pytest.approx(1, abs=1e-3)


def test_kde_samples_and_scores_are_finite(tiny, gaussian_2d):
    aem = AEMDensity(**tiny, density="kde", random_state=0).fit(gaussian_2d)
    S = aem.sample(100, random_state=0)
    assert S.shape == (100, 2) and np.all(np.isfinite(aem.score_samples(S)))
