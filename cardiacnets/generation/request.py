"""One path from an ECG file to a generation: load a pipeline, build its input, run it, describe the result.

The command line (``cardiacnets generate``), the review app and the evaluation
all generate through this module, so that an ECG file is read, standardised
and turned into a pipeline's inputs one way:

- `load_pipeline` opens a pipeline folder of either generator (the direct
  `ECGToCMRPipeline` or the anatomy-first `AnatomyFirstPipeline`, told apart
  by ``model_index.json``);
- `build_request` reads the ECG file with the package's readers, standardises
  it as the pipeline's training set was, and collects the demographics (from
  the file, overridden by explicit values; implausible values are ignored and
  listed) and the ECG device's measurements (for a pipeline whose read-out
  uses them);
- `run_request` calls the pipeline with the request (one signature for both
  generators) and returns its output;
- `request_provenance` is the record written next to generated files.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cardiacnets.errors import ConfigError, InputError

#: Pipeline classes by the ``_class_name`` of their ``model_index.json``.
GENERATORS = {"ECGToCMRPipeline": "direct", "AnatomyFirstPipeline": "anatomy"}


def load_pipeline(folder: str | os.PathLike):
    """The generation pipeline saved in `folder`, of whichever generator wrote it.

    Raises:
        InputError: not a pipeline folder, or one of an unknown class.
    """
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise InputError(folder, "not a generation pipeline folder (no model_index.json); give the pipeline/ "
                                 "folder of a diffusion or anatomy run")
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(index, f"unreadable pipeline index ({err})") from None
    if class_name == "AnatomyFirstPipeline":
        from cardiacnets.generation.anatomy_pipeline import AnatomyFirstPipeline

        return AnatomyFirstPipeline.from_pretrained(folder)
    if class_name == "ECGToCMRPipeline":
        from cardiacnets.generation.pipeline import ECGToCMRPipeline

        return ECGToCMRPipeline.from_pretrained(folder)
    raise InputError(index, f"unknown pipeline class {class_name!r} (known: {', '.join(GENERATORS)})")


def generator_kind(pipe) -> str:
    """``anatomy`` for a pipeline with an ECG read-out of demographics and measurements, else ``direct``."""
    return GENERATORS.get(type(pipe).__name__, "anatomy" if hasattr(pipe, "readout") else "direct")


def request_columns(pipe) -> tuple[list[str], list[str]]:
    """The raw inputs a pipeline reads besides the ECG: (demographic columns, device measurement names)."""
    normaliser = demographics_normaliser(pipe)
    measurements = []
    if generator_kind(pipe) == "anatomy" and pipe.readout.config.measurements:
        measurements = list(pipe.readout.config.measurements["columns"])
    return (list(normaliser["columns"]) if normaliser else []), measurements


@dataclass
class GenerationRequest:
    """One ECG made ready for a pipeline.

    Attributes:
        ecg: (1, 12, T) standard ECG; lead_mask: (1, 12) bool.
        demographics: raw values by column (NaN where missing), as the pipeline's normaliser names them.
        measurements: raw device measurements by name (NaN where missing); empty for a pipeline without.
        report: what was used and ignored (``demographics``, ``measurements``), for the provenance.
        source: the ECG file; sha256: its digest; quality, derived_leads, sampling_rate_hz: from the
            standardisation.
    """

    ecg: torch.Tensor
    lead_mask: torch.Tensor
    demographics: dict[str, float] = field(default_factory=dict)
    measurements: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    sha256: str = ""
    quality: list[str] = field(default_factory=list)
    derived_leads: list[str] = field(default_factory=list)
    sampling_rate_hz: float | None = None


def standardize_ecg_file(path: str | os.PathLike, ecg_config: dict, *, sampling_rate_hz: float | None = None,
                         lead_names: Sequence[str] | None = None, units: str = "mV"):
    """Read an ECG file and standardise it with a pipeline's ``ecg_config``.

    Returns:
        ``(record, standard)``: the reader's `ECGRecord` and the standardised ECG.

    Raises:
        InputError: unreadable file or quality errors (the message names the file).
    """
    from cardiacnets.config import from_dict
    from cardiacnets.ecg.config import ECGConfig
    from cardiacnets.ecg.standardize import standardize_ecg
    from cardiacnets.io.ecg import read_ecg

    config = from_dict(ECGConfig, dict(ecg_config or {}), where="ecg_config")
    record = read_ecg(path, sampling_rate_hz=sampling_rate_hz, lead_names=lead_names, units=units)
    return record, standardize_ecg(record, config)


def parse_overrides(items: Sequence[str], where: str = "--demographic") -> dict[str, str]:
    """``NAME=VALUE`` strings as a dict (``ConfigError`` for a malformed one)."""
    given = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{where} takes NAME=VALUE, got {item!r}")
        given[name.strip()] = value.strip()
    return given


def demographics_normaliser(pipe) -> dict | None:
    """The pipeline's demographics normaliser (``columns``, ``mean``, ``std``), or None."""
    if generator_kind(pipe) == "anatomy":
        return pipe.readout.config.demographics
    return getattr(getattr(pipe, "config", None), "demographics", None)


