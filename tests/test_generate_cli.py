"""End-to-end tests of generation through the command line: ``train`` with the ``vae`` and ``diffusion`` tasks
on a tiny training set, ``generate`` from a real UK Biobank XML, its errors, and ``bench generate``.

The training set is `write_training_set`'s random one (shared with the retrieval tests) with a
dataset.yaml that records a 50 Hz ECG standardisation, so that the exported pipeline turns the real
500 Hz XML into its 12 x 500 input; the alignment model is the retrieval tests' tiny CardiacCLIP.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
import yaml
from PIL import Image
from test_retrieval import save_tiny_clip, write_training_set

from cardiacnets.cli import main

REPO = Path(__file__).resolve().parents[1]

ECG_CONFIG = {"sampling_rate_hz": 50.0, "duration_s": 10.0, "crop": "start", "bandpass_hz": [0.5, 20.0],
              "bandpass_order": 2, "notch_hz": None, "notch_quality": 30.0, "baseline_removal": "bandpass",
              "normalization": "none", "derive_limb_leads": True}
TINY_VAE = '{image_size: 64, block_out_channels: [8, 8, 16], norm_num_groups: 4, latent_channels: 2}'
TINY_DENOISER = ('{block_out_channels: [8, 16], cross_attention_levels: [true, false], attention_head_dim: 2, '
                 'norm_num_groups: 4, cross_attention_dim: 8, condition_dim: 8, temporal_patch: 2}')
QUICK = ["data.workers=0", "logging.progress=false", "logging.tensorboard='off'", "data.batch_size=4",
         "schedule.max_steps=4", "schedule.warmup_steps=1", "val_every_steps=2", "mixed_precision='no'",
         "channels_last=false"]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
    status = main(["train", str(REPO / "configs/demo/vae.yaml"), "--out", str(runs / "vae"), f"data.path={tiny_data}",
                   f"model.overrides={TINY_VAE}", "options.scaling_subjects=4", *QUICK])
    assert status == 0
    status = main(["train", str(REPO / "configs/demo/diffusion.yaml"), "--out", str(runs / "diffusion"),
                   f"data.path={tiny_data}", f"options.vae={runs / 'vae' / 'vae'}", f"options.ecg_encoder={align}",
                   f"model.overrides={TINY_DENOISER}", f"options.cache_dir={runs / 'cache'}",
                   "options.condition_indices=[lvef_pct]", *QUICK])
    assert status == 0
    return runs


@pytest.mark.slow
def test_diffusion_run_names_an_unknown_condition_index(trained, tiny_data, tmp_path, capsys):
    status = main(["train", str(REPO / "configs/demo/diffusion.yaml"), "--out", str(tmp_path / "run"),
                   f"data.path={tiny_data}", f"options.vae={trained / 'vae' / 'vae'}",
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

    from cardiacnets.train.generation_tasks import DiffusionOptions, ridge_loo

    fit = provenance["condition_indices"]["lvef_pct"]
    cached = load_file(str(trained / "cache" / "train.safetensors"))["embedding"].double().numpy()
    ids = json.loads((trained / "cache" / "train.json").read_text())["subject_ids"]
    table = pd.read_csv(tiny_data / "manifest.csv", dtype={"subject_id": str}).set_index("subject_id").loc[ids]
    y = (table["lvef_pct"].to_numpy() - fit["mean"]) / fit["std"]
    weight, bias, penalty, _ = ridge_loo(cached, y, DiffusionOptions().index_ridge)
    assert fit["n"] == 8 and fit["penalty"] == penalty
    np.testing.assert_allclose(pipe.denoiser.index_proj.weight.detach().numpy()[0], weight, rtol=1e-4, atol=1e-6)
    assert pipe.denoiser.index_proj.bias.item() == pytest.approx(bias, abs=1e-5)
    out = pipe(0.3 * torch.randn(2, 12, 500), num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.cines.shape == (2, 4, 64, 64) and np.isfinite(out.cines).all()
    # A second run reads the cached latents instead of encoding again.
    status = main(["train", str(REPO / "configs/demo/diffusion.yaml"), "--out", str(trained / "diffusion2"),
                   f"data.path={tiny_data}", f"options.vae={trained / 'vae' / 'vae'}",
                   f"options.ecg_encoder={trained / 'align'}", f"model.overrides={TINY_DENOISER}",
                   f"options.cache_dir={trained / 'cache'}", "options.condition_indices=[lvef_pct]", *QUICK,
                   "schedule.max_steps=1"])
    assert status == 0


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
    assert (out / "std.png").is_file() and nib.load(out / "std.nii.gz").shape == (64, 64, 1, 4)
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
def test_generate_cli_errors_name_the_file(trained, tmp_path, capsys):
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
