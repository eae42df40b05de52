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
  is written out by hand: it keeps only the ReLU outputs and accumulates
  weight gradients tile by tile.

The products go to oneDNN too, which matters on its own: on AMD CPUs
torch's float32 matmul goes to MKL, which runs AVX2 code only, and oneDNN's
AVX-512 products are about twice as fast there (2.2x on a Zen 5).
:func:`linear` brings the same to the ResMADE's layers.

``torch.ops.mkldnn._linear_pointwise`` is the entry PyTorch's own compiler
uses for these post-ops. It is not a public API, so the energy network
falls back to its plain layers (and :func:`linear` to ``F.linear``)
wherever it is missing, and ``use_fused_kernels(False)`` switches both off
(tests compare both; benchmarks count FLOPs on the plain path).
"""

import contextlib
from contextvars import ContextVar

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
# output: that saves a tile-sized allocation and a pass through memory that
# is not in cache (the float32 POWER step was 1.02-1.04x faster in paired runs).
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


# Each activation of a training tile is about 2 MiB (4096 points of 128
# floats), so that a tile's forward and backward passes run in cache. On two
# cores the energy network's forward and backward took 1.2-1.6x less time
# than with the plain layers in paired runs; the fused kernels on the whole
# batch gained 1.0-1.4x. Inference keeps no activations and goes faster with
# 1 MiB tiles: scoring was 1.4x faster in float32 and 1.05-1.25x in bfloat16
# than with 2 MiB tiles, while a training step was 2-5% slower with them (one
# run each, the tile sizes interleaved, on a Zen 5 with 1 MiB of L2 a core).
TILE_BYTES = 2**21
INFERENCE_TILE_BYTES = 2**20


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
    weights = [
        t for b in blocks for t in (b.first.weight, b.first.bias, b.second.weight, b.second.bias)
    ]
    inputs = (x2, c2, x_weight, output_layer.weight, output_layer.bias, *weights)
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

    Where torch's BLAS runs only AVX2 code (MKL on AMD CPUs) this is about
    twice as fast in all three products. oneDNN takes a transposed weight
    at full speed as it is (a contiguous copy of a 512 x 512 one cost
    0.43 ms a layer) but copies a transposed input, so the weight gradient
    makes ``grad.T`` contiguous itself.
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
    """Outputs (groups, S) and, with ``keep``, each tile's saved activations.

    The residual stream stays in float32; the products take ``dtype``.
    ``rates`` holds each block's dropout rate (0 where it is inactive).
    """
    x, context, x_weight, w_out, b_out, *weights = inputs
    weights = _product_weights(weights, dtype, rates)
    act = _KERNEL_ACTIVATIONS[activation][0]
    out = torch.empty_like(x)
    saved = []
    tile_bytes = TILE_BYTES if keep else INFERENCE_TILE_BYTES
    for rows, cols in _tiles(*x.shape, context.shape[-1], tile_bytes):
        points = x[rows, cols]
        h = torch.addcmul(context[rows].float().unsqueeze(-2), points.unsqueeze(-1), x_weight)
        h = h.view(-1, h.shape[-1])
        for i in range(0, len(weights), 4):
            h, a, r = _block(h, *weights[i : i + 4], rates[i // 4], activation)
            if keep:
                saved += [a, r]
        a = act(h)
        out[rows, cols] = torch.addmv(b_out, a, w_out[0]).view(points.shape)
        if keep:
            saved.append(a)
    return out, saved


def _block(h, w1, b1, w2, b2, rate, activation):
    """``h + W2 drop(act(W1 act(h) + b1)) + b2`` (into ``h``, except on the
    post-op fallback) and the inputs of both products.

    With dropout, ``w2`` carries the survivors' scale (:func:`_product_weights`).
    """
    a = _KERNEL_ACTIVATIONS[activation][0](h).to(w1.dtype)
    r = _LINEAR(a, w1, b1, activation, [], "")  # oneDNN's post-op of that name
    if rate > 0:
        _drop_(r, rate)
    if r.dtype != h.dtype:  # bfloat16 products, float32 residual stream
        return h.add_(_LINEAR(r, w2, b2, "none", [], "")), a, r
    if _CONV_INTO is None:
        return _LINEAR.binary(r, h, w2, b2, "add"), a, r  # the residual sum as a post-op
    _add_product_(h, r, w2, b2)
    return h, a, r


def _add_product_(h, x, weight, bias):
    """``h += x @ weight.T + bias`` by oneDNN, in place.

    As a 1x1 convolution over the points, the one oneDNN op of torch that
    adds into its output: 190 GFLOP/s on a 4096-point tile in cache, against
    130 for the linear with the sum as a post-op, which writes a new tensor
    (Zen 4); the float32 POWER step was 1.02x faster (16 paired rounds).
    """
    _CONV_INTO.binary(
        _as_image(h), _as_image(x), weight[..., None, None], bias,
        [0, 0], [1, 1], [1, 1], 1, "add", None, None, [], None,
    )  # fmt: skip


# Dropout draws 16 random bits a unit, four from each 64-bit integer, and
# zeroes the units whose bits fall below a threshold: a 4096-point tile took
# 1.1 ms against 3.9 ms for F.dropout, which draws a float a unit and scales
# in a second pass. The POWER training step with dropout 0.1 in both networks
# took 605 ms, against 777 ms with a float drawn a unit and 505 ms without
# dropout (medians of 12 interleaved rounds, Zen 4). The rate is rounded to a
# multiple of 2**-16.
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


def _product_weights(weights, dtype, rates):
    """Each block's (W1, b1, W2, b2) in the products' dtype, with W2 scaled by
    :func:`_survivor_scale` where the block has dropout (before the cast, so
    that a bfloat16 weight is rounded once)."""
    scales = {4 * i + 2: _survivor_scale(rate) for i, rate in enumerate(rates) if rate > 0}
    return [(w * scales[k] if k in scales else w).to(dtype) for k, w in enumerate(weights)]


def _backward_tiles(grad_out, inputs, saved, dtype, rates, activation, needs_grad):
    """Gradients of every input from the saved activations, tile by tile.

    A block with dropout saved its ReLU output after dropout: it is positive
    exactly where the ReLU was active and the unit was kept, so the ReLU's
    backward on it applies the dropout mask too, and the mask needs no
    memory of its own.
    """
    x, context, x_weight, w_out, _, *weights = inputs
    weights = _product_weights(weights, dtype, rates)
    act_backward_ = _KERNEL_ACTIVATIONS[activation][1]  # in place, on fresh products
    # The input gradients' products go through oneDNN too: where torch's
    # BLAS runs only AVX2 code (MKL on AMD) it is twice as fast.
    transposed = [w.t() if w.dim() == 2 else None for w in weights]
    grads = [torch.zeros_like(t) for t in inputs]
    grad_x, grad_context, grad_x_weight, grad_w_out, grad_b_out, *grad_weights = grads
    per_tile = len(weights) // 2 + 1
    for k, (rows, cols) in enumerate(_tiles(*x.shape, context.shape[-1], TILE_BYTES)):
        activations = saved[k * per_tile : (k + 1) * per_tile]
        g_out = grad_out[rows, cols].reshape(-1)
        a = activations[-1]
        grad_w_out.addmm_(g_out.unsqueeze(0), a)
        grad_b_out.add_(g_out.sum())
        g = act_backward_(torch.outer(g_out, w_out[0]), a)
        for i in reversed(range(0, len(weights), 4)):
            a, r = activations[i // 2], activations[i // 2 + 1]
            # Each weight gradient follows the ReLU backward that has just
            # read its activation, so that it finds the activation in cache.
            g_low = g.to(dtype)
            g_r = act_backward_(_product(g_low, transposed[i + 2]), r)
            _accumulate(grad_weights[i + 2], grad_weights[i + 3], g_low, r, weights[i + 2])
            g_a = act_backward_(_product(g_r, transposed[i]), a)
            _accumulate(grad_weights[i], grad_weights[i + 1], g_r, a, weights[i])
            g.add_(g_a)
        points = x[rows, cols]
        grad_x_weight.addmv_(g.t(), points.reshape(-1))
        g = g.view(*points.shape, -1)  # (rows, cols, H)
        grad_context[rows] += g.sum(1)
        if needs_grad[0]:
            grad_x[rows, cols] = g @ x_weight
    for i, rate in enumerate(rates):  # the products took W2 times the survivors' scale
        if rate > 0:
            grad_weights[4 * i + 2].mul_(_survivor_scale(rate))
    return [grad if need else None for grad, need in zip(grads, needs_grad, strict=True)]


def _product(a, weight, bias=None):
    """``a @ weight.T + bias`` by oneDNN."""
    return _LINEAR(a, weight, bias, "none", [], "")


def _accumulate(grad_weight, grad_bias, g, a, weight):
    """``grad_weight += g.T @ a`` and ``grad_bias += g.sum(0)`` for a layer
    ``a @ weight.T + bias`` and the gradient ``g`` of its output.

    In float32 the product goes to oneDNN as the weight gradient of a 1x1
    convolution over the points: oneDNN's linear would need a transposed
    copy of ``g``, but its convolution reads both (points, features)
    operands as they are, as channels-last images. With the operands in
    cache it took 0.45 ms for a 4096-point tile against 0.8 ms in torch's
    BLAS (MKL on AMD, AVX2 only), but 1.1 ms with both read from main memory,
    hence the order of the backward pass; there the step was 1.16x faster
    than with MKL (paired runs on a Zen 5). In bfloat16 torch's matmul goes
    to oneDNN already, and was faster than the convolution.
    """
    if g.dtype != torch.float32:
        grad_weight.add_(g.t() @ a)
        grad_bias.add_(g.sum(0))
        return
    _, grad_w, grad_b = torch.ops.aten.convolution_backward(
        _as_image(g), _as_image(a), weight[..., None, None], [weight.shape[0]],
        [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, True],
    )  # fmt: skip
    grad_weight.add_(grad_w.view_as(grad_weight))
    grad_bias.add_(grad_b)


def _as_image(t):
    """(points, features) as a (1, features, points, 1) channels-last image, no copy."""
    return t.view(1, t.shape[0], 1, t.shape[1]).permute(0, 3, 1, 2)


class _FusedEnergy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dtype, rates, activation, *inputs):
        out, saved = _forward_tiles(inputs, dtype, rates, activation, keep=True)
        ctx.save_for_backward(*inputs, *saved)
        ctx.n_inputs, ctx.dtype, ctx.rates, ctx.activation = len(inputs), dtype, rates, activation
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        tensors = ctx.saved_tensors
        inputs, saved = tensors[: ctx.n_inputs], tensors[ctx.n_inputs :]
        with torch.autocast("cpu", enabled=False):
            grads = _backward_tiles(
                grad_out, inputs, saved, ctx.dtype, ctx.rates, ctx.activation,
                ctx.needs_input_grad[3:],
            )  # fmt: skip
        return (None, None, None, *grads)
