"""Scale-out through Dask: a LocalCluster on loopback stands in for a real cluster."""

import itertools

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from skaem import AEMDensity, AEMOutlierDetector
from skaem.parallel import dask_score_samples, score_blocks

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture(scope="module")
def fitted():
    from conftest import TINY

    X = np.random.default_rng(0).normal(size=(500, 3))
    return AEMDensity(**TINY, device="cpu", random_state=0).fit(X), X


def test_grid_search_on_dask_workers_matches_the_local_search(client, tiny, gaussian_2d):
    search = GridSearchCV(
        AEMDensity(**tiny, device="cpu", random_state=0),
        {"n_components": [2, 5], "density": ["aem", "proposal"]},
        cv=2,
        n_jobs=2,
    )
    with joblib.parallel_config(backend="dask"):
        on_cluster = search.fit(gaussian_2d).cv_results_["mean_test_score"]
    local = search.set_params(n_jobs=None).fit(gaussian_2d).cv_results_["mean_test_score"]
    np.testing.assert_allclose(on_cluster, local, rtol=1e-6)


def test_dask_array_scores_equal_in_memory_scores(client, fitted):
    aem, X = fitted
    lazy = dask_score_samples(aem, da.from_array(X, chunks=(120, 2)))
    assert isinstance(lazy, da.Array) and lazy.shape == (500,)
    # Workers run one torch thread: the same numbers up to float32 rounding.
    np.testing.assert_allclose(lazy.compute(), aem.score_samples(X), rtol=1e-6)
    per_feature = dask_score_samples(aem, da.from_array(X, chunks=(200, 3)),
                                     "score_samples_per_feature")  # fmt: skip
    np.testing.assert_allclose(
        per_feature.compute(), aem.score_samples_per_feature(X), rtol=1e-6, atol=1e-6
    )


def test_outlier_predictions_of_a_dask_array(client, tiny):
    X = np.random.default_rng(1).normal(size=(300, 2))
    detector = AEMOutlierDetector(**tiny, device="cpu", random_state=0).fit(X)
    lazy = dask_score_samples(detector, da.from_array(X, chunks=(100, 2)), "predict")
    np.testing.assert_array_equal(lazy.compute(), detector.predict(X))


def test_blocks_scored_on_dask_workers_in_order(client, fitted):
    aem, X = fitted
    with joblib.parallel_config(backend="dask"):
        scores = list(score_blocks(aem, np.array_split(X, 5), n_jobs=2))
    np.testing.assert_allclose(np.concatenate(scores), aem.score_samples(X), rtol=1e-6)


def test_blocks_are_read_lazily(fitted):
    aem, X = fitted
    read = []

    def source():  # stands in for a reader of data larger than memory
        for i in itertools.count():
            read.append(i)
            yield X[:50] + i

    results = score_blocks(aem, source())
    first = next(results)
    assert read == [0] and first.shape == (50,)
    for _ in range(3):
        next(results)
    assert read == [0, 1, 2, 3]


def test_bad_arguments(fitted):
    aem, X = fitted
    with pytest.raises(ValueError, match="method"):
        score_blocks(aem, [X], method="transform")
    with pytest.raises(ValueError, match="no method 'predict'"):
        score_blocks(aem, [X], method="predict")
    with pytest.raises(TypeError, match="dask.array"):
        dask_score_samples(aem, X)
    with pytest.raises(Exception, match="not fitted"):
        score_blocks(AEMDensity(), [X])
