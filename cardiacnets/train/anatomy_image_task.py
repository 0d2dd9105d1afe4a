"""The ``anatomy_image`` training stage of the anatomy-first generator (`cardiacnets.generation.anatomy_pipeline`).

Trains the label-conditioned frame denoiser (`LabelConditionedDenoiser`) in
the latent space of a trained frame autoencoder (``vae`` task,
`cardiacnets.train.vae_task`), on the training set's (segmentation, cine)
pairs: random frames of each training cine are encoded by the frozen
autoencoder, noised at a random step, and the denoiser predicts the noise or
velocity from the noisy latents and the frame's label map (DDPM's objective,
`cardiacnets.generation.diffusion`). Exports ``RUN/image_denoiser`` and
``RUN/image_scheduler``, which the ``anatomy`` stage (`cardiacnets.train.anatomy_task`)
puts into the exported pipeline, and ``RUN/acquisition``, the acquisition-noise
model (`cardiacnets.generation.acquisition`) fitted on the residuals of the
frozen autoencoder's reconstructions of training frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange

from cardiacnets.data.store import TrainingSet
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.generation.diffusion import noise_scheduler_from, training_target
from cardiacnets.train.generation_common import check_view, load_vae
from cardiacnets.train.tasks import Task, register_task


@dataclass
class AnatomyImageOptions:
    """Options of the ``anatomy_image`` task.

    Attributes:
        view: the CMR view.
        vae: the trained frame autoencoder (``VAE_RUN/vae``).
        frames_per_subject: random frames of each training cine per step.
        prediction_type: ``epsilon`` or ``v_prediction``.
        num_train_timesteps: diffusion steps of the noise schedule.
        beta_schedule: diffusers beta schedule (``scaled_linear``, ``linear``, ``squaredcos_cap_v2``); the
            linear ones run between diffusers' default first and last beta (`noise_scheduler_from`).
        noise_subjects: training subjects the acquisition-noise model is fitted on (mid-ventricular slice,
            every `noise_frame_step`-th frame); 0: no noise model (the pipeline draws decoded frames as they are).
        noise_frame_step: frame step of the frames the noise model is fitted on.
        noise_covariance: ``split_half`` (the noise's spread between subjects from the cross-covariance of
            curves measured on alternate frames, free of each curve's own measurement scatter) or ``full``
            (the curves' plain covariance, inflated by that scatter).
        appearance: give the denoiser each cine's appearance code (`appearance_codes` of its mid-ventricular
            end-diastolic frame) and store a bank of training codes to draw from at generation.
        appearance_dropout: probability that a training frame's code is dropped (the denoiser learns to run
            without one).
        appearance_bank_size: training codes kept in the bank (all when fewer).
    """

    view: str = "sa"
    vae: str = ""
    frames_per_subject: int = 4
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: Literal["scaled_linear", "linear", "squaredcos_cap_v2"] = "scaled_linear"
    noise_subjects: int = 400
    noise_frame_step: int = 1
    noise_covariance: Literal["split_half", "full"] = "split_half"
    appearance: bool = True
    appearance_dropout: float = 0.1
    appearance_bank_size: int = 2048

    def validate(self) -> None:
        check_view(self.view)
        if not self.vae:
            raise ConfigError("task anatomy_image needs options.vae (a trained autoencoder, VAE_RUN/vae)")
        if self.frames_per_subject < 1 or self.num_train_timesteps < 2:
            raise ConfigError("options.frames_per_subject must be at least 1 and num_train_timesteps at least 2")
        if self.noise_subjects < 0 or self.noise_subjects == 1 or self.noise_frame_step < 1:
            raise ConfigError("options.noise_subjects must be 0 (no noise model) or at least 2, and "
                              "noise_frame_step at least 1")
        if not 0.0 <= self.appearance_dropout < 1.0 or self.appearance_bank_size < 2:
            raise ConfigError("options.appearance_dropout must be in [0, 1) and appearance_bank_size at least 2")


@register_task
class AnatomyImageTask(Task):
    """Train the label-conditioned frame denoiser (see the module docstring)."""

    name = "anatomy_image"
    options_class = AnatomyImageOptions
    default_model = "anatomy_image_unet_demo"

    def __init__(self, config):
        super().__init__(config)
        self.vae = load_vae(self.options.vae)
        self.noise_scheduler = noise_scheduler_from(self.options)

    def views(self) -> list[str]:
        return [self.options.view]

    def required_modalities(self) -> list[str]:
        return [self.options.view]

    def segmentations(self) -> bool:
        return True

    def model_overrides(self) -> dict:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        key = f"seg_{self.options.view}"
        shape = TrainingSet(self.config.data.path).row_shape(key)
        if shape is None:
            raise InputError(self.config.data.path, f"task anatomy_image needs the stored segmentations ({key}.npy)")
        derived = {"latent_channels": int(self.vae.config.latent_channels), "downsample_factor": factor,
                   "latent_size": int(shape[-1]) // factor}
        if self.options.appearance:
            from cardiacnets.generation.image_decoder import APPEARANCE_NAMES

            derived["appearance_dim"] = len(APPEARANCE_NAMES)
            derived["appearance_bank_size"] = min(self.options.appearance_bank_size, len(self._training_codes()))
        overrides = dict(self.config.model.overrides)
        for key, value in derived.items():
            if key in overrides and overrides[key] != value:
                raise ConfigError(f"model.overrides.{key}={overrides[key]!r} contradicts the autoencoder and data "
                                  f"({key} = {value}); leave it out")
            overrides[key] = value
        return overrides

    def check_model(self, model):
        from cardiacnets.generation.image_decoder import LabelConditionedDenoiser

        if not isinstance(model, LabelConditionedDenoiser):
            raise ConfigError(f"task anatomy_image trains a LabelConditionedDenoiser; model {self.model_name!r} is a "
                              f"{type(model).__name__}")

    def build_model(self):
        model = super().build_model()
        if self.options.appearance and self.config.init.model is None:
            model.set_appearance(self._training_codes(), torch.Generator().manual_seed(self.config.seed))
        return model

    def _training_codes(self) -> torch.Tensor:
        """Appearance codes of every training cine with a segmentation (computed once)."""
        if getattr(self, "training_codes", None) is None:
            self.training_codes = training_appearance_codes(self.config.data.path, self.options.view,
                                                            self.config.data.train_split)
        return self.training_codes

    def _frames(self, batch: dict, generator: torch.Generator | None):
        """(N, 1, H, W) frames, (N, H, W) labels and (N, codes) appearance codes (None without appearance):
        random frames (training; codes dropped at `appearance_dropout`) or every 6th (validation)."""
        view = self.options.view
        cines, labels = batch[f"cmr_{view}"], batch[f"seg_{view}"]  # (B, slices, frames, H, W)
        b, s, f = cines.shape[:3]
        codes = None
        if self.options.appearance:
            from cardiacnets.generation.image_decoder import appearance_codes

            codes = appearance_codes(cines[:, s // 2, 0], labels[:, s // 2, 0])  # mid-ventricular, end-diastole
        if generator is None:
            return (rearrange(cines[:, :, ::6], "b s f h w -> (b s f) 1 h w"),
                    rearrange(labels[:, :, ::6], "b s f h w -> (b s f) h w"),
                    None if codes is None else codes.repeat_interleave(s * len(range(0, f, 6)), dim=0))
        k = self.options.frames_per_subject
        slices = torch.randint(s, (b * k,), generator=generator)
        frames = torch.randint(f, (b * k,), generator=generator)
        subjects = torch.arange(b).repeat_interleave(k)
        if codes is not None:
            codes = codes[subjects]
            codes[torch.rand(b * k, generator=generator) < self.options.appearance_dropout] = float("nan")
        return (rearrange(cines[subjects, slices, frames], "n h w -> n 1 h w"), labels[subjects, slices, frames],
                codes)

    def _loss(self, model, frames: torch.Tensor, labels: torch.Tensor, codes: torch.Tensor | None,
              generator: torch.Generator | None):
        vae = self.vae.to(frames.device)
        with torch.no_grad():
            clean = vae.encode(frames.to(vae.dtype)).latent_dist.mode().float() * vae.config.scaling_factor
        noise = torch.randn(clean.shape, generator=generator).to(clean.device)
        timesteps = torch.randint(0, self.options.num_train_timesteps, (clean.shape[0],),
                                  generator=generator).to(clean.device)
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        prediction = model(noisy, timesteps, labels, codes).sample
        return F.mse_loss(prediction.float(), training_target(self.noise_scheduler, clean, noise, timesteps).float())

    def training_step(self, model, batch, generator):
        return {"loss_diffusion": self._loss(model, *self._frames(batch, generator), generator)}

    def validation_step(self, model, batch):
        return {"loss_diffusion": self._loss(model, *self._frames(batch, None), None)}

    def export(self, model, run_dir):
        folder = run_dir / "image_denoiser"
        model.save_pretrained(folder, safe_serialization=True)
        self.noise_scheduler.save_pretrained(run_dir / "image_scheduler")
        exports = {"image_denoiser": folder, "image_scheduler": run_dir / "image_scheduler"}
        record = {"vae": str(Path(self.options.vae).resolve()),
                  "training_set": str(Path(self.config.data.path).resolve()), "view": self.options.view}
        if self.options.noise_subjects:
            noise, record["acquisition"] = fit_noise_model(self.config.data.path, self.vae, self.options.view,
                                                           self.options.noise_subjects, self.options.noise_frame_step,
                                                           self.config.data.train_split, self.config.seed,
                                                           self.options.noise_covariance == "split_half")
            noise.save_pretrained(run_dir / "acquisition", safe_serialization=True)
            exports["acquisition"] = run_dir / "acquisition"
        (run_dir / "anatomy_image.json").write_text(json.dumps(record, indent=2) + "\n")
        return exports


def fit_noise_model(data_path, vae, view: str, n_subjects: int, frame_step: int = 1, split: str = "train",
                    seed: int = 0, split_half: bool = True):
    """Fit the acquisition-noise model on a training set's frames and the autoencoder's reconstructions.

    Args:
        data_path: the training set.
        vae: the frozen frame autoencoder.
        view: the CMR view.
        n_subjects: subjects drawn at random from `split` (all when fewer); the mid-ventricular slice of each
            (the middle stored slice), every `frame_step`-th frame.
        frame_step: frame step.
        split: the split drawn from.
        seed: the draw's seed.
        split_half: estimate the between-subject spread from alternate frames' curves
            (`fit_acquisition_noise`'s ``halves``); False: the plain covariance.

    Returns:
        ``(AcquisitionNoise, report)`` (`cardiacnets.generation.acquisition.fit_acquisition_noise`).
    """
    import numpy as np

    from cardiacnets.generation.acquisition import fit_acquisition_noise

    data = TrainingSet(data_path, split=split, require=(view,))
    if len(data) < 2:
        raise InputError(data_path, f"the noise model needs at least 2 {split} subjects with view {view!r}")
    positions = np.random.default_rng(seed).permutation(len(data))[:n_subjects]
    frames, reconstructions, subjects = [], [], []
    for position in sorted(positions):
        cine = data[int(position)][f"cmr_{view}"]  # (slices, frames, H, W)
        x = torch.from_numpy(np.ascontiguousarray(cine[cine.shape[0] // 2, ::frame_step]))[:, None]
        with torch.no_grad():
            decoded = vae.decode(vae.encode(x.to(vae.dtype)).latent_dist.mode()).sample.float()
        frames.append(x[:, 0].numpy())
        reconstructions.append(decoded[:, 0].clamp(0, 1).numpy())
        subjects.append(np.full(x.shape[0], position))
    halves = np.concatenate([np.arange(len(s)) % 2 for s in subjects])  # alternate frames: two disjoint halves
    model, report = fit_acquisition_noise(np.concatenate(frames), np.concatenate(reconstructions),
                                          np.concatenate(subjects), halves=halves if split_half else None)
    report.update({"split": split, "frame_step": frame_step, "seed": seed})
    return model, report


def training_appearance_codes(data_path, view: str, split: str = "train", chunk: int = 256) -> torch.Tensor:
    """(M, codes) appearance codes (`appearance_codes`) of a split's cines: the mid-ventricular slice's
    end-diastolic frame (frame 0) under its stored segmentation, for every subject with the view."""
    import numpy as np

    from cardiacnets.generation.image_decoder import appearance_codes

    data = TrainingSet(data_path, split=split, require=(view,))
    if len(data) < 2:
        raise InputError(data_path, f"the appearance codes need at least 2 {split} subjects with view {view!r}")
    if f"seg_{view}" not in data.arrays:
        raise InputError(data_path, f"the appearance codes need the stored segmentations (seg_{view}.npy)")
    rows = data.manifest["row"].to_numpy().astype(int)
    slices = data.row_shape(f"cmr_{view}")[0]
    codes = []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        frames = np.asarray(data.arrays[f"cmr_{view}"][part, slices // 2, 0], dtype=np.float32)
        labels = np.asarray(data.arrays[f"seg_{view}"][part, slices // 2, 0])
        codes.append(appearance_codes(torch.from_numpy(frames), torch.from_numpy(labels.astype(np.int64))))
    return torch.cat(codes)
