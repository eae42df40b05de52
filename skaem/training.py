"""Training loop: one step, one evaluation, the loop with early stopping."""

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import threads
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
    resume_point: "ResumePoint | None" = None
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

    The same rows (at most ``max_validation_rows``) at every evaluation, and
    a deterministic quadrature rule of ``n_validation_samples`` nodes for
    each normalizer, so that checkpoints differ only by their weights and
    their ranking is not swayed by importance-sampling noise, nor by its
    bias, which grows as the model moves away from its proposal. Models the
    rule does not apply to (``AEM.quadrature_applies``) are sampled, with
    common noise and at least training's S.
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
        normalizer="quadrature",
    )
    model.train()
    return terms.sum(-1)


def _mean_over(rows: Tensor, group) -> float:
    """The mean of ``rows`` over the processes of ``group``, weighted by the rows each holds."""
    score = rows.mean().item()
    if group is None:
        return score
    return group.weighted_mean(score, rows.numel())


def _selection_optimism(candidates: Tensor, group, seed: int, n_resamples: int = 200) -> float:
    """How much choosing the best of ``candidates`` on their own rows flatters its score.

    ``candidates`` holds one row of held-out log-likelihoods per checkpoint
    (checkpoints x rows). A Poisson bootstrap repeats the choice on resampled
    rows and scores the checkpoint it picks on the rows the resample left
    out; the mean gap between the two scores is the flattering. It is small
    where one checkpoint stands clearly above the rest, and grows with the
    number of close checkpoints and the noise of the rows. Out-of-bag scores
    make it err high, towards keeping the annealed weights. Processes of
    ``group`` resample their own rows and sum the bootstrap's totals.
    """
    # Centred on each row's mean over the checkpoints: a row's level, shared by
    # every checkpoint, would only add noise to the gaps.
    scores = candidates.double()
    scores = scores - scores.mean(0)
    rank = 0 if group is None else group.rank
    generator = torch.Generator().manual_seed(seed + rank)
    rates = torch.ones(n_resamples, scores.shape[1], dtype=torch.float64)
    in_bag = torch.poisson(rates, generator=generator)
    left_out = (in_bag == 0).double()
    totals = [in_bag @ scores.T, in_bag.sum(1), left_out @ scores.T, left_out.sum(1)]
    if group is not None:  # one reduction of all four totals
        sizes = [total.numel() for total in totals]
        flat = torch.from_numpy(group.sum(torch.cat([t.flatten() for t in totals]).numpy()))
        totals = [part.view_as(t) for part, t in zip(flat.split(sizes), totals, strict=True)]
    in_sum, in_count, out_sum, out_count = totals
    usable = (in_count > 0) & (out_count > 0)
    if not usable.any():
        return 0.0
    in_mean = in_sum[usable] / in_count[usable, None]
    out_mean = out_sum[usable] / out_count[usable, None]
    chosen = in_mean.argmax(1, keepdim=True)
    gap = in_mean.gather(1, chosen) - out_mean.gather(1, chosen)
    optimism = gap.mean().item()
    # A checkpoint scoring a row -inf leaves no finite measure: compare plainly.
    return max(optimism, 0.0) if math.isfinite(optimism) else 0.0


def _best_scores_higher(
    rows: Tensor, best_rows: Tensor, candidates: Tensor, group, seed: int
) -> bool:
    """Whether the best checkpoint beats the final weights on the held-out rows by
    more than choosing it there flatters it (``_selection_optimism``).

    A paired comparison on the same rows and noise. Where a few held-out rows
    saw an anneal overfit, the best checkpoint stood clearly above the others
    and wins; where many close checkpoints competed, the final, annealed
    weights must fall below the best by more than the choice's flattering.
    """
    gap = _mean_over((rows - best_rows).double(), group)
    return gap < -_selection_optimism(candidates, group, seed)


