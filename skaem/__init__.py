"""skaem: Autoregressive Energy Machines for scikit-learn."""

from ._estimator import AEMDensity
from .calibration import normalizer_calibration

__version__ = "0.1.0"

__all__ = ["AEMDensity", "normalizer_calibration", "__version__"]
