"""Prediction for one ECG file: every cardiac index with a prediction interval, every screening probability.

`predict_record` is what ``cardiacnets predict`` prints and what the review
app calls. Steps:

1. load the `HeadsModel` (its config carries the targets, units, thresholds,
   interval widths and the ECG preprocessing it was trained with);
2. read the ECG (UK Biobank XML, WFDB, ...) and check its quality
   (`cardiacnets.ecg.quality`): the findings are reported, and errors make
   the record unusable (`InputError`);
3. standardise it exactly as the training set was (the model's recorded
   `ECGConfig`: rate, length, filters, normalisation);
4. run the model, optionally on a lead subset (``leads``);
5. report each index in its unit with its split-conformal 95% prediction
   interval (``prediction ± half-width``, the half-width measured on the
   validation split at training), each screening probability with its
   decision at the validation Youden threshold, the subtype probabilities, the
   quality findings and the model's provenance.
"""

from __future__ import annotations

import math
import os

import numpy as np

from cardiacnets.config import from_dict, to_dict
from cardiacnets.data.ukb_fields import CMR_FIELD_BY_NAME
from cardiacnets.ecg.config import ECGConfig
from cardiacnets.ecg.quality import check_quality
from cardiacnets.ecg.standardize import standardize_ecg
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.heads.inference import demographics_normalizer, load_heads_model
from cardiacnets.heads.targets import display_name
from cardiacnets.io.ecg import read_ecg
from cardiacnets.io.ecg_leads import STANDARD_LEADS, lead_mask, resolve_lead_subset
from cardiacnets.models.pretrained import resolve_model_dir


def _ecg_config(model, model_dir):
    saved = model.config.provenance.get("ecg_preprocessing")
    if not saved:
        raise InputError(model_dir, "the model records no ECG preprocessing (provenance.ecg_preprocessing); "
                                    "it was not exported by the heads task")
    try:
        return from_dict(ECGConfig, saved, where="provenance.ecg_preprocessing")
    except ConfigError as err:
        raise InputError(model_dir, str(err)) from None


def _demographics(model, record) -> tuple[np.ndarray | None, list[str]]:
    """The standardised demographics a FiLM encoder needs, from the record's metadata (mean where unknown)."""
    normalizer = demographics_normalizer(model)
    if normalizer is None:
        return None, []
    raw = [record.metadata.get(column) for column in normalizer.columns]
    values = np.array([np.nan if v is None else float(v) for v in raw])
    z, present = normalizer.transform(values)
    unknown = [c for c, p in zip(normalizer.columns, present) if not p]
    notes = [f"demographics {', '.join(unknown)} not in the ECG file: the training mean was used"] if unknown else []
    return z, notes


