"""Scoring data in blocks: larger than memory, or spread over joblib or Dask workers.

A fitted estimator scores each row with fixed common noise, independently
of the other rows, so scoring block by block gives exactly the scores of
one call on all rows, wherever the blocks are computed.
"""

from collections.abc import Iterable, Iterator

import numpy as np
from joblib import Parallel, delayed
from sklearn.utils.validation import check_is_fitted

__all__ = ["dask_score_samples", "score_blocks"]

# Methods that map rows to one value each, or to one value per feature.
_PER_ROW = ("score_samples", "decision_function", "predict")
_PER_FEATURE = ("score_samples_per_feature",)


def _scoring_method(estimator, method: str):
    if method not in _PER_ROW + _PER_FEATURE:
        raise ValueError(f"method must be one of {_PER_ROW + _PER_FEATURE}; got {method!r}.")
    if not hasattr(estimator, method):
        raise ValueError(f"{type(estimator).__name__} has no method {method!r}.")
    check_is_fitted(estimator)
    return getattr(estimator, method)


def score_blocks(
    estimator,
    blocks: Iterable,
    method: str = "score_samples",
    n_jobs: int | None = None,
) -> Iterator[np.ndarray]:
    """Score an iterable of row blocks lazily, one result per block, in order.

    Only a few blocks are in memory at a time, so ``blocks`` can be a
    generator over data larger than memory (files, database cursors,
    ``pandas.read_csv(..., chunksize=...)``).

    Parameters
    ----------
    estimator : AEMDensity or AEMOutlierDetector
        A fitted estimator.
    blocks : iterable of array-like of shape (n_rows_i, n_features)
        The row blocks.
    method : str, default="score_samples"
        "score_samples", "score_samples_per_feature", "decision_function"
        or "predict" (the last two for outlier detectors).
    n_jobs : int, default=None
        Blocks scored in parallel by joblib (None: one at a time, here).
        Inside ``joblib.parallel_config(backend="dask")`` the blocks go to
        the workers of the active ``dask.distributed`` client.

    Yields
    ------
    scores : ndarray of shape (n_rows_i,) or (n_rows_i, n_features)
        The method's output for each block.

    Examples
    --------
    >>> import numpy as np
    >>> from skaem import AEMDensity
    >>> from skaem.parallel import score_blocks
    >>> X = np.random.default_rng(0).normal(size=(300, 2))
    >>> aem = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                  energy_n_blocks=1, max_iter=20, warmup_steps=10, random_state=0).fit(X)
    >>> blocks = (X[i : i + 100] for i in range(0, 300, 100))
    >>> scores = np.concatenate(list(score_blocks(aem, blocks)))
    >>> bool(np.array_equal(scores, aem.score_samples(X)))
    True
    """
    score = _scoring_method(estimator, method)
    if n_jobs is None:
        return (score(block) for block in blocks)
    # return_as="generator" dispatches a few blocks ahead and keeps the order.
    parallel = Parallel(n_jobs=n_jobs, return_as="generator")
    return parallel(delayed(score)(block) for block in blocks)


def dask_score_samples(estimator, X, method: str = "score_samples"):
    """Score a Dask array lazily, block by block, on the Dask scheduler in use.

    Parameters
    ----------
    estimator : AEMDensity or AEMOutlierDetector
        A fitted estimator; it is sent once to each worker that needs it.
    X : dask.array.Array of shape (n_samples, n_features)
        The rows, in blocks of rows (column blocks are joined first).
    method : str, default="score_samples"
        As for :func:`score_blocks`.

    Returns
    -------
    scores : dask.array.Array of shape (n_samples,) or (n_samples, n_features)
        Lazy: ``.compute()``, ``.to_zarr(...)`` or a reduction such as
        ``.mean()`` runs it.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from skaem import AEMDensity
    >>> from skaem.parallel import dask_score_samples
    >>> X = np.random.default_rng(0).normal(size=(300, 2))
    >>> aem = AEMDensity(hidden_features=16, n_blocks=1, energy_hidden_features=16,
    ...                  energy_n_blocks=1, max_iter=20, warmup_steps=10, random_state=0).fit(X)
    >>> lazy = dask_score_samples(aem, da.from_array(X, chunks=(100, 2)))
    >>> bool(np.array_equal(lazy.compute(), aem.score_samples(X)))
    True
    """
    try:
        import dask
        import dask.array as da
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("dask_score_samples needs Dask: pip install 'skaem[dask]'.") from error
    _scoring_method(estimator, method)
    if not isinstance(X, da.Array) or X.ndim != 2:
        raise TypeError(
            f"X must be a 2-D dask.array.Array; got {type(X).__name__}. "
            "Use score_blocks for other iterables of blocks."
        )
    X = X.rechunk({1: -1})
    # One delayed copy of the estimator, shared by all blocks of the graph.
    shared = dask.delayed(estimator, traverse=False)
    per_feature = method in _PER_FEATURE
    dtype = int if method == "predict" else float
    return da.map_blocks(
        _score_block,
        X,
        shared,
        method,
        dtype=dtype,
        drop_axis=None if per_feature else 1,
        meta=np.empty((0, 0) if per_feature else (0,), dtype=dtype),
    )


def _score_block(block, estimator, method):
    return getattr(estimator, method)(block)
