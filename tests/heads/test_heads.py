"""Tests of the downstream heads: targets and training subsets, the model, the ``heads`` task through the
CLI (linear probe, LP-FT fine-tuning, scratch), ``cardiacnets evaluate heads`` and ``cardiacnets heads
compare``.

The end-to-end tests use a tiny training set written directly in the store layout: 40 subjects whose ECG
amplitude encodes LV mass (so the heads have something to learn), with indices, labels and ICD-10 codes,
and a raw folder holding a ``ceiling.json``; the "aligned" encoder is a tiny saved 1-D ResNet.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cardiacnets.cli import main
from cardiacnets.config import from_dict, load_config, to_dict
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.evaluate.heads import compare_predictions, score_split
from cardiacnets.heads.inference import SplitPredictions, calibrate, conformal_halfwidth
from cardiacnets.heads.model import HeadsModel, HeadsModelConfig
from cardiacnets.heads.targets import (CARDIOMYOPATHY_SUBTYPE, HeadTargets, TargetStandardizer, cardiomyopathy_subtype,
                                       ceiling_key, match_case_control, resolve_targets, select_label_fraction,
                                       stratum_keys, target_unit, with_derived_targets)
from cardiacnets.models.clip import EncoderSpec

from support import REPO_ROOT
from support.datasets import ECG_50HZ, write_heads_set

TINY_RESNET = {"n_samples": 500, "stem_width": 8, "widths": [8, 16], "blocks": [1, 1], "embed_dim": 16}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- targets -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("codes, expected", [
    (float("nan"), 0), ("", 0), ("I500", 0), ("I252;I500", 0),
    ("I420;I500", 1), ("I42.0", 1), ("I421", 2), ("I422;I270", 2), ("I425", 3),
    ("I429", None), ("I255", None), ("I43", None), ("I420;I421", None),
])
def test_cardiomyopathy_subtype_from_icd10(codes, expected):
    value = cardiomyopathy_subtype(codes)
    assert (math.isnan(value) if expected is None else value == expected)


def test_units_and_ceiling_keys():
    assert target_unit("lvedv_ml") == "ml" and target_unit("seg_lvef_pct") == "%"
    assert target_unit("lvm_g") == "g" and target_unit("wt_global") == "mm" and target_unit("lvco_l_min") == "L/min"
    with pytest.raises(KeyError, match="not a known cardiac index"):
        target_unit("age_years")
    assert ceiling_key("seg_lvedv_ml") == "lvedv_ml" and ceiling_key("wt_global") == "lv_wall_thickness_mm"


def toy_manifest(n=40, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hf = np.arange(n) % 4 == 0
    icd = np.where(np.arange(n) % 5 == 0, "I420;I500", np.where(np.arange(n) % 7 == 0, "I421", None))
    return pd.DataFrame({
        "subject_id": [str(100 + i) for i in range(n)], "sex_male": np.arange(n) % 2,
        "age_years": rng.integers(40, 80, n).astype(float),
        "lvedv_ml": rng.normal(150, 30, n), "lvef_pct": np.where(np.arange(n) % 9 == 0, np.nan, rng.normal(55, 8, n)),
        "label_heart_failure": hf, "label_myocarditis": np.zeros(n, bool), "icd10": icd,
    })


def test_resolve_targets_auto_drops_and_explicit_raises(tmp_path):
    manifest = with_derived_targets(toy_manifest())
    targets, dropped = resolve_targets(manifest, None, None, True, tmp_path / "manifest.csv")
    assert targets.regression == ["lvedv_ml", "lvef_pct"] and targets.units == ["ml", "%"]
    assert targets.binary == ["label_heart_failure"]
    assert targets.multiclass == CARDIOMYOPATHY_SUBTYPE and targets.classes[:2] == ["none", "dilated"]
    assert dropped == ["label_myocarditis: needs cases and controls among the training subjects"]
    with pytest.raises(InputError, match="target 'label_myocarditis': needs cases and controls"):
        resolve_targets(manifest, [], ["label_myocarditis"], False, tmp_path / "manifest.csv")
    with pytest.raises(InputError, match="manifest has no target column 'rvef_pct'"):
        resolve_targets(manifest, ["rvef_pct"], [], False, tmp_path / "manifest.csv")
    with pytest.raises(InputError, match="no target to train"):
        resolve_targets(manifest, [], [], False, tmp_path / "manifest.csv")


def test_label_fraction_is_stratified_seeded_and_labelled_only():
    manifest = with_derived_targets(toy_manifest(200))
    manifest["label_heart_failure"] = manifest["label_heart_failure"].astype(float)
    manifest.loc[:9, ["lvedv_ml", "lvef_pct", "label_heart_failure", CARDIOMYOPATHY_SUBTYPE]] = np.nan  # unlabelled
    targets = HeadTargets(["lvedv_ml", "lvef_pct"], ["ml", "%"], ["label_heart_failure"], CARDIOMYOPATHY_SUBTYPE,
                          ["none", "dilated", "hypertrophic", "restrictive"])
    keep = select_label_fraction(manifest, targets, 0.25, seed=3)
    assert keep.sum() == round(0.25 * 190) and not keep[:10].any()
    keys = stratum_keys(manifest, targets)
    for key in set(keys[10:]):  # systematic sampling: each label pattern keeps its share to within one subject
        assert abs((keep & (keys == key)).sum() - 0.25 * (keys[10:] == key).sum()) <= 1
    np.testing.assert_array_equal(keep, select_label_fraction(manifest, targets, 0.25, seed=3))
    assert (keep != select_label_fraction(manifest, targets, 0.25, seed=4)).any()
    assert select_label_fraction(manifest, targets, 1.0, seed=0).sum() == 190
    with pytest.raises(ValueError, match=r"label fraction must be in \(0, 1\]"):
        select_label_fraction(manifest, targets, 0.0, seed=0)


def test_case_control_matching_by_sex_and_nearest_age():
    manifest = pd.DataFrame({"label_x": [1, 1, 0, 0, 0, 0, 0, np.nan],
                             "sex_male": [1, 0, 1, 1, 0, 0, 1, 0],
                             "age_years": [60, 50, 30, 61, 80, 52, 59.5, 50]})
    keep = match_case_control(manifest, "label_x", seed=0)
    # Case 0 (male, 60) takes the male control aged 59.5 (nearer than 61; the female aged 61 would not do);
    # case 1 (female, 50) the female aged 52 - not the unlabelled female aged 50.
    np.testing.assert_array_equal(keep, [True, True, False, False, False, True, True, False])
    with pytest.raises(InputError, match="cannot match 2 cases"):
        match_case_control(manifest.iloc[[0, 1, 2]], "label_x", seed=0)
    with pytest.raises(InputError, match="no such column"):
        match_case_control(manifest, "label_y", seed=0)


def test_target_standardizer_round_trip():
    values = np.array([[1.0, 10.0], [3.0, np.nan], [5.0, 30.0]])
    standardizer = TargetStandardizer.fit(values)
    assert standardizer.mean == [3.0, 20.0] and standardizer.std == pytest.approx([math.sqrt(8 / 3), 10.0])
    z = standardizer.transform(values)
    assert np.isnan(z[1, 1]) and z[2, 1] == pytest.approx(1.0)
    np.testing.assert_allclose(standardizer.inverse(z), values)
    assert TargetStandardizer.fit(np.array([[2.0], [2.0]])).std == [1.0]


# --- model -------------------------------------------------------------------------------------------------------

def tiny_config(**kwargs) -> HeadsModelConfig:
    values = dict(encoder=EncoderSpec("ecg_resnet1d", dict(TINY_RESNET)), regression_targets=["lvedv_ml", "lvef_pct"],
                  regression_units=["ml", "%"], target_mean=[150.0, 55.0], target_std=[30.0, 8.0],
                  binary_targets=["label_heart_failure"], multiclass_target=CARDIOMYOPATHY_SUBTYPE,
                  multiclass_classes=["none", "dilated", "hypertrophic", "restrictive"])
    values.update(kwargs)
    return HeadsModelConfig(**values)


def ecg_batch(n=3, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"ecg": torch.randn(n, 12, 500, generator=g), "ecg_lead_mask": torch.ones(n, 12, dtype=torch.bool)}


def test_model_outputs_units_and_standardisation():
    torch.manual_seed(0)
    model = HeadsModel(tiny_config()).eval()
    batch = ecg_batch()
    raw = model(batch)
    assert raw["regression"].shape == (3, 2) and raw["binary"].shape == (3, 1) and raw["multiclass"].shape == (3, 4)
    for head in (model.regression_head, model.binary_head, model.multiclass_head):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    predicted = model.predict(batch)
    torch.testing.assert_close(predicted["regression"], torch.tensor([[150.0, 55.0]] * 3))  # the training means
    torch.testing.assert_close(predicted["binary"], torch.full((3, 1), 0.5))
    torch.testing.assert_close(predicted["multiclass"], torch.full((3, 4), 0.25))
    with pytest.raises(ConfigError, match="equal lengths"):
        HeadsModel(tiny_config(target_std=[1.0]))
    with pytest.raises(ConfigError, match="no target"):
        HeadsModel(tiny_config(regression_targets=[], regression_units=[], target_mean=[], target_std=[],
                               binary_targets=[], multiclass_target=None, multiclass_classes=[]))
    with pytest.raises(ConfigError, match="is not an ECG encoder"):
        HeadsModel(tiny_config(encoder=EncoderSpec("cmr_encoder_demo", {"frames": 4, "img_size": 16})))


def test_frozen_encoder_and_lead_subset():
    model = HeadsModel(tiny_config(freeze_encoder=True, leads="I"))
    model.train()
    assert not model.encoder.training and model.regression_head.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    loss = model(ecg_batch())["regression"].sum()
    loss.backward()
    assert model.regression_head.weight.grad is not None
    model.eval()
    batch = ecg_batch()
    other = {**batch, "ecg": batch["ecg"].clone()}
    other["ecg"][:, 1:] = 5.0  # leads the model does not see
    torch.testing.assert_close(model.predict(batch)["regression"], model.predict(other)["regression"])
    changed = {**batch, "ecg": batch["ecg"].clone()}
    changed["ecg"][:, 0] *= 3.0
    assert not torch.allclose(model.predict(batch)["regression"], model.predict(changed)["regression"])
    # A further subset at evaluation: with "II" on a lead-I model no lead is left.
    zero = model.predict(batch, leads="II")["regression"]
    torch.testing.assert_close(zero, model.predict({**batch, "ecg": torch.zeros_like(batch["ecg"])})["regression"])


def test_save_pretrained_round_trip(tmp_path):
    config = tiny_config()
    config.calibration.thresholds = {"label_heart_failure": 0.3}
    config.calibration.interval_halfwidth = {"lvedv_ml": 20.0, "lvef_pct": 9.5}
    config.provenance = {"mode": "finetune", "ecg_preprocessing": ECG_50HZ}
    model = HeadsModel(config).eval()
    folder = model.save_pretrained(tmp_path / "model")
    loaded = HeadsModel.from_pretrained(folder).eval()
    assert loaded.config.calibration.thresholds == {"label_heart_failure": 0.3}
    assert loaded.config.provenance["ecg_preprocessing"]["sampling_rate_hz"] == 50.0
    batch = ecg_batch()
    for key, value in model.predict(batch).items():
        torch.testing.assert_close(loaded.predict(batch)[key], value)
    with pytest.raises(InputError, match="holds a ResNet1D, not a HeadsModel"):
        HeadsModel.from_pretrained(model.encoder.save_pretrained(tmp_path / "encoder"))


# --- losses, calibration, scoring --------------------------------------------------------------------------------

def test_masked_losses_against_hand_values(tmp_path):
    from cardiacnets.train import TrainConfig
    from cardiacnets.train.heads_task import HeadsTask

    config = from_dict(TrainConfig, {"task": "heads", "data": {"path": str(tmp_path)},
                                     "options": {"mode": "scratch"}})
    task = HeadsTask(config)
    task.targets = HeadTargets(["lvedv_ml", "lvef_pct"], ["ml", "%"], ["label_heart_failure"], "subtype",
                               ["a", "b"])
    task.standardizer = TargetStandardizer([100.0, 50.0], [10.0, 5.0])
    outputs = {"regression": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "binary": torch.tensor([[0.0], [2.0]]),
               "multiclass": torch.tensor([[0.0, 0.0], [1.0, 0.0]])}
    batch = {"targets": {"lvedv_ml": torch.tensor([100.0, 120.0]), "lvef_pct": torch.tensor([math.nan, 50.0]),
                         "label_heart_failure": torch.tensor([math.nan, 1.0]),
                         "subtype": torch.tensor([1.0, math.nan])}}
    terms = task.losses(outputs, batch)
    # lvedv: z = (0, 2): errors 1, 4 -> 2.5; lvef: only row 1, z = 0: error 4 -> 4; mean 3.25.
    assert float(terms["loss_regression"]) == pytest.approx(3.25)
    assert float(terms["loss_binary"]) == pytest.approx(math.log1p(math.exp(-2.0)))
    assert float(terms["loss_multiclass"]) == pytest.approx(math.log(2.0))
    nothing = {"targets": {k: torch.full((2,), math.nan) for k in batch["targets"]}}
    outputs["regression"].requires_grad_(True)
    empty = task.losses(outputs, nothing)
    assert all(float(v.detach()) == 0.0 for v in empty.values())
    empty["loss_regression"].backward()  # still part of the graph


def test_conformal_halfwidth_by_hand():
    residuals = np.arange(1, 20, dtype=float) * np.where(np.arange(19) % 2, 1, -1)  # |r| = 1..19, n = 19
    assert conformal_halfwidth(residuals, 0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_halfwidth(np.append(residuals, np.nan), 0.9) == 18.0
    assert conformal_halfwidth(residuals[:5], 0.9) == math.inf  # ceil(6 * 0.9) = 6 > 5


def predictions(n=60, seed=0, noise=0.5) -> SplitPredictions:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(float)
    lvedv = rng.normal(150, 30, n)
    subtype = (np.arange(n) % 2).astype(float)
    return SplitPredictions(
        [str(i) for i in range(n)],
        regression={"lvedv_ml": (lvedv, lvedv + rng.normal(0, 30 * noise, n)),
                    "lvef_pct": (np.full(n, np.nan), np.full(n, 55.0))},
        binary={"label_heart_failure": (y, np.clip(0.5 * y + 0.5 * rng.random(n) * (1 + noise), 0, 1))},
        multiclass={CARDIOMYOPATHY_SUBTYPE: (subtype, np.stack([1 - subtype * 0.7, subtype * 0.7, 0 * subtype,
                                                                 0.3 * (1 - subtype)], axis=1))})


def test_calibrate_and_score_split():
    from cardiacnets.stats.metrics import classification_metrics, regression_metrics, youden_threshold

    model = HeadsModel(tiny_config())
    val, test = predictions(seed=1), predictions(seed=2)
    calibration = calibrate(model, val, "val", 0.9)
    y, p = val.binary["label_heart_failure"]
    assert calibration["thresholds"]["label_heart_failure"] == youden_threshold(y, p)
    assert calibration["interval_halfwidth"]["lvef_pct"] == math.inf  # no labelled validation subject
    scores = score_split(model, test, val, n_boot=200, ceiling={"r2": {"lvedv_ml": 0.5}})
    truth, predicted = test.regression["lvedv_ml"]
    entry = scores["regression"]["lvedv_ml"]
    assert entry["r2"]["value"] == pytest.approx(regression_metrics(truth, predicted)["r2"])
    assert entry["r2"]["low"] < entry["r2"]["value"] < entry["r2"]["high"]
    assert entry["r2_fraction_of_ceiling"]["value"] == pytest.approx(entry["r2"]["value"] / 0.5)
    assert 0.0 <= entry["interval_coverage"] <= 1.0 and entry["unit"] == "ml"
    assert scores["skipped"] == {"lvef_pct": "0 labelled subjects"}
    hf = scores["binary"]["heart_failure"]
    y_test, p_test = test.binary["label_heart_failure"]
    reference = classification_metrics(y_test, p_test, threshold=youden_threshold(y, p))
    assert hf["threshold_source"] == "validation (Youden)"
    assert hf["sensitivity"]["value"] == pytest.approx(reference["sensitivity"])
    assert hf["auroc"]["value"] == pytest.approx(reference["auroc"]) and hf["n_positive"] == 20
    subtype = scores["multiclass"][CARDIOMYOPATHY_SUBTYPE]
    assert subtype["macro_auroc_classes"] == ["none", "dilated"] and subtype["macro_auroc"]["value"] == 1.0
    # Without validation predictions the thresholds stored with the model are used.
    stored = score_split(model, test, None, n_boot=50)
    assert stored["binary"]["heart_failure"]["threshold"] == calibration["thresholds"]["label_heart_failure"]


def test_compare_predictions_identical_and_better_models():
    model = HeadsModel(tiny_config())
    noisy, clean, val = predictions(seed=2, noise=1.0), predictions(seed=2, noise=0.05), predictions(seed=1)
    assert set(compare_predictions(model, noisy, model, noisy, n_boot=20)["binary"]["heart_failure"]) == {"delong"}
    same = compare_predictions(model, noisy, model, noisy, val, val, n_boot=200)
    assert same["binary"]["heart_failure"]["sensitivity"]["diff"] == 0.0
    r2 = same["regression"]["lvedv_ml"]["r2"]
    assert r2["diff"] == 0.0 and r2["p_value"] == 1.0
    assert same["binary"]["heart_failure"]["delong"]["p_value"] == 1.0
    better = compare_predictions(model, noisy, model, clean, n_boot=200)
    r2 = better["regression"]["lvedv_ml"]["r2"]
    assert r2["diff"] > 0 and r2["low"] > 0 and r2["p_value"] < 0.05
    assert better["binary"]["heart_failure"]["delong"]["diff"] > 0
    other = SplitPredictions(noisy.subject_ids[::-1], noisy.regression, noisy.binary, noisy.multiclass)
    with pytest.raises(InputError, match="different subjects"):
        compare_predictions(model, noisy, model, other)


# --- end to end: a tiny training set, the task through the CLI, evaluation, comparison --------------------------

@pytest.fixture(scope="module")
def heads_set(tmp_path_factory) -> Path:
    return write_heads_set(tmp_path_factory.mktemp("heads") / "dataset")


@pytest.fixture(scope="module")
def aligned_encoder(tmp_path_factory) -> Path:
    from cardiacnets.models import create_model

    torch.manual_seed(0)
    return create_model("ecg_resnet1d", **TINY_RESNET).save_pretrained(tmp_path_factory.mktemp("align") / "ecg_encoder")


def heads_config(tmp_path: Path, dataset: Path, encoder: Path | None, **options) -> Path:
    config = {
        "task": "heads",
        "data": {"path": str(dataset), "batch_size": 8, "demographics": []},
        "model": {"name": "ecg_resnet1d", "overrides": dict(TINY_RESNET)},
        "init": {"ecg_encoder": str(encoder) if encoder else None},
        "options": {"mode": "finetune", **options},
        "optimizer": {"lr": 0.003},
        "schedule": {"max_steps": 6, "warmup_steps": 1},
        "val_every_steps": 3,
        "early_stopping": {"patience": 3},
        "logging": {"every_steps": 3, "progress": False, "tensorboard": "off"},
    }
    path = tmp_path / "heads.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained_runs(heads_set, aligned_encoder, tmp_path_factory) -> dict[str, Path]:
    """A linear probe, its LP-FT fine-tuning and a scratch run, all through the CLI."""
    root = tmp_path_factory.mktemp("runs")
    config = heads_config(root, heads_set, aligned_encoder)
    runs = {name: root / name for name in ("probe", "finetune", "scratch")}
    assert main(["train", str(config), "--out", str(runs["probe"]), "--no-progress", "options.mode=linear_probe",
                 "schedule.max_steps=30", "optimizer.lr=0.03"]) == 0
    assert main(["train", str(config), "--out", str(runs["finetune"]), "--no-progress", "init.ecg_encoder=null",
                 f"init.model={runs['probe'] / 'model'}", "model.overrides={}", "optimizer.lr=0.001",
                 "options.ecg_max_shift_samples=25"]) == 0
    assert main(["train", str(config), "--out", str(runs["scratch"]), "--no-progress", "init.ecg_encoder=null",
                 "options.mode=scratch", "options.label_fraction=0.5"]) == 0
    return runs


@pytest.mark.slow
def test_linear_probe_learns_and_exports_a_calibrated_model(trained_runs, aligned_encoder):
    run = trained_runs["probe"]
    rows = pd.read_csv(run / "val_log.csv")
    assert rows["val_loss"].iloc[-1] < rows["val_loss"].iloc[0]  # it learns
    model = HeadsModel.from_pretrained(run / "model")
    c = model.config
    assert c.regression_targets == ["lvedv_ml", "lvef_pct", "lvm_g"] and c.binary_targets == ["label_heart_failure"]
    assert c.multiclass_target == CARDIOMYOPATHY_SUBTYPE and c.freeze_encoder
    assert c.provenance["dropped_targets"] == ["label_myocarditis: needs cases and controls among the training "
                                               "subjects"]
    assert c.provenance["n_train_used"] == 24 and c.provenance["ecg_preprocessing"]["sampling_rate_hz"] == 50.0
    assert c.calibration.split == "val" and c.calibration.n_subjects == 8
    assert set(c.calibration.thresholds) == {"label_heart_failure"}
    assert set(c.calibration.interval_halfwidth) == {"lvedv_ml", "lvef_pct", "lvm_g"}
    manifest = pd.read_csv(Path(c.provenance["data"]) / "manifest.csv")
    train = manifest[manifest["split"] == "train"]
    assert c.target_mean[2] == pytest.approx(train["lvm_g"].mean())  # standardisation from the training split
    # The frozen encoder is the aligned one, unchanged.
    from cardiacnets.models.pretrained import load_pretrained

    for key, value in load_pretrained(aligned_encoder).state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)


@pytest.mark.slow
def test_finetune_starts_from_the_probe_and_scratch_uses_the_fraction(trained_runs):
    probe = HeadsModel.from_pretrained(trained_runs["probe"] / "model")
    finetuned = HeadsModel.from_pretrained(trained_runs["finetune"] / "model")
    assert not finetuned.config.freeze_encoder and finetuned.config.provenance["init_model"].endswith("probe/model")
    assert finetuned.config.target_mean == probe.config.target_mean
    changed = [k for k, v in finetuned.encoder.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, probe.encoder.state_dict()[k])]
    assert changed  # the encoder trained
    scratch = HeadsModel.from_pretrained(trained_runs["scratch"] / "model")
    assert scratch.config.provenance["n_train_used"] == 12 and scratch.config.provenance["label_fraction"] == 0.5
    assert scratch.config.encoder.overrides["widths"] == [8, 16]


@pytest.mark.slow
def test_evaluate_heads_cli(trained_runs, heads_set, tmp_path, capsys):
    out = tmp_path / "eval"
    status = main(["evaluate", "heads", "--model", str(trained_runs["finetune"]), "--data", str(heads_set),
                   "--json", "--n-boot", "100", "--leads", "I", "--compare", str(trained_runs["scratch"]),
                   "--out", str(out)])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_subjects"] == 8 and result["threshold_split"] == "val"
    lvm = result["regression"]["lvm_g"]
    assert lvm["unit"] == "g" and lvm["n"] == 8 and lvm["ceiling_r2"] == 0.8
    assert lvm["r2"]["low"] <= lvm["r2"]["value"] <= lvm["r2"]["high"]
    hf = result["binary"]["heart_failure"]
    assert hf["threshold_source"] == "validation (Youden)" and set(hf) >= {"auroc", "auprc", "sensitivity",
                                                                             "specificity", "ece"}
    assert set(result["lead_subsets"]) == {"I"}
    # The tiny set has demographics but no device measurements: one baseline on them, the Sokolow one skipped.
    measurements = result["baselines"]["measurements"]
    assert measurements["features"] == ["sex_male", "age_years"] and measurements["n_train"] == 24
    assert measurements["regression"]["lvm_g"]["n"] == 8
    assert measurements["heads_minus_baseline"]["regression"]["lvm_g"]["r2"]["b"] == pytest.approx(lvm["r2"]["value"])
    assert "none of the columns the sokolow baseline uses" in result["baselines"]["sokolow"]["skipped"]
    boosted = result["baselines"]["measurements_boosted"]  # the same numbers, boosted trees (24 rows: 100 rounds)
    assert boosted["model"] == "boosted trees" and boosted["features"] == measurements["features"]
    assert boosted["regression"]["lvm_g"]["n"] == 8
    assert set(result["compare"]["binary"]["heart_failure"]) >= {"auroc", "delong"}
    assert result["compare"]["difference"] == "b - a"
    for name in ("roc.png", "calibration.png", "scatter_lvm_g.png", "bland_altman_lvm_g.png", "predictions.csv",
                 "results.csv", "results.md", "heads.json"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "results.csv")
    assert {"finetune", "finetune [leads I]"} <= set(table["mode"])
    status = main(["evaluate", "heads", "--model", str(trained_runs["finetune"]), "--data", str(heads_set),
                   "--n-boot", "50", "--val-split", "none"])
    text = capsys.readouterr().out
    assert status == 0 and "thresholds from the model" in text and "heart_failure" in text


def test_heads_errors_exit_2_with_one_line(heads_set, aligned_encoder, tmp_path, capsys):
    config = heads_config(tmp_path, heads_set, aligned_encoder)
    cases = [
        (["train", str(config), "--out", str(tmp_path / "a"), "options.mode=scratch"], "options.mode scratch"),
        (["train", str(config), "--out", str(tmp_path / "b"), "options.mode=linear_probe", "init.ecg_encoder=null"],
         "needs a trained encoder"),
        (["train", str(config), "--out", str(tmp_path / "c"), "options.binary=[label_stroke]"],
         "manifest has no target column 'label_stroke'"),
        (["train", str(config), "--out", str(tmp_path / "d"), "model.overrides.stem_width=16"],
         "the saved encoder has stem_width=8"),
        (["train", str(config), "--out", str(tmp_path / "e"), "options.label_fraction=1.5"],
         "options.label_fraction must be in (0, 1]"),
        (["evaluate", "heads", "--model", str(aligned_encoder), "--data", str(heads_set)],
         "holds a ResNet1D, not a HeadsModel"),
        (["evaluate", "heads", "--model", str(tmp_path / "nowhere"), "--data", str(heads_set)],
         "no such training run"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def test_heads_task_is_registered_and_paper_config_builds_on_meta_device():
    from cardiacnets.train import TrainConfig, get_task_class

    for name in ("configs/demo/heads.yaml", "configs/paper/heads.yaml"):
        config = load_config(TrainConfig, REPO_ROOT / name)
        task = get_task_class(config.task)(config)
        assert task.name == "heads" and config.output_dir.endswith("heads")
    spec = EncoderSpec(config.model.name, {})
    with torch.device("meta"):
        model = HeadsModel(tiny_config(encoder=spec))
    n_encoder = sum(p.numel() for p in model.encoder.parameters())
    assert 300e6 < n_encoder < 306e6  # the paper's ViT-Large


@pytest.mark.slow
def test_heads_compare_end_to_end_and_rerun_reuses_runs(heads_set, aligned_encoder, tmp_path, capsys):
    train_config = heads_config(tmp_path, heads_set, aligned_encoder)
    compare = {
        "train_config": str(train_config), "data": str(heads_set), "aligned_encoder": str(aligned_encoder),
        "modes": ["linear_probe", "finetune", "scratch"], "label_fractions": [0.5, 1.0],
        "mode_fractions": {"finetune": [1.0]},
        "search": {"scratch": {"optimizer.lr": [0.001, 0.003]}}, "search_fractions": [0.5],
        "budget": {m: {"epochs": 1, "max_steps": 3, "min_steps": 2} for m in ("linear_probe", "finetune", "scratch")},
        "evaluation": {"lead_subsets": ["I"], "n_boot": 50, "comparisons": [["scratch", "finetune"]]},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(compare))
    out = tmp_path / "compare"
    assert main(["heads", "compare", "--config", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Headline metrics" in printed and "finetune - scratch @ 1" in printed
    selection = pd.read_csv(out / "selection.csv")
    scratch = selection[selection["mode"] == "scratch"]
    assert len(scratch) == 3 and scratch["chosen"].sum() == 2  # two candidates at 0.5, the choice reused at 1.0
    chosen_lr = json.loads(scratch[(scratch["label_fraction"] == 0.5) & scratch["chosen"]]["overrides"].iloc[0])
    assert json.loads(scratch[scratch["label_fraction"] == 1.0]["overrides"].iloc[0]) == chosen_lr
    assert selection[selection["mode"] == "finetune"]["label_fraction"].tolist() == [1.0]
    table = pd.read_csv(out / "results.csv")
    assert set(table["mode"]) == {"linear_probe", "finetune", "scratch", "baseline: measurements",
                                  "baseline: measurements_boosted"}
    assert set(table["leads"]) == {12}
    assert set(pd.read_csv(out / "results_reduced_leads.csv")["mode"]) == {
        "linear_probe [leads I]", "finetune [leads I]", "scratch [leads I]"}
    assert set(table["label_fraction"]) == {0.5, 1.0}
    assert set(table[table["mode"] == "finetune"]["label_fraction"]) == {1.0}
    assert "| lvm_g | r2 |" in (out / "results.md").read_text()
    comparisons = json.loads((out / "comparisons.json").read_text())
    # Every mode against the measurement baseline fitted on the same label fraction (no device measurements in
    # this tiny set: the Sokolow baseline is skipped, the other two use the demographics).
    assert set(comparisons) == {"finetune - scratch @ 1"} | {
        f"{mode} - baseline {name} @ {fraction}" for name in ("measurements", "measurements_boosted")
        for mode, fraction in [("linear_probe", 0.5), ("scratch", 0.5), ("linear_probe", 1), ("finetune", 1),
                               ("scratch", 1)]}
    scores = json.loads((out / "compare.json").read_text())["scores"]
    assert scores["baseline_measurements@0.5"]["n_train"] == 12 and scores["baseline_measurements@1"]["n_train"] == 24
    assert scores["baseline_measurements_boosted@0.5"]["n_train"] == 12
    assert "none of the columns the sokolow baseline uses" in scores["baseline_sokolow@1"]["skipped"]
    assert "finetune - scratch @ 1" in (out / "comparisons.md").read_text()
    finetune = HeadsModel.from_pretrained(out / "runs" / "finetune_f100" / "model")
    assert finetune.config.provenance["init_model"] == str(out / "runs" / "linear_probe_f100" / "model")
    assert main(["heads", "compare", "--config", str(path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("reusing") == 6  # every finished run is reused, the tables rewritten
    assert main(["heads", "compare", "--config", str(path), "--out", str(out), "budget.scratch.min_steps=3"]) == 2
    assert "was trained with another config (schedule.max_steps differ)" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**compare, "modes": ["mae_finetune"]}))
    assert main(["heads", "compare", "--config", str(bad), "--out", str(out)]) == 2
    assert "mae_encoder" in capsys.readouterr().err


def test_compare_config_round_trip():
    from cardiacnets.config import parse_override
    from cardiacnets.evaluate.heads_compare import BudgetConfig, CompareConfig, load_compare_config, override_value

    for value in (3e-05, 0.001, 7, "cosine", [1, 2], {"a": 0.5}):
        assert parse_override(f"optimizer.lr={override_value(value)}")[1] == value

    config = load_compare_config(REPO_ROOT / "configs/demo/heads_compare.yaml")
    assert from_dict(CompareConfig, to_dict(config)) == config
    assert config.search["finetune"] == config.search["scratch"]  # the same search space for both
    budget = BudgetConfig(epochs=60, max_steps=400, min_steps=50)
    assert budget.steps(163, 32) == 300 and budget.steps(1632, 32) == 400  # 60 epochs of 5 steps; the cap
    assert BudgetConfig(epochs=10, max_steps=400, min_steps=50).steps(16, 32) == 50  # the floor
    with pytest.raises(ConfigError, match="unknown mode"):
        from_dict(CompareConfig, {"modes": ["probe"], "aligned_encoder": "x"})


@pytest.mark.slow
def test_mae_initialisation(heads_set, tmp_path):
    """MAE-only initialisation: the encoder inside a saved ECGMAE (a pretrain_ecg run's model) is used."""
    from cardiacnets.models import create_model
    from cardiacnets.models.ecg_vit import ECGViT

    tiny_vit = {"n_samples": 500, "patch_size": 50, "width": 32, "depth": 1, "heads": 2, "embed_dim": 16}
    torch.manual_seed(0)
    mae = create_model("ecg_mae_tiny", encoder=tiny_vit, decoder_width=16, decoder_depth=1, decoder_heads=1)
    mae_dir = mae.save_pretrained(tmp_path / "pretrain_ecg" / "model")
    config = heads_config(tmp_path, heads_set, None)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress", "options.mode=linear_probe",
                 f"init.ecg_encoder={mae_dir}", "model.name=", "model.overrides={}", "schedule.max_steps=3"]) == 0
    model = HeadsModel.from_pretrained(tmp_path / "run" / "model")
    assert isinstance(model.encoder, ECGViT) and model.config.provenance["encoder"] == "ECGViT"
    for key, value in mae.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)
