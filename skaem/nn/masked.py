"""Masked linear layers and the sequential degree assignment of MADE."""

import torch
from torch import Tensor, nn

from .fused import linear


def input_degrees(n_features: int) -> Tensor:
    """Degrees 1..D of the input units, in the data's order."""
    return torch.arange(1, n_features + 1)


def hidden_degrees(n_features: int, width: int) -> Tensor:
    """Sequential degrees (Appendix A, eq. 15): ``(k - 1) mod (D - 1) + 1``.

    With a single feature no hidden unit may feed the output, and degree 1
    guarantees it: the only output then reduces to its bias.
    """
    if n_features == 1:
        return torch.ones(width, dtype=torch.long)
    return torch.arange(width) % (n_features - 1) + 1


def output_degrees(n_features: int, outputs_per_feature: int) -> Tensor:
    """Degree d for each of the outputs that belong to feature d."""
    return input_degrees(n_features).repeat_interleave(outputs_per_feature)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary mask.

    Unit ``i`` sees unit ``j`` of the previous layer when its degree is at
    least (``strict=False``) or strictly above (``strict=True``, output
    layers) the degree of ``j`` (eq. 14).
    """

    def __init__(self, in_degrees: Tensor, out_degrees: Tensor, strict: bool = False):
        super().__init__(len(in_degrees), len(out_degrees))
        if strict:
            mask = out_degrees[:, None] > in_degrees[None, :]
        else:
            mask = out_degrees[:, None] >= in_degrees[None, :]
        self.register_buffer("mask", mask.to(self.weight.dtype))
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight * self.mask, self.bias)
