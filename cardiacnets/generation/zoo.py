"""Assembling a generation pipeline from registered models (untrained): for tests, benchmarks and size checks.

`untrained_pipeline` builds an `ECGToCMRPipeline` from registry names and
overrides — the ECG encoder, the frame autoencoder and the denoiser — with the
denoiser's input sizes completed from the other two, exactly as the
``diffusion`` task completes them from a trained autoencoder and alignment
model. The demo defaults match ``configs/demo/align.yaml`` (a small 1-D
ResNet over 12 × 2500 samples at 250 Hz, 128-d embedding), ``cmr_vae_demo``
and ``cine_unet3d_demo``; the paper-scale models are built the same way (on
the meta device, ``torch.device("meta")``, to count parameters without
allocating them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: The demo alignment's ECG encoder (configs/demo/align.yaml).
DEMO_ECG_ENCODER: tuple[str, dict[str, Any]] = (
    "ecg_resnet1d", {"n_samples": 2500, "stem_width": 32, "widths": [32, 64, 96, 128], "blocks": [1, 1, 1, 1],
                     "embed_dim": 128})
#: The demo training sets' ECG standardisation (configs/demo/preprocess.yaml: 10 s at 250 Hz, millivolts).
DEMO_ECG_CONFIG: dict[str, Any] = {"sampling_rate_hz": 250.0, "duration_s": 10.0, "crop": "start",
                                   "bandpass_hz": [0.5, 100.0], "bandpass_order": 2, "notch_hz": 50.0,
                                   "notch_quality": 30.0, "baseline_removal": "bandpass", "normalization": "none",
                                   "derive_limb_leads": True}


def untrained_pipeline(*, ecg_encoder: str = DEMO_ECG_ENCODER[0], ecg_encoder_overrides: dict | None = None,
                       projection_dim: int | None = None, vae: str = "cmr_vae_demo", vae_overrides: dict | None = None,
                       denoiser: str = "cine_unet3d_demo", denoiser_overrides: dict | None = None,
                       num_frames: int | None = None, prediction_type: str = "v_prediction",
                       ecg_config: dict | None = None, view: str = "sa", spacing_mm: float | None = 2.2,
                       frame_interval_ms: float | None = 40.0, seed: int = 0, device: str | torch.device = "cpu"):
    """An `ECGToCMRPipeline` of freshly initialised registered models.

    Args:
        ecg_encoder: registered ECG encoder (``ecg_resnet1d``, ``ecg_vit_large``, ...).
        ecg_encoder_overrides: its overrides (default: the demo alignment's ResNet with ``ecg_resnet1d``).
        projection_dim: add a linear CLIP-style projection to this size (``None``: none).
        vae: registered frame autoencoder.
        vae_overrides: its overrides.
        denoiser: registered cine denoiser.
        denoiser_overrides: its overrides (token, embedding and latent sizes are completed).
        num_frames: frames per cine (default: the denoiser's registered value).
        prediction_type: ``v_prediction`` or ``epsilon``.
        ecg_config: ECG standardisation stored in the pipeline (default `DEMO_ECG_CONFIG`).
        view: view recorded in the pipeline.
        spacing_mm: in-plane spacing recorded in the pipeline.
        frame_interval_ms: frame interval recorded in the pipeline.
        seed: seed of the initial weights.
        device: where the models are built (``"meta"``: shapes only, no memory).

    Returns:
        The pipeline.
    """
    from cardiacnets.config import to_dict
    from cardiacnets.generation.conditioning import ECGConditionEncoder
    from cardiacnets.generation.pipeline import ECGToCMRPipeline
    from cardiacnets.models import create_model
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    if ecg_encoder_overrides is None:
        ecg_encoder_overrides = dict(DEMO_ECG_ENCODER[1]) if ecg_encoder == DEMO_ECG_ENCODER[0] else {}
    with torch.device(device):
        encoder_model = create_model(ecg_encoder, **ecg_encoder_overrides)
        condition_encoder = ECGConditionEncoder(
            encoder_class=type(encoder_model).__name__, encoder_config=to_dict(encoder_model.config),
            projection="linear" if projection_dim else "none", projection_dim=projection_dim)
        autoencoder = create_model(vae, **(vae_overrides or {}))
        factor = 2 ** (len(autoencoder.config.block_out_channels) - 1)
        overrides = {"latent_channels": autoencoder.config.latent_channels,
                     "latent_size": autoencoder.config.sample_size // factor,
                     "ecg_token_dim": condition_encoder.token_dim, "ecg_embed_dim": condition_encoder.embed_dim,
                     **({"num_frames": num_frames} if num_frames else {}), **(denoiser_overrides or {})}
        model = create_model(denoiser, **overrides)
    # The diffusion task's default training schedule (DiffusionOptions).
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type=prediction_type, clip_sample=False)
    return ECGToCMRPipeline(condition_encoder, model, autoencoder, scheduler, view=view,
                            frame_interval_ms=frame_interval_ms, spacing_mm=spacing_mm,
                            ecg_config=dict(ecg_config or DEMO_ECG_CONFIG))


def _heart_labels(frames: int, size: int) -> np.ndarray:
    """(1, 1, frames, size, size) label cine of a plain contracting heart (blood pool, myocardium, RV disc)."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    cine = np.zeros((1, 1, frames, size, size), np.uint8)
    for f in range(frames):
        squeeze = 1.0 - 0.35 * np.sin(np.pi * f / frames) ** 2
        lv = size * 0.12 * np.sqrt(squeeze)
        cine[0, 0, f][np.hypot(y, x + 1.6 * lv + size * 0.1) <= size * 0.1] = 3
        cine[0, 0, f][np.hypot(y, x) <= lv + size * 0.05] = 2
        cine[0, 0, f][np.hypot(y, x) <= lv] = 1
    return cine


def untrained_anatomy_pipeline(*, n_frames: int = 25, image_size: int = 64, n_components: int = 64,
                               vae_overrides: dict | None = None, seed: int = 0):
    """An `AnatomyFirstPipeline` of freshly initialised demo-size models (for benchmarks and size checks).

    The shape model's mean is a plain contracting heart and its components are random orthonormal
    directions, so sampled codes decode to hearts of varying shape (the decoding cost is realistic);
    the read-out's weights are zero; the acquisition-noise model has its default curve (SD 0.01 at every
    intensity, white), so its cost is in the timings.
    """
    from diffusers import DDPMScheduler

    from cardiacnets.config import to_dict
    from cardiacnets.generation.acquisition import AcquisitionNoise
    from cardiacnets.generation.anatomy_pipeline import AnatomyFirstPipeline
    from cardiacnets.generation.conditioning import ECGConditionEncoder
    from cardiacnets.generation.readout import ConditionReadout
    from cardiacnets.generation.shape_model import ShapeModel
    from cardiacnets.models import create_model

    torch.manual_seed(seed)
    encoder = create_model(DEMO_ECG_ENCODER[0], **DEMO_ECG_ENCODER[1])
    condition_encoder = ECGConditionEncoder(encoder_class=type(encoder).__name__,
                                            encoder_config=to_dict(encoder.config))
    demographics = {"columns": ["sex_male", "age_years", "height_cm", "weight_kg"], "mean": [0.5, 60.0, 170.0, 75.0],
                    "std": [0.5, 8.0, 9.0, 14.0]}
    readout = ConditionReadout(feature_names=("embedding", "token_mean", "demographics"),
                               embed_dim=condition_encoder.embed_dim, token_dim=condition_encoder.token_dim,
                               demographics=demographics, index_names=("lvedv_ml",), index_mean=(100.0,),
                               index_std=(20.0,))
    shape_model = ShapeModel(n_frames=n_frames, image_size=image_size, grid_size=image_size // 2,
                             n_components=n_components)
    with torch.no_grad():
        shape_model.mean.copy_(shape_model.vectors(_heart_labels(n_frames, image_size))[0])
        basis, _ = torch.linalg.qr(torch.randn(shape_model.mean.numel(), n_components))
        shape_model.components.copy_(basis.T)
    prior = create_model("anatomy_prior_demo", code_dim=n_components, condition_dim=readout.condition_dim)
    vae = create_model("cmr_vae_demo", **(vae_overrides or {"block_out_channels": [32, 64, 64]}))
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    image = create_model("anatomy_image_unet_demo", latent_channels=vae.config.latent_channels,
                         latent_size=image_size // factor, downsample_factor=factor)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              prediction_type="v_prediction", clip_sample=False)
    image_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                    prediction_type="v_prediction", clip_sample=False)
    return AnatomyFirstPipeline(condition_encoder, readout, prior, shape_model, image, vae, scheduler,
                                image_scheduler, spacing_mm=2.2, frame_interval_ms=40.0,
                                ecg_config=dict(DEMO_ECG_CONFIG), default_temperature=0.0,
                                acquisition=AcquisitionNoise())


def parameter_counts(pipe) -> dict[str, int]:
    """Parameters of each model of a pipeline (works on the meta device)."""
    names = [name for name, component in pipe.components.items() if isinstance(component, torch.nn.Module)]
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in names}
