"""The training maths of denoising diffusion: the noise schedule, training timesteps and min-SNR-γ loss weights.

DDPM's objective (Ho et al., "Denoising diffusion probabilistic models", 2020):
noise clean latents at a random step of a fixed schedule and train a network
to predict the noise (``epsilon``) or the velocity (``v_prediction``;
Salimans & Ho, "Progressive distillation for fast sampling of diffusion
models", 2022). The schedule is diffusers' ``DDPMScheduler``, which is also
the ``scheduler`` saved with the pipeline. Used by the ``diffusion`` training
stage (`cardiacnets.train.diffusion_task`) and the anatomy-first generator's
stages (`cardiacnets.train.anatomy_image_task`, `cardiacnets.train.anatomy_task`).
"""

from __future__ import annotations

import torch


#: ``DDPMScheduler``'s own first and last beta, used where a stage's options name none (the anatomy-first stages).
DEFAULT_BETA_START, DEFAULT_BETA_END = 0.0001, 0.02


def noise_scheduler_from(options):
    """The ``DDPMScheduler`` of a training noise schedule (also the pipeline's ``scheduler``).

    Args:
        options: anything with ``num_train_timesteps``, ``beta_schedule`` and ``prediction_type``
            (a training stage's options), and ``beta_start`` and ``beta_end`` where the stage
            configures them (the ``diffusion`` task; otherwise diffusers' defaults,
            `DEFAULT_BETA_START` and `DEFAULT_BETA_END`, which only linear schedules use).

    Returns:
        The scheduler (``clip_sample`` off: latents are not bounded).
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=options.num_train_timesteps, beta_schedule=options.beta_schedule,
                         beta_start=getattr(options, "beta_start", DEFAULT_BETA_START),
                         beta_end=getattr(options, "beta_end", DEFAULT_BETA_END),
                         prediction_type=options.prediction_type, clip_sample=False)


def training_target(scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the network learns to predict: the noise (``epsilon``) or the velocity (``v_prediction``).

    Args:
        scheduler: the training ``DDPMScheduler`` (its ``prediction_type``).
        clean: the clean latents; noise: the noise added; timesteps: (B,) their steps.

    Returns:
        The target, shaped like `clean`.
    """
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(clean, noise, timesteps)


def sample_timesteps(n: int, num_train_timesteps: int, bias: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Training timesteps ``floor(T · u^(1 / (1 + bias)))``, u ~ U[0, 1) (bias 0: uniform over 0..T-1).

    Args:
        n: how many.
        num_train_timesteps: T.
        bias: 0 is uniform; larger values favour steps near pure noise.
        generator: CPU generator of the draw.

    Returns:
        (n,) int64 steps on the CPU.
    """
    if bias == 0:
        return torch.randint(0, num_train_timesteps, (n,), generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (num_train_timesteps * u ** (1.0 / (1.0 + bias))).long().clamp(max=num_train_timesteps - 1)


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float | None, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-γ (Hang et al., "Efficient diffusion training via min-SNR weighting", 2023).

    Args:
        scheduler: the noise scheduler (its ``alphas_cumprod``).
        timesteps: (B,) training steps.
        gamma: the clamp γ (``None``: weights of 1).
        prediction_type: ``epsilon`` (weight min(SNR, γ) / SNR) or ``v_prediction``
            (min(SNR, γ) / (SNR + 1)), both equal to min(SNR, γ) in terms of the x₀ error.

    Returns:
        (B,) float32 weights.
    """
    if gamma is None:
        return torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1.0 - alphas)
    clamped = snr.clamp(max=gamma)
    return clamped / (snr + 1.0) if prediction_type == "v_prediction" else clamped / snr
