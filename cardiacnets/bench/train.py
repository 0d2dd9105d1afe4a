"""Training-step throughput and model FLOP utilisation of the encoders, plus memory flatness.

For each stage model — ECG pretraining (`ECGMAE`), the ECG encoder alone on
full-length input (as in alignment), CMR pretraining (`CMRMaskedModel`) and
alignment (`CardiacCLIP` with in-batch symmetric InfoNCE per view) — one
training step (forward, loss, backward, AdamW update) on synthetic batches of
the configured shape is timed in two ways in the same run: the tuned setting
(bf16 autocast, fused AdamW, optionally ``torch.compile``) and the baseline, the
same step in plain fp32 eager with the default AdamW. For the ECG steps the
tuned step is also timed with PyTorch's SDPA kernel in place of the models'
CPU attention path (`cardiacnets.models.layers.Attention`). FLOPs per step (forward + backward) are counted with
``torch.utils.flop_counter.FlopCounterMode`` on one step, not estimated;
model FLOP utilisation (MFU) is achieved FLOP/s ÷ this machine's matmul peak
for the dtype, measured in the same run as the best of several 2048³
matmuls in fp32 and in bf16 (before and after the steps, as the machine may
be shared). Step times are medians. The measurements run in a fresh process
whose OpenMP threads wait passively (``omp_wait_policy``; see
`BenchTrainConfig`), which on a shared machine is worth more than any model
change.

Memory: a short training run (DataLoader over a memory-mapped `TrainingSet`,
alignment model, bf16) on a 1k-subject and on a 10k-subject synthetic
training set (sparse zero arrays written with `create_arrays` and a manifest),
each in its own subprocess, reporting peak RSS (``VmHWM`` on Linux, where
``ru_maxrss`` of a child also counts its parent's memory at fork — see
`peak_rss`; ``ru_maxrss`` is reported beside it); they should agree within
10 %, since samples are read from memory maps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

#: MFU goal of the demo ECG encoder training steps (fraction of the bf16 matmul peak).
TARGET_MFU_BF16 = 0.25
#: Largest allowed relative difference of peak RSS between the 1k and 10k training sets.
TARGET_RSS_RATIO = 1.10


@dataclass
class StepConfig:
    """One benchmarked training step: a registered model, its overrides and the batch size."""

    model: str
    overrides: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32


@dataclass
class MemoryConfig:
    """The peak-RSS comparison.

    Attributes:
        subjects: sizes of the synthetic training sets compared (first = reference).
        steps: training steps of each run.
        batch_size: batch size of the runs.
        workers: DataLoader workers (only the main process's memory is compared).
        threads: torch threads of the runs (``None``: PyTorch's default).
        model: registered alignment model trained in the runs.
        overrides: its overrides.
    """

    subjects: list[int] = field(default_factory=lambda: [1000, 10000])
    steps: int = 20
    batch_size: int = 16
    workers: int = 0
    threads: int | None = None
    model: str = "cardiac_clip_demo"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchTrainConfig:
    """``cardiacnets bench train`` settings (configs/demo/bench_train.yaml).

    Attributes:
        ecg_pretrain: the ECG pretraining step (an `ECGMAE`).
        ecg_encoder: the ECG encoder step on full-length input (an `ECGViT`/`ResNet1D`).
        cmr_pretrain: the CMR pretraining step (a `CMRMaskedModel`).
        align: the alignment step (a `CardiacCLIP`).
        steps: timed steps per setting (after ``warmup_steps``).
        baseline_steps: timed steps of the fp32 eager baseline.
        warmup_steps: untimed steps first (allocator, oneDNN kernel selection, compilation).
        peak_matmul_size: side of the square matmuls measuring the peak (2048 as specified; smaller
            only for tests).
        precision: autocast dtype of the tuned setting.
        compile: ``torch.compile`` the tuned models.
        channels_last: keep the tuned models' 4-D weights channels-last (as ``channels_last`` in a
            training config; oneDNN's bf16 convolutions are about 3x faster that way on this CPU).
        compare_attention: also time the tuned ECG steps with ``attention: sdpa`` (PyTorch's
            fused kernel) instead of the models' CPU path, to show what that choice buys.
        stages: which of the four steps to run.
        threads: torch threads for the steps and the peak (``None``: PyTorch's default, one per core).
        omp_wait_policy: ``OMP_WAIT_POLICY`` of the measuring processes (``inherit`` keeps the
            environment's). ``passive``: OpenMP threads waiting at a barrier sleep instead of
            spinning. On the 2-core development machine shared with other jobs (load 4), the
            spinning default made the demo ECG steps 2–2.5× slower than passive waiting (MAE step
            6.6 s vs 2.6 s at batch 64; a thread that spins while its partner is descheduled
            stalls every parallel region).
        memory: the peak-RSS comparison (``subjects: []`` skips it).
        seed: seed of the synthetic batches and models.
    """

    ecg_pretrain: StepConfig = field(default_factory=lambda: StepConfig("ecg_mae_tiny", batch_size=64))
    ecg_encoder: StepConfig = field(default_factory=lambda: StepConfig("ecg_vit_tiny", batch_size=64))
    cmr_pretrain: StepConfig = field(default_factory=lambda: StepConfig("cmr_mim_demo", batch_size=32))
    align: StepConfig = field(default_factory=lambda: StepConfig("cardiac_clip_demo", batch_size=32))
    steps: int = 6
    baseline_steps: int = 3
    warmup_steps: int = 2
    peak_matmul_size: int = 2048
    precision: Literal["bf16", "fp32"] = "bf16"
    compile: bool = False
    channels_last: bool = True
    compare_attention: bool = True
    stages: list[str] = field(default_factory=lambda: ["ecg_pretrain", "ecg_encoder", "cmr_pretrain", "align"])
    threads: int | None = None
    omp_wait_policy: Literal["passive", "active", "inherit"] = "passive"
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    seed: int = 0

    def validate(self) -> None:
        from cardiacnets.errors import ConfigError

        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown:
            raise ConfigError(f"bench train: unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"bench train: threads must be >= 1, got {self.threads}")
        if min(self.steps, self.baseline_steps, self.peak_matmul_size) < 1 or self.warmup_steps < 0:
            raise ConfigError("bench train: steps, baseline_steps and peak_matmul_size must be >= 1, warmup_steps >= 0")


STAGES = ("ecg_pretrain", "ecg_encoder", "cmr_pretrain", "align")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML of BenchTrainConfig (default: configs/demo/bench_train.yaml "
                                                    "values built in)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (e.g. steps=3)")


# --- measurement helpers -----------------------------------------------------------------------------------------

def matmul_peak_flops(dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a ``size``³ matmul in ``dtype`` over ``repeats`` timed runs (after one warm-up)."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best


def synthetic_batch(model, batch_size: int, generator) -> dict:
    """A random batch with the keys and shapes the model reads (from its config)."""
    import torch

    from cardiacnets.models.clip import CardiacCLIP
    from cardiacnets.models.cmr_encoder import CMREncoder
    from cardiacnets.models.cmr_mim import CMRMaskedModel
    from cardiacnets.models.ecg_mae import ECGMAE
    from cardiacnets.models.segmenter import CineSegmenter

    if hasattr(model, "example_inputs"):  # a CineDenoiser describes its own inputs
        return model.example_inputs(batch_size, generator)
    from diffusers import AutoencoderKL

    if isinstance(model, AutoencoderKL):  # a frame autoencoder: frames (B, 1, H, W)
        size = model.config.sample_size
        return {"frames": torch.rand(batch_size, 1, size, size, generator=generator)}
    if isinstance(model, CineSegmenter):  # cine frames (B, 1, H, W) and their labels
        size = 8 * model.config.total_stride
        return {"frames": torch.rand(batch_size, 1, size, size, generator=generator),
                "labels": torch.randint(model.config.n_classes, (batch_size, size, size), generator=generator)}
    batch: dict[str, Any] = {}
    ecg_config = cmr_configs = None
    if isinstance(model, ECGMAE):
        ecg_config = model.config.encoder
    elif isinstance(model, CMRMaskedModel):
        cmr_configs = {v: model.config.encoders[v] for v in model.config.views}
    elif isinstance(model, CardiacCLIP):
        ecg_config = model.ecg_encoder.config
        cmr_configs = {v: enc.config for v, enc in model.cmr_encoders.items()}
    elif isinstance(model, CMREncoder):
        cmr_configs = {"sa": model.config}
    else:
        ecg_config = model.config
    if ecg_config is not None:
        batch["ecg"] = 0.3 * torch.randn(batch_size, ecg_config.n_leads, ecg_config.n_samples, generator=generator)
        batch["ecg_lead_mask"] = torch.ones(batch_size, ecg_config.n_leads, dtype=torch.bool)
        batch["ecg_sample_mask"] = torch.ones(batch_size, ecg_config.n_samples, dtype=torch.bool)
        if ecg_config.film:
            batch["demographics"] = torch.randn(batch_size, ecg_config.n_demographics, generator=generator)
    for view, cfg in (cmr_configs or {}).items():
        batch[f"cmr_{view}"] = torch.rand(batch_size, cfg.slices, cfg.frames, cfg.img_size, cfg.img_size,
                                          generator=generator)
        batch[f"has_{view}"] = torch.ones(batch_size, dtype=torch.bool)
    return batch


def step_losses(model, batch: dict) -> dict:
    """The named loss terms of one training step for any stage model.

    Pretraining models return their own terms; `CardiacCLIP` gets the in-batch
    symmetric InfoNCE per view; a bare encoder (ECG or CMR) gets an InfoNCE
    between its embeddings and the same embeddings rolled by one row, a loss of
    the alignment's shape that needs no second model.
    """
    import torch.nn.functional as F

    from cardiacnets.models.clip import CardiacCLIP
    from cardiacnets.models.cmr_encoder import CMREncoder
    from cardiacnets.models.encoders import is_ecg_encoder
    from cardiacnets.models.layers import info_nce

    if isinstance(model, CardiacCLIP):
        out = model(batch)
        return {f"loss_clip_{v}": info_nce(out["ecg"], out[f"cmr_{v}"], out["logit_scale"]) for v in model.config.views}
    if "timestep" in batch:  # a CineDenoiser: mean square of its prediction
        return {"loss_mse": model(**batch).sample.float().pow(2).mean()}
    if "frames" in batch and "labels" not in batch:  # a frame autoencoder (AutoencoderKL)
        from cardiacnets.generation.vae import vae_losses

        return vae_losses(model, batch["frames"], kl_weight=1e-6)
    if "frames" in batch and "labels" in batch:  # a CineSegmenter
        return {"loss_ce": F.cross_entropy(model(batch["frames"]).float(), batch["labels"])}
    if isinstance(model, CMREncoder):
        embedding = model(batch["cmr_sa"])
    elif is_ecg_encoder(model):
        embedding = model(batch["ecg"], batch.get("ecg_lead_mask"), batch.get("demographics"))
    else:
        return model(batch)
    z = F.normalize(embedding.float(), dim=-1)
    return {"loss_contrastive": info_nce(z, z.roll(1, dims=0), 10.0)}


def _step(model, optimizer, batch: dict, autocast_dtype) -> float:
    import torch

    with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        losses = step_losses(model, batch)
    loss = sum(losses.values())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def count_step_flops(model, batch: dict, autocast_dtype) -> int:
    """FLOPs of one forward + backward pass, counted by ``FlopCounterMode`` (gradients are discarded)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            losses = step_losses(model, batch)
        sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def time_steps(model, batch: dict, autocast_dtype, steps: int, warmup: int, fused_optimizer: bool = True) -> dict:
    """Median wall time of training steps (AdamW, fused or PyTorch's default) after warm-up steps."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused_optimizer or None)
    for _ in range(warmup):
        _step(model, optimizer, batch, autocast_dtype)
    times, losses = [], []
    for _ in range(steps):
        start = time.perf_counter()
        losses.append(_step(model, optimizer, batch, autocast_dtype))
        times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times), "min_step_s": min(times), "finite": bool(np.isfinite(losses).all())}


def _sdpa_variant(model_config):
    """The config with the ECG ViT's attention forced to SDPA, or ``None`` if it has no ECG ViT."""
    import dataclasses

    from cardiacnets.models.ecg_mae import ECGMAEConfig
    from cardiacnets.models.ecg_vit import ECGViTConfig

    if isinstance(model_config, ECGViTConfig):
        return dataclasses.replace(model_config, attention="sdpa")
    if isinstance(model_config, ECGMAEConfig):
        return dataclasses.replace(model_config, encoder=dataclasses.replace(model_config.encoder, attention="sdpa"))
    return None


def bench_stage(spec: StepConfig, config: BenchTrainConfig) -> dict:
    """Time one stage's training step, tuned and as the fp32 eager baseline, and count its FLOPs."""
    import torch

    from cardiacnets.config import to_dict
    import cardiacnets.generation  # noqa: F401  (registers the generation models a stage may name)
    from cardiacnets.models import create_model
    from cardiacnets.models.layers import count_parameters

    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = create_model(spec.model, **spec.overrides).train()
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    batch = synthetic_batch(model, spec.batch_size, generator)
    flops = count_step_flops(model, batch, None)
    tuned_dtype = torch.bfloat16 if config.precision == "bf16" else None
    tuned_model = model.to(memory_format=torch.channels_last) if config.channels_last else model
    tuned_model = torch.compile(tuned_model) if config.compile else tuned_model
    result = {"spec": to_dict(spec), "parameters": count_parameters(model), "flops": flops}
    result["tuned"] = time_steps(tuned_model, batch, tuned_dtype, config.steps, config.warmup_steps)
    sdpa_config = _sdpa_variant(model.config) if config.compare_attention else None
    if sdpa_config is not None and sdpa_config != model.config:
        variant = type(model)(sdpa_config).train()
        variant.load_state_dict(initial_state)
        variant = variant.to(memory_format=torch.channels_last) if config.channels_last else variant
        result["tuned_sdpa"] = time_steps(variant, batch, tuned_dtype, config.steps, config.warmup_steps)
    baseline_model = create_model(spec.model, **spec.overrides).train()
    baseline_model.load_state_dict(initial_state)
    result["baseline"] = time_steps(baseline_model, batch, None, config.baseline_steps, 1, fused_optimizer=False)
    return result


def summarise_stage(raw: dict, config: BenchTrainConfig, peaks: dict) -> dict:
    """JSON summary of a `bench_stage` result against the measured matmul peaks (FLOP/s by dtype)."""
    spec, flops = StepConfig(**raw["spec"]), raw["flops"]

    def summary(timing: dict, peak_dtype: str) -> dict:
        achieved = flops / timing["step_s"]
        return {
            "step_ms": round(1000 * timing["step_s"], 1),
            "min_step_ms": round(1000 * timing["min_step_s"], 1),
            "samples_per_s": round(spec.batch_size / timing["step_s"], 2),
            "achieved_gflop_per_s": round(achieved / 1e9, 2),
            "mfu": round(achieved / peaks[peak_dtype], 4),
            "mfu_of_bf16_peak": round(achieved / peaks["bf16"], 4),
            "finite_loss": timing["finite"],
        }

    out = {
        "model": spec.model,
        "overrides": spec.overrides,
        "batch_size": spec.batch_size,
        "parameters": raw["parameters"],
        "gflop_per_step": round(flops / 1e9, 3),
        "gflop_per_sample": round(flops / 1e9 / spec.batch_size, 4),
        "tuned": {"precision": config.precision, "compile": config.compile,
                  **summary(raw["tuned"], config.precision)},
        "baseline_fp32_eager": summary(raw["baseline"], "fp32"),
        "speedup": round(raw["baseline"]["step_s"] / raw["tuned"]["step_s"], 2),
    }
    if "tuned_sdpa" in raw:
        out["tuned_with_sdpa_attention"] = summary(raw["tuned_sdpa"], config.precision)
        out["attention_speedup"] = round(raw["tuned_sdpa"]["step_s"] / raw["tuned"]["step_s"], 2)
    return out


# --- memory ------------------------------------------------------------------------------------------------------

def write_synthetic_training_set(root: Path, n_subjects: int, model_config) -> None:
    """A training set of ``n_subjects`` all-zero subjects (sparse arrays) shaped for an alignment model."""
    import pandas as pd
    import yaml

    from cardiacnets.data.store import DATASET_YAML, MANIFEST, ArraySpec, create_arrays

    root.mkdir(parents=True, exist_ok=True)
    ecg = model_config["ecg"]
    specs = [ArraySpec("ecg", (ecg["n_leads"], ecg["n_samples"]), "float16"), ArraySpec("ecg_lead_mask", (ecg["n_leads"],), "bool")]
    for view, cmr in model_config["cmr"].items():
        specs.append(ArraySpec(f"cmr_{view}", (cmr["slices"], cmr["frames"], cmr["img_size"], cmr["img_size"]), "float16"))
    create_arrays(root, n_subjects, specs)
    lead_mask = np.lib.format.open_memmap(root / "ecg_lead_mask.npy", mode="r+")
    lead_mask[:] = True
    del lead_mask
    ids = [f"{1000000 + i}" for i in range(n_subjects)]
    manifest = pd.DataFrame({"row": np.arange(n_subjects), "subject_id": ids, "patient_id": ids, "split": "train",
                             "has_ecg": True, "ecg_valid_start": 0, "ecg_valid_end": ecg["n_samples"]})
    for view in model_config["cmr"]:
        manifest[f"has_{view}"] = True
    manifest.to_csv(root / MANIFEST, index=False)
    info = {"format_version": 1, "source": "synthetic", "n_subjects": n_subjects,
            "arrays": [{"name": s.name, "row_shape": list(s.row_shape), "dtype": s.dtype} for s in specs]}
    (root / DATASET_YAML).write_text(yaml.safe_dump(info, sort_keys=False))


def memory_run(root: str, model_name: str, overrides_json: str, steps: int | str, batch_size: int | str,
               workers: int | str, threads: int | str = 0) -> dict:
    """A short alignment training run over a training set; returns peak RSS (run in a subprocess).

    Numbers may come as command-line strings; ``threads`` > 0 sets the torch thread count.
    """
    steps, batch_size, workers, threads = int(steps), int(batch_size), int(workers), int(threads)
    import torch
    from torch.utils.data import DataLoader

    from cardiacnets.data.store import TrainingSet
    import cardiacnets.generation  # noqa: F401  (registers the generation models a stage may name)
    from cardiacnets.models import create_model

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    dataset = TrainingSet(root, split="train")
    model = create_model(model_name, **json.loads(overrides_json)).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    done = 0
    start = time.perf_counter()
    while done < steps:
        for batch in loader:
            _step(model, optimizer, batch, torch.bfloat16)
            done += 1
            if done >= steps:
                break
    result = {"subjects": len(dataset), "steps": done, "seconds": round(time.perf_counter() - start, 2)}
    result.update(peak_rss())
    return result


def peak_rss() -> dict:
    """Peak resident memory of this process, in MiB.

    ``ru_maxrss_mib`` is ``getrusage(RUSAGE_SELF).ru_maxrss``. On Linux it is not
    this program's own peak when the process was started by a large one: the
    kernel carries the parent's resident size at ``fork`` across ``exec`` into
    ``ru_maxrss``. So where ``/proc/self/status`` exists, ``peak_rss_mib`` is its
    ``VmHWM`` (the high-water mark of this address space since ``exec``);
    elsewhere it is ``ru_maxrss`` (kilobytes on Linux, bytes on macOS).
    ``rss_source`` says which.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    maxrss_mib = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024
    out = {"ru_maxrss_mib": round(maxrss_mib, 1)}
    status = Path("/proc/self/status")
    if status.is_file():
        hwm_kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        out.update(peak_rss_mib=round(hwm_kib / 1024, 1), rss_source="VmHWM")
    else:
        out.update(peak_rss_mib=out["ru_maxrss_mib"], rss_source="ru_maxrss")
    return out


def bench_memory(config: MemoryConfig, tmp: Path, omp_wait_policy: str = "inherit") -> dict:
    """Peak RSS of the same short run on each training-set size, each in a fresh subprocess."""
    from cardiacnets.config import to_dict
    import cardiacnets.generation  # noqa: F401  (registers the generation models a stage may name)
    from cardiacnets.models import create_model

    model = create_model(config.model, **config.overrides)  # for the array shapes the runs will read
    shapes = {"ecg": to_dict(model.ecg_encoder.config),
              "cmr": {v: to_dict(enc.config) for v, enc in model.cmr_encoders.items()}}
    del model
    runs = []
    for n in config.subjects:
        root = tmp / f"set_{n}"
        write_synthetic_training_set(root, n, shapes)
        runs.append(_run_child("memory_run", [str(root), config.model, json.dumps(config.overrides), str(config.steps),
                                              str(config.batch_size), str(config.workers), str(config.threads or 0)],
                               omp_wait_policy))
    result: dict[str, Any] = {"model": config.model, "views": list(shapes["cmr"]), "runs": runs}
    if len(runs) >= 2:
        rss = [r["peak_rss_mib"] for r in runs]
        result["peak_rss_ratio"] = round(max(rss) / min(rss), 4)
        result["target_ratio"] = TARGET_RSS_RATIO
        result["meets_target"] = result["peak_rss_ratio"] <= TARGET_RSS_RATIO
    return result


# --- entry point -------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict:
    """Run the benchmark.

    Args:
        args: ``config`` (YAML path or None) and ``overrides``.

    Returns:
        JSON-ready dict: ``config``, ``torch_threads``, ``load_average_1min`` (start, end),
        ``peak_gflop_per_s`` (fp32, bf16), per stage under ``stages`` the tuned and baseline
        ``samples_per_s``, ``step_ms``, ``mfu`` and ``speedup`` (and for the ECG steps the tuned
        step with SDPA attention), ``meets_target`` (both ECG steps at ≥ 25 % of the bf16 peak),
        and ``memory``.
    """
    from cardiacnets.config import load_config, to_dict
    import cardiacnets.generation  # noqa: F401  (registers the generation models a stage may name)
    from cardiacnets.models import get_model_config

    config = load_config(BenchTrainConfig, args.config, args.overrides or [])
    for name in config.stages:  # config errors surface here, not inside the measuring process
        spec = getattr(config, name)
        get_model_config(spec.model, **spec.overrides)
    if config.memory.subjects:
        get_model_config(config.memory.model, **config.memory.overrides)
    load_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    # OpenMP reads its environment when torch loads, so the measurements run in a fresh process.
    measured = _run_child("measure_steps", [json.dumps(to_dict(config))], config.omp_wait_policy)
    peaks_before, peaks_after, raw = measured["peaks_before"], measured["peaks_after"], measured["stages"]
    threads = measured["threads"]
    # The machine may be shared: the best of the two measurements is the closest to its true peak.
    peaks = {k: max(peaks_before[k], peaks_after[k]) for k in peaks_before}
    stages = {name: summarise_stage(r, config, peaks) for name, r in raw.items()}
    result: dict[str, Any] = {
        "config": to_dict(config),
        "torch_threads": threads,
        # Other jobs on the machine depress every figure; the 1-minute load average at start and end says how much.
        "load_average_1min": [load_start, round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None],
        "peak_gflop_per_s": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "peak_gflop_per_s_before": {k: round(v / 1e9, 1) for k, v in peaks_before.items()},
        "peak_gflop_per_s_after": {k: round(v / 1e9, 1) for k, v in peaks_after.items()},
        "stages": stages,
        "target_mfu_bf16": TARGET_MFU_BF16,
    }
    ecg_steps = [stages[s]["tuned"]["mfu_of_bf16_peak"] for s in ("ecg_pretrain", "ecg_encoder") if s in stages]
    if ecg_steps:
        result["meets_target"] = min(ecg_steps) >= TARGET_MFU_BF16
    if config.memory.subjects:
        with tempfile.TemporaryDirectory(prefix="cardiacnets-bench-train-") as tmp:
            result["memory"] = bench_memory(config.memory, Path(tmp), config.omp_wait_policy)
    return result


def measure_steps(config_json: str) -> dict:
    """Peaks and stage measurements (run in the child process `run` starts).

    Args:
        config_json: the `BenchTrainConfig` as JSON.

    Returns:
        ``peaks_before``/``peaks_after`` (FLOP/s by dtype), ``stages`` (raw `bench_stage`
        results), ``threads``.
    """
    import torch

    from cardiacnets.config import from_dict

    config = from_dict(BenchTrainConfig, json.loads(config_json))
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    size = config.peak_matmul_size
    peaks_before = {"fp32": matmul_peak_flops(torch.float32, size), "bf16": matmul_peak_flops(torch.bfloat16, size)}
    stages = {name: bench_stage(getattr(config, name), config) for name in config.stages}
    peaks_after = {"fp32": matmul_peak_flops(torch.float32, size), "bf16": matmul_peak_flops(torch.bfloat16, size)}
    return {"peaks_before": peaks_before, "peaks_after": peaks_after, "stages": stages,
            "threads": torch.get_num_threads()}


def _run_child(function: str, arguments: list[str], omp_wait_policy: str) -> dict:
    """Call ``cardiacnets.bench.train.<function>(*arguments)`` in a fresh Python; return its JSON result."""
    env = dict(os.environ)
    if omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = omp_wait_policy.upper()
    code = (f"import json, sys; from cardiacnets.bench.train import {function}; "
            f"print('\\n' + json.dumps({function}(*sys.argv[1:])))")
    proc = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench train: {function} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
