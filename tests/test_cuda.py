"""The device="cuda" path. Skipped where CUDA is absent (CI); run on a GPU machine."""

import math
import pickle

import numpy as np
import pytest
import torch

from skaem import AEMDensity
from skaem.model import AEM
from skaem.proposal import GaussianMixtureProposal
from skaem.training import (
    GraphedStep,
    TrainingConfig,
    make_optimizer,
    train,
    training_loss,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


@pytest.fixture
def fitted_on_gpu(tiny, gaussian_2d):
    return AEMDensity(**tiny, device="cuda", random_state=0).fit(gaussian_2d)


def test_fit_keeps_the_networks_on_the_gpu(fitted_on_gpu):
    assert all(p.is_cuda for p in fitted_on_gpu.model_.parameters())


def test_gpu_and_cpu_score_the_same_weights_alike(fitted_on_gpu, gaussian_2d):
    on_gpu = fitted_on_gpu.score_samples(gaussian_2d)
    on_cpu = pickle.loads(pickle.dumps(fitted_on_gpu)).set_params(device="cpu")
    # Same weights and the same common noise, drawn on the CPU for both devices.
    np.testing.assert_allclose(on_cpu.score_samples(gaussian_2d), on_gpu, atol=2e-3)


@pytest.mark.parametrize("density", ["aem", "kde", "proposal"])
def test_gpu_scores_and_samples_are_finite(fitted_on_gpu, gaussian_2d, density):
    fitted_on_gpu.set_params(density=density)
    assert np.all(np.isfinite(fitted_on_gpu.score_samples(gaussian_2d)))
    samples = fitted_on_gpu.sample(200, random_state=0)
    assert samples.shape == (200, 2) and np.all(np.isfinite(samples))


def test_bfloat16_on_gpu_is_close_to_float32(fitted_on_gpu, gaussian_2d):
    full = fitted_on_gpu.score(gaussian_2d)
    half = fitted_on_gpu.set_params(precision="bfloat16").score(gaussian_2d)
    assert abs(full - half) < 0.05


@pytest.mark.parametrize("stratified", [False, True])
def test_training_step_makes_no_host_round_trip(stratified):
    device = torch.device("cuda")
    model = AEM(4, GaussianMixtureProposal(5), 64, 2, 16, 32, 2).to(device).train()
    optimizer = make_optimizer(model, 1e-3)
    config = TrainingConfig(max_iter=3, defensive_fraction=0.1, stratified=stratified)
    generator = torch.Generator(device).manual_seed(0)
    batch = torch.randn(256, 4, device=device)
    training_loss(model, batch, config, False, generator)[0].backward()  # lazy init
    optimizer.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host copy raises
    try:
        for _ in range(3):
            loss, _ = training_loss(model, batch, config, False, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()


def _model_and_data(seed=0):
    torch.manual_seed(seed)
    device = torch.device("cuda")
    model = AEM(3, GaussianMixtureProposal(5), 64, 2, 16, 32, 2).to(device)
    x = torch.randn(2000, 3, device=device) @ torch.tensor(
        [[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]], device=device
    )
    return model, x


def test_graph_replays_draw_fresh_noise_and_follow_the_schedule():
    model, x = _model_and_data()
    config = TrainingConfig(max_iter=20, stratified=True, defensive_fraction=0.1)
    optimizer = make_optimizer(model, 1e-3, capturable=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 20)
    step = GraphedStep(model.train(), optimizer, config, torch.Generator("cuda").manual_seed(0))
    log_ps = []
    for k in range(10):
        log_ps.append(step(x[:256], warmup=False).item())
        scheduler.step()
        expected = 1e-3 * (1 + math.cos(math.pi * (k + 1) / 20)) / 2
        assert optimizer.param_groups[0]["lr"].item() == pytest.approx(expected, rel=1e-5)
    assert step.graph is not None
    replayed = log_ps[GraphedStep.EAGER_STEPS + 1 :]
    assert len(set(replayed)) == len(replayed)  # same batch, new importance samples


def test_graphed_training_matches_eager_training():
    scores = {}
    for graphed in (False, True):
        model, x = _model_and_data()
        config = TrainingConfig(
            max_iter=150, batch_size=256, warmup_steps=20, eval_interval=50,
            stratified=True, defensive_fraction=0.1, cuda_graph=graphed,
        )  # fmt: skip
        history = train(model, x, None, config, torch.Generator("cuda").manual_seed(0))
        scores[graphed] = history.train_scores[-1]
    assert abs(scores[True] - scores[False]) < 0.05