def make_optimizer(model: AEM, learning_rate: float, capturable: bool = False) -> torch.optim.Adam:
    """Adam with its fused kernel: on a GPU one launch per step instead of
    one per tensor, on a CPU one pass over each tensor instead of about ten.

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

    @property
    def state(self) -> tuple:
        return (self.initial_rate, self.start, self.length)

    @state.setter
    def state(self, state: tuple) -> None:
        self.initial_rate, self.start, self.length = state


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


class BatchStream:
    """Endless index batches, reshuffled every epoch; ``state`` saves its place."""

    def __init__(self, n_rows: int, batch_size: int, generator: torch.Generator, device):
        self.n_rows, self.batch_size = n_rows, min(batch_size, n_rows)
        self.generator, self.device = generator, device
        self.perm, self.position = None, 0

    def __next__(self) -> Tensor:
        if self.perm is None or self.position + self.batch_size > self.n_rows:
            self.perm = torch.randperm(self.n_rows, generator=self.generator, device=self.device)
            self.position = 0
        batch = self.perm[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    @property
    def state(self) -> tuple:
        return (None if self.perm is None else self.perm.cpu(), self.position)

    @state.setter
    def state(self, state: tuple) -> None:
        perm, self.position = state
        self.perm = None if perm is None else perm.to(self.device)


@dataclass
class ResumePoint:
    """What a later call of ``train`` needs to go on exactly from one evaluation.

    ``finished`` runs (completed, stopped early or diverged) are followed by
    a new cosine cycle that keeps only Adam's moments; an interrupted run is
    finished from ``step`` of its ``n_steps``, with its schedule, batches,
    noise and early-stopping record as they were.
    """

    step: int
    n_steps: int
    optimizer: dict
    schedule: tuple = ()
    generator: Tensor | None = None
    stream: tuple = (None, 0)
    annealing: bool = False
    bad_evals: int = 0
    best_score: float = -math.inf
    best_rows: Tensor | None = None
    candidate_rows: tuple = ()  # every checkpoint's held-out rows (CPU), for the final choice
    finished: bool = False

    def cpu(self) -> "ResumePoint":
        """A copy whose tensors are on the CPU (for pickling)."""
        return dataclasses.replace(
            self,
            optimizer=_to_cpu(self.optimizer),
            stream=_to_cpu(self.stream),
            best_rows=_to_cpu(self.best_rows),
        )


def _to_cpu(value):
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(item) for item in value)
    return value


def _progress(config: TrainingConfig, n_steps: int):
    if not config.verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n_steps, desc="AEM", unit="step")


@dataclass
class _Checkpoint:
    """The weights kept so far, their validation score and rows, and where to go on from."""

    score: float
    weights: dict
    rows: Tensor | None
    point: ResumePoint
    step: int


class _Run:
    """One call of ``train``: its optimiser, schedule, batches and the weights it keeps."""

    def __init__(self, model, x_train, x_valid, config, generator, step_offset, group, resume):
        self.model, self.x_train, self.x_valid = model, x_train, x_valid
        self.config, self.generator, self.group = config, generator, group
        self.step_offset = step_offset
        self.graphed = config.cuda_graph and x_train.device.type == "cuda" and group is None
        self.optimizer = make_optimizer(model, config.learning_rate, capturable=self.graphed)
        self.schedule = CosineSchedule(self.optimizer, config.max_iter)
        step_type = GraphedStep if self.graphed else EagerStep
        self.step_once = step_type(model, self.optimizer, config, generator, group)
        self.stream = BatchStream(x_train.shape[0], config.batch_size, generator, x_train.device)
        self.done, self.n_steps = 0, config.max_iter  # steps of the cycle: done before, in all
        self.annealing, self.bad_evals, self.rows = False, 0, None
        self.history = TrainingHistory()
        best_score, best_rows, self.candidates = -math.inf, None, []
        if resume is not None:
            self._resume(resume)
            if not resume.finished:
                best_score, best_rows = resume.best_score, resume.best_rows
                self.candidates = list(resume.candidate_rows)
        self.best = self._checkpoint(self.done, best_score, best_rows)

    def _resume(self, point: ResumePoint) -> None:
        rates = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(point.optimizer)  # Adam's moments, in any case
        for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate  # the schedule sets the rate, in place where graphed
        if not point.finished:  # the interrupted cycle, from where it stood
            self.done, self.n_steps = point.step, point.n_steps
            self.schedule.state = point.schedule
            perm = point.stream[0]
            same_rows = perm is None or len(perm) == self.stream.n_rows
            if point.generator is not None and same_rows:  # else fresh batches and noise
                self.generator.set_state(point.generator)
                self.stream.state = point.stream
            self.annealing, self.bad_evals = point.annealing, point.bad_evals
        self.schedule.step(self.done)

    def _checkpoint(self, step: int, score: float, rows: Tensor | None) -> "_Checkpoint":
        weights = copy.deepcopy(self.model.state_dict())
        return _Checkpoint(score, weights, rows, self._point(step, score, rows), step)

    def _point(
        self, step: int, best_score: float, best_rows: Tensor | None, finished: bool = False
    ) -> ResumePoint:
        # A graph-registered generator's state cannot be read: its run goes on
        # with fresh noise and batches instead.
        exact = not self.graphed and not finished
        return ResumePoint(
            step=step,
            n_steps=self.n_steps,
            optimizer=copy.deepcopy(self.optimizer.state_dict()),
            schedule=self.schedule.state,
            generator=self.generator.get_state() if exact else None,
            stream=self.stream.state if exact else (None, 0),
            annealing=self.annealing,
            bad_evals=self.bad_evals,
            best_score=best_score,
            best_rows=best_rows,
            candidate_rows=() if finished else tuple(self.candidates),  # a new cycle starts afresh
            finished=finished,
        )

    def warn_if_within_warmup(self, warmup_steps: int) -> None:
        end = self.step_offset + self.n_steps - self.done
        if end <= warmup_steps:
            warnings.warn(
                f"Training ends after {end} steps, within "
                f"warmup_steps={warmup_steps}, which train the proposal alone: the energy "
                "network keeps its initial weights. Set max_iter above warmup_steps, or "
                "lower warmup_steps.",
                UserWarning,
                stacklevel=4,
            )

    def evaluate(self, step: int, train_score: float, warmup: bool) -> float:
        """Record one evaluation; returns the score that ranks checkpoints."""
        score = train_score
        if self.x_valid is not None:
            self.rows = validation_rows(self.model, self.x_valid, self.config, warmup)
            score = _mean_over(self.rows, self.group)
            if not warmup:  # a candidate for the best checkpoint
                self.candidates.append(self.rows.detach().cpu())
            self.history.validation_scores.append(score)
        self.history.steps.append(step - self.done)
        self.history.train_scores.append(train_score)
        return score

    def keep_if_best(self, step: int, score: float, warmup: bool) -> None:
        if self.x_valid is None or warmup or score > self.best.score:
            self.bad_evals = 0
            # Warm-up scores the proposal alone: not comparable with the AEM's.
            self.best = self._checkpoint(step, -math.inf if warmup else score, self.rows)
        else:
            self.bad_evals += 1

    def stops_after(self, step: int) -> bool:
        """Whether the run ends at this evaluation: the end of an anneal, or a plateau."""
        if self.annealing:
            return step >= self.schedule.end
        patience = self.config.n_iter_no_change
        if patience is None or self.bad_evals < patience or step == self.n_steps:
            return False
        # A plateau: go back to the best weights and anneal from there for as
        # long as the patience allowed, rather than stop at a high rate.
        self.model.load_state_dict(self.best.weights)
        n_anneal = min(patience * self.config.eval_interval, self.n_steps - step)
        self.schedule.anneal_now(step, n_anneal)
        self.history.anneal_step = step - self.done
        self.annealing, self.bad_evals = True, 0
        return False

    def finish(self, step: int) -> TrainingHistory:
        """Choose the weights to keep and where a later call goes on from."""
        history, best = self.history, self.best
        if history.interrupted:  # the curve and the count end at the weights kept
            self.model.load_state_dict(best.weights)
            n_kept = sum(s <= best.step - self.done for s in history.steps)
            for curve in (history.steps, history.train_scores, history.validation_scores):
                del curve[n_kept:]
            history.n_iter, history.resume_point = best.step - self.done, best.point
        else:
            if history.diverged:
                self.model.load_state_dict(best.weights)
            elif self.x_valid is not None and best.step != step:
                candidates = torch.stack(self.candidates)
                seed = self.config.validation_seed
                if _best_scores_higher(self.rows, best.rows, candidates, self.group, seed):
                    self.model.load_state_dict(best.weights)
                else:
                    best.step = step
            finished = self._point(step, best.score, best.rows, finished=True)
            history.n_iter, history.resume_point = step - self.done, finished
        history.best_step = best.step - self.done
        if self.x_valid is not None and not history.interrupted:  # what the energy added
            rows = validation_rows(self.model, self.x_valid, self.config, True)
            history.proposal_validation_score = _mean_over(rows, self.group)
        self.model.eval()
        return history


@torch.enable_grad()  # callers may sit inside torch.no_grad()
def train(
    model: AEM,
    x_train: Tensor,
    x_valid: Tensor | None,
    config: TrainingConfig,
    generator: torch.Generator,
    step_offset: int = 0,
    group=None,
    resume: ResumePoint | None = None,
) -> TrainingHistory:
    """Maximise ``log p + log q`` with Adam and cosine annealing.

    Every ``eval_interval`` steps the mean train log-likelihood (and the
    validation one, if any) is recorded, and the weights are kept if they
    are the best so far (or, without validation, the latest finite ones).
    With validation, ``n_iter_no_change`` evaluations without improvement
    (a plateau) restore the best weights and anneal the learning rate to
    zero over as many steps as the patience spanned; the run ends there.
    At the end the final, annealed weights stay unless the best checkpoint
    beats them on the held-out rows by more than choosing it there flatters
    its score (``_best_scores_higher``).
    A non-finite loss stops the run with a warning and restores the best
    weights; so does an interrupt (Ctrl-C, a notebook's stop button), which
    ends the run without losing its work.

    ``resume`` is an earlier run's ``history.resume_point`` (``warm_start``):
    an interrupted run is finished exactly as it would have gone on; after a
    finished one a new cycle of ``max_iter`` steps starts with Adam's
    moments. ``step_offset`` counts the steps of earlier calls, for the
    warm-up; a run that ends within the warm-up warns, since the energy
    network would keep its initial weights. ``group`` (a
    ``collective.ProcessGroup``) trains data-parallel: rank 0's weights to
    start, gradients averaged every step, scores averaged so that all
    processes stop together.
    """
    run = _Run(model, x_train, x_valid, config, generator, step_offset, group, resume)
    # A fixed (uniform) proposal has nothing to warm up.
    warmup_steps = config.warmup_steps if model.proposal.n_params else 0
    run.warn_if_within_warmup(warmup_steps)
    running, n_running = torch.zeros((), device=x_train.device), 0
    bar = _progress(config, run.n_steps - run.done)
    model.train()
    if group is not None:
        group.broadcast_parameters(model)
    step = run.done
    try:
        for step in range(run.done + 1, run.n_steps + 1):
            warmup = step_offset + step - run.done <= warmup_steps
            log_p = run.step_once(x_train[next(run.stream)], warmup)
            run.schedule.step(step)
            threads.tick()  # fewer threads while other processes keep the cores busy
            running, n_running = running + log_p, n_running + 1
            if bar is not None:
                bar.update(1)
            if step % config.eval_interval and step != run.n_steps:
                continue
            train_score = (running / n_running).item()  # one host sync per interval
            if group is not None:  # every process stops, or none
                train_score = group.weighted_mean(train_score, 1.0)
            running, n_running = torch.zeros_like(running), 0
            if not math.isfinite(train_score):
                at, kept = step_offset + step - run.done, step_offset + run.best.step - run.done
                warnings.warn(
                    f"The training loss became non-finite at step {at}; training "
                    f"stopped and the weights of step {kept} were restored.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                run.history.diverged = True
                break
            score = run.evaluate(step, train_score, warmup)
            if bar is not None:
                bar.set_postfix(_postfix(run.history))
            run.keep_if_best(step, score, warmup)
            if run.stops_after(step):
                break
    except KeyboardInterrupt:
        if group is not None:
            raise  # the other processes would wait for this one forever
        step -= 1  # the interrupted step may be half done
        warnings.warn(
            f"Training was interrupted after step {step_offset + step - run.done}; the "
            f"model keeps the weights of step {step_offset + run.best.step - run.done}. "
            "Fit again with warm_start=True to go on from there.",
            RuntimeWarning,
            stacklevel=3,
        )
        run.history.interrupted = True
    if bar is not None:
        bar.close()
    return run.finish(step)


def _postfix(history: TrainingHistory) -> dict:
    post = {"train": f"{history.train_scores[-1]:.3f}"}
    if history.validation_scores:
        post["valid"] = f"{history.validation_scores[-1]:.3f}"
    return post
