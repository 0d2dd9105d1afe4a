"""The one training loop of cardiacnets, on Hugging Face Accelerate, for every stage.

`train(config, run_dir, resume)` runs a task (`cardiacnets.train.tasks`) on
one CPU, a GPU, or several processes (``accelerate launch --multi_gpu -m
cardiacnets.cli train CONFIG`` on GPUs, ``torchrun --nproc_per_node N -m
cardiacnets.cli train CONFIG cpu=true`` on CPUs). Accelerate supplies the device placement,
data-parallel wrapping (``prepare``), mixed precision (``bf16`` autocast also
on the CPU, ``fp16`` with loss scaling on GPUs), gradient accumulation
(``accumulate``, ``sync_gradients``), ``backward`` and ``clip_grad_norm_``.

The loop keeps three things in its own hands so that ``--resume`` continues
*exactly* (a run killed after step k and resumed ends with the weights of an
uninterrupted run):

- data order: `EpochBatchSampler` draws each epoch's order from ``(seed, epoch)``
  and starts at the first unconsumed batch, instead of a prepared loader whose
  position lives in its iterator;
- randomness: each process's Python/NumPy/torch states are checkpointed, and
  augmentation is seeded per sample and per step;
- checkpoints: safetensors and JSON (`cardiacnets.train.checkpoint`), never
  unpickled code.

Each optimiser step consumes exactly ``gradient_accumulation_steps``
micro-batches; the learning-rate scheduler steps once per optimiser step (it
is not passed to ``prepare``, which would step it once per process).
Validation runs the unwrapped model (its EMA copy when enabled) in eval mode
under a fixed seed, after re-estimating batch-norm statistics when
``precise_bn_batches`` is set.

Run folder::

    RUN/config.yaml            resolved TrainConfig
    RUN/demographics.json      normalisation of the demographics vector (training split)
    RUN/train_log.csv          step, epoch, lr, loss and its terms, grad norm, samples/s
    RUN/val_log.csv            validation losses and metrics
    RUN/tensorboard/           when tensorboard is installed (logging.tensorboard)
    RUN/checkpoints/step_*/    resumable checkpoints
    RUN/best/step_*.safetensors  weights of the best validations (early stopping)
    RUN/model/, RUN/*_encoder/ exports (save_pretrained folders)
    RUN/summary.json           final step, validation, timing, exports
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cardiacnets.config import save_config, to_dict
from cardiacnets.data.store import TrainingSet
from cardiacnets.data.torch_data import (
    CardiacTorchDataset, DemographicsNormalizer, EpochBatchSampler, batches_per_epoch, make_loader, move_to_device,
    shard_batches,
)
from cardiacnets.errors import CardiacNetsError, ConfigError, InputError
from cardiacnets.train import checkpoint as ckpt
from cardiacnets.train.config import TrainConfig
from cardiacnets.train.ema import create_ema
from cardiacnets.train.tasks import Task, batch_size_of, get_task_class

#: Config keys that may differ between a checkpoint and the run resuming it.
RESUME_MAY_CHANGE = ("logging.", "checkpoint.", "data.workers", "output_dir")


@dataclass
class TrainResult:
    """What a finished `train` call did.

    Attributes:
        run_dir: the run folder.
        step: optimiser steps done.
        total_steps: steps the schedule planned.
        epoch: epochs done (fractional).
        stopped_early: early stopping ended the run.
        val: the last validation's results (``val_loss`` and each entry).
        best_val_loss: the best validation loss (``None`` without validation).
        best_step: step of the best validation.
        train_seconds: wall-clock time in the training loop, over all sessions of the run.
        samples_per_s: training samples per second (all processes).
        exports: folder per exported model.
    """

    run_dir: Path
    step: int
    total_steps: int
    epoch: float
    stopped_early: bool
    val: dict[str, float] = field(default_factory=dict)
    best_val_loss: float | None = None
    best_step: int | None = None
    train_seconds: float = 0.0
    samples_per_s: float = 0.0
    exports: dict[str, Path] = field(default_factory=dict)


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """Seed of the generator handed to one micro-batch's `Task.training_step`."""
    return int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1, np.uint64)[0])


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested mapping → ``{"a.b": value}``."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def loss_total(terms: dict[str, float]) -> float:
    """Sum of the entries named ``loss*`` (the others are metrics)."""
    return float(sum(v for k, v in terms.items() if k.startswith("loss")))


