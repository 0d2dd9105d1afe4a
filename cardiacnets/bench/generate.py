"""Cine generation speed: seconds per cine and cines/s, baseline and tuned, in the same run.

Each measurement generates demo-size cines (25 frames of 64 × 64 from a 12 ×
2500 ECG) with ``--steps`` DPM-Solver++ steps, end to end through the
pipeline's ``__call__``, for each generator in the same run: the direct
`ECGToCMRPipeline` (ECG encoding, the guided denoising loop over the cine's
latents, decoding every frame) and the anatomy-first `AnatomyFirstPipeline`
(ECG encoding and read-out, the anatomy prior's loop, decoding the anatomy,
the image denoiser's loop over every frame, decoding). Without ``--model`` the
pipelines hold freshly initialised demo models (the cost barely depends on the
weights); with it, trained pipeline folders.

- baseline: fp32, one cine per call (and, for the direct generator,
  diffusers' default attention, PyTorch's fused ``scaled_dot_product_attention``);
- tuned: bf16 autocast (matmul-softmax attention in the direct generator),
  ``--batch-sizes`` cines per call (the sampler steps are shared, so per-step
  overhead is amortised).

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
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="pipeline folder to time, of either generator; repeat it to time several in the same "
                             "run (default: untrained demo models of both generators, the same sizes)")
    parser.add_argument("--steps", type=int, default=25, help="DPM-Solver++ steps of each stage (default 25)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale (default: 3 for the direct generator, the pipeline's own for the "
                             "anatomy-first one)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8],
                        help="cines per call in the tuned setting (default 1 4 8)")
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per setting (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def _time_calls(pipe, batch_size: int, steps: int, guidance: float | None, precision: str, repeat: int) -> dict:
    import torch

    n_samples = pipe.condition_encoder.n_samples
    ecg = 0.3 * torch.randn(batch_size, 12, n_samples, generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_inference_steps=steps, scheduler="dpm++", precision=precision)
    if guidance is not None:
        kwargs["guidance_scale"] = guidance
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


def _pipelines(models: list[Path] | None) -> list[tuple[str, object, str]]:
    """(generator name, pipeline, source) of each pipeline to time."""
    from cardiacnets.generation.request import generator_kind, load_pipeline

    if models:
        named = []
        for folder in models:
            pipe = load_pipeline(folder)
            name = generator_kind(pipe)
            named.append((name if name not in {n for n, _, _ in named} else f"{name}_{len(named)}", pipe, str(folder)))
        return named
    from cardiacnets.generation.zoo import untrained_anatomy_pipeline, untrained_pipeline

    return [("direct", untrained_pipeline(),
             "untrained demo models (ecg_resnet1d of configs/demo/align.yaml, cmr_vae_demo, cine_unet3d_demo)"),
            ("anatomy", untrained_anatomy_pipeline(),
             "untrained demo models (ecg_resnet1d, anatomy_prior_demo, a 64-component shape model as "
             "configs/demo/anatomy.yaml, anatomy_image_unet_demo, cmr_vae_demo with levels 32/64/64)")]


def _bench_pipeline(name: str, pipe, source: str, args: argparse.Namespace) -> dict:
    """Baseline (fp32, one cine per call) and tuned (bf16, batched) timings of one pipeline."""
    direct = name.startswith("direct")
    guidance = (3.0 if args.guidance is None else args.guidance) if direct else args.guidance
    if direct:
        pipe.denoiser.set_attention("sdpa")
    baseline = _time_calls(pipe, 1, args.steps, guidance, "fp32", args.repeat)
    if direct:
        baseline["attention"] = "sdpa"
        pipe.denoiser.set_attention("math")
    tuned = []
    for batch_size in args.batch_sizes:
        result = _time_calls(pipe, batch_size, args.steps, guidance, "bf16", args.repeat)
        if direct:
            result["attention"] = "math"
        tuned.append(result)
    if direct:
        pipe.denoiser.set_attention(pipe.denoiser.config.attention)
    best = min(tuned, key=lambda r: r["seconds_per_cine"])
    single = next((r for r in tuned if r["batch_size"] == 1), None)
    if direct:
        c = pipe.denoiser.config
        latent = [c.latent_channels, c.num_frames, c.latent_size, c.latent_size]
    else:
        c = pipe.image_denoiser.config
        latent = [c.latent_channels, pipe.num_frames, c.latent_size, c.latent_size]
    result = {
        "model": source,
        "cine": {"frames": pipe.num_frames, "height": pipe.image_size, "width": pipe.image_size, "latent": latent},
        "steps": args.steps if direct else {"anatomy": args.steps, "image": args.steps},
        "guidance": guidance if direct else (pipe.config.default_guidance if guidance is None else guidance),
        "baseline": baseline,
        "tuned": tuned,
        "speedup_single_cine": round(baseline["seconds_per_cine"] / single["seconds_per_cine"], 3) if single else None,
        "speedup_best": round(baseline["seconds_per_cine"] / best["seconds_per_cine"], 3),
        "best_seconds_per_cine": best["seconds_per_cine"],
        "target_seconds_per_cine": TARGET_SECONDS_PER_CINE,
        "meets_target_single_cine": bool(single and single["seconds_per_cine"] <= TARGET_SECONDS_PER_CINE),
    }
    if getattr(pipe, "acquisition", None) is not None:  # included in the timings above; its own share here
        result["acquisition_noise_seconds_per_cine"] = _time_noise(pipe, args.repeat)
    return result


def _time_noise(pipe, repeat: int, batch_size: int = 8) -> float:
    """Median seconds per cine of the acquisition noise alone (a batch of decoded-size cines)."""
    import torch

    cines = torch.rand(batch_size, pipe.num_frames, pipe.image_size, pipe.image_size,
                       generator=torch.Generator().manual_seed(0))
    walls = []
    for i in range(max(repeat, 1)):
        wall = time.perf_counter()
        pipe.acquisition(cines, torch.Generator().manual_seed(i))
        walls.append(time.perf_counter() - wall)
    return round(statistics.median(walls) / batch_size, 4)


def run(args: argparse.Namespace) -> dict:
    import torch

    from cardiacnets.errors import ConfigError

    if args.steps < 1 or args.repeat < 1 or min(args.batch_sizes) < 1:
        raise ConfigError("--steps, --repeat and --batch-sizes must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    generators = {name: _bench_pipeline(name, pipe, source, args) for name, pipe, source in _pipelines(args.model)}
    first = next(iter(generators.values()))
    return {
        **first,  # the first generator's figures at the top level
        "generators": generators,
        "scheduler": "dpm++",
        "threads": torch.get_num_threads(),
        "load_average_1min": {"before": round(load_before, 2) if load_before is not None else None,
                              "after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
    }
