"""Torch building blocks of the AEM: masked layers, ResMADE, energy network."""

from .blocks import ACTIVATIONS, ResidualBlock
from .energy import EnergyNet
from .masked import MaskedLinear
from .resmade import ResMADE

__all__ = ["ACTIVATIONS", "EnergyNet", "MaskedLinear", "ResMADE", "ResidualBlock"]
