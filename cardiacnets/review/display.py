"""What the review pages show and how: titles, units, normal ranges, prediction rows, display resampling.

Pure functions over manifest rows and the heads' output, shared by the case
pages, the predictions fragment and the reader-study pages; nothing here knows
about HTTP.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

VIEW_TITLES = {"sa": "short-axis", "la_4ch": "4-chamber long-axis"}
# Indices the heads may return, with display names (others are shown by their key).
INDEX_TITLES = {
    "lvedv_ml": "LV end-diastolic volume", "lvesv_ml": "LV end-systolic volume", "lvsv_ml": "LV stroke volume",
    "lvef_pct": "LV ejection fraction", "lvm_g": "LV mass", "lvco_l_min": "LV cardiac output",
    "rvedv_ml": "RV end-diastolic volume", "rvesv_ml": "RV end-systolic volume", "rvsv_ml": "RV stroke volume",
    "rvef_pct": "RV ejection fraction", "wt_global": "Mean wall thickness",
}
MEASUREMENT_FIELDS = (("ventricular_rate_bpm", "Rate", "bpm"), ("pq_interval_ms", "PR", "ms"),
                      ("qrs_duration_ms", "QRS", "ms"), ("qt_interval_ms", "QT", "ms"),
                      ("qtc_interval_ms", "QTc", "ms"), ("p_axis_deg", "P axis", "°"),
                      ("r_axis_deg", "R axis", "°"), ("t_axis_deg", "T axis", "°"))
LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
REFERENCE_QUANTILES = (0.025, 0.975)
MIN_REFERENCE_SUBJECTS = 20


def number(value) -> float | None:
    """``value`` as a float, or None when missing, not numeric or NaN."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(result) else result


def sex_letter(value) -> str:
    """``M``/``F`` from a ``sex_male`` value (empty when unknown)."""
    result = number(value)
    return "" if result is None else ("M" if result >= 0.5 else "F")


def fmt(value, digits: int = 1) -> str:
    """A number with ``digits`` decimals, or an en dash when missing (the templates' ``fmt`` filter)."""
    result = number(value)
    return "–" if result is None else f"{result:.{digits}f}"


def label_title(column: str) -> str:
    """``label_heart_failure`` -> ``heart failure``."""
    return column[len("label_"):].replace("_", " ")


def icd10_text(value, missing: str = "") -> str:
    """The manifest's ``I420;I500`` as ``I420; I500``."""
    return value.replace(";", "; ") if isinstance(value, str) else missing


def filter_note(ecg_config) -> str:
    """The ECG filters of the data set, as printed under the ECG (``band-pass 0.5–100 Hz, notch 50 Hz``)."""
    parts = []
    if ecg_config.bandpass_hz:
        parts.append(f"band-pass {ecg_config.bandpass_hz[0]:g}–{ecg_config.bandpass_hz[1]:g} Hz")
    if ecg_config.notch_hz:
        parts.append(f"notch {ecg_config.notch_hz:g} Hz")
    return ", ".join(parts)


