"""Write a simulated paired ECG-CMR cohort as a UK Biobank-style folder tree.

`write_cohort` simulates ``n`` subjects (in parallel with a process pool) and
writes what a UK Biobank user holds, plus the ground truth::

    OUT/ecg/{eid}_20205_2_0.xml           resting ECG, GE CardioSoft XML (bulk field 20205, instance 2)
    OUT/cmr/{eid}/sa.nii.gz               short-axis cine (x, y, slices, frames), int16
    OUT/cmr/{eid}/seg_sa.nii.gz           its segmentation, uint8 (1 LV, 2 LV myocardium, 3 RV)
    OUT/cmr/{eid}/la_4ch.nii.gz           4-chamber cine (x, y, 1, frames), int16
    OUT/ukb_tabular.csv                   demographics, CMR phenotypes (as measured), ICD-10 codes
    OUT/ground_truth.csv                  every latent: physiology, ECG parameters, seg-measured indices
    OUT/synth_config.yaml, OUT/ceiling.json

Subject ``i`` (eid ``1000001 + i``) draws everything from
``np.random.default_rng([seed, i])`` (split into independent streams for the
physiology, the ECG and the images), so a subject is identical whatever ``n``,
the worker count or the order of completion.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardiacnets.config import save_config
from cardiacnets.data.ukb_fields import (
    AGE_AT_VISIT_FIELD, BMI_FIELD, CMR_FIELD_BY_NAME, ECG_XML_FIELD, HEIGHT_FIELD, ICD10_FIELD, SEX_FIELD,
    WEIGHT_FIELD, column,
)
from cardiacnets.errors import InputError
from cardiacnets.simulate.ceiling import ECG_PREFIX, SEG_PREFIX, measure_ceiling
from cardiacnets.simulate.physiology import (
    DISEASES, ICD10_CODES, Physiology, SynthConfig, icd10_codes, sample_physiology,
)

EID_START = 1_000_001
OUTPUT_NAMES = frozenset({"ecg", "cmr", "ukb_tabular.csv", "ground_truth.csv", "synth_config.yaml", "ceiling.json",
                          "failures.csv"})
STAGES = ("physiology", "ecg", "cmr_render", "measure", "write")
_N_ICD_COLUMNS = len(ICD10_CODES)


@dataclass
class CohortSummary:
    """What `write_cohort` wrote.

    Attributes:
        out_dir: the cohort folder.
        n: subjects requested; ``n_written`` of them were written.
        seconds: wall-clock time of the whole run.
        subjects_per_s: written subjects per second.
        disease_counts: subjects per disease state (``effusion``: any effusion).
        stage_ms: mean wall-clock milliseconds per subject in each stage (`STAGES`), per worker.
        cpu_ms_per_subject: mean CPU time of a worker per subject (insensitive to other load).
        failures: ``(eid, reason)`` of subjects that could not be simulated.
        ceiling: the result of `measure_ceiling` on the ground truth (None when skipped).
        workers: processes used.
        prevalence_enriched: whether diseases were drawn above population rates.
    """

    out_dir: Path
    n: int
    n_written: int
    seconds: float
    subjects_per_s: float
    disease_counts: dict[str, int]
    stage_ms: dict[str, float]
    failures: list[tuple[int, str]] = field(default_factory=list)
    ceiling: dict | None = None
    workers: int = 1
    cpu_ms_per_subject: float = math.nan
    prevalence_enriched: bool = True

    @property
    def paths(self) -> dict[str, Path]:
        return {name: self.out_dir / name for name in
                ("ecg", "cmr", "ukb_tabular.csv", "ground_truth.csv", "synth_config.yaml", "ceiling.json")}


def ecg_filename(eid: int) -> str:
    """UK Biobank bulk name of a subject's imaging-visit ECG: ``{eid}_20205_2_0.xml``."""
    return f"{eid}_{ECG_XML_FIELD}_2_0.xml"


