"""Evaluation of trained heads: metrics with bootstrap CIs, comparisons, plots (``cardiacnets evaluate heads``).

`score_split` turns test predictions (`cardiacnets.heads.inference.predict_split`)
into the figures of the paper's downstream tables with 95% bootstrap confidence
intervals (`cardiacnets.stats`): for each index Pearson r, R², MAE (in the
index's unit) and R² as a fraction of the simulator's ceiling; for each
screening label AUROC, AUPRC, and sensitivity and specificity at the Youden
threshold chosen on the VALIDATION split, calibration error; for the
cardiomyopathy subtype accuracy, balanced accuracy and one-vs-rest AUROC.
`compare_predictions` compares two models on the same test subjects (paired
bootstrap of every metric, DeLong for AUROC). `evaluate_heads` is what
``cardiacnets evaluate heads`` runs.
"""

from __future__ import annotations

import json
import math
import os
from functools import partial
from pathlib import Path

import numpy as np

from cardiacnets.data.store import COHORT_RECORD, DATASET_YAML, read_dataset_info
from cardiacnets.errors import InputError
from cardiacnets.evaluate.heads_baseline import BASELINES, MeasurementBaseline
from cardiacnets.evaluate.report_tables import results_table, write_table
from cardiacnets.heads.inference import (
    SplitPredictions, calibrate_thresholds_only, load_heads_model, model_columns, predict_split, resolve_device,
)
from cardiacnets.heads.targets import ceiling_key, display_name, open_heads_split
from cardiacnets.stats.bootstrap import bootstrap_ci, delong_test, paired_bootstrap
from cardiacnets.stats.metrics import classification_metrics, multiclass_metrics, regression_metrics, youden_threshold

REGRESSION_METRICS = ("pearson_r", "r2", "mae")
BINARY_METRICS = ("auroc", "auprc", "sensitivity", "specificity", "ece")
MULTICLASS_METRICS = ("accuracy", "balanced_accuracy", "macro_auroc")
#: Fewest labelled test subjects (and, for labels, cases and controls) a target needs to be scored.
MIN_SUBJECTS = 3


def _finite_rows(truth: np.ndarray) -> np.ndarray:
    return np.isfinite(truth)


def load_ceiling(data: str | os.PathLike) -> tuple[dict | None, str | None]:
    """The simulator's ceiling of a training set: ``dataset.yaml``'s ``raw`` folder → ``ceiling.json``, or, when
    that cohort was deleted after preprocessing, the copy a demo or reference build keeps beside the training set
    (``demo_cohort.json``'s ``ceiling``).

    Returns:
        ``(ceiling, path)``, or ``(None, None)`` when the set has no raw folder or it has no ceiling.
    """
    if not (Path(data) / DATASET_YAML).is_file():
        return None, None
    raw = read_dataset_info(data).get("raw")
    kept = Path(data) / COHORT_RECORD
    if raw and (Path(raw) / "ceiling.json").is_file():
        path = Path(raw) / "ceiling.json"
    elif kept.is_file():
        path = kept
    else:
        return None, None
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    if path == kept:
        content = content.get("ceiling") or None
    return (content, str(path)) if content else (None, None)


def _ci(result: dict, names) -> dict:
    return {name: {k: result[name][k] for k in ("value", "low", "high")} for name in names}