class CSVLog:
    """An append-only CSV log whose columns are fixed by its first row.

    Args:
        path: the CSV file.
        keep_until_step: on resume, rows after this step (written after the checkpoint
            being resumed) are dropped; ``None`` starts a new file.
    """

    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        self.columns: list[str] | None = None
        if keep_until_step is None or not path.is_file():
            path.unlink(missing_ok=True)
            return
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            self.columns = list(rows[0].keys())
        kept = [r for r in rows if int(r["step"]) <= keep_until_step]
        path.unlink()
        for row in kept:
            self.write(row)

    def write(self, row: dict) -> None:
        """Append one row (same keys as the first)."""
        if self.columns is None:
            self.columns = list(row)
        if list(row) != self.columns:
            raise ValueError(f"{self.path}: row keys {list(row)} differ from the columns {self.columns}")
        new = not self.path.is_file()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow(row)


def _format(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _tensorboard_available() -> bool:
    from accelerate.utils import is_tensorboard_available

    return is_tensorboard_available()


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, tokens and ``*_embed`` position tables."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith("_embed"):
            no_decay.append(param)
        else:
            decay.append(param)
    if not decay and not no_decay:
        raise ConfigError("the model has no trainable parameters")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Runs one training session of a `TrainConfig` (see `train`).

    Args:
        config: the run's config.
        run_dir: the run folder.
        resume: continue from the latest checkpoint in ``run_dir/checkpoints``.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, resume: bool = False):
        from accelerate import Accelerator

        config.validate()
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume_from = self._checkpoint_to_resume(resume)
        self.task: Task = get_task_class(config.task)(config)
        if config.mixed_precision == "fp16" and (config.cpu or not torch.cuda.is_available()):
            raise ConfigError("mixed_precision fp16 needs a GPU (loss scaling); use bf16 on the CPU")
        self.tensorboard = self._tensorboard_choice()
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
            cpu=config.cpu, log_with="tensorboard" if self.tensorboard else None, project_dir=str(self.run_dir),
            step_scheduler_with_optimizer=False)
        self.is_main = self.accelerator.is_main_process
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        # Bookkeeping saved in every checkpoint.
        self.step = 0
        self.samples_seen = 0
        self.train_seconds = 0.0
        self.best_val_loss: float | None = None
        self.best_step: int | None = None
        self.bad_validations = 0
        self.stopped_early = False
        self.last_val: dict[str, float] = {}
        self.last_val_step = -1
        self.last_checkpoint_step = -1
        self.last_bn_step = -1

    # --- setup -------------------------------------------------------------------------------------------------
    def _checkpoint_to_resume(self, resume: bool) -> Path | None:
        latest = ckpt.latest_checkpoint(self.run_dir)
        if resume:
            if latest is None:
                raise InputError(self.run_dir, "no checkpoint to resume (no complete checkpoints/step_* folder)")
            return latest
        if latest is not None:
            raise ConfigError(f"{self.run_dir} already holds checkpoints; pass --resume to continue it "
                              "or choose another output folder")
        return None

    def _tensorboard_choice(self) -> bool:
        choice = self.config.logging.tensorboard
        if choice == "off":
            return False
        available = _tensorboard_available()
        if choice == "on" and not available:
            raise ConfigError("logging.tensorboard is 'on' but the tensorboard package is not installed "
                              "(pip install tensorboard, or set logging.tensorboard=auto)")
        return available

    def _print(self, text: str) -> None:
        if self.is_main:
            print(text, flush=True)

    def _open_split(self, split: str, require: list[str]) -> TrainingSet:
        data = self.task.open_split(self.config.data.path, split, require)
        if len(data) == 0:
            needs = f" having {', '.join(require)}" if require else ""
            raise InputError(self.config.data.path, f"no subjects in split {split!r}{needs}")
        missing = [v for v in self.task.views() if v not in data.views]
        if missing:
            raise InputError(self.config.data.path, f"training set has no CMR view(s) {missing} "
                                                    f"needed by task {self.task.name!r} (stored: {data.views})")
        return data

    def setup_data(self) -> None:
        """Open the splits, fit the demographics normaliser and size the schedule."""
        c = self.config
        require = self.task.required_modalities() if c.data.require is None else c.data.require
        train_set = self._open_split(c.data.train_split, require)
        self.demographics = (DemographicsNormalizer.fit(train_set.manifest, c.data.demographics,
                                                        train_set.manifest_path)
                             if c.data.demographics else None)
        self.task.demographics = self.demographics  # the one normaliser of the run (batches, read-outs, exports)
        views = self.task.views()
        self.train_data = CardiacTorchDataset(train_set, self.demographics, c.data.augment, c.seed, views,
                                              segmentations=self.task.segmentations())
        limit = c.data.max_train_subjects
        self.n_train = len(train_set) if limit is None else min(len(train_set), limit)
        global_batch = c.data.batch_size * self.world_size * c.gradient_accumulation_steps
        self.steps_per_epoch = (batches_per_epoch(self.n_train, c.data.batch_size, self.world_size)
                                // c.gradient_accumulation_steps)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"{c.data.path}: split {c.data.train_split!r} has {self.n_train} usable subjects, "
                              f"fewer than one optimiser step of {global_batch} samples "
                              "(lower data.batch_size or gradient_accumulation_steps)")
        s = c.schedule
        self.total_steps = s.max_steps if s.max_steps is not None else s.epochs * self.steps_per_epoch
        self.val_data = None
        if c.data.val_split is not None:
            val_set = self._open_split(c.data.val_split, require)
            if len(val_set) < self.world_size:
                raise InputError(c.data.path, f"split {c.data.val_split!r} has {len(val_set)} subjects, "
                                              f"fewer than the {self.world_size} processes")
            self.val_data = CardiacTorchDataset(val_set, self.demographics, None, c.seed, views,
                                                segmentations=self.task.segmentations())

    def setup_model(self) -> None:
        """Build the model, EMA, optimiser and schedule, and prepare them with Accelerate."""
        from accelerate.utils import set_seed
        from diffusers.optimization import get_scheduler

        c = self.config
        set_seed(c.seed)  # identical initial weights on every process
        model = self.task.build_model()
        if c.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.n_parameters = sum(p.numel() for p in model.parameters())
        self.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.ema = create_ema(model, c.ema.decay, device=self.accelerator.device) if c.ema.enabled else None
        optimizer = torch.optim.AdamW(_parameter_groups(model, c.optimizer.weight_decay), lr=c.optimizer.lr,
                                      betas=tuple(c.optimizer.betas), eps=c.optimizer.eps)
        schedule_name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[c.schedule.name]
        self.scheduler = get_scheduler(schedule_name, optimizer, num_warmup_steps=c.schedule.warmup_steps,
                                       num_training_steps=self.total_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        set_seed(c.seed, device_specific=True)  # different masks/dropout on each process from here on

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.unwrapped

    # --- checkpoints -------------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "batches_done_in_epoch": (self.step % self.steps_per_epoch) * self.config.gradient_accumulation_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "world_size": self.world_size,
            "samples_seen": self.samples_seen,
            "train_seconds": self.train_seconds,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "stopped_early": self.stopped_early,
            "last_val": self.last_val,
            "last_val_step": self.last_val_step,
            "config": to_dict(self.config),
        }

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step (all processes take part)."""
        final = ckpt.checkpoint_dir(self.run_dir, self.step)
        partial = ckpt.partial_dir(final)
        if self.is_main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        ckpt.save_rng_state(partial / f"rng_rank{self.rank}.safetensors")
        if self.is_main:
            ckpt.save_weights(self.unwrapped, partial / ckpt.MODEL_FILE)
            if self.ema is not None:
                ckpt.save_weights(self.ema, partial / ckpt.EMA_FILE)
            ckpt.save_optimizer(self.optimizer, partial / ckpt.OPTIMIZER_FILE)
            ckpt.save_json(ckpt.scheduler_state(self.scheduler), partial / ckpt.SCHEDULER_FILE)
            if self.accelerator.scaler is not None:
                ckpt.save_json(self.accelerator.scaler.state_dict(), partial / "scaler.json")
            ckpt.save_json(self._state(), partial / ckpt.STATE_FILE)
        self.accelerator.wait_for_everyone()
        if self.is_main:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            ckpt.prune_checkpoints(self.run_dir, self.config.checkpoint.keep_last)
            self._prune_best()
        self.accelerator.wait_for_everyone()
        self.last_checkpoint_step = self.step
        return final

    def load_checkpoint(self, folder: Path) -> None:
        """Restore weights, optimiser, schedule, random states and bookkeeping from `folder`."""
        state = ckpt.load_json(folder / ckpt.STATE_FILE)
        self._check_resumable(folder, state)
        ckpt.load_weights(self.unwrapped, folder / ckpt.MODEL_FILE)
        if self.ema is not None:
            ckpt.load_weights(self.ema, folder / ckpt.EMA_FILE)
        ckpt.load_optimizer(self.optimizer, folder / ckpt.OPTIMIZER_FILE)
        ckpt.load_scheduler(self.scheduler, folder / ckpt.SCHEDULER_FILE)
        if self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(ckpt.load_json(folder / "scaler.json"))
        ckpt.load_rng_state(folder / f"rng_rank{self.rank}.safetensors")
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        self.train_seconds = float(state["train_seconds"])
        self.best_val_loss, self.best_step = state["best_val_loss"], state["best_step"]
        self.bad_validations = int(state["bad_validations"])
        self.stopped_early = bool(state["stopped_early"])
        self.last_val, self.last_val_step = dict(state["last_val"]), int(state["last_val_step"])
        self.last_checkpoint_step = self.step

    def _check_resumable(self, folder: Path, state: dict) -> None:
        saved, current = flatten(state.get("config", {})), flatten(to_dict(self.config))
        differing = sorted(k for k in set(saved) | set(current)
                           if saved.get(k) != current.get(k) and not k.startswith(RESUME_MAY_CHANGE))
        if differing:
            shown = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differing[:5])
            raise ConfigError(f"{folder}: the config differs from the checkpoint's ({shown}); "
                              "resume with the run's own config.yaml")
        if state.get("world_size") != self.world_size or state.get("steps_per_epoch") != self.steps_per_epoch:
            raise ConfigError(f"{folder}: written by {state.get('world_size')} process(es) with "
                              f"{state.get('steps_per_epoch')} steps per epoch; resume with the same process "
                              f"count and data (now {self.world_size}, {self.steps_per_epoch})")

    def _best_path(self, step: int) -> Path:
        return self.run_dir / "best" / f"step_{step:08d}.safetensors"

    def _prune_best(self) -> None:
        """Keep the best-weights files still referenced by a kept checkpoint or the current best."""
        folder = self.run_dir / "best"
        if not folder.is_dir():
            return
        referenced = {self.best_step}
        for kept in ckpt.list_checkpoints(self.run_dir):
            referenced.add(ckpt.load_json(kept / ckpt.STATE_FILE).get("best_step"))
        for path in folder.glob("step_*.safetensors"):
            if int(path.stem.split("_")[1]) not in referenced:
                path.unlink()

    # --- validation and logging --------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Evaluate the validation split, update early stopping, log."""
        model = self._eval_model()
        started = time.perf_counter()
        self.recalibrate_batch_norm(model)
        self.last_bn_step = self.step
        was_training = model.training
        model.eval()
        devices = self._rng_devices()
        loader = make_loader(self.val_data, shard_batches(len(self.val_data), self._val_batch_size(),
                                                          self.world_size, self.rank),
                             self.config.data.workers, pin_memory=self.accelerator.device.type == "cuda")
        # A fixed seed: random masks (MAE, MIM) are the same at every validation, so losses compare.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config.seed)
            results = self.task.evaluate(model, loader, self.accelerator)
        model.train(was_training)
        val_loss = loss_total(results)
        if not math.isfinite(val_loss):
            raise CardiacNetsError(f"validation loss is {val_loss} at step {self.step} (training diverged; "
                                   "lower optimizer.lr or set clip_grad_norm)")
        es = self.config.early_stopping
        improved = self.best_val_loss is None or val_loss < self.best_val_loss - es.min_delta
        if improved:
            self.best_val_loss, self.best_step, self.bad_validations = val_loss, self.step, 0
            if self.is_main and es.patience is not None and es.restore_best:
                self._best_path(self.step).parent.mkdir(parents=True, exist_ok=True)
                ckpt.save_weights(model, self._best_path(self.step))
        else:
            self.bad_validations += 1
            if es.patience is not None and self.bad_validations >= es.patience:
                self.stopped_early = True
        self.last_val, self.last_val_step = {"val_loss": val_loss, **results}, self.step
        row = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), "val_loss": val_loss,
               **results, "best_val_loss": self.best_val_loss, "seconds": round(time.perf_counter() - started, 3)}
        if self.is_main:
            self.val_log.write(row)
            if self.tensorboard:
                values = {f"val/{k}": v for k, v in row.items() if k not in ("step", "epoch")}
                self.accelerator.log(values, step=self.step)
        shown = ", ".join(f"{k} {_format(v)}" for k, v in row.items() if k not in ("step", "epoch", "seconds"))
        self._write_progress(f"step {self.step}/{self.total_steps} validation: {shown}")
        return results

    @torch.no_grad()
    def recalibrate_batch_norm(self, model: torch.nn.Module) -> int:
        """Recompute batch-norm running statistics over fixed training batches ("precise BN").

        The running averages (momentum 0.1) trail the weights; at a high learning rate
        they describe weights of many steps ago, and evaluation-mode outputs drift. As in
        ``torch.optim.swa_utils.update_bn`` the statistics are reset and re-estimated as a
        plain average over ``precise_bn_batches`` batches in training mode; unlike it, frozen
        (evaluation-mode) layers are left alone and no graph is built. The batches are the
        same on every process and at every call, so the result is reproducible on resume.

        Returns:
            Number of batch-norm layers recalibrated.
        """
        c = self.config
        was_training = model.training
        model.train()
        layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                  and m.training and m.track_running_stats]
        if not layers or c.precise_bn_batches == 0:
            model.train(was_training)
            return 0
        momenta = {layer: layer.momentum for layer in layers}
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the batches
        n = min(self.n_train, c.precise_bn_batches * c.data.batch_size)
        order = np.random.default_rng([c.seed, 7919]).permutation(self.n_train)[:n].tolist()
        batches = [order[i:i + c.data.batch_size] for i in range(0, n, c.data.batch_size)]
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(c.seed)
            for batch in make_loader(self.train_data, batches, c.data.workers, seed=c.seed):
                with self.accelerator.autocast():
                    self.task.validation_step(model, move_to_device(batch, self.accelerator.device))
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        model.train(was_training)
        return len(layers)

    def _rng_devices(self) -> list:
        return [torch.cuda.current_device()] if self.accelerator.device.type == "cuda" else []

    def _val_batch_size(self) -> int:
        return self.config.data.val_batch_size or self.config.data.batch_size

    def _write_progress(self, text: str) -> None:
        if not self.is_main:
            return
        if self.progress_bar is not None:
            self.progress_bar.write(text)
        else:
            print(text, flush=True)

    def _log_train(self, sums: dict[str, torch.Tensor], n_steps: int, n_samples: int, grad_norm,
                   seconds: float) -> None:
        keys = sorted(sums)
        local = torch.stack([sums[k] for k in keys]) / n_steps
        mean = self.accelerator.reduce(local, reduction="mean")  # every process takes part
        terms = {k: float(mean[i]) for i, k in enumerate(keys)}
        loss = sum(terms.values())
        if not math.isfinite(loss):
            raise CardiacNetsError(f"training loss is {loss} at step {self.step} (training diverged; "
                                   "lower optimizer.lr or set clip_grad_norm)")
        row = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
               "lr": self.scheduler.get_last_lr()[0], "loss": loss, **terms,
               "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
               "samples_per_s": round(n_samples * self.world_size / max(seconds, 1e-9), 2),
               "elapsed_s": round(self.train_seconds, 2)}
        if self.is_main:
            self.train_log.write(row)
            if self.tensorboard:
                self.accelerator.log({f"train/{k}": v for k, v in row.items() if k not in ("step",)}, step=self.step)
            if self.progress_bar is not None:
                self.progress_bar.set_postfix(loss=f"{loss:.4g}", lr=f"{row['lr']:.2e}")

    # --- the loop ----------------------------------------------------------------------------------------------
    def run(self, progress: bool | None = None) -> TrainResult:
        """Train until the schedule ends or early stopping; validate, checkpoint and export."""
        c = self.config
        self.setup_data()
        self.setup_model()
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(c, self.run_dir / "config.yaml")
            if self.demographics is not None:
                self.demographics.save(self.run_dir / "demographics.json")
        keep = self.step if self.resume_from is not None else None
        self.train_log = CSVLog(self.run_dir / "train_log.csv", keep) if self.is_main else None
        self.val_log = CSVLog(self.run_dir / "val_log.csv", keep) if self.is_main else None
        if self.tensorboard:
            self.accelerator.init_trackers("tensorboard")
        show = c.logging.progress if progress is None else progress
        self._announce()
        from tqdm.auto import tqdm

        self.progress_bar = (tqdm(total=self.total_steps, initial=self.step, desc=c.task, dynamic_ncols=True)
                             if show and self.is_main else None)
        try:
            self._train_steps()
            if self.val_data is not None and self.last_val_step != self.step:
                self.validate()
            if self.last_checkpoint_step != self.step:
                self.save_checkpoint()
            exports = self._export()
        finally:
            if self.progress_bar is not None:
                self.progress_bar.close()
            if self.tensorboard:
                self.accelerator.end_training()
        result = TrainResult(
            run_dir=self.run_dir, step=self.step, total_steps=self.total_steps,
            epoch=round(self.step / self.steps_per_epoch, 4), stopped_early=self.stopped_early, val=self.last_val,
            best_val_loss=self.best_val_loss, best_step=self.best_step, train_seconds=round(self.train_seconds, 2),
            samples_per_s=round(self.samples_seen / self.train_seconds, 2) if self.train_seconds else 0.0,
            exports=exports)
        if self.is_main:
            summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
            summary["exports"] = {k: str(v) for k, v in exports.items()}
            ckpt.save_json(summary, self.run_dir / "summary.json")
        return result

    def _announce(self) -> None:
        c = self.config
        where = "resuming at step " + str(self.step) if self.resume_from is not None else "starting"
        tb = ("TensorBoard in " + str(self.run_dir / "tensorboard") if self.tensorboard else
              "TensorBoard off" if c.logging.tensorboard == "off" else
              "tensorboard not installed: CSV logs only")
        self._print(
            f"train {c.task}: {where}; model {self.task.model_name} ({self.n_trainable:,} of {self.n_parameters:,} "
            f"parameters trained); {self.n_train} training subjects"
            f"{f', {len(self.val_data)} validation' if self.val_data is not None else ''}; "
            f"{self.total_steps} steps of {c.data.batch_size} x {self.world_size} process(es) x "
            f"{c.gradient_accumulation_steps} accumulation ({self.steps_per_epoch} per epoch); "
            f"{self.accelerator.device}, precision {c.mixed_precision}; {tb}; logs in {self.run_dir}")

    def _train_steps(self) -> None:
        c = self.config
        accum = c.gradient_accumulation_steps
        acc = self.accelerator
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        window_steps = window_samples = 0
        window_seconds = 0.0  # training time of the log window (validation and checkpoints excluded)
        grad_norm = None
        while self.step < self.total_steps and not self.stopped_early:
            epoch, steps_done = divmod(self.step, self.steps_per_epoch)
            sampler = EpochBatchSampler(self.n_train, c.data.batch_size, c.seed, epoch, num_replicas=self.world_size,
                                        rank=self.rank, start_batch=steps_done * accum,
                                        max_batches=self.steps_per_epoch * accum)
            loader = make_loader(self.train_data, sampler, c.data.workers, pin_memory=acc.device.type == "cuda",
                                 seed=c.seed)
            micro = 0
            tick = time.perf_counter()
            for batch in loader:
                batch = move_to_device(batch, acc.device)
                generator = torch.Generator().manual_seed(step_seed(c.seed, self.step, micro, self.rank))
                with acc.accumulate(self.model):
                    with acc.autocast():
                        terms = self.task.training_step(self.model, batch, generator)
                    loss = sum(terms.values())
                    acc.backward(loss)
                    if acc.sync_gradients and c.clip_grad_norm is not None:
                        grad_norm = acc.clip_grad_norm_(self.model.parameters(), c.clip_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value.detach().float() / accum
                n = batch_size_of(batch)
                window_samples += n
                self.samples_seen += n * self.world_size
                micro += 1
                if not acc.sync_gradients:
                    continue
                micro = 0
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.unwrapped)
                self.step += 1
                window_steps += 1
                seconds = time.perf_counter() - tick
                self.train_seconds += seconds
                window_seconds += seconds
                if self.progress_bar is not None:
                    self.progress_bar.update(1)
                if self.step % c.logging.every_steps == 0 or self.step == self.total_steps:
                    self._log_train(sums, window_steps, window_samples, grad_norm, window_seconds)
                    sums, window_steps, window_samples, window_seconds = {}, 0, 0, 0.0
                self._after_step()
                tick = time.perf_counter()
                if self.step >= self.total_steps or self.stopped_early:
                    break

    def _after_step(self) -> None:
        c = self.config
        epoch_end = self.step % self.steps_per_epoch == 0
        if self.val_data is not None and ((c.val_every_steps and self.step % c.val_every_steps == 0)
                                          or (not c.val_every_steps and epoch_end)):
            self.validate()
        if (c.checkpoint.every_steps and self.step % c.checkpoint.every_steps == 0) or \
                (not c.checkpoint.every_steps and epoch_end):
            self.save_checkpoint()

    def _export(self) -> dict[str, Path]:
        model = self._eval_model()
        es = self.config.early_stopping
        if es.patience is not None and es.restore_best and self.best_step is not None and self.best_step != self.step:
            ckpt.load_weights(model, self._best_path(self.best_step))  # recalibrated when it was validated
            self._write_progress(f"exporting the weights of the best validation (step {self.best_step})")
        elif self.last_bn_step != self.step:
            self.recalibrate_batch_norm(model)
        exports = {}
        if self.is_main:
            # Exports hold plain (contiguous) tensors whatever the training memory format.
            exports = self.task.export(model.to(memory_format=torch.contiguous_format), self.run_dir)
        self.accelerator.wait_for_everyone()
        return exports


