"""Simulator realism: can a simple classifier tell simulated ECGs from real ones?

The benchmark simulates ``--n`` subjects (physiology and ECG only, exactly as
``cardiacnets synth`` draws them, each written as UK Biobank XML and read back)
and reads the shared real recordings: the PTB-XL records (500 Hz) with their
NORM subset (``NORM`` at likelihood >= 50 in ``ptbxl_database.csv``; classes
from ``scp_statements.csv``) and the UK Biobank-format sample XML. The package's
delineator (`cardiacnets.simulate.delineate`) runs identically on every record
and gives per-record features:

* clinical: rate, PR, P duration, QRS, QT, QTc, P/QRS/T axes (sine and cosine),
  R and S amplitudes in the 12 leads, T amplitude in II, V2, V5, Sokolow-Lyon;
* signal: the largest QRS slope per lead (mV/s), the high-frequency noise (robust
  SD of the 40-150 Hz band outside the QRS complexes, mains notched), the
  mains amplitude, the share of power in six spectral bands, RR variability
  (SD / mean, RMSSD / mean), beat-to-beat residual around the median beat, the
  share of beats that are not dominant and the variation of R amplitude.

It reports the distributions side by side (median and quartiles per set,
each feature's own simulated-vs-real AUROC) and the cross-validated (5-fold,
repeated 5 times) AUROC of a standardised logistic regression telling
simulated from real on all features, on the clinical ones only, and healthy
simulated subjects (no disease, sinus rhythm, no block) against PTB-XL NORM.
An AUROC of 0.5 means the classifier cannot tell them apart.

``--modality`` picks the side: ``ecg`` (this module, its results at the top
level), ``cmr`` (short-axis frames against ACDC and Sunnybrook,
`cardiacnets.bench.realism_cmr`, under the key ``cmr``) or ``all`` (both).
"""

from __future__ import annotations

import argparse
import ast
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from cardiacnets.config import shared_data_dir
from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.stats.separability import CV_FOLDS, CV_REPEATS, cv_auroc

#: PTB-XL ``strat_fold``s left out of simulator versions 4 and 5's ECG calibration (``preprocessing/calibrate_ecg.py``
#: fits to folds 1-8, PTB-XL's own training folds).
HELD_OUT_FOLDS = (9, 10)
LEAD = {name: i for i, name in enumerate(STANDARD_LEADS)}
PRECORDIAL = ("V1", "V2", "V3", "V4", "V5", "V6")
SPECTRAL_BANDS_HZ = ((0.0, 0.67), (0.67, 5.0), (5.0, 15.0), (15.0, 40.0), (40.0, 100.0), (100.0, 250.0))
CLINICAL_PREFIXES = ("rate", "pr_", "p_dur", "qrs_dur", "qt_", "qtc", "axis_", "r_", "s_", "t_amp", "sokolow",
                     "p_present")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=200, help="simulated subjects (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed of the simulated subjects")
    parser.add_argument("--real-data", type=Path, default=None,
                        help="folder of the shared real samples (default: $CARDIACNETS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--max-real", type=int, default=None, help="read at most this many PTB-XL records")
    parser.add_argument("--modality", choices=("ecg", "cmr", "all"), default="all",
                        help="measure the ECG side, the CMR side (under the key 'cmr') or both (default)")
    parser.add_argument("--examples", type=Path, default=None,
                        help="also write side-by-side figures of simulated and real examples into this folder "
                             "(ecg_examples.png, cmr_examples.png)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="SynthConfig overrides, e.g. version=3 to measure that simulator calibration "
                             "(default: SynthConfig's version)")
    from cardiacnets.bench.realism_cmr import add_arguments as add_cmr_arguments

    add_cmr_arguments(parser)


# --------------------------------------------------------------------------- features

