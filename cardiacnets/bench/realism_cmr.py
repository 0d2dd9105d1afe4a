"""Simulator realism, CMR side: can a simple classifier tell simulated short-axis frames from real MRI?

The benchmark renders ``--n`` subjects' short-axis cines in memory with the
package's simulator (`cardiacnets.simulate.cohort.subject_rngs`,
`sample_physiology`, `render_cmr`: the same draws as ``cardiacnets synth``) and
keeps, per subject, the mid-ventricular slice (the middle of the slices with an
LV cavity at end-diastole, as `cardiacnets.evaluate.segmentation` picks it) at
end-diastole (frame 0) and end-systole (the model's ES frame), with its labels.
The real frames are the shared samples: ACDC (every patient's ED and ES volume,
the same mid-ventricular slice rule, expert labels; `cardiacnets.io.acdc`) and
Sunnybrook (every image with an expert endocardial contour, contours rasterised
by `cardiacnets.evaluate.sunnybrook`; no RV label, myocardium only at ED).
Simulator version 3 builds its surroundings from that Sunnybrook cine
(`cardiacnets.simulate.thorax_atlas`), so for it only the ACDC comparison is
held out; the report says so.

Every frame is measured by `cardiacnets.cmr.frame_statistics.cmr_features` (spacing-free; see that
module for the features).

Report: each feature's distributions side by side with its univariate AUROC
(`cardiacnets.bench.realism.compare`), the repeated cross-validated AUROC of
the standardised logistic regression of `cardiacnets.bench.realism.cv_auroc`
on all features (simulated vs all real, vs ACDC, vs Sunnybrook, and vs all real
without the blood-pool features; ED and ES of one subject may fall in different folds), the blood-pool CV per set, and a
Fréchet distance between simulated and real frames on the frame autoencoder of
the committed reference bundle (`frechet_report`), with half-vs-half
references of the same size so the number can be read.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from cardiacnets.bench.realism import CV_FOLDS, _summary, compare, set_auroc
from cardiacnets.cmr import frame_statistics
from cardiacnets.cmr.frame_statistics import LV, cmr_features
from cardiacnets.cmr.indices import mid_ventricular_slice

#: Frame autoencoder input: crop side (px) and pixel size (mm) of the reference bundle's standard cine.
ENCODER_CROP, ENCODER_SPACING_MM = 64, 2.2
#: Columns of a measured frame row that are not features: where it came from, and `cmr_features`' own.
BOOKKEEPING = ("set", "id", "phase", *frame_statistics.BOOKKEEPING)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The CMR options of ``cardiacnets bench realism`` (``--n``, ``--seed``, ``--real-data`` are shared)."""
    parser.add_argument("--cmr-bundle", type=Path, default=None,
                        help="model bundle whose anatomy/pipeline/vae encodes frames for the Fréchet distance "
                             "(default: the committed reference bundle)")
    parser.add_argument("--no-frechet", action="store_true", help="skip the CMR Fréchet distance (reported null)")


# --------------------------------------------------------------------------- frames

def _frame(image: np.ndarray, labels: np.ndarray, set_name: str, frame_id: str, phase: str,
           pixel_mm: float | None) -> dict:
    return {"image": np.asarray(image, dtype=np.float32), "labels": np.asarray(labels, dtype=np.uint8),
            "set": set_name, "id": frame_id, "phase": phase, "pixel_mm": pixel_mm}


def simulated_frames(n: int, seed: int, config) -> tuple[list[dict], list[str]]:
    """The mid-ventricular ED and ES frames of ``n`` simulated subjects, rendered in memory.

    Args:
        n: subjects (indices 0..n-1 of the cohort ``seed``, as ``cardiacnets synth`` draws them).
        seed: cohort seed.
        config: `SynthConfig`.

    Returns:
        ``(frames, skipped)``: frame dicts (``image``, ``labels``, ``set``, ``id``, ``phase``,
        ``pixel_mm``) and ``"eid: reason"`` for subjects without an LV cavity.
    """
    from cardiacnets.simulate import sample_physiology
    from cardiacnets.simulate.cmr_model import render_cmr
    from cardiacnets.simulate.cohort import EID_START, subject_rngs

    frames, skipped = [], []
    for index in range(n):
        physiology_rng, _, cmr_rng = subject_rngs(seed, index)
        phys = sample_physiology(EID_START + index, physiology_rng, config)
        cmr = render_cmr(phys, cmr_rng, config)
        image, seg = cmr.sa.data, cmr.seg_sa.data  # (x, y, slices, frames)
        mid = mid_ventricular_slice(seg[:, :, :, 0])
        if mid is None:
            skipped.append(f"{phys.eid}: no LV cavity at end-diastole")
            continue
        for phase, t in (("ED", 0), ("ES", cmr.model.es_frame)):
            frames.append(_frame(image[:, :, mid, t], seg[:, :, mid, t], "simulated", str(phys.eid), phase,
                                 config.pixel_spacing_mm))
    return frames, skipped


