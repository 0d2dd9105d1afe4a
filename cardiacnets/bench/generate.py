"""Cine generation speed: seconds per cine and cines/s, baseline and tuned, in the same run.

Each measurement generates demo-size cines (25 frames of 64 × 64 from a 12 ×
2500 ECG) with ``--steps`` DPM-Solver++ steps and classifier-free guidance
(conditional and null branch batched together), end to end through
`ECGToCMRPipeline.__call__`: ECG encoding, the denoising loop and decoding
every frame. Without ``--model`` the pipeline holds freshly initialised demo
models (the cost does not depend on the weights); with it, the trained
pipeline folder.

- baseline: fp32, diffusers' default attention (PyTorch's fused
  ``scaled_dot_product_attention``), one cine per call;
- tuned: bf16 autocast and matmul-softmax attention, ``--batch-sizes`` cines per
  call (the sampler steps are shared, so per-step overhead is amortised).

Times are medians of ``--repeat`` calls after a warm-up call. On a shared
machine wall-clock times depend on other load, so the process CPU time per
cine and the 1-minute load average are reported too. The goal is one
demo-size cine in at most 5 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

#: Seconds per demo-size cine the tuned setting should reach (25 DPM-Solver++ steps, guidance).
TARGET_SECONDS_PER_CINE = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="pipeline folder to time (default: untrained demo models of the same size)")
    parser.add_argument("--steps", type=int, default=25, help="DPM-Solver++ steps (default 25)")
    parser.add_argument("--guidance", type=float, default=3.0, help="guidance scale (default 3)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8],
                        help="cines per call in the tuned setting (default 1 4 8)")
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per setting (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def _time_calls(pipe, batch_size: int, steps: int, guidance: float, precision: str, repeat: int) -> dict:
    import torch

    n_samples = pipe.condition_encoder.n_samples
    ecg = 0.3 * torch.randn(batch_size, 12, n_samples, generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_inference_steps=steps, guidance_scale=guidance, scheduler="dpm++", precision=precision)
    pipe(ecg, generator=torch.Generator().manual_seed(0), **kwargs)  # warm-up (allocator, kernels)
    walls, cpus = [], []
    for i in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = pipe(ecg, generator=torch.Generator().manual_seed(i), **kwargs)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    assert out.cines.shape[0] == batch_size
    seconds = statistics.median(walls)
    return {"batch_size": batch_size, "precision": precision, "seconds_per_call": round(seconds, 3),
            "seconds_per_cine": round(seconds / batch_size, 3), "cines_per_s": round(batch_size / seconds, 3),
            "cpu_seconds_per_cine": round(statistics.median(cpus) / batch_size, 3)}


def run(args: argparse.Namespace) -> dict:
    import torch

    from cardiacnets.errors import ConfigError

    if args.steps < 1 or args.repeat < 1 or min(args.batch_sizes) < 1:
        raise ConfigError("--steps, --repeat and --batch-sizes must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is not None:
        from cardiacnets.generation import ECGToCMRPipeline

        pipe = ECGToCMRPipeline.from_pretrained(args.model)
        source = str(args.model)
    else:
        from cardiacnets.generation.zoo import untrained_pipeline

        pipe = untrained_pipeline()
        source = "untrained demo models (ecg_resnet1d of configs/demo/align.yaml, cmr_vae_demo, cine_unet3d_demo)"
    c = pipe.denoiser.config
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    pipe.denoiser.set_attention("sdpa")
    baseline = _time_calls(pipe, 1, args.steps, args.guidance, "fp32", args.repeat)
    baseline["attention"] = "sdpa"
    pipe.denoiser.set_attention("math")
    tuned = []
    for batch_size in args.batch_sizes:
        result = _time_calls(pipe, batch_size, args.steps, args.guidance, "bf16", args.repeat)
        result["attention"] = "math"
        tuned.append(result)
    pipe.denoiser.set_attention(c.attention)
    best = min(tuned, key=lambda r: r["seconds_per_cine"])
    single = next((r for r in tuned if r["batch_size"] == 1), None)
    return {
        "model": source,
        "cine": {"frames": c.num_frames, "height": pipe.image_size, "width": pipe.image_size,
                 "latent": [c.latent_channels, c.num_frames, c.latent_size, c.latent_size]},
        "steps": args.steps, "scheduler": "dpm++", "guidance": args.guidance,
        "threads": torch.get_num_threads(),
        "baseline": baseline,
        "tuned": tuned,
        "speedup_single_cine": round(baseline["seconds_per_cine"] / single["seconds_per_cine"], 3) if single else None,
        "speedup_best": round(baseline["seconds_per_cine"] / best["seconds_per_cine"], 3),
        "best_seconds_per_cine": best["seconds_per_cine"],
        "target_seconds_per_cine": TARGET_SECONDS_PER_CINE,
        "meets_target_single_cine": bool(single and single["seconds_per_cine"] <= TARGET_SECONDS_PER_CINE),
        "load_average_1min": {"before": round(load_before, 2) if load_before is not None else None,
                              "after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
    }