def predict_record(model_dir: str | os.PathLike, ecg_path: str | os.PathLike, leads: str | None = None) -> dict:
    """Cardiac indices and screening probabilities predicted from one ECG file.

    Args:
        model_dir: a heads training run (``RUN/model``) or a saved `HeadsModel` folder.
        ecg_path: the ECG record (UK Biobank ``.xml``, WFDB ``.hea`` or record path).
        leads: show the model only these leads (``"I"``, ``"II"``, ``"limb"``, ``"I,II,V1"``);
            ``None`` = every recorded lead (the model's own lead subset always applies).

    Returns:
        A JSON-serialisable dict: ``ecg`` (file, format, rate, duration, leads recorded and
        used), ``quality`` (findings), ``indices`` (name → value, unit, description, 95%
        interval), ``screening`` (label → probability, threshold, positive),
        ``cardiomyopathy_subtype`` (class probabilities, most likely), ``model`` (path,
        mode, provenance, calibration), ``notes``.

    Raises:
        InputError: unreadable or unusable ECG (quality errors), or an unusable model folder.
        ConfigError: an unknown lead subset.
    """
    import torch

    # 1. The model and its preprocessing.
    folder = resolve_model_dir(model_dir)
    model = load_heads_model(folder).eval()
    config = model.config
    ecg_config = _ecg_config(model, folder)
    if leads is not None:
        try:
            resolve_lead_subset(leads)
        except ValueError as err:
            raise ConfigError(f"leads {leads!r}: {err}") from None
    # 2. Read and check the ECG.
    record = read_ecg(ecg_path)
    findings = check_quality(record)
    # 3. Standardise as the training set was (raises on quality errors).
    standard = standardize_ecg(record, ecg_config)
    notes = []
    if abs(record.duration_s - ecg_config.duration_s) > 0.5:
        notes.append(f"the record lasts {record.duration_s:.1f} s; the model sees {ecg_config.duration_s:g} s "
                     f"({'padded' if record.duration_s < ecg_config.duration_s else ecg_config.crop + ' crop'})")
    # 4. Run the model.
    shown = standard.lead_mask & (lead_mask(config.leads) if config.leads else True)
    if leads is not None:
        shown = shown & lead_mask(leads)
    if not shown.any():
        raise InputError(ecg_path, f"none of the leads the model is shown ({leads or config.leads}) is usable in "
                                   f"this record (usable: {', '.join(standard.lead_names) or 'none'})")
    demographics, demographic_notes = _demographics(model, record)
    notes += demographic_notes
    batch = {"ecg": torch.from_numpy(standard.signal).float()[None],
             "ecg_lead_mask": torch.from_numpy(standard.lead_mask)[None]}
    if demographics is not None:
        batch["demographics"] = torch.from_numpy(demographics)[None]
    outputs = {k: v[0].double().numpy() for k, v in model.predict(batch, leads).items()}
    # 5. Report.
    calibration = config.calibration
    if leads is not None and leads != config.leads:
        notes.append(f"intervals and thresholds were calibrated on the model's own input "
                     f"({config.leads or 'all recorded leads'}); with leads {leads} they may not hold")
    indices = {}
    for j, (column, unit) in enumerate(zip(config.regression_targets, config.regression_units)):
        value = float(outputs["regression"][j])
        halfwidth = calibration.interval_halfwidth.get(column)
        field = CMR_FIELD_BY_NAME.get(column.removeprefix("seg_"))
        interval = None
        if halfwidth is not None and math.isfinite(halfwidth):
            interval = {"low": value - halfwidth, "high": value + halfwidth,
                        "coverage": calibration.interval_coverage, "method": "split conformal",
                        "calibrated_on": f"{calibration.split} ({calibration.n_subjects} subjects)"}
        indices[column] = {"value": value, "unit": unit, "description": field.description if field else column,
                           "interval": interval}
    if config.regression_targets and not calibration.interval_halfwidth:
        notes.append("the model has no prediction intervals (it was trained without a validation split)")
    screening = {}
    for j, column in enumerate(config.binary_targets):
        probability = float(outputs["binary"][j])
        threshold = calibration.thresholds.get(column)
        screening[display_name(column)] = {
            "probability": probability, "threshold": threshold,
            "positive": None if threshold is None else bool(probability >= threshold), "column": column}
    subtype = None
    if config.multiclass_target:
        probabilities = {name: float(p) for name, p in zip(config.multiclass_classes, outputs["multiclass"])}
        subtype = {"probabilities": probabilities, "most_likely": max(probabilities, key=probabilities.get)}
    used = [name for name, keep in zip(STANDARD_LEADS, shown) if keep]
    return {
        "ecg": {"file": str(ecg_path), "format": record.format, "sampling_rate_hz": float(record.sampling_rate_hz),
                "duration_s": round(record.duration_s, 3), "leads_recorded": list(standard.lead_names),
                "derived_leads": list(standard.derived_leads), "leads_used": used,
                "device_measurements": {k: v for k, v in record.measurements.items() if v is not None}},
        "quality": {"usable": True, "findings": [
            {"code": f.code, "severity": f.severity, "lead": f.lead, "message": f.message} for f in findings]},
        "indices": indices,
        "screening": screening,
        "cardiomyopathy_subtype": subtype,
        "model": {"path": str(folder), "class": type(model).__name__, "mode": config.provenance.get("mode"),
                  "leads": config.leads or "12", "provenance": config.provenance,
                  "calibration": to_dict(calibration)},
        "notes": notes,
    }


def format_prediction(result: dict) -> str:
    """The human-readable text of a `predict_record` result."""
    ecg, model = result["ecg"], result["model"]
    lines = [f"{ecg['file']}: {ecg['format']}, {ecg['sampling_rate_hz']:g} Hz, {ecg['duration_s']:g} s; leads used "
             f"{','.join(ecg['leads_used'])}",
             f"model {model['path']} ({model['mode']}, trained on {model['provenance'].get('n_train_used', '?')} "
             f"subjects of {model['provenance'].get('data', '?')})"]
    findings = result["quality"]["findings"]
    lines.append("quality: " + ("no findings" if not findings else
                                "; ".join(f"{f['severity']} {f['code']}" + (f" [{f['lead']}]" if f['lead'] else "")
                                          for f in findings)))
    if result["indices"]:
        lines.append(f"{'index':16}{'prediction':>14}   95% prediction interval")
        for name, e in result["indices"].items():
            interval = (f"{e['interval']['low']:.1f} to {e['interval']['high']:.1f}" if e["interval"] else "–")
            lines.append(f"{name:16}{e['value']:>10.1f} {e['unit']:<6} {interval}")
    if result["screening"]:
        lines.append(f"{'screening':30}{'probability':>12}{'threshold':>11}  decision")
        for name, e in result["screening"].items():
            threshold = "–" if e["threshold"] is None else f"{e['threshold']:.3f}"
            decision = "–" if e["positive"] is None else ("positive" if e["positive"] else "negative")
            lines.append(f"{name:30}{e['probability']:>12.3f}{threshold:>11}  {decision}")
    if result["cardiomyopathy_subtype"]:
        s = result["cardiomyopathy_subtype"]
        shown = ", ".join(f"{k} {v:.3f}" for k, v in s["probabilities"].items())
        lines.append(f"cardiomyopathy subtype: {s['most_likely']} ({shown})")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)
