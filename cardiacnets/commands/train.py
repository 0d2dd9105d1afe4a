"""``cardiacnets train CONFIG``: run a training stage (ECG pretraining, CMR pretraining, alignment).

Several processes (data parallel, embeddings gathered for the contrastive loss):

    accelerate launch --multi_gpu --num_processes N -m cardiacnets.cli train CONFIG      # N GPUs
    torchrun --nproc_per_node N -m cardiacnets.cli train CONFIG cpu=true                 # N CPU processes (gloo)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a stage (pretrain_ecg, pretrain_cmr, align) from a YAML config")
    p.add_argument("config", type=Path, help="TrainConfig YAML (e.g. configs/demo/align.yaml)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: output_dir of the config)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run folder's latest checkpoint exactly where it stopped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. data.path=runs/demo/dataset schedule.epochs=2")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cardiacnets.config import load_config
    from cardiacnets.train import TrainConfig, train

    config = load_config(TrainConfig, args.config, args.overrides)
    result = train(config, args.out, resume=args.resume, progress=False if args.no_progress else None)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    how = "stopped early" if result.stopped_early else "finished"
    print(f"{how} at step {result.step}/{result.total_steps} (epoch {result.epoch:g}) in "
          f"{result.train_seconds:.1f} s of training ({result.samples_per_s:.1f} samples/s)")
    if result.val:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.val.items())
        print(f"validation: {shown}")
        if result.best_val_loss is not None:
            print(f"best validation loss {result.best_val_loss:.4g} at step {result.best_step}")
    for name, folder in result.exports.items():
        print(f"exported {name}: {folder}")
    print(f"run folder: {result.run_dir} (config.yaml, train_log.csv, val_log.csv, checkpoints/, summary.json)")
    return 0
