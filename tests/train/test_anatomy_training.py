"""End-to-end tests of the anatomy-first generator through the command line: ``train`` with the ``vae``,
``anatomy_image`` and ``anatomy`` tasks on a tiny disc training set, the exported `AnatomyFirstPipeline`
(components, read-out fit, validation-chosen sampling settings), and ``generate`` from a real UK Biobank XML.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cardiacnets.cli import main
from cardiacnets.generation.anatomy_pipeline import AnatomyFirstPipeline
from support import REPO_ROOT
from support.datasets import save_tiny_resnet_clip, write_disc_set
from support.marking import assert_gif_marked, assert_nifti_marked, assert_png_marked

ECG_CONFIG = {"sampling_rate_hz": 50.0, "duration_s": 10.0, "crop": "start", "bandpass_hz": [0.5, 20.0],
              "bandpass_order": 2, "notch_hz": None, "notch_quality": 30.0, "baseline_removal": "bandpass",
              "normalization": "none", "derive_limb_leads": True}
QUICK = ["data.workers=0", "logging.progress=false", "logging.tensorboard='off'", "data.batch_size=4",
         "schedule.max_steps=3", "schedule.warmup_steps=1", "val_every_steps=3", "mixed_precision='no'"]
TINY_VAE = "{image_size: 64, block_out_channels: [8, 8, 8], norm_num_groups: 4, latent_channels: 2}"
TINY_IMAGE = "{block_out_channels: [8, 16], attention_levels: [false, true], norm_num_groups: 4}"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def disc_data(tmp_path_factory) -> Path:
    """16 disc subjects (8 train, 4 val, 4 test), 8 frames of 64 x 64, an ECG standardisation of 12 x 500
    at 50 Hz, and two device measurements (one missing for two subjects)."""
    root = write_disc_set(tmp_path_factory.mktemp("anatomy") / "set", n=16, frames=8, size=64)
    info = yaml.safe_load((root / "dataset.yaml").read_text())
    info["config"]["ecg"] = ECG_CONFIG
    (root / "dataset.yaml").write_text(yaml.safe_dump(info))
    table = pd.read_csv(root / "manifest.csv")
    rng = np.random.default_rng(0)
    table["ecg_qrs_duration_ms"] = rng.normal(95, 10, len(table))
    table["ecg_sokolov_lvh_index_mV"] = rng.normal(2.5, 0.5, len(table))
    table.loc[[0, 9], "ecg_qrs_duration_ms"] = np.nan
    table["ecg_rr_interval_ms"] = 900.0
    table.to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def runs(disc_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("anatomy_runs")
    torch.manual_seed(0)
    save_tiny_resnet_clip(root / "align" / "model", frames=8)
    assert main(["train", str(REPO_ROOT / "configs/demo/vae.yaml"), "--out", str(root / "vae"),
                 f"data.path={disc_data}", f"model.overrides={TINY_VAE}", "options.scaling_subjects=4", *QUICK]) == 0
    assert main(["train", str(REPO_ROOT / "configs/demo/anatomy_image.yaml"), "--out", str(root / "image"),
                 f"data.path={disc_data}", f"options.vae={root / 'vae' / 'vae'}", f"model.overrides={TINY_IMAGE}",
                 *QUICK]) == 0
    assert main(["train", str(REPO_ROOT / "configs/demo/anatomy.yaml"), "--out", str(root / "anatomy"),
                 f"data.path={disc_data}", f"options.ecg_encoder={root / 'align'}",
                 f"options.image_model={root / 'image'}", "data.demographics=[age_years, sex_male]",
                 "options.measurements=[qrs_duration_ms, sokolov_lvh_index_mV]", "options.n_components=4",
                 "options.grid_size=16", "options.readout_folds=2", "options.temperatures=[0.0, 1.0]",
                 "options.guidance_scales=[1.0]", "options.shape_temperatures=[0.0, 1.0]",
                 "options.selection_steps=2",
                 "model.overrides={width: 16, depth: 1}", *QUICK]) == 0
    return root


def test_anatomy_image_run_exports_the_denoiser_and_its_schedule(runs):
    assert (runs / "image" / "image_denoiser" / "config.json").is_file()
    scheduler = json.loads((runs / "image" / "image_scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"
    record = json.loads((runs / "image" / "anatomy_image.json").read_text())
    assert Path(record["vae"]) == (runs / "vae" / "vae").resolve()
    config = json.loads((runs / "image" / "image_denoiser" / "config.json").read_text())
    assert config["latent_size"] == 16 and config["downsample_factor"] == 4 and config["latent_channels"] == 2
    # The acquisition-noise model, fitted on the 8 training subjects (fewer than options.noise_subjects).
    assert record["acquisition"]["n_subjects"] == 8 and record["acquisition"]["split"] == "train"
    assert len(record["acquisition"]["median_sd"]) == 8 and min(record["acquisition"]["median_sd"]) > 0
    assert (runs / "image" / "acquisition" / "config.json").is_file()
    # The appearance input: a bank of the 8 training cines' codes, and their statistics.
    from cardiacnets.generation.image_decoder import APPEARANCE_NAMES, LabelConditionedDenoiser
    from cardiacnets.train.anatomy_image_task import training_appearance_codes

    assert config["appearance_dim"] == len(APPEARANCE_NAMES) and config["appearance_bank_size"] == 8
    denoiser = LabelConditionedDenoiser.from_pretrained(runs / "image" / "image_denoiser")
    codes = training_appearance_codes(record["training_set"], "sa", "train")
    assert codes.shape == (8, len(APPEARANCE_NAMES)) and bool(torch.isfinite(codes).all())
    torch.testing.assert_close(denoiser.appearance_mean, codes.mean(0))
    assert {tuple(r.tolist()) for r in denoiser.appearance_bank} == {tuple(r.tolist()) for r in codes}


def test_anatomy_run_exports_a_working_pipeline(runs, disc_data):
    pipe = AnatomyFirstPipeline.from_pretrained(runs / "anatomy" / "pipeline")
    provenance = json.loads((runs / "anatomy" / "pipeline" / "provenance.json").read_text())
    # The shape model was fitted on the 8 training subjects and round-tripped on the 4 validation ones.
    assert provenance["shape_model"]["n_subjects"] == 8 and provenance["shape_model"]["val_round_trip"]["n"] == 4
    assert provenance["shape_model"]["val_round_trip"]["dice"]["lv_cavity"] > 0.8
    # The read-out: both fits, per index, with the cross-fitted r of the training conditions.
    assert set(provenance["readout"]) >= {"full", "waveform", "val_r"}
    indices = {"lvedv_ml", "lvesv_ml", "lvef_pct", "lvm_g", "rvedv_ml", "rvesv_ml"}
    assert set(provenance["readout"]["full"]) == indices | {"correction"}  # the demo config's nonlinear correction
    correction = provenance["readout"]["full"]["correction"]
    assert isinstance(correction["kept"], bool)
    assert correction["kept"] == (correction["corrected_mse"] < correction["linear_mse"])
    assert pipe.readout.config.hidden_dim == 32
    # Sampling settings chosen on the validation split among the configured grid.
    selection = provenance["sampling_selection"]
    assert selection["split"] == "val" and selection["n"] == 4 and len(selection["grid"]) == 4
    assert pipe.config.default_temperature == selection["chosen"]["temperature"]
    assert pipe.config.default_shape_temperature == selection["chosen"]["shape_temperature"]
    # The rule: the lowest code Fréchet distance among the settings within the tolerance of the best score.
    scores = [row["score"] for row in selection["grid"]]
    eligible = [row for row in selection["grid"]
                if not np.isfinite(scores).any() or row["score"] >= selection["best_score"] - selection["tolerance"]]
    chosen = min(eligible, key=lambda row: (row["code_frechet"], -row["score"] if np.isfinite(row["score"]) else 0))
    assert {k: chosen[k] for k in ("temperature", "guidance", "shape_temperature")} == selection["chosen"]
    cold = [row for row in selection["grid"] if row["temperature"] == 0 and row["shape_temperature"] == 0]
    assert all(np.isfinite(row["code_frechet"]) for row in selection["grid"]) and len(cold) == 1
    assert provenance["alignment_run"] == str((runs / "align").resolve())
    assert pipe.readout.config.measurements["columns"] == ["qrs_duration_ms", "sokolov_lvh_index_mV"]
    assert pipe.readout.config.demographics["columns"] == ["age_years", "sex_male"]
    # The read-out's standardisation is the training split's (the normaliser that export and training share).
    manifest = pd.read_csv(disc_data / "manifest.csv")
    train = manifest[manifest["split"] == "train"]
    assert pipe.readout.config.demographics["mean"][0] == pytest.approx(train["age_years"].mean())
    assert pipe.readout.config.measurements["mean"][0] == pytest.approx(train["ecg_qrs_duration_ms"].mean())
    out = pipe(torch.zeros(2, 12, 500), num_inference_steps=2, image_steps=2, num_samples_per_ecg=2,
               generator=torch.Generator().manual_seed(0))
    assert out.cines.shape == (4, 8, 64, 64) and out.labels.shape == (4, 8, 64, 64)
    assert set(np.unique(out.labels)) <= {0, 1, 2, 3}
    assert pipe.acquisition is not None and pipe.acquisition.config.n_subjects == 8  # the image run's noise model


def test_generate_cli_writes_the_anatomy_beside_the_cine(runs, ukb_xml_path, tmp_path, capsys):
    out = tmp_path / "generated"
    assert main(["generate", "--ecg", str(ukb_xml_path), "--model", str(runs / "anatomy" / "pipeline"), "--out",
                 str(out), "--steps", "2", "--n-samples", "2", "--demographic", "age_years=300", "--json"]) == 0
    provenance = json.loads(capsys.readouterr().out)
    assert provenance["generator"] == "anatomy" and provenance["synthetic"] is True
    assert provenance["acquisition_noise"] is True  # the image run's noise model, on by default
    assert provenance["appearance_bank"] == 8  # each cine draws one of the 8 training cines' appearance codes
    assert provenance["demographics"]["ignored"]["age_years"].startswith("implausible")  # the override, 300 years
    assert provenance["demographics"]["from_file"] == ["sex_male"]  # the file's own value where none was given
    assert set(provenance["measurements"]["used"]) == {"qrs_duration_ms"}  # the XML has no Sokolow index
    for sample in ("sample_0", "sample_1"):
        cine = nib.load(out / sample / "cine.nii.gz")
        seg = nib.load(out / sample / "anatomy_seg.nii.gz")
        assert seg.shape == cine.shape == (64, 64, 1, 8)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
        assert b"SYNTHETIC" in bytes(seg.header["descrip"]).upper()
        assert b"SYNTHETIC" in bytes(cine.header["descrip"]).upper()
        assert_nifti_marked(out / sample / "anatomy_seg.nii.gz")
        assert_nifti_marked(out / sample / "cine.nii.gz")
        assert len(assert_gif_marked(out / sample / "cine.gif")) == 8
        assert_png_marked(out / sample / "frames.png", frame_width=3 * 64)
    assert_nifti_marked(out / "std.nii.gz")
    assert_png_marked(out / "std.png")
    assert provenance["anatomy_indices"][0]["lvedv_ml"] > 0
    # Without temperatures given, the pipeline's validation-chosen ones are recorded.
    pipe = AnatomyFirstPipeline.from_pretrained(runs / "anatomy" / "pipeline")
    assert provenance["temperature"] == pipe.config.default_temperature
    assert provenance["shape_temperature"] == pipe.config.default_shape_temperature


def test_generate_cli_shape_temperature_zero_draws_one_anatomy(runs, ukb_xml_path, tmp_path, capsys):
    out = tmp_path / "cold"
    assert main(["generate", "--ecg", str(ukb_xml_path), "--model", str(runs / "anatomy" / "pipeline"), "--out",
                 str(out), "--steps", "2", "--n-samples", "2", "--temperature", "0", "--shape-temperature", "0",
                 "--json"]) == 0
    provenance = json.loads(capsys.readouterr().out)
    assert provenance["temperature"] == 0.0 and provenance["shape_temperature"] == 0.0
    first, second = (np.asarray(nib.load(out / s / "anatomy_seg.nii.gz").dataobj) for s in ("sample_0", "sample_1"))
    np.testing.assert_array_equal(first, second)  # both temperatures 0: the same, most typical anatomy
    assert main(["generate", "--ecg", str(ukb_xml_path), "--model", str(runs / "anatomy" / "pipeline"), "--out",
                 str(tmp_path / "bad"), "--shape-temperature", "-1"]) == 2
    assert "--shape-temperature must be non-negative" in capsys.readouterr().err


def test_anatomy_run_names_too_many_shape_components(runs, disc_data, tmp_path, capsys):
    status = main(["train", str(REPO_ROOT / "configs/demo/anatomy.yaml"), "--out", str(tmp_path / "run"),
                   f"data.path={disc_data}", f"options.ecg_encoder={runs / 'align'}",
                   f"options.image_model={runs / 'image'}", "data.demographics=[age_years, sex_male]",
                   "options.measurements=[qrs_duration_ms]", "options.n_components=20", *QUICK])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "options.n_components=20" in err and "has 8" in err


def test_generate_cli_without_acquisition_noise_writes_the_decoded_frames(runs, ukb_xml_path, tmp_path, capsys):
    cines = {}
    for flags in ([], ["--no-acquisition-noise"]):
        out = tmp_path / ("plain" if flags else "noisy")
        assert main(["generate", "--ecg", str(ukb_xml_path), "--model", str(runs / "anatomy" / "pipeline"), "--out",
                     str(out), "--steps", "2", "--json", *flags]) == 0
        provenance = json.loads(capsys.readouterr().out)
        assert provenance["acquisition_noise"] is (not flags)
        cines[bool(flags)] = np.asarray(nib.load(out / "sample_0" / "cine.nii.gz").dataobj, dtype=np.float64)
    # The same seed draws the same anatomy and decoded frames; the noise is the only difference.
    difference = cines[False] - cines[True]
    assert np.abs(difference).max() > 0 and abs(float(np.mean(difference))) < 0.05 * np.abs(cines[True]).mean()
