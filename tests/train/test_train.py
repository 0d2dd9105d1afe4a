"""Tests of the training loop: every stage through the CLI, exact resume, accumulation, EMA, early
stopping, safe checkpoints and config errors.

Loop mechanics use a tiny regression task registered here (a 12 → 4 → 1 network on each lead's mean);
the stages run the registered models at tiny widths on a small simulated training set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from cardiacnets.cli import main
from cardiacnets.config import from_dict, load_config
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.train import Task, TrainConfig, register_task, train
from cardiacnets.train.checkpoint import latest_checkpoint, list_checkpoints

from support import REPO_ROOT
from support.datasets import simulated_training_set

# --- a tiny task for the loop mechanics --------------------------------------------------------------------------

TRAJECTORY: list[dict[str, torch.Tensor]] = []  # weights seen by each training step


@dataclass
class ToyOptions:
    dropout: float = 0.0
    constant_validation: bool = False
    batch_norm: bool = False


@register_task
class ToyTask(Task):
    """Predict the largest absolute ECG value from the mean of each lead."""

    name = "toy_regression"
    options_class = ToyOptions
    default_model = "toy"
    interrupt_at_call: int | None = None

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def required_modalities(self):
        return ["ecg"]

    def build_model(self):
        first = torch.nn.BatchNorm1d(12) if self.options.batch_norm else torch.nn.Dropout(self.options.dropout)
        return torch.nn.Sequential(first, torch.nn.Linear(12, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))

    def _loss(self, model, batch):
        x = batch["ecg"].mean(dim=-1)  # (B, 12)
        y = batch["ecg"].abs().amax(dim=(1, 2))
        return {"loss_mse": F.mse_loss(model(x).squeeze(-1).float(), y)}

    def training_step(self, model, batch, generator):
        self.calls += 1
        if self.interrupt_at_call is not None and self.calls == self.interrupt_at_call:
            raise KeyboardInterrupt  # as if the run were killed here
        TRAJECTORY.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return self._loss(model, batch)

    def validation_step(self, model, batch):
        if self.options.constant_validation:
            return {"loss_mse": torch.tensor(1.0)}
        return self._loss(model, batch)

    def export(self, model, run_dir):
        from safetensors.torch import save_file

        path = run_dir / "toy.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return {"toy": path}


# --- fixtures ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """20 simulated subjects preprocessed with the demo config (16 train, 2 val, 2 test)."""
    return simulated_training_set(tmp_path_factory.mktemp("train_set"), 20)


def toy_config(dataset: Path, **sections) -> TrainConfig:
    data = {
        "task": "toy_regression",
        "data": {"path": str(dataset), "batch_size": 4},
        "optimizer": {"lr": 0.05, "weight_decay": 0.01},
        "schedule": {"max_steps": 8, "warmup_steps": 2},
        "logging": {"every_steps": 1, "progress": False, "tensorboard": "off"},
    }
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    return from_dict(TrainConfig, data)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))


def read_rows(path: Path) -> list[dict]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


# --- loop mechanics ----------------------------------------------------------------------------------------------

def test_resume_after_kill_matches_uninterrupted_run(dataset, tmp_path, monkeypatch):
    config = dict(options={"dropout": 0.3}, checkpoint={"every_steps": 3, "keep_last": 5}, val_every_steps=2)
    full = train(toy_config(dataset, **config), tmp_path / "full")
    assert full.step == 8 and full.epoch == 2.0  # 16 subjects / batch 4 = 4 steps per epoch

    monkeypatch.setattr(ToyTask, "interrupt_at_call", 6)  # killed during step 6: checkpoint at step 3 survives
    with pytest.raises(KeyboardInterrupt):
        train(toy_config(dataset, **config), tmp_path / "killed")
    assert [p.name for p in list_checkpoints(tmp_path / "killed")] == ["step_00000003"]
    monkeypatch.setattr(ToyTask, "interrupt_at_call", None)
    torch.manual_seed(12345)  # whatever the process's random state, the checkpoint's is restored
    resumed = train(toy_config(dataset, **config), tmp_path / "killed", resume=True)
    assert resumed.step == 8

    expected, got = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-7)
    # The logs read as one run: rows written after the checkpoint by the killed session are replaced.
    full_rows, resumed_rows = read_rows(tmp_path / "full/train_log.csv"), read_rows(tmp_path / "killed/train_log.csv")
    assert [r["step"] for r in resumed_rows] == [str(s) for s in range(1, 9)]
    assert [float(r["loss"]) for r in resumed_rows] == pytest.approx([float(r["loss"]) for r in full_rows], rel=1e-6)
    assert [r["step"] for r in read_rows(tmp_path / "killed/val_log.csv")] == ["2", "4", "6", "8"]


def test_accumulation_equals_larger_batch(dataset, tmp_path):
    schedule = {"max_steps": 2, "warmup_steps": 0, "name": "constant"}
    big = train(toy_config(dataset, data={"batch_size": 8}, schedule=schedule), tmp_path / "big")
    small = train(toy_config(dataset, gradient_accumulation_steps=2, schedule=schedule), tmp_path / "accumulated")
    assert big.step == small.step == 2
    expected, got = final_weights(tmp_path / "big"), final_weights(tmp_path / "accumulated")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    single = train(toy_config(dataset, schedule=schedule), tmp_path / "single")  # batch 4, no accumulation
    assert single.step == 2
    assert not torch.allclose(final_weights(tmp_path / "single")["1.weight"], expected["1.weight"])


def test_ema_is_the_exponential_average_of_the_step_weights(dataset, tmp_path):
    TRAJECTORY.clear()
    decay = 0.6
    result = train(toy_config(dataset, ema={"enabled": True, "decay": decay}, schedule={"max_steps": 4}),
                   tmp_path / "ema")
    raw_final = final_weights(tmp_path / "ema")
    # Weights after step k: the weights step k + 1 saw, and the checkpoint's for the last step.
    after = [{k: v for k, v in w.items()} for w in TRAJECTORY[1:]] + [raw_final]
    ema = dict(after[0])  # the first update copies
    for weights in after[1:]:
        ema = {k: decay * ema[k] + (1 - decay) * weights[k] for k in ema}
    exported = load_file(str(result.exports["toy"]))
    for name, value in ema.items():
        torch.testing.assert_close(exported[name], value, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(exported["1.weight"], raw_final["1.weight"])
    assert (latest_checkpoint(tmp_path / "ema") / "ema.safetensors").is_file()


def test_early_stopping_stops_and_exports_the_best_weights(dataset, tmp_path):
    TRAJECTORY.clear()
    result = train(toy_config(dataset, options={"constant_validation": True}, val_every_steps=1,
                              early_stopping={"patience": 2}, schedule={"max_steps": 8}), tmp_path / "stop")
    assert result.stopped_early and result.step == 3 and result.best_step == 1
    assert len(read_rows(tmp_path / "stop/val_log.csv")) == 3
    best = load_file(str(tmp_path / "stop/best/step_00000001.safetensors"))
    exported = load_file(str(result.exports["toy"]))
    for name in best:
        torch.testing.assert_close(exported[name], best[name])
        torch.testing.assert_close(exported[name], TRAJECTORY[1][name])  # what step 2 started from


def test_precise_bn_recomputes_running_statistics_over_fixed_batches(dataset, tmp_path):
    import numpy as np

    from cardiacnets.data.store import TrainingSet

    result = train(toy_config(dataset, options={"batch_norm": True}, precise_bn_batches=2,
                              schedule={"max_steps": 3}), tmp_path / "bn")
    exported = load_file(str(result.exports["toy"]))
    # The statistics are a plain average over the 2 fixed batches of 4 training subjects.
    train_set = TrainingSet(dataset, split="train")
    chosen = np.random.default_rng([0, 7919]).permutation(len(train_set))[:8]
    inputs = torch.stack([torch.from_numpy(train_set[int(i)]["ecg"]).mean(dim=-1) for i in chosen])  # (8, 12)
    batch_means = inputs.view(2, 4, 12).mean(dim=1)
    batch_vars = inputs.view(2, 4, 12).var(dim=1, unbiased=True)
    torch.testing.assert_close(exported["0.running_mean"], batch_means.mean(dim=0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(exported["0.running_var"], batch_vars.mean(dim=0), rtol=1e-4, atol=1e-6)
    assert int(exported["0.num_batches_tracked"]) == 2


def test_checkpoint_with_malicious_pickle_is_refused(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    config_path = tmp_path / "toy.yaml"
    config_path.write_text(yaml.safe_dump({
        "task": "toy_regression", "data": {"path": str(dataset), "batch_size": 4},
        "schedule": {"max_steps": 4}, "checkpoint": {"every_steps": 2},
        "logging": {"progress": False, "tensorboard": "off"}}))
    assert main(["train", str(config_path), "--out", str(run), "--no-progress", "schedule.max_steps=2"]) == 0
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('code ran')",))

    optimizer_file = latest_checkpoint(run) / "optimizer.pt"
    torch.save({"state": Payload(), "param_groups": []}, optimizer_file)
    capsys.readouterr()
    argv = ["train", str(config_path), "--out", str(run), "--resume", "--no-progress", "schedule.max_steps=2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "optimizer.pt" in err and "refused" in err
    assert not marker.exists()


def test_config_errors(dataset, tmp_path, capsys):
    config_path = tmp_path / "toy.yaml"
    config_path.write_text(yaml.safe_dump({
        "task": "toy_regression", "data": {"path": str(dataset), "batch_size": 4}, "schedule": {"max_steps": 2},
        "logging": {"progress": False, "tensorboard": "off"}}))
    run = str(tmp_path / "run")

    def fails(*overrides, resume=False) -> str:
        capsys.readouterr()
        argv = ["train", str(config_path), "--out", run, *overrides] + (["--resume"] if resume else [])
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "unknown config key 'optimizer.lrr'" in fails("optimizer.lrr=0.1")
    assert "set exactly one of epochs and max_steps" in fails("schedule.epochs=2")
    assert "unknown task 'nope'" in fails("task=nope")
    assert "unknown config key 'options.foo'" in fails("options.foo=1")
    assert "unknown config key 'options.foo'" in fails("task=align", "options.foo=1")
    assert "mixed_precision fp16 needs a GPU" in fails("mixed_precision=fp16", "cpu=true")
    assert "data.path is empty" in fails("data.path=")
    missing = tmp_path / "no_such_set"
    err = fails(f"data.path={missing}")
    assert str(missing) in err and "not a cardiacnets training set" in err
    assert "fewer than one optimiser step" in fails("data.batch_size=64")
    assert "no checkpoint to resume" in fails(resume=True)

    assert main(["train", str(config_path), "--out", run]) == 0
    assert "already holds checkpoints; pass --resume" in fails()
    err = fails("optimizer.lr=0.5", resume=True)
    assert "optimizer.lr" in err and "differs from the checkpoint" in err
    # A finished run resumed with its own config just exports again.
    assert main(["train", str(config_path), "--out", run, "--resume", "logging.every_steps=5"]) == 0


def test_train_config_round_trip(dataset, tmp_path):
    result = train(toy_config(dataset), tmp_path / "run")
    saved = load_config(TrainConfig, result.run_dir / "config.yaml")
    assert saved == toy_config(dataset)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["step"] == 8 and "val_loss" in summary["val"]
    assert json.loads((result.run_dir / "demographics.json").read_text())["columns"] == ["age_years", "sex_male", "bmi"]


def test_train_config_validation_direct(dataset, tmp_path):
    with pytest.raises(ConfigError, match="early_stopping.patience needs a validation split"):
        from_dict(TrainConfig, {"task": "align", "data": {"path": "x", "val_split": None},
                                "early_stopping": {"patience": 2}})
    with pytest.raises(ConfigError, match="no run folder"):
        train(from_dict(TrainConfig, {"task": "toy_regression", "data": {"path": "x"}}))
    with pytest.raises(InputError, match="no subjects in split 'nope'"):
        train(toy_config(dataset, data={"val_split": "nope"}), tmp_path / "run")
    with pytest.raises(InputError, match="no_model.*not a saved model"):
        train(from_dict(TrainConfig, {"task": "pretrain_ecg", "data": {"path": str(dataset), "batch_size": 4},
                                      "init": {"model": str(tmp_path / "no_model")}}), tmp_path / "run2")


# --- every stage end to end through the command line -------------------------------------------------------------

TINY_ECG = {"n_samples": 2500, "patch_size": 250, "width": 64, "depth": 1, "heads": 1, "embed_dim": 32}
TINY_CMR = {"backbone": "resnet10t", "slices": 1, "frames": 25, "img_size": 32, "embed_dim": 32}


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_stages_end_to_end_through_the_cli(dataset, tmp_path):
    from cardiacnets.models.clip import CardiacCLIP
    from cardiacnets.models.cmr_encoder import CMREncoder
    from cardiacnets.models.ecg_mae import ECGMAE
    from cardiacnets.models.ecg_vit import ECGViT
    from cardiacnets.models.pretrained import load_pretrained

    common = {"data": {"path": str(dataset), "batch_size": 4}, "schedule": {"max_steps": 2, "warmup_steps": 1},
              "logging": {"every_steps": 1, "progress": False}, "val_every_steps": 1}
    ecg_cfg = write_config(tmp_path / "ecg.yaml", {
        "task": "pretrain_ecg", **common, "mixed_precision": "bf16",
        "model": {"name": "ecg_mae_tiny", "overrides": {
            "encoder": TINY_ECG, "decoder_width": 32, "decoder_depth": 1, "decoder_heads": 1}}})
    assert main(["train", str(ecg_cfg), "--out", str(tmp_path / "ecg")]) == 0
    assert isinstance(load_pretrained(tmp_path / "ecg/model"), ECGMAE)
    assert isinstance(load_pretrained(tmp_path / "ecg/ecg_encoder"), ECGViT)
    assert {"loss_mae", "loss_contrastive"} <= set(read_rows(tmp_path / "ecg/train_log.csv")[0])

    cmr_cfg = write_config(tmp_path / "cmr.yaml", {
        "task": "pretrain_cmr", **common, "channels_last": True,
        "model": {"name": "cmr_mim_demo", "overrides": {
            "encoders": {"sa": TINY_CMR, "la_4ch": TINY_CMR}, "decoder_width": 16}}})
    assert main(["train", str(cmr_cfg), "--out", str(tmp_path / "cmr")]) == 0
    for view in ("sa", "la_4ch"):
        assert isinstance(load_pretrained(tmp_path / f"cmr/cmr_{view}_encoder"), CMREncoder)

    align_cfg = write_config(tmp_path / "align.yaml", {
        "task": "align", **common, "mixed_precision": "bf16", "channels_last": True,
        "model": {"name": "cardiac_clip_demo", "overrides": {"embed_dim": 16}},
        "init": {"ecg_encoder": str(tmp_path / "ecg/ecg_encoder"),
                 "cmr_encoders": {"sa": str(tmp_path / "cmr/cmr_sa_encoder"),
                                  "la_4ch": str(tmp_path / "cmr/cmr_la_4ch_encoder")}},
        "options": {"ecg_max_shift_samples": 50, "lead_drop_prob": 0.2, "subset_prob": 0.2}})
    assert main(["train", str(align_cfg), "--out", str(tmp_path / "align")]) == 0
    clip = load_pretrained(tmp_path / "align/model")
    assert isinstance(clip, CardiacCLIP) and clip.config.embed_dim == 16
    assert clip.config.ecg.overrides["width"] == 64  # the pretrained encoder's config came along
    val = read_rows(tmp_path / "align/val_log.csv")[-1]
    assert {"loss_clip_sa", "loss_clip_la_4ch", "top1_ecg_to_sa", "top1_sa_to_ecg", "logit_scale"} <= set(val)
    assert clip.config.ecg.init_from == str(tmp_path / "ecg/ecg_encoder")
    saved_config = yaml.safe_load((tmp_path / "align/config.yaml").read_text())
    assert saved_config["init"]["ecg_encoder"] == str(tmp_path / "ecg/ecg_encoder")
    assert saved_config["options"] == {"gather": True, "ecg_max_shift_samples": 50, "lead_drop_prob": 0.2,
                                       "subset_prob": 0.2, "val_candidates": 100}


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_global_batch(dataset, tmp_path):
    """torchrun with 2 CPU processes x batch 4 (gathered negatives) == 1 process x batch 8."""
    import signal
    import socket
    import subprocess
    import sys

    # Frozen CMR encoders (batch norm in eval mode) and no random augmentation: the two runs are the same
    # computation up to the order of floating-point sums.
    config = write_config(tmp_path / "align.yaml", {
        "task": "align", "data": {"path": str(dataset), "batch_size": 4}, "schedule": {"max_steps": 2},
        "model": {"name": "cardiac_clip_demo", "overrides": {
            "ecg": {"model": "ecg_vit_tiny", "overrides": TINY_ECG},
            "cmr": {"sa": {"model": "cmr_encoder_demo", "overrides": TINY_CMR},
                    "la_4ch": {"model": "cmr_encoder_demo", "overrides": TINY_CMR}},
            "embed_dim": 16, "freeze_cmr": True}},
        "logging": {"progress": False, "tensorboard": "off"}, "cpu": True})
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), "-m", "cardiacnets.cli", "train", str(config), "--out", str(tmp_path / "two")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        _, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both workers
        raise
    assert launcher.returncode == 0, stderr[-2000:]
    assert main(["train", str(config), "--out", str(tmp_path / "one"), "data.batch_size=8"]) == 0
    two, one = final_weights(tmp_path / "two"), final_weights(tmp_path / "one")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=2e-5)
    losses = [[float(r["loss"]) for r in read_rows(tmp_path / run / "train_log.csv")] for run in ("two", "one")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert json.loads((latest_checkpoint(tmp_path / "two") / "trainer_state.json").read_text())["world_size"] == 2


CONFIGS = [f"configs/{scale}/{stage}.yaml" for scale in ("demo", "paper")
           for stage in ("pretrain_ecg", "pretrain_cmr", "align")]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_load_and_name_valid_models(name):
    from cardiacnets.train import get_task_class

    config = load_config(TrainConfig, REPO_ROOT / name)
    task = get_task_class(config.task)(config)  # resolves the model config (unknown keys would raise)
    assert task.name == Path(name).stem and config.output_dir.endswith(task.name)
