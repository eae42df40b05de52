"""Speed of the AEM backend on the paper's POWER configuration, against the matmul peak.

POWER configuration (Appendix B): D = 6, batch 512, ResMADE 512 wide with 4
blocks, energy net 128 wide with 4 blocks, context 64, 20 mixture components,
S = 20 importance samples in training; ``--dropout 0.1`` adds the paper's
dropout for POWER to both networks. On random data (speed does not depend on
the values). Prints, from one run:

- the fp32 and bf16 matrix-multiply throughput of this machine (square
  products of side 2048, the faster of torch's matmul and oneDNN's), the
  reference for everything else;
- on the CPU, the rates of the energy network's own products (forward,
  input gradient, weight gradient) at the shape of a training tile, with
  the operands in cache: a ceiling for the step, since 128-wide products
  run slower than square ones;
- milliseconds per training step (forward, backward, Adam), the FLOPs of a
  step as counted by ``torch.utils.flop_counter``, the achieved GFLOP/s and
  its fraction of the matmul peak of the same precision; the precisions'
  steps are interleaved, one of each per round, so that their ratio (the
  bfloat16 speed-up) holds on a shared machine, and short readings of the
  peak and of the tile products are taken in every round, for fractions
  that the machine's drift within a run does not move; ``--compare-plain`` adds
  the energy network's plain layers (the code before the fused CPU kernels)
  to the interleaving, for a before/after table from one run;
- scoring throughput (rows x importance samples per second) and the peak
  resident memory that scoring adds, at S = 1,000 and 20,000, each measured in
  a fresh process, for two numbers of rows (scoring works in fixed-shape
  chunks, so the peak must not grow with the rows);
- sampling throughput (rows per second, 100 proposals per dimension);
- with ``--large-rows N``, the same scoring measurement for N rows at
  ``--large-samples`` (default 20,000): the paper's evaluation of a whole test
  set, to show that peak memory stays bounded (100,000 rows take minutes on a
  GPU and most of a day on two CPU cores).

Usage: python benchmarks/speed.py [--precision float32 bfloat16] [--device cpu]
       [--training-only] [--compare-plain] [--steps N] [--dropout RATE]
       [--large-rows 100000 [--steps 0]]   (--steps 0: the large scoring alone)
Takes about 6 minutes on two CPU cores.
"""

import argparse
import multiprocessing
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from skaem.inference import conditional_log_densities, sample_rows
from skaem.model import AEM
from skaem.nn.fused import use_fused_kernels
from skaem.proposal import GaussianMixtureProposal
from skaem.training import EagerStep, GraphedStep, TrainingConfig, make_optimizer

D, BATCH, S_TRAIN, HIDDEN_ENERGY = 6, 512, 20, 128


def _onednn_linear():
    """oneDNN's linear (a private torch op), or None where this torch lacks it."""
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


def power_model(device, dropout=0.0):
    torch.manual_seed(0)
    return AEM(
        D, GaussianMixtureProposal(20), 512, 4, 64, HIDDEN_ENERGY, 4,
        dropout=dropout, energy_dropout=dropout,
    ).to(device)  # fmt: skip


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _gflops(product, flops, device, seconds):
    """GFLOP/s of ``product`` (``flops`` a call) repeated for ``seconds``."""
    product()  # warm-up
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        product()
        count += 1
        synchronize(device)
    return flops * count / (time.perf_counter() - start) / 1e9


