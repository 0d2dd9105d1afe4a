"""Training stages as small task objects, run by the one training loop (`cardiacnets.train.loop`).

A task says what data a stage needs, builds and initialises its model,
computes the loss terms of a batch (``training_step`` returns a dict of named
scalar terms, the loop sums them), evaluates the validation split and exports
the trained encoders with ``save_pretrained``. Entries of a task's results
named ``loss*`` are loss terms (their sum is the validation loss that early
stopping watches); other entries are metrics.

Stages of CardiacNets (arXiv 2411.13602):

- ``pretrain_ecg``: masked-autoencoder (optionally hybrid contrastive) pretraining of
  the ECG ViT (`ECGMAE`); exports ``RUN/model`` and ``RUN/ecg_encoder``.
- ``pretrain_cmr``: masked-image pretraining of the cine encoders (`CMRMaskedModel`);
  exports ``RUN/model`` and ``RUN/cmr_<view>_encoder``.
- ``align``: CLIP-style alignment of the ECG encoder with each view's CMR encoder
  (`CardiacCLIP` + `ClipLoss`); exports ``RUN/model``, ``RUN/ecg_encoder`` and
  ``RUN/cmr_<view>_encoder``.

The other stages register themselves with `register_task` in their own
modules (``segment``: `segment_task`; ``heads``: `heads_task`; ``vae``:
`vae_task`; ``diffusion``: `diffusion_task`; ``anatomy_image``:
`anatomy_image_task`; ``anatomy``: `anatomy_task`), which the package's
``__init__`` imports: importing ``cardiacnets.train`` fills `TASKS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from cardiacnets.config import from_dict, to_dict
from cardiacnets.data.store import TrainingSet
from cardiacnets.data.torch_data import move_to_device
from cardiacnets.data.transforms import augment_ecg
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.losses import ClipLoss, symmetric_info_nce
from cardiacnets.models import create_model, get_model_config
from cardiacnets.models.clip import CardiacCLIPConfig
from cardiacnets.models.cmr_mim import CMRMaskedModelConfig
from cardiacnets.models.ecg_mae import ECGMAE
from cardiacnets.models.encoders import load_saved_encoder
from cardiacnets.models.pretrained import load_pretrained

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available as ``task: <cls.name>`` in a `TrainConfig`."""
    if not cls.name or cls.name in TASKS:
        raise ValueError(f"task name {cls.name!r} is empty or registered twice")
    TASKS[cls.name] = cls
    return cls


def get_task_class(name: str) -> type[Task]:
    """The task class registered under `name`.

    Raises:
        ConfigError: unknown task, listing the known ones.
    """
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


@dataclass
class NoOptions:
    """A task without options of its own."""


def batch_size_of(batch: dict) -> int:
    """Samples in a collated batch."""
    return len(batch["subject_id"])


