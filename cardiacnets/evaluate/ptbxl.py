"""Simulator-trained heads on real ECGs: LV estimates of PTB-XL records with and without LV hypertrophy.

PTB-XL (Wagner et al., Sci Data 2020) has no imaging, so the heads' LV mass,
LVEDV and LVEF estimates cannot be scored against a measurement; what can be
checked is whether they separate the records cardiologists labelled as LV
hypertrophy from normal ECGs, beside the voltage criteria a cardiologist would
use on the same records:

- groups (`cardiacnets.data.sources.ptbxl_labels`): the ``LVH`` statement, and
  the ``HYP`` diagnostic superclass, each against ``NORM`` records (NORM
  records with the positive label are left out);
- scores: each heads model's estimates through the prediction API
  (`cardiacnets.heads.predict.predict_record`, the model's own ECG
  preprocessing); Sokolow-Lyon (S in V1 + the larger R of V5 and V6) and the
  Cornell voltage (R in aVL + S in V3), from the R and S amplitudes of the
  delineator's median beat (`cardiacnets.simulate.delineate`);
- figures: the groups' means and their difference with a bootstrap 95% CI, the
  two-sided Mann-Whitney U test, the AUROC (higher score = positive) with a
  bootstrap 95% CI (resampling records within each group), and per PTB-XL
  ``strat_fold`` the AUROC where both groups are present, with the mean and SD
  across folds and the positives per fold.

Every score is computed on the same records: a record that cannot be read,
delineated or predicted by every model is skipped and listed with its reason.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cardiacnets.data.sources import ptbxl_labels
from cardiacnets.errors import CardiacNetsError, InputError
from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.stats.bootstrap import bootstrap_ci
from cardiacnets.stats.metrics import separation_metrics

#: Positive label of each comparison (against NORM records) and what it is.
COMPARISONS = {"LVH_vs_NORM": ("label_LVH", "scp_codes lists LVH (left ventricular hypertrophy), any likelihood"),
               "HYP_vs_NORM": ("label_HYP", "a statement of the HYP diagnostic superclass (scp_statements.csv)")}
NEGATIVE_DEFINITION = "NORM diagnostic superclass, without the positive label"
#: The heads' estimates scored (a ``seg_`` prefix, for segmentation-derived targets, is accepted).
ESTIMATES = ("lvm_g", "lvedv_ml", "lvef_pct")
VOLTAGE_CRITERIA = {"sokolow_lyon_mV": "S in V1 + max(R in V5, R in V6), median beat (Sokolow & Lyon 1949)",
                    "cornell_mV": "R in aVL + S in V3, median beat (Casale et al. 1985)"}
LABEL_NOTE = ("PTB-XL's LVH statements were largely assigned from ECG voltage criteria (by the reading "
              "cardiologists and the automatic interpretation of the recording device), not from imaging: the "
              "voltage criteria are expected to do well by construction, and an ECG estimate of LV mass is "
              "scored against a label derived from the same ECG")
_LEAD = {name: i for i, name in enumerate(STANDARD_LEADS)}


def read_ptbxl_table(ptbxl_dir: str | os.PathLike, max_records: int | None = None) -> pd.DataFrame:
    """The records of a PTB-XL folder with their labels and folds.

    Args:
        ptbxl_dir: the folder holding ``ptbxl_database.csv``, ``scp_statements.csv`` and ``records500/``.
        max_records: keep only the first this many rows (quick runs).

    Returns:
        One row per record: ``ecg_id``, ``patient_id``, ``strat_fold``, ``path`` (the 500 Hz record),
        and the `ptbxl_labels` columns.

    Raises:
        InputError: no folder, no (or an unreadable) database table, or one without the needed columns.
    """
    root = Path(ptbxl_dir)
    if not root.is_dir():
        raise InputError(root, "no such PTB-XL folder")
    database = root / "ptbxl_database.csv"
    if not database.is_file():
        raise InputError(root, "has no ptbxl_database.csv")
    try:
        table = pd.read_csv(database)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(database, f"cannot read the table ({err})") from None
    missing = [c for c in ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_hr") if c not in table.columns]
    if missing:
        raise InputError(database, f"missing column(s) {', '.join(missing)}")
    if not (root / "scp_statements.csv").is_file():
        raise InputError(root, "has no scp_statements.csv (needed for the HYP and NORM superclasses)")
    if max_records is not None:
        table = table.iloc[:max_records]
    out = table[["ecg_id", "patient_id", "strat_fold"]].copy()
    out["path"] = [str(root / name) for name in table["filename_hr"]]
    return pd.concat([out, ptbxl_labels(root, table)], axis=1).reset_index(drop=True)


def voltage_criteria(signal_mV: np.ndarray, sampling_rate_hz: float, lead_names=STANDARD_LEADS) -> dict[str, float]:
    """Sokolow-Lyon and Cornell voltages of one 12-lead record, on its median beat.

    Args:
        signal_mV: (leads, T) strip in mV.
        sampling_rate_hz: its rate.
        lead_names: its leads (I, II and V1-V6 needed; missing limb leads are derived).

    Returns:
        ``{"sokolow_lyon_mV": ..., "cornell_mV": ...}``.

    Raises:
        ValueError: a needed lead is missing, or fewer than two beats were found.
    """
    from cardiacnets.simulate.delineate import delineate

    r, s = delineate(signal_mV, sampling_rate_hz, lead_names).qrs_amplitudes_mV()
    return {"sokolow_lyon_mV": float(s[_LEAD["V1"]] + max(r[_LEAD["V5"]], r[_LEAD["V6"]])),
            "cornell_mV": float(r[_LEAD["aVL"]] + s[_LEAD["V3"]])}


def compare_groups(positive, score, fold, n_boot: int = 1000, seed: int = 0) -> dict:
    """How a score separates two groups: pooled with bootstrap CIs, and per fold.

    Args:
        positive: (n,) 0/1 group labels (1 = the group expected to score higher).
        score: (n,) finite scores.
        fold: (n,) fold of each record (PTB-XL ``strat_fold``).
        n_boot: bootstrap resamples (records resampled within each group).
        seed: bootstrap seed.

    Returns:
        ``n_positive``, ``n_negative``, ``mean_positive``, ``mean_negative``, ``mean_difference`` and
        ``auroc`` (``value``, ``low``, ``high``), ``mann_whitney_u``, ``p_value`` (two-sided),
        ``per_fold`` (fold → ``n_positive``, ``n_negative``, ``auroc`` or None without both groups),
        ``fold_auroc_mean``, ``fold_auroc_sd`` (None with fewer than two folds), ``n_folds_scored``.

    Raises:
        ValueError: a group is empty, or the arrays differ in length.
    """
    from scipy import stats

    positive, score, fold = np.asarray(positive).astype(bool), np.asarray(score, dtype=np.float64), np.asarray(fold)
    if not (len(positive) == len(score) == len(fold)):
        raise ValueError(f"positive, score and fold differ in length: {len(positive)}, {len(score)}, {len(fold)}")
    if positive.all() or not positive.any():
        raise ValueError(f"both groups are needed; got {int(positive.sum())} positive of {len(positive)}")
    ci = bootstrap_ci(separation_metrics, positive, score, n_boot=n_boot, seed=seed, stratify=positive)
    test = stats.mannwhitneyu(score[positive], score[~positive], alternative="two-sided")
    per_fold = {}
    for value in sorted(np.unique(fold).tolist()):
        here = fold == value
        n_pos, n_neg = int(positive[here].sum()), int((~positive[here]).sum())
        auroc = separation_metrics(positive[here], score[here])["auroc"] if n_pos and n_neg else None
        per_fold[str(value)] = {"n_positive": n_pos, "n_negative": n_neg, "auroc": auroc}
    scored = [f["auroc"] for f in per_fold.values() if f["auroc"] is not None]
    return {
        "n_positive": int(positive.sum()), "n_negative": int((~positive).sum()),
        "mean_positive": float(score[positive].mean()), "mean_negative": float(score[~positive].mean()),
        "mean_difference": {k: ci["mean_difference"][k] for k in ("value", "low", "high")},
        "auroc": {k: ci["auroc"][k] for k in ("value", "low", "high")},
        "mann_whitney_u": float(test.statistic), "p_value": float(test.pvalue),
        "per_fold": per_fold,
        "fold_auroc_mean": float(np.mean(scored)) if scored else None,
        "fold_auroc_sd": float(np.std(scored, ddof=1)) if len(scored) > 1 else None,
        "n_folds_scored": len(scored),
    }


def _heads_models(heads_runs) -> dict[str, tuple[Path, dict[str, str]]]:
    """Name → (run, {estimate: model column}) of each heads run; names are the folders' names, made unique."""
    from cardiacnets.heads.inference import load_heads_model
    from cardiacnets.models.pretrained import resolve_model_dir

    models = {}
    for run in heads_runs:
        targets = load_heads_model(resolve_model_dir(run)).config.regression_targets
        columns = {name: column for name in ESTIMATES for column in (name, f"seg_{name}") if column in targets}
        if not columns:
            raise InputError(run, f"the heads model predicts none of {', '.join(ESTIMATES)} (it predicts "
                                  f"{', '.join(targets) or 'no index'})")
        name, k = Path(run).name or "heads", 2
        while name in models:
            name, k = f"{Path(run).name}_{k}", k + 1
        models[name] = (Path(run), columns)
    return models


