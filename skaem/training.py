"""Training loop: one step, one evaluation, the loop with early stopping."""

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._device import autocast
from .inference import conditional_log_densities
from .model import AEM
from .normalizers import importance_noise, n_defensive_samples


@dataclass
class TrainingConfig:
    """Settings of one training run (all counts are optimisation steps)."""

    max_iter: int
    batch_size: int = 256
    learning_rate: float = 5e-4
    warmup_steps: int = 0
    n_importance_samples: int = 20
    include_data: bool = True
    defensive_fraction: float = 0.0
    stratified: bool = False
    precision: str = "float32"
    cuda_graph: bool = False
    eval_interval: int = 100
    n_iter_no_change: int | None = None
    validation_seed: int = 0
    n_validation_samples: int = 100
    max_validation_rows: int = 1000
    verbose: int = 0


@dataclass
class TrainingHistory:
    """What a run did: evaluated steps, mean train and validation log-likelihoods."""

    steps: list = field(default_factory=list)
    train_scores: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    best_step: int = 0
    anneal_step: int | None = None
    proposal_validation_score: float | None = None
    n_iter: int = 0
    diverged: bool = False
    interrupted: bool = False


def training_loss(
    model: AEM,
    batch: Tensor,
    config: TrainingConfig,
    warmup: bool,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Negative objective ``-(log p + log q)`` (or ``-log q`` in warm-up) and mean log p."""
    if warmup:
        log_q = model.proposal_log_prob(batch).sum(-1).mean()
        return -log_q, log_q.detach()
    n_samples = config.n_importance_samples
    n_heavy = n_defensive_samples(model.proposal, n_samples, config.defensive_fraction)
    uniforms, normals = importance_noise(
        (*batch.shape, n_samples), n_heavy, generator, config.stratified, batch.device
    )
    log_p, log_q = model.log_prob_terms(
        batch, uniforms, normals, config.include_data, config.defensive_fraction, config.stratified
    )
    log_p, log_q = log_p.sum(-1).mean(), log_q.sum(-1).mean()
    return -(log_p + log_q), log_p.detach()


def validation_rows(model: AEM, x_valid: Tensor, config: TrainingConfig, warmup: bool) -> Tensor:
    """Estimated log-likelihoods of held-out rows (eval mode), one per row.

    The same rows (at most ``max_validation_rows``) and the same importance
    noise at every evaluation, so that checkpoints differ only by their
    weights; ``n_validation_samples`` (more than training's S) keeps the
    estimate's downward bias, which grows as the model moves away from its
    proposal, from favouring early, proposal-like checkpoints.
    """
    density = "proposal" if warmup else "aem"
    terms = conditional_log_densities(
        model,
        x_valid[: config.max_validation_rows],
        max(config.n_validation_samples, config.n_importance_samples),
        config.validation_seed,
        density,
        config.include_data,
        config.defensive_fraction,
        stratified=config.stratified,
        precision=config.precision,
    )
    model.train()
    return terms.sum(-1)


def validation_score(model: AEM, x_valid: Tensor, config: TrainingConfig, warmup: bool) -> float:
    """Mean of ``validation_rows``."""
    return validation_rows(model, x_valid, config, warmup).mean().item()


def _mean_over(rows: Tensor, group) -> float:
    """The mean of ``rows`` over the processes of ``group``, weighted by the rows each holds."""
    score = rows.mean().item()
    if group is None:
        return score
    return group.weighted_mean(score, rows.numel())


def _held_out_score(model, x_valid, config, warmup, group) -> float:
    """``validation_score``, averaged over the processes of ``group`` by the rows each scored."""
    score = validation_score(model, x_valid, config, warmup)
    if group is None:
        return score
    return group.weighted_mean(score, min(x_valid.shape[0], config.max_validation_rows))


def _clearly_worse(rows: Tensor, best_rows: Tensor, group, n_errors: float = 2.0) -> bool:
    """Whether ``rows`` score below ``best_rows`` by more than ``n_errors`` standard errors.

    A paired comparison on the same held-out rows and noise. The best
    checkpoint is the largest of many noisy estimates, so its score is
    flattering; the final, annealed weights are kept unless they are clearly
    worse, which they are where the networks overfit.
    """
    diff = (rows - best_rows).double()
    n, total, squares = diff.numel(), diff.sum().item(), diff.square().sum().item()
    if group is not None:
        n, total, squares = group.sum([n, total, squares])
    mean = total / n
    variance = max(squares / n - mean**2, 0.0) / max(n - 1, 1)
    return mean < -n_errors * math.sqrt(variance)


def make_optimizer(model: AEM, learning_rate: float, capturable: bool = False) -> torch.optim.Adam:
    """Adam with its fused kernel: on a GPU one launch per step instead of
    one per tensor, on a CPU one pass over each tensor instead of about ten
    (2.0 against 4.8 ms a step for the POWER model's 2.6M parameters).

    ``capturable`` keeps the step count and the learning rate on the GPU, so
    that the step can be replayed from a CUDA graph while the schedule moves
    the learning rate (a tensor the scheduler fills in place).
    """
    device = next(model.parameters()).device
    if capturable:
        lr = torch.tensor(float(learning_rate), dtype=torch.float32, device=device)
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True, capturable=True)
    fused = device.type in ("cuda", "cpu") or None
    return torch.optim.Adam(model.parameters(), lr=learning_rate, fused=fused)


class CosineSchedule:
    """Cosine annealing of Adam's learning rate to zero, which can be cut short.

    ``anneal_now`` starts a new, shorter cosine from the rate reached: early
    stopping calls it on a plateau, so that a run whose ``max_iter`` is far
    longer than it needs still ends on annealed weights rather than on
    weights trained at nearly the initial rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, n_steps: int):
        self.optimizer = optimizer
        self.initial_rate = optimizer.param_groups[0]["lr"]
        if isinstance(self.initial_rate, Tensor):
            self.initial_rate = self.initial_rate.item()
        self.start, self.length = 0, max(n_steps, 1)

    def rate(self, step: int) -> float:
        progress = min((step - self.start) / self.length, 1.0)
        return self.initial_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def step(self, step: int) -> None:
        """Set the rate of the step after ``step``."""
        rate = self.rate(step)
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], Tensor):  # a captured CUDA graph reads it in place
                group["lr"].fill_(rate)
            else:
                group["lr"] = rate

    def anneal_now(self, step: int, n_steps: int) -> None:
        """Anneal from the rate of ``step`` to zero over the next ``n_steps``."""
        self.initial_rate = self.rate(step)
        self.start, self.length = step, max(n_steps, 1)

    @property
    def end(self) -> int:
        return self.start + self.length