def subject_rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for a subject's physiology, ECG and images.

    All three derive from ``np.random.default_rng([seed, index])``, so changing
    how one stage draws leaves the others' draws unchanged.
    """
    physiology_rng, ecg_rng, cmr_rng = np.random.default_rng([seed, index]).spawn(3)
    return physiology_rng, ecg_rng, cmr_rng


def ecg_latents(index: int, seed: int, config: SynthConfig):
    """A subject's `Physiology` and `ECGParams` without the strip (cheap), as `simulate_ecg` draws them.

    Returns:
        ``(phys, ecg_params, ecg_rng)``: the generator is left where the strip's draws begin.
    """
    from cardiacnets.simulate.ecg_model import ecg_parameters

    physiology_rng, ecg_rng, _ = subject_rngs(seed, index)
    phys = sample_physiology(EID_START + index, physiology_rng, config)
    return phys, ecg_parameters(phys, ecg_rng, config.rhythm, version=config.version), ecg_rng


def ecg_strip(params, ecg_rng: np.random.Generator, config: SynthConfig):
    """The `SimulatedECG` of a subject's `ecg_latents` under the config's recording settings."""
    from cardiacnets.simulate.ecg_model import synthesize_ecg

    return synthesize_ecg(params, ecg_rng, sampling_rate_hz=config.ecg_sampling_rate_hz,
                          duration_s=config.ecg_duration_s, mains_hz=config.mains_hz, noise=config.ecg_noise,
                          version=config.version)


def simulate_ecg(index: int, seed: int, config: SynthConfig):
    """Simulate one subject's physiology and ECG only (what `simulate_subject` draws for them).

    Args:
        index: subject index (eid ``EID_START + index``).
        seed: cohort seed.
        config: simulator settings.

    Returns:
        ``(phys, ecg_params, ecg)``: the same `Physiology`, `ECGParams` and
        `SimulatedECG` that `simulate_subject` returns for this subject.
    """
    phys, params, ecg_rng = ecg_latents(index, seed, config)
    return phys, params, ecg_strip(params, ecg_rng, config)


def simulate_subject(index: int, seed: int, config: SynthConfig):
    """Simulate one subject in memory (no files).

    Args:
        index: subject index (eid ``EID_START + index``).
        seed: cohort seed.
        config: simulator settings.

    Returns:
        ``(phys, ecg_params, ecg, cmr, measured, stage_ms)``: the `Physiology`,
        `ECGParams`, `SimulatedECG`, `SimulatedCMR`, the indices measured on the
        rendered segmentation (plus ``touches_border``: the segmentation reaches
        the edge of the field of view) and the time per stage.
    """
    from cardiacnets.cmr.indices import function_indices
    from cardiacnets.simulate.cmr_model import render_cmr
    from cardiacnets.simulate.ecg_model import ecg_parameters

    physiology_rng, ecg_rng, cmr_rng = subject_rngs(seed, index)
    stage_ms = {}
    t0 = time.perf_counter()
    phys = sample_physiology(EID_START + index, physiology_rng, config)
    t1 = time.perf_counter()
    params = ecg_parameters(phys, ecg_rng, config.rhythm, version=config.version)
    ecg = ecg_strip(params, ecg_rng, config)
    t2 = time.perf_counter()
    cmr = render_cmr(phys, cmr_rng, config)
    t3 = time.perf_counter()
    measured = function_indices(cmr.seg_sa)
    seg = cmr.seg_sa.data
    # A heart cut by the field of view is measured as what the file shows; flag it.
    measured["touches_border"] = bool(seg[0].any() or seg[-1].any() or seg[:, 0].any() or seg[:, -1].any())
    t4 = time.perf_counter()
    stage_ms.update(physiology=1e3 * (t1 - t0), ecg=1e3 * (t2 - t1), cmr_render=1e3 * (t3 - t2),
                    measure=1e3 * (t4 - t3))
    return phys, params, ecg, cmr, measured, stage_ms


def _acquired(index: int) -> dt.datetime:
    """A deterministic imaging-visit date and time (2015-2020) for the ECG header."""
    day = (index * 7919) % 1800
    minute = (index * 104729) % 540
    return dt.datetime(2015, 6, 1, 8, 0) + dt.timedelta(days=day, minutes=minute)


def _write_subject(task: tuple[int, int, SynthConfig, str]) -> dict:
    """Worker: simulate subject ``index`` and write its files; never raises."""
    index, seed, config, out_dir = task
    eid = EID_START + index
    cpu_start = time.process_time()
    try:
        from cardiacnets.io.nifti import write_nifti
        from cardiacnets.simulate.ukb_xml_writer import write_ukb_xml

        phys, params, ecg, cmr, measured, stage_ms = simulate_subject(index, seed, config)
        t0 = time.perf_counter()
        out = Path(out_dir)
        write_ukb_xml(
            out / "ecg" / ecg_filename(eid), ecg.signal_mV, ecg.sampling_rate_hz, median_mV=ecg.median_mV,
            measurements=ecg.measurements, interpretation=ecg.interpretation, age_years=phys.age_years,
            is_male=phys.is_male, height_cm=phys.height_cm, weight_kg=phys.weight_kg, acquired=_acquired(index),
            beat_times_ms=ecg.beat_times_ms, mains_filter_hz=config.mains_hz,
        )
        subject_dir = out / "cmr" / str(eid)
        write_nifti(cmr.sa, subject_dir / "sa.nii.gz")
        write_nifti(cmr.seg_sa, subject_dir / "seg_sa.nii.gz")
        write_nifti(cmr.la_4ch, subject_dir / "la_4ch.nii.gz")
        stage_ms["write"] = 1e3 * (time.perf_counter() - t0)
        stage_ms["cpu"] = 1e3 * (time.process_time() - cpu_start)
        return dict(eid=eid, ground_truth=ground_truth_row(phys, params, measured),
                    tabular=tabular_row(phys, measured), stage_ms=stage_ms)
    except Exception as err:  # a batch job lists a failed subject and goes on
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):  # every later subject would fail
            raise DiskFullError(out_dir, f"the disk is full (subject {eid}: {err.strerror}); free space or choose "
                                         "another --out") from None
        return dict(eid=eid, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())


class DiskFullError(InputError):
    """The cohort's disk has no room left (or too little for the cohort): a batch-wide failure, not a subject's."""


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _check_room(out_dir: Path, n: int, margin: float = 1.1) -> None:
    """Refuse a cohort whose remaining subjects would not fit on the disk, judged by the first one's files."""
    per_subject = _tree_bytes(out_dir)
    need, free = margin * per_subject * (n - 1), shutil.disk_usage(out_dir).free
    if need > free:
        raise DiskFullError(out_dir, f"{n} subjects need about {need / 1e9:.1f} GB more (the first one wrote "
                                     f"{per_subject / 1e6:.1f} MB) but {free / 1e9:.1f} GB are free; free space, "
                                     "choose another --out or simulate fewer subjects")


