"""Does scoring need to hand freed memory back to glibc? Time and added peak
memory of scoring with the three trimming policies.

glibc raises its mmap threshold as large blocks are freed and then keeps
freed blocks in its heaps, so a long scoring pass can grow its resident
memory with the number of rows. skaem's scoring asks glibc to trim
(``malloc_trim``) once it holds more than ``RETAINED_BYTES`` free
(``skaem._device.release_freed_memory``). This benchmark scores random rows
with the paper's POWER-sized model (``benchmarks/speed.py``) in a fresh
process per run, under each policy:

- ``threshold``: skaem's policy;
- ``never``: no trimming (the call made a no-op);
- ``every chunk``: trim after every chunk (``RETAINED_BYTES = 0``).

``--plain`` scores through the energy network's plain layers
(``use_fused_kernels(False)``, as on builds without oneDNN), whose
activations grow with the block of points rather than a tile.

Usage: python benchmarks/memory.py [--rows 200 3200] [--samples 1000] [--rounds 2] [--plain]
Linux with glibc only (reads /proc/self/status).
"""

import argparse
import multiprocessing

POLICIES = ("threshold", "never", "every chunk")


def _score_in_child(policy, n_rows, n_samples, plain, queue):
    import time

    import torch
    from speed import D, _status_mib, power_model

    import skaem._device
    import skaem.inference
    from skaem.inference import conditional_log_densities
    from skaem.nn.fused import use_fused_kernels

    if policy == "never":
        skaem.inference.release_freed_memory = lambda device: None
    elif policy == "every chunk":
        skaem._device.RETAINED_BYTES = 0
    model = power_model(torch.device("cpu")).eval()
    x = torch.randn(n_rows, D, generator=torch.Generator().manual_seed(0))
    conditional_log_densities(model, x[:1], 10, 0)  # load kernels before the baseline
    before = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # reset the high-water mark VmHWM to the current RSS
    start = time.perf_counter()
    with use_fused_kernels(not plain):
        conditional_log_densities(model, x, n_samples, 0, defensive_fraction=0.1, stratified=True)
    elapsed = time.perf_counter() - start
    queue.put((elapsed, _status_mib("VmHWM") - before, _status_mib("VmRSS") - before))


def measure(policy, n_rows, n_samples, plain):
    """Seconds, added peak and added resident memory (MiB), in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_score_in_child, args=(policy, n_rows, n_samples, plain, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200, 3200])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help="the energy network's plain layers")
    args = parser.parse_args()
    layers = "plain layers" if args.plain else "fused kernels"
    print(f"POWER-sized model ({layers}), S = {args.samples}, a fresh process a run, interleaved")
    print(
        f"{'rows':>6} {'policy':>12} {'round':>5} {'seconds':>8} {'peak +MiB':>10} {'end +MiB':>9}"
    )
    for n_rows in args.rows:
        for round_ in range(args.rounds):
            for policy in POLICIES:
                seconds, peak, end = measure(policy, n_rows, args.samples, args.plain)
                row = f"{n_rows:>6} {policy:>12} {round_:>5} {seconds:>8.2f}"
                print(f"{row} {peak:>10.0f} {end:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