def score_split(model, test: SplitPredictions, val: SplitPredictions | None = None, n_boot: int = 1000,
                seed: int = 0, ceiling: dict | None = None) -> dict:
    """Every metric of every target on the test predictions, with 95% bootstrap CIs.

    Decision thresholds are the Youden thresholds of the validation predictions
    (`val`); without them, those stored in the model's calibration (also chosen on
    validation when it was trained). Subjects without a target's label are left out
    of that target; targets with fewer than `MIN_SUBJECTS` labelled subjects (or
    cases, or controls) are listed under ``skipped``.

    Args:
        model: the `HeadsModel` (units, classes, stored thresholds and intervals).
        test: its test predictions.
        val: its validation predictions, or ``None``.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        ceiling: the simulator's ``ceiling.json`` (R² as a fraction of it), or ``None``.

    Returns:
        ``{"regression": {target: {...}}, "binary": {...}, "multiclass": {...}, "skipped": {...}}``;
        every metric is ``{"value", "low", "high"}``.
    """
    config = model.config
    film = bool(getattr(model.encoder.config, "film", False))
    out: dict = {"regression": {}, "binary": {}, "multiclass": {}, "skipped": {}}
    for column, (truth, predicted) in test.regression.items():
        rows = _finite_rows(truth)
        if rows.sum() < MIN_SUBJECTS:
            out["skipped"][column] = f"{int(rows.sum())} labelled subjects"
            continue
        ci = bootstrap_ci(regression_metrics, truth[rows], predicted[rows], n_boot=n_boot, seed=seed)
        entry = {"unit": config.regression_units[config.regression_targets.index(column)], "n": int(rows.sum()), **_ci(ci, REGRESSION_METRICS),
                 "bias": ci["bias"]["value"]}
        halfwidth = config.calibration.interval_halfwidth.get(column)
        if halfwidth is not None and math.isfinite(halfwidth):
            entry["interval_halfwidth"] = halfwidth
            entry["interval_coverage"] = float(np.mean(np.abs(predicted[rows] - truth[rows]) <= halfwidth))
        if ceiling is not None:
            key = "r2_with_demographics" if film else "r2"
            bound = (ceiling.get(key) or {}).get(ceiling_key(column))
            if bound is not None and bound > 0:
                entry["ceiling_r2"] = bound
                entry["r2_fraction_of_ceiling"] = {k: v / bound for k, v in entry["r2"].items()}
        out["regression"][column] = entry
    for column, (truth, probability) in test.binary.items():
        rows = _finite_rows(truth)
        y, p = truth[rows], probability[rows]
        if min(y.sum(), (1 - y).sum()) < MIN_SUBJECTS:
            out["skipped"][display_name(column)] = f"{int(y.sum())} cases and {int((1 - y).sum())} controls"
            continue
        threshold, source = None, None
        if val is not None and column in val.binary:
            known = np.isfinite(val.binary[column][0])
            vy = val.binary[column][0][known]
            if vy.size and 0 < vy.sum() < vy.size:
                threshold, source = youden_threshold(vy, val.binary[column][1][known]), "validation (Youden)"
        if threshold is None and column in config.calibration.thresholds:
            threshold = config.calibration.thresholds[column]
            source = f"model calibration on {config.calibration.split or 'validation'} (Youden)"
        if threshold is None:
            out["skipped"][display_name(column)] = "no validation threshold"
            continue
        ci = bootstrap_ci(partial(classification_metrics, threshold=threshold), y, p, n_boot=n_boot, seed=seed,
                          stratify=y)
        out["binary"][display_name(column)] = {
            "column": column, "n": int(y.size), "n_positive": int(y.sum()), "prevalence": float(y.mean()),
            "threshold": float(threshold), "threshold_source": source, **_ci(ci, BINARY_METRICS),
            "brier": ci["brier"]["value"]}
    for column, (truth, probability) in test.multiclass.items():
        rows = _finite_rows(truth)
        if rows.sum() < MIN_SUBJECTS:
            out["skipped"][column] = f"{int(rows.sum())} labelled subjects"
            continue
        y = truth[rows].astype(np.int64)
        classes = list(config.multiclass_classes)
        ci = bootstrap_ci(partial(multiclass_metrics, class_names=classes), y, probability[rows], n_boot=n_boot,
                          seed=seed, stratify=y)
        present = [c for i, c in enumerate(classes) if (y == i).any()]
        entry = {"classes": classes, "n": int(rows.sum()),
                 "class_counts": {c: int((y == i).sum()) for i, c in enumerate(classes)},
                 **_ci(ci, ("accuracy", "balanced_accuracy"))}
        # One-vs-rest AUROC over the classes present in the test set (an absent class has none).
        if len(present) >= 2:
            keep = [classes.index(c) for c in present]
            remap = {old: new for new, old in enumerate(keep)}
            sub_rows = np.isin(y, keep)
            sub_y = np.array([remap[v] for v in y[sub_rows]])
            sub_p = probability[rows][sub_rows][:, keep]
            present_ci = bootstrap_ci(partial(multiclass_metrics, class_names=present), sub_y, sub_p, n_boot=n_boot,
                                      seed=seed, stratify=sub_y)
            entry["macro_auroc"] = _ci(present_ci, ("macro_auroc",))["macro_auroc"]
            entry["macro_auroc_classes"] = present
            entry.update(_ci(present_ci, [f"auroc_{c}" for c in present]))
        out["multiclass"][column] = entry
    return out


