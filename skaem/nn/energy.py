"""The energy network shared across dimensions (Section 3.1)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ResidualBlock, make_activation
from .fused import fused_energy, fused_kernels_apply, kernel_activation


class EnergyNet(nn.Module):
    """Residual MLP scoring ``(x_d, context_d)`` with a non-positive output.

    The first layer acts on the concatenation ``[x_d, context_d]``; it is
    split into a weight on ``x_d`` and a projection of the context, so the
    context part is computed once per (row, dimension) and broadcast over
    every point at which that conditional is evaluated.
    """

    def __init__(
        self,
        context_features: int,
        hidden_features: int = 128,
        n_blocks: int = 4,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        first = nn.Linear(context_features + 1, hidden_features)
        self.x_weight = nn.Parameter(first.weight[:, 0].detach().clone())
        self.context_layer = nn.Linear(context_features, hidden_features)
        with torch.no_grad():
            self.context_layer.weight.copy_(first.weight[:, 1:])
            self.context_layer.bias.copy_(first.bias)
        self.blocks = nn.ModuleList(
            ResidualBlock(
                nn.Linear(hidden_features, hidden_features),
                nn.Linear(hidden_features, hidden_features),
                activation,
                dropout,
            )
            for _ in range(n_blocks)
        )
        self.final_activation = make_activation(activation)
        self.output_layer = nn.Linear(hidden_features, 1)

    def project_context(self, context: Tensor) -> Tensor:
        """First-layer contribution of the context, shape (..., hidden)."""
        return self.context_layer(context)

    def runs_in_tiles(self, *tensors: Tensor) -> bool:
        """Whether a call on ``tensors`` goes through the fused CPU kernels
        (:mod:`skaem.nn.fused`): ReLU, or tanh without active dropout, in
        float32 on the CPU (or bfloat16 under autocast). Their tiles bound
        the activations whatever the number of points."""
        return self._kernel_activation(*tensors) is not None

    def _kernel_activation(self, *tensors: Tensor) -> str | None:
        """The fused kernels' name for the activation where they take a call
        on ``tensors``, else None."""
        if not fused_kernels_apply(self.x_weight, *tensors):
            return None
        dropout_active = any(b.dropout.training and b.dropout.p > 0 for b in self.blocks)
        return kernel_activation(self.final_activation, dropout_active)

    def forward(self, x: Tensor, projected_context: Tensor) -> Tensor:
        """Negative energy ``-E(x_s; context)`` for points ``x`` of shape (..., S).

        ``projected_context`` has shape (..., hidden) and is shared by the S
        points of its conditional.
        """
        activation = self._kernel_activation(x, projected_context)
        if activation is not None:
            out = fused_energy(
                x, projected_context, self.x_weight, self.blocks, self.output_layer, activation
            )
        else:
            h = x.unsqueeze(-1) * self.x_weight + projected_context.unsqueeze(-2)
            for block in self.blocks:
                h = block(h)
            out = self.output_layer(self.final_activation(h)).squeeze(-1)
        return -F.softplus(out.to(x.dtype))  # float32 energies under bfloat16 autocast