def acdc_frames(acdc_dir: Path) -> tuple[list[dict], list[str]]:
    """Every ACDC patient's mid-ventricular ED and ES frame with its expert labels (UK Biobank convention).

    Raises:
        InputError: no such folder or no ED/ES pair in it.
    """
    from cardiacnets.evaluate.segmentation import acdc_pairs
    from cardiacnets.io.acdc import read_acdc_h5

    frames, skipped = [], []
    for patient, ed_path, es_path in acdc_pairs(acdc_dir):
        try:
            (ed_image, ed_seg), (es_image, es_seg) = read_acdc_h5(ed_path), read_acdc_h5(es_path)
        except ValueError as err:  # InputError is a ValueError; one bad patient does not end the benchmark
            skipped.append(f"acdc {patient}: {err}")
            continue
        mid = mid_ventricular_slice(ed_seg.data[..., 0])
        if mid is None or mid >= es_seg.data.shape[2]:
            skipped.append(f"acdc {patient}: no mid-ventricular slice with an LV cavity in both phases")
            continue
        for phase, image, seg in (("ED", ed_image, ed_seg), ("ES", es_image, es_seg)):
            frames.append(_frame(image.data[:, :, mid, 0], seg.data[:, :, mid, 0], "acdc", patient, phase, None))
    return frames, skipped


def sunnybrook_frames(sunnybrook_dir: Path) -> tuple[list[dict], dict]:
    """Every Sunnybrook image with an expert endocardial contour, the contours as labels.

    Returns:
        ``(frames, info)``: frame dicts (phase ``ED``/``ES``: the contoured phases of largest and
        smallest total LV area) and the cine's description (folders, pixel size, images).

    Raises:
        InputError: missing folders, an unreadable cine or contours.
    """
    from cardiacnets.evaluate.sunnybrook import DEFAULT_CINE, DEFAULT_CONTOURS, expert_labels, read_contours
    from cardiacnets.io.cmr import read_cmr

    image = read_cmr(sunnybrook_dir / DEFAULT_CINE, view="sa")
    labels, images = expert_labels(image, read_contours(sunnybrook_dir / DEFAULT_CONTOURS))
    contoured = [e for e in images if "ignored" not in e]
    area = {p: sum(int((labels[:, :, e["slice"], p] == LV).sum()) for e in contoured if e["phase"] == p)
            for p in {e["phase"] for e in contoured}}
    ed = max(area, key=area.get)
    frames = [_frame(image.data[:, :, e["slice"], e["phase"]], labels[:, :, e["slice"], e["phase"]], "sunnybrook",
                     f"{DEFAULT_CINE}-{e['instance']:04d}", "ED" if e["phase"] == ed else "ES",
                     float(image.spacing_mm[0]))
              for e in contoured]
    info = {"cine": str(sunnybrook_dir / DEFAULT_CINE), "contours": str(sunnybrook_dir / DEFAULT_CONTOURS),
            "pixel_mm": round(float(image.spacing_mm[0]), 3), "images": len(frames),
            "slices": sorted({e["slice"] for e in contoured})}
    return frames, info


