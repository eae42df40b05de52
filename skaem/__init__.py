"""skaem: Autoregressive Energy Machines for scikit-learn."""

from ._estimator import AEMDensity

__version__ = "0.1.0"

__all__ = ["AEMDensity", "__version__"]