def result_rows(scores: dict, **fields) -> list[dict]:
    """Rows for `cardiacnets.evaluate.report_tables.results_table` from `score_split`'s output.

    Args:
        scores: a `score_split` result.
        **fields: columns shared by every row (``model``, ``mode``, ``label_fraction``, ``leads`` ...).

    Returns:
        One row per (task, metric).
    """
    rows = []
    for kind, names in (("regression", (*REGRESSION_METRICS, "r2_fraction_of_ceiling")),
                        ("binary", BINARY_METRICS), ("multiclass", MULTICLASS_METRICS)):
        for task, entry in scores[kind].items():
            for metric in names:
                if metric in entry:
                    value = entry[metric]
                    rows.append({**fields, "task": task, "metric": metric, "value": value["value"],
                                 "low": value["low"], "high": value["high"], "n": entry["n"]})
    return rows


# --- comparison --------------------------------------------------------------------------------------------------

def compare_predictions(model_a, pred_a: SplitPredictions, model_b, pred_b: SplitPredictions,
                        val_a: SplitPredictions | None = None, val_b: SplitPredictions | None = None,
                        n_boot: int = 1000, seed: int = 0) -> dict:
    """Paired comparison of two models on the same subjects (B − A for every metric).

    Every metric of the targets both models predict is compared with a paired
    bootstrap (the same resampled subjects for both); AUROCs also with DeLong's
    test. Each model's labels are classified at its own validation threshold.

    Args:
        model_a: the reference `HeadsModel`; pred_a: its predictions.
        model_b: the other model; pred_b: its predictions on the same split.
        val_a, val_b: their validation predictions (thresholds), or ``None`` (stored thresholds).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        ``{"regression": {target: {metric: {a, b, diff, low, high, p_value}}}, "binary": {label:
        {metric: ..., "delong": {...}}}, "multiclass": {...}, "n": subjects}``; a label's
        threshold metrics need both models' thresholds, its DeLong test does not.

    Raises:
        InputError: the predictions are of different subjects.
    """
    if pred_a.subject_ids != pred_b.subject_ids:
        raise InputError("<compare>", "the two models were evaluated on different subjects")
    out: dict = {"n": len(pred_a.subject_ids), "regression": {}, "binary": {}, "multiclass": {}}
    for column in [c for c in pred_a.regression if c in pred_b.regression]:
        truth = pred_a.regression[column][0]
        rows = _finite_rows(truth)
        if rows.sum() < MIN_SUBJECTS:
            continue
        result = paired_bootstrap(regression_metrics, truth[rows], pred_a.regression[column][1][rows],
                                  pred_b.regression[column][1][rows], n_boot=n_boot, seed=seed)
        out["regression"][column] = {m: result[m] for m in REGRESSION_METRICS}
    thresholds = {}
    for name, model, val in (("a", model_a, val_a), ("b", model_b, val_b)):
        thresholds[name] = dict(model.config.calibration.thresholds)
        if val is not None:
            thresholds[name].update(calibrate_thresholds_only(val))
    for column in [c for c in pred_a.binary if c in pred_b.binary]:
        truth = pred_a.binary[column][0]
        rows = _finite_rows(truth)
        y = truth[rows]
        if min(y.sum(), (1 - y).sum()) < MIN_SUBJECTS:
            continue
        p_a, p_b = pred_a.binary[column][1][rows], pred_b.binary[column][1][rows]
        entry = {}
        if column in thresholds["a"] and column in thresholds["b"]:
            # Each model's predictions carry its own threshold: stack (probability, threshold) per subject.
            stacked_a = np.stack([p_a, np.full_like(p_a, thresholds["a"][column])], axis=1)
            stacked_b = np.stack([p_b, np.full_like(p_b, thresholds["b"][column])], axis=1)
            result = paired_bootstrap(_classification_at_own_threshold, y, stacked_a, stacked_b, n_boot=n_boot,
                                      seed=seed, stratify=y)
            entry = {m: result[m] for m in BINARY_METRICS}
        entry["delong"] = delong_test(y, p_a, p_b)  # threshold-free: compared even without thresholds
        out["binary"][display_name(column)] = entry
    for column in [c for c in pred_a.multiclass if c in pred_b.multiclass]:
        truth = pred_a.multiclass[column][0]
        rows = _finite_rows(truth)
        if rows.sum() < MIN_SUBJECTS or model_a.config.multiclass_classes != model_b.config.multiclass_classes:
            continue
        y = truth[rows].astype(np.int64)
        metric = partial(multiclass_metrics, class_names=list(model_a.config.multiclass_classes))
        result = paired_bootstrap(metric, y, pred_a.multiclass[column][1][rows], pred_b.multiclass[column][1][rows],
                                  n_boot=n_boot, seed=seed, stratify=y)
        out["multiclass"][column] = {m: result[m] for m in ("accuracy", "balanced_accuracy")}
    return out


