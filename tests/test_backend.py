"""The backend API under the estimator: usable on its own, free of scikit-learn."""

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest

from skaem import AEMDensity, backend
from skaem._estimator import fitted_state

BACKEND_MODULES = [
    "nn/masked.py", "nn/blocks.py", "nn/resmade.py", "nn/energy.py", "nn/fused.py",
    "proposal.py", "normalizers.py", "model.py", "training.py", "inference.py", "backend.py",
]  # fmt: skip


@pytest.mark.parametrize("module", BACKEND_MODULES)
def test_backend_modules_import_nothing_from_scikit_learn(module):
    tree = ast.parse((Path(backend.__file__).parent / module).read_text())
    imported = [
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    ]
    assert not [name for name in imported if name.split(".")[0] == "sklearn"]


@pytest.mark.filterwarnings("ignore:AEMDensity is fitting only")
def test_the_backend_alone_fits_and_scores_as_the_estimator(tiny, gaussian_2d):
    aem = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    params = aem.get_params()
    seed = np.random.RandomState(0).randint(backend.MAX_SEED)  # as fit draws it
    state = backend.fit_networks(params, gaussian_2d, seed)
    assert state.n_iter == aem.n_iter_
    np.testing.assert_array_equal(state.mean, aem.mean_)
    np.testing.assert_allclose(state.train_scores, aem.train_scores_)
    terms = backend.log_density_terms(state, gaussian_2d[:20], params)
    np.testing.assert_allclose(terms, aem.score_samples_per_feature(gaussian_2d[:20]))
    rows = backend.draw_rows(state, 5, 3, params)
    assert rows.shape == (5, 2) and np.isfinite(rows).all()


@pytest.mark.filterwarnings("ignore:AEMDensity is fitting only")
def test_a_fitted_state_round_trips_through_the_estimator_and_pickle(tiny, gaussian_2d):
    aem = AEMDensity(**tiny, random_state=0).fit(gaussian_2d)
    state = fitted_state(aem)
    assert state.model is aem.model_ and state.n_iter == aem.n_iter_
    copied = pickle.loads(pickle.dumps(state.portable()))
    params = aem.get_params()
    np.testing.assert_allclose(
        backend.log_density_terms(copied, gaussian_2d[:10], params),
        aem.score_samples_per_feature(gaussian_2d[:10]),
    )
