"""The generation stages of CardiacNets (arXiv 2411.13602): the frame autoencoder and the latent diffusion model.

- ``vae``: trains the frame autoencoder (diffusers ``AutoencoderKL``,
  `cardiacnets.generation.vae`) on random frames of the training cines with an
  L1 reconstruction loss and a small KL term; validation scores fixed frames
  of every validation cine (L1, PSNR). At export the latent scaling factor is
  measured on training frames (1 / standard deviation of their latents) and
  stored in the autoencoder's config; exports ``RUN/vae``.
- ``diffusion``: trains the ECG-conditioned cine denoiser (`CineDenoiser`) with
  DDPM's objective (Ho et al., 2020) in the latent space of a trained ``vae``:
  noise a cine's latents at a random step, predict the noise or the velocity
  (``prediction_type``; Salimans & Ho, 2022), optionally weighted by min-SNR-γ
  (Hang et al., 2023); the condition (the frozen aligned ECG encoder's tokens
  and pooled embedding, optionally demographics) is replaced by the learned
  null condition with probability ``condition_dropout`` (classifier-free
  guidance). Autoencoder and ECG encoder are frozen, so the latents of every
  cine and the ECG condition of every subject are computed once per split
  and kept in memory (optionally on disk, ``cache_dir``): a training step
  then runs the denoiser only. Validation reports the loss, and the plain
  mean squared error with the condition and with the null condition (their
  gap shows how much the ECG informs the prediction). Exports
  ``RUN/denoiser`` and ``RUN/pipeline``, the `ECGToCMRPipeline` that
  ``cardiacnets generate`` and ``cardiacnets evaluate generation`` load.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cardiacnets.errors import ConfigError, InputError
from cardiacnets.generation.readout import ridge_loo
from cardiacnets.train.generation_common import check_view, generation_provenance, load_vae, pipeline_settings
from cardiacnets.train.tasks import Task, batch_size_of, register_task


def _middle_slice(cines: torch.Tensor) -> torch.Tensor:
    """(B, slices, frames, H, W) → (B, frames, H, W): the middle slice (the one the generator makes)."""
    return cines[:, cines.shape[1] // 2]


# --- the autoencoder -----------------------------------------------------------------------------------------------

@dataclass
class VAEOptions:
    """Options of the ``vae`` task.

    Attributes:
        view: the CMR view whose frames are encoded.
        frames_per_subject: random frames of each training cine per step (the optimiser sees
            ``batch_size × frames_per_subject`` frames).
        kl_weight: weight of the KL term per latent element (Stable Diffusion's autoencoder: 1e-6);
            it keeps the latents near N(0, I) without blurring the reconstructions.
        val_frame_stride: validation scores every this-many-th frame of each cine.
        scaling_subjects: training subjects whose frames measure the latent scaling factor at export.
    """

    view: str = "sa"
    frames_per_subject: int = 4
    kl_weight: float = 1e-6
    val_frame_stride: int = 6
    scaling_subjects: int = 256

    def validate(self) -> None:
        check_view(self.view)
        if self.frames_per_subject < 1 or self.val_frame_stride < 1 or self.scaling_subjects < 1:
            raise ConfigError("options.frames_per_subject, val_frame_stride and scaling_subjects must be at least 1")
        if self.kl_weight < 0:
            raise ConfigError(f"options.kl_weight must be non-negative, got {self.kl_weight}")


class AutoencoderTrainer(nn.Module):
    """The autoencoder with a ``forward`` that returns its loss terms (what the training loop calls).

    Args:
        vae: the ``AutoencoderKL``.
        kl_weight: weight of the KL term.
    """

    def __init__(self, vae: nn.Module, kl_weight: float):
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight

    def forward(self, frames: torch.Tensor, generator: torch.Generator | None = None,
                sample_posterior: bool = True, with_psnr: bool = False) -> dict[str, torch.Tensor]:
        """`cardiacnets.generation.vae.vae_losses` of (N, 1, H, W) frames."""
        from cardiacnets.generation.vae import vae_losses

        return vae_losses(self.vae, frames, self.kl_weight, generator, sample_posterior, with_psnr)


@register_task
class VAETask(Task):
    """Train the frame autoencoder of the latent diffusion model (see the module docstring)."""

    name = "vae"
    options_class = VAEOptions
    default_model = "cmr_vae_demo"

    def views(self) -> list[str]:
        return [self.options.view]

    def required_modalities(self) -> list[str]:
        return [self.options.view]

    def build_model(self) -> nn.Module:
        from diffusers import AutoencoderKL

        from cardiacnets.models import create_model

        vae = create_model(self.model_name, **self.model_overrides())
        if not isinstance(vae, AutoencoderKL):
            raise ConfigError(f"task vae trains an AutoencoderKL; model {self.model_name!r} is a "
                              f"{type(vae).__name__}")
        if self.config.init.model is not None:
            _load_diffusers_weights(vae, AutoencoderKL, self.config.init.model)
        self.init_encoders(vae)
        return AutoencoderTrainer(vae, self.options.kl_weight)

    def _frames(self, batch: dict, generator: torch.Generator | None) -> torch.Tensor:
        cines = batch[f"cmr_{self.options.view}"]  # (B, slices, frames, H, W)
        b, s, f = cines.shape[:3]
        if generator is None:  # validation: every val_frame_stride-th frame of every slice
            picks = cines[:, :, ::self.options.val_frame_stride]
            return rearrange(picks, "b s f h w -> (b s f) 1 h w")
        k = self.options.frames_per_subject
        slices = torch.randint(s, (b, k), generator=generator)
        frames = torch.randint(f, (b, k), generator=generator)
        subjects = torch.arange(b).repeat_interleave(k)
        picked = cines[subjects, slices.reshape(-1), frames.reshape(-1)]  # (B·k, H, W)
        return rearrange(picked, "n h w -> n 1 h w")

    def training_step(self, model, batch, generator):
        return model(self._frames(batch, generator), generator)

    def validation_step(self, model, batch):
        return model(self._frames(batch, None), sample_posterior=False, with_psnr=True)

    @torch.no_grad()
    def measure_scaling(self, vae) -> dict[str, float]:
        """Latent statistics of the first ``scaling_subjects`` training subjects' frames (all frames).

        Returns:
            ``scaling_factor`` (1 / latent standard deviation), ``latent_mean``, ``latent_std``
            and ``n_frames``.
        """
        from cardiacnets.data.store import TrainingSet
        from cardiacnets.generation.vae import scaling_factor_of

        c = self.config
        data = TrainingSet(c.data.path, split=c.data.train_split, require=(self.options.view,))
        n = min(len(data), self.options.scaling_subjects)
        if n == 0:
            raise InputError(c.data.path, f"no training subject with a {self.options.view} cine to measure the "
                                          "latent scaling factor")
        device = next(vae.parameters()).device
        was_training = vae.training
        vae.eval()
        latents = []
        for start in range(0, n, 16):
            cines = np.stack([data[i][f"cmr_{self.options.view}"] for i in range(start, min(n, start + 16))])
            frames = rearrange(torch.from_numpy(cines), "b s f h w -> (b s f) 1 h w").to(device)
            latents.append(vae.encode(frames).latent_dist.mode().float().cpu())
        vae.train(was_training)
        all_latents = torch.cat(latents)
        return {"scaling_factor": scaling_factor_of(all_latents), "latent_mean": float(all_latents.mean()),
                "latent_std": float(all_latents.std()), "n_frames": int(all_latents.shape[0])}

    def export(self, model, run_dir):
        vae = model.vae
        stats = self.measure_scaling(vae)
        vae.register_to_config(scaling_factor=stats["scaling_factor"])
        folder = run_dir / "vae"
        vae.save_pretrained(folder, safe_serialization=True)
        (run_dir / "vae_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        return {"vae": folder}


def _load_diffusers_weights(model: nn.Module, cls, folder: str) -> None:
    """Copy the weights of a saved diffusers model of class `cls` into `model` (``init.model``)."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise InputError(folder, f"not a saved {cls.__name__} (no config.json)")
    try:
        saved = cls.from_pretrained(path)
        model.load_state_dict(saved.state_dict())
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise InputError(folder, f"weights do not fit the configured {cls.__name__} ({err})") from None


# --- the latent diffusion model ------------------------------------------------------------------------------------

@dataclass
class DiffusionOptions:
    """Options of the ``diffusion`` task.

    Attributes:
        view: the CMR view generated.
        vae: the trained autoencoder (``VAE_RUN/vae``).
        ecg_encoder: the aligned ECG encoder: an alignment run or its ``model`` folder (ECG encoder
            plus CLIP projection), or a saved ECG encoder.
        feature_encoder: CMR encoder recorded in the pipeline folder for the Fréchet distance of
            ``cardiacnets evaluate generation`` (default: ``cmr_<view>_encoder`` beside the
            alignment model, when it exists).
        demographics: also condition on the ``data.demographics`` columns.
        condition_dropout: probability of replacing a sample's whole condition by the null condition.
        demographics_dropout: probability of hiding a sample's demographics (so that the model also
            works without them).
        prediction_type: ``epsilon`` (noise) or ``v_prediction`` (velocity).
        num_train_timesteps: diffusion steps of the noise schedule.
        beta_schedule: ``scaled_linear`` (Stable Diffusion), ``linear`` or ``squaredcos_cap_v2`` (cosine).
        beta_start: first beta (linear schedules).
        beta_end: last beta (linear schedules).
        snr_gamma: min-SNR-γ loss weighting (null: plain mean squared error).
        timestep_bias: training timesteps are drawn as ``T · u^(1 / (1 + bias))``, u uniform: 0 is
            uniform, 1 a density rising linearly towards pure noise, where the global layout (and
            so the cavity size the ECG predicts) is decided.
        condition_indices: manifest columns of CMR indices (e.g. ``lvedv_ml``) that a frozen ridge
            read-out of the pooled ECG embedding predicts for the global condition (see
            `CineDenoiser`); fitted on the training split when the model is built (empty: none).
        index_ridge: ridge penalties searched for that read-out, per training subject (the penalty on
            the Gram matrix of the standardised features is this times the number of subjects); the
            leave-one-out error on the training split picks one per index.
        index_features: the read-out's inputs (`cardiacnets.generation.denoiser.INDEX_FEATURES`:
            ``embedding``, ``token_mean``, ``demographics``, ``demographic_products``,
            ``embedding_x_demographics``; null: the embedding, and the standardised demographics
            (0 where missing) with ``demographics``).
        index_spread: the spread of the read-out's estimates. ``ridge``: the ridge estimate itself,
            the conditional mean, shrunk towards the training average (its standard deviation over
            the training subjects is about r × the index's). ``training``: the estimate stretched
            about the training mean (weights and bias times 1 / that standard deviation, recorded
            as ``spread_scale``) so that it spreads over the training subjects as the index does:
            the generated cohort spans the real range of sizes instead of a narrower one, and the
            cines' size differences stand out more against the sampling noise (a higher r with the
            truth, a larger absolute error: the estimate's mean squared error, in SDs, goes from
            1 − r² to 2(1 − r)). The denoiser trains on each cine's own indices (``index_teacher``),
            whose spread this matches.
        index_teacher: probability that a training sample's global condition carries its own cine's
            indices (standardised ``condition_indices`` of the manifest) instead of the read-out's
            estimate. A denoiser trained on the read-out learns p(cine | estimate), whose samples
            scatter around the estimate by the estimate's error (no better than retrieving a
            subject with that estimate); trained on the true indices, it draws the cine the estimate
            describes, so at generation (always the read-out) the cine follows the estimate itself,
            as unCLIP's decoder follows its prior. 0 trains on the read-out only.
        index_source: where the training values of ``condition_indices`` come from: ``manifest``
            (the tabular phenotypes, e.g. whole-heart volumes) or ``segmentation`` (measured on the
            training set's stored segmentation of the view, ``seg_<view>``, as ``cardiacnets
            evaluate generation`` measures cines: what the stored slices show; names among
            ``lvedv_ml``, ``lvesv_ml``, ``lvsv_ml``, ``lvef_pct``, ``lvm_g``, ``rvedv_ml``,
            ``rvesv_ml``, ``rvsv_ml``, ``rvef_pct``).
        cache_dir: keep the latents and ECG conditions here between runs (null: in memory only).
        cache_batch_size: subjects encoded per pass when caching.
        export_precision: the exported pipeline's default precision (``fp32`` or ``bf16``).
    """

    view: str = "sa"
    vae: str = ""
    ecg_encoder: str = ""
    feature_encoder: str | None = None
    demographics: bool = False
    condition_dropout: float = 0.1
    demographics_dropout: float = 0.5
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: Literal["scaled_linear", "linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    snr_gamma: float | None = 5.0
    timestep_bias: float = 0.0
    condition_indices: list[str] = field(default_factory=list)
    index_ridge: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0])
    index_features: list[str] | None = None
    index_spread: Literal["ridge", "training"] = "ridge"
    index_teacher: float = 0.0
    index_source: Literal["manifest", "segmentation"] = "manifest"
    cache_dir: str | None = None
    cache_batch_size: int = 64
    export_precision: Literal["fp32", "bf16"] = "fp32"

    def validate(self) -> None:
        check_view(self.view)
        if not self.vae or not self.ecg_encoder:
            raise ConfigError("task diffusion needs options.vae (a trained autoencoder, VAE_RUN/vae) and "
                              "options.ecg_encoder (an alignment run or saved ECG encoder)")
        if self.index_spread not in ("ridge", "training"):
            raise ConfigError(f"options.index_spread must be 'ridge' or 'training', got {self.index_spread!r}")
        if not 0.0 <= self.index_teacher <= 1.0:
            raise ConfigError(f"options.index_teacher must be in [0, 1], got {self.index_teacher}")
        if self.index_teacher > 0 and not self.condition_indices:
            raise ConfigError("options.index_teacher needs options.condition_indices")
        for name in ("condition_dropout", "demographics_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"options.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.num_train_timesteps < 2 or self.cache_batch_size < 1:
            raise ConfigError("options.num_train_timesteps must be at least 2 and cache_batch_size at least 1")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(f"options: need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ConfigError(f"options.snr_gamma must be positive or null, got {self.snr_gamma}")
        if self.timestep_bias < 0:
            raise ConfigError(f"options.timestep_bias must be non-negative, got {self.timestep_bias}")
        if not self.index_ridge or min(self.index_ridge) <= 0:
            raise ConfigError(f"options.index_ridge must list positive penalties, got {self.index_ridge}")
        if len(set(self.condition_indices)) != len(self.condition_indices):
            raise ConfigError(f"options.condition_indices lists a column twice: {self.condition_indices}")


@dataclass
class LatentCache:
    """The frozen encoders' outputs for one split, row by subject.

    Attributes:
        subject_ids: subject of each row.
        latents: (N, C, frames, h, w) scaled cine latents.
        tokens: (N, T', width) ECG encoder tokens.
        embedding: (N, embed_dim) pooled aligned ECG embeddings.
        seconds: time taken to build (or read) it.
    """

    subject_ids: list[str]
    latents: torch.Tensor
    tokens: torch.Tensor
    embedding: torch.Tensor
    seconds: float = 0.0

    def __post_init__(self):
        self.row_of = {s: i for i, s in enumerate(self.subject_ids)}

    def rows(self, subject_ids, where: str) -> torch.Tensor:
        """Rows of `subject_ids` (raises `InputError` naming `where` for an unknown subject)."""
        missing = [s for s in subject_ids if s not in self.row_of]
        if missing:
            raise InputError(where, f"subject(s) {missing[:3]} are not in the latent cache of the split")
        return torch.tensor([self.row_of[s] for s in subject_ids])


def sample_timesteps(n: int, num_train_timesteps: int, bias: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Training timesteps ``floor(T · u^(1 / (1 + bias)))``, u ~ U[0, 1) (bias 0: uniform over 0..T-1)."""
    if bias == 0:
        return torch.randint(0, num_train_timesteps, (n,), generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (num_train_timesteps * u ** (1.0 / (1.0 + bias))).long().clamp(max=num_train_timesteps - 1)


def noise_scheduler_from(options: DiffusionOptions):
    """The ``DDPMScheduler`` of the training noise schedule (also the pipeline's ``scheduler``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=options.num_train_timesteps, beta_schedule=options.beta_schedule,
                         beta_start=options.beta_start, beta_end=options.beta_end,
                         prediction_type=options.prediction_type, clip_sample=False)


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


@register_task
class DiffusionTask(Task):
    """Train the ECG-conditioned cine denoiser in the autoencoder's latent space (see the module docstring)."""

    name = "diffusion"
    options_class = DiffusionOptions
    default_model = "cine_unet3d_demo"

    def __init__(self, config):
        super().__init__(config)
        from diffusers import AutoencoderKL

        from cardiacnets.generation.conditioning import ECGConditionEncoder

        o = self.options
        self.vae = load_vae(o.vae)
        self.condition_encoder = ECGConditionEncoder.from_saved(o.ecg_encoder)
        self.noise_scheduler = noise_scheduler_from(o)
        self.caches: dict[str, LatentCache] = {}
        self._index_targets: torch.Tensor | None = None
        self._index_data = None  # see `_index_columns`
        self.index_fit: dict[str, dict] | None = None  # the read-out's standardisation and fit, per index
        self.data_info = self._data_info()

    # --- data ------------------------------------------------------------------------------------------------------
    def views(self) -> list[str]:
        return []  # the cines come from the latent cache, not from the batches

    def required_modalities(self) -> list[str]:
        return ["ecg", self.options.view]

    def _data_info(self) -> dict:
        import yaml

        path = Path(self.config.data.path) / "dataset.yaml"
        if not path.is_file():
            raise InputError(self.config.data.path, "not a cardiacnets training set (no dataset.yaml)")
        info = yaml.safe_load(path.read_text()) or {}
        shapes = {a["name"]: a["row_shape"] for a in info.get("arrays", [])}
        key = f"cmr_{self.options.view}"
        if key not in shapes:
            raise InputError(path, f"the training set has no {self.options.view} cines ({key})")
        return {"config": info.get("config", {}), "cine_shape": shapes[key]}

    # --- model -----------------------------------------------------------------------------------------------------
    def model_overrides(self) -> dict:
        """The configured overrides, completed with the shapes the data and the frozen encoders fix."""
        _, frames, height, _ = self.data_info["cine_shape"]
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        derived = {"latent_channels": int(self.vae.config.latent_channels), "num_frames": int(frames),
                   "latent_size": int(height) // factor, "ecg_token_dim": self.condition_encoder.token_dim,
                   "ecg_embed_dim": self.condition_encoder.embed_dim,
                   "n_demographics": len(self.config.data.demographics) if self.options.demographics else 0,
                   "n_condition_indices": len(self.options.condition_indices)}
        if self.options.index_features is not None:
            derived["index_features"] = list(self.options.index_features)
        overrides = dict(self.config.model.overrides)
        for key, value in derived.items():
            if key in overrides and overrides[key] != value:
                raise ConfigError(f"model.overrides.{key}={overrides[key]!r} contradicts the data and encoders "
                                  f"({key} = {value}); leave it out")
            overrides[key] = value
        return overrides

    def build_model(self) -> nn.Module:
        from cardiacnets.generation.denoiser import CineDenoiser
        from cardiacnets.models import create_model

        model = create_model(self.model_name, **self.model_overrides())
        if not isinstance(model, CineDenoiser):
            raise ConfigError(f"task diffusion trains a CineDenoiser; model {self.model_name!r} is a "
                              f"{type(model).__name__}")
        if self.config.init.model is not None:
            _load_diffusers_weights(model, CineDenoiser, self.config.init.model)
        if self.options.condition_indices:
            # The read-out is a closed-form fit on this training set, also when fine-tuning from init.model:
            # the teacher values and the exported pipeline's index units are this set's statistics, and a
            # read-out carried over from another set would speak in that set's.
            model.set_index_projection(*self.fit_index_projection(model.index_feature_names))
        self.init_encoders(model)
        return model

    def _index_table(self):
        """(file the indices come from, training cache, its index table by subject, demographics features or None)."""
        import pandas as pd

        from cardiacnets.data.torch_data import DemographicsNormalizer

        c, o = self.config, self.options
        manifest_path = Path(c.data.path) / "manifest.csv"
        manifest = pd.read_csv(manifest_path, dtype={"subject_id": str})
        cache = self.cache(c.data.train_split, torch.device("cpu"))
        rows = manifest.set_index("subject_id").reindex(cache.subject_ids)
        source = manifest_path
        if o.index_source == "segmentation":
            table = self._segmentation_indices(rows)
            source = Path(c.data.path) / f"seg_{o.view}.npy"
        else:
            missing = [col for col in o.condition_indices if col not in manifest.columns]
            if missing:
                raise InputError(manifest_path, f"options.condition_indices: no column(s) {missing}")
            table = rows
        demographics = None
        if o.demographics:
            train = manifest[manifest["split"] == c.data.train_split]
            normalizer = DemographicsNormalizer.fit(train, c.data.demographics, manifest_path)
            raw = rows[list(c.data.demographics)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
            demographics = np.stack([normalizer.transform(row)[0] for row in raw]).astype(np.float64)
        return source, cache, table, demographics

    def _segmentation_indices(self, rows):
        """`cavity_measurements` of the stored segmentations of the subjects of the manifest `rows`
        (indexed by subject; NaN rows where there is none)."""
        import pandas as pd

        from cardiacnets.cmr.indices import DEFAULT_SLICE_SPACING_MM, INDEX_COLUMNS, cavity_measurements

        o = self.options
        path = Path(self.config.data.path) / f"seg_{o.view}.npy"
        if not path.is_file():
            raise InputError(path.parent, f"options.index_source=segmentation needs the stored segmentations "
                                          f"seg_{o.view}.npy")
        unknown = [col for col in o.condition_indices if col not in INDEX_COLUMNS[:9]]
        if unknown:
            raise InputError(path, f"options.condition_indices: {unknown} cannot be measured on a segmentation "
                                   f"(choose from {list(INDEX_COLUMNS[:9])})")
        spacing = (self.data_info["config"].get("cmr") or {}).get("spacing_mm")
        if not spacing:
            raise InputError(path.parent, "dataset.yaml records no cmr spacing_mm to measure segmentations with")
        has = rows.get(f"has_seg_{o.view}", pd.Series(True, index=rows.index)).fillna(False).astype(bool).to_numpy()
        seg = np.load(path, mmap_mode="r")
        measured = pd.DataFrame(np.nan, index=rows.index, columns=list(o.condition_indices))
        index = np.flatnonzero(has)
        for start in range(0, len(index), 256):
            chunk = index[start:start + 256]
            values = cavity_measurements(np.asarray(seg[rows["row"].to_numpy()[chunk].astype(int)]), float(spacing),
                                         DEFAULT_SLICE_SPACING_MM)
            measured.iloc[chunk] = values[list(o.condition_indices)].to_numpy(dtype=np.float64)
        return measured

    def _index_columns(self):
        """(source file, raw index values (N_train, k), demographics features or None, per-index statistics).

        Read once per task and shared by the read-out's fit and the teacher values. Each index is
        standardised by its mean and standard deviation over the training subjects that have it.
        """
        import pandas as pd

        if self._index_data is None:
            source, _, table, demographics = self._index_table()
            values = table[list(self.options.condition_indices)].apply(pd.to_numeric, errors="coerce") \
                .to_numpy(np.float64)
            stats = {}
            for j, col in enumerate(self.options.condition_indices):
                ok = np.isfinite(values[:, j])
                if ok.sum() < 5:
                    raise InputError(source, f"options.condition_indices: {col!r} has {int(ok.sum())} training "
                                             f"values; at least 5 are needed")
                stats[col] = {"mean": float(values[ok, j].mean()), "std": float(values[ok, j].std() or 1.0),
                              "n": int(ok.sum())}
            self._index_data = (source, values, demographics, stats)
        return self._index_data

    def index_targets(self) -> torch.Tensor:
        """(N_train, k) standardised ``condition_indices`` of the training cache's subjects (NaN where missing).

        Standardised with the read-out's training mean and standard deviation (``index_fit``).
        """
        _, values, _, stats = self._index_columns()
        if self.index_fit is None:  # no read-out fitted yet
            self.index_fit = stats
        mean = np.array([self.index_fit[col]["mean"] for col in self.options.condition_indices])
        std = np.array([self.index_fit[col]["std"] for col in self.options.condition_indices])
        return torch.as_tensor((values - mean) / std, dtype=torch.float32)

    def fit_index_projection(self, features=("embedding",)) -> tuple[torch.Tensor, torch.Tensor]:
        """Ridge read-out of the cached training conditions onto the standardised ``condition_indices``.

        The inputs are the named `index_features` of the cached tokens and embeddings (and of the
        standardised demographics), each standardised over the training split for the fit (and
        the standardisation folded into the returned map). Each index is standardised over the
        training subjects that have it (the others are left out of its fit); the penalty is chosen
        per index by the exact leave-one-out error.

        Args:
            features: the read-out's inputs (the denoiser's ``index_feature_names``).

        Returns:
            ``(weight, bias)``: (k, width of the features) and (k,) float32, predicting standardised
            values from the unstandardised features.
        """
        from cardiacnets.generation.denoiser import index_features

        o = self.options
        _, values, demographics, stats = self._index_columns()
        cache = self.cache(self.config.data.train_split, torch.device("cpu"))
        x = index_features(features, cache.tokens.double(), cache.embedding.double(),
                           None if demographics is None else torch.as_tensor(demographics)).numpy()
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        z = (x - mean) / scale
        weights, biases, self.index_fit = [], [], {}
        for j, col in enumerate(o.condition_indices):
            y, fit = values[:, j], stats[col]
            ok = np.isfinite(y)
            w, b, penalty, loo_r2 = ridge_loo(z[ok], (y[ok] - fit["mean"]) / fit["std"],
                                              [p * int(ok.sum()) for p in o.index_ridge])
            # In-sample estimates have mean 0 (the ridge intercept): stretching w and b stretches them about it.
            spread = float(np.std(z[ok] @ w + b))
            stretch = 1.0 / spread if o.index_spread == "training" and spread > 1e-8 else 1.0
            w, b = w * stretch, b * stretch
            weights.append(w / scale)
            biases.append(b - float((mean / scale) @ w))
            self.index_fit[col] = {"mean": fit["mean"], "std": fit["std"], "penalty": penalty / int(ok.sum()),
                                   "loo_r2": round(loo_r2, 4), "estimate_sd": round(spread, 4),
                                   "spread_scale": round(stretch, 4), "n": fit["n"]}
        return (torch.as_tensor(np.stack(weights), dtype=torch.float32),
                torch.as_tensor(np.array(biases), dtype=torch.float32))

    # --- the latent cache ------------------------------------------------------------------------------------------
    def cache(self, split: str, device: torch.device) -> LatentCache:
        """The latents and ECG conditions of every subject of `split` (built on first use)."""
        if split not in self.caches:
            self.caches[split] = self._load_or_build_cache(split, device)
        cache = self.caches[split]
        if cache.latents.device != device:
            cache.latents, cache.tokens, cache.embedding = (x.to(device) for x in
                                                            (cache.latents, cache.tokens, cache.embedding))
        return cache

    def _cache_key(self, split: str) -> dict:
        def resolved(path: str) -> str:
            return str(Path(path).resolve())

        return {"data": resolved(self.config.data.path), "split": split, "vae": resolved(self.options.vae),
                "ecg_encoder": resolved(self.options.ecg_encoder), "view": self.options.view,
                "scaling_factor": float(self.vae.config.scaling_factor)}

    def _load_or_build_cache(self, split: str, device: torch.device) -> LatentCache:
        started = time.perf_counter()
        folder = Path(self.options.cache_dir) if self.options.cache_dir else None
        key = self._cache_key(split)
        if folder is not None and (folder / f"{split}.json").is_file():
            meta = json.loads((folder / f"{split}.json").read_text())
            if meta.get("key") == key:
                from safetensors.torch import load_file

                tensors = load_file(str(folder / f"{split}.safetensors"))
                return LatentCache(meta["subject_ids"], tensors["latents"], tensors["tokens"], tensors["embedding"],
                                   time.perf_counter() - started)
        cache = self._build_cache(split, device)
        cache.seconds = time.perf_counter() - started
        if folder is not None:
            from safetensors.torch import save_file

            folder.mkdir(parents=True, exist_ok=True)
            save_file({"latents": cache.latents.cpu().contiguous(), "tokens": cache.tokens.cpu().contiguous(),
                       "embedding": cache.embedding.cpu().contiguous()}, str(folder / f"{split}.safetensors"))
            (folder / f"{split}.json").write_text(json.dumps({"key": key, "subject_ids": cache.subject_ids}) + "\n")
        return cache

    @torch.no_grad()
    def _build_cache(self, split: str, device: torch.device) -> LatentCache:
        from cardiacnets.data.store import TrainingSet
        from cardiacnets.generation.vae import encode_cines

        c, view = self.config, self.options.view
        require = self.required_modalities() if c.data.require is None else c.data.require
        data = TrainingSet(c.data.path, split=split, require=tuple(require))
        if len(data) == 0:
            raise InputError(c.data.path, f"no subjects in split {split!r} to encode")
        vae, encoder = self.vae.to(device), self.condition_encoder.to(device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.mixed_precision == "bf16")
        ids, latents, tokens, embeddings = [], [], [], []
        for start in range(0, len(data), self.options.cache_batch_size):
            samples = [data[i] for i in range(start, min(len(data), start + self.options.cache_batch_size))]
            cines = torch.from_numpy(np.stack([s[f"cmr_{view}"] for s in samples])).to(device)
            ecg = torch.from_numpy(np.stack([s["ecg"] for s in samples])).to(device)
            lead_mask = torch.from_numpy(np.stack([s["ecg_lead_mask"] for s in samples])).to(device)
            with autocast:
                latents.append(encode_cines(vae, _middle_slice(cines)).float())
            condition = encoder(ecg, lead_mask)  # float32: the condition is the model's input at inference too
            tokens.append(condition.tokens)
            embeddings.append(condition.embedding)
            ids += [s["subject_id"] for s in samples]
        return LatentCache(ids, torch.cat(latents), torch.cat(tokens), torch.cat(embeddings))

    # --- steps -----------------------------------------------------------------------------------------------------
    def _inputs(self, batch: dict, split: str, generator: torch.Generator | None):
        """Noisy latents, timesteps, target, loss weights and condition of a batch."""
        device = batch["ecg"].device
        cache = self.cache(split, device)
        rows = cache.rows(batch["subject_id"], self.config.data.path).to(device)
        clean = cache.latents[rows]
        n = clean.shape[0]
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = sample_timesteps(n, self.options.num_train_timesteps, self.options.timestep_bias,
                                     generator).to(device)
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        if self.options.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_scheduler.get_velocity(clean, noise, timesteps)
        weights = min_snr_weights(self.noise_scheduler, timesteps, self.options.snr_gamma,
                                  self.options.prediction_type)
        demographics = mask = None
        if self.options.demographics:
            demographics, mask = batch["demographics"], batch["demographics_mask"].clone()
            if generator is not None and self.options.demographics_dropout > 0:
                mask &= (torch.rand(n, 1, generator=generator) >= self.options.demographics_dropout).to(device)
        condition = (cache.tokens[rows], cache.embedding[rows], demographics, mask)
        index_values = None
        if generator is not None and self.options.index_teacher > 0:  # training: the cines' own indices
            if self._index_targets is None:
                self._index_targets = self.index_targets()
            index_values = self._index_targets.to(device)[rows]
            keep = (torch.rand(n, 1, generator=generator) < self.options.index_teacher).to(device)
            index_values = torch.where(keep, index_values, torch.full_like(index_values, float("nan")))
        return noisy, timesteps, target, weights, condition, index_values

    @staticmethod
    def _weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3, 4))
        return (per_sample * weights).mean()

    def training_step(self, model, batch, generator):
        noisy, timesteps, target, weights, condition, index_values = self._inputs(
            batch, self.config.data.train_split, generator)
        drop = (torch.rand(batch_size_of(batch), generator=generator) < self.options.condition_dropout)
        prediction = model(noisy, timesteps, *condition, drop_condition=drop.to(noisy.device),
                           index_values=index_values).sample
        return {"loss_diffusion": self._weighted_mse(prediction, target, weights)}

    def validation_step(self, model, batch):
        split = self.config.data.val_split
        noisy, timesteps, target, weights, condition, _ = self._inputs(batch, split, None)
        n = noisy.shape[0]
        drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(noisy.device)
        both = [torch.cat([x, x]) if x is not None else None for x in condition]
        prediction = model(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]), *both,
                           drop_condition=drop).sample
        conditional, null = prediction.chunk(2)
        ones = torch.ones_like(weights)
        return {"loss_diffusion": self._weighted_mse(conditional, target, weights),
                "mse_conditional": self._weighted_mse(conditional, target, ones),
                "mse_null": self._weighted_mse(null, target, ones)}

    # --- export ----------------------------------------------------------------------------------------------------
    def _pipeline_settings(self) -> dict:
        """View, frame interval, spacing, ECG standardisation, demographics and read-out of the training data."""
        import pandas as pd

        from cardiacnets.data.torch_data import DemographicsNormalizer

        c = self.config
        demographics = None
        if self.options.demographics:
            from dataclasses import asdict

            manifest = pd.read_csv(Path(c.data.path) / "manifest.csv", dtype={"subject_id": str})
            train = manifest[manifest["split"] == c.data.train_split]
            normalizer = DemographicsNormalizer.fit(train, c.data.demographics, Path(c.data.path) / "manifest.csv")
            demographics = {k: list(v) for k, v in asdict(normalizer).items()}
        return {**pipeline_settings(c.data.path, self.options.view, c.data.train_split),
                "demographics": demographics, "precision": self.options.export_precision,
                # a list: diffusers writes configs with sorted keys, and the order is the read-out's
                "condition_indices": [{"name": name, "mean": fit["mean"], "std": fit["std"]}
                                      for name, fit in (self.index_fit or {}).items()] or None}

    def _provenance(self, run_dir: Path) -> dict:
        o = self.options
        provenance = generation_provenance(o.ecg_encoder, o.view, o.feature_encoder, self.config.data.path, run_dir)
        return {"generator": "direct", "diffusion_run": provenance.pop("run"), "vae": str(Path(o.vae).resolve()),
                **provenance,
                "cache_seconds": {split: round(cache.seconds, 2) for split, cache in self.caches.items()},
                "condition_indices": self.index_fit}

    def export(self, model, run_dir):
        from cardiacnets.generation.pipeline import ECGToCMRPipeline

        denoiser_dir = run_dir / "denoiser"
        model.save_pretrained(denoiser_dir, safe_serialization=True)
        pipe = ECGToCMRPipeline(self.condition_encoder.to("cpu"), model.to("cpu"), self.vae.to("cpu"),
                                self.noise_scheduler, **self._pipeline_settings())
        pipeline_dir = run_dir / "pipeline"
        pipe.save_pretrained(pipeline_dir, safe_serialization=True)
        (pipeline_dir / "provenance.json").write_text(json.dumps(self._provenance(run_dir), indent=2) + "\n")
        return {"denoiser": denoiser_dir, "pipeline": pipeline_dir}