def _classification_at_own_threshold(y_true: np.ndarray, stacked: np.ndarray) -> dict:
    """`classification_metrics` of (probability, threshold) columns: batches of resamples supported."""
    probability, threshold = stacked[..., 0], stacked[..., 1]
    # The threshold column is constant: one value per resample.
    per_resample = threshold[..., 0] if threshold.ndim == 2 else threshold[0]
    return classification_metrics(y_true, probability, threshold=per_resample)


_classification_at_own_threshold.supports_batches = True


# --- plots and files ---------------------------------------------------------------------------------------------

def write_outputs(model, test: SplitPredictions, scores: dict, out_dir: Path, title: str) -> list[str]:
    """Plots (ROC, calibration, scatter and Bland–Altman per index) and ``predictions.csv`` into `out_dir`.

    Returns:
        The files written.
    """
    import pandas as pd

    from cardiacnets.evaluate.plots import bland_altman_plot, calibration_plot, roc_plot, scatter_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    curves = {}
    for name, entry in scores["binary"].items():
        truth, probability = test.binary[entry["column"]]
        rows = _finite_rows(truth)
        curves[name] = (truth[rows].astype(int), probability[rows])
    if curves:
        written.append(str(roc_plot(curves, out_dir / "roc.png", title=f"{title}: screening ROC")))
        written.append(str(calibration_plot(curves, out_dir / "calibration.png", title=f"{title}: calibration")))
    for column, entry in scores["regression"].items():
        truth, predicted = test.regression[column]
        rows = _finite_rows(truth)
        written.append(str(scatter_plot(truth[rows], predicted[rows], out_dir / f"scatter_{column}.png",
                                        unit=entry["unit"], title=column)))
        written.append(str(bland_altman_plot(truth[rows], predicted[rows], out_dir / f"bland_altman_{column}.png",
                                             unit=entry["unit"], title=column)))
    table = {"subject_id": test.subject_ids}
    for column, (truth, predicted) in test.regression.items():
        table[f"{column}_true"], table[f"{column}_pred"] = truth, predicted
    for column, (truth, probability) in test.binary.items():
        table[f"{column}_true"], table[f"{column}_prob"] = truth, probability
    for column, (truth, probability) in test.multiclass.items():
        table[f"{column}_true"] = truth
        for i, name in enumerate(model.config.multiclass_classes):
            table[f"{column}_prob_{name}"] = probability[:, i]
    pd.DataFrame(table).to_csv(out_dir / "predictions.csv", index=False)
    written.append(str(out_dir / "predictions.csv"))
    return written