def matmul_gflops(dtype, device, n=2048, seconds=2.0):
    """GFLOP/s of square products of side ``n`` per library: torch's matmul
    and, on the CPU, oneDNN's (the library of the fused kernels).

    They differ: on AMD CPUs torch's float32 matmul goes to MKL, which runs
    AVX2 code only, while oneDNN runs AVX-512 (2.2x faster on a Zen 5).
    The peak of a precision is the largest of these readings.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    flops = 2 * n**3
    rates = {"torch.matmul": _gflops(lambda: a @ b, flops, device, seconds)}
    onednn_linear = _onednn_linear()
    if device.type == "cpu" and onednn_linear is not None:
        b_t = b.t().contiguous()
        rates["oneDNN"] = _gflops(
            lambda: onednn_linear(a, b_t, None, "none", [], ""), flops, device, seconds
        )
    return rates


def tile_product_gflops(dtype, seconds=1.0):
    """GFLOP/s of the energy network's products at the shape of a training
    tile, with the kernels of :mod:`skaem.nn.fused`, in a loop that keeps
    the operands in cache: the forward (with its ReLU post-op), the input
    gradient and the weight gradient, and their mix (each runs once per
    layer, so the mix is their harmonic mean).

    This is a ceiling for the step, which does little else: on CPUs the
    products of a 128-wide layer run slower than square products of side
    2,048, and the weight gradient slowest of the three.
    """
    fused = _fused_internals()
    points, width = fused.TILE_BYTES // (4 * HIDDEN_ENERGY), HIDDEN_ENERGY
    activation, gradient = torch.randn(2, points, width).to(dtype)
    weight, bias = torch.randn(width, width).to(dtype), torch.randn(width).to(dtype)
    grad_weight, grad_bias = torch.zeros(width, width), torch.zeros(width)
    products = {
        "forward": lambda: fused._product(activation, weight, bias, post_op="relu"),
        "input gradient": lambda: fused._product(gradient, weight),
        "weight gradient": lambda: fused._accumulate(grad_weight, grad_bias, gradient, activation),
    }
    flops = 2 * points * width * width
    rates = {name: _gflops(f, flops, torch.device("cpu"), seconds) for name, f in products.items()}
    rates["mix"] = len(products) / sum(1 / rates[name] for name in products)
    return rates


def _fused_internals():
    """skaem.nn.fused where this checkout has its oneDNN kernels, else None."""
    try:
        from skaem.nn import fused
    except ImportError:
        return None
    return fused if getattr(fused, "_LINEAR", None) is not None else None


def make_step(device, precision, graphed=False, dropout=0.0):
    """A warmed-up training step (replayed from a CUDA graph with ``graphed``),
    its batch, and the FLOPs of one step."""
    model = power_model(device, dropout).train()
    optimizer = make_optimizer(model, 5e-4, capturable=graphed)
    config = TrainingConfig(max_iter=1, n_importance_samples=S_TRAIN, precision=precision,
                            defensive_fraction=0.1, stratified=True)  # fmt: skip
    # (max_iter sets the training loop's schedule; a step alone does not read it)
    generator = torch.Generator(device).manual_seed(0)
    batch = torch.randn(BATCH, D, device=device)
    # Model FLOPs, counted on the plain layers: the counter does not see oneDNN's fused ops.
    with FlopCounterMode(display=False) as counter, use_fused_kernels(False):
        EagerStep(model, optimizer, config, generator)(batch, False)
    step = (GraphedStep if graphed else EagerStep)(model, optimizer, config, generator)
    for _ in range(GraphedStep.EAGER_STEPS + 2):  # warm-up (and capture)
        step(batch, False)
    return step, batch, counter.get_total_flops()


def time_training(device, variants, rounds, graphed=False, probes=None, dropout=0.0):
    """Per variant ``(precision, fused)``: the median seconds of its steps and
    the FLOPs of a step; the per-round times for paired ratios; and per
    probe (name: a function that returns GFLOP/s), its reading in each round.

    The variants' steps are interleaved, one of each per round, so that all
    meet the same load on a shared machine, and the probes run in every
    round beside them. ``fused=False`` runs the energy network's plain
    layers (the code before the fused CPU kernels).
    """
    steps = {v: make_step(device, v[0], graphed, dropout) for v in variants}
    times = {v: [] for v in variants}
    readings = {name: [] for name in probes or {}}
    for _ in range(rounds):
        for (precision, fused), (step, batch, _) in steps.items():
            synchronize(device)
            start = time.perf_counter()
            with use_fused_kernels(fused):
                step(batch, False)
            synchronize(device)
            times[precision, fused].append(time.perf_counter() - start)
        for name, probe in (probes or {}).items():
            readings[name].append(probe())
    medians = {v: (statistics.median(times[v]), steps[v][2]) for v in variants}
    return medians, times, readings


def _score_in_child(device_name, precision, n_rows, n_samples, queue):
    device = torch.device(device_name)
    model = power_model(device).eval()
    x = torch.randn(n_rows, D, device=device)
    conditional_log_densities(model, x[:1], 10, 0)  # load kernels before the baseline
    before = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # reset the high-water mark VmHWM to the current RSS
    start = time.perf_counter()
    conditional_log_densities(
        model, x, n_samples, 0, defensive_fraction=0.1, stratified=True, precision=precision
    )
    synchronize(device)
    elapsed = time.perf_counter() - start
    gpu_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    queue.put((elapsed, _status_mib("VmHWM") - before, gpu_peak / 2**20))


def _status_mib(key):
    """A memory figure of this process from /proc/self/status (Linux), in MiB.

    Not getrusage's ru_maxrss: Linux carries that over from the parent
    across fork and exec, which hides the child's own peak.
    """
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"{key} not in /proc/self/status")


def time_scoring(device, precision, n_rows, n_samples):
    """Seconds and added peak memory (MiB) of scoring, in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(
        target=_score_in_child, args=(str(device), precision, n_rows, n_samples, queue)
    )
    child.start()
    result = queue.get()
    child.join()
    return result


