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
    from cardiacnets.train.generation_tasks import DiffusionOptions, noise_scheduler_from

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
    scheduler = noise_scheduler_from(DiffusionOptions(vae="-", ecg_encoder="-", prediction_type=prediction_type))
    return ECGToCMRPipeline(condition_encoder, model, autoencoder, scheduler, view=view,
                            frame_interval_ms=frame_interval_ms, spacing_mm=spacing_mm,
                            ecg_config=dict(ecg_config or DEMO_ECG_CONFIG))


def parameter_counts(pipe) -> dict[str, int]:
    """Parameters of each model of a pipeline (works on the meta device)."""
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters())
            for name in ("condition_encoder", "denoiser", "vae")}
