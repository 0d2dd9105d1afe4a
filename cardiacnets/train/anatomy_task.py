"""The ``anatomy`` training stage of the anatomy-first generator (`cardiacnets.generation.anatomy_pipeline`).

The shape model, the ECG read-out and the anatomy prior, then the whole
pipeline. Before training it (1) fits the `ShapeModel` to the training
segmentations (closed form) and encodes every subject's label cine; (2)
encodes every ECG once with the frozen aligned encoder; (3) fits the
`ConditionReadout` onto the CMR indices measured on the segmentations, by
ridge regression, with and without the device measurements; the training
subjects' conditions are **cross-fitted** (each subject's estimate comes from a
fit on the other folds), so the prior learns how far the anatomy scatters
around an estimate as it will at generation, not around an in-sample fit. The
demographics are standardised by the normaliser the training loop fitted on
the training split (`Task.demographics`). The training step is DDPM's
objective on the codes with condition dropout. At export, the anatomy's
sampling settings (temperature, guidance) are chosen on the validation split by
how well the decoded anatomies' indices match the validation segmentations',
and the `AnatomyFirstPipeline` is saved with the image stage of an
``anatomy_image`` run (``options.image_model``; `cardiacnets.train.anatomy_image_task`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cardiacnets.cmr.indices import DEFAULT_SLICE_SPACING_MM, INDEX_COLUMNS, cavity_measurements
from cardiacnets.data.store import TrainingSet, read_dataset_info
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.generation.diffusion import noise_scheduler_from, training_target
from cardiacnets.generation.index_readout import index_statistics
from cardiacnets.generation.readout import nan_corr as _nan_corr
from cardiacnets.io.ukb_xml import SUMMARY_MEASUREMENTS
from cardiacnets.train.generation_common import (
    check_view, generation_provenance, load_diffusers_weights, load_vae, pipeline_settings,
)
from cardiacnets.train.tasks import Task, batch_size_of, register_task

#: Device measurements of a UK Biobank ECG XML used by the read-out (manifest columns ``ecg_<name>``).
DEFAULT_MEASUREMENTS = SUMMARY_MEASUREMENTS
#: CMR indices the read-out estimates (measured on the stored segmentations).
DEFAULT_INDICES = ("lvedv_ml", "lvesv_ml", "lvef_pct", "lvm_g", "rvedv_ml", "rvesv_ml")


@dataclass
class AnatomyOptions:
    """Options of the ``anatomy`` task.

    Attributes:
        view: the CMR view.
        ecg_encoder: the aligned ECG encoder: an alignment run or its ``model`` folder.
        image_model: an ``anatomy_image`` run (its image denoiser, scheduler and autoencoder go into
            the exported pipeline).
        feature_encoder: CMR encoder recorded for the Fréchet distance of ``evaluate generation``
            (default: ``cmr_<view>_encoder`` beside the alignment model).
        n_components: shape code size.
        grid_size: grid of the shape model's distance maps.
        truncate_px: distance truncation of the shape model.
        min_wall_px: minimum myocardial wall of decoded anatomies.
        condition_indices: CMR indices the read-out estimates (measured on the segmentations).
        readout_features: the read-out's inputs (`READOUT_FEATURES`).
        measurements: device measurements read (manifest ``ecg_<name>``; ECG-file measurement names).
        readout_ridge: ridge penalties searched per training subject (leave-one-out choice).
        readout_folds: folds of the cross-fitted training conditions.
        readout_hidden: width of the read-out's nonlinear correction (0: the ridge alone; see
            `cardiacnets.generation.readout`).
        readout_correction_steps: full-batch training steps of each correction fit.
        measurements_dropout: probability that a training condition is the read-out without
            measurements (so the prior also serves ECG files without them).
        condition_source: what the prior's training conditions hold. ``teacher``: each training
            cine's own (standardised) indices plus ``teacher_noise``, so the prior learns the anatomy
            of given indices and, at generation, draws the anatomy of the read-out's estimate (perturbed
            by the temperature × the read-out's residual scatter): the anatomy follows the estimate
            instead of scattering around it (as unCLIP's decoder follows its prior). ``cross_fitted``:
            the cross-fitted read-out estimates (the prior learns p(anatomy | estimate) itself).
        teacher_noise: standard deviation (standardised units) of the noise added to the teacher indices.
        condition_dropout: probability of the null condition (classifier-free guidance).
        prediction_type, num_train_timesteps, beta_schedule: the prior's noise schedule.
        temperatures, guidance_scales, shape_temperatures: sampling settings searched on the validation
            split at export (see `select_sampling`; the chosen ones become the pipeline's defaults).
        selection_indices: indices whose r the selection averages.
        selection_tolerance: how far below the best mean r a setting may score and still be chosen for
            a sampled anatomy distribution closer to the validation split's (see `select_sampling`).
        selection_steps: sampler steps used in the selection.
        export_precision: the exported pipeline's default precision of the image stage.
    """

    view: str = "sa"
    ecg_encoder: str = ""
    image_model: str = ""
    feature_encoder: str | None = None
    n_components: int = 32
    grid_size: int = 32
    truncate_px: float = 8.0
    min_wall_px: float = 1.0
    condition_indices: list[str] = field(default_factory=lambda: list(DEFAULT_INDICES))
    readout_features: list[str] = field(default_factory=lambda: ["embedding", "token_mean", "demographics",
                                                                 "demographic_products", "measurements"])
    measurements: list[str] = field(default_factory=lambda: list(DEFAULT_MEASUREMENTS))
    readout_ridge: list[float] = field(default_factory=lambda: [1e-3, 0.01, 0.1, 1.0, 10.0, 100.0])
    readout_folds: int = 5
    readout_hidden: int = 0
    readout_correction_steps: int = 1000
    measurements_dropout: float = 0.2
    condition_source: Literal["teacher", "cross_fitted"] = "teacher"
    teacher_noise: float = 0.1
    condition_dropout: float = 0.1
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: Literal["scaled_linear", "linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    temperatures: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    guidance_scales: list[float] = field(default_factory=lambda: [1.0, 2.0])
    shape_temperatures: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    selection_tolerance: float = 0.01
    selection_indices: list[str] = field(default_factory=lambda: ["lvedv_ml", "lvef_pct", "lvm_g"])
    selection_steps: int = 25
    cache_batch_size: int = 64
    export_precision: Literal["fp32", "bf16"] = "bf16"

    def validate(self) -> None:
        from cardiacnets.generation.readout import READOUT_FEATURES

        check_view(self.view)
        if not self.ecg_encoder or not self.image_model:
            raise ConfigError("task anatomy needs options.ecg_encoder (an alignment run) and options.image_model "
                              "(an anatomy_image run)")
        unknown = [c for c in self.condition_indices if c not in INDEX_COLUMNS[:9]]
        if unknown or not self.condition_indices:
            raise ConfigError(f"options.condition_indices must be among {list(INDEX_COLUMNS[:9])}, got {unknown}")
        bad = [f for f in self.readout_features if f not in READOUT_FEATURES]
        if bad or not self.readout_features:
            raise ConfigError(f"options.readout_features must be among {list(READOUT_FEATURES)}, got {bad}")
        if "measurements" in self.readout_features and not self.measurements:
            raise ConfigError("options.readout_features has 'measurements' but options.measurements is empty")
        if self.condition_source not in ("teacher", "cross_fitted"):
            raise ConfigError(f"options.condition_source must be 'teacher' or 'cross_fitted', got "
                              f"{self.condition_source!r}")
        if self.teacher_noise < 0:
            raise ConfigError(f"options.teacher_noise must be non-negative, got {self.teacher_noise}")
        if self.readout_hidden < 0 or self.readout_correction_steps < 1:
            raise ConfigError(f"options.readout_hidden must be non-negative and options.readout_correction_steps "
                              f"positive, got {self.readout_hidden} and {self.readout_correction_steps}")
        if self.readout_folds < 2:
            raise ConfigError(f"options.readout_folds must be at least 2, got {self.readout_folds}")
        for name in ("measurements_dropout", "condition_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"options.{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("temperatures", "guidance_scales", "shape_temperatures"):
            values = getattr(self, name)
            if not values or min(values) < 0:
                raise ConfigError(f"options.{name} must list non-negative values, got {values}")
        if self.selection_tolerance < 0:
            raise ConfigError(f"options.selection_tolerance must be non-negative, got {self.selection_tolerance}")
        if not self.readout_ridge or min(self.readout_ridge) <= 0:
            raise ConfigError(f"options.readout_ridge must list positive penalties, got {self.readout_ridge}")
        if self.n_components < 1 or self.selection_steps < 1 or self.cache_batch_size < 1:
            raise ConfigError("options.n_components, selection_steps and cache_batch_size must be at least 1")


@dataclass
class SplitTable:
    """Everything the anatomy task needs of one split, row by subject.

    Attributes:
        subject_ids: subject of each row.
        labels: (N, slices, frames, H, W) uint8 label cines.
        embedding: (N, embed_dim) aligned ECG embeddings; token_mean: (N, token_dim) mean ECG tokens.
        demographics: (N, n) raw demographics (NaN where missing).
        measurements: (N, m) raw device measurements (NaN where missing).
        indices: (N, k) the `condition_indices` measured on the label cines.
    """

    subject_ids: list[str]
    labels: np.ndarray
    embedding: torch.Tensor
    token_mean: torch.Tensor
    demographics: np.ndarray
    measurements: np.ndarray
    indices: np.ndarray

    def __post_init__(self):
        self.row_of = {s: i for i, s in enumerate(self.subject_ids)}

    def rows(self, subject_ids, where) -> torch.Tensor:
        missing = [s for s in subject_ids if s not in self.row_of]
        if missing:
            raise InputError(where, f"subject(s) {missing[:3]} are not in the anatomy task's tables")
        return torch.tensor([self.row_of[s] for s in subject_ids])


def _measurement_normaliser(values: np.ndarray, columns, source) -> dict:
    """``{"columns", "mean", "std"}`` of the device measurements over the training split's finite values.

    (The demographics use the run's normaliser, `Task.demographics`; the measurements have none of their own.)
    """
    means, stds = [], []
    for j, column in enumerate(columns):
        ok = np.isfinite(values[:, j])
        if ok.sum() < 2:
            raise InputError(source, f"column {column!r} has fewer than 2 values in the training split")
        means.append(float(values[ok, j].mean()))
        stds.append(float(values[ok, j].std()) or 1.0)
    return {"columns": list(columns), "mean": means, "std": stds}


@register_task
class AnatomyTask(Task):
    """Fit the shape model and read-out and train the anatomy prior (see the module docstring)."""

    name = "anatomy"
    options_class = AnatomyOptions
    default_model = "anatomy_prior_demo"

    def __init__(self, config):
        super().__init__(config)
        from cardiacnets.generation.conditioning import ECGConditionEncoder

        o = self.options
        image_run = Path(o.image_model)
        if not (image_run / "image_denoiser" / "config.json").is_file():
            raise InputError(image_run, "not an anatomy_image run (no image_denoiser/)")
        self.condition_encoder = ECGConditionEncoder.from_saved(o.ecg_encoder)
        self.noise_scheduler = noise_scheduler_from(o)
        self.data_info = read_dataset_info(config.data.path)
        self.tables: dict[str, SplitTable] = {}
        self.shape_model = None
        self.shape_report: dict = {}
        self.readout = None
        self.readout_report: dict = {}
        self.train_conditions: dict[str, torch.Tensor] = {}  # "full" / "waveform" cross-fitted (N, C)
        self.codes: dict[str, torch.Tensor] = {}
        self.selection: dict = {}
        self.seconds: dict[str, float] = {}

    # --- data ------------------------------------------------------------------------------------------------------
    def views(self) -> list[str]:
        return []  # the loop's batches only name the subjects; the task holds their tables

    def required_modalities(self) -> list[str]:
        return ["ecg", self.options.view]

    def _measurement_columns(self) -> list[str]:
        return list(self.options.measurements) if "measurements" in self.options.readout_features else []

    @torch.no_grad()
    def table(self, split: str) -> SplitTable:
        """The `SplitTable` of a split (built on first use)."""
        if split in self.tables:
            return self.tables[split]

        started = time.perf_counter()
        c, o = self.config, self.options
        data = TrainingSet(c.data.path, split=split, require=("ecg", o.view))
        if data.row_shape(f"seg_{o.view}") is None:
            raise InputError(c.data.path, f"task anatomy needs the stored segmentations (seg_{o.view}.npy)")
        if len(data) == 0:
            raise InputError(c.data.path, f"no subjects with an ECG and a {o.view} cine in split {split!r}")
        manifest = data.manifest
        rows = manifest["row"].to_numpy().astype(int)
        labels = data.segmentations(o.view, np.arange(len(data)))
        embedding, token_mean = [], []
        encoder = self.condition_encoder.to("cpu")
        for start in range(0, len(data), o.cache_batch_size):
            chunk = rows[start:start + o.cache_batch_size]
            ecg = torch.from_numpy(np.asarray(data.arrays["ecg"][chunk], dtype=np.float32))
            lead_mask = torch.from_numpy(np.asarray(data.arrays["ecg_lead_mask"][chunk], dtype=bool))
            condition = encoder(ecg, lead_mask)
            embedding.append(condition.embedding.float())
            token_mean.append(condition.tokens.float().mean(dim=1))

        def numeric(columns) -> np.ndarray:
            missing = [col for col in columns if col not in manifest.columns]
            if missing:
                raise InputError(Path(c.data.path) / "manifest.csv", f"no column(s) {missing}")
            return manifest[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64) \
                if columns else np.zeros((len(manifest), 0))

        measured = cavity_measurements(labels, self._spacing_mm(), DEFAULT_SLICE_SPACING_MM)
        table = SplitTable(
            subject_ids=manifest["subject_id"].astype(str).tolist(), labels=labels,
            embedding=torch.cat(embedding), token_mean=torch.cat(token_mean),
            demographics=numeric(c.data.demographics),
            measurements=numeric([f"ecg_{m}" for m in self._measurement_columns()]),
            indices=measured[list(o.condition_indices)].to_numpy(np.float64))
        self.tables[split] = table
        self.seconds[f"table_{split}"] = round(time.perf_counter() - started, 2)
        return table

    # --- fits before training ----------------------------------------------------------------------------------------
    def fit_shape_model(self) -> None:
        """Fit the shape model on the training label cines; report its round trip on the validation split."""
        from cardiacnets.generation.shape_model import ShapeModel

        o = self.options
        started = time.perf_counter()
        train = self.table(self.config.data.train_split)
        if len(train.subject_ids) <= o.n_components:
            raise ConfigError(f"options.n_components={o.n_components} needs more training subjects with a "
                              f"segmented {o.view} cine than that; the training split of {self.config.data.path} "
                              f"has {len(train.subject_ids)} (lower options.n_components)")
        self.shape_model, fit = ShapeModel.fit(train.labels, o.n_components, o.grid_size, o.truncate_px,
                                               o.min_wall_px)
        self.codes["train"] = fit.codes
        self.shape_report = {"n_subjects": fit.n_subjects, "n_components": o.n_components,
                             "explained_variance": round(float(fit.explained_variance.sum()), 4),
                             "fit_seconds": round(time.perf_counter() - started, 2)}
        if self.config.data.val_split:
            val = self.table(self.config.data.val_split)
            self.codes["val"] = self.shape_model.encode(val.labels)
            self.shape_report["val_round_trip"] = shape_round_trip(
                self.shape_model, val.labels, self._spacing_mm())

    def _spacing_mm(self) -> float:
        """In-plane pixel size of the stored cines and segmentations (``dataset.yaml``)."""
        spacing = (self.data_info.get("config", {}).get("cmr") or {}).get("spacing_mm")
        if not spacing:
            raise InputError(self.config.data.path, "dataset.yaml records no cmr spacing_mm to measure "
                                                    "segmentations with")
        return float(spacing)

    def fit_readout(self) -> None:
        """Fit the read-out (full and waveform) on the training split; cross-fit the training conditions."""
        from cardiacnets.generation.readout import ConditionReadout, cross_fit

        c, o = self.config, self.options
        train = self.table(c.data.train_split)
        # The demographics are standardised as the loop's normaliser does (fitted once, on the training split).
        demographics = self.demographics.to_config() if self.demographics is not None else None
        measures = self._measurement_columns()
        measurements = _measurement_normaliser(train.measurements, measures, c.data.path) if measures else None
        index_stats = index_statistics(train.indices, o.condition_indices, c.data.path)
        index_mean = np.array([index_stats[name]["mean"] for name in o.condition_indices])
        index_std = np.array([index_stats[name]["std"] for name in o.condition_indices])
        readout = ConditionReadout(feature_names=tuple(o.readout_features), embed_dim=train.embedding.shape[1],
                                   token_dim=train.token_mean.shape[1], demographics=demographics,
                                   measurements=measurements, index_names=tuple(o.condition_indices),
                                   index_mean=tuple(index_mean.tolist()), index_std=tuple(index_std.tolist()),
                                   hidden_dim=o.readout_hidden)
        targets = (train.indices - index_mean) / index_std
        features = {fit: self._features(readout, train, names).numpy()
                    for fit, names in (("full", readout.config.feature_names), ("waveform", readout.waveform_names))}
        folds = np.arange(len(train.subject_ids)) % o.readout_folds
        np.random.default_rng(self.config.seed).shuffle(folds)
        inputs = self._standardised(readout, train)
        report: dict = {}
        out_of_fold = {}
        for fit, x in features.items():
            out_of_fold[fit], report[fit] = cross_fit(
                readout, fit, x, targets, folds, o.readout_ridge, inputs.get("demographics"),
                inputs.get("measurements"), o.readout_correction_steps, self.config.seed)
        self.readout = readout
        self.train_demographics = (inputs.get("demographics"), inputs.get("demographics_present"))
        # The teacher values: each cine's own indices (the full fit's cross-fitted estimate where one is missing).
        self.teacher = torch.as_tensor(np.where(np.isfinite(targets), targets, out_of_fold["full"]),
                                       dtype=torch.float32)
        for fit in ("full", "waveform"):
            flags = torch.full((len(train.subject_ids),), fit == "full", dtype=torch.bool)
            self.train_conditions[fit] = readout.condition(torch.as_tensor(out_of_fold[fit], dtype=torch.float32),
                                                           flags, inputs.get("demographics"),
                                                           inputs.get("demographics_present"))
        if c.data.val_split:
            val = self.table(c.data.val_split)
            estimates = self._estimate(val)["estimates"]
            truth = (val.indices - index_mean) / index_std
            report["val_r"] = {name: round(_nan_corr(estimates[:, j].numpy(), truth[:, j]), 4)
                               for j, name in enumerate(o.condition_indices)}
        self.readout_report = report

    def _standardised(self, readout, table: SplitTable) -> dict[str, torch.Tensor]:
        c = self.config
        demographics = {col: table.demographics[:, j] for j, col in enumerate(c.data.demographics)}
        measurements = {col: table.measurements[:, j] for j, col in enumerate(self._measurement_columns())}
        return readout.inputs(len(table.subject_ids), demographics, measurements)

    def _features(self, readout, table: SplitTable, names) -> torch.Tensor:
        inputs = self._standardised(readout, table)
        return readout.features(names, table.embedding.double(), table.token_mean.double()[:, None, :],
                                inputs.get("demographics"), inputs.get("measurements")).double()

    def _estimate(self, table: SplitTable) -> dict[str, torch.Tensor]:
        """The exported read-out of a split, as `AnatomyFirstPipeline.read_out` returns it."""
        inputs = self._standardised(self.readout, table)
        estimates, full = self.readout.estimate(table.embedding, table.token_mean[:, None, :],
                                                inputs.get("demographics"), inputs.get("measurements"),
                                                inputs.get("measurements_present"))
        read = {"estimates": estimates, "full": full}
        if "demographics" in inputs:
            read.update(demographics=inputs["demographics"], demographics_present=inputs["demographics_present"])
        return read

    # --- model -----------------------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from cardiacnets.generation.anatomy_prior import AnatomyDenoiser
        from cardiacnets.models import create_model

        if self.shape_model is None:
            self.fit_shape_model()
        if self.readout is None:
            self.fit_readout()
        derived = {"code_dim": self.shape_model.code_dim, "condition_dim": self.readout.condition_dim}
        overrides = dict(self.config.model.overrides)
        for key, value in derived.items():
            if key in overrides and overrides[key] != value:
                raise ConfigError(f"model.overrides.{key}={overrides[key]!r} contradicts the shape model and "
                                  f"read-out ({key} = {value}); leave it out")
            overrides[key] = value
        model = create_model(self.model_name, **overrides)
        if not isinstance(model, AnatomyDenoiser):
            raise ConfigError(f"task anatomy trains an AnatomyDenoiser; model {self.model_name!r} is a "
                              f"{type(model).__name__}")
        if self.config.init.model is not None:
            load_diffusers_weights(model, AnatomyDenoiser, self.config.init.model)
        self.init_encoders(model)
        return model

    # --- steps -----------------------------------------------------------------------------------------------------
    def _inputs(self, batch: dict, generator: torch.Generator | None, split: str):
        device = batch["ecg"].device
        table = self.table(self.config.data.train_split if split == "train" else split)
        rows = table.rows(batch["subject_id"], self.config.data.path)
        clean = self.codes[split][rows].to(device)
        n = clean.shape[0]
        if split == "train":
            waveform = torch.rand(n, generator=generator) < self.options.measurements_dropout
            if self.options.condition_source == "teacher":
                values = self.teacher[rows] + self.options.teacher_noise * torch.randn(
                    self.teacher[rows].shape, generator=generator)
                demographics, present = (None if x is None else x[rows] for x in self.train_demographics)
                condition = self.readout.condition(values, ~waveform, demographics, present)
            else:
                condition = torch.where(waveform[:, None], self.train_conditions["waveform"][rows],
                                        self.train_conditions["full"][rows])
        else:
            condition = self.val_conditions[rows]
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(0, self.options.num_train_timesteps, (n,), generator=generator).to(device)
        noisy = self.noise_scheduler.add_noise(clean, noise, timesteps)
        return noisy, timesteps, training_target(self.noise_scheduler, clean, noise, timesteps), condition.to(device)

    @property
    def val_conditions(self) -> torch.Tensor:
        if "val" not in self.train_conditions:
            read = self._estimate(self.table(self.config.data.val_split))
            self.train_conditions["val"] = self.readout.condition(read["estimates"], read["full"],
                                                                  read.get("demographics"),
                                                                  read.get("demographics_present"))
        return self.train_conditions["val"]

    def training_step(self, model, batch, generator):
        noisy, timesteps, target, condition = self._inputs(batch, generator, "train")
        drop = (torch.rand(batch_size_of(batch), generator=generator) < self.options.condition_dropout)
        prediction = model(noisy, timesteps, condition, drop_condition=drop.to(noisy.device)).sample
        return {"loss_diffusion": F.mse_loss(prediction.float(), target.float())}

    def validation_step(self, model, batch):
        noisy, timesteps, target, condition = self._inputs(batch, None, "val")
        n = noisy.shape[0]
        drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(noisy.device)
        prediction = model(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]),
                           torch.cat([condition, condition]), drop_condition=drop).sample.float()
        conditional, null = prediction.chunk(2)
        return {"loss_diffusion": F.mse_loss(conditional, target.float()),
                "mse_null": F.mse_loss(null, target.float())}

    # --- export ----------------------------------------------------------------------------------------------------
    def _pipeline(self, model):
        from diffusers import DDPMScheduler

        from cardiacnets.generation.acquisition import AcquisitionNoise
        from cardiacnets.generation.anatomy_pipeline import AnatomyFirstPipeline
        from cardiacnets.generation.image_decoder import LabelConditionedDenoiser

        image_run = Path(self.options.image_model)
        record = json.loads((image_run / "anatomy_image.json").read_text())
        image_denoiser = LabelConditionedDenoiser.from_pretrained(image_run / "image_denoiser")
        image_scheduler = DDPMScheduler.from_pretrained(image_run / "image_scheduler")
        vae = load_vae(record["vae"])
        noise = AcquisitionNoise.from_pretrained(image_run / "acquisition") if "acquisition" in record else None
        settings = pipeline_settings(self.config.data.path, self.options.view, self.config.data.train_split)
        return AnatomyFirstPipeline(self.condition_encoder.to("cpu"), self.readout, model.to("cpu").eval(),
                                    self.shape_model, image_denoiser, vae, self.noise_scheduler, image_scheduler,
                                    precision=self.options.export_precision, acquisition=noise, **settings)

    def select_sampling(self, pipe) -> dict:
        """Temperatures and guidance chosen on the validation split (anatomy only: decoded codes, measured).

        Each setting samples one anatomy per validation ECG and is scored twice: ``score``, the mean r of
        the decoded anatomies' `selection_indices` against the truth (how well one sample follows its
        ECG), and ``code_frechet``, the Fréchet distance between the sampled shape codes and the
        validation subjects' own codes (how much the generated hearts vary as real ones do; at shape
        temperature 0 every heart of given indices is the same heart). Chosen: the lowest
        ``code_frechet`` among the settings whose score is within ``selection_tolerance`` of the best.

        Returns:
            ``{"chosen": {"temperature", "guidance", "shape_temperature"}, "grid": [{temperature, guidance,
            shape_temperature, <index>_r, score, code_frechet}], "best_score", "tolerance", "split", "n"}``.
        """
        from monai.metrics.fid import get_fid_score  # the Fréchet distance the generation evaluation reports

        o = self.options
        val = self.table(self.config.data.val_split)
        read = self._estimate(val)
        truth = pd.DataFrame(val.indices, columns=list(o.condition_indices))
        true_codes = self.codes["val"].double().cpu()
        grid = []
        for temperature in o.temperatures:
            for guidance in o.guidance_scales:
                for shape_temperature in o.shape_temperatures:
                    generator = torch.Generator().manual_seed(self.config.seed)
                    conditions = pipe.conditions(read, temperature, 1, generator)
                    codes = pipe.sample_codes(conditions, o.selection_steps, guidance, shape_temperature,
                                              generator=generator)
                    measured = cavity_measurements(pipe.shape_model.decode(codes), self._spacing_mm(),
                                                   DEFAULT_SLICE_SPACING_MM)
                    row = {"temperature": temperature, "guidance": guidance, "shape_temperature": shape_temperature}
                    for name in o.condition_indices:
                        row[f"{name}_r"] = round(_nan_corr(measured[name].to_numpy(float),
                                                           truth[name].to_numpy(float)), 4)
                    row["score"] = round(float(np.mean([row[f"{n}_r"] for n in o.selection_indices])), 4)
                    row["code_frechet"] = round(float(get_fid_score(codes.double().cpu(), true_codes)), 4)
                    grid.append(row)
        scores = [r["score"] for r in grid if np.isfinite(r["score"])]
        best_score = max(scores) if scores else float("nan")
        # With no finite score (a validation split too small to correlate) every setting is eligible.
        eligible = [r for r in grid if not scores or r["score"] >= best_score - o.selection_tolerance]

        def order(row):  # the closest anatomy distribution first, then the best score; NaN last
            fd, score = row["code_frechet"], row["score"]
            return (fd if np.isfinite(fd) else np.inf, -score if np.isfinite(score) else np.inf)

        chosen = min(eligible, key=order)
        return {"chosen": {k: chosen[k] for k in ("temperature", "guidance", "shape_temperature")}, "grid": grid,
                "best_score": best_score, "tolerance": o.selection_tolerance,
                "split": self.config.data.val_split, "n": len(val.subject_ids)}

    def export(self, model, run_dir):
        denoiser_dir = run_dir / "anatomy_denoiser"
        model.save_pretrained(denoiser_dir, safe_serialization=True)
        pipe = self._pipeline(model)
        if self.config.data.val_split:
            self.selection = self.select_sampling(pipe)
            chosen = self.selection["chosen"]
            pipe.register_to_config(default_temperature=chosen["temperature"], default_guidance=chosen["guidance"],
                                    default_shape_temperature=chosen["shape_temperature"])
        pipeline_dir = run_dir / "pipeline"
        pipe.save_pretrained(pipeline_dir, safe_serialization=True)
        provenance = generation_provenance(self.options.ecg_encoder, self.options.view, self.options.feature_encoder,
                                           self.config.data.path, run_dir)
        provenance.update({"generator": "anatomy", "image_model": str(Path(self.options.image_model).resolve()),
                           "shape_model": self.shape_report, "readout": self.readout_report,
                           "sampling_selection": self.selection, "seconds": self.seconds})
        (pipeline_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        return {"anatomy_denoiser": denoiser_dir, "pipeline": pipeline_dir}


def shape_round_trip(shape_model, labels: np.ndarray, spacing_mm: float) -> dict:
    """Round trip of label cines through a shape model: Dice, index errors and validity of the decoded cines.

    Args:
        shape_model: a fitted `ShapeModel`.
        labels: (N, slices, frames, H, W) label cines not used in the fit.
        spacing_mm: in-plane pixel size for the indices.

    Returns:
        ``dice`` (mean per class), ``index_mae`` and ``index_r`` (decoded vs original, for LVEDV,
        LVESV, LVEF, LV mass, RVEDV), ``validity`` of the decoded cines (`anatomy_validity`) and of
        the originals, and ``n``.
    """
    from cardiacnets.generation.shape_model import anatomy_validity, label_dice

    decoded = shape_model.decode(shape_model.encode(labels))
    dice = label_dice(decoded, labels)
    before = cavity_measurements(labels, spacing_mm, DEFAULT_SLICE_SPACING_MM)
    after = cavity_measurements(decoded, spacing_mm, DEFAULT_SLICE_SPACING_MM)
    names = ("lvedv_ml", "lvesv_ml", "lvef_pct", "lvm_g", "rvedv_ml")
    return {"n": int(len(labels)),
            "dice": {k: round(float(np.nanmean(v)), 4) for k, v in dice.items()},
            "index_mae": {n: round(float(np.nanmean(np.abs(after[n].to_numpy(float) - before[n].to_numpy(float)))), 3)
                          for n in names},
            "index_r": {n: round(_nan_corr(after[n].to_numpy(float), before[n].to_numpy(float)), 4) for n in names},
            "validity": {k: round(v, 4) for k, v in anatomy_validity(decoded).items()},
            "validity_original": {k: round(v, 4) for k, v in anatomy_validity(labels).items()}}
