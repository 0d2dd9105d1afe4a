"""`ECGToCMRPipeline`: a diffusers pipeline that generates cine CMR from a 12-lead ECG.

The sampling side of CardiacNets' ECG-conditioned latent diffusion (arXiv
2411.13602). Components (each saved in its own sub-folder by
``save_pretrained`` and rebuilt by ``from_pretrained``, diffusers' layout with
``model_index.json``):

- ``condition_encoder``: the frozen aligned ECG encoder (`ECGConditionEncoder`);
- ``denoiser``: the ECG-conditioned spatio-temporal UNet (`CineDenoiser`);
- ``vae``: diffusers' ``AutoencoderKL`` for single frames, whose config holds the
  latent ``scaling_factor``;
- ``scheduler``: the noise schedule it was trained with (a ``DDPMScheduler``:
  betas and ``prediction_type``); each call builds the sampler it asks for from
  it — DPM-Solver++ (Lu et al., 2022; ``DPMSolverMultistepScheduler``) or DDIM
  (Song et al., 2021; ``DDIMScheduler``).

The pipeline's own config records what a user needs to interpret and feed
it: the view, the frame interval and in-plane spacing of the training cines,
and the ECG standardisation of the training set (``ecg_config``), so that
`ECGToCMRPipeline.standardize_file` turns any ECG file the readers accept
into exactly the input the model was trained on.

``__call__`` reads as numbered steps: (1) check the inputs, (2) encode the ECG
(repeated for several samples per ECG), (3) timesteps, (4) initial latents from
the seeded generator, (5) the denoising loop with classifier-free guidance
(conditional and null condition in one batch; ``guidance_scale`` 1 runs the
conditional branch only), (6) decode every frame with the autoencoder and clip
to the training set's intensity range.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from cardiacnets.generation.conditioning import ECGCondition, ECGConditionEncoder
from cardiacnets.generation.denoiser import CineDenoiser
from cardiacnets.generation.vae import decode_latents

#: Samplers a call can ask for.
SAMPLERS = ("dpm++", "ddim")


@dataclass
class ECGToCMROutput(BaseOutput):
    """What `ECGToCMRPipeline` returns.

    Attributes:
        cines: (B × M, frames, H, W) float32 cines on the training set's intensity scale
            (``[0, 1]``), the M samples of each ECG consecutive.
        index_estimates: the CMR indices the cines were generated for: the denoiser's read-out of each
            ECG's condition (`ECGToCMRPipeline.estimate_indices`), name -> (B,) array in the indices'
            units; empty for a model without a read-out.
    """

    cines: np.ndarray
    index_estimates: dict[str, np.ndarray] = field(default_factory=dict)


def make_sampler(train_scheduler, name: str):
    """A fresh sampler for the noise schedule of `train_scheduler`.

    Args:
        train_scheduler: the scheduler the denoiser was trained with (its config: betas,
            ``prediction_type``).
        name: ``dpm++`` (DPM-Solver++ 2M) or ``ddim``.

    Returns:
        The diffusers scheduler. Only the noise schedule and the prediction type are taken from the
        training scheduler; the sampling settings are fixed here (``trailing`` timesteps, which include
        the last training step: Lin et al., "Common diffusion noise schedules and sample steps are
        flawed", 2024), so a saved and reloaded pipeline samples exactly like the original.
    """
    c = train_scheduler.config
    schedule = {"num_train_timesteps": c.num_train_timesteps, "beta_start": c.beta_start, "beta_end": c.beta_end,
                "beta_schedule": c.beta_schedule, "trained_betas": c.get("trained_betas"),
                "prediction_type": c.prediction_type, "timestep_spacing": "trailing", "steps_offset": 0}
    if name == "dpm++":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **schedule)
    if name == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **schedule)
    raise ValueError(f"scheduler must be one of {', '.join(SAMPLERS)}, got {name!r}")


class CardiacPipeline(DiffusionPipeline):
    """What the generation pipelines share: loading a saved folder with clear errors, and what they generate.

    Subclasses register ``view``, ``frame_interval_ms``, ``spacing_mm`` and ``ecg_config`` in their config.
    """

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **kwargs):
        """Load a pipeline folder written by ``save_pretrained`` (``RUN/pipeline`` of a generation run).

        Args:
            folder: the local pipeline folder (with ``model_index.json``).
            **kwargs: passed to ``DiffusionPipeline.from_pretrained``.

        Returns:
            The pipeline on the CPU, its models in evaluation mode.

        Raises:
            InputError: not a pipeline folder, or one that cannot be loaded.
        """
        from diffusers.utils import logging as diffusers_logging

        from cardiacnets.errors import InputError

        folder = Path(folder)
        if not (folder / "model_index.json").is_file():
            raise InputError(folder, "not a generation pipeline folder (no model_index.json); give the "
                                     "pipeline/ folder of a diffusion or anatomy run")
        bars = diffusers_logging.is_progress_bar_enabled()
        diffusers_logging.disable_progress_bar()
        try:
            return super().from_pretrained(folder, **kwargs)
        except (OSError, ValueError, KeyError) as err:
            raise InputError(folder, f"cannot load the pipeline ({err})") from None
        finally:
            if bars:
                diffusers_logging.enable_progress_bar()

    @property
    def view(self) -> str:
        return self.config.view

    @property
    def frame_interval_ms(self) -> float | None:
        return self.config.frame_interval_ms

    @property
    def spacing_mm(self) -> float | None:
        return self.config.spacing_mm

    @property
    def ecg_config(self) -> dict:
        """The ECG standardisation of the training set (``sampling_rate_hz``, ``duration_s``, filters, ...)."""
        return dict(self.config.ecg_config or {})


class ECGToCMRPipeline(CardiacPipeline):
    """Generate cine CMR from standard ECGs (see the module docstring).

    Args:
        condition_encoder: the frozen aligned ECG encoder.
        denoiser: the cine denoiser.
        vae: the frame autoencoder (``scaling_factor`` in its config).
        scheduler: the training noise schedule.
        view: the CMR view generated (``sa``, ``la_4ch``).
        frame_interval_ms: time between generated frames (the training cines' typical interval).
        spacing_mm: in-plane pixel size of the training cines.
        slice_thickness_mm: slice thickness written into image headers.
        ecg_config: the training set's ECG standardisation (`cardiacnets.ecg.config.ECGConfig` fields).
        demographics: the training run's demographics normaliser (columns, mean, std), when the
            denoiser is conditioned on demographics.
        intensity_range: range of the training cines' intensities; outputs are clipped to it.
        precision: default computation: ``fp32`` or ``bf16`` (autocast; faster on recent CPUs).
        condition_indices: ``[{"name", "mean", "std"}]`` of the denoiser's index read-out, in its
            order, to report its standardised estimates in the indices' units.
    """

    model_cpu_offload_seq = "condition_encoder->denoiser->vae"

    def __init__(self, condition_encoder: ECGConditionEncoder, denoiser: CineDenoiser, vae: AutoencoderKL,
                 scheduler: DDPMScheduler, view: str = "sa", frame_interval_ms: float | None = None,
                 spacing_mm: float | None = None, slice_thickness_mm: float = 8.0,
                 ecg_config: dict[str, Any] | None = None, demographics: dict[str, Any] | None = None,
                 intensity_range: list[float] | None = None, precision: str = "fp32",
                 condition_indices: list[dict[str, Any]] | None = None):
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        for model in (condition_encoder, denoiser, vae):
            model.eval()  # sampling never uses dropout (the denoiser's temporal convolutions have some)
        self.register_modules(condition_encoder=condition_encoder, denoiser=denoiser, vae=vae, scheduler=scheduler)
        self.register_to_config(view=view, frame_interval_ms=frame_interval_ms, spacing_mm=spacing_mm,
                                slice_thickness_mm=slice_thickness_mm, ecg_config=ecg_config,
                                demographics=demographics, intensity_range=list(intensity_range or (0.0, 1.0)),
                                precision=precision, condition_indices=condition_indices)

    # --- what the pipeline generates -----------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.denoiser.config.num_frames)

    @property
    def image_size(self) -> int:
        return int(self.denoiser.config.latent_size * 2 ** (len(self.vae.config.block_out_channels) - 1))

    # --- inputs ---------------------------------------------------------------------------------------------------
    def standardize_file(self, path: str | os.PathLike, *, sampling_rate_hz: float | None = None,
                         lead_names: Sequence[str] | None = None, units: str = "mV") -> dict:
        """Read an ECG file (UK Biobank XML, WFDB, .npy) and standardise it as the training set was.

        Args:
            path: the ECG file.
            sampling_rate_hz: ``.npy`` only: its sampling rate.
            lead_names: ``.npy`` only: its lead names.
            units: ``.npy`` only: its units.

        Returns:
            ``ecg`` (1, 12, T) float32 tensor in mV, ``lead_mask`` (1, 12) bool, ``sample_mask``
            (1, T) bool, ``quality`` (the reader's quality findings as text), ``derived_leads``,
            ``sampling_rate_hz`` and ``source``.

        Raises:
            InputError: unreadable file or quality errors (the message names the file).
        """
        from cardiacnets.generation.request import standardize_ecg_file

        record, std = standardize_ecg_file(path, self.ecg_config, sampling_rate_hz=sampling_rate_hz,
                                           lead_names=lead_names, units=units)
        return {
            "ecg": torch.from_numpy(np.ascontiguousarray(std.signal, dtype=np.float32))[None],
            "lead_mask": torch.from_numpy(std.lead_mask.copy())[None],
            "sample_mask": torch.from_numpy(std.sample_mask.copy())[None],
            "quality": [str(f) for f in std.findings],
            "derived_leads": list(std.derived_leads),
            "sampling_rate_hz": std.sampling_rate_hz,
            "source": str(path),
            "metadata": dict(record.metadata),
        }

    def demographics_from(self, values: dict[str, Any], max_abs_z: float = 6.0
                          ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, Any]]:
        """The standardised demographics input of one subject from raw values (e.g. an ECG file's metadata).

        Values are standardised with the training run's normaliser. A value more than `max_abs_z`
        training standard deviations from the training mean is implausible for this model (scrubbed
        files carry placeholders such as an age of 1 year) and is treated as missing, as is an
        absent or non-numeric one; missing values are "unknown" to the model.

        Args:
            values: raw values by manifest column (``age_years``, ``sex_male``, ...); others ignored.
            max_abs_z: the plausibility limit in training standard deviations.

        Returns:
            ``(demographics, mask, report)``: (1, n) float32 and (1, n) bool tensors (``None`` for a
            model without demographics) and ``{"used": {...}, "ignored": {column: reason}}``.
        """
        from cardiacnets.generation.request import _plausible, pipeline_inputs

        normalizer = self.config.demographics
        if not normalizer:
            return None, None, {"used": {}, "ignored": {}}
        raw, report = _plausible(values, normalizer, max_abs_z, set())
        report.pop("from_file")
        inputs = pipeline_inputs(self, torch.zeros(1, 12, 1), None, {k: np.array([v]) for k, v in raw.items()}, None)
        return inputs["demographics"], inputs["demographics_mask"], report

    def estimate_indices(self, condition: ECGCondition) -> dict[str, np.ndarray]:
        """The denoiser's read-out of a condition in the indices' units (empty without a read-out).

        These are the CMR indices that the cines are generated for (an estimate from the ECG, and
        demographics when the model has them), not measurements of the generated images.
        """
        stats = self.config.condition_indices
        if not stats or self.denoiser.index_proj is None:
            return {}
        with torch.no_grad():
            device = self.denoiser.device
            z = self.denoiser.predict_indices(condition.embedding.to(device), condition.demographics,
                                              condition.demographics_mask, condition.tokens.to(device)).float().cpu()
        return {s["name"]: (z[:, i] * s["std"] + s["mean"]).numpy() for i, s in enumerate(stats)}

    def check_inputs(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None, demographics: torch.Tensor | None,
                     num_inference_steps: int, guidance_scale: float, scheduler: str, num_samples_per_ecg: int,
                     latents: torch.Tensor | None, precision: str) -> None:
        """Raise ``ValueError`` for inputs the model cannot take (no silent fixing)."""
        if not torch.is_tensor(ecg) or ecg.ndim != 3 or ecg.shape[1] != 12:
            raise ValueError(f"ecg must be a (batch, 12, samples) tensor, got "
                             f"{tuple(ecg.shape) if torch.is_tensor(ecg) else type(ecg).__name__}")
        n_samples = self.ecg_config.get("sampling_rate_hz", 0) * self.ecg_config.get("duration_s", 0)
        if n_samples and ecg.shape[-1] != int(round(n_samples)):
            raise ValueError(f"ecg has {ecg.shape[-1]} samples per lead; the model takes "
                             f"{int(round(n_samples))} ({self.ecg_config['duration_s']:g} s at "
                             f"{self.ecg_config['sampling_rate_hz']:g} Hz): standardise it with standardize_file")
        if not torch.isfinite(ecg).all():
            raise ValueError("ecg has NaN or infinite values")
        if lead_mask is not None and tuple(lead_mask.shape) != tuple(ecg.shape[:2]):
            raise ValueError(f"lead_mask must be {tuple(ecg.shape[:2])}, got {tuple(lead_mask.shape)}")
        n_demographics = self.denoiser.config.n_demographics
        if demographics is not None:
            if not n_demographics and not self.condition_encoder.uses_demographics:
                raise ValueError("demographics given, but this model is not conditioned on demographics")
            if demographics.ndim != 2 or demographics.shape[0] != ecg.shape[0]:
                raise ValueError(f"demographics must be (batch, n), got {tuple(demographics.shape)}")
        elif self.condition_encoder.uses_demographics:
            raise ValueError("this model's ECG encoder needs demographics (FiLM); pass demographics")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if not guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be non-negative, got {guidance_scale}")
        if scheduler not in SAMPLERS:
            raise ValueError(f"scheduler must be one of {', '.join(SAMPLERS)}, got {scheduler!r}")
        if num_samples_per_ecg < 1:
            raise ValueError(f"num_samples_per_ecg must be at least 1, got {num_samples_per_ecg}")
        if latents is not None and tuple(latents.shape) != self.latent_shape(ecg.shape[0] * num_samples_per_ecg):
            raise ValueError(f"latents must be {self.latent_shape(ecg.shape[0] * num_samples_per_ecg)}, "
                             f"got {tuple(latents.shape)}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")

    def num_steps(self, num_inference_steps: int, image_steps: int | None = None) -> int:
        """Denoising steps of one call, what ``callback_on_step_end`` counts to."""
        return num_inference_steps

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of the latents of `batch` cines."""
        c = self.denoiser.config
        return batch, c.latent_channels, c.num_frames, c.latent_size, c.latent_size

    def encode_ecg(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None,
                   demographics: torch.Tensor | None = None,
                   demographics_mask: torch.Tensor | None = None) -> ECGCondition:
        """The condition of a batch of standard ECGs (step 2 of ``__call__``)."""
        device = self.condition_encoder.device
        condition = self.condition_encoder(ecg.to(device, torch.float32),
                                           None if lead_mask is None else lead_mask.to(device, torch.bool),
                                           None if demographics is None else demographics.to(device, torch.float32))
        condition.demographics_mask = None if demographics_mask is None else demographics_mask.to(device)
        return condition

    def _autocast(self, precision: str):
        if precision == "bf16":
            return torch.autocast(self.denoiser.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- generation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None,
                 demographics: torch.Tensor | None = None, demographics_mask: torch.Tensor | None = None,
                 num_inference_steps: int = 25, guidance_scale: float = 3.0,
                 scheduler: Literal["dpm++", "ddim"] = "dpm++", generator: torch.Generator | None = None,
                 num_samples_per_ecg: int = 1, progress: bool = False, latents: torch.Tensor | None = None,
                 precision: Literal["fp32", "bf16"] | None = None, callback_on_step_end=None,
                 return_dict: bool = True) -> ECGToCMROutput | tuple[np.ndarray]:
        """Generate cines from standard ECGs.

        Args:
            ecg: (B, 12, T) standard ECGs in mV at the training set's rate and length
                (`standardize_file` makes one from a file).
            lead_mask: (B, 12) bool, False where a lead is absent.
            demographics: (B, n) standardised demographics, when the model uses them
                (missing ones mean "unknown").
            demographics_mask: (B, n) bool, False where a demographic value is missing.
            num_inference_steps: sampler steps.
            guidance_scale: classifier-free guidance weight w: the prediction is
                ``null + w · (conditional − null)``; 1 uses the conditional prediction only.
            scheduler: ``dpm++`` or ``ddim``.
            generator: seeds the initial noise (and DDIM's; reproducible outputs).
            num_samples_per_ecg: M cines per ECG (consecutive in the output).
            progress: show a progress bar over the steps.
            latents: (B × M, C, frames, h, w) initial noise instead of drawing it.
            precision: ``fp32`` or ``bf16`` autocast (default: the pipeline's ``precision``).
            callback_on_step_end: ``callback(pipe, step, timestep, callback_kwargs)`` after every denoising
                step (diffusers' convention; ``callback_kwargs`` has ``latents``), e.g. for progress.
            return_dict: return an `ECGToCMROutput` instead of a ``(cines, index_estimates)`` tuple.

        Returns:
            `ECGToCMROutput` with ``cines`` (B × M, frames, H, W) float32 in the training range and
            ``index_estimates`` (the read-out's indices per ECG, empty without a read-out).
        """
        precision = precision or self.config.precision
        # 1. Check inputs.
        self.check_inputs(ecg, lead_mask, demographics, num_inference_steps, guidance_scale, scheduler,
                          num_samples_per_ecg, latents, precision)
        device = self.denoiser.device
        n = ecg.shape[0] * num_samples_per_ecg

        # 2. Encode the ECG (one condition per sample).
        condition = self.encode_ecg(ecg, lead_mask, demographics, demographics_mask)
        estimates = self.estimate_indices(condition)
        condition = condition.repeat_interleave(num_samples_per_ecg)
        guided = guidance_scale != 1.0
        drop = torch.zeros(n, dtype=torch.bool, device=device)
        if guided:  # conditional and null branch in one batch
            condition = ECGCondition(*(None if x is None else torch.cat([x, x]) for x in (
                condition.tokens, condition.embedding, condition.demographics, condition.demographics_mask)))
            drop = torch.cat([drop, torch.ones_like(drop)])

        # 3. Timesteps.
        sampler = make_sampler(self.scheduler, scheduler)
        sampler.set_timesteps(num_inference_steps, device=device)

        # 4. Initial latents.
        if latents is None:
            latents = randn_tensor(self.latent_shape(n), generator=generator, device=device, dtype=torch.float32)
        latents = latents.to(device, torch.float32) * sampler.init_noise_sigma

        # 5. Denoise with classifier-free guidance.
        self.set_progress_bar_config(disable=not progress)
        step_kwargs = {"generator": generator} if scheduler == "ddim" else {}
        for i, t in enumerate(self.progress_bar(sampler.timesteps)):
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = sampler.scale_model_input(model_input, t)
            with self._autocast(precision):
                prediction = self.denoiser(model_input, t, condition.tokens, condition.embedding,
                                           condition.demographics, condition.demographics_mask,
                                           drop_condition=drop).sample.float()
            if guided:
                conditional, null = prediction.chunk(2)
                prediction = null + guidance_scale * (conditional - null)
            latents = sampler.step(prediction, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                callback_on_step_end(self, i, t, {"latents": latents})

        # 6. Decode every frame and clip to the training intensity range.
        with self._autocast(precision):
            cines = decode_latents(self.vae, latents)
        low, high = self.config.intensity_range
        cines = cines.float().clamp(low, high).cpu().numpy()
        self.maybe_free_model_hooks()
        return ECGToCMROutput(cines=cines, index_estimates=estimates) if return_dict else (cines, estimates)
