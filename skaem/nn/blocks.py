"""Pre-activation residual blocks and activation lookup."""

import torch
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name``."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"Unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}."
        ) from None


class ResidualBlock(nn.Module):
    """``h + L2(dropout(act(L1(act(h)))))`` (He et al., 2016b).

    The second layer starts at zero so that every block starts as the
    identity, which keeps deep stacks stable at initialisation.
    """

    def __init__(self, first: nn.Linear, second: nn.Linear, activation: str, dropout: float):
        super().__init__()
        self.first = first
        self.second = second
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            second.weight.zero_()
            second.bias.zero_()

    def forward(self, h: Tensor) -> Tensor:
        t = self.first(self.activation(h))
        t = self.second(self.dropout(self.activation(t)))
        return h + t
