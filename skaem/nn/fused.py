"""The energy network with fused kernels and cache-sized tiles on the CPU.

In the residual stack ``h <- h + W2 relu(W1 relu(h) + b1) + b2`` every
element-wise step (bias, ReLU, residual sum) is a pass over an activation
of (points x hidden) floats, and on a CPU these passes cost as much as the
products. Two changes remove most of that cost:

- oneDNN applies the ReLU (or tanh) or the residual sum to a product's
  output while it is still in registers (a post-op), which leaves one
  element-wise pass per block instead of five;
- the points go through the whole network in tiles of about 2 MiB per
  activation (1 MiB in inference), forward and backward, so that the
  passes that remain read cache instead of main memory. The backward pass
  is written out by hand: it keeps only the activations that the products
  read and accumulates weight gradients tile by tile.

The products go to oneDNN too: on AMD CPUs torch's float32 matmul goes to
MKL, which runs AVX2 code only. :func:`linear` brings the same to the
ResMADE's layers. ``docs/design.md`` ("Speed, precision and memory") has
the measurements behind each choice here.

The oneDNN ops are private torch ops (the entries PyTorch's own compiler
uses), each called through one wrapper below that names its arguments. The
energy network falls back to its plain layers (and :func:`linear` to
``F.linear``) wherever they are missing, and :func:`use_fused_kernels` is
the one switch that turns both off (the tests compare both paths).
"""

import contextlib
from contextvars import ContextVar
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

_ENABLED = ContextVar("skaem_fused_kernels", default=True)
_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.grad_input
_TANH_BACKWARD = torch.ops.aten.tanh_backward.grad_input


def _mkldnn_op(name):
    """A oneDNN op of this torch build, or None where it has none."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return getattr(torch.ops.mkldnn, name)
    except (AttributeError, RuntimeError):
        return None


_LINEAR = _mkldnn_op("_linear_pointwise")
_CONV_INTO = _mkldnn_op("_convolution_pointwise_")  # writes into its first argument
_bf16_check = _mkldnn_op("_is_mkldnn_bf16_supported")
_BF16_SUPPORTED = _LINEAR is not None and _bf16_check is not None and bool(_bf16_check())


@contextlib.contextmanager
def use_fused_kernels(enabled: bool):
    """Context manager that switches the fused CPU kernels on or off.

    Examples
    --------
    >>> from skaem.nn.fused import use_fused_kernels
    >>> with use_fused_kernels(False):
    ...     pass  # the energy network runs its plain layers here
    """
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def fused_kernels_apply(*tensors: Tensor) -> bool:
    """Whether the fused kernels can take ``tensors`` (float32 on the CPU).

    Under bfloat16 autocast they do the products in bfloat16 where oneDNN
    supports it, like autocast does, and take bfloat16 inputs too.
    """
    if _LINEAR is None or not _ENABLED.get():
        return False
    dtype = _compute_dtype()
    return dtype is not None and all(
        t.device.type == "cpu" and t.dtype in (torch.float32, dtype) for t in tensors
    )


def _compute_dtype():
    """The products' dtype: float32, bfloat16 under CPU autocast, None if unsupported."""
    if not torch.is_autocast_enabled("cpu"):
        return torch.float32
    dtype = torch.get_autocast_dtype("cpu")
    if dtype == torch.bfloat16 and _BF16_SUPPORTED:
        return dtype
    return None


# The activations the kernels take: oneDNN applies each as a post-op of the
# same name, and both derivatives are functions of the activation's output,
# which the backward pass keeps anyway. Dropout goes with ReLU only: it saves
# the activation after dropout, and a dropped unit's zero reads as "inactive"
# to ReLU's backward but as the steepest point of tanh.
# The backward overwrites the incoming gradient, always a product's fresh
# output, which saves a tile-sized allocation and a pass through memory.
_KERNEL_ACTIVATIONS = {
    "relu": (torch.relu, lambda grad, out: _THRESHOLD_BACKWARD(grad, out, 0, grad_input=grad)),
    "tanh": (torch.tanh, lambda grad, out: _TANH_BACKWARD(grad, out, grad_input=grad)),
}


def kernel_activation(activation: torch.nn.Module, dropout_active: bool) -> str | None:
    """The kernels' name for an activation module, None where they cannot run it."""
    if isinstance(activation, torch.nn.ReLU):
        return "relu"
    if isinstance(activation, torch.nn.Tanh) and not dropout_active:
        return "tanh"
    return None


# Activations per tile: 2 MiB in training (4,096 points of 128 floats), so
# that a tile's forward and backward passes run in cache; 1 MiB in
# inference, which keeps no activations and was faster with smaller tiles.
TILE_BYTES = 2**21
INFERENCE_TILE_BYTES = 2**20


