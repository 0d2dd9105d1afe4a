"""Training sets and tiny models for the tests: written directly in the store layout (fast), or simulated and
preprocessed with the demo config (the real pipeline)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cardiacnets.cmr.indices import cavity_measurements
from cardiacnets.data.store import ArraySpec, create_arrays
from cardiacnets.models import create_model
from support import DEMO_PREPROCESS_CONFIG

ECG_50HZ = {"sampling_rate_hz": 50.0, "duration_s": 10.0, "crop": "start", "bandpass_hz": [0.5, 20.0],
            "bandpass_order": 2, "notch_hz": None, "notch_quality": 30.0, "baseline_removal": "bandpass",
            "normalization": "none", "derive_limb_leads": True}


def synth_cohort(raw: Path, n: int, seed: int) -> Path:
    """``cardiacnets synth`` of `n` subjects into `raw`, through the command line as a user runs it."""
    from cardiacnets.cli import main

    assert main(["synth", "--n", str(n), "--out", str(raw), "--seed", str(seed)]) == 0
    return raw


def simulated_training_set(root: Path, n: int, seed: int = 0, overrides=(), cohort_workers: int = 0) -> Path:
    """``n`` simulated subjects (``root/raw``) preprocessed with the demo config (``root/dataset``).

    Args:
        root: folder for both.
        n: subjects.
        seed: the simulator's seed.
        overrides: ``key=value`` changes of the demo preprocessing config.
        cohort_workers: simulator worker processes.

    Returns:
        The training set folder.
    """
    from cardiacnets.config import load_config
    from cardiacnets.data.preprocess import PreprocessConfig, preprocess
    from cardiacnets.simulate import write_cohort

    write_cohort(root / "raw", n, seed=seed, workers=cohort_workers, ceiling=False)
    config = load_config(PreprocessConfig, DEMO_PREPROCESS_CONFIG, list(overrides))
    preprocess("ukb", root / "raw", root / "dataset", config, workers=0)
    return root / "dataset"


def write_training_set(root, n=12, views=("sa", "la_4ch"), splits=None, has_view=None, ecg_samples=2500,
                       cine_shape=(1, 25, 64, 64), with_ecg=True, seed=0):
    """A training set in `cardiacnets.data.store`'s layout with random content.

    The first half of the subjects is ``train``, the second ``test`` (unless
    `splits` says otherwise); `has_view` maps a view to its (n,) bool column.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    specs = [ArraySpec("ecg", (12, ecg_samples), "float16"), ArraySpec("ecg_lead_mask", (12,), "bool")] if with_ecg else []
    specs += [ArraySpec(f"cmr_{view}", cine_shape, "float16") for view in views]
    create_arrays(root, n, specs)
    arrays = {spec.name: np.load(spec.path(root), mmap_mode="r+") for spec in specs}
    if with_ecg:
        arrays["ecg"][:] = rng.normal(scale=0.3, size=arrays["ecg"].shape)
        arrays["ecg_lead_mask"][:] = True
    for view in views:
        arrays[f"cmr_{view}"][:] = rng.random(arrays[f"cmr_{view}"].shape)
    for array in arrays.values():
        array.flush()
    splits = splits or ["train"] * (n - n // 2) + ["test"] * (n // 2)
    manifest = pd.DataFrame({
        "row": np.arange(n), "subject_id": [str(2000 + i) for i in range(n)], "split": splits,
        "has_ecg": True, "ecg_valid_start": 0, "ecg_valid_end": ecg_samples,
        "lvef_pct": rng.uniform(30, 70, n), "icd10": ["I42"] * n, "label_heart_failure": np.arange(n) % 3 == 0,
        "age_years": rng.uniform(40, 80, n).round(), "sex_male": np.arange(n) % 2, "bmi": rng.uniform(20, 32, n),
    })
    for view in views:
        manifest[f"has_{view}"] = True if has_view is None else has_view.get(view, True)
    manifest.to_csv(root / "manifest.csv", index=False)
    info = {"format_version": 1, "n_subjects": n,
            "arrays": [{"name": s.name, "row_shape": list(s.row_shape), "dtype": s.dtype} for s in specs]}
    (root / "dataset.yaml").write_text(yaml.safe_dump(info))
    return root


TINY_ECG = {"n_samples": 500, "patch_size": 50, "width": 32, "depth": 1, "heads": 2, "embed_dim": 16}
TINY_CMR = {"frames": 4, "img_size": 16, "embed_dim": 16}


def save_tiny_clip(folder, film=False):
    """A tiny untrained CardiacCLIP (ECG 12 x 500, cines 1 x 4 x 16 x 16) saved with save_pretrained."""
    ecg = {**TINY_ECG, "film": film}
    model = create_model("cardiac_clip_demo", ecg={"model": "ecg_vit_tiny", "overrides": ecg},
                         cmr={view: {"model": "cmr_encoder_demo", "overrides": TINY_CMR} for view in ("sa", "la_4ch")},
                         embed_dim=8)
    model.save_pretrained(folder)
    return folder


TINY_RESNET_ECG = {"n_samples": 500, "stem_width": 8, "widths": [8, 16], "blocks": [1, 1], "embed_dim": 16}


def save_tiny_resnet_clip(folder, frames: int = 8):
    """A tiny untrained CardiacCLIP for the disc sets: a 1-D ResNet ECG encoder (12 x 500) and CMR
    encoders of 1 x `frames` x 16 x 16 cines, saved with save_pretrained (an alignment run's ``model``)."""
    cmr = {"frames": frames, "img_size": 16, "embed_dim": 8}
    model = create_model("cardiac_clip_demo", ecg={"model": "ecg_resnet1d", "overrides": TINY_RESNET_ECG},
                         cmr={view: {"model": "cmr_encoder_demo", "overrides": cmr} for view in ("sa", "la_4ch")},
                         embed_dim=8)
    model.save_pretrained(folder)
    return folder


#: The demo's ECG preprocessing (250 Hz, 10 s), as the heads task records it in a model's provenance.
DEMO_ECG = {"sampling_rate_hz": 250.0, "duration_s": 10.0, "crop": "start", "bandpass_hz": [0.5, 100.0],
            "bandpass_order": 2, "notch_hz": 50.0, "notch_quality": 30.0, "baseline_removal": "bandpass",
            "normalization": "none", "derive_limb_leads": True}
TINY_RESNET = {"n_samples": 2500, "stem_width": 8, "widths": [8, 16], "blocks": [1, 1], "embed_dim": 16}
#: Unit, mean and SD of the indices a tiny heads model can predict.
TINY_HEADS_TARGETS = {"lvedv_ml": ("ml", 150.0, 30.0), "lvef_pct": ("%", 55.0, 8.0), "lvm_g": ("g", 100.0, 25.0),
                      "rvedv_ml": ("ml", 160.0, 40.0)}


def save_tiny_heads_model(folder, provenance=None, leads=None, film=False, regression_targets=("lvedv_ml", "lvef_pct")):
    """A tiny untrained `HeadsModel` (12 x 2500 ECG ResNet) saved with the calibration and provenance the heads
    task writes (demo ECG preprocessing), so `predict_record` runs it without training."""
    import torch

    from cardiacnets.heads.model import HeadsModel, HeadsModelConfig
    from cardiacnets.models.clip import EncoderSpec

    torch.manual_seed(0)
    units, means, stds = zip(*(TINY_HEADS_TARGETS[name] for name in regression_targets))
    config = HeadsModelConfig(
        encoder=EncoderSpec("ecg_resnet1d", {**TINY_RESNET, "film": film}),
        regression_targets=list(regression_targets), regression_units=list(units), target_mean=list(means),
        target_std=list(stds), binary_targets=["label_heart_failure", "label_cardiomyopathy"],
        multiclass_target="cardiomyopathy_subtype", multiclass_classes=["none", "dilated", "hypertrophic",
                                                                        "restrictive"], leads=leads)
    config.calibration.split, config.calibration.n_subjects = "val", 184
    config.calibration.thresholds = {"label_heart_failure": 0.2}  # none for cardiomyopathy
    config.calibration.interval_halfwidth = {"lvedv_ml": 40.0, "lvef_pct": math.inf}
    config.provenance = provenance if provenance is not None else {
        "mode": "finetune", "data": "runs/demo/dataset", "n_train_used": 163, "ecg_preprocessing": DEMO_ECG}
    if film:
        config.provenance["demographics"] = {"columns": ["age_years", "sex_male", "bmi"], "mean": [60.0, 0.5, 26.0],
                                             "std": [10.0, 0.5, 4.0]}
    return HeadsModel(config).save_pretrained(folder)


def disc_labels(size: int, lv_radius: float, rv_radius: float, wall: float = 2.0) -> np.ndarray:
    """(size, size) UK Biobank labels: LV cavity disc, myocardial ring, RV disc beside it."""
    yy, xx = np.mgrid[:size, :size].astype(float)
    centre = size / 2 - 0.5
    r_lv = np.hypot(yy - centre, xx - centre)
    r_rv = np.hypot(yy - centre, xx - (centre - lv_radius - wall - rv_radius - 1))
    labels = np.zeros((size, size), np.uint8)
    labels[r_rv <= rv_radius] = 3
    labels[r_lv <= lv_radius + wall] = 2
    labels[r_lv <= lv_radius] = 1
    return labels


#: Intensity of each label in the synthetic cines (background, LV cavity, myocardium, RV cavity).
LABEL_INTENSITY = np.array([0.1, 0.9, 0.3, 0.7], np.float32)


def write_disc_set(root: Path, n: int = 12, frames: int = 8, size: int = 32, ecg_samples: int = 500,
                   splits: list[str] | None = None, spacing_mm: float = 2.2, seed: int = 0) -> Path:
    """A training set (store layout, ``dataset.yaml`` with the cine geometry) of disc cines with exact labels.

    Subject i has an LV cavity radius of ``4 + (i % 5) * 0.8`` px at ED, contracting by up to 30 % over the
    cycle; its RV radius is 3-5 px. The manifest holds ``seg_lvedv_ml`` etc. measured on the labels.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    specs = [ArraySpec("ecg", (12, ecg_samples), "float16"), ArraySpec("ecg_lead_mask", (12,), "bool"),
             ArraySpec("cmr_sa", (1, frames, size, size), "float16"),
             ArraySpec("seg_sa", (1, frames, size, size), "uint8")]
    create_arrays(root, n, specs)
    arrays = {spec.name: np.load(spec.path(root), mmap_mode="r+") for spec in specs}
    arrays["ecg"][:] = rng.normal(scale=0.3, size=arrays["ecg"].shape)
    arrays["ecg_lead_mask"][:] = True
    for i in range(n):
        lv_ed, rv_ed = 4.0 + (i % 5) * 0.8, 3.0 + (i % 3) * 1.0
        for f in range(frames):
            squeeze = 1.0 - 0.3 * math.sin(math.pi * f / frames) ** 2
            labels = disc_labels(size, lv_ed * squeeze, rv_ed * squeeze)
            arrays["seg_sa"][i, 0, f] = labels
            noise = rng.normal(scale=0.02, size=labels.shape)
            arrays["cmr_sa"][i, 0, f] = np.clip(LABEL_INTENSITY[labels] + noise, 0, 1)
    for array in arrays.values():
        array.flush()
    splits = splits or (["train"] * (n - n // 2) + ["val"] * (n // 4) + ["test"] * (n // 2 - n // 4))
    measured = cavity_measurements(np.asarray(arrays["seg_sa"]), spacing_mm)
    manifest = pd.DataFrame({
        "row": np.arange(n), "subject_id": [str(3000 + i) for i in range(n)], "split": splits, "has_ecg": True,
        "ecg_valid_start": 0, "ecg_valid_end": ecg_samples, "has_sa": True, "has_seg_sa": True,
        "age_years": rng.uniform(40, 80, n).round(), "sex_male": np.arange(n) % 2, "bmi": rng.uniform(20, 32, n),
    })
    for column in ("lvedv_ml", "lvesv_ml", "lvef_pct", "rvedv_ml", "rvef_pct", "lvm_g"):
        manifest[f"seg_{column}"] = measured[column].to_numpy()
    manifest.to_csv(root / "manifest.csv", index=False)
    info = {"format_version": 1, "n_subjects": n,
            "config": {"cmr": {"views": ["sa"], "n_frames": frames, "crop_size": size, "spacing_mm": spacing_mm,
                               "sa_slices": "mid", "intensity_percentiles": [1.0, 99.0]}},
            "arrays": [{"name": s.name, "row_shape": list(s.row_shape), "dtype": s.dtype} for s in specs]}
    (root / "dataset.yaml").write_text(yaml.safe_dump(info))
    return root


#: A tiny segmenter (MONAI UNet) for the disc sets.
TINY_UNET = {"channels": [4, 8], "strides": [2], "num_res_units": 0}


def write_heads_set(root: Path, n: int = 40, seed: int = 0) -> Path:
    """A store-layout training set (ECG 12 x 500 at 50 Hz): amplitude ~ LV mass, labels, ICD-10, a ceiling."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    specs = [ArraySpec("ecg", (12, 500), "float16"), ArraySpec("ecg_lead_mask", (12,), "bool")]
    create_arrays(root, n, specs)
    lvm = rng.normal(100, 25, n)
    t = np.arange(500) / 50.0
    beats = np.sin(2 * np.pi * 1.1 * t) ** 15  # a spiky "QRS" train
    ecg = np.load(root / "ecg.npy", mmap_mode="r+")
    ecg[:] = (lvm[:, None, None] / 100.0) * beats[None, None] + rng.normal(0, 0.05, (n, 12, 500))
    ecg.flush()
    mask = np.load(root / "ecg_lead_mask.npy", mmap_mode="r+")
    mask[:] = True
    mask.flush()
    n_train, n_val = int(0.6 * n), int(0.2 * n)  # 24 / 8 / 8 at the default 40
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    hf = lvm > np.median(lvm)
    icd = np.where(hf, "I420;I500", np.where(np.arange(n) % 3 == 0, "I421", ""))
    manifest = pd.DataFrame({
        "row": np.arange(n), "subject_id": [str(5000 + i) for i in range(n)],
        "patient_id": [str(5000 + i) for i in range(n)], "split": splits, "has_ecg": True,
        "ecg_valid_start": 0, "ecg_valid_end": 500, "sex_male": np.arange(n) % 2,
        "age_years": rng.integers(40, 80, n), "bmi": rng.normal(26, 3, n),
        "lvm_g": lvm, "lvedv_ml": 60 + lvm + rng.normal(0, 10, n),
        "lvef_pct": np.where(np.arange(n) % 6 == 0, np.nan, rng.normal(55, 6, n)),
        "label_heart_failure": hf, "label_myocarditis": False, "icd10": icd,
    })
    manifest.to_csv(root / "manifest.csv", index=False)
    raw = root.parent / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "ceiling.json").write_text(json.dumps({"r2": {"lvm_g": 0.8, "lvedv_ml": 0.6, "lvef_pct": 0.5}}))
    info = {"format_version": 1, "source": "ukb", "raw": str(raw), "n_subjects": n, "config": {"ecg": ECG_50HZ},
            "arrays": [{"name": s.name, "row_shape": list(s.row_shape), "dtype": s.dtype} for s in specs]}
    (root / "dataset.yaml").write_text(yaml.safe_dump(info))
    return root
