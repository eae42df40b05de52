"""ResMADE: a MADE with masked pre-activation residual blocks (Appendix A)."""

from torch import Tensor, nn

from .blocks import ResidualBlock, make_activation
from .masked import MaskedLinear, hidden_degrees, input_degrees, output_degrees


class ResMADE(nn.Module):
    """Autoregressive network: output ``[:, d, :]`` depends on ``x[:, :d]`` only.

    Parameters
    ----------
    n_features : int
        Input dimension D (>= 1).
    outputs_per_feature : int
        Number of outputs emitted for each feature.
    hidden_features : int
        Width H of every hidden layer (the same degrees in every layer make
        the residual sums legal).
    n_blocks : int
        Number of residual blocks.
    activation : str
        Activation name.
    dropout : float
        Dropout rate between the two layers of each block.
    """

    def __init__(
        self,
        n_features: int,
        outputs_per_feature: int,
        hidden_features: int = 256,
        n_blocks: int = 4,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_features = n_features
        self.outputs_per_feature = outputs_per_feature
        d_in = input_degrees(n_features)
        d_hidden = hidden_degrees(n_features, hidden_features)
        d_out = output_degrees(n_features, outputs_per_feature)
        self.input_layer = MaskedLinear(d_in, d_hidden)
        self.blocks = nn.ModuleList(
            ResidualBlock(
                MaskedLinear(d_hidden, d_hidden),
                MaskedLinear(d_hidden, d_hidden),
                activation,
                dropout,
            )
            for _ in range(n_blocks)
        )
        self.final_activation = make_activation(activation)
        self.output_layer = MaskedLinear(d_hidden, d_out, strict=True)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` of shape (N, D) to outputs of shape (N, D, outputs_per_feature)."""
        h = self.input_layer(x)
        for block in self.blocks:
            h = block(h)
        out = self.output_layer(self.final_activation(h))
        return out.reshape(x.shape[0], self.n_features, self.outputs_per_feature)