def _measure(table: pd.DataFrame, models: dict, progress: bool) -> tuple[pd.DataFrame, list[dict]]:
    """Every score of every record; records where one fails are skipped and listed."""
    from cardiacnets.heads.predict import predict_record
    from cardiacnets.io.ecg import read_ecg

    rows, skipped = [], []
    records = table.itertuples(index=False)
    if progress:
        from tqdm import tqdm

        records = tqdm(records, total=len(table), desc="PTB-XL records")
    for rec in records:
        stage = "read"
        try:
            record = read_ecg(rec.path)
            stage = "voltage criteria"
            row = voltage_criteria(record.signal_mV, record.sampling_rate_hz, record.lead_names)
            for name, (run, columns) in models.items():
                stage = f"heads {name}"
                indices = predict_record(run, rec.path)["indices"]
                row.update({f"{name}:{estimate}": indices[column]["value"] for estimate, column in columns.items()})
        except (CardiacNetsError, ValueError, OSError) as err:  # one bad record never stops the evaluation
            skipped.append({"ecg_id": int(rec.ecg_id), "stage": stage, "reason": f"{type(err).__name__}: {err}"})
            continue
        rows.append({**rec._asdict(), **row})
    return pd.DataFrame(rows), skipped


def evaluate_ptbxl(heads_runs, ptbxl_dir: str | os.PathLike, n_boot: int = 1000, seed: int = 0,
                   max_records: int | None = None, out_dir: str | os.PathLike | None = None,
                   progress: bool = False) -> dict:
    """LV estimates of heads models and the voltage criteria on PTB-XL: LVH (and HYP) against NORM.

    Args:
        heads_runs: heads training runs (``RUN/model``) or saved `HeadsModel` folders (may be empty:
            the voltage criteria alone).
        ptbxl_dir: the PTB-XL folder (`read_ptbxl_table`).
        n_boot: bootstrap resamples of the pooled CIs.
        seed: bootstrap seed.
        max_records: read only the first this many records of the table.
        out_dir: also write ``ptbxl_records.csv`` (every score of every record) here.
        progress: show a progress bar.

    Returns:
        A JSON-able dict: ``data`` (folder, records listed, scored and skipped, patients, fold and
        group definitions), ``label_note``, ``models`` (name → run and the estimates scored),
        ``scores`` (score → what it is), ``comparisons`` (comparison → score → `compare_groups`),
        ``skipped`` (ecg_id, stage, reason), ``outputs``, ``seconds``.

    Raises:
        InputError: a missing folder or table, a heads run that cannot be loaded or predicts none of
            the estimates, or no record that could be scored.
    """
    started = time.perf_counter()
    table = read_ptbxl_table(ptbxl_dir, max_records)
    models = _heads_models(heads_runs)
    measured, skipped = _measure(table, models, progress)
    if measured.empty:
        reason = skipped[0]["reason"] if skipped else "the table lists no record"
        raise InputError(ptbxl_dir, f"no PTB-XL record could be scored ({reason})")
    scores = dict(VOLTAGE_CRITERIA)
    for name, (run, columns) in models.items():
        scores.update({f"{name}:{estimate}": f"heads model {run}, predicted {column}" for estimate, column in
                       columns.items()})
    comparisons = {}
    for comparison, (label, _) in COMPARISONS.items():
        chosen = measured[measured[label] | (measured["label_NORM"] & ~measured[label])]
        positive = chosen[label].to_numpy(dtype=bool)
        block = {}
        for score in scores:
            try:
                block[score] = compare_groups(positive, chosen[score].to_numpy(), chosen["strat_fold"].to_numpy(),
                                              n_boot=n_boot, seed=seed)
            except ValueError as err:  # a group without records (a small sample)
                block[score] = {"not_scored": str(err)}
        comparisons[comparison] = block
    outputs = []
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        path = Path(out_dir) / "ptbxl_records.csv"
        measured.drop(columns=["path"]).to_csv(path, index=False)
        outputs.append(str(path))
    return {
        "data": {"folder": str(ptbxl_dir), "n_records_listed": len(table), "n_records_scored": len(measured),
                 "n_records_skipped": len(skipped), "n_patients_scored": int(measured["patient_id"].nunique()),
                 "folds": "PTB-XL strat_fold (1-10, patient-wise, stratified)",
                 "groups": {name: definition for name, (_, definition) in COMPARISONS.items()},
                 "negative_group": NEGATIVE_DEFINITION,
                 "bootstrap": f"{n_boot} resamples of records within each group (a patient with several records "
                              f"counts each), percentile 95% CIs, seed {seed}"},
        "label_note": LABEL_NOTE,
        "models": {name: {"run": str(run), "estimates": columns} for name, (run, columns) in models.items()},
        "scores": scores,
        "comparisons": comparisons,
        "skipped": skipped,
        "outputs": outputs,
        "seconds": round(time.perf_counter() - started, 2),
    }
