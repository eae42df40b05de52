"""benchmarks/speed.py (float32) against an older checkout of skaem: the "before" column.

The speed work of the speed issue started after commit 3feb707. To measure it:

    git worktree add /tmp/before 3feb707
    python benchmarks/speed_baseline.py /tmp/before [--training-only ...]

That package lacks the stratified and precision options and helpers added
since; the shims below drop those arguments (float32 and independent
sampling, all the old code could do) and use a plain Adam.
"""

import contextlib
import dataclasses
import inspect
import os
import sys
import types

BASELINE = os.environ.setdefault("SKAEM_BASELINE", sys.argv[1] if len(sys.argv) > 1 else "")
if not BASELINE:
    sys.exit("usage: python benchmarks/speed_baseline.py PATH_TO_OLD_CHECKOUT")
sys.path.insert(0, BASELINE)  # the old skaem first; the environment variable reaches children
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))  # speed.py beside this file
import torch  # noqa: E402

import skaem.inference as inference  # noqa: E402
import skaem.training as training  # noqa: E402

sys.modules["skaem._device"] = types.SimpleNamespace(
    autocast=lambda device, precision: contextlib.nullcontext()
)


def _filtered(function):
    names = set(inspect.signature(function).parameters)
    return lambda *args, **kwargs: function(
        *args, **{k: v for k, v in kwargs.items() if k in names}
    )


inference.conditional_log_densities = _filtered(inference.conditional_log_densities)
inference.sample_rows = _filtered(inference.sample_rows)
fields = {f.name for f in dataclasses.fields(training.TrainingConfig)}
_Config = training.TrainingConfig


def _config(**kwargs):
    config = _Config(**{k: v for k, v in kwargs.items() if k in fields})
    config.precision = "float32"  # read by the benchmark's own autocast call
    return config


training.TrainingConfig = _config
training.make_optimizer = lambda model, lr, capturable=False: torch.optim.Adam(
    model.parameters(), lr=lr
)
if not hasattr(training, "EagerStep"):  # the step as a class came later: the same three calls

    class EagerStep:
        def __init__(self, model, optimizer, config, generator, group=None):
            self.model, self.optimizer, self.config, self.generator = (
                model, optimizer, config, generator
            )  # fmt: skip

        def __call__(self, batch, warmup):
            loss, log_p = training.training_loss(
                self.model, batch, self.config, warmup, self.generator
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return log_p

    training.EagerStep = EagerStep
if not hasattr(training, "GraphedStep"):  # CUDA graphs came later; the CPU never uses them
    training.GraphedStep = type("GraphedStep", (training.EagerStep,), {"EAGER_STEPS": 3})
# Nor were there fused kernels to switch off.
sys.modules["skaem.nn.fused"] = types.SimpleNamespace(
    use_fused_kernels=lambda enabled: contextlib.nullcontext()
)

import speed  # noqa: E402

if __name__ == "__main__":
    sys.argv = ["speed.py", "--precision", "float32", *sys.argv[2:]]
    speed.main()