def ground_truth_row(phys: Physiology, params, measured: dict) -> dict:
    """One ground-truth CSV row: physiology, ``ecg_`` parameters and ``seg_`` measurements.

    Args:
        phys: the subject's physiology.
        params: its `ECGParams`.
        measured: `function_indices` of its rendered segmentation.

    Returns:
        Column name -> value; AHA segments and ICD-10 codes joined with ``;``.
    """
    row = {}
    for key, value in phys.as_dict().items():
        if key == "akinetic_segments":
            value = ";".join(str(s) for s in value)
        row[key] = value
    row["icd10"] = ";".join(icd10_codes(phys))
    row.update({f"{ECG_PREFIX}{k}": v for k, v in params.as_dict().items()})
    row.update({f"{SEG_PREFIX}{k}": v for k, v in measured.items()})
    return row


def tabular_row(phys: Physiology, measured: dict) -> dict:
    """One row of the UK Biobank-style tabular export (``field-instance.array`` columns).

    CMR phenotypes 24100-24109 are the values measured on the rendered
    segmentation, as UK Biobank's are measured on its images; cardiac output is
    SV x heart rate; atrial volumes (24110-24117) and the global wall thickness
    (24140) come from the model's geometry, which has no atrial segmentation.

    Args:
        phys: the subject's physiology.
        measured: `function_indices` of its rendered segmentation.

    Returns:
        Column name (``eid``, ``31-0.0``, ``21003-2.0``, ..., ``24100-2.0``, ...,
        ``41270-0.0`` ...) -> value; unused ICD-10 columns are empty strings.
    """
    def cmr(name: str) -> str:
        return column(CMR_FIELD_BY_NAME[name].field_id)

    row = {
        "eid": phys.eid,
        column(SEX_FIELD, 0): int(phys.is_male),
        column(AGE_AT_VISIT_FIELD): round(phys.age_years),
        column(HEIGHT_FIELD): round(phys.height_cm),
        column(WEIGHT_FIELD): round(phys.weight_kg, 1),
        column(BMI_FIELD): round(phys.bmi, 4),
    }
    for name in ("lvedv_ml", "lvesv_ml", "lvsv_ml", "lvef_pct"):
        row[cmr(name)] = round(measured[name], 2)
    row[cmr("lvco_l_min")] = round(measured["lvsv_ml"] * phys.heart_rate_bpm / 1000.0, 3)
    row[cmr("lvm_g")] = round(measured["lvm_g"], 2)
    for name in ("rvedv_ml", "rvesv_ml", "rvsv_ml", "rvef_pct"):
        row[cmr(name)] = round(measured[name], 2)
    for prefix, vmax, vmin in (("la", phys.la_max_ml, phys.la_min_ml), ("ra", phys.ra_max_ml, phys.ra_min_ml)):
        row[cmr(f"{prefix}v_max_ml")] = round(vmax, 2)
        row[cmr(f"{prefix}v_min_ml")] = round(vmin, 2)
        row[cmr(f"{prefix}sv_ml")] = round(vmax - vmin, 2)
        row[cmr(f"{prefix}ef_pct")] = round(100.0 * (vmax - vmin) / vmax, 2)
    row[cmr("wt_global")] = round(phys.lv_wall_thickness_mm, 3)
    codes = icd10_codes(phys)
    for k in range(_N_ICD_COLUMNS):
        row[column(ICD10_FIELD, 0, k)] = codes[k] if k < len(codes) else ""
    return row


