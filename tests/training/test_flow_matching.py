import itertools

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ifsq_hf.schedulers.flow_matching import (
    classifier_free_guidance,
    interpolate,
    shift_timesteps,
    t_to_sigma,
    timestep_grid,
    velocity_target,
    velocity_to_scheduler_output,
)
from ifsq_hf.training.flow_matching import (
    flow_matching_loss,
    prepare_flow_matching_batch,
    prepare_flow_matching_inputs,
    sample_logit_normal_timesteps,
)


def scheduler_sample(velocity, noise, num_steps, shift=1.0):
    """Integrate the ODE the way iFSQDiTPipeline does: diffusers' Euler scheduler on our time grid."""
    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=t_to_sigma(timestep_grid(num_steps, shift))[:-1].tolist())
    x = noise
    for i, ts in enumerate(sched.timesteps):
        t = (1 - sched.sigmas[i]).expand(noise.shape[0])
        x = sched.step(velocity_to_scheduler_output(velocity(x, t)), ts, x).prev_sample
    return x


def test_path_endpoints_and_velocity():
    data, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(interpolate(data, noise, torch.zeros(3)), noise)
    torch.testing.assert_close(interpolate(data, noise, torch.ones(3)), data)
    t = torch.tensor([0.2, 0.5, 0.9])
    eps = 1e-3
    finite_diff = (interpolate(data, noise, t + eps) - interpolate(data, noise, t)) / eps
    torch.testing.assert_close(finite_diff, velocity_target(data, noise), atol=1e-3, rtol=1e-3)


def test_logit_normal_statistics_and_determinism():
    t = sample_logit_normal_timesteps(20000, generator=torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() < 1
    logit = torch.logit(t)
    assert abs(logit.mean()) < 0.03 and abs(logit.std() - 1) < 0.03
    again = sample_logit_normal_timesteps(20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(t, again)
    shifted = sample_logit_normal_timesteps(20000, mean=1.0, generator=torch.Generator().manual_seed(0))
    assert shifted.mean() > t.mean() + 0.1
    with pytest.raises(ValueError, match="std"):
        sample_logit_normal_timesteps(2, std=0)


def test_shift_matches_scheduler_shift():
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(shift_timesteps(t, 1.0), t)
    s = 0.3
    sigma = t_to_sigma(t)
    k = 1 / s
    scheduler_sigma = k * sigma / (1 + (k - 1) * sigma)
    torch.testing.assert_close(t_to_sigma(shift_timesteps(t, s)), scheduler_sigma)
    with pytest.raises(ValueError, match="shift"):
        shift_timesteps(t, 0.0)


def test_timestep_grid():
    grid = timestep_grid(4)
    torch.testing.assert_close(grid, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    with pytest.raises(ValueError, match="num_steps"):
        timestep_grid(0)


def test_loss_terms():
    target = torch.randn(2, 4, 3, 3)
    perfect = flow_matching_loss(target, target)
    assert perfect.loss.abs() < 1e-6
    scaled = flow_matching_loss(2 * target, target)
    assert scaled.cosine.abs() < 1e-6 and scaled.mse > 0  # same direction, wrong norm
    opposite = flow_matching_loss(-target, target, cosine_weight=0.5)
    torch.testing.assert_close(opposite.cosine, torch.tensor(2.0))
    torch.testing.assert_close(opposite.loss, opposite.mse + 0.5 * opposite.cosine)
    assert opposite["loss"] is opposite.loss and opposite.get("cosine") is opposite.cosine  # dict-like output
    plain = flow_matching_loss(-target, target, cosine_weight=0.0)
    torch.testing.assert_close(plain.loss, plain.mse)
    pred = torch.randn_like(target, requires_grad=True)
    flow_matching_loss(pred, target).loss.backward()
    assert pred.grad is not None
    with pytest.raises(ValueError, match="shape"):
        flow_matching_loss(target[:1], target)


def test_prepare_inputs():
    data = torch.randn(4, 4, 2, 2)
    g = torch.Generator().manual_seed(1)
    x_t, t, target = prepare_flow_matching_inputs(data, generator=g)
    noise = data - target
    torch.testing.assert_close(x_t, interpolate(data, noise, t))
    noise = torch.randn_like(data)
    x_t, target = prepare_flow_matching_batch(data, t, noise=noise)
    torch.testing.assert_close(x_t, interpolate(data, noise, t))
    torch.testing.assert_close(target, data - noise)
    x_a, _ = prepare_flow_matching_batch(data, t, generator=torch.Generator().manual_seed(5))
    x_b, _ = prepare_flow_matching_batch(data, t, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(x_a, x_b)


def test_cfg_all_channels_and_interval():
    vc, vu = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    g = classifier_free_guidance(vc, vu, 3.0)
    torch.testing.assert_close(g, vu + 3 * (vc - vu))  # channel 3 guided too
    torch.testing.assert_close(classifier_free_guidance(vc, vu, 1.0), vc)
    torch.testing.assert_close(classifier_free_guidance(vc, vu, 3.0, active=False), vc)
    mixed = classifier_free_guidance(vc, vu, 3.0, active=torch.tensor([True, False]))
    torch.testing.assert_close(mixed[0], g[0])
    torch.testing.assert_close(mixed[1], vc[1])


def test_scheduler_path_recovers_data_with_exact_velocity():
    data, noise = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    out = scheduler_sample(lambda x, t: data - noise, noise, num_steps=3, shift=0.5)
    torch.testing.assert_close(out, data)


def test_scheduler_path_is_first_order_on_a_curved_field():
    # dx/dt = x  => x(1) = e * x(0); Euler's error halves when the steps double
    x0 = torch.ones(1, 1, 1, 1)
    errors = [(scheduler_sample(lambda x, t: x, x0, n) - torch.e * x0).abs().item() for n in (8, 16)]
    assert 1.8 < errors[0] / errors[1] < 2.2


def test_matches_diffusers_scheduler():
    """The pipeline's use of FlowMatchEulerDiscreteScheduler is the official Euler sampler, step for step."""
    target = torch.randn(2, 4, 2, 2)

    def velocity(x, t):  # a field that depends on x and t
        return target * (1 + t.view(-1, 1, 1, 1)) - 0.3 * x

    noise = torch.randn(2, 4, 2, 2)
    grid = timestep_grid(5, 0.5)
    euler = noise
    for t0, t1 in itertools.pairwise(grid):
        euler = euler + (t1 - t0) * velocity(euler, t0.expand(2))
    torch.testing.assert_close(scheduler_sample(velocity, noise, num_steps=5, shift=0.5), euler, atol=1e-5, rtol=1e-5)