def time_sampling(device, precision, n_rows=2000):
    model = power_model(device).eval()
    sample_rows(model, 10, 100, 0, defensive_fraction=0.1, precision=precision)
    synchronize(device)
    start = time.perf_counter()
    sample_rows(model, n_rows, 100, 0, defensive_fraction=0.1, precision=precision)
    synchronize(device)
    return n_rows / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--training-only", action="store_true", help="skip scoring and sampling")
    parser.add_argument(
        "--compare-plain", action="store_true", help="also time the plain layers, interleaved"
    )
    parser.add_argument(
        "--dropout", type=float, default=0.0,
        help="dropout in both networks' blocks while training (the paper's POWER uses 0.1)",
    )  # fmt: skip
    parser.add_argument("--large-rows", type=int, default=0)
    parser.add_argument("--large-samples", type=int, default=20000)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    peaks = {}
    for precision in args.precision:
        rates = matmul_gflops(getattr(torch, precision), device)
        peaks[precision] = max(rates.values())
        each = ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items())
        print(f"matmul peak {precision}: {peaks[precision]:.1f} GFLOP/s ({each})")
    for precision in args.precision:
        report_tile_products(device, precision, peaks[precision])
    if args.steps:
        for graphed in (False, True) if device.type == "cuda" else (False,):
            report_training(
                device, args.precision, args.steps, peaks, graphed, args.compare_plain,
                args.dropout,
            )  # fmt: skip
    for precision in args.precision if args.steps and not args.training_only else ():
        print(f"\n== {precision} ==")
        # A GPU finishes the CPU's row counts in a fraction of a second.
        scale = 25 if device.type == "cuda" else 1
        for n_samples, row_counts in ((1000, (200, 800, 3200)), (20000, (20, 80))):
            for n_rows in row_counts:
                report_scoring(device, precision, scale * n_rows, n_samples)
        print(f"sampling: {time_sampling(device, precision):,.0f} rows/s")
    if args.large_rows:
        report_scoring(device, args.precision[0], args.large_rows, args.large_samples)


def report_tile_products(device, precision, peak):
    """Print the rates of the tile products (on the fused CPU kernels only)."""
    if not _fused_runs(device, precision):
        return
    rates = tile_product_gflops(getattr(torch, precision))
    each = ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items() if name != "mix")
    print(
        f"energy-network products at the training tile's shape, {precision}, in cache: {each}; "
        f"mix {rates['mix']:.1f} GFLOP/s = {rates['mix'] / peak:.0%} of the matmul peak"
    )