class _BlockLayers(NamedTuple):
    """The two layers of one residual block (weights, or their gradients)."""

    first_weight: Tensor
    first_bias: Tensor
    second_weight: Tensor
    second_bias: Tensor


class _TileActivations(NamedTuple):
    """What the backward pass of one training tile reads: each block's
    inputs to its two products, and the final activation."""

    blocks: list[tuple[Tensor, Tensor]]
    last: Tensor


def _per_block(flat) -> list[_BlockLayers]:
    """Group a flat sequence (W1, b1, W2, b2, W1, ...) by block."""
    return [_BlockLayers(*flat[i : i + 4]) for i in range(0, len(flat), 4)]


def fused_energy(
    x: Tensor, context: Tensor, x_weight: Tensor, blocks, output_layer, activation: str = "relu"
) -> Tensor:
    """Pre-softplus output of the energy network at points ``x`` (..., S).

    ``context`` (..., H) is the projected context of each conditional,
    ``x_weight`` (H,) the first layer's weight on the point, ``blocks``
    :class:`~skaem.nn.ResidualBlock` with ``activation`` ("relu" or "tanh");
    a block's dropout applies where its module is in training mode, as in
    the plain layers (with ReLU only: see ``_KERNEL_ACTIVATIONS``). Gradients
    reach every input.
    """
    lead = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    n_points, hidden = x.shape[-1], context.shape[-1]
    x2 = x.expand(*lead, n_points).reshape(lead.numel(), n_points)
    c2 = context.expand(*lead, hidden).reshape(lead.numel(), hidden)
    layers = [
        t for b in blocks for t in (b.first.weight, b.first.bias, b.second.weight, b.second.bias)
    ]
    # autograd.Function takes its tensors flat: the first five, then four a block.
    inputs = (x2, c2, x_weight, output_layer.weight, output_layer.bias, *layers)
    rates = tuple(b.dropout.p if b.dropout.training else 0.0 for b in blocks)
    dtype = _compute_dtype()
    with torch.autocast("cpu", enabled=False):
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            out = _FusedEnergy.apply(dtype, rates, activation, *inputs)
        else:
            out = _forward_tiles(inputs, dtype, rates, activation, keep=False)[0]
    return out.view(*lead, n_points)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` with its products by oneDNN where it computes the same.

    That is float32 on the CPU outside autocast (autocast's bfloat16
    products go to oneDNN already); elsewhere it is ``F.linear``.
    """
    tensors = (x, weight) if bias is None else (x, weight, bias)
    # Outside autocast, fused_kernels_apply asks for float32 on the CPU.
    if torch.is_autocast_enabled("cpu") or x.numel() == 0 or not fused_kernels_apply(*tensors):
        return F.linear(x, weight, bias)
    out = _Linear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class _Linear(torch.autograd.Function):
    """``x @ weight.T + bias`` for 2-D ``x``; every product by oneDNN.

    oneDNN takes a transposed weight as it is, but copies a transposed
    input, so the weight gradient makes ``grad.T`` contiguous itself.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        x = x.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight.contiguous(), bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = _product(grad, weight.t()) if need_x else None
        grad_weight = _product(grad.t().contiguous(), x.t()) if need_weight else None
        grad_bias = grad.sum(0) if need_bias and ctx.has_bias else None
        return grad_x, grad_weight, grad_bias


def _tiles(n_groups: int, n_points: int, hidden: int, tile_bytes: int):
    """(rows, cols) slices covering the (groups, points) grid in tiles of about tile_bytes."""
    points = max(1, tile_bytes // (4 * hidden))
    cols = max(1, min(n_points, points))
    rows = max(1, points // cols)
    for i in range(0, n_groups, rows):
        for j in range(0, n_points, cols):
            yield slice(i, i + rows), slice(j, j + cols)


def _forward_tiles(inputs, dtype, rates, activation, keep):
    """Outputs (groups, S) and, with ``keep``, a :class:`_TileActivations` a tile.

    The residual stream stays in float32; the products take ``dtype``.
    ``rates`` holds each block's dropout rate (0 where it is inactive).
    """
    x, context, x_weight, w_out, b_out, *layers = inputs
    blocks = _product_weights(_per_block(layers), dtype, rates)
    act = _KERNEL_ACTIVATIONS[activation][0]
    out = torch.empty_like(x)
    saved = []
    tile_bytes = TILE_BYTES if keep else INFERENCE_TILE_BYTES
    for rows, cols in _tiles(*x.shape, context.shape[-1], tile_bytes):
        points = x[rows, cols]
        h = torch.addcmul(context[rows].float().unsqueeze(-2), points.unsqueeze(-1), x_weight)
        h = h.view(-1, h.shape[-1])
        block_inputs = []
        for block, rate in zip(blocks, rates, strict=True):
            h, a, r = _block(h, block, rate, activation)
            if keep:
                block_inputs.append((a, r))
        a = act(h)
        out[rows, cols] = torch.addmv(b_out, a, w_out[0]).view(points.shape)
        if keep:
            saved.append(_TileActivations(block_inputs, a))
    return out, saved


def _block(h, block: _BlockLayers, rate, activation):
    """``h + W2 drop(act(W1 act(h) + b1)) + b2`` (into ``h``, except on the
    post-op fallback) and the inputs of both products.

    With dropout, the second weight carries the survivors' scale
    (:func:`_product_weights`).
    """
    a = _KERNEL_ACTIVATIONS[activation][0](h).to(block.first_weight.dtype)
    r = _product(a, block.first_weight, block.first_bias, post_op=activation)
    if rate > 0:
        _drop_(r, rate)
    if r.dtype != h.dtype:  # bfloat16 products, float32 residual stream
        return h.add_(_product(r, block.second_weight, block.second_bias)), a, r
    if _CONV_INTO is None:
        return _product_plus(r, block.second_weight, block.second_bias, other=h), a, r
    _add_product_(h, r, block.second_weight, block.second_bias)
    return h, a, r


# The wrappers of the private oneDNN ops: each names its op's arguments (in
# its schema's order) and fixes the values that make it the product needed here.


def _product(x, weight, bias=None, post_op="none"):
    """``post_op(x @ weight.T + bias)`` by oneDNN, with ``post_op`` one of
    "none", "relu" or "tanh" applied to the output in registers."""
    # (X, W, B, attr, scalars, algorithm), by position: torch parses keywords per call.
    return _LINEAR(x, weight, bias, post_op, [], "")


def _product_plus(x, weight, bias, other):
    """``other + x @ weight.T + bias`` by oneDNN, the sum as a post-op, in a new tensor."""
    return _LINEAR.binary(x, other, weight, bias, "add")  # (X, other, W, B, attr)


def _add_product_(h, x, weight, bias):
    """``h += x @ weight.T + bias`` by oneDNN, in place.

    As a 1x1 convolution over the points: the one oneDNN op of torch that
    adds into its output, where the linear with the sum as a post-op writes
    a new tensor.
    """
    _CONV_INTO.binary(
        _as_image(h),  # other: the output, added into
        _as_image(x),  # X
        weight[..., None, None],  # W
        bias,  # B
        [0, 0],  # padding
        [1, 1],  # stride
        [1, 1],  # dilation
        1,  # groups
        "add",  # binary_attr
        None,  # alpha
        None,  # unary_attr
        [],  # unary_scalars
        None,  # unary_algorithm
    )


def _convolution_weight_gradient(g, a, weight):
    """Gradients of the weight and bias of a layer ``a @ weight.T + bias``
    whose output has the gradient ``g``, as those of a 1x1 convolution over
    the points: oneDNN reads both (points, features) operands as they are,
    as channels-last images, where its linear would need a transposed copy
    of ``g``."""
    _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        _as_image(g),  # grad_output
        _as_image(a),  # input
        weight[..., None, None],  # weight
        [weight.shape[0]],  # bias_sizes
        [1, 1],  # stride
        [0, 0],  # padding
        [1, 1],  # dilation
        False,  # transposed
        [0, 0],  # output_padding
        1,  # groups
        [False, True, True],  # output_mask: the weight's and the bias's gradients
    )
    return grad_weight.view(weight.shape), grad_bias


def _as_image(t):
    """(points, features) as a (1, features, points, 1) channels-last image, no copy."""
    return t.view(1, t.shape[0], 1, t.shape[1]).permute(0, 3, 1, 2)


# Dropout draws 16 random bits a unit, four from each 64-bit integer, and
# zeroes the units whose bits fall below a threshold, which is several times
# faster than drawing and scaling a float a unit as F.dropout does. The rate
# is rounded to a multiple of 2**-16.
_DROPOUT_BITS = 16


def _dropout_threshold(rate):
    """The number of the 2**16 values of 16 random bits that drop a unit."""
    return min(round(rate * 2**_DROPOUT_BITS), 2**_DROPOUT_BITS - 1)


def _survivor_scale(rate):
    """``1 / (1 - p)`` for the rate that :func:`_drop_` draws, so that the
    expectation of a unit stays as it was without dropout."""
    return 2**_DROPOUT_BITS / (2**_DROPOUT_BITS - _dropout_threshold(rate))


def _drop_(r, rate):
    """Zero each element of ``r`` in place, with probability ``rate`` (to 2**-16).

    The survivors are not scaled here: the next product's weight carries the
    scale, which saves a pass over the activation.
    """
    n = r.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    bits = words.view(torch.int16)[:n].view_as(r)  # uniform over [-2**15, 2**15)
    r.masked_fill_(bits < _dropout_threshold(rate) - 2**15, 0)


def _product_weights(blocks, dtype, rates) -> list[_BlockLayers]:
    """Each block's layers in the products' dtype, with the second weight
    scaled by :func:`_survivor_scale` where the block has dropout (before
    the cast, so that a bfloat16 weight is rounded once)."""
    cast = []
    for (first_weight, first_bias, second_weight, second_bias), rate in zip(
        blocks, rates, strict=True
    ):
        if rate > 0:
            second_weight = second_weight * _survivor_scale(rate)
        layers = (first_weight, first_bias, second_weight, second_bias)
        cast.append(_BlockLayers(*(t.to(dtype) for t in layers)))
    return cast


def _backward_tiles(grad_out, inputs, tiles, dtype, rates, activation, needs_grad):
    """Gradients of every input from the saved activations, tile by tile.

    A block with dropout saved its ReLU output after dropout: it is positive
    exactly where the ReLU was active and the unit was kept, so the ReLU's
    backward on it applies the dropout mask too, and the mask needs no
    memory of its own.
    """
    x, context, x_weight, w_out, _, *layers = inputs
    blocks = _product_weights(_per_block(layers), dtype, rates)
    act_backward_ = _KERNEL_ACTIVATIONS[activation][1]  # in place, on fresh products
    grads = [torch.zeros_like(t) for t in inputs]
    grad_x, grad_context, grad_x_weight, grad_w_out, grad_b_out, *grad_layers = grads
    grad_blocks = _per_block(grad_layers)
    tile_slices = _tiles(*x.shape, context.shape[-1], TILE_BYTES)
    for (rows, cols), tile in zip(tile_slices, tiles, strict=True):
        g_out = grad_out[rows, cols].reshape(-1)
        grad_w_out.addmm_(g_out.unsqueeze(0), tile.last)
        grad_b_out.add_(g_out.sum())
        g = act_backward_(torch.outer(g_out, w_out[0]), tile.last)
        for block, grad_block, (a, r) in zip(
            reversed(blocks), reversed(grad_blocks), reversed(tile.blocks), strict=True
        ):
            # Each weight gradient follows the activation backward that has
            # just read its activation, so that it finds the activation in cache.
            g_low = g.to(dtype)
            g_r = act_backward_(_product(g_low, block.second_weight.t()), r)
            _accumulate(grad_block.second_weight, grad_block.second_bias, g_low, r)
            g_a = act_backward_(_product(g_r, block.first_weight.t()), a)
            _accumulate(grad_block.first_weight, grad_block.first_bias, g_r, a)
            g.add_(g_a)
        points = x[rows, cols]
        grad_x_weight.addmv_(g.t(), points.reshape(-1))
        g = g.view(*points.shape, -1)  # (rows, cols, H)
        grad_context[rows] += g.sum(1)
        if needs_grad[0]:
            grad_x[rows, cols] = g @ x_weight
    for grad_block, rate in zip(grad_blocks, rates, strict=True):
        if rate > 0:  # the products took W2 times the survivors' scale
            grad_block.second_weight.mul_(_survivor_scale(rate))
    return [grad if need else None for grad, need in zip(grads, needs_grad, strict=True)]


def _accumulate(grad_weight, grad_bias, g, a):
    """``grad_weight += g.T @ a`` and ``grad_bias += g.sum(0)`` for a layer
    ``a @ weight.T + bias`` and the gradient ``g`` of its output.

    In float32 by oneDNN's convolution (:func:`_convolution_weight_gradient`);
    in bfloat16 torch's matmul goes to oneDNN already, and was faster.
    """
    if g.dtype != torch.float32:
        grad_weight.add_(g.t() @ a)
        grad_bias.add_(g.sum(0))
        return
    weight_step, bias_step = _convolution_weight_gradient(g, a, grad_weight)
    grad_weight.add_(weight_step)
    grad_bias.add_(bias_step)


class _FusedEnergy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dtype, rates, activation, *inputs):
        out, tiles = _forward_tiles(inputs, dtype, rates, activation, keep=True)
        ctx.save_for_backward(*inputs)
        # Intermediate activations live on ctx; backward drops them at once,
        # so they do not outlive the step with the graph.
        ctx.tiles, ctx.dtype, ctx.rates, ctx.activation = tiles, dtype, rates, activation
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        inputs, tiles, ctx.tiles = ctx.saved_tensors, ctx.tiles, None
        with torch.autocast("cpu", enabled=False):
            grads = _backward_tiles(
                grad_out, inputs, tiles, ctx.dtype, ctx.rates, ctx.activation,
                ctx.needs_input_grad[3:],
            )  # fmt: skip
        return (None, None, None, *grads)
