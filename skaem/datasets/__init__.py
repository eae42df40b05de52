"""Data sets: the paper's two-dimensional tasks with their exact densities, and
loaders for its tabular benchmarks."""

from ._image import image_intensities, image_log_density, make_image
from ._tabular import (
    fetch_bsds300,
    fetch_gas,
    fetch_hepmass,
    fetch_miniboone,
    fetch_power,
    read_power_raw,
)
from ._toy import (
    checkerboard_log_density,
    diamond_log_density,
    make_checkerboard,
    make_diamond,
    make_spirals,
)

__all__ = [
    "checkerboard_log_density",
    "diamond_log_density",
    "fetch_bsds300",
    "fetch_gas",
    "fetch_hepmass",
    "fetch_miniboone",
    "fetch_power",
    "image_intensities",
    "image_log_density",
    "make_checkerboard",
    "make_diamond",
    "make_image",
    "make_spirals",
    "read_power_raw",
]
