"""Tests of ``cardiacnets bench train``: JSON structure on a tiny config (not timings), config errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from cardiacnets.bench.train import (BenchTrainConfig, count_step_flops, matmul_peak_flops, peak_rss, synthetic_batch,
                                     write_synthetic_training_set)
from cardiacnets.cli import main
from cardiacnets.config import load_config
from cardiacnets.data.store import TrainingSet
from cardiacnets.models import create_model

TINY_VIT = {"n_samples": 500, "width": 64, "depth": 1, "heads": 1, "embed_dim": 32}
TINY_CMR = {"frames": 4, "img_size": 32, "embed_dim": 32}
TINY_CLIP = {"ecg": {"model": "ecg_vit_tiny", "overrides": TINY_VIT},
             "cmr": {"sa": {"model": "cmr_encoder_demo", "overrides": TINY_CMR},
                     "la_4ch": {"model": "cmr_encoder_demo", "overrides": TINY_CMR}},
             "embed_dim": 16}
TINY_CONFIG = {
    "ecg_pretrain": {"model": "ecg_mae_tiny", "batch_size": 2,
                     "overrides": {"encoder": TINY_VIT, "decoder_width": 32, "decoder_depth": 1, "decoder_heads": 1}},
    "ecg_encoder": {"model": "ecg_vit_tiny", "batch_size": 2, "overrides": TINY_VIT},
    "cmr_pretrain": {"model": "cmr_mim_demo", "batch_size": 2,
                     "overrides": {"encoders": {"sa": TINY_CMR, "la_4ch": TINY_CMR}}},
    "align": {"model": "cardiac_clip_demo", "batch_size": 2, "overrides": TINY_CLIP},
    "steps": 1, "baseline_steps": 1, "warmup_steps": 0, "peak_matmul_size": 256, "threads": 1,
    "memory": {"subjects": [6, 30], "steps": 2, "batch_size": 2, "threads": 1, "model": "cardiac_clip_demo",
               "overrides": TINY_CLIP},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_demo_config_file_matches_defaults_and_the_demo_alignment():
    import dataclasses

    bench = load_config(BenchTrainConfig, "configs/demo/bench_train.yaml")
    assert dataclasses.replace(bench, align=BenchTrainConfig().align) == BenchTrainConfig()
    # The alignment step benchmarked is the model configs/demo/align.yaml trains.
    align = yaml.safe_load(open("configs/demo/align.yaml"))
    assert bench.align.model == align["model"]["name"] and bench.align.overrides == align["model"]["overrides"]
    assert bench.align.batch_size == align["data"]["batch_size"]


@pytest.mark.slow
def test_bench_train_json_on_tiny_config(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    out = tmp_path / "bench.json"
    assert main(["bench", "train", "--config", str(config), "--json", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert result["benchmark"] == "train" and "machine" in result
    assert set(result["peak_gflop_per_s"]) == {"fp32", "bf16"}
    assert set(result["stages"]) == {"ecg_pretrain", "ecg_encoder", "cmr_pretrain", "align"}
    for stage in result["stages"].values():
        assert stage["gflop_per_step"] > 0 and stage["parameters"] > 0 and stage["speedup"] > 0
        for setting in ("tuned", "baseline_fp32_eager"):
            entry = stage[setting]
            assert {"step_ms", "samples_per_s", "achieved_gflop_per_s", "mfu", "mfu_of_bf16_peak"} <= set(entry)
            assert entry["samples_per_s"] > 0 and entry["mfu"] > 0 and entry["finite_loss"]
        assert stage["tuned"]["precision"] == "bf16"
    for name in ("ecg_pretrain", "ecg_encoder"):  # the CPU attention path against PyTorch's SDPA kernel
        assert result["stages"][name]["tuned_with_sdpa_attention"]["samples_per_s"] > 0
        assert result["stages"][name]["attention_speedup"] > 0
    assert "tuned_with_sdpa_attention" not in result["stages"]["cmr_pretrain"]
    assert isinstance(result["meets_target"], bool) and result["target_mfu_bf16"] == 0.25
    assert result["torch_threads"] == 1 and result["config"]["omp_wait_policy"] == "passive"
    memory = result["memory"]
    assert [run["subjects"] for run in memory["runs"]] == [6, 30]
    assert all(run["steps"] == 2 and run["peak_rss_mib"] > 0 and run["ru_maxrss_mib"] > 0 for run in memory["runs"])
    assert memory["peak_rss_ratio"] >= 1.0 and isinstance(memory["meets_target"], bool)


def test_bench_train_config_errors(tmp_path, capsys):
    assert main(["bench", "train", "stages=[ecg_pretrain,decoder]"]) == 2
    assert "unknown stage(s) ['decoder']" in capsys.readouterr().err
    assert main(["bench", "train", "threads=0"]) == 2
    assert "threads must be >= 1" in capsys.readouterr().err
    assert main(["bench", "train", "align.model=cardiac_clip_huge"]) == 2
    assert "unknown model 'cardiac_clip_huge'" in capsys.readouterr().err
    bad = tmp_path / "bench.yaml"
    bad.write_text("ecg_encoder:\n  model: ecg_vit_tiny\n  batchsize: 4\n")
    assert main(["bench", "train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bench.yaml" in err and "ecg_encoder.batchsize" in err


def test_flop_count_of_a_linear_model_is_exact():
    # Forward: 2·B·in·out; backward: the input and the weight gradients, as many again each.
    model = torch.nn.Linear(8, 4)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, batch):
            return {"loss": self.inner(batch["x"]).pow(2).mean()}

    flops = count_step_flops(Wrapped(), {"x": torch.randn(5, 8, requires_grad=True)}, None)
    assert flops == 3 * 2 * 5 * 8 * 4


def test_matmul_peak_is_positive():
    assert matmul_peak_flops(torch.float32, size=128, repeats=2) > 0


def test_peak_rss_reads_this_process():
    result = peak_rss()
    assert result["peak_rss_mib"] > 0 and result["ru_maxrss_mib"] > 0
    assert result["rss_source"] in ("VmHWM", "ru_maxrss")
    if result["rss_source"] == "VmHWM":  # the high-water mark is at least the current resident size
        with open("/proc/self/status") as status:
            current_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        assert result["peak_rss_mib"] >= current_kib / 1024 - 1


def test_synthetic_training_set_reads_back(tmp_path):
    model = create_model("cardiac_clip_demo", **TINY_CLIP)
    shapes = {"ecg": {"n_leads": 12, "n_samples": 500},
              "cmr": {v: {"slices": 1, "frames": 4, "img_size": 32} for v in model.config.views}}
    write_synthetic_training_set(tmp_path / "set", 5, shapes)
    dataset = TrainingSet(tmp_path / "set", split="train")
    assert len(dataset) == 5
    sample = dataset[4]
    assert sample["ecg"].shape == (12, 500) and sample["ecg_lead_mask"].all()
    assert sample["cmr_sa"].shape == (1, 4, 32, 32) and sample["has_la_4ch"]
    batch = synthetic_batch(model, 3, torch.Generator().manual_seed(0))
    assert batch["ecg"].shape == (3, 12, 500) and batch["cmr_la_4ch"].shape == (3, 1, 4, 32, 32)