class EagerStep:
    """One optimisation step: the loss, its gradients (averaged over ``group``) and Adam."""

    def __init__(self, model, optimizer, config, generator, group=None):
        self.model, self.optimizer = model, optimizer
        self.config, self.generator, self.group = config, generator, group

    def __call__(self, batch: Tensor, warmup: bool) -> Tensor:
        with autocast(batch.device, self.config.precision):
            loss, log_p = training_loss(self.model, batch, self.config, warmup, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.group is not None:
            self.group.average_gradients(self.model)
        self.optimizer.step()
        return log_p


class GraphedStep(EagerStep):
    """The step after warm-up, captured once in a CUDA graph and replayed.

    A small model leaves the GPU idle between its hundreds of kernel
    launches; a replay launches them all at once. Sampling noise comes from
    ``generator``, registered with the graph so that every replay draws
    fresh numbers. The first steps run eagerly on a side stream, as capture
    requires, and are ordinary training steps.
    """

    EAGER_STEPS = 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.graph, self.static_batch, self.static_log_p, self.n_eager = None, None, None, 0

    def __call__(self, batch: Tensor, warmup: bool) -> Tensor:
        if warmup:
            return super().__call__(batch, warmup)
        if self.n_eager < self.EAGER_STEPS:
            self.n_eager += 1
            side = torch.cuda.Stream(batch.device)
            side.wait_stream(torch.cuda.current_stream(batch.device))
            with torch.cuda.stream(side):
                log_p = super().__call__(batch, warmup)
            torch.cuda.current_stream(batch.device).wait_stream(side)
            return log_p
        if self.graph is None:
            self._capture(batch)
        self.static_batch.copy_(batch)
        self.graph.replay()
        return self.static_log_p.clone()

    def _capture(self, batch):
        self.static_batch = batch.clone()
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(self.generator)
        with torch.cuda.graph(self.graph):  # records the eager step's kernels
            self.static_log_p = super().__call__(self.static_batch, False)


def batches(n_rows: int, batch_size: int, generator: torch.Generator, device):
    """Endless stream of index batches, reshuffled every epoch."""
    batch_size = min(batch_size, n_rows)
    while True:
        perm = torch.randperm(n_rows, generator=generator, device=device)
        for start in range(0, n_rows - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]


def _progress(config: TrainingConfig):
    if not config.verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.max_iter, desc="AEM", unit="step")


