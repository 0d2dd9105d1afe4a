"""The ``diffusion`` training stage of CardiacNets (arXiv 2411.13602): the ECG-conditioned latent cine denoiser.

Trains the cine denoiser (`CineDenoiser`) with DDPM's objective (Ho et al.,
2020) in the latent space of a trained ``vae`` (`cardiacnets.train.vae_task`):
noise a cine's latents at a random step, predict the noise or the velocity
(``prediction_type``; Salimans & Ho, 2022), optionally weighted by min-SNR-γ
(Hang et al., 2023; the maths in `cardiacnets.generation.diffusion`); the
condition (the frozen aligned ECG encoder's tokens and pooled embedding,
optionally demographics) is replaced by the learned null condition with
probability ``condition_dropout`` (classifier-free guidance). Autoencoder and
ECG encoder are frozen, so the latents of every cine and the ECG condition of
every subject are computed once per split and kept in memory (optionally on
disk, ``cache_dir``; `cardiacnets.generation.latent_cache`): a training step
then runs the denoiser only. With ``condition_indices`` a frozen ridge
read-out of the ECG features (`cardiacnets.generation.index_readout`) adds CMR
index estimates to the global condition. Validation reports the loss, and the
plain mean squared error with the condition and with the null condition (their
gap shows how much the ECG informs the prediction). Exports ``RUN/denoiser``
and ``RUN/pipeline``, the `ECGToCMRPipeline` that ``cardiacnets generate`` and
``cardiacnets evaluate generation`` load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cardiacnets.cmr.indices import DEFAULT_SLICE_SPACING_MM, INDEX_COLUMNS, cavity_measurements
from cardiacnets.data.store import DATASET_YAML, TrainingSet, read_dataset_info
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.generation.conditioning import ECGConditionEncoder
from cardiacnets.generation.denoiser import CineDenoiser, index_features
from cardiacnets.generation.diffusion import (
    min_snr_weights, noise_scheduler_from, sample_timesteps, training_target,
)
from cardiacnets.generation.index_readout import fit_index_projection, index_statistics, standardized_indices
from cardiacnets.generation.latent_cache import LatentCache, build_latent_cache, load_or_build_latent_cache
from cardiacnets.generation.pipeline import ECGToCMRPipeline
from cardiacnets.train.generation_common import (
    check_view, generation_provenance, load_diffusers_weights, load_vae, pipeline_settings,
)
from cardiacnets.train.tasks import Task, batch_size_of, register_task


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


@register_task
class DiffusionTask(Task):
    """Train the ECG-conditioned cine denoiser in the autoencoder's latent space (see the module docstring)."""

    name = "diffusion"
    options_class = DiffusionOptions
    default_model = "cine_unet3d_demo"

    def __init__(self, config):
        super().__init__(config)
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
        info = read_dataset_info(self.config.data.path)
        shapes = {a["name"]: a["row_shape"] for a in info.get("arrays", [])}
        key = f"cmr_{self.options.view}"
        if key not in shapes:
            raise InputError(Path(self.config.data.path) / DATASET_YAML,
                             f"the training set has no {self.options.view} cines ({key})")
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
        from cardiacnets.models import create_model

        model = create_model(self.model_name, **self.model_overrides())
        if not isinstance(model, CineDenoiser):
            raise ConfigError(f"task diffusion trains a CineDenoiser; model {self.model_name!r} is a "
                              f"{type(model).__name__}")
        if self.config.init.model is not None:
            load_diffusers_weights(model, CineDenoiser, self.config.init.model)
        if self.options.condition_indices:
            # The read-out is a closed-form fit on this training set, also when fine-tuning from init.model:
            # the teacher values and the exported pipeline's index units are this set's statistics, and a
            # read-out carried over from another set would speak in that set's.
            model.set_index_projection(*self.fit_index_projection(model.index_feature_names))
        self.init_encoders(model)
        return model

    def _index_table(self):
        """(file the indices come from, training cache, its index table by subject, demographics features or None).

        The demographics are standardised by the normaliser the training loop fitted (`Task.demographics`).
        """
        import pandas as pd

        c, o = self.config, self.options
        data = TrainingSet(c.data.path)
        manifest, manifest_path = data.manifest, data.manifest_path
        cache = self.cache(c.data.train_split, torch.device("cpu"))
        rows = manifest.set_index("subject_id").reindex(cache.subject_ids)
        source = manifest_path
        if o.index_source == "segmentation":
            table = self._segmentation_indices(data, rows)
            source = Path(c.data.path) / f"seg_{o.view}.npy"
        else:
            missing = [col for col in o.condition_indices if col not in manifest.columns]
            if missing:
                raise InputError(manifest_path, f"options.condition_indices: no column(s) {missing}")
            table = rows
        demographics = None
        if o.demographics and self.demographics is not None:
            raw = rows[list(self.demographics.columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
            demographics = np.stack([self.demographics.transform(row)[0] for row in raw]).astype(np.float64)
        return source, cache, table, demographics

    def _segmentation_indices(self, data: TrainingSet, rows):
        """`cavity_measurements` of the stored segmentations of the subjects of the manifest `rows`
        (indexed by subject; NaN rows where there is none)."""
        import pandas as pd

        o = self.options
        path = Path(self.config.data.path) / f"seg_{o.view}.npy"
        if data.row_shape(f"seg_{o.view}") is None:
            raise InputError(path.parent, f"options.index_source=segmentation needs the stored segmentations "
                                          f"seg_{o.view}.npy")
        unknown = [col for col in o.condition_indices if col not in INDEX_COLUMNS[:9]]
        if unknown:
            raise InputError(path, f"options.condition_indices: {unknown} cannot be measured on a segmentation "
                                   f"(choose from {list(INDEX_COLUMNS[:9])})")
        spacing = (data.config.get("cmr") or {}).get("spacing_mm")
        if not spacing:
            raise InputError(path.parent, "dataset.yaml records no cmr spacing_mm to measure segmentations with")
        has = rows.get(f"has_seg_{o.view}", pd.Series(True, index=rows.index)).fillna(False).astype(bool).to_numpy()
        position = pd.Series(np.arange(len(data.manifest)), index=data.manifest["subject_id"]).reindex(rows.index)
        measured = pd.DataFrame(np.nan, index=rows.index, columns=list(o.condition_indices))
        index = np.flatnonzero(has)
        for start in range(0, len(index), 256):
            chunk = index[start:start + 256]
            labels = data.segmentations(o.view, position.to_numpy()[chunk].astype(int))
            values = cavity_measurements(labels, float(spacing), DEFAULT_SLICE_SPACING_MM)
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
            stats = index_statistics(values, self.options.condition_indices, source)
            self._index_data = (source, values, demographics, stats)
        return self._index_data

    def index_targets(self) -> torch.Tensor:
        """(N_train, k) standardised ``condition_indices`` of the training cache's subjects (NaN where missing).

        Standardised with the read-out's training mean and standard deviation (``index_fit``).
        """
        _, values, _, stats = self._index_columns()
        if self.index_fit is None:  # no read-out fitted yet
            self.index_fit = stats
        return standardized_indices(values, self.index_fit, self.options.condition_indices)

    def fit_index_projection(self, features=("embedding",)) -> tuple[torch.Tensor, torch.Tensor]:
        """Ridge read-out of the cached training conditions onto the standardised ``condition_indices``.

        The inputs are the named `index_features` of the cached tokens and embeddings (and of the
        standardised demographics); the fit is `cardiacnets.generation.index_readout.fit_index_projection`,
        recorded in ``index_fit``.

        Args:
            features: the read-out's inputs (the denoiser's ``index_feature_names``).

        Returns:
            ``(weight, bias)``: (k, width of the features) and (k,) float32, predicting standardised
            values from the unstandardised features.
        """
        o = self.options
        _, values, demographics, stats = self._index_columns()
        cache = self.cache(self.config.data.train_split, torch.device("cpu"))
        x = index_features(features, cache.tokens.double(), cache.embedding.double(),
                           None if demographics is None else torch.as_tensor(demographics)).numpy()
        weight, bias, self.index_fit = fit_index_projection(x, values, stats, o.condition_indices, o.index_ridge,
                                                            o.index_spread)
        return weight, bias

    # --- the latent cache ------------------------------------------------------------------------------------------
    def cache(self, split: str, device: torch.device) -> LatentCache:
        """The latents and ECG conditions of every subject of `split` (built on first use; `cardiacnets.generation.latent_cache`)."""
        if split not in self.caches:
            self.caches[split] = load_or_build_latent_cache(self._cache_key(split), self.options.cache_dir, split,
                                                            lambda: self._build_cache(split, device))
        return self.caches[split].to(device)

    def _cache_key(self, split: str) -> dict:
        def resolved(path: str) -> str:
            return str(Path(path).resolve())

        return {"data": resolved(self.config.data.path), "split": split, "vae": resolved(self.options.vae),
                "ecg_encoder": resolved(self.options.ecg_encoder), "view": self.options.view,
                "scaling_factor": float(self.vae.config.scaling_factor)}

    def _build_cache(self, split: str, device: torch.device) -> LatentCache:
        c = self.config
        require = self.required_modalities() if c.data.require is None else c.data.require
        data = TrainingSet(c.data.path, split=split, require=tuple(require))
        return build_latent_cache(data, self.options.view, self.vae, self.condition_encoder, device,
                                  self.options.cache_batch_size, bf16=c.mixed_precision == "bf16")

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
        target = training_target(self.noise_scheduler, clean, noise, timesteps)
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
        """View, frame interval, spacing, ECG standardisation, demographics and read-out of the training data.

        The demographics normaliser is the one the training loop fitted and the denoiser trained with.
        """
        c = self.config
        demographics = None
        if self.options.demographics and self.demographics is not None:
            demographics = self.demographics.to_config()
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
        denoiser_dir = run_dir / "denoiser"
        model.save_pretrained(denoiser_dir, safe_serialization=True)
        pipe = ECGToCMRPipeline(self.condition_encoder.to("cpu"), model.to("cpu"), self.vae.to("cpu"),
                                self.noise_scheduler, **self._pipeline_settings())
        pipeline_dir = run_dir / "pipeline"
        pipe.save_pretrained(pipeline_dir, safe_serialization=True)
        (pipeline_dir / "provenance.json").write_text(json.dumps(self._provenance(run_dir), indent=2) + "\n")
        return {"denoiser": denoiser_dir, "pipeline": pipeline_dir}