def _plausible(values: dict, normaliser: dict | None, max_abs_z: float, given: set[str]
               ) -> tuple[dict[str, float], dict[str, Any]]:
    """Raw values of the normaliser's columns, implausible or missing ones as NaN, with a report."""
    if not normaliser:
        return {}, {"used": {}, "ignored": {}}
    out, used, ignored = {}, {}, {}
    for column, mean, std in zip(normaliser["columns"], normaliser["mean"], normaliser["std"]):
        value = values.get(column)
        try:
            number = float(value)
        except (TypeError, ValueError):
            ignored[column] = "not given" if value is None else f"not a number ({value!r})"
            out[column] = float("nan")
            continue
        score = (number - mean) / std
        if not np.isfinite(score) or abs(score) > max_abs_z:
            ignored[column] = (f"implausible: {number:g} is {score:+.1f} SD from the training mean {mean:.4g} "
                               f"(limit {max_abs_z:g})")
            out[column] = float("nan")
            continue
        out[column], used[column] = number, number
    return out, {"used": used, "ignored": ignored, "from_file": sorted(c for c in used if c not in given)}


def build_request(pipe, path: str | os.PathLike, *, demographics: dict[str, Any] | None = None,
                  sampling_rate_hz: float | None = None, lead_names: Sequence[str] | None = None,
                  units: str = "mV", max_abs_z: float = 6.0) -> GenerationRequest:
    """Read an ECG file into a `GenerationRequest` for `pipe`.

    Args:
        pipe: a loaded pipeline (`load_pipeline`).
        path: the ECG file (UK Biobank XML, WFDB, .npy).
        demographics: explicit demographic values by column; they override the file's own.
        sampling_rate_hz, lead_names, units: ``.npy`` input only.
        max_abs_z: values more than this many training SDs from the training mean are implausible
            (scrubbed files carry placeholders such as an age of 1 year) and treated as missing.

    Raises:
        InputError: unreadable file, quality errors; ConfigError: demographics the model does not use.
    """
    from cardiacnets.generation.outputs import sha256_of

    record, standard = standardize_ecg_file(path, pipe.ecg_config, sampling_rate_hz=sampling_rate_hz,
                                            lead_names=lead_names, units=units)
    given = dict(demographics or {})
    normaliser = demographics_normaliser(pipe)
    if given and not normaliser:
        raise ConfigError("demographics given, but this model is not conditioned on demographics")
    unknown = sorted(set(given) - set(normaliser["columns"])) if normaliser else []
    if unknown:
        raise ConfigError(f"this model uses the demographics {list(normaliser['columns'])}, not {unknown}")
    values = {column: record.metadata.get(column) for column in (normaliser or {}).get("columns", [])}
    if values.get("sex_male") is not None:
        values["sex_male"] = float(values["sex_male"])  # the readers give True / False
    values.update(given)
    demographic_values, demographic_report = _plausible(values, normaliser, max_abs_z, set(given))
    measurement_values, measurement_report = {}, None
    if generator_kind(pipe) == "anatomy" and pipe.readout.config.measurements:
        measurement_values, measurement_report = _plausible(dict(record.measurements or {}),
                                                            pipe.readout.config.measurements, max_abs_z, set())
    return GenerationRequest(
        ecg=torch.from_numpy(np.ascontiguousarray(standard.signal, dtype=np.float32))[None],
        lead_mask=torch.from_numpy(standard.lead_mask.copy())[None],
        demographics=demographic_values, measurements=measurement_values,
        report={"demographics": demographic_report if normaliser else None, "measurements": measurement_report},
        source=str(path), sha256=sha256_of(path), quality=[str(f) for f in standard.findings],
        derived_leads=list(standard.derived_leads), sampling_rate_hz=standard.sampling_rate_hz)


def pipeline_inputs(pipe, ecg: torch.Tensor, lead_mask: torch.Tensor | None, demographics: dict | None,
                    measurements: dict | None) -> dict:
    """The keyword inputs of either pipeline for a batch, from raw demographics and measurements by column.

    Args:
        pipe: the pipeline.
        ecg: (B, 12, T); lead_mask: (B, 12) or None.
        demographics: ``{column: (B,) raw values}`` (NaN where missing), or None.
        measurements: ``{name: (B,) raw device measurements}``, or None.
    """
    inputs = {"ecg": ecg, "lead_mask": lead_mask}
    if generator_kind(pipe) == "anatomy":
        return {**inputs, "demographics": demographics, "measurements": measurements}
    normaliser = demographics_normaliser(pipe)
    if normaliser:
        batch = ecg.shape[0]
        z = torch.zeros(batch, len(normaliser["columns"]))
        present = torch.zeros_like(z, dtype=torch.bool)
        for j, (column, mean, std) in enumerate(zip(normaliser["columns"], normaliser["mean"], normaliser["std"])):
            raw = np.asarray((demographics or {}).get(column, np.full(batch, np.nan)), dtype=np.float64).reshape(-1)
            ok = np.isfinite(raw)
            z[:, j] = torch.from_numpy(np.where(ok, (raw - mean) / std, 0.0)).float()
            present[:, j] = torch.from_numpy(ok)
        inputs.update(demographics=z, demographics_mask=present)
    return inputs


