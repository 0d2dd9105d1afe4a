"""`AnatomyFirstPipeline`: ECG → anatomy (a label cine) → CMR cine, the anatomy-first generator.

A sibling of `ECGToCMRPipeline` (the paper's direct route, kept as the
baseline) that generates the heart's shape and motion first and the image
second, each by a small diffusion model:

1. the frozen aligned ECG encoder (``condition_encoder``) encodes the ECG; a
   frozen ridge read-out (``readout``, `ConditionReadout`) turns its
   embedding, mean token, the demographics and, when the ECG file has them, the
   device measurements into estimates of the CMR indices, the compact
   condition of the anatomy prior;
2. each sample's indices are drawn around the estimates, ``temperature`` ×
   the read-out's own residual scatter (measured on cross-fitted training
   estimates; 0: the estimates themselves), and the anatomy prior
   (``anatomy_denoiser``, `AnatomyDenoiser`) denoises a shape-and-motion code
   for them with classifier-free guidance, its initial noise scaled by
   ``shape_temperature`` (1: a calibrated draw of the shape and motion that
   the indices leave open, 0: the most typical anatomy of those indices,
   every sample alike). The two are separate because they trade different
   things: the indices' scatter lowers how well one sample's indices follow
   the ECG, the shape's noise mostly does not, and without it every
   generated heart of a given size is the same heart;
3. the shape model (``shape_model``, `ShapeModel`) decodes the code to a valid
   label cine (LV blood pool, myocardium, RV over the cycle);
4. the image denoiser (``image_denoiser``, `LabelConditionedDenoiser`)
   generates each frame's latents from its label map (and, for a denoiser
   with an appearance input, one appearance code per cine, drawn from the
   training cines' bank), the frames of a cine sharing one initial noise,
   and the autoencoder (``vae``) decodes them.

``__call__`` returns the cines, their label cines (the anatomy they were
drawn from, useful to clinicians and to evaluation) and the read-out's index
estimates. Components are saved and loaded with ``save_pretrained`` /
``from_pretrained`` in diffusers' layout. ``callback_on_step_end`` follows
the diffusers convention and is called after every denoising step of both
stages (``callback_kwargs["stage"]`` says which; `num_steps` gives the total).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange, repeat

from cardiacnets.generation.acquisition import AcquisitionNoise
from cardiacnets.generation.anatomy_prior import AnatomyDenoiser
from cardiacnets.generation.conditioning import ECGConditionEncoder
from cardiacnets.generation.image_decoder import LabelConditionedDenoiser
from cardiacnets.generation.pipeline import SAMPLERS, CardiacPipeline, make_sampler
from cardiacnets.generation.readout import ConditionReadout
from cardiacnets.generation.shape_model import ShapeModel


@dataclass
class AnatomyFirstOutput(BaseOutput):
    """What `AnatomyFirstPipeline` returns.

    Attributes:
        cines: (B × M, frames, H, W) float32 cines in the training range (one slice), or
            (B × M, slices, frames, H, W); the M samples of each ECG consecutive.
        labels: the label cines the cines were drawn from, the same shape, uint8 (UK Biobank labels).
        index_estimates: the read-out's CMR indices per ECG, name -> (B,) array in the indices' units.
        codes: (B × M, code_dim) the sampled shape codes.
    """

    cines: np.ndarray
    labels: np.ndarray
    index_estimates: dict[str, np.ndarray] = field(default_factory=dict)
    codes: np.ndarray | None = None


class AnatomyFirstPipeline(CardiacPipeline):
    """Generate cine CMR from standard ECGs through a sampled anatomy (see the module docstring).

    Args:
        condition_encoder: the frozen aligned ECG encoder.
        readout: the frozen read-out onto CMR indices.
        anatomy_denoiser: the shape-code denoiser.
        shape_model: the shape-and-motion model.
        image_denoiser: the label-conditioned frame denoiser.
        vae: the frame autoencoder (``scaling_factor`` in its config).
        scheduler: the anatomy prior's training noise schedule.
        image_scheduler: the image denoiser's training noise schedule.
        view, frame_interval_ms, spacing_mm, slice_thickness_mm, ecg_config, intensity_range, precision:
            as for `ECGToCMRPipeline`.
        default_temperature: the indices' temperature used when a call gives none (chosen on validation).
        default_shape_temperature: the shape code's temperature used when a call gives none (chosen on
            validation).
        default_guidance: the anatomy guidance scale used when a call gives none.
        acquisition: the acquisition-noise model added to the decoded frames (`AcquisitionNoise`; None: the
            decoded frames as they are, as in bundles before 0.1.7).
    """

    _optional_components = ["acquisition"]
    model_cpu_offload_seq = "condition_encoder->anatomy_denoiser->image_denoiser->vae"

    def __init__(self, condition_encoder: ECGConditionEncoder, readout: ConditionReadout,
                 anatomy_denoiser: AnatomyDenoiser, shape_model: ShapeModel, image_denoiser: LabelConditionedDenoiser,
                 vae: AutoencoderKL, scheduler: DDPMScheduler, image_scheduler: DDPMScheduler, view: str = "sa",
                 frame_interval_ms: float | None = None, spacing_mm: float | None = None,
                 slice_thickness_mm: float = 8.0, ecg_config: dict[str, Any] | None = None,
                 intensity_range: list[float] | None = None, precision: str = "fp32",
                 default_temperature: float = 1.0, default_guidance: float = 1.0,
                 default_shape_temperature: float = 1.0, acquisition: AcquisitionNoise | None = None):
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        for model in (condition_encoder, readout, anatomy_denoiser, shape_model, image_denoiser, vae):
            model.eval()
        self.register_modules(condition_encoder=condition_encoder, readout=readout, anatomy_denoiser=anatomy_denoiser,
                              shape_model=shape_model, image_denoiser=image_denoiser, vae=vae, scheduler=scheduler,
                              image_scheduler=image_scheduler, acquisition=acquisition)
        self.register_to_config(view=view, frame_interval_ms=frame_interval_ms, spacing_mm=spacing_mm,
                                slice_thickness_mm=slice_thickness_mm, ecg_config=ecg_config,
                                intensity_range=list(intensity_range or (0.0, 1.0)), precision=precision,
                                default_temperature=float(default_temperature),
                                default_guidance=float(default_guidance),
                                default_shape_temperature=float(default_shape_temperature))

    # --- what the pipeline generates ---------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.shape_model.config.n_frames)

    @property
    def image_size(self) -> int:
        return int(self.shape_model.config.image_size)

    @property
    def demographics_normaliser(self) -> dict | None:
        """The read-out's demographics normaliser (``columns``, ``mean``, ``std``), or None."""
        return self.readout.config.demographics

    def num_steps(self, num_inference_steps: int, image_steps: int | None = None) -> int:
        """Denoising steps of one call (anatomy + image), what ``callback_on_step_end`` counts to."""
        return num_inference_steps + (image_steps or num_inference_steps)

    # --- inputs ----------------------------------------------------------------------------------------------------
    def check_inputs(self, ecg: torch.Tensor, num_inference_steps: int, image_steps: int, guidance_scale: float,
                     temperature: float, scheduler: str, num_samples_per_ecg: int, precision: str,
                     shape_temperature: float = 1.0) -> None:
        """Raise ``ValueError`` for inputs the model cannot take (no silent fixing)."""
        if not torch.is_tensor(ecg) or ecg.ndim != 3 or ecg.shape[1] != 12:
            raise ValueError(f"ecg must be a (batch, 12, samples) tensor, got "
                             f"{tuple(ecg.shape) if torch.is_tensor(ecg) else type(ecg).__name__}")
        expected = self.condition_encoder.n_samples
        if ecg.shape[2] != expected:
            raise ValueError(f"ecg has {ecg.shape[2]} samples per lead; this model takes {expected} "
                             f"(use standardize_file)")
        if num_inference_steps < 1 or image_steps < 1:
            raise ValueError(f"num_inference_steps and image_steps must be at least 1, got "
                             f"{num_inference_steps}, {image_steps}")
        if not guidance_scale >= 0 or not temperature >= 0 or not shape_temperature >= 0:
            raise ValueError(f"guidance_scale, temperature and shape_temperature must be non-negative, got "
                             f"{guidance_scale}, {temperature}, {shape_temperature}")
        if scheduler not in SAMPLERS:
            raise ValueError(f"scheduler must be one of {', '.join(SAMPLERS)}, got {scheduler!r}")
        if num_samples_per_ecg < 1:
            raise ValueError(f"num_samples_per_ecg must be at least 1, got {num_samples_per_ecg}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")

    def _autocast(self, precision: str):
        if precision == "bf16":
            return torch.autocast(self.image_denoiser.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def read_out(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None, demographics: dict | None = None,
                 measurements: dict | None = None) -> dict[str, torch.Tensor]:
        """The read-out of a batch of standard ECGs: standardised index estimates and what the condition needs.

        Args:
            ecg: (B, 12, T) standard ECGs.
            lead_mask: (B, 12) bool, False where a lead is absent.
            demographics: ``{column: (B,) raw values}``, NaN where missing (None: all missing).
            measurements: ``{column: (B,) raw device measurements}`` from the ECG files, NaN where
                missing (None: none; the read-out without measurements is used).

        Returns:
            ``estimates`` (B, k) standardised, ``full`` (B,) bool (read with the measurements),
            ``demographics`` and ``demographics_present`` (B, n) (absent without demographics).
        """
        device = self.condition_encoder.device
        batch = ecg.shape[0]
        inputs = {k: v.to(device) for k, v in self.readout.inputs(batch, demographics, measurements).items()}
        film = inputs.get("demographics") if self.condition_encoder.uses_demographics else None
        encoded = self.condition_encoder(ecg.to(device, torch.float32),
                                         None if lead_mask is None else lead_mask.to(device, torch.bool), film)
        estimates, full = self.readout.estimate(encoded.embedding, encoded.tokens, inputs.get("demographics"),
                                                inputs.get("measurements"), inputs.get("measurements_present"))
        out = {"estimates": estimates, "full": full}
        if "demographics" in inputs:
            out.update(demographics=inputs["demographics"], demographics_present=inputs["demographics_present"])
        return out

    def conditions(self, read: dict[str, torch.Tensor], temperature: float, repeats: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """The prior's conditions of `repeats` samples per ECG: the estimates perturbed by ``temperature`` × the
        read-out's residual scatter (`ConditionReadout.perturb`), with the demographics.

        Returns:
            (B × repeats, condition_dim), each ECG's samples consecutive.
        """
        repeated = {k: v.repeat_interleave(repeats, dim=0) for k, v in read.items()}
        estimates = self.readout.perturb(repeated["estimates"], repeated["full"], temperature, generator)
        return self.readout.condition(estimates, repeated["full"], repeated.get("demographics"),
                                      repeated.get("demographics_present"))

    # --- generation -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_codes(self, condition: torch.Tensor, num_inference_steps: int = 25, guidance_scale: float = 1.0,
                     shape_temperature: float = 1.0, scheduler: str = "dpm++",
                     generator: torch.Generator | None = None,
                     callback: Callable[[int, Any, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Shape codes for (N, condition_dim) conditions (steps 3–5 of ``__call__`` for the anatomy), their
        initial noise scaled by `shape_temperature`."""
        device = self.anatomy_denoiser.device
        n = condition.shape[0]
        sampler = make_sampler(self.scheduler, scheduler)
        sampler.set_timesteps(num_inference_steps, device=device)
        codes = randn_tensor((n, self.shape_model.code_dim), generator=generator, device=device, dtype=torch.float32)
        codes = codes * shape_temperature * sampler.init_noise_sigma
        guided = guidance_scale != 1.0
        drop = torch.zeros(n, dtype=torch.bool, device=device)
        cond = condition.to(device)
        if guided:
            cond, drop = torch.cat([cond, cond]), torch.cat([drop, torch.ones_like(drop)])
        step_kwargs = {"generator": generator} if scheduler == "ddim" else {}
        for i, t in enumerate(sampler.timesteps):
            model_input = sampler.scale_model_input(torch.cat([codes, codes]) if guided else codes, t)
            prediction = self.anatomy_denoiser(model_input, t, cond, drop_condition=drop).sample.float()
            if guided:
                conditional, null = prediction.chunk(2)
                prediction = null + guidance_scale * (conditional - null)
            codes = sampler.step(prediction, t, codes, **step_kwargs).prev_sample
            if callback is not None:
                callback(i, t, codes)
        return codes

    @torch.no_grad()
    def render(self, labels: np.ndarray | torch.Tensor, num_inference_steps: int = 25, scheduler: str = "dpm++",
               generator: torch.Generator | None = None, precision: str | None = None,
               callback: Callable[[int, Any, torch.Tensor], None] | None = None,
               acquisition_noise: bool = True, appearance: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """Cines drawn for given label cines (the image stage alone; steps 6–7 of ``__call__``).

        Args:
            labels: (N, frames, H, W) or (N, slices, frames, H, W) label cines.
            num_inference_steps: sampler steps.
            scheduler: ``dpm++`` or ``ddim``.
            generator: seeds the initial noise (one noise map per cine and slice, shared by its frames).
            precision: ``fp32`` or ``bf16`` (default: the pipeline's).
            callback: called as ``callback(step, timestep, latents)`` after each step.
            acquisition_noise: add the pipeline's acquisition noise (when it has the model) to the decoded
                frames; False: the decoded frames, the expected image of each latent. Either way `generator`
                advances by the same draws, so a seed gives the same decoded frames with and without noise.
            appearance: (N, codes) appearance codes of the cines (`appearance_codes`, e.g. measured on real
                cines) for a denoiser with an appearance input; None: each cine draws the code of a random
                training cine from the denoiser's bank (no code where the denoiser has no bank).

        Returns:
            Float32 cines of the labels' shape, clipped to the training range.
        """
        precision = precision or self.config.precision
        labels = torch.as_tensor(np.asarray(labels)).long()
        one_slice = labels.ndim == 4
        if one_slice:
            labels = labels[:, None]
        n, s, f = labels.shape[:3]
        device = self.image_denoiser.device
        c = self.image_denoiser.config
        codes = None
        if appearance is not None and not c.appearance_dim:
            raise ValueError("this pipeline's image denoiser has no appearance input; pass appearance=None")
        if appearance is not None or c.appearance_bank_size:
            codes = self.image_denoiser.draw_appearance(n, generator) if appearance is None \
                else torch.as_tensor(np.asarray(appearance), dtype=torch.float32)
            if tuple(codes.shape) != (n, c.appearance_dim):
                raise ValueError(f"appearance must be ({n}, {c.appearance_dim}), got {tuple(codes.shape)}")
            codes = codes.to(device).repeat_interleave(s * f, dim=0)
        noise = randn_tensor((n, s, c.latent_channels, c.latent_size, c.latent_size), generator=generator,
                             device=device, dtype=torch.float32)
        latents = repeat(noise, "n s c h w -> (n s f) c h w", f=f)
        flat_labels = rearrange(labels, "n s f h w -> (n s f) h w").to(device)
        sampler = make_sampler(self.image_scheduler, scheduler)
        sampler.set_timesteps(num_inference_steps, device=device)
        latents = latents * sampler.init_noise_sigma
        step_kwargs = {"generator": generator} if scheduler == "ddim" else {}
        for i, t in enumerate(sampler.timesteps):
            with self._autocast(precision):
                prediction = self.image_denoiser(sampler.scale_model_input(latents, t), t, flat_labels,
                                                 codes).sample.float()
            latents = sampler.step(prediction, t, latents, **step_kwargs).prev_sample
            if callback is not None:
                callback(i, t, latents)
        with self._autocast(precision):
            frames = self.vae.decode(latents / self.vae.config.scaling_factor).sample.float()
        low, high = self.config.intensity_range
        cines = rearrange(frames.clamp(low, high), "(n s f) 1 h w -> n s f h w", n=n, s=s).cpu()
        # The noise has its own generator, seeded by one draw that is made whether or not noise is added: the
        # same seed gives the same anatomies and decoded frames with and without noise (paired comparisons).
        noise_generator = None
        if generator is not None:
            seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
            noise_generator = torch.Generator(generator.device).manual_seed(int(seed.item()))
        if acquisition_noise and self.acquisition is not None:
            cines = self.acquisition(cines, noise_generator)
        cines = cines.numpy()
        return cines[:, 0] if one_slice else cines

    @torch.no_grad()
    def __call__(self, ecg: torch.Tensor, lead_mask: torch.Tensor | None = None, demographics: dict | None = None,
                 measurements: dict | None = None, num_inference_steps: int = 25, image_steps: int | None = None,
                 guidance_scale: float | None = None, temperature: float | None = None,
                 shape_temperature: float | None = None, scheduler: Literal["dpm++", "ddim"] = "dpm++",
                 generator: torch.Generator | None = None, num_samples_per_ecg: int = 1, progress: bool = False,
                 precision: Literal["fp32", "bf16"] | None = None, acquisition_noise: bool = True,
                 callback_on_step_end: Callable | None = None,
                 return_dict: bool = True) -> AnatomyFirstOutput | tuple:
        """Generate cines (and their anatomy) from standard ECGs.

        Args:
            ecg: (B, 12, T) standard ECGs in mV at the training set's rate and length.
            lead_mask: (B, 12) bool, False where a lead is absent.
            demographics: ``{column: (B,) raw values}`` (sex_male, age_years, height_cm, weight_kg; NaN
                where missing).
            measurements: ``{column: (B,) raw device measurements}`` of the ECG files (None for WFDB).
            num_inference_steps: anatomy sampler steps.
            image_steps: image sampler steps (default: `num_inference_steps`).
            guidance_scale: the anatomy prior's classifier-free guidance (default: the pipeline's).
            temperature: scale of the sampled indices' scatter around the estimates (default: the
                pipeline's; 1: the read-out's calibrated scatter, 0: the estimates themselves).
            shape_temperature: scale of the shape code's initial noise (default: the pipeline's; 1 draws
                the shape and motion from the learned distribution, 0 gives the most typical anatomy of the
                sampled indices).
            scheduler: ``dpm++`` or ``ddim`` (both stages).
            generator: seeds all noise (reproducible outputs).
            num_samples_per_ecg: M cines per ECG (consecutive in the output).
            progress: show a progress bar over all steps.
            precision: ``fp32`` or ``bf16`` autocast of the image stage.
            acquisition_noise: add the acquisition noise of the pipeline's `AcquisitionNoise` (when it has
                one) to the decoded frames, as a scanner's images have; False: the noise-free expected image.
            callback_on_step_end: ``callback(pipe, step, timestep, callback_kwargs)`` after every step of
                both stages (diffusers' convention); ``callback_kwargs`` has ``stage`` (``anatomy`` or
                ``image``) and ``latents``; returns a dict (ignored) or None.
            return_dict: return an `AnatomyFirstOutput` instead of ``(cines, labels, index_estimates)``.
        """
        precision = precision or self.config.precision
        image_steps = image_steps or num_inference_steps
        guidance_scale = self.config.default_guidance if guidance_scale is None else guidance_scale
        temperature = self.config.default_temperature if temperature is None else temperature
        if shape_temperature is None:
            shape_temperature = self.config.default_shape_temperature
        # 1. Check inputs.
        self.check_inputs(ecg, num_inference_steps, image_steps, guidance_scale, temperature, scheduler,
                          num_samples_per_ecg, precision, shape_temperature)
        total = self.num_steps(num_inference_steps, image_steps)
        self.set_progress_bar_config(disable=not progress)
        bar = self.progress_bar(total=total)

        def callback_for(stage: str, offset: int):
            def on_step(i, t, latents):
                bar.update()
                if callback_on_step_end is not None:
                    callback_on_step_end(self, offset + i, t, {"stage": stage, "latents": latents})
            return on_step

        # 2. Read the ECG out into index estimates; the prior's condition of each sample draws the indices
        #    around them (temperature x the read-out's residual scatter; 0: the estimates themselves).
        read = self.read_out(ecg, lead_mask, demographics, measurements)
        estimates = self.readout.to_units(read["estimates"])
        condition = self.conditions(read, temperature, num_samples_per_ecg, generator)
        # 3-5. Sample the shape codes.
        codes = self.sample_codes(condition, num_inference_steps, guidance_scale, shape_temperature, scheduler,
                                  generator, callback_for("anatomy", 0))
        # 6. Decode the anatomy.
        labels = self.shape_model.decode(codes)  # (N, slices, frames, H, W)
        # 7. Draw the images from the anatomy.
        cines = self.render(labels, image_steps, scheduler, generator, precision,
                            callback_for("image", num_inference_steps), acquisition_noise)
        bar.close()
        if labels.shape[1] == 1:
            labels = labels[:, 0]
            cines = cines[:, 0]
        self.maybe_free_model_hooks()
        codes = codes.cpu().numpy()
        if not return_dict:
            return cines, labels, estimates
        return AnatomyFirstOutput(cines=cines, labels=labels, index_estimates=estimates, codes=codes)
