"""Data sets: the paper's two-dimensional tasks with their exact densities."""

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
    "make_checkerboard",
    "make_diamond",
    "make_spirals",
]