def anatomy_sampling(pipe, guidance: float | None, temperature: float | None,
                     shape_temperature: float | None, acquisition_noise: bool = True) -> dict:
    """The guidance and temperatures an anatomy-first pipeline samples with: each given one, else the
    pipeline's validation-chosen default (what provenance and evaluation records report); whether
    acquisition noise is added (asked for and the pipeline has a noise model); and the image denoiser's
    bank of training appearance codes each cine draws from (0: no appearance code)."""
    c = pipe.config
    return {"guidance": c.default_guidance if guidance is None else guidance,
            "temperature": c.default_temperature if temperature is None else temperature,
            "shape_temperature": c.default_shape_temperature if shape_temperature is None else shape_temperature,
            "acquisition_noise": bool(acquisition_noise and getattr(pipe, "acquisition", None) is not None),
            "appearance_bank": int(pipe.image_denoiser.config.appearance_bank_size)}


def run_request(pipe, request: GenerationRequest, *, steps: int = 25, guidance: float | None = None,
                temperature: float | None = None, shape_temperature: float | None = None, n_samples: int = 1,
                seed: int = 0, scheduler: str = "dpm++", precision: str | None = None,
                callback_on_step_end: Callable | None = None, acquisition_noise: bool = True):
    """Generate from a request with either pipeline.

    Args:
        pipe: the pipeline; request: from `build_request`.
        steps: sampler steps (each stage of the anatomy-first generator).
        guidance: classifier-free guidance (default: 3 for the direct generator, the pipeline's
            validation-chosen value for the anatomy-first one).
        temperature: the indices' sampling temperature (anatomy-first only; default: the pipeline's).
        shape_temperature: the shape code's sampling temperature (anatomy-first only; default: the pipeline's).
        n_samples: cines per ECG; seed: seeds all noise; scheduler: ``dpm++`` or ``ddim``;
        precision: ``fp32`` or ``bf16`` (default: the pipeline's).
        callback_on_step_end: diffusers-style progress callback.
        acquisition_noise: add the anatomy-first pipeline's acquisition noise (False: the decoded frames).

    Returns:
        The pipeline's output (``cines``, ``index_estimates``, and for the anatomy-first generator
        ``labels`` and ``codes``).

    Raises:
        InputError: the ECG does not fit the model (naming the file).
    """
    one = {k: np.array([v]) for k, v in request.demographics.items()}
    measured = {k: np.array([v]) for k, v in request.measurements.items()}
    inputs = pipeline_inputs(pipe, request.ecg, request.lead_mask, one or None, measured or None)
    settings = {"num_inference_steps": steps, "scheduler": scheduler, "num_samples_per_ecg": n_samples,
                "generator": torch.Generator().manual_seed(seed), "precision": precision,
                "callback_on_step_end": callback_on_step_end}
    if generator_kind(pipe) == "anatomy":
        settings.update(guidance_scale=guidance, temperature=temperature, shape_temperature=shape_temperature,
                        acquisition_noise=acquisition_noise)
    else:
        if temperature is not None or shape_temperature is not None or not acquisition_noise:
            raise ConfigError("temperature, shape_temperature and turning acquisition noise off apply to the "
                              "anatomy-first generator only")
        settings["guidance_scale"] = 3.0 if guidance is None else guidance
    try:
        return pipe(**inputs, **settings)
    except ValueError as err:  # the ECG does not fit this model
        raise InputError(request.source, str(err)) from None


def request_provenance(pipe, request: GenerationRequest, model_dir: str | os.PathLike, *, steps: int,
                       guidance: float | None, temperature: float | None, n_samples: int, seed: int, scheduler: str,
                       precision: str | None, shape_temperature: float | None = None,
                       acquisition_noise: bool = True) -> dict:
    """The provenance record of a generation (before outputs and timings are added)."""
    import cardiacnets

    kind = generator_kind(pipe)
    model_dir = Path(model_dir)
    training = {}
    if (model_dir / "provenance.json").is_file():
        training = json.loads((model_dir / "provenance.json").read_text())
    settings = {"steps": steps, "scheduler": scheduler, "n_samples": n_samples, "seed": seed,
                "precision": precision or pipe.config.precision}
    if kind == "anatomy":
        settings.update(anatomy_sampling(pipe, guidance, temperature, shape_temperature, acquisition_noise))
    else:
        settings["guidance"] = 3.0 if guidance is None else guidance
    return {
        "synthetic": True,
        "note": "generated by a model from an ECG; not an acquired image; not for clinical use",
        "cardiacnets_version": cardiacnets.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "generator": kind,
        "model": str(model_dir.resolve()),
        "model_training": training,
        "view": pipe.view,
        **settings,
        "input": {"path": str(Path(request.source).resolve()), "sha256": request.sha256, "quality": request.quality,
                  "derived_leads": request.derived_leads, "leads_present": int(request.lead_mask.sum()),
                  "sampling_rate_hz": request.sampling_rate_hz},
        "demographics": request.report.get("demographics"),
        "measurements": request.report.get("measurements"),
    }