def ecg_features(signal_mV: np.ndarray, sampling_rate_hz: float, lead_names=STANDARD_LEADS) -> dict[str, float]:
    """Realism features of one 12-lead strip (see the module docstring).

    Args:
        signal_mV: (leads, T) strip in mV.
        sampling_rate_hz: its rate.
        lead_names: its lead labels.

    Returns:
        Feature name -> value (NaN where undefined, e.g. PR without a P wave).

    Raises:
        ValueError: the delineator found fewer than two beats or a lead is missing.
    """
    from scipy import signal as sp_signal

    from cardiacnets.simulate.delineate import delineate, to_standard_order

    fs = float(sampling_rate_hz)
    strip = to_standard_order(signal_mV, lead_names)
    d = delineate(strip, fs)
    m = d.intervals()
    f = d.fiducials_ms
    out: dict[str, float] = {
        "rate_bpm": m["ventricular_rate_bpm"], "pr_ms": m["pq_interval_ms"], "p_duration_ms": m["p_duration_ms"],
        "qrs_duration_ms": m["qrs_duration_ms"], "qt_ms": m["qt_interval_ms"], "qtc_ms": m["qtc_interval_ms"],
        "p_present": float(math.isfinite(f["p_onset"])),
    }
    for wave in ("p", "r", "t"):
        angle = m[f"{wave}_axis_deg"]
        out[f"axis_{wave}_sin"] = math.sin(math.radians(angle)) if math.isfinite(angle) else math.nan
        out[f"axis_{wave}_cos"] = math.cos(math.radians(angle)) if math.isfinite(angle) else math.nan

    # Amplitudes and slopes on the median beat, against the PR segment.
    median = d.median_mV
    to_i = lambda ms: int(round(ms / 2.0))  # noqa: E731 - 500 Hz median
    q_on, q_off = to_i(f["q_onset"]), to_i(f["q_offset"])
    t_off = min(to_i(f["t_offset"]), median.shape[1] - 1)
    base = d.pr_baseline_mV()
    r, s = d.qrs_amplitudes_mV()
    slope = np.abs(np.diff(median[:, max(q_on - 5, 0):q_off + 6], axis=1)).max(axis=1) * 500.0
    for name, i in LEAD.items():
        out[f"r_{name}_mV"] = float(r[i])
        out[f"s_{name}_mV"] = float(s[i])
        out[f"slope_{name}_mV_s"] = float(slope[i])
    if t_off > q_off + 40:
        t_seg = median[:, q_off + 30:t_off + 1] - base[:, None]
        peak = int(np.argmax(np.sqrt((t_seg ** 2).sum(axis=0))))
        for name in ("II", "V2", "V5"):
            out[f"t_amp_{name}_mV"] = float(t_seg[LEAD[name], peak])
    else:
        for name in ("II", "V2", "V5"):
            out[f"t_amp_{name}_mV"] = math.nan
    out["sokolow_mV"] = float(s[LEAD["V1"]] + max(r[LEAD["V5"]], r[LEAD["V6"]]))

    # Noise: 40-150 Hz outside +-60 ms of each QRS, 50 and 60 Hz notched.
    independent = strip[[LEAD[n] for n in ("I", "II", *PRECORDIAL)]]
    nyq = fs / 2.0
    hf = sp_signal.sosfiltfilt(sp_signal.butter(4, [40.0, min(150.0, 0.9 * nyq)], btype="bandpass", fs=fs,
                                                output="sos"), independent, axis=-1)
    for mains in (50.0, 60.0):
        if mains < 0.9 * nyq:
            b, a = sp_signal.iirnotch(mains, 10.0, fs=fs)
            hf = sp_signal.filtfilt(b, a, hf, axis=-1)
    keep = np.ones(strip.shape[1], dtype=bool)
    half = int(0.06 * fs)
    for beat in np.round(d.beat_samples).astype(int):
        keep[max(beat - half - int(0.04 * fs), 0):beat + half] = False
    keep[: int(0.2 * fs)] = keep[-int(0.2 * fs):] = False
    if keep.sum() > fs:
        mad = np.median(np.abs(hf[:, keep] - np.median(hf[:, keep], axis=1, keepdims=True)), axis=1)
        out["hf_noise_uV"] = float(np.median(1.4826 * mad) * 1000.0)
    else:
        out["hf_noise_uV"] = math.nan
    spectrum = np.abs(np.fft.rfft(independent - independent.mean(axis=1, keepdims=True), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(strip.shape[1], 1.0 / fs)
    total = spectrum.sum(axis=1) + 1e-12
    for lo, hi in SPECTRAL_BANDS_HZ:
        band = (freqs >= lo) & (freqs < hi)
        share = np.median(spectrum[:, band].sum(axis=1) / total) if band.any() else 0.0
        out[f"band_{lo:g}_{hi:g}_hz_log10"] = float(np.log10(share + 1e-9))
    mains_amp = []
    for mains in (50.0, 60.0):
        k = int(np.argmin(np.abs(freqs - mains)))
        mains_amp.append(np.median(np.sqrt(spectrum[:, k]) * 2.0 / strip.shape[1]))
    out["mains_uV"] = float(max(mains_amp) * 1000.0)

    # Beat to beat: RR, residual around the median, non-dominant share, R variation.
    rr = d.rr_ms
    out["rr_cv"] = float(np.std(rr) / np.mean(rr)) if rr.size >= 2 else math.nan
    out["rr_rmssd_rel"] = float(np.sqrt(np.mean(np.diff(rr) ** 2)) / np.mean(rr)) if rr.size >= 3 else math.nan
    out["non_dominant_share"] = float(1.0 - d.dominant.mean()) if d.dominant.size else math.nan
    out.update(_beat_variation(strip, fs, d, q_on, q_off))
    return out


def _beat_variation(strip: np.ndarray, fs: float, d, q_on: int, q_off: int) -> dict[str, float]:
    """Residual of the dominant beats' QRS-T around the median and the spread of their R amplitude."""
    from cardiacnets.simulate.delineate import MEDIAN_ALIGN_MS, _filtfilt, resample_to

    x = _filtfilt("highpass", resample_to(strip, fs, 500.0), 500.0)
    align = int(round(MEDIAN_ALIGN_MS / 2.0))
    lo, hi = q_on - 10, min(q_off + 150, d.median_mV.shape[1])
    lead = int(np.argmax(np.ptp(d.median_mV[:, q_on:q_off + 1], axis=1)))
    residual, r_amp = [], []
    for beat, dom in zip(np.round(d.beat_samples * 500.0 / fs).astype(int), d.dominant):
        start = beat - align
        if not dom or start + lo < 0 or start + hi > x.shape[1]:
            continue
        seg = x[:, start + lo:start + hi]
        ref = d.median_mV[:, lo:hi]
        residual.append(np.sqrt(np.mean((seg - seg[:, :5].mean(axis=1, keepdims=True)
                                         - (ref - ref[:, :5].mean(axis=1, keepdims=True))) ** 2)))
        r_amp.append(np.ptp(seg[lead, 10:q_off - q_on + 10]))
    qrs_size = float(np.ptp(d.median_mV[lead, q_on:q_off + 1])) + 1e-6
    if len(residual) < 2:
        return {"beat_residual_rel": math.nan, "r_amp_cv": math.nan}
    return {"beat_residual_rel": float(np.median(residual) / qrs_size),
            "r_amp_cv": float(np.std(r_amp) / (np.mean(r_amp) + 1e-9))}


# --------------------------------------------------------------------------- data sets

def healthy_subject(phys, params) -> bool:
    """No diagnosis, sinus rhythm, no block, no ectopy: the subjects compared with PTB-XL NORM."""
    from cardiacnets.simulate.physiology import icd10_codes

    p = params.as_dict()
    electrically_normal = not any(bool(p.get(k, False)) for k in ("lbbb", "rbbb", "lafb", "paced",
                                                                 "atrial_fibrillation")) \
        and p.get("pvc_per_min", 0.0) == 0.0 and p.get("pac_per_min", 0.0) == 0.0
    return bool(not icd10_codes(phys) and electrically_normal)


def simulated_features(n: int, seed: int, config, workdir: Path,
                       healthy_only: bool = False) -> tuple[list[dict], list[str]]:
    """Features of ``n`` simulated subjects, each written as UK Biobank XML and read back.

    Args:
        n, seed, config: the subjects (indices ``0 .. n-1`` of the cohort ``seed``) and the simulator.
        workdir: scratch folder of the XML files.
        healthy_only: skip the other subjects before their strip is drawn (a calibration against NORM).

    Returns:
        ``(rows, skipped)``: one dict per subject (features plus ``healthy``,
        ``xml_qrs_duration_ms`` and the true ``latent_qrs_duration_ms``) and
        ``"eid: reason"`` for subjects whose record could not be measured.
    """
    from cardiacnets.io.ukb_xml import read_ukb_xml
    from cardiacnets.simulate.cohort import ecg_latents, ecg_strip
    from cardiacnets.simulate.ukb_xml_writer import write_ukb_xml

    rows, skipped = [], []
    for i in range(n):
        phys, params, ecg_rng = ecg_latents(i, seed, config)
        healthy = healthy_subject(phys, params)
        if healthy_only and not healthy:
            continue
        ecg = ecg_strip(params, ecg_rng, config)
        path = workdir / f"{phys.eid}.xml"
        write_ukb_xml(path, ecg.signal_mV, ecg.sampling_rate_hz, median_mV=ecg.median_mV,
                      measurements=ecg.measurements, interpretation=ecg.interpretation,
                      age_years=phys.age_years, is_male=phys.is_male, beat_times_ms=ecg.beat_times_ms,
                      mains_filter_hz=config.mains_hz)
        record = read_ukb_xml(path)
        path.unlink()
        try:
            row = ecg_features(record.signal_mV, record.sampling_rate_hz, record.lead_names)
        except ValueError as err:
            skipped.append(f"{phys.eid}: {err}")
            continue
        row["healthy"] = healthy
        row["xml_qrs_duration_ms"] = float(record.measurements.get("qrs_duration_ms") or math.nan)
        row["latent_qrs_duration_ms"] = float(params.qrs_duration_ms)
        rows.append(row)
    return rows, skipped


def real_features(real_dir: Path, max_records: int | None = None) -> tuple[list[dict], list[str], dict]:
    """Features of the shared real recordings (PTB-XL records500 and the UK Biobank sample XML).

    Returns:
        ``(rows, skipped, sets)``: rows with ``set`` (``ptbxl`` / ``ukb_xml``),
        ``norm`` (PTB-XL NORM) and ``id``; skipped records with reasons; a
        description of the sets read.
    """
    import pandas as pd

    from cardiacnets.io.ecg import read_ecg

    rows, skipped = [], []
    ptbxl = real_dir / "ptbxl"
    database = pd.read_csv(ptbxl / "ptbxl_database.csv")
    statements = pd.read_csv(ptbxl / "scp_statements.csv", index_col=0)
    if max_records is not None:
        database = database.iloc[:max_records]
    for _, rec in database.iterrows():
        path = ptbxl / rec["filename_hr"]
        if not path.with_suffix(".hea").exists():
            continue
        codes = ast.literal_eval(rec["scp_codes"])
        try:
            record = read_ecg(path)
            row = ecg_features(record.signal_mV, record.sampling_rate_hz, record.lead_names)
        except Exception as err:  # a benchmark never dies on one bad record
            skipped.append(f"ptbxl {rec['ecg_id']}: {type(err).__name__}: {err}")
            continue
        row.update(set="ptbxl", id=int(rec["ecg_id"]), norm=bool(codes.get("NORM", 0.0) >= 50.0),
                   codes=" ".join(sorted(codes)), strat_fold=int(rec["strat_fold"]))
        rows.append(row)
    xml = real_dir / "ukb_ecg_xml" / "ukbb_scrubbed.xml"
    ukb = {}
    if xml.exists():
        from cardiacnets.io.ukb_xml import read_ukb_xml

        record = read_ukb_xml(xml)
        row = ecg_features(record.signal_mV, record.sampling_rate_hz, record.lead_names)
        row.update(set="ukb_xml", id=0, norm=False, codes="", strat_fold=None)
        rows.append(row)
        ukb = {"delineator_qrs_duration_ms": round(row["qrs_duration_ms"], 1),
               "device_qrs_duration_ms": record.measurements.get("qrs_duration_ms"),
               "delineator_qt_ms": round(row["qt_ms"], 1), "device_qt_ms": record.measurements.get("qt_interval_ms")}
    diagnostic = statements[statements["diagnostic"] == 1.0].index
    sets = {
        "ptbxl": {"path": str(ptbxl / "records500"), "records": sum(r["set"] == "ptbxl" for r in rows),
                  "norm_records": sum(r["norm"] for r in rows),
                  "norm_definition": "scp_codes NORM likelihood >= 50 (ptbxl_database.csv)",
                  "diagnostic_statements_known": int(len(diagnostic))},
        "ukb_xml": {"path": str(xml), "records": int(bool(ukb)), "device_vs_delineator": ukb},
    }
    return rows, skipped, sets


# --------------------------------------------------------------------------- statistics

def feature_names(rows: list[dict]) -> list[str]:
    """Numeric feature columns (bookkeeping columns left out)."""
    skip = {"healthy", "xml_qrs_duration_ms", "latent_qrs_duration_ms", "set", "id", "norm", "codes", "strat_fold"}
    return [k for k in rows[0] if k not in skip]


def _summary(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"median": None, "q25": None, "q75": None, "n": 0}
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {"median": round(float(q50), 4), "q25": round(float(q25), 4), "q75": round(float(q75), 4),
            "n": int(values.size)}


def compare(sim_rows: list[dict], real_rows: list[dict], names: list[str]) -> dict:
    """Per-feature distributions and univariate AUROCs, simulated vs real."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for name in names:
        a = np.array([r[name] for r in sim_rows], dtype=np.float64)
        b = np.array([r[name] for r in real_rows], dtype=np.float64)
        fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
        auc = None
        if fa.size and fb.size:
            auc = roc_auc_score(np.r_[np.ones(fa.size), np.zeros(fb.size)], np.r_[fa, fb])
            auc = round(float(max(auc, 1.0 - auc)), 3)
        out[name] = {"simulated": _summary(a), "real": _summary(b), "univariate_auroc": auc}
    return out


def _matrix(rows: list[dict], names: list[str]) -> np.ndarray:
    return np.array([[r[n] for n in names] for r in rows], dtype=np.float64)


def set_auroc(sim_rows: list[dict], real_rows: list[dict], columns: list[str], seed: int = 0) -> dict:
    """`cv_auroc` of simulated (1) vs real (0) feature rows on `columns`; None with fewer rows than folds."""
    if len(sim_rows) < CV_FOLDS or len(real_rows) < CV_FOLDS:
        return {"auroc": None, "n_sim": len(sim_rows), "n_real": len(real_rows)}
    x = np.concatenate([_matrix(sim_rows, columns), _matrix(real_rows, columns)])
    y = np.r_[np.ones(len(sim_rows)), np.zeros(len(real_rows))].astype(int)
    return cv_auroc(x, y, seed)


def realism_report(sim_rows: list[dict], real_rows: list[dict], seed: int = 0) -> dict:
    """AUROCs and distributions from the feature rows (see `run`)."""
    from scipy.stats import spearmanr

    names = feature_names(sim_rows)
    clinical = [n for n in names if n.startswith(CLINICAL_PREFIXES)]
    healthy = [r for r in sim_rows if r["healthy"]]
    norm = [r for r in real_rows if r.get("norm")]
    held_out = [r for r in real_rows if r.get("strat_fold") in HELD_OUT_FOLDS]

    xml = np.array([r["xml_qrs_duration_ms"] for r in sim_rows])
    measured = np.array([r["qrs_duration_ms"] for r in sim_rows])
    latent = np.array([r["latent_qrs_duration_ms"] for r in sim_rows])
    ok = np.isfinite(xml) & np.isfinite(measured)
    precordial = {}
    for lead in PRECORDIAL:
        for wave in ("r", "s"):
            key = f"{wave}_{lead}_mV"
            sim_median = float(np.nanmedian([r[key] for r in healthy])) if healthy else math.nan
            real_median = float(np.nanmedian([r[key] for r in norm])) if norm else math.nan
            precordial[key] = {"simulated_healthy": round(sim_median, 3), "ptbxl_norm": round(real_median, 3),
                               "ratio": round(sim_median / real_median, 3) if real_median > 0 else None}
    return {
        "auroc": {
            "all_features": set_auroc(sim_rows, real_rows, names, seed),
            "clinical_features": set_auroc(sim_rows, real_rows, clinical, seed),
            "healthy_vs_ptbxl_norm": set_auroc(healthy, norm, names, seed),
            "healthy_vs_ptbxl_norm_clinical": set_auroc(healthy, norm, clinical, seed),
            # PTB-XL's folds 9-10 were held out of simulator versions 4 and 5's calibration (strat_fold 1-8).
            "all_features_vs_ptbxl_folds_9_10": set_auroc(sim_rows, held_out, names, seed),
            "healthy_vs_ptbxl_norm_folds_9_10": set_auroc(healthy, [r for r in held_out if r["norm"]], names, seed),
        },
        "precordial_medians_mV": precordial,
        "qrs_duration_agreement": {
            "spearman_xml_vs_delineator": round(float(spearmanr(xml[ok], measured[ok])[0]), 3) if ok.sum() > 2
            else None,
            "spearman_latent_vs_delineator": round(float(spearmanr(latent[ok], measured[ok])[0]), 3)
            if ok.sum() > 2 else None,
            "median_abs_xml_minus_delineator_ms": round(float(np.median(np.abs(xml[ok] - measured[ok]))), 1)
            if ok.any() else None,
        },
        "features": {
            "all_vs_real": compare(sim_rows, real_rows, names),
            "healthy_vs_ptbxl_norm": compare(healthy, norm, names),
        },
        "clinical_feature_names": clinical,
    }


def run(args: argparse.Namespace) -> dict:
    """The ECG side under the top-level keys and, with ``--modality cmr`` or ``all``, the CMR side under ``cmr``."""
    modality = getattr(args, "modality", "all")
    result = {"modality": modality}
    if modality in ("ecg", "all"):
        result.update(run_ecg(args))
    if modality in ("cmr", "all"):
        from cardiacnets.bench.realism_cmr import run_cmr

        result["cmr"] = run_cmr(args)
    return result


def run_ecg(args: argparse.Namespace) -> dict:
    from cardiacnets.config import load_config
    from cardiacnets.errors import InputError
    from cardiacnets.simulate import SynthConfig

    real_dir = args.real_data or shared_data_dir()
    if not (real_dir / "ptbxl" / "ptbxl_database.csv").is_file():
        raise InputError(real_dir, "has no ptbxl/ptbxl_database.csv; pass --real-data or set CARDIACNETS_SHARED_DATA")
    config = load_config(SynthConfig, None, args.overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cardiacnets-bench-realism-") as tmp:
        sim_rows, sim_skipped = simulated_features(args.n, args.seed, config, Path(tmp))
    sim_seconds = time.perf_counter() - started
    real_rows, real_skipped, sets = real_features(real_dir, args.max_real)
    report = realism_report(sim_rows, real_rows, seed=args.seed)
    examples = {}
    if getattr(args, "examples", None) is not None:
        from cardiacnets.bench.realism_examples import ecg_examples

        examples["ecg"] = str(ecg_examples(config, args.seed, real_dir, args.examples / "ecg_examples.png"))
    return {
        **({"examples": examples} if examples else {}),
        "simulator_version": config.version,
        "n_simulated": len(sim_rows),
        "n_simulated_healthy": sum(r["healthy"] for r in sim_rows),
        "real_sets": sets,
        "n_real": len(real_rows),
        **report,
        "skipped": {"simulated": sim_skipped, "real": real_skipped},
        "seconds": {"simulate_and_measure": round(sim_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "cv": {"folds": CV_FOLDS, "repeats": CV_REPEATS,
               "model": "median imputation, standardisation, L2 logistic regression (C=1)"},
    }
