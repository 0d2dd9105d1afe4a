"""End-to-end tests of generation through the command line: ``train`` with the ``vae`` and ``diffusion`` tasks
on a tiny training set, ``generate`` from a real UK Biobank XML, its errors, and ``bench generate``.

The training set is `write_training_set`'s random one (shared with the retrieval tests) with a
dataset.yaml that records a 50 Hz ECG standardisation, so that the exported pipeline turns the real
500 Hz XML into its 12 x 500 input; the alignment model is the retrieval tests' tiny CardiacCLIP.
"""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
import yaml
from PIL import Image

from cardiacnets.cli import main
from cardiacnets.errors import InputError

from support import REPO_ROOT
from support.datasets import save_tiny_clip, write_training_set
from support.marking import assert_gif_marked, assert_nifti_marked, assert_png_marked


ECG_CONFIG = {"sampling_rate_hz": 50.0, "duration_s": 10.0, "crop": "start", "bandpass_hz": [0.5, 20.0],
              "bandpass_order": 2, "notch_hz": None, "notch_quality": 30.0, "baseline_removal": "bandpass",
              "normalization": "none", "derive_limb_leads": True}
TINY_VAE = '{image_size: 64, block_out_channels: [8, 8, 16], norm_num_groups: 4, latent_channels: 2}'
TINY_DENOISER = ('{block_out_channels: [8, 16], cross_attention_levels: [true, false], attention_head_dim: 2, '
                 'norm_num_groups: 4, cross_attention_dim: 8, condition_dim: 8, temporal_patch: 2}')
#: The tiny set has no stored segmentations and no height or weight: read the manifest's indices.
TINY_CONDITION = ["options.index_source=manifest", "options.demographics=false", "data.demographics=[]",
                  "options.index_features=null"]