def _fused_runs(device, precision):
    """Whether the fused CPU kernels run the energy network in ``precision``."""
    fused = _fused_internals()
    if device.type != "cpu" or fused is None:
        return False
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bfloat16"):
        return fused.fused_kernels_apply(torch.zeros(1))


def report_training(device, precisions, rounds, peaks, graphed, compare_plain, dropout):
    variants = [(p, True) for p in precisions]
    variants += [(p, False) for p in precisions] if compare_plain else []
    medians, times, readings = time_training(
        device, variants, rounds, graphed, _probes(device, precisions), dropout
    )
    # The peak again after the steps; the larger reading is the reference.
    peaks = {
        p: max(peak, *matmul_gflops(getattr(torch, p), device).values())
        for p, peak in peaks.items()
    }
    label = (" (CUDA graph)" if graphed else "") + (f", dropout {dropout}" if dropout else "")
    print(f"\ntraining step{label}, {rounds} rounds of one step per variant, interleaved:")
    for (precision, fused), (seconds, flops) in medians.items():
        achieved = flops / seconds / 1e9
        print(
            f"  {precision}{'' if fused else ', plain layers'}: median {1e3 * seconds:.1f} ms, "
            f"{flops / 1e9:.2f} GFLOP, {achieved:.1f} GFLOP/s = "
            f"{achieved / peaks[precision]:.0%} of the {precision} matmul peak "
            f"({peaks[precision]:.1f} GFLOP/s, larger of two readings)"
        )
        rates = [flops / t / 1e9 for t in times[precision, fused]]
        paired = [
            f"{_median_ratio(rates, readings[name])} of the {name} "
            f"(median reading {statistics.median(readings[name]):.1f})"
            for name in readings
            if name.startswith(precision)
        ]
        print(f"    against the probes of the same rounds: {'; '.join(paired)}")

    def speed_up(slow, fast):
        ratios = [a / b for a, b in zip(times[slow], times[fast], strict=True)]
        return f"{statistics.median(ratios):.2f}x"

    if {"float32", "bfloat16"} <= set(precisions):
        print(f"  bfloat16 over float32: {speed_up(('float32', True), ('bfloat16', True))}")
    for precision in precisions if compare_plain else ():
        print(f"  {precision}, fused over plain: {speed_up((precision, False), (precision, True))}")


def _probes(device, precisions):
    """Short readings of the matmul peak (and, on the fused CPU kernels, of
    the tile products' mix) per precision, taken in every round of the
    steps: the machine's speed drifts by 10-30% within a run, and a ratio
    of readings from the same round does not see that drift."""
    probes = {}
    for precision in precisions:
        dtype = getattr(torch, precision)
        probes[f"{precision} matmul peak"] = lambda dtype=dtype: max(
            matmul_gflops(dtype, device, seconds=0.25).values()
        )
        if _fused_runs(device, precision):
            probes[f"{precision} tile products' mix"] = lambda dtype=dtype: tile_product_gflops(
                dtype, seconds=0.05
            )["mix"]
    return probes


def _median_ratio(rates, readings):
    ratios = [rate / reading for rate, reading in zip(rates, readings, strict=True)]
    return f"{statistics.median(ratios):.0%}"


def report_scoring(device, precision, n_rows, n_samples):
    elapsed, added, gpu = time_scoring(device, precision, n_rows, n_samples)
    gpu_text = f", GPU peak {gpu:.0f} MiB" if device.type == "cuda" else ""
    print(
        f"scoring S={n_samples:5d}, {n_rows:3d} rows ({precision}): {elapsed:.1f} s, "
        f"{n_rows * n_samples / elapsed:,.0f} row-samples/s, "
        f"peak memory added {added:.0f} MiB{gpu_text}",
        flush=True,
    )


if __name__ == "__main__":
    main()