def _prepare_out_dir(out_dir: Path) -> None:
    """Create `out_dir`, or clear a previous synth output there; refuse anything else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    if out_dir.is_dir():
        entries = {p.name for p in out_dir.iterdir()}
        if entries:
            if "synth_config.yaml" not in entries or not entries <= OUTPUT_NAMES:
                unknown = sorted(entries - OUTPUT_NAMES)[:3]
                raise InputError(out_dir, "folder is not empty and is not a previous cardiacnets synth output "
                                          f"(found {', '.join(unknown) or 'no synth_config.yaml'}); "
                                          "choose a new --out or empty it")
            for name in entries:
                path = out_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out_dir / "ecg").mkdir(parents=True, exist_ok=True)
    (out_dir / "cmr").mkdir(parents=True, exist_ok=True)


def _pool_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def write_cohort(
    out_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    config: SynthConfig | None = None,
    workers: int | None = None,
    progress: bool = False,
    ceiling: bool = True,
) -> CohortSummary:
    """Simulate `n` subjects and write the UK Biobank-style cohort tree.

    Args:
        out_dir: output folder; created, or cleared when it holds a previous synth
            output. Any other non-empty folder is refused.
        n: number of subjects (eids ``1000001 .. 1000000 + n``).
        seed: cohort seed; subject ``i`` uses ``np.random.default_rng([seed, i])``.
        config: simulator settings (defaults if None).
        workers: processes (default: CPU count); 1 runs in this process.
        progress: show a progress bar on stderr.
        ceiling: measure the ECG-latent ceiling (`measure_ceiling`) into ceiling.json.

    Returns:
        A `CohortSummary`.

    Raises:
        InputError: when `out_dir` is a non-empty folder that is not a synth output.
        DiskFullError: when the first subject's files, times `n`, would not fit on the disk (checked before
            the others are simulated), or when the disk fills up on the way.
    """
    import pandas as pd

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    config = config or SynthConfig()
    config.validate()
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    save_config(config, out_dir / "synth_config.yaml")
    workers = max(1, min(int(workers or os.cpu_count() or 1), n))
    tasks = [(i, seed, config, str(out_dir)) for i in range(n)]

    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="subject", file=sys.stderr)
    # The first subject is written here: its files size the whole cohort against the free disk space.
    results = [_write_subject(tasks[0])]
    if bar is not None:
        bar.update(1)
    _check_room(out_dir, n)
    tasks = tasks[1:]
    if workers == 1:
        for task in tasks:
            results.append(_write_subject(task))
            if bar is not None:
                bar.update(1)
    elif tasks:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
            for result in pool.map(_write_subject, tasks, chunksize=max(1, min(8, len(tasks) // (4 * workers)))):
                results.append(result)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started

    done = [r for r in results if "error" not in r]
    failures = [(r["eid"], r["error"]) for r in results if "error" in r]
    if failures:
        pd.DataFrame(failures, columns=["eid", "reason"]).to_csv(out_dir / "failures.csv", index=False)
    ground_truth = pd.DataFrame([r["ground_truth"] for r in done])
    tabular = pd.DataFrame([r["tabular"] for r in done])
    ground_truth.to_csv(out_dir / "ground_truth.csv", index=False)
    tabular.to_csv(out_dir / "ukb_tabular.csv", index=False)

    counts = {name: 0 for name in DISEASES}
    for row in (r["ground_truth"] for r in done):
        for name in DISEASES:
            counts[name] += int(row["effusion_mm"] > 0) if name == "effusion" else int(bool(row[name]))
    stage_ms = {s: float(np.mean([r["stage_ms"][s] for r in done])) if done else math.nan for s in STAGES}
    ceiling_result = None
    if ceiling and len(done) >= 10:
        ceiling_result = measure_ceiling(ground_truth, seed=seed)
        ceiling_result["prevalence_enriched"] = config.prevalence_enriched
        (out_dir / "ceiling.json").write_text(json.dumps(ceiling_result, indent=2) + "\n")
    return CohortSummary(
        out_dir=out_dir, n=n, n_written=len(done), seconds=seconds,
        subjects_per_s=len(done) / seconds if seconds > 0 else math.inf, disease_counts=counts,
        stage_ms=stage_ms, failures=failures, ceiling=ceiling_result, workers=workers,
        cpu_ms_per_subject=float(np.mean([r["stage_ms"]["cpu"] for r in done])) if done else math.nan,
        prevalence_enriched=config.prevalence_enriched,
    )
