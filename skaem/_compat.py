"""Version-sensitive scikit-learn imports, kept in one place."""

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator, X, reset=True, **check_params):
        return estimator._validate_data(X, reset=reset, **check_params)


__all__ = ["validate_data"]