def match_display(cine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A generated cine resampled to a real cine's (frames, H, W), so blinded readings look alike in form."""
    from PIL import Image

    from cardiacnets.cmr.standardize import resample_cycle

    frames, height, width = shape
    if cine.shape[0] != frames:
        cine = resample_cycle(cine, frames, axis=0)
    if cine.shape[1:] != (height, width):
        cine = np.stack([np.asarray(Image.fromarray(f.astype(np.float32), mode="F").resize(
            (width, height), Image.Resampling.BICUBIC)) for f in cine])
    return cine.astype(np.float32)


def reference_ranges(manifest: pd.DataFrame) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Normal ranges of the CMR indices from the data set's own healthy subjects.

    The heads predict values, not what is normal; the page compares them with
    the 2.5th-97.5th percentiles of the training subjects without any true
    ``label_*`` column (the reference-range convention of Petersen et al., JCMR
    2017, on UK Biobank), by sex and overall. Groups of fewer than
    `MIN_REFERENCE_SUBJECTS` get no range.

    Args:
        manifest: a training set's manifest.

    Returns:
        ``{column: {"male" | "female" | "all": (low, high, n)}}`` for every CMR
        index column (``lvedv_ml``, ``seg_lvedv_ml``, ...) the manifest holds.
    """
    from cardiacnets.data.ukb_fields import CMR_FIELD_BY_NAME

    labels = [c for c in manifest.columns if c.startswith("label_")]
    healthy = manifest
    if labels:
        healthy = healthy[~healthy[labels].fillna(False).astype(bool).any(axis=1)]
    if "split" in healthy.columns and (healthy["split"] == "train").any():
        healthy = healthy[healthy["split"] == "train"]
    sex = pd.to_numeric(healthy["sex_male"], errors="coerce") if "sex_male" in healthy.columns else None
    groups = {"all": np.ones(len(healthy), bool)}
    if sex is not None:
        groups.update(male=(sex >= 0.5).to_numpy(), female=(sex < 0.5).to_numpy())
    ranges: dict[str, dict[str, tuple[float, float, int]]] = {}
    for column in healthy.columns:
        if column.removeprefix("seg_") not in CMR_FIELD_BY_NAME:
            continue
        values = pd.to_numeric(healthy[column], errors="coerce").to_numpy(float)
        for group, keep in groups.items():
            chosen = values[keep & np.isfinite(values)]
            if len(chosen) >= MIN_REFERENCE_SUBJECTS:
                low, high = np.quantile(chosen, REFERENCE_QUANTILES)
                ranges.setdefault(column, {})[group] = (float(low), float(high), int(len(chosen)))
    return ranges


def _index_row(name: str, item, reference: dict, group: str) -> dict:
    """One predicted index with its interval, normal range, range source and low/high flag."""
    item = item if isinstance(item, dict) else {"value": item}
    value, low, high = number(item.get("value")), number(item.get("low")), number(item.get("high"))
    source = "model" if low is not None or high is not None else None
    if source is None:
        for column in (name, name.removeprefix("seg_"), "seg_" + name):
            ranges = reference.get(column, {})
            found = ranges.get(group) or ranges.get("all")
            if found:
                low, high, n = found
                source = f"healthy {group if group in ranges else 'all'} subjects of the data set, n = {n}"
                break
    flag = ""
    if value is not None and low is not None and value < low:
        flag = "low"
    elif value is not None and high is not None and value > high:
        flag = "high"
    interval = item.get("interval") if isinstance(item.get("interval"), dict) else None
    title = INDEX_TITLES.get(name.removeprefix("seg_")) or item.get("description") or name.replace("_", " ")
    return {"name": name, "title": title, "value": value, "unit": item.get("unit", ""), "low": low, "high": high,
            "flag": flag, "range_source": source,
            "interval": None if interval is None else (number(interval.get("low")), number(interval.get("high")))}


def _screening_row(name: str, item) -> dict:
    item = item if isinstance(item, dict) else {"probability": item}
    probability, threshold = number(item.get("probability")), number(item.get("threshold"))
    positive = item.get("positive")
    if positive is None:
        positive = probability is not None and threshold is not None and probability >= threshold
    return {"name": name.replace("_", " "), "probability": probability, "threshold": threshold,
            "positive": bool(positive)}


def prediction_rows(predictions: dict | None, reference: dict | None = None, sex_male: bool | None = None) -> dict | None:
    """Predictions (`predict_record`'s output) in display form.

    Indices get their prediction interval, a normal range (the heads' own
    ``low``/``high`` when they give one, else the data set's healthy reference
    for the subject's sex, see `reference_ranges`) and a low/high flag;
    screening labels are sorted by probability.

    Args:
        predictions: the heads' output, or None.
        reference: `reference_ranges` of the data set.
        sex_male: the subject's sex (None: unknown, the overall range is used).

    Returns:
        ``{"indices", "screening", "quality", "subtype", "notes", "has_intervals"}``,
        or None when there are no predictions.
    """
    if predictions is None:
        return None
    reference = reference or {}
    group = "all" if sex_male is None else ("male" if sex_male else "female")
    indices = [_index_row(name, item, reference, group) for name, item in (predictions.get("indices") or {}).items()]
    screening = [_screening_row(name, item) for name, item in (predictions.get("screening") or {}).items()]
    screening.sort(key=lambda s: -(s["probability"] or 0.0))
    quality = predictions.get("quality") or []
    if isinstance(quality, dict):
        quality = quality.get("findings") or []
    quality = [q.get("message", str(q)) if isinstance(q, dict) else str(q) for q in quality]
    subtype = predictions.get("cardiomyopathy_subtype")
    if isinstance(subtype, dict) and isinstance(subtype.get("probabilities"), dict):
        subtype = {"most_likely": subtype.get("most_likely"),
                   "probabilities": sorted(((k.replace("_", " "), number(v)) for k, v in subtype["probabilities"].items()),
                                           key=lambda kv: -(kv[1] or 0.0))}
    else:
        subtype = None
    notes = [str(n) for n in predictions.get("notes") or []]
    return {"indices": indices, "screening": screening, "quality": quality, "subtype": subtype, "notes": notes,
            "has_intervals": any(i["interval"] for i in indices)}
