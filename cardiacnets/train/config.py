"""`TrainConfig`: the typed configuration of ``cardiacnets train`` (one YAML file per run).

One dataclass per concern: the data (`DataConfig`), the model (registry name
plus overrides, `ModelConfig`), pretrained initialisation (`InitConfig`), the
optimiser (`OptimizerConfig`), the learning-rate schedule
(`ScheduleConfig`), EMA, early stopping, logging and checkpointing. Task
specific options (``options``) are checked against the task's own options
dataclass (`cardiacnets.train.tasks`), so unknown keys are errors there too.
The resolved config is written to ``RUN/config.yaml`` and into every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cardiacnets.config import from_dict, to_dict
from cardiacnets.data.torch_data import DEFAULT_DEMOGRAPHICS
from cardiacnets.data.transforms import AugmentConfig
from cardiacnets.errors import ConfigError


@dataclass
class DataConfig:
    """Which training set and how it is batched.

    Attributes:
        path: training set folder (written by ``cardiacnets preprocess``).
        train_split: split trained on.
        val_split: split validated on (``null``: no validation, no early stopping).
        batch_size: samples per process per micro-batch (the optimiser sees
            ``batch_size × processes × gradient_accumulation_steps`` per step).
        val_batch_size: per-process validation batch size (default ``batch_size``).
        workers: data loader worker processes (0: load in the training process).
        require: modalities every subject must have (``ecg``, ``sa``, ``la_4ch``);
            ``null`` takes the task's own requirement.
        demographics: manifest columns of the ``demographics`` vector (standardised on the
            training split, see `cardiacnets.data.torch_data.DemographicsNormalizer`); empty for none.
        max_train_subjects: train on the first N subjects of the split only (quick runs).
        augment: training augmentations.
    """

    path: str = ""
    train_split: str = "train"
    val_split: str | None = "val"
    batch_size: int = 32
    val_batch_size: int | None = None
    workers: int = 0
    require: list[str] | None = None
    demographics: list[str] = field(default_factory=lambda: list(DEFAULT_DEMOGRAPHICS))
    max_train_subjects: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be at least 1, got {self.batch_size}")
        if self.val_batch_size is not None and self.val_batch_size < 1:
            raise ConfigError(f"data.val_batch_size must be at least 1, got {self.val_batch_size}")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be non-negative, got {self.workers}")
        if self.max_train_subjects is not None and self.max_train_subjects < 1:
            raise ConfigError(f"data.max_train_subjects must be at least 1, got {self.max_train_subjects}")


@dataclass
class ModelConfig:
    """The model trained: a registered name and config overrides.

    Attributes:
        name: registry name (``cardiacnets.models.list_models()``); empty takes the task's default.
        overrides: fields of the model's config to change (``{depth: 2}``).
    """

    name: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class InitConfig:
    """Weights to start from (folders written by ``save_pretrained``, e.g. a previous run's exports).

    Attributes:
        model: a saved model of the same class as the one trained (all weights are loaded).
        ecg_encoder: a saved ECG encoder (``RUN/ecg_encoder``) or ECG MAE (its encoder is used).
        cmr_encoders: saved CMR encoder per view (``{sa: RUN/cmr_sa_encoder}``).
    """

    model: str | None = None
    ecg_encoder: str | None = None
    cmr_encoders: dict[str, str] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    """AdamW (decoupled weight decay; Loshchilov & Hutter, 2019).

    Attributes:
        lr: peak learning rate.
        weight_decay: decoupled weight decay, not applied to biases, norms, tokens and
            position embeddings (parameters with at most one axis or named ``*_embed``).
        betas: Adam's moment decay rates.
        eps: Adam's epsilon.
    """

    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optimizer.weight_decay must be non-negative, got {self.weight_decay}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optimizer.betas must be in [0, 1), got {list(self.betas)}")


@dataclass
class ScheduleConfig:
    """Training length and learning-rate schedule (diffusers' ``get_scheduler``).

    Attributes:
        epochs: passes over the training split (set this or ``max_steps``).
        max_steps: optimiser steps (set this or ``epochs``).
        warmup_steps: linear warm-up from 0 to the peak rate.
        name: ``cosine`` (decay to 0 at the last step), ``linear`` or ``constant`` (after warm-up).
    """

    epochs: int | None = None
    max_steps: int | None = None
    warmup_steps: int = 0
    name: Literal["cosine", "linear", "constant"] = "cosine"

    def validate(self) -> None:
        if (self.epochs is None) == (self.max_steps is None):
            raise ConfigError("schedule: set exactly one of epochs and max_steps")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"schedule.epochs must be at least 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"schedule.max_steps must be at least 1, got {self.max_steps}")
        if self.warmup_steps < 0:
            raise ConfigError(f"schedule.warmup_steps must be non-negative, got {self.warmup_steps}")


@dataclass
class EMAConfig:
    """Exponential moving average of the weights (validated and exported instead of the raw weights).

    Attributes:
        enabled: keep the average.
        decay: weight of the old average at each optimiser step.
    """

    enabled: bool = False
    decay: float = 0.999

    def validate(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"ema.decay must be in (0, 1), got {self.decay}")


@dataclass
class EarlyStoppingConfig:
    """Stop when the validation loss stops improving.

    Attributes:
        patience: validations without improvement before stopping (``null``: never stop early).
        min_delta: an improvement must lower the best validation loss by more than this.
        restore_best: export the weights of the best validation instead of the last ones.
    """

    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True

    def validate(self) -> None:
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"early_stopping.patience must be at least 1, got {self.patience}")
        if self.min_delta < 0:
            raise ConfigError(f"early_stopping.min_delta must be non-negative, got {self.min_delta}")


@dataclass
class LoggingConfig:
    """Progress and metric logs (``RUN/train_log.csv`` and ``RUN/val_log.csv`` are always written).

    Attributes:
        every_steps: average the training losses over this many steps per log row.
        progress: show a progress bar.
        tensorboard: ``auto`` (log to ``RUN/tensorboard`` when the tensorboard package is
            installed, otherwise say so once and keep the CSV logs only), ``on`` (required:
            an error when it is not installed) or ``off``.
    """

    every_steps: int = 10
    progress: bool = True
    tensorboard: Literal["auto", "on", "off"] = "auto"

    def validate(self) -> None:
        if self.every_steps < 1:
            raise ConfigError(f"logging.every_steps must be at least 1, got {self.every_steps}")


@dataclass
class CheckpointConfig:
    """Resumable checkpoints in ``RUN/checkpoints/step_XXXXXXXX``.

    Attributes:
        every_steps: save every N optimiser steps (0: at the end of every epoch); one is
            always saved at the end of the run.
        keep_last: checkpoints kept (older ones are deleted).
    """

    every_steps: int = 0
    keep_last: int = 2

    def validate(self) -> None:
        if self.every_steps < 0:
            raise ConfigError(f"checkpoint.every_steps must be non-negative, got {self.every_steps}")
        if self.keep_last < 1:
            raise ConfigError(f"checkpoint.keep_last must be at least 1, got {self.keep_last}")


@dataclass
class TrainConfig:
    """Everything a training run needs; see ``configs/demo/*.yaml`` and ``configs/paper/*.yaml``.

    Attributes:
        task: the stage (``pretrain_ecg``, ``pretrain_cmr``, ``align``; `cardiacnets.train.tasks.TASKS`).
        data: training set and batching.
        model: registered model and overrides.
        init: pretrained weights to start from.
        options: the task's own options (checked against the task's options dataclass).
        optimizer: AdamW settings.
        schedule: length and learning-rate schedule.
        gradient_accumulation_steps: micro-batches per optimiser step.
        clip_grad_norm: clip the global gradient norm to this (``null``: no clipping).
        mixed_precision: ``no``, ``bf16`` (autocast, also on CPU) or ``fp16`` (GPU only, with loss scaling).
        seed: seed of initialisation, data order, augmentation and masking.
        val_every_steps: validate every N optimiser steps (0: at the end of every epoch);
            the run always ends with a validation.
        ema: weight averaging.
        early_stopping: patience on the validation loss.
        logging: progress bar, CSV and TensorBoard.
        checkpoint: checkpoint interval and retention.
        precise_bn_batches: before each validation and the export, recompute the batch-norm
            running statistics of the evaluated model over this many fixed training batches
            ("precise BN"; 0: keep the running averages). Needed by encoders with batch norm that
            train at a high learning rate: their running averages lag the weights, and the
            demo CMR encoders' evaluation embeddings collapse without it.
        channels_last: keep 4-D weights (convolutions) in channels-last memory format; with
            bf16 on a CPU this makes the demo CMR encoder's training step about 3x faster.
        output_dir: run folder (``--out`` on the command line takes precedence).
        cpu: train on the CPU even when a GPU is present.
        threads: PyTorch CPU threads of the run (null: PyTorch's default, one per core). Small
            models (the anatomy prior's MLP) step several times faster on one thread: their
            operations are too short to share, and a second thread only waits.
    """

    task: str = "align"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    options: dict[str, Any] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(epochs=1))
    gradient_accumulation_steps: int = 1
    clip_grad_norm: float | None = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    val_every_steps: int = 0
    ema: EMAConfig = field(default_factory=EMAConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    precise_bn_batches: int = 0
    channels_last: bool = False
    output_dir: str | None = None
    cpu: bool = False
    threads: int | None = None

    def validate(self) -> None:
        from cardiacnets.train.tasks import get_task_class

        task_cls = get_task_class(self.task)
        if not self.data.path:
            raise ConfigError("data.path is empty: name the training set folder (data.path=...)")
        if self.gradient_accumulation_steps < 1:
            raise ConfigError(f"gradient_accumulation_steps must be at least 1, got {self.gradient_accumulation_steps}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ConfigError(f"clip_grad_norm must be positive or null, got {self.clip_grad_norm}")
        if self.precise_bn_batches < 0:
            raise ConfigError(f"precise_bn_batches must be non-negative, got {self.precise_bn_batches}")
        if self.val_every_steps < 0:
            raise ConfigError(f"val_every_steps must be non-negative, got {self.val_every_steps}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1 or null, got {self.threads}")
        if self.early_stopping.patience is not None and self.data.val_split is None:
            raise ConfigError("early_stopping.patience needs a validation split (data.val_split)")
        # Check the task options now and store them resolved, so config.yaml shows every default.
        self.options = to_dict(from_dict(task_cls.options_class, self.options, where="options"))
