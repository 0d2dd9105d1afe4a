"""The methods a generation evaluation scores: trained pipelines and the baselines, run over a split.

Each method is a `GenerateFn`, ``generate_batch(batch) -> cines`` over the
split's collated batches (``index`` is the row in the split), wrapped in a
`Method` that also collects what it records while generating (the read-out's
estimates, the anatomy it drew). `pipeline_generator` adapts a trained
pipeline of either generator; the baselines (nearest and k-nearest neighbour
by aligned ECG embedding, a random training subject, the rendered read-out)
are built in `cardiacnets.evaluate.generation_baselines`. `generate_all` runs
every method over the first N subjects in batches and times it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cardiacnets.errors import ConfigError, InputError
from cardiacnets.evaluate.generation_baselines import (
    GenerateFn, ReferenceCines, RenderedReadout, neighbour_generators, random_generator, raw_condition_table,
)
from cardiacnets.evaluate.generation_scoring import as_cines

#: Method names of the baselines (plus ``knn<k>_baseline``).
BASELINES = ("nn_baseline", "random_baseline", "rendered_readout")


def is_baseline(name: str) -> bool:
    """Whether a method name is one of the baselines (`BASELINES` or ``knn<k>_baseline``)."""
    return name in BASELINES or name.startswith("knn")


def pipeline_generator(pipe, num_inference_steps: int = 25, guidance_scale: float | None = 3.0, seed: int = 0,
                       scheduler: str = "dpm++", n_samples: int = 1, estimates: list | None = None,
                       inputs: Callable[[dict], dict] | None = None, labels: list | None = None,
                       temperature: float | None = None, shape_temperature: float | None = None,
                       acquisition_noise: bool = True) -> GenerateFn:
    """A trained pipeline (either generator) as a `GenerateFn`.

    One ``torch.Generator`` seeded with `seed` is consumed batch after batch in split order,
    so results depend on the seed and the batch size (both reported).

    Args:
        pipe: an ``ECGToCMRPipeline`` or ``AnatomyFirstPipeline``.
        num_inference_steps: sampler steps.
        guidance_scale: classifier-free guidance scale (None: the pipeline's default).
        seed: seed of the sampling noise.
        scheduler: ``dpm++`` or ``ddim``.
        n_samples: cines per ECG (each ECG's samples consecutive).
        estimates: when given, each batch's read-out estimates (the CMR indices the pipeline
            generated the cines *for*, ``index_estimates`` of its output, in the indices' units) are
            appended to it as a DataFrame, one row per ECG (no columns without a read-out).
        inputs: ``batch -> the pipeline's keyword inputs`` (ECG, lead mask, demographics, measurements;
            `cardiacnets.generation.request.pipeline_inputs`); default: the batch's ECG and lead mask only.
        labels: when given and the pipeline returns the anatomy it drew, each batch's label cines
            (B × n_samples, frames, H, W) are appended to it.
        temperature: the indices' sampling temperature (anatomy-first pipelines; None: their default).
        shape_temperature: the shape code's sampling temperature (anatomy-first pipelines; None: their default).
        acquisition_noise: False: anatomy-first pipelines draw the decoded frames without acquisition noise.

    Returns:
        ``generate_batch(batch) -> (B × n_samples, frames, H, W)``.
    """
    generator = torch.Generator().manual_seed(seed)
    settings = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                "scheduler": scheduler, "num_samples_per_ecg": n_samples, "progress": False}
    if temperature is not None:
        settings["temperature"] = temperature
    if shape_temperature is not None:
        settings["shape_temperature"] = shape_temperature
    if not acquisition_noise:
        settings["acquisition_noise"] = False

    def generate_batch(batch: dict) -> np.ndarray:
        given = inputs(batch) if inputs is not None else {"ecg": batch["ecg"], "lead_mask": batch.get("ecg_lead_mask"),
                                                         "demographics": None}
        out = pipe(**given, generator=generator, **settings)
        if estimates is not None:
            estimates.append(pd.DataFrame({name: np.asarray(values, dtype=float)
                                           for name, values in out.index_estimates.items()},
                                          index=range(len(batch["ecg"]))))
        if labels is not None and getattr(out, "labels", None) is not None:
            labels.append(out.labels)
        return out.cines

    return generate_batch


def nearest_neighbour_generator(alignment_run, reference: ReferenceCines, query_dataset, batch_size: int = 64,
                                device: str = "cpu") -> tuple[GenerateFn, dict]:
    """The nearest-neighbour retrieval baseline alone (`neighbour_generators`' first)."""
    nearest, _, info = neighbour_generators(alignment_run, reference, query_dataset, 1, batch_size, device)
    return nearest, info


def recorded_path(model_dir: Path, keys: tuple[str, ...]) -> Path | None:
    """A folder the pipeline's ``provenance.json`` (written by the diffusion task) records under one of `keys`.

    Returns None when the file, the key or the folder is missing.
    """
    path = model_dir / "provenance.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable provenance record ({err})") from None
    for key in keys:
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and Path(value).is_dir():
            return Path(value)
    return None


def load_feature_encoder(folder, view: str) -> torch.nn.Module:
    """The saved CMR encoder of `view` whose features the Fréchet distance compares, in eval mode."""
    from cardiacnets.models.encoders import load_saved_encoder

    return load_saved_encoder(str(folder), "cmr", view).eval()


@dataclass
class Method:
    """One method under evaluation: its generate function and what it records while generating.

    Attributes:
        name: key in the results (``generator``, ``direct``, ``anatomy``, ``nn_baseline``, ...).
        generate: the `GenerateFn`.
        per_ecg: cines it makes per ECG.
        estimates: the read-out's estimates per batch (pipelines with a read-out).
        labels: the anatomy it drew per batch (anatomy-first pipelines, the rendered read-out).
        info: anything else reported with its scores.
    """

    name: str
    generate: GenerateFn
    per_ecg: int = 1
    estimates: list | None = None
    labels: list | None = None
    info: dict | None = None


def pipeline_method(name: str, model_dir: Path, dataset, steps: int, guidance: float | None,
                    temperature: float | None, seed: int, scheduler: str, n_samples: int, device: str,
                    shape_temperature: float | None = None, acquisition_noise: bool = True) -> Method:
    """A trained pipeline folder as a `Method` (raw demographics and measurements from the split's manifest)."""
    from cardiacnets.generation.request import (
        anatomy_sampling, demographics_normaliser, generator_kind, load_pipeline, pipeline_inputs,
    )

    if not Path(model_dir).is_dir():
        raise InputError(model_dir, "no such pipeline folder")
    pipe = load_pipeline(model_dir).to(device)
    normaliser = demographics_normaliser(pipe)
    measurements = []
    if generator_kind(pipe) == "anatomy" and pipe.readout.config.measurements:
        measurements = list(pipe.readout.config.measurements["columns"])
    lookup = raw_condition_table(dataset.manifest, list(normaliser["columns"]) if normaliser else [], measurements)

    def inputs(batch: dict) -> dict:
        demographics, measured = lookup(batch["index"].cpu().numpy())
        return pipeline_inputs(pipe, batch["ecg"], batch.get("ecg_lead_mask"), demographics, measured)

    if generator_kind(pipe) == "direct":
        guidance = 3.0 if guidance is None else guidance
        if temperature is not None or shape_temperature is not None or not acquisition_noise:
            raise ConfigError("--temperature, --shape-temperature and --no-acquisition-noise apply to "
                              "anatomy-first pipelines only")
    estimates, labels = [], []
    generate = pipeline_generator(pipe, steps, guidance, seed, scheduler, n_samples, estimates, inputs, labels,
                                  temperature, shape_temperature, acquisition_noise)
    settings = {"model": str(model_dir), "generator": generator_kind(pipe), "guidance": guidance,
                "view": pipe.view}
    if generator_kind(pipe) == "anatomy":
        settings.update(anatomy_sampling(pipe, guidance, temperature, shape_temperature, acquisition_noise))
    return Method(name, generate, n_samples, estimates, labels, settings)


def baseline_methods(data, reference_split: str, split: str, dataset, alignment, geometry, slice_spacing_mm: float,
                     seed: int, knn: int, view: str, device: str) -> list[Method]:
    """The nearest-neighbour, k-nearest mean, random and rendered read-out baselines (`generation_baselines`)."""
    if reference_split == split:
        raise ConfigError(f"the baselines' reference split must differ from the evaluated split ({split!r})")
    reference = ReferenceCines(data, reference_split, view)
    nearest, k_mean, nn_info = neighbour_generators(alignment, reference, dataset, k=knn, device=device)
    methods = [Method("nn_baseline", nearest, info=nn_info),
               Method(f"knn{knn}_baseline", k_mean, info={"k": knn, "model": nn_info["model"]}),
               Method("random_baseline", random_generator(reference, seed))]
    rendered = RenderedReadout(reference, geometry.spacing_mm, slice_spacing_mm)
    drawn: list = []
    methods.append(Method("rendered_readout", rendered.generator(dataset.manifest, drawn), labels=drawn,
                          info=rendered.info))
    return methods


def generate_all(methods: list[Method], torch_dataset, n: int, batch_size: int, n_slices: int, where,
                 progress: bool) -> tuple[dict[str, list[np.ndarray]], dict[str, float]]:
    """Run every method over the first `n` subjects in batches: ``({name: [sample 1, ...]}, timing)``."""
    from cardiacnets.evaluate.embeddings import collate_samples

    batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    outputs, timing = {}, {}
    for method in methods:
        tick = time.perf_counter()
        chunks: list[list[np.ndarray]] = [[] for _ in range(method.per_ecg)]
        iterator = batches
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(batches, desc=method.name, unit="batch")
        for rows in iterator:
            batch = collate_samples([torch_dataset[i] for i in rows])
            out = np.asarray(method.generate(batch))
            if len(out) != len(rows) * method.per_ecg:
                raise InputError(where, f"{method.name} made {len(out)} cines for {len(rows)} ECGs "
                                        f"({method.per_ecg} per ECG expected)")
            for k in range(method.per_ecg):
                chunks[k].append(as_cines(out[k::method.per_ecg], n_slices, f"{method.name} output"))
        outputs[method.name] = [np.concatenate(c) for c in chunks]
        timing[f"{method.name}_seconds"] = round(time.perf_counter() - tick, 2)
        if not is_baseline(method.name):
            per_cine = timing[f"{method.name}_seconds"] / (n * method.per_ecg)
            timing[f"{method.name}_seconds_per_cine"] = round(per_cine, 3)
    return outputs, timing