@torch.enable_grad()  # callers may sit inside torch.no_grad()
def train(
    model: AEM,
    x_train: Tensor,
    x_valid: Tensor | None,
    config: TrainingConfig,
    generator: torch.Generator,
    step_offset: int = 0,
    group=None,
) -> TrainingHistory:
    """Maximise ``log p + log q`` with Adam and cosine annealing.

    Every ``eval_interval`` steps the mean train log-likelihood (and the
    validation one, if any) is recorded, and the weights are kept if they
    are the best so far (or, without validation, the latest finite ones).
    With validation, ``n_iter_no_change`` evaluations without improvement
    (a plateau) restore the best weights and anneal the learning rate to
    zero over as many steps as the patience spanned; the run ends there.
    At the end the final, annealed weights stay unless the held-out rows
    score them clearly below the best checkpoint (``_clearly_worse``).
    A non-finite loss stops the run with a warning and restores the best
    weights; so does an interrupt (Ctrl-C, a notebook's stop button), which
    ends the run without losing its work. ``step_offset`` counts the warm-up
    steps done by earlier calls (``warm_start``); a run that ends within the
    warm-up warns, since the energy network would keep its initial weights.
    ``group`` (a ``collective.ProcessGroup``) trains data-parallel: rank 0's
    weights to start, gradients averaged every step, scores averaged so that
    all processes stop together.
    """
    graphed = config.cuda_graph and x_train.device.type == "cuda" and group is None
    optimizer = make_optimizer(model, config.learning_rate, capturable=graphed)
    step_once = (GraphedStep if graphed else EagerStep)(model, optimizer, config, generator, group)
    schedule = CosineSchedule(optimizer, config.max_iter)
    annealing = False
    history = TrainingHistory()
    best = (-math.inf, copy.deepcopy(model.state_dict()), None)  # score, weights, rows
    rows = None
    running, n_running, bad_evals = torch.zeros((), device=x_train.device), 0, 0
    bar = _progress(config)
    stream = batches(x_train.shape[0], config.batch_size, generator, x_train.device)
    # A fixed (uniform) proposal has nothing to warm up.
    warmup_steps = config.warmup_steps if model.proposal.n_params else 0
    if step_offset + config.max_iter <= warmup_steps:
        warnings.warn(
            f"Training ends after {step_offset + config.max_iter} steps, within "
            f"warmup_steps={warmup_steps}, which train the proposal alone: the energy "
            "network keeps its initial weights. Set max_iter above warmup_steps, or "
            "lower warmup_steps.",
            UserWarning,
            stacklevel=3,
        )
    model.train()
    if group is not None:
        group.broadcast_parameters(model)
    step = 0
    try:
        for step in range(1, config.max_iter + 1):
            warmup = step_offset + step <= warmup_steps
            log_p = step_once(x_train[next(stream)], warmup)
            schedule.step(step)
            running, n_running = running + log_p, n_running + 1
            if bar is not None:
                bar.update(1)
            if step % config.eval_interval and step != config.max_iter:
                continue
            train_score = (running / n_running).item()  # one host sync per interval
            if group is not None:
                train_score = group.weighted_mean(train_score, 1.0)
            running, n_running = torch.zeros_like(running), 0
            if not math.isfinite(train_score):
                warnings.warn(
                    f"The training loss became non-finite at step {step}; training "
                    f"stopped and the weights of step {history.best_step} were restored.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                history.diverged = True
                break
            score = train_score
            if x_valid is not None:
                rows = validation_rows(model, x_valid, config, warmup)
                score = _mean_over(rows, group)
                history.validation_scores.append(score)
            history.steps.append(step)
            history.train_scores.append(train_score)
            if bar is not None:
                post = {"train": f"{train_score:.3f}"}
                if x_valid is not None:
                    post["valid"] = f"{score:.3f}"
                bar.set_postfix(post)
            improved = x_valid is None or warmup or score > best[0]
            if improved:
                # Warm-up scores the proposal alone: not comparable with the AEM's.
                best = (-math.inf if warmup else score, copy.deepcopy(model.state_dict()), rows)
                history.best_step, bad_evals = step, 0
            else:
                bad_evals += 1
            if annealing and step >= schedule.end:
                break
            patience = config.n_iter_no_change
            if annealing or patience is None or bad_evals < patience or step == config.max_iter:
                continue
            # A plateau: go back to the best weights and anneal from there for as
            # long as the patience allowed, rather than stop at a high rate.
            model.load_state_dict(best[1])
            schedule.anneal_now(step, min(patience * config.eval_interval, config.max_iter - step))
            history.anneal_step, annealing, bad_evals = step, True, 0
    except KeyboardInterrupt:
        if group is not None:
            raise  # the other processes would wait for this one forever
        step -= 1  # the interrupted step may be half done
        warnings.warn(
            f"Training was interrupted after step {step}; the model keeps the weights "
            f"of step {history.best_step}. Fit again with warm_start=True to go on.",
            RuntimeWarning,
            stacklevel=3,
        )
        history.interrupted = True
    if bar is not None:
        bar.close()
    if history.diverged or history.interrupted:
        model.load_state_dict(best[1])
    elif x_valid is not None and history.best_step != step:
        if _clearly_worse(rows, best[2], group):
            model.load_state_dict(best[1])
        else:
            history.best_step = step
    if x_valid is not None and not history.interrupted:  # what the energy added, held out
        history.proposal_validation_score = _held_out_score(model, x_valid, config, True, group)
    history.n_iter = step
    model.eval()
    return history