def train(config: TrainConfig, run_dir: str | os.PathLike | None = None, resume: bool = False,
          progress: bool | None = None) -> TrainResult:
    """Train a task as configured.

    Args:
        config: the `TrainConfig` (validated here).
        run_dir: the run folder; default ``config.output_dir``.
        resume: continue from the run folder's latest checkpoint, exactly where it stopped
            (the config must match the checkpoint's, apart from logging/checkpoint settings
            and ``data.workers``).
        progress: show a progress bar (default ``config.logging.progress``).

    Returns:
        A `TrainResult`.

    Raises:
        ConfigError: invalid or inconsistent settings.
        InputError: a missing or unusable training set, checkpoint or init folder.
    """
    run_dir = run_dir if run_dir is not None else config.output_dir
    if run_dir is None:
        raise ConfigError("no run folder: pass --out RUN_DIR or set output_dir in the config")
    trainer = Trainer(config, Path(run_dir), resume=resume)
    try:
        return trainer.run(progress=progress)
    finally:
        _release_accelerate_state()


def _release_accelerate_state() -> None:
    """Forget Accelerate's process-wide settings, so a later `train` in this process may use another
    precision or device (Accelerate refuses to change them otherwise). In a multi-process run the
    process state (and its process group) is kept."""
    from accelerate.state import AcceleratorState, GradientState

    single_process = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    AcceleratorState._reset_state(reset_partial_state=single_process)
    GradientState._reset_state()