QUICK = ["data.workers=0", "logging.progress=false", "logging.tensorboard='off'", "data.batch_size=4",
         "schedule.max_steps=4", "schedule.warmup_steps=1", "val_every_steps=2", "mixed_precision='no'",
         "channels_last=false"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """12 subjects (8 train, 2 val, 2 test), ECG 12 x 500 at 50 Hz, cines 1 x 4 x 64 x 64."""
    root = write_training_set(tmp_path_factory.mktemp("gen") / "set", n=12, ecg_samples=500,
                              cine_shape=(1, 4, 64, 64), splits=["train"] * 8 + ["val"] * 2 + ["test"] * 2)
    info = yaml.safe_load((root / "dataset.yaml").read_text())
    info["config"] = {"ecg": ECG_CONFIG, "cmr": {"views": ["sa", "la_4ch"], "n_frames": 4, "crop_size": 64,
                                                 "spacing_mm": 2.2}}
    (root / "dataset.yaml").write_text(yaml.safe_dump(info))
    manifest = root / "manifest.csv"
    import pandas as pd

    table = pd.read_csv(manifest)
    table["ecg_rr_interval_ms"] = 800.0
    table.to_csv(manifest, index=False)
    return root


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A vae run and a diffusion run on the tiny set, through the command line."""
    runs = tmp_path_factory.mktemp("runs")
    align = runs / "align"
    save_tiny_clip(align / "model")
    status = main(["train", str(REPO_ROOT / "configs/demo/vae.yaml"), "--out", str(runs / "vae"), f"data.path={tiny_data}",
                   f"model.overrides={TINY_VAE}", "options.scaling_subjects=4", *QUICK])
    assert status == 0
    status = main(["train", str(REPO_ROOT / "configs/demo/diffusion.yaml"), "--out", str(runs / "diffusion"),
                   *TINY_CONDITION, f"data.path={tiny_data}", f"options.vae={runs / 'vae' / 'vae'}",
                   f"options.ecg_encoder={align}",
                   f"model.overrides={TINY_DENOISER}", f"options.cache_dir={runs / 'cache'}",
                   "options.condition_indices=[lvef_pct]", *QUICK])
    assert status == 0
    return runs


@pytest.mark.slow
def test_diffusion_run_names_an_unknown_condition_index(trained, tiny_data, tmp_path, capsys):
    status = main(["train", str(REPO_ROOT / "configs/demo/diffusion.yaml"), "--out", str(tmp_path / "run"),
                   *TINY_CONDITION, f"data.path={tiny_data}", f"options.vae={trained / 'vae' / 'vae'}",
                   f"options.ecg_encoder={trained / 'align'}", f"model.overrides={TINY_DENOISER}",
                   f"options.cache_dir={trained / 'cache'}", "options.condition_indices=[lvedv_nope]", *QUICK])
    assert status != 0
    err = capsys.readouterr().err
    assert "manifest.csv" in err and "lvedv_nope" in err


@pytest.mark.slow
def test_vae_run_exports_the_measured_scaling_factor(trained):
    config = json.loads((trained / "vae" / "vae" / "config.json").read_text())
    stats = json.loads((trained / "vae" / "vae_stats.json").read_text())
    assert config["_class_name"] == "AutoencoderKL"
    assert config["scaling_factor"] == pytest.approx(stats["scaling_factor"])
    assert stats["scaling_factor"] == pytest.approx(1.0 / stats["latent_std"])
    assert stats["n_frames"] == 4 * 4  # 4 subjects x 4 frames
    rows = (trained / "vae" / "val_log.csv").read_text().splitlines()
    assert "psnr_db" in rows[0] and len(rows) == 3  # validations at steps 2 and 4


def reference_readout(x: np.ndarray, y: np.ndarray, penalties) -> tuple[np.ndarray, float, float]:
    """The read-out the diffusion task fits: ridge on standardised features (penalty per subject), folded back."""
    from cardiacnets.generation.readout import ridge_loo

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    w, b, penalty, _ = ridge_loo((x - mean) / scale, y, [p * len(y) for p in penalties])
    return w / scale, b - (mean / scale) @ w, penalty / len(y)


@pytest.mark.slow
def test_diffusion_run_exports_a_working_pipeline(trained, tiny_data):
    from cardiacnets.generation import ECGToCMRPipeline

    run = trained / "diffusion"
    header = (run / "val_log.csv").read_text().splitlines()[0]
    assert {"loss_diffusion", "mse_conditional", "mse_null"} <= set(header.split(","))
    assert {p.name for p in (trained / "cache").iterdir()} == {"train.json", "train.safetensors", "val.json",
                                                               "val.safetensors"}
    provenance = json.loads((run / "pipeline" / "provenance.json").read_text())
    assert provenance["alignment_run"] == str((trained / "align").resolve())
    assert provenance["vae"] == str((trained / "vae" / "vae").resolve())
    pipe = ECGToCMRPipeline.from_pretrained(run / "pipeline")
    assert (pipe.view, pipe.spacing_mm, pipe.frame_interval_ms) == ("sa", 2.2, 200.0)  # 800 ms over 4 frames
    assert pipe.ecg_config == ECG_CONFIG
    assert pipe.vae.config.scaling_factor == pytest.approx(
        json.loads((trained / "vae" / "vae_stats.json").read_text())["scaling_factor"])
    assert pipe.denoiser.config.temporal_patch == 2 and pipe.denoiser.config.num_frames == 4
    # The frozen index read-out is the leave-one-out ridge fit of the cached training embeddings.
    from safetensors.torch import load_file

    from cardiacnets.train.diffusion_task import DiffusionOptions

    fit = provenance["condition_indices"]["lvef_pct"]
    cached = load_file(str(trained / "cache" / "train.safetensors"))["embedding"].double().numpy()
    ids = json.loads((trained / "cache" / "train.json").read_text())["subject_ids"]
    table = pd.read_csv(tiny_data / "manifest.csv", dtype={"subject_id": str}).set_index("subject_id").loc[ids]
    y = (table["lvef_pct"].to_numpy() - fit["mean"]) / fit["std"]
    weight, bias, penalty = reference_readout(cached, y, DiffusionOptions().index_ridge)
    assert fit["n"] == 8 and fit["penalty"] == pytest.approx(penalty)
    np.testing.assert_allclose(pipe.denoiser.index_proj.weight.detach().numpy()[0], weight, rtol=1e-4, atol=1e-6)
    assert pipe.denoiser.index_proj.bias.item() == pytest.approx(bias, abs=1e-5)
    out = pipe(0.3 * torch.randn(2, 12, 500), num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.cines.shape == (2, 4, 64, 64) and np.isfinite(out.cines).all()
    # A second run reads the cached latents instead of encoding again.
    status = main(["train", str(REPO_ROOT / "configs/demo/diffusion.yaml"), "--out", str(trained / "diffusion2"),
                   *TINY_CONDITION, f"data.path={tiny_data}", f"options.vae={trained / 'vae' / 'vae'}",
                   f"options.ecg_encoder={trained / 'align'}", f"model.overrides={TINY_DENOISER}",
                   f"options.cache_dir={trained / 'cache'}", "options.condition_indices=[lvef_pct]", *QUICK,
                   "schedule.max_steps=1"])
    assert status == 0


@pytest.mark.slow
def test_index_spread_training_stretches_the_read_out_to_the_indices_spread(trained, tiny_data, tmp_path, capsys):
    from safetensors.torch import load_file

    from cardiacnets.generation import ECGToCMRPipeline
    from cardiacnets.train.diffusion_task import DiffusionOptions

    common = [*TINY_CONDITION, f"data.path={tiny_data}", f"options.vae={trained / 'vae' / 'vae'}",
              f"options.ecg_encoder={trained / 'align'}", f"model.overrides={TINY_DENOISER}",
              f"options.cache_dir={trained / 'cache'}", "options.condition_indices=[lvef_pct]", *QUICK,
              "schedule.max_steps=1"]
    status = main(["train", str(REPO_ROOT / "configs/demo/diffusion.yaml"), "--out", str(tmp_path / "spread"), *common,
                   "options.index_spread=training"])
    assert status == 0
    fit = json.loads((tmp_path / "spread" / "pipeline" / "provenance.json").read_text())["condition_indices"]["lvef_pct"]
    cached = load_file(str(trained / "cache" / "train.safetensors"))["embedding"].double().numpy()
    ids = json.loads((trained / "cache" / "train.json").read_text())["subject_ids"]
    table = pd.read_csv(tiny_data / "manifest.csv", dtype={"subject_id": str}).set_index("subject_id").loc[ids]
    weight, bias, _ = reference_readout(cached, (table["lvef_pct"].to_numpy() - fit["mean"]) / fit["std"],
                                        DiffusionOptions().index_ridge)
    ridge_estimates = cached @ weight + bias
    assert fit["estimate_sd"] == pytest.approx(ridge_estimates.std(), abs=1e-4) and fit["estimate_sd"] < 1.0
    assert fit["spread_scale"] == pytest.approx(1.0 / ridge_estimates.std(), rel=1e-3)
    pipe = ECGToCMRPipeline.from_pretrained(tmp_path / "spread" / "pipeline")
    stretched = cached @ pipe.denoiser.index_proj.weight.detach().double().numpy()[0] + pipe.denoiser.index_proj.bias.item()
    np.testing.assert_allclose(stretched, ridge_estimates / ridge_estimates.std(), rtol=1e-3, atol=1e-4)
    assert stretched.mean() == pytest.approx(0.0, abs=1e-4) and stretched.std() == pytest.approx(1.0, rel=1e-3)
    capsys.readouterr()
    assert main(["train", str(REPO_ROOT / "configs/demo/diffusion.yaml"), "--out", str(tmp_path / "bad"), *common,
                 "options.index_spread=wide"]) != 0
    assert "index_spread" in capsys.readouterr().err and not (tmp_path / "bad" / "pipeline").exists()


@pytest.mark.slow
def test_fine_tuning_from_init_model_refits_the_read_out(trained, tiny_data, tmp_path):
    """init.model brings the denoiser's weights; the read-out is fitted again on the new set, in its units."""
    import shutil

    from safetensors.torch import load_file

    from cardiacnets.generation import ECGToCMRPipeline
    from cardiacnets.train.diffusion_task import DiffusionOptions

    shifted = tmp_path / "shifted"
    shutil.copytree(tiny_data, shifted)
    table = pd.read_csv(shifted / "manifest.csv", dtype={"subject_id": str})
    table["lvef_pct"] = 2.0 * table["lvef_pct"] + 10.0
    table.to_csv(shifted / "manifest.csv", index=False)
    status = main(["train", str(REPO_ROOT / "configs/demo/diffusion.yaml"), "--out", str(tmp_path / "tuned"),
                   *TINY_CONDITION, f"data.path={shifted}", f"options.vae={trained / 'vae' / 'vae'}",
                   f"options.ecg_encoder={trained / 'align'}", f"model.overrides={TINY_DENOISER}",
                   f"options.cache_dir={tmp_path / 'cache'}", "options.condition_indices=[lvef_pct]",
                   f"init.model={trained / 'diffusion' / 'denoiser'}", *QUICK, "schedule.max_steps=1"])
    assert status == 0
    before = json.loads((trained / "diffusion" / "pipeline" / "provenance.json").read_text())["condition_indices"]
    fit = json.loads((tmp_path / "tuned" / "pipeline" / "provenance.json").read_text())["condition_indices"]
    assert fit["lvef_pct"]["mean"] == pytest.approx(2.0 * before["lvef_pct"]["mean"] + 10.0)
    assert fit["lvef_pct"]["std"] == pytest.approx(2.0 * before["lvef_pct"]["std"])
    cached = load_file(str(tmp_path / "cache" / "train.safetensors"))["embedding"].double().numpy()
    ids = json.loads((tmp_path / "cache" / "train.json").read_text())["subject_ids"]
    y = table.set_index("subject_id").loc[ids, "lvef_pct"].to_numpy()
    weight, bias, _ = reference_readout(cached, (y - fit["lvef_pct"]["mean"]) / fit["lvef_pct"]["std"],
                                        DiffusionOptions().index_ridge)
    pipe = ECGToCMRPipeline.from_pretrained(tmp_path / "tuned" / "pipeline")
    np.testing.assert_allclose(pipe.denoiser.index_proj.weight.detach().numpy()[0], weight, rtol=1e-4, atol=1e-6)
    # The estimates come out in the new set's units (the old read-out would give the old set's).
    ecg = 0.3 * torch.randn(3, 12, 500, generator=torch.Generator().manual_seed(0))
    estimates = pipe(ecg, num_inference_steps=1).index_estimates["lvef_pct"]
    with torch.no_grad():
        condition = pipe.encode_ecg(ecg)
        z = pipe.denoiser.predict_indices(condition.embedding, None, None, condition.tokens).float().numpy()[:, 0]
    np.testing.assert_allclose(estimates, z * fit["lvef_pct"]["std"] + fit["lvef_pct"]["mean"], rtol=1e-4)


@pytest.mark.slow
def test_index_teacher_trains_on_the_cines_own_indices_and_reads_out_demographics(trained, tiny_data, tmp_path,
                                                                                 ukb_xml_path, capsys):
    from safetensors.torch import load_file

    from cardiacnets.config import load_config
    from cardiacnets.generation import ECGToCMRPipeline
    from cardiacnets.train import TrainConfig
    from cardiacnets.train.diffusion_task import DiffusionOptions, DiffusionTask

    args = [*TINY_CONDITION, f"data.path={tiny_data}", f"options.vae={trained / 'vae' / 'vae'}",
            f"options.ecg_encoder={trained / 'align'}",
            f"model.overrides={TINY_DENOISER}", f"options.cache_dir={trained / 'cache'}",
            "options.condition_indices=[lvef_pct]", "options.demographics=true",
            "data.demographics=[age_years,sex_male]",
            "options.index_features=[embedding,token_mean,demographics,demographic_products,embedding_x_demographics]",
            "options.index_teacher=1.0", *QUICK]
    assert main(["train", str(REPO_ROOT / "configs/demo/diffusion.yaml"), "--out", str(tmp_path / "run"), *args]) == 0
    pipe = ECGToCMRPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    fit = json.loads((tmp_path / "run" / "pipeline" / "provenance.json").read_text())["condition_indices"]["lvef_pct"]
    # The read-out: ridge on [embedding, mean token, demographics standardised over the training split,
    # their products (age², age·sex, sex²), embedding × (age, sex)].
    ids = json.loads((trained / "cache" / "train.json").read_text())["subject_ids"]
    table = pd.read_csv(tiny_data / "manifest.csv", dtype={"subject_id": str}).set_index("subject_id")
    train = table[table["split"] == "train"]
    age, sex = ((table.loc[ids, c].to_numpy(float) - train[c].mean()) / train[c].std(ddof=0)
                for c in ("age_years", "sex_male"))
    cached = load_file(str(trained / "cache" / "train.safetensors"))
    embedding = cached["embedding"].double().numpy()
    x = np.concatenate([embedding, cached["tokens"].double().numpy().mean(axis=1), np.stack([age, sex], 1),
                        np.stack([age * age, age * sex, sex * sex], 1),
                        np.stack([embedding[:, i] * d for i in range(embedding.shape[1]) for d in (age, sex)], 1)],
                       axis=1)
    assert pipe.denoiser.index_proj.weight.shape == (1, x.shape[1])
    y = (table.loc[ids, "lvef_pct"].to_numpy() - fit["mean"]) / fit["std"]
    weight, bias, _ = reference_readout(x, y, DiffusionOptions().index_ridge)
    np.testing.assert_allclose(pipe.denoiser.index_proj.weight.detach().numpy()[0], weight, rtol=1e-3, atol=1e-5)
    assert pipe.denoiser.index_proj.bias.item() == pytest.approx(bias, abs=1e-4)
    # The teacher values: the training cines' own indices, standardised like the read-out's target.
    task = DiffusionTask(load_config(TrainConfig, REPO_ROOT / "configs/demo/diffusion.yaml", args))
    targets = task.index_targets().numpy()[:, 0]
    np.testing.assert_allclose(targets, (table.loc[ids, "lvef_pct"].to_numpy() - train["lvef_pct"].mean())
                               / train["lvef_pct"].std(ddof=0), rtol=1e-5)
    batch = {"ecg": torch.zeros(3, 12, 500), "subject_id": ids[:3], "demographics": torch.zeros(3, 2),
             "demographics_mask": torch.ones(3, 2, dtype=torch.bool)}
    *_, taught = task._inputs(batch, "train", torch.Generator().manual_seed(0))
    np.testing.assert_allclose(taught[:, 0].numpy(), targets[:3], rtol=1e-6)
    *_, at_validation = task._inputs(batch, "train", None)  # validation and generation: the read-out
    assert at_validation is None
    # generate: demographics from the file and from the command line.
    out = tmp_path / "generated"
    assert main(["generate", "--ecg", str(ukb_xml_path), "--model", str(tmp_path / "run" / "pipeline"), "--out",
                 str(out), "--steps", "1"]) == 0
    record = json.loads((out / "provenance.json").read_text())
    assert record["demographics"]["used"]["sex_male"] == 0.0  # FEMALE
    assert record["demographics"]["from_file"] == sorted(record["demographics"]["used"])
    assert set(record["condition_index_estimates"]) == {"lvef_pct"}
    out = tmp_path / "generated2"
    assert main(["generate", "--ecg", str(ukb_xml_path), "--model", str(tmp_path / "run" / "pipeline"), "--out",
                 str(out), "--steps", "1", "--demographic", "age_years=61", "--json"]) == 0
    record = json.loads((out / "provenance.json").read_text())
    assert record["demographics"]["used"] == {"age_years": 61.0, "sex_male": 0.0}
    assert record["demographics"]["from_file"] == ["sex_male"]
    assert main(["generate", "--ecg", str(ukb_xml_path), "--model", str(tmp_path / "run" / "pipeline"), "--out",
                 str(out), "--demographic", "bmi=30"]) != 0
    assert "not ['bmi']" in capsys.readouterr().err


@pytest.mark.slow
def test_index_source_segmentation_measures_the_stored_slices(trained, tiny_data, tmp_path):
    import shutil

    from cardiacnets.config import load_config
    from cardiacnets.train import TrainConfig
    from cardiacnets.train.diffusion_task import DiffusionTask

    data = tmp_path / "set"
    shutil.copytree(tiny_data, data)
    seg = np.zeros((12, 1, 4, 64, 64), np.uint8)
    seg[:, :, :, :10, :10] = 1  # LV cavity: 100 pixels in every frame ...
    seg[:, :, 0, 10:20, :10] = 1  # ... and 200 at end-diastole (frame 0)
    seg[:, :, :, 40:50, 40:46] = 3  # RV cavity: 60 pixels
    np.save(data / "seg_sa.npy", seg)
    info = yaml.safe_load((data / "dataset.yaml").read_text())
    without_seg = yaml.safe_dump(info)
    info["arrays"].append({"name": "seg_sa", "row_shape": [1, 4, 64, 64], "dtype": "uint8"})  # as preprocess lists it
    (data / "dataset.yaml").write_text(yaml.safe_dump(info))
    table = pd.read_csv(data / "manifest.csv")
    table["has_seg_sa"] = table["row"] != 1  # subject 2001 has no segmentation
    table.to_csv(data / "manifest.csv", index=False)
    args = [*TINY_CONDITION, f"data.path={data}", f"options.vae={trained / 'vae' / 'vae'}",
            f"options.ecg_encoder={trained / 'align'}",
            f"model.overrides={TINY_DENOISER}", f"options.cache_dir={tmp_path / 'cache'}", "options.index_teacher=1.0",
            "options.index_source=segmentation", "options.condition_indices=[lvedv_ml,lvesv_ml,rvedv_ml]", *QUICK]
    task = DiffusionTask(load_config(TrainConfig, REPO_ROOT / "configs/demo/diffusion.yaml", args))
    _, cache, measured, _ = task._index_table()
    pixel_ml = 2.2 * 2.2 * 10.0 / 1000.0  # 2.2 mm pixels, one slice standing for 10 mm
    assert measured.loc["2000"].tolist() == pytest.approx([200 * pixel_ml, 100 * pixel_ml, 60 * pixel_ml])
    assert measured.loc["2001"].isna().all() and len(measured) == len(cache.subject_ids) == 8
    targets = task.index_targets()
    assert torch.isnan(targets[cache.subject_ids.index("2001")]).all()
    assert torch.isfinite(targets[cache.subject_ids.index("2000")]).all()
    (data / "seg_sa.npy").unlink()
    (data / "dataset.yaml").write_text(without_seg)
    with pytest.raises(InputError, match="seg_sa.npy"):
        DiffusionTask(load_config(TrainConfig, REPO_ROOT / "configs/demo/diffusion.yaml", args))._index_table()


@pytest.mark.slow
def test_generate_cli_writes_every_output(trained, ukb_xml_path, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["generate", "--ecg", str(ukb_xml_path), "--model", str(trained / "diffusion" / "pipeline"),
                   "--out", str(out), "--seed", "3", "--steps", "2", "--guidance", "2.5", "--n-samples", "2"])
    assert status == 0, capsys.readouterr().err
    assert "written to" in capsys.readouterr().out
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["input"]["sha256"] == hashlib.sha256(ukb_xml_path.read_bytes()).hexdigest()
    assert (provenance["seed"], provenance["steps"], provenance["guidance"], provenance["n_samples"]) == (3, 2, 2.5, 2)
    assert provenance["synthetic"] and provenance["seconds"]["total"] > 0
    assert provenance["model"] == str((trained / "diffusion" / "pipeline").resolve())
    for k in range(2):
        image = nib.load(out / f"sample_{k}" / "cine.nii.gz")
        assert image.shape == (64, 64, 1, 4)
        np.testing.assert_allclose(image.header.get_zooms(), (2.2, 2.2, 8.0, 200.0), rtol=1e-5)
        assert Image.open(out / f"sample_{k}" / "cine.gif").n_frames == 4
        assert (out / f"sample_{k}" / "frames.png").is_file()
        # Every picture is marked synthetic in its pixels and its metadata, read back from disk.
        assert len(assert_gif_marked(out / f"sample_{k}" / "cine.gif")) == 4
        assert assert_png_marked(out / f"sample_{k}" / "frames.png", frame_width=3 * 64).shape == (3 * 64, 4 * 3 * 64)
        assert_nifti_marked(out / f"sample_{k}" / "cine.nii.gz")
    assert (out / "std.png").is_file() and nib.load(out / "std.nii.gz").shape == (64, 64, 1, 4)
    assert_png_marked(out / "std.png")
    assert_nifti_marked(out / "std.nii.gz")
    dicoms = sorted((out / "sample_0" / "dicom").glob("*.dcm"))
    assert len(dicoms) == 4
    ds = pydicom.dcmread(dicoms[0])
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and "SYNTHETIC" in ds.SeriesDescription
    assert ds.PatientID == "" and ds.BurnedInAnnotation == "YES"
    # The same seed reproduces the cines.
    again = tmp_path / "again"
    assert main(["generate", "--ecg", str(ukb_xml_path), "--model", str(trained / "diffusion" / "pipeline"),
                 "--out", str(again), "--seed", "3", "--steps", "2", "--guidance", "2.5", "--n-samples", "2"]) == 0
    np.testing.assert_array_equal(nib.load(again / "sample_1" / "cine.nii.gz").get_fdata(),
                                  nib.load(out / "sample_1" / "cine.nii.gz").get_fdata())


@pytest.mark.slow
def test_generate_cli_errors_name_the_file(trained, tmp_path, capsys, ukb_xml_path):
    model = str(trained / "diffusion" / "pipeline")
    missing = tmp_path / "nope.xml"
    assert main(["generate", "--ecg", str(missing), "--model", model, "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    broken = tmp_path / "broken.xml"
    broken.write_text("<CardiologyXML><StripData>")
    assert main(["generate", "--ecg", str(broken), "--model", model, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cardiacnets generate: error:") and str(broken) in err and len(err.splitlines()) == 1
    assert main(["generate", "--ecg", str(broken), "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "model_index.json" in capsys.readouterr().err
    npy = tmp_path / "ecg.npy"
    np.save(npy, np.zeros((12, 100), np.float32))
    assert main(["generate", "--ecg", str(npy), "--model", model, "--out", str(tmp_path / "o")]) == 2
    assert str(npy) in capsys.readouterr().err  # a .npy needs --sampling-rate and --leads
    assert main(["generate", "--ecg", str(ukb_xml_path), "--model", model, "--out", str(tmp_path / "o"),
                 "--demographic", "age_years=60"]) == 2
    assert "not conditioned on demographics" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_generate_reports_baseline_and_tuned(capsys):
    status = main(["bench", "generate", "--json", "--steps", "1", "--batch-sizes", "1", "2", "--repeat", "1"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "generate"
    assert result["baseline"]["precision"] == "fp32" and result["baseline"]["batch_size"] == 1
    assert [r["batch_size"] for r in result["tuned"]] == [1, 2]
    assert all(r["seconds_per_cine"] > 0 and r["cines_per_s"] > 0 for r in result["tuned"])
    assert result["cine"] == {"frames": 25, "height": 64, "width": 64, "latent": [4, 25, 8, 8]}
    assert result["speedup_best"] > 0
    # Both generators in the same run: the anatomy-first one over 4 x 16 x 16 frame latents.
    anatomy = result["generators"]["anatomy"]
    assert set(result["generators"]) == {"direct", "anatomy"}
    assert anatomy["cine"] == {"frames": 25, "height": 64, "width": 64, "latent": [4, 25, 16, 16]}
    assert anatomy["baseline"]["precision"] == "fp32" and anatomy["tuned"][0]["seconds_per_cine"] > 0
    assert 0 < anatomy["acquisition_noise_seconds_per_cine"] < anatomy["tuned"][0]["seconds_per_cine"]
    assert "acquisition_noise_seconds_per_cine" not in result  # the direct generator has no noise model
