"""skaem: Autoregressive Energy Machines for scikit-learn."""

from ._device import flush_denormals
from ._estimator import AEMDensity
from ._outlier import AEMOutlierDetector
from .calibration import normalizer_calibration
from .ensemble import OrderingEnsemble

__version__ = "0.1.0"

flush_denormals()

__all__ = [
    "AEMDensity",
    "AEMOutlierDetector",
    "OrderingEnsemble",
    "normalizer_calibration",
    "__version__",
]