class Task:
    """One training stage. Subclasses set the class attributes and override the steps.

    Args:
        config: the run's `TrainConfig` (``config.options`` is parsed into ``options_class``).

    Attributes:
        demographics: the `DemographicsNormalizer` the training loop fitted on the training split
            (``RUN/demographics.json``; ``None`` without ``data.demographics``), set before the model
            is built. The batches' demographics are standardised by it, so a task that standardises
            demographics itself (a read-out, an exported pipeline) uses this one, never a refit.
    """

    name: ClassVar[str] = ""
    options_class: ClassVar[type] = NoOptions
    default_model: ClassVar[str] = ""

    def __init__(self, config):
        self.config = config
        self.demographics = None
        self.options = from_dict(self.options_class, config.options, where="options")
        self.model_name = config.model.name or self.default_model
        if not self.model_name:
            raise ConfigError(f"task {self.name!r}: model.name is empty")

    # --- data ------------------------------------------------------------------------------------------------
    def views(self) -> list[str]:
        """CMR views the batches must carry (``cmr_<view>``, ``has_<view>``)."""
        return []

    def required_modalities(self) -> list[str]:
        """Modalities every training subject must have (``data.require`` overrides)."""
        return []

    def open_split(self, root: str, split: str, require: list[str]):
        """The subjects of one split that the loop trains on (``data.train_split``) or validates on.

        Tasks override it to attach targets or select subjects (the heads' label fractions).

        Returns:
            A `cardiacnets.data.store.TrainingSet`.
        """
        return TrainingSet(root, split=split, require=tuple(require))

    def segmentations(self) -> bool:
        """Whether batches carry the ``seg_<view>`` label arrays of `views` (segmentation training)."""
        return False

    # --- model -----------------------------------------------------------------------------------------------
    def model_overrides(self) -> dict:
        """Registry overrides the model is built with."""
        return dict(self.config.model.overrides)

    def build_model(self) -> nn.Module:
        """Build the model to train (``create_model``) and load ``init.model`` weights."""
        model = create_model(self.model_name, **self.model_overrides())
        self.check_model(model)
        if self.config.init.model is not None:
            _load_same_class(model, self.config.init.model)
        self.init_encoders(model)
        return model

    def check_model(self, model: nn.Module) -> None:
        """Raise `ConfigError` when `model` is not what this task trains."""

    def init_encoders(self, model: nn.Module) -> None:
        """Load ``init.ecg_encoder`` / ``init.cmr_encoders`` into the model's encoders."""
        init = self.config.init
        if init.ecg_encoder is not None or init.cmr_encoders:
            raise ConfigError(f"task {self.name!r} does not take init.ecg_encoder / init.cmr_encoders")

    # --- steps -----------------------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Loss terms of one micro-batch.

        Args:
            model: the (possibly distributed-wrapped) model; call it, not its submodules,
                so data parallelism synchronises gradients.
            batch: collated batch on the model's device.
            generator: CPU generator seeded by (seed, step, micro-batch, process), for
                augmentation drawn here (reproducible on resume).

        Returns:
            Named scalar loss terms; the loop optimises their sum.
        """
        raise NotImplementedError

    def validation_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Loss terms (and metrics) of one validation batch, means over the batch."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, accelerator) -> dict[str, float]:
        """Validation results over this process's part of the split, averaged over all processes.

        The loop calls it with the unwrapped model in eval mode under a fixed random
        seed (the same masks every validation). Subclasses may override it to compute
        set-level metrics.

        Returns:
            Sample-weighted means of the `validation_step` entries.
        """
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in loader:
            batch = move_to_device(batch, accelerator.device)
            with accelerator.autocast():
                terms = self.validation_step(model, batch)
            n = batch_size_of(batch)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() * n
            count += n
        keys = sorted(sums)
        totals = torch.stack([torch.as_tensor(sums[k], device=accelerator.device) for k in keys]
                             + [torch.tensor(float(count), device=accelerator.device)])
        totals = accelerator.reduce(totals, reduction="sum")
        return {k: float(totals[i] / totals[-1]) for i, k in enumerate(keys)}

    # --- export ----------------------------------------------------------------------------------------------
    def export(self, model: nn.Module, run_dir: Path) -> dict[str, Path]:
        """Save the trained model and its encoders with ``save_pretrained``.

        Returns:
            Folder per export name.
        """
        return {"model": model.save_pretrained(run_dir / "model")}


def _load_same_class(model: nn.Module, folder: str) -> None:
    saved = load_pretrained(folder)
    if type(saved) is not type(model):
        raise InputError(folder, f"holds a {type(saved).__name__}; init.model needs a {type(model).__name__}")
    try:
        model.load_state_dict(saved.state_dict())
    except RuntimeError as err:
        raise InputError(folder, f"weights do not fit the configured model ({err})") from None


def _copy_weights(target: nn.Module, source: nn.Module, folder: str) -> None:
    try:
        target.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise InputError(folder, f"encoder weights do not fit the configured encoder ({err})") from None


# --- ECG pretraining ---------------------------------------------------------------------------------------------

@register_task
class PretrainECGTask(Task):
    """Masked-autoencoder pretraining of the ECG ViT (`ECGMAE`; hybrid InfoNCE when its weight > 0)."""

    name = "pretrain_ecg"
    default_model = "ecg_mae_tiny"

    def required_modalities(self) -> list[str]:
        return ["ecg"]

    def check_model(self, model):
        if not isinstance(model, ECGMAE):
            raise ConfigError(f"task pretrain_ecg trains an ECGMAE; model {self.model_name!r} "
                              f"is a {type(model).__name__}")

    def init_encoders(self, model):
        init = self.config.init
        if init.cmr_encoders:
            raise ConfigError("task pretrain_ecg has no CMR encoders to initialise (init.cmr_encoders)")
        if init.ecg_encoder is not None:
            _copy_weights(model.encoder, load_saved_encoder(init.ecg_encoder, "ecg"), init.ecg_encoder)

    def training_step(self, model, batch, generator):
        return model(batch)

    def validation_step(self, model, batch):
        return model(batch)

    def export(self, model, run_dir):
        return {"model": model.save_pretrained(run_dir / "model"),
                "ecg_encoder": model.encoder.save_pretrained(run_dir / "ecg_encoder")}


# --- CMR pretraining ---------------------------------------------------------------------------------------------

@register_task
class PretrainCMRTask(Task):
    """Masked-image pretraining of the cine encoders (`CMRMaskedModel`, with its short ↔ long-axis term)."""

    name = "pretrain_cmr"
    default_model = "cmr_mim_demo"

    def __init__(self, config):
        super().__init__(config)
        self.model_config = get_model_config(self.model_name, **self.model_overrides())
        if not isinstance(self.model_config, CMRMaskedModelConfig):
            raise ConfigError(f"task pretrain_cmr trains a CMRMaskedModel; model {self.model_name!r} is not one")

    def views(self):
        return list(self.model_config.views)

    def required_modalities(self):
        return self.views()

    def init_encoders(self, model):
        init = self.config.init
        if init.ecg_encoder is not None:
            raise ConfigError("task pretrain_cmr has no ECG encoder to initialise (init.ecg_encoder)")
        for view, folder in init.cmr_encoders.items():
            if view not in model.encoders:
                raise ConfigError(f"init.cmr_encoders.{view}: the model has no {view!r} encoder "
                                  f"(views: {', '.join(model.encoders)})")
            _copy_weights(model.encoders[view], load_saved_encoder(folder, "cmr", view), folder)

    def training_step(self, model, batch, generator):
        return model(batch)

    def validation_step(self, model, batch):
        return model(batch)

    def export(self, model, run_dir):
        exports = {"model": model.save_pretrained(run_dir / "model")}
        for view, encoder in model.encoders.items():
            exports[f"cmr_{view}_encoder"] = encoder.save_pretrained(run_dir / f"cmr_{view}_encoder")
        return exports


# --- ECG-CMR alignment -------------------------------------------------------------------------------------------

@dataclass
class AlignOptions:
    """Options of the ``align`` task.

    Attributes:
        gather: contrast against the global batch of all processes (CLIP's gathered negatives).
        ecg_max_shift_samples: training-time random time shift of the ECG (up to this many
            samples either way, zero-filled; `random_time_shift`): the beats' position within
            the 10 s strip carries nothing about the heart, and an encoder trained from
            scratch on a few thousand ECGs otherwise memorises it.
        lead_drop_prob: training-time probability of dropping each ECG lead (`random_lead_mask`),
            so the aligned encoder also serves reduced-lead input; 0 with ``subset_prob`` 0 = off.
        subset_prob: probability of a reduced-lead view (lead I, lead II, limb leads) instead.
        val_candidates: validation retrieval top-1 is measured within consecutive groups of
            this many validation subjects (the last group may be smaller).
    """

    gather: bool = True
    ecg_max_shift_samples: int = 0
    lead_drop_prob: float = 0.0
    subset_prob: float = 0.0
    val_candidates: int = 100

    def validate(self) -> None:
        if not 0.0 <= self.lead_drop_prob <= 1.0 or not 0.0 <= self.subset_prob <= 1.0:
            raise ConfigError("options.lead_drop_prob and options.subset_prob must be in [0, 1]")
        if self.ecg_max_shift_samples < 0:
            raise ConfigError(f"options.ecg_max_shift_samples must be non-negative, got {self.ecg_max_shift_samples}")
        if self.val_candidates < 2:
            raise ConfigError(f"options.val_candidates must be at least 2, got {self.val_candidates}")


@register_task
class AlignTask(Task):
    """CLIP-style alignment of ECG and CMR embeddings (`CardiacCLIP` + `ClipLoss`)."""

    name = "align"
    options_class = AlignOptions
    default_model = "cardiac_clip_demo"

    def __init__(self, config):
        super().__init__(config)

        self.model_config = get_model_config(self.model_name, **self.model_overrides())
        if not isinstance(self.model_config, CardiacCLIPConfig):
            raise ConfigError(f"task align trains a CardiacCLIP; model {self.model_name!r} is not one")
        self.loss = ClipLoss(views=self.model_config.views, gather=self.options.gather)

    def model_overrides(self) -> dict:
        """The configured overrides with ``init.*`` folders set as the encoders' ``init_from``."""
        overrides = dict(self.config.model.overrides)
        init = self.config.init
        if init.ecg_encoder is None and not init.cmr_encoders:
            return overrides
        registered = to_dict(get_model_config(self.model_name, **overrides))
        if init.ecg_encoder is not None:
            overrides["ecg"] = {**registered["ecg"], "init_from": init.ecg_encoder}
        if init.cmr_encoders:
            cmr = dict(registered["cmr"])
            for view, folder in init.cmr_encoders.items():
                if view not in registered["views"]:
                    raise ConfigError(f"init.cmr_encoders.{view}: the model aligns views {registered['views']}")
                cmr[view] = {**cmr[view], "init_from": folder}
            overrides["cmr"] = cmr
        return overrides

    def init_encoders(self, model):
        pass  # done by the model's builder from the encoders' init_from (see model_overrides)

    def views(self):
        return list(self.model_config.views)

    def required_modalities(self):
        return ["ecg", *self.views()]

    def _valid(self, batch: dict) -> dict[str, torch.Tensor]:
        return {view: batch[f"has_{view}"] for view in self.views()}

    def training_step(self, model, batch, generator):
        opts = self.options
        batch = augment_ecg(batch, generator, opts.ecg_max_shift_samples, opts.lead_drop_prob, opts.subset_prob)
        return self.loss(model(batch), valid=self._valid(batch))

    def validation_step(self, model, batch):
        outputs = model(batch)
        return ClipLoss(views=self.views(), gather=False)(outputs, valid=self._valid(batch))

    @torch.no_grad()
    def evaluate(self, model, loader, accelerator) -> dict[str, float]:
        """Embed the whole validation split, then score it independently of the process count.

        Returns:
            ``loss_clip_<view>``: the contrastive loss over consecutive groups of one global
            training batch (the negatives training sees); ``top1_ecg_to_<view>`` and
            ``top1_<view>_to_ecg``: retrieval accuracy within groups of ``val_candidates``;
            ``logit_scale``.
        """
        parts: dict[str, list[torch.Tensor]] = {}
        logit_scale = None
        for batch in loader:
            batch = move_to_device(batch, accelerator.device)
            with accelerator.autocast():
                outputs = model(batch)
            logit_scale = outputs["logit_scale"].float()
            parts.setdefault("index", []).append(batch["index"])
            for key in ["ecg", *(f"cmr_{v}" for v in self.views())]:
                parts.setdefault(key, []).append(outputs[key].float())
            for view in self.views():
                parts.setdefault(f"has_{view}", []).append(batch[f"has_{view}"].float())
        if logit_scale is None:
            raise InputError(self.config.data.path, "validation split is empty on this process")
        # Gather every process's rows (padded to equal length, index -1 marks padding), then sort by index.
        gathered = {}
        for key, chunks in parts.items():
            local = torch.cat(chunks)
            padded = accelerator.pad_across_processes(local, dim=0, pad_index=-1 if key == "index" else 0)
            gathered[key] = accelerator.gather(padded)
        keep = gathered["index"] >= 0
        order = torch.argsort(gathered["index"][keep])
        data = {k: v[keep][order] for k, v in gathered.items()}
        n = len(data["index"])
        results: dict[str, float] = {"logit_scale": float(logit_scale)}
        group = self.config.data.batch_size * accelerator.num_processes * self.config.gradient_accumulation_steps
        for view in self.views():
            valid = data[f"has_{view}"] > 0
            ecg, cmr = data["ecg"], data[f"cmr_{view}"]
            total, weight = 0.0, 0
            for start in range(0, n, group):
                part = slice(start, start + group)
                m = int(valid[part].sum())
                if m >= 2:
                    loss = symmetric_info_nce(ecg[part], cmr[part], logit_scale, valid=valid[part], gather=False)
                    total, weight = total + float(loss) * m, weight + m
            results[f"loss_clip_{view}"] = total / weight if weight else math.nan
            hits_e2c = hits_c2e = queries = 0
            for start in range(0, n, self.options.val_candidates):
                part = slice(start, start + self.options.val_candidates)
                e, c = ecg[part][valid[part]], cmr[part][valid[part]]
                if len(e) < 2:
                    continue
                similarity = e @ c.T  # (queries, candidates), cosine of unit vectors
                truth = torch.arange(len(e), device=e.device)
                hits_e2c += int((similarity.argmax(dim=1) == truth).sum())
                hits_c2e += int((similarity.argmax(dim=0) == truth).sum())
                queries += len(e)
            results[f"top1_ecg_to_{view}"] = hits_e2c / queries if queries else math.nan
            results[f"top1_{view}_to_ecg"] = hits_c2e / queries if queries else math.nan
        return results

    def export(self, model, run_dir):
        exports = {"model": model.save_pretrained(run_dir / "model"),
                   "ecg_encoder": model.ecg_encoder.save_pretrained(run_dir / "ecg_encoder")}
        for view, encoder in model.cmr_encoders.items():
            exports[f"cmr_{view}_encoder"] = encoder.save_pretrained(run_dir / f"cmr_{view}_encoder")
        return exports