def acdc_halves(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """ACDC rows of odd- and even-numbered patients: simulator version 4's acquisition ranges were fitted to
    the odd ones (``preprocessing/calibrate_cmr_acquisition.py``), so the even ones are its held-out set."""
    number = lambda row: int("".join(c for c in row["id"] if c.isdigit()))  # noqa: E731
    acdc = [r for r in rows if r["set"] == "acdc"]
    return [r for r in acdc if number(r) % 2], [r for r in acdc if not number(r) % 2]


def measure(frames: list[dict]) -> tuple[list[dict], list[str]]:
    """`cmr_features` of every frame, with its ``set``, ``id`` and ``phase``; unmeasurable frames skipped."""
    rows, skipped = [], []
    for f in frames:
        try:
            row = cmr_features(f["image"], f["labels"])
        except ValueError as err:
            skipped.append(f"{f['set']} {f['id']} {f['phase']}: {err}")
            continue
        rows.append({**row, "set": f["set"], "id": f["id"], "phase": f["phase"]})
    return rows, skipped


# --------------------------------------------------------------------------- Fréchet distance

def encoder_input(image: np.ndarray, labels: np.ndarray, target_radius_px: float,
                  size: int = ENCODER_CROP) -> np.ndarray:
    """A (size, size) crop centred on the LV cavity, scaled so its radius is ``target_radius_px``, in [0, 1].

    Intensities map the crop's 1st and 99th percentiles to 0 and 1 (clipped), as the reference
    bundle's standard cines are normalised (`cardiacnets.cmr.standardize`).
    """
    from scipy import ndimage

    lv = labels == LV
    radius = math.sqrt(lv.sum() / math.pi)
    cy, cx = ndimage.center_of_mass(lv)
    step = radius / target_radius_px  # source pixels per crop pixel
    offsets = (np.arange(size) - (size - 1) / 2.0) * step
    rr, cc = np.meshgrid(cy + offsets, cx + offsets, indexing="ij")
    crop = ndimage.map_coordinates(np.asarray(image, dtype=np.float64), [rr, cc], order=1, mode="constant")
    lo, hi = np.percentile(crop, [1, 99])
    return np.clip((crop - lo) / max(hi - lo, 1e-9), 0.0, 1.0).astype(np.float32)


def load_frame_encoder(bundle_path: Path):
    """The frame autoencoder (``anatomy/pipeline/vae``) of a model bundle, in eval mode."""
    from diffusers import AutoencoderKL

    from cardiacnets.models.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    if "anatomy" not in bundle.folders:
        raise ValueError(f"bundle {bundle_path} has no 'anatomy' component")
    return AutoencoderKL.from_pretrained(bundle.folders["anatomy"] / "pipeline" / "vae").eval()


def encode_frames(vae, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Pooled frame-encoder features: the mid-block output averaged over space and the 8 flips/rotations.

    Args:
        vae: a diffusers ``AutoencoderKL`` with one input channel.
        crops: (N, H, W) frames in [0, 1].

    Returns:
        (N, channels) float64 features; averaging over the dihedral group leaves out the in-plane
        orientation, which follows each site's planning convention.
    """
    import torch

    captured = {}
    hook = vae.encoder.mid_block.register_forward_hook(lambda module, inputs, output: captured.update(mid=output))
    features = []
    try:
        with torch.inference_mode():
            for start in range(0, len(crops), batch_size):
                x = torch.from_numpy(crops[start:start + batch_size])[:, None]  # (batch, 1, H, W)
                pooled = 0.0
                for flip in (False, True):
                    for k in range(4):
                        view = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
                        vae.encode(view)
                        pooled = pooled + captured["mid"].mean(dim=(-2, -1)) / 8.0
                features.append(pooled.double().numpy())
    finally:
        hook.remove()
    return np.concatenate(features)


def frechet_report(sim_frames: list[dict], real_frames: list[dict], bundle_path: Path, seed: int = 0) -> dict:
    """Fréchet distance between simulated and real frames on the reference bundle's frame encoder.

    Every frame is cropped on its LV (`encoder_input`) at the simulator's median LV radius on the
    bundle's 2.2 mm grid. References of equal size: two random halves of the real frames (of the
    simulated ones when fewer), and two random sets of simulated frames of that size;
    ``sim_vs_real_half`` compares such a simulated set with one real half. Distances with fewer
    frames than feature dimensions are biased upwards, so compare only figures of the same size.

    Returns:
        ``{"value": full simulated vs all real, "references": ..., "encoder": ..., ...}``, or
        ``{"value": None, "reason": ...}`` when the encoder cannot be loaded.
    """
    from cardiacnets.evaluate.generation_scoring import frechet_distance

    started = time.perf_counter()
    try:
        vae = load_frame_encoder(bundle_path)
    except Exception as err:  # reported, not hidden: the Fréchet part is null with the reason
        return {"value": None, "reason": f"frame encoder not loaded from {bundle_path}: {type(err).__name__}: {err}"}
    target = float(np.median([math.sqrt((f["labels"] == LV).sum() / math.pi) * f["pixel_mm"] / ENCODER_SPACING_MM
                              for f in sim_frames]))
    sim = encode_frames(vae, np.stack([encoder_input(f["image"], f["labels"], target) for f in sim_frames]))
    real = encode_frames(vae, np.stack([encoder_input(f["image"], f["labels"], target) for f in real_frames]))
    rng = np.random.default_rng(seed)
    half = min(len(real), len(sim)) // 2  # every reference compares sets of this size
    real_order, sim_order = rng.permutation(len(real)), rng.permutation(len(sim))
    real_a, real_b = real[real_order[:half]], real[real_order[half:2 * half]]
    sim_a, sim_b = sim[sim_order[:half]], sim[sim_order[half:2 * half]]

    def fd(a: np.ndarray, b: np.ndarray) -> float | None:
        value = frechet_distance(a, b)
        return round(value, 3) if math.isfinite(value) else None

    return {
        "value": fd(sim, real),
        "references": {"real_half_vs_real_half": fd(real_a, real_b), "sim_vs_sim_same_size": fd(sim_a, sim_b),
                       "sim_vs_real_half": fd(sim_a, real_b), "frames_per_half": half},
        "n_simulated": len(sim), "n_real": len(real), "feature_dim": int(sim.shape[1]),
        "encoder": f"{bundle_path.name}: anatomy/pipeline/vae encoder (AutoencoderKL), mid-block output averaged "
                   "over space and the 8 flips/rotations",
        "input": f"{ENCODER_CROP}x{ENCODER_CROP} crop centred on the LV cavity, LV radius scaled to "
                 f"{target:.2f} px (the simulator's median at {ENCODER_SPACING_MM} mm), 1st-99th percentile -> 0-1",
        "seconds": round(time.perf_counter() - started, 1),
    }


# --------------------------------------------------------------------------- report

def _range(rows: list[dict], name: str) -> dict:
    values = np.array([r[name] for r in rows], dtype=np.float64)
    values = values[np.isfinite(values)]
    extremes = {"min": round(float(values.min()), 4), "max": round(float(values.max()), 4)} if values.size else {}
    return {**_summary(values), **extremes}


def cmr_realism_report(sim_rows: list[dict], real_rows: list[dict], seed: int = 0) -> dict:
    """AUROCs, per-feature distributions and the blood-pool CV ranges from the feature rows."""
    names = [k for k in sim_rows[0] if k not in BOOKKEEPING]
    by_set = {s: [r for r in real_rows if r["set"] == s] for s in ("acdc", "sunnybrook")}
    acdc_odd, acdc_even = acdc_halves(real_rows)
    vs_all = compare(sim_rows, real_rows, names)
    without_blood = [n for n in names if not n.startswith("blood_")]
    ranked = sorted(names, key=lambda n: -(vs_all[n]["univariate_auroc"] or 0.0))
    return {
        "auroc": {"all_features_vs_all_real": set_auroc(sim_rows, real_rows, names, seed),
                  **{f"all_features_vs_{s}": set_auroc(sim_rows, rows, names, seed) for s, rows in by_set.items()},
                  "all_features_vs_acdc_odd_patients": set_auroc(sim_rows, acdc_odd, names, seed),
                  "all_features_vs_acdc_even_patients": set_auroc(sim_rows, acdc_even, names, seed),
                  "without_blood_pool_vs_all_real": set_auroc(sim_rows, real_rows, without_blood, seed)},
        "blood_pool_cv": {"simulated": _range(sim_rows, "blood_cv"), "real": _range(real_rows, "blood_cv"),
                          **{s: _range(rows, "blood_cv") for s, rows in by_set.items()}},
        "most_separating": [{"feature": n, "univariate_auroc": vs_all[n]["univariate_auroc"],
                             "simulated_median": vs_all[n]["simulated"]["median"],
                             "real_median": vs_all[n]["real"]["median"]} for n in ranked[:6]],
        "features": {"vs_all_real": vs_all, "vs_acdc": compare(sim_rows, by_set["acdc"], names)},
        "feature_names": names,
    }


def run_cmr(args: argparse.Namespace) -> dict:
    """The CMR half of ``cardiacnets bench realism`` (see the module docstring).

    Raises:
        InputError: the shared data folder lacks ``acdc_h5`` or ``sunnybrook``.
    """
    from cardiacnets.config import load_config, shared_data_dir
    from cardiacnets.errors import InputError
    from cardiacnets.models.bundle import committed_bundle
    from cardiacnets.simulate import SynthConfig

    real_dir = Path(args.real_data or shared_data_dir())
    for folder in ("acdc_h5", "sunnybrook"):
        if not (real_dir / folder).is_dir():
            raise InputError(real_dir, f"has no {folder}/ folder; pass --real-data or set CARDIACNETS_SHARED_DATA")
    started = time.perf_counter()
    # 1. Frames: simulated in memory, then the real sets.
    config = load_config(SynthConfig, None, args.overrides)
    sim_frames, sim_skipped = simulated_frames(args.n, args.seed, config)
    simulate_s = time.perf_counter() - started
    acdc, acdc_skipped = acdc_frames(real_dir / "acdc_h5")
    sunnybrook, sunnybrook_info = sunnybrook_frames(real_dir / "sunnybrook")
    real_frames = acdc + sunnybrook
    # 2. Features and the report.
    sim_rows, sim_unmeasured = measure(sim_frames)
    real_rows, real_unmeasured = measure(real_frames)
    if not sim_rows or not real_rows:
        raise InputError(real_dir, f"no measurable frames ({len(sim_rows)} simulated, {len(real_rows)} real)")
    report = cmr_realism_report(sim_rows, real_rows, seed=args.seed)
    # 3. Fréchet distance on the frame encoder.
    bundle = args.cmr_bundle or committed_bundle()
    measured = {(r["set"], r["id"], r["phase"]) for r in sim_rows + real_rows}
    keep = lambda frames: [f for f in frames if (f["set"], f["id"], f["phase"]) in measured]  # noqa: E731
    frechet = {"value": None, "reason": "skipped (--no-frechet)"} if args.no_frechet else \
        frechet_report(keep(sim_frames), keep(real_frames), bundle, seed=args.seed)
    if getattr(args, "examples", None) is not None:
        from cardiacnets.bench.realism_examples import cmr_examples

        report["examples"] = str(cmr_examples(keep(sim_frames), keep(real_frames), args.examples / "cmr_examples.png",
                                              config.version))
    acdc_patients = sorted({r["id"] for r in real_rows if r["set"] == "acdc"})
    return {
        "n_simulated_subjects": args.n,
        "n_simulated_frames": len(sim_rows),
        "n_real_frames": len(real_rows),
        "real_sets": {
            "acdc": {"path": str(real_dir / "acdc_h5"), "patients": len(acdc_patients),
                     "frames": sum(r["set"] == "acdc" for r in real_rows),
                     "slice": "middle of the slices with LV cavity at ED; ED (frame01) and ES (frame02)",
                     **({"in_simulator": "simulator version 4's acquisition ranges were fitted to the odd-numbered "
                                         "patients (preprocessing/calibrate_cmr_acquisition.py): read "
                                         "all_features_vs_acdc_even_patients as the held-out comparison"}
                        if config.version >= 4 else {})},
            "sunnybrook": {**sunnybrook_info, "frames": sum(r["set"] == "sunnybrook" for r in real_rows),
                           **({"in_simulator": "simulator version 3 warps this cine into its surroundings "
                               "(cardiacnets.simulate.thorax_atlas): read all_features_vs_acdc, not the "
                               "Sunnybrook or all-real figures, as the held-out comparison"}
                              if config.version >= 3 else {})},
        },
        "simulated": {"slice": "middle of the slices with LV cavity at ED; frame 0 (ED) and the model's ES frame",
                      "seed": args.seed, "pixel_mm": config.pixel_spacing_mm, "image_size": config.setting("image_size")},
        **report,
        "frechet": frechet,
        "skipped": {"simulated": sim_skipped + sim_unmeasured, "real": acdc_skipped + real_unmeasured},
        "seconds": {"simulate": round(simulate_s, 1), "total": round(time.perf_counter() - started, 1)},
        "cv": {"folds": CV_FOLDS, "model": "median imputation, standardisation, L2 logistic regression (C=1)",
               "unit": "frame (ED and ES of one subject may fall in different folds)"},
    }