def evaluate_heads(run: str | os.PathLike, data: str | os.PathLike, split: str = "test", val_split: str | None = "val",
                   lead_subsets: list[str] | None = None, compare: str | os.PathLike | None = None,
                   out_dir: str | os.PathLike | None = None, n_boot: int = 1000, seed: int = 0,
                   batch_size: int = 64, precision: str = "fp32", device: str = "auto", num_workers: int = 0,
                   progress: bool = False, baselines: bool = True) -> dict:
    """Evaluate a heads model on a split of a training set (``cardiacnets evaluate heads``).

    Args:
        run: heads training run (``RUN/model``) or saved `HeadsModel` folder.
        data: training set folder.
        split: split evaluated.
        val_split: split whose predictions choose the decision thresholds (``None``: the
            thresholds stored with the model).
        lead_subsets: also evaluate with only these leads shown (``"I"``, ``"II"``, ``"limb"`` ...).
        compare: another heads run to compare with on the same subjects (paired bootstrap,
            DeLong); it is model A (the reference), `run` model B.
        out_dir: write plots, ``predictions.csv``, the results table and ``heads.json`` here.
        n_boot: bootstrap resamples of the CIs.
        seed: bootstrap seed.
        batch_size, precision, device, num_workers, progress: inference settings.
        baselines: also score the measurement baselines (`cardiacnets.evaluate.heads_baseline`) fitted
            on the training set's ``train`` split, and compare the model with them.

    Returns:
        The results (JSON-serialisable): ``regression``, ``binary``, ``multiclass``,
        ``skipped``, ``lead_subsets``, ``compare``, ``baselines``, ``ceiling``, provenance and timing.

    Raises:
        InputError: missing or unusable model or data.
    """
    device = resolve_device(device)
    model = load_heads_model(run)
    columns = model_columns(model)
    test_set = open_heads_split(data, split, columns)
    val_set = None
    if val_split is not None:
        try:
            val_set = open_heads_split(data, val_split, columns)
        except InputError:
            val_set = None  # no such split here (an external test set): the model's stored thresholds are used
    infer = partial(predict_split, batch_size=batch_size, device=device, precision=precision,
                    num_workers=num_workers, progress=progress)
    test = infer(model, test_set)
    val = infer(model, val_set) if val_set is not None else None
    ceiling, ceiling_path = load_ceiling(data)
    scores = score_split(model, test, val, n_boot=n_boot, seed=seed, ceiling=ceiling)
    result = {
        "model": str(run), "model_class": type(model).__name__, "data": str(data), "split": split,
        "threshold_split": val_split if val is not None else None, "n_subjects": len(test.subject_ids),
        "leads": model.config.leads or "12", "n_boot": n_boot, "seed": seed, **scores,
        "ceiling": {"path": ceiling_path, "kind": "r2_with_demographics" if getattr(
            model.encoder.config, "film", False) else "r2"} if ceiling is not None else None,
        "provenance": model.config.provenance, "precision": precision, "device": device,
        "timing": {"predict_seconds": round(test.seconds, 3),
                   "subjects_per_s": round(len(test.subject_ids) / max(test.seconds, 1e-9), 1)},
    }
    result["baselines"] = score_baselines(model, data, test, val, n_boot, seed, ceiling) if baselines else {}
    result["lead_subsets"] = {}
    for subset in lead_subsets or []:
        reduced_test = infer(model, test_set, leads=subset)
        reduced_val = infer(model, val_set, leads=subset) if val_set is not None else None
        result["lead_subsets"][subset] = score_split(model, reduced_test, reduced_val, n_boot=n_boot, seed=seed,
                                                     ceiling=ceiling)
    if compare is not None:
        other = load_heads_model(compare)
        other_columns = model_columns(other)
        other_test = infer(other, open_heads_split(data, split, other_columns))
        other_val = infer(other, open_heads_split(data, val_split, other_columns)) if val is not None else None
        result["compare"] = {"a": str(compare), "b": str(run), "difference": "b - a",
                             **compare_predictions(other, other_test, model, test, other_val, val, n_boot=n_boot,
                                                   seed=seed)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        title = f"{Path(run).name} on {split}"
        outputs = write_outputs(model, test, scores, out_dir, title)
        rows = result_rows(scores, model=str(run), mode=model.config.provenance.get("mode", ""),
                           label_fraction=model.config.provenance.get("label_fraction"), leads=result["leads"])
        for subset, subset_scores in result["lead_subsets"].items():
            rows += result_rows(subset_scores, model=str(run), mode=f"{model.config.provenance.get('mode', '')} "
                                f"[leads {subset}]", label_fraction=model.config.provenance.get("label_fraction"),
                                leads=subset)
        if rows:
            outputs += [str(p) for p in write_table(results_table(rows), out_dir / "results")]
        result["outputs"] = outputs + [str(out_dir / "heads.json")]
        (out_dir / "heads.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    return result


def score_baselines(model, data, test: SplitPredictions, val: SplitPredictions | None, n_boot: int, seed: int,
                    ceiling: dict | None) -> dict:
    """Every baseline of `BASELINES` scored like the model on its subjects, and the paired heads − baseline.

    Returns:
        Baseline name -> its `score_split` result plus ``features``, ``n_train`` and ``heads_minus_baseline``
        (`compare_predictions` with the baseline as A); ``{"skipped": reason}`` where it cannot be fitted.
    """
    out = {}
    for name in BASELINES:
        try:
            baseline = MeasurementBaseline(data, name, list(model.config.regression_targets),
                                           list(model.config.binary_targets))
        except InputError as err:
            out[name] = {"skipped": str(err)}
            continue
        base_test = baseline.predict(test)
        base_val = baseline.predict(val) if val is not None else None
        out[name] = {**baseline.info(), **score_split(model, base_test, base_val, n_boot=n_boot, seed=seed,
                                                       ceiling=ceiling),
                     "heads_minus_baseline": compare_predictions(model, base_test, model, test, base_val, val,
                                                                 n_boot=n_boot, seed=seed)}
    return out


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
