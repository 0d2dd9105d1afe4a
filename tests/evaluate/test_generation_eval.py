"""Tests of the generation evaluation: image metrics, the Fréchet distance, scoring with a segmenter, the
nearest-neighbour and random baselines, the pipeline adapter and ``cardiacnets evaluate generation``.

Generators are stand-ins here (the true cines, the true cines plus noise, another subject's cine); the
synthetic disc cines of `test_segmenter.write_disc_set` have exact labels, and a threshold "segmenter"
labels them exactly, so the expected measurements are known.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cardiacnets.cli import main
from cardiacnets.data.store import TrainingSet
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.evaluate.generation import (
    ScoringTools, as_cines, describe_cines, evaluate_generation, frechet_distance, image_similarity,
    nearest_neighbour_generator, pipeline_generator, ReferenceCines, score_cines, write_comparisons,
    statistics_distance,
)
from cardiacnets.evaluate.segmentation import Segmenter, cavity_measurements
from cardiacnets.generation import ECGToCMRPipeline
from cardiacnets.models import create_model
from support.datasets import LABEL_INTENSITY, TINY_UNET, save_tiny_resnet_clip, write_disc_set
from support.marking import assert_gif_metadata, assert_not_marked, assert_png_metadata, has_stamp

FRAMES, SIZE = 8, 32


class ThresholdSegmenter(torch.nn.Module):
    """Labels the synthetic disc cines exactly: each pixel gets the label whose intensity is nearest."""

    def segment(self, cines: torch.Tensor, batch_frames: int = 256) -> torch.Tensor:
        levels = torch.as_tensor(LABEL_INTENSITY, dtype=cines.dtype, device=cines.device)
        return (cines[..., None] - levels).abs().argmin(dim=-1).to(torch.uint8)


@pytest.fixture(scope="module")
def disc_set(tmp_path_factory) -> Path:
    # 16 subjects: 8 train, 4 val, 4 test.
    return write_disc_set(tmp_path_factory.mktemp("gen") / "set", n=16, frames=FRAMES, size=SIZE)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny feature encoder, a tiny alignment model (ECG 12 x 500, cines 1 x 8 x 32 x 32) and a tiny segmenter."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    create_model("cmr_encoder_demo", frames=FRAMES, img_size=16, embed_dim=8).save_pretrained(root / "cmr_sa_encoder")
    save_tiny_resnet_clip(root / "align" / "model", frames=FRAMES)
    create_model("cmr_seg_unet_demo", **TINY_UNET).save_pretrained(root / "seg" / "model")
    return {"feature_encoder": root / "cmr_sa_encoder", "alignment": root / "align", "segmenter": root / "seg"}


def tools_for(models, segmenter=None) -> ScoringTools:
    from cardiacnets.models.pretrained import load_pretrained

    segmenter = segmenter or Segmenter(ThresholdSegmenter(), Path("threshold"), None)
    return ScoringTools(segmenter, load_pretrained(models["feature_encoder"]).eval(), spacing_mm=2.2)


def true_cines(disc_set, split="test") -> np.ndarray:
    dataset = TrainingSet(disc_set, split=split)
    return np.stack([dataset[i]["cmr_sa"] for i in range(len(dataset))])


# --- metrics -------------------------------------------------------------------------------------------------------

def test_image_similarity_hand_computed():
    rng = np.random.default_rng(0)
    true = rng.random((2, 1, 3, 16, 16)).astype(np.float32)
    ssim, psnr = image_similarity(true, true)
    np.testing.assert_allclose(ssim, 1.0, atol=1e-6)
    assert np.isinf(psnr).all()
    shifted = true.copy()
    shifted[0] += 0.1  # MSE 0.01 -> PSNR 20 dB
    shifted[1] = np.clip(true[1] + 0.1 * np.sign(rng.normal(size=true[1].shape)), 0, 1)
    ssim, psnr = image_similarity(shifted, true)
    assert psnr[0] == pytest.approx(20.0, abs=1e-4)
    expected_mse = float(((shifted[1] - true[1]) ** 2).mean())
    assert psnr[1] == pytest.approx(-10 * math.log10(expected_mse), abs=1e-3)
    assert 0.0 < ssim[1] < ssim[0] < 1.0  # a constant offset keeps structure; noise does not
    with pytest.raises(ValueError, match="differ in shape"):
        image_similarity(true[:1], true)


def test_frechet_distance_hand_computed():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    # Same covariance, shifted mean: the distance is the squared shift.
    assert frechet_distance(features + shift, features) == pytest.approx(float(shift @ shift), rel=1e-6)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    # Scaled by 2 around the same mean: trace(S) + trace(4 S) - 2 trace(2 S) = trace(S).
    centred = features - features.mean(axis=0)
    assert frechet_distance(2 * centred, centred) == pytest.approx(np.trace(np.cov(centred.T)), rel=1e-6)
    assert math.isnan(frechet_distance(features[:1], features))


def test_statistics_distance_hand_computed():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(300, 3)) * [1.0, 2.0, 5.0] + [0.0, 10.0, -3.0]
    same = statistics_distance(true, true)
    assert same["frechet"] == pytest.approx(0.0, abs=1e-6) and same["auroc"] == pytest.approx(0.5, abs=0.1)
    # One statistic moved by one of the true cines' SDs: 1 in standardised units, and separable.
    sd = true[:, 1].std()
    shifted = true + [0.0, sd, 0.0]
    moved = statistics_distance(shifted, true)
    assert moved["frechet"] == pytest.approx(1.0, rel=1e-6) and moved["auroc"] > 0.7
    # Named, the statistics furthest from the truth are listed first, in true SDs.
    named = statistics_distance(shifted, true, names=("a", "b", "c"), n_largest=2)
    assert named["largest_differences"][0] == {"name": "b", "d": 1.0, "sd_ratio": 1.0}
    assert len(named["largest_differences"]) == 2 and "largest_differences" not in moved
    # A statistic constant on the true cines, or measured on under half of them, is left out; a cine
    # with nothing measured counts as the true mean and is reported.
    wider = np.column_stack([true, np.ones(300), np.where(np.arange(300) < 100, 1.0, np.nan)])
    generated = np.column_stack([shifted, np.full(300, 7.0), np.full(300, 3.0)])
    generated[0] = np.nan
    result = statistics_distance(generated, wider)
    assert result["n_features"] == 3 and result["unmeasured"] == 1
    assert 0.9 < result["frechet"] < 1.0  # the unmeasured cine, at the true mean, pulls the shift in a little
    assert math.isnan(statistics_distance(true[:3], true)["auroc"])


def test_as_cines_shapes():
    assert as_cines(np.zeros((3, 8, 4, 4)), 1).shape == (3, 1, 8, 4, 4)
    assert as_cines(np.zeros((3, 2, 8, 4, 4)), 2).shape == (3, 2, 8, 4, 4)
    with pytest.raises(ValueError, match="expected"):
        as_cines(np.zeros((3, 8, 4, 4)), 2)


def test_score_cines_exact_segmenter(disc_set, models):
    tools = tools_for(models)
    true = true_cines(disc_set)
    truth = describe_cines(true, tools)
    stored = cavity_measurements(np.stack([TrainingSet(disc_set, split="test")[i]["seg_sa"] for i in range(4)]), 2.2)
    pd.testing.assert_frame_equal(truth.measurements, stored)  # the threshold segmenter is exact on these cines
    summary, per_cine = score_cines(true, truth, tools)
    assert summary["ssim"] == pytest.approx(1.0, abs=1e-6) and summary["frechet"] == pytest.approx(0.0, abs=1e-6)
    assert summary["frechet_statistics"] == pytest.approx(0.0, abs=1e-4) and summary["statistics"]["n_features"] > 10
    assert summary["lvedv_r"] == pytest.approx(1.0) and summary["lvedv_mae_ml"] == 0.0 and summary["n"] == 4
    # Another subject's cine (rolled by one): the MAE is the mean gap between neighbours' measurements.
    summary, per_cine = score_cines(np.roll(true, 1, axis=0), truth, tools)
    lvedv = stored["lvedv_ml"].to_numpy()
    assert summary["lvedv_mae_ml"] == pytest.approx(np.abs(np.roll(lvedv, 1) - lvedv).mean())
    assert summary["lvedv_r"] == pytest.approx(np.corrcoef(np.roll(lvedv, 1), lvedv)[0, 1])
    np.testing.assert_allclose(per_cine["generated_lvedv_ml"], np.roll(lvedv, 1))
    assert set(per_cine.columns) >= {"ssim", "psnr", "true_lvef_pct", "generated_lvef_pct", "generated_failure"}
    # A blank cine cannot be measured: it is listed and left out of r and MAE.
    blank = np.roll(true, 1, axis=0)
    blank[0] = 0.0
    summary, per_cine = score_cines(blank, truth, tools)
    assert summary["n_unmeasured"] == 1 and summary["measured"]["lvedv_ml"]["n"] == 3
    assert "no LV cavity" in per_cine["generated_failure"].iloc[0]


# --- generators ----------------------------------------------------------------------------------------------------

def test_nearest_neighbour_is_the_closest_aligned_ecg(disc_set, models):
    from cardiacnets.evaluate.embeddings import collate_samples, load_alignment_model

    reference = ReferenceCines(disc_set, "train", "sa")
    queries = TrainingSet(disc_set, split="test", require=("ecg", "sa"))
    generate, info = nearest_neighbour_generator(models["alignment"], reference, queries)
    batch = collate_samples([{**queries[i], "index": i} for i in range(len(queries))])
    cines = generate(batch)
    clip, _ = load_alignment_model(models["alignment"])
    with torch.no_grad():
        encode = lambda ds: clip.encode_ecg(collate_samples([ds[i] for i in range(len(ds))])).numpy()  # noqa: E731
        expected = (encode(queries) @ encode(reference.dataset).T).argmax(axis=1)
    np.testing.assert_array_equal(cines, np.stack([reference.dataset[int(r)]["cmr_sa"] for r in expected]))
    assert info["matches"] == {i: reference.dataset.manifest["subject_id"].iloc[r] for i, r in enumerate(expected)}


def test_pipeline_generator_passes_the_sampling_settings():
    calls = []

    class FakePipe:
        def __call__(self, **kwargs):
            calls.append(kwargs)
            noise = torch.rand(len(kwargs["ecg"]), FRAMES, SIZE, SIZE, generator=kwargs["generator"])
            return type("Output", (), {"cines": noise.numpy()})()

    generate = pipeline_generator(FakePipe(), num_inference_steps=7, guidance_scale=2.5, seed=3, scheduler="ddim")
    batch = {"ecg": torch.zeros(2, 12, 500), "ecg_lead_mask": torch.ones(2, 12, dtype=torch.bool)}
    first, second = generate(batch), generate(batch)
    assert first.shape == (2, FRAMES, SIZE, SIZE) and not np.array_equal(first, second)  # the generator advances
    assert calls[0]["num_inference_steps"] == 7 and calls[0]["guidance_scale"] == 2.5
    assert calls[0]["scheduler"] == "ddim" and calls[0]["num_samples_per_ecg"] == 1 and calls[0]["demographics"] is None
    assert calls[0]["lead_mask"] is batch["ecg_lead_mask"]
    pipeline_generator(FakePipe(), n_samples=3)(batch)
    assert calls[-1]["num_samples_per_ecg"] == 3
    again = pipeline_generator(FakePipe(), seed=3)(batch)
    np.testing.assert_array_equal(again, first)  # same seed, same noise


# --- the evaluation ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluate_generation_with_a_noisy_oracle_and_baselines(disc_set, models, tmp_path):
    rng = np.random.default_rng(0)

    def noisy_truth(batch):  # the true cine plus noise: better than any real-cine baseline
        cines = batch["cmr_sa"].numpy()[:, 0]
        return cines + rng.normal(scale=0.03, size=cines.shape).astype(np.float32)

    segmenter = Segmenter(ThresholdSegmenter(), Path("threshold"), None)
    result = evaluate_generation(None, disc_set, "test", segmenter=segmenter, generate_batch=noisy_truth,
                                 feature_encoder=models["feature_encoder"], alignment=models["alignment"],
                                 batch_size=3, out_dir=tmp_path / "out", n_examples=2)
    for block in (result, result["nn_baseline"], result["random_baseline"], result["knn5_baseline"],
                  result["rendered_readout"]):
        assert {"ssim", "psnr", "frechet", "frechet_statistics", "statistics", "lvedv_r", "lvef_r", "lvedv_mae_ml",
                "lvef_mae_pct", "n", "temporal"} <= set(block)
    # Image statistics are measured for every method (these 4 test subjects are too few for the classifier).
    for block in (result, result["nn_baseline"], result["rendered_readout"]):
        assert np.isfinite(block["frechet_statistics"]) and block["statistics"]["n_features"] > 10
        assert block["statistics"]["largest_differences"][0]["name"].startswith(("ed_", "es_"))
        assert math.isnan(block["statistics"]["auroc"])
    # The Fréchet features here are a separate encoder, not the alignment model the nearest neighbour retrieves in.
    assert not any("low by construction" in note for note in result["notes"])
    # The noisy oracle moves like the truth; the drawn anatomy of the rendered read-out follows the
    # training set's mean cycle, one contraction per cine.
    assert result["temporal"]["lv_curve_r"] > 0.95 and result["temporal"]["one_cycle"] == 1.0
    assert result["rendered_readout"]["anatomy"]["validity"]["one_cycle"] == 1.0
    assert result["rendered_readout"]["anatomy"]["dice_vs_segmented_cine"]["lv_cavity"] > 0.9
    assert result["rendered_readout"]["method"]["features"] == ["sex_male", "age_years"]  # no measurements here
    assert result["rendered_readout"]["method"]["correction_hidden"] == 32  # ridge + the read-out's MLP correction
    assert result["n"] == 4 and result["settings"]["batch_size"] == 3
    assert result["ssim"] > result["nn_baseline"]["ssim"] and result["psnr"] > result["nn_baseline"]["psnr"]
    assert result["lvedv_r"] == pytest.approx(1.0, abs=1e-3) and result["lvedv_mae_ml"] < 0.5
    assert result["vs_ground_truth"]["true_cine"]["lvedv_ml"] == pytest.approx(1.0)
    assert set(result["timing"]) >= {"generator_seconds", "generator_seconds_per_cine", "nn_baseline_seconds",
                                     "scoring_seconds", "total_seconds", "nn_embed_seconds"}
    assert result["segmenter"]["acdc_dice"] is None and any("ACDC" in note for note in result["notes"])
    out = tmp_path / "out"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["lvedv_r"] == pytest.approx(result["lvedv_r"])
    table = pd.read_csv(out / "per_subject.csv", dtype={"subject_id": str, "nn_subject_id": str})
    assert sorted(table["method"].unique()) == ["generator", "knn5_baseline", "nn_baseline", "random_baseline",
                                                "rendered_readout"] and len(table) == 20
    nn_rows = table[table["method"] == "nn_baseline"]
    train_ids = set(TrainingSet(disc_set, split="train").manifest["subject_id"])
    assert set(nn_rows["nn_subject_id"]) <= train_ids
    gif = Image.open(next(out.glob("compare_*.gif")))
    # true, generator, nearest neighbour, rendered read-out side by side, scale 2
    assert gif.n_frames == FRAMES and gif.size == (2 * SIZE * 4, 2 * SIZE)
    assert Image.open(next(out.glob("compare_*.png"))).size == (2 * SIZE * FRAMES, 2 * SIZE * 4)
    # The generated panels (generator, rendered read-out) are stamped, the true and retrieved cines not.
    assert _stamped_panels(out, 2 * SIZE, n_rows=4) == [False, True, False, True]


def _stamped_panels(out: Path, panel: int, n_rows: int) -> list[bool]:
    """Which rows (PNG) / panels (GIF) of every comparison carry the SYNTHETIC label, read back from disk."""
    seen = set()
    for path in out.glob("compare_*.gif"):
        for frame in assert_gif_metadata(path):
            seen.add(tuple(has_stamp(frame[:, m * panel:(m + 1) * panel]) for m in range(n_rows)))
    for path in out.glob("compare_*.png"):
        strip = assert_png_metadata(path)
        for k in range(strip.shape[1] // panel):
            seen.add(tuple(has_stamp(strip[m * panel:(m + 1) * panel, k * panel:(k + 1) * panel])
                           for m in range(n_rows)))
    assert len(seen) == 1, seen  # every frame of every file alike
    return list(seen.pop())


def test_comparison_pictures_mark_the_generated_panels(tmp_path):
    true = np.random.default_rng(0).random((2, 1, 3, 32, 32)).astype(np.float32)  # (N, slices, frames, H, W)
    written = write_comparisons(tmp_path, true, {"generator": true * 0.9, "nn_baseline": true[::-1]}, ["a", "b"],
                                n_strip_frames=3)
    assert sorted(p.name for p in written) == ["compare_a.gif", "compare_a.png", "compare_b.gif", "compare_b.png",
                                               "compare_legend.txt"]
    assert _stamped_panels(tmp_path, 64, n_rows=3) == [False, True, False]
    assert "SYNTHETIC" in (tmp_path / "compare_legend.txt").read_text()
    real_only = tmp_path / "real"
    real_only.mkdir()
    for path in write_comparisons(real_only, true, {"nn_baseline": true[::-1]}, ["a", "b"])[:-1]:
        assert_not_marked(path)


@pytest.mark.slow
def test_evaluate_generation_cli_baselines_and_errors(disc_set, models, tmp_path, capsys):
    common = ["evaluate", "generation", "--data", str(disc_set), "--segmenter", str(models["segmenter"])]
    status = main([*common, "--baselines-only", "--feature-encoder", str(models["feature_encoder"]),
                   "--alignment", str(models["alignment"]), "--limit", "3", "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(captured.out)
    assert "ssim" not in result and result["nn_baseline"]["n"] == 3 and result["n"] == 3
    assert result["model"] is None and result["settings"]["limit"] == 3
    status = main([*common, "--baselines-only", "--feature-encoder", str(models["feature_encoder"]),
                   "--alignment", str(models["alignment"]), "--limit", "2"])
    text = capsys.readouterr().out
    assert status == 0 and "nn baseline" in text and "lvedv_r" in text

    def error(*args) -> str:
        assert main([*common, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cardiacnets evaluate: error: ")
        return err[0]

    assert "--model DIR" in error()
    assert "--feature-encoder" in error("--baselines-only", "--alignment", str(models["alignment"]))
    assert "--alignment" in error("--baselines-only", "--feature-encoder", str(models["feature_encoder"]))
    assert "no split 'nope'" in error("--baselines-only", "--split", "nope", "--alignment", str(models["alignment"]),
                                      "--feature-encoder", str(models["feature_encoder"]))
    assert "must differ" in error("--baselines-only", "--split", "train", "--alignment", str(models["alignment"]),
                                  "--feature-encoder", str(models["feature_encoder"]))
    assert "no such pipeline folder" in error("--model", str(tmp_path / "nowhere"), "--no-baselines",
                                              "--feature-encoder", str(models["feature_encoder"]))
    assert "not a CMR encoder" in error("--baselines-only", "--feature-encoder", str(models["segmenter"] / "model"),
                                        "--alignment", str(models["alignment"]))


def test_evaluate_generation_scores_several_samples_per_ecg(disc_set, models):
    # Two samples per ECG (consecutive): the subject's own cine, then its neighbour's (rolled by one).
    def two_samples(batch):
        cines = batch["cmr_sa"].numpy()[:, 0]
        return np.stack([cines, np.roll(cines, 1, axis=0)], axis=1).reshape(-1, *cines.shape[1:])

    segmenter = Segmenter(ThresholdSegmenter(), Path("threshold"), None)
    result = evaluate_generation(None, disc_set, "test", segmenter=segmenter, generate_batch=two_samples,
                                 feature_encoder=models["feature_encoder"], baselines=False, batch_size=4,
                                 n_samples=2)
    lvedv = cavity_measurements(np.stack([TrainingSet(disc_set, split="test")[i]["seg_sa"] for i in range(4)]),
                                2.2)["lvedv_ml"].to_numpy()
    neighbour = np.roll(lvedv, 1)
    # The top level is the first sample's (the true cines); "samples" takes both together.
    assert result["lvedv_r"] == pytest.approx(1.0) and result["settings"]["n_samples"] == 2
    samples = result["samples"]
    assert samples["n_samples"] == 2
    assert samples["per_sample"]["lvedv_r"] == pytest.approx([1.0, np.corrcoef(neighbour, lvedv)[0, 1]])
    mean = (lvedv + neighbour) / 2
    assert samples["mean_of_samples"]["lvedv_r"] == pytest.approx(np.corrcoef(mean, lvedv)[0, 1])
    assert samples["mean_of_samples"]["lvedv_mae_ml"] == pytest.approx(np.abs(mean - lvedv).mean())
    assert samples["spread"]["lvedv_sd_ml"] == pytest.approx(np.mean(np.abs(lvedv - neighbour) / np.sqrt(2)))
    with pytest.raises(InputError, match="2 per ECG expected"):
        evaluate_generation(None, disc_set, "test", segmenter=segmenter, baselines=False, n_samples=2,
                            generate_batch=lambda batch: batch["cmr_sa"].numpy()[:, 0],
                            feature_encoder=models["feature_encoder"])
    with pytest.raises(ConfigError, match="--n-samples"):
        evaluate_generation(None, disc_set, "test", segmenter=segmenter, baselines=False, n_samples=0,
                            generate_batch=two_samples, feature_encoder=models["feature_encoder"])


def test_evaluate_generation_rejects_cines_of_the_wrong_shape(disc_set, models):
    segmenter = Segmenter(ThresholdSegmenter(), Path("threshold"), None)
    with pytest.raises(InputError, match="shape"):
        evaluate_generation(None, disc_set, "test", segmenter=segmenter, baselines=False,
                            generate_batch=lambda batch: np.zeros((len(batch["index"]), FRAMES, 16, 16), np.float32),
                            feature_encoder=models["feature_encoder"])
    with pytest.raises(ConfigError, match="at least 1"):
        evaluate_generation(None, disc_set, "test", segmenter=segmenter, baselines=False, limit=0,
                            generate_batch=lambda batch: None, feature_encoder=models["feature_encoder"])


@pytest.mark.slow
def test_evaluate_generation_of_a_saved_pipeline_reads_its_provenance(disc_set, models, tmp_path, capsys):
    # An untrained demo pipeline at tiny size (ECG 12 x 500, 8 frames of 32 x 32), saved as the diffusion
    # task exports it: its provenance names the feature encoder and the alignment run of the baseline.
    from cardiacnets.generation.zoo import untrained_pipeline

    pipe = untrained_pipeline(
        ecg_encoder_overrides={"n_samples": 500, "stem_width": 8, "widths": [8, 16], "blocks": [1, 1],
                               "embed_dim": 8},
        vae_overrides={"image_size": SIZE, "block_out_channels": [8, 16], "norm_num_groups": 4, "latent_channels": 2},
        denoiser_overrides={"block_out_channels": [8, 16], "cross_attention_levels": [True, False],
                            "attention_head_dim": 2, "norm_num_groups": 4, "cross_attention_dim": 8,
                            "condition_dim": 8, "n_condition_indices": 2},
        num_frames=FRAMES, ecg_config={"sampling_rate_hz": 50.0, "duration_s": 10.0})
    # A read-out the cines are generated for (what the diffusion task fits by ridge): lvedv and lvm.
    pipe.register_to_config(condition_indices=[{"name": "lvedv_ml", "mean": 100.0, "std": 20.0},
                                               {"name": "lvm_g", "mean": 80.0, "std": 10.0}])
    pipe.denoiser.set_index_projection(torch.randn(2, 8, generator=torch.Generator().manual_seed(0)),
                                       torch.tensor([0.5, -0.5]))
    pipe.save_pretrained(tmp_path / "pipeline", safe_serialization=True)
    (tmp_path / "pipeline" / "provenance.json").write_text(json.dumps(
        {"feature_encoder": str(models["feature_encoder"]), "alignment_run": str(models["alignment"])}))
    status = main(["evaluate", "generation", "--model", str(tmp_path / "pipeline"), "--data", str(disc_set),
                   "--segmenter", str(models["segmenter"]), "--limit", "2", "--steps", "2", "--guidance", "2.0",
                   "--seed", "5", "--json", "--out", str(tmp_path / "eval")])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(captured.out)
    assert result["n"] == 2 and result["model"] == str(tmp_path / "pipeline")
    assert {"ssim", "psnr", "frechet", "lvedv_r", "lvef_r", "lvedv_mae_ml"} <= set(result)
    assert {"ssim", "psnr", "lvedv_mae_ml"} <= set(result["nn_baseline"])
    settings = result["settings"]
    assert settings["steps"] == 2 and settings["guidance"] == 2.0 and settings["seed"] == 5
    assert result["settings"]["feature_encoder"] == str(models["feature_encoder"])
    assert result["nn_baseline"]["alignment_model"] == str(models["alignment"] / "model")
    assert result["timing"]["generator_seconds_per_cine"] > 0
    assert (tmp_path / "eval" / "metrics.json").is_file()
    # The read-out's estimates for each subject are recorded, and how far the cines follow them.
    assert set(result["condition"]) == {"generated_vs_condition", "condition_vs_true_cine"}
    assert set(result["condition"]["generated_vs_condition"]) == {"lvedv_ml", "lvm_g"}
    table = pd.read_csv(tmp_path / "eval" / "per_subject.csv", dtype={"subject_id": str})
    generator_rows = table[table["method"] == "generator"]
    dataset = TrainingSet(disc_set, split="test")
    ecg = torch.from_numpy(np.stack([dataset[i]["ecg"] for i in range(2)]))
    saved = ECGToCMRPipeline.from_pretrained(tmp_path / "pipeline")
    expected = saved.estimate_indices(saved.encode_ecg(ecg))
    np.testing.assert_allclose(generator_rows["condition_lvedv_ml"], expected["lvedv_ml"], rtol=1e-5)
    np.testing.assert_allclose(generator_rows["condition_lvm_g"], expected["lvm_g"], rtol=1e-5)


def test_condition_following_hand_computed():
    from cardiacnets.evaluate.generation import condition_following

    generated = pd.DataFrame({"lvedv_ml": [100.0, 120.0, 140.0, 130.0], "lvm_g": [1.0, 2.0, 3.0, 4.0]})
    condition = pd.DataFrame({"lvedv_ml": [110.0, 120.0, 130.0, 140.0], "extra": [0.0] * 4})
    true = pd.DataFrame({"lvedv_ml": [140.0, 130.0, 120.0, 110.0], "lvm_g": [4.0, 3.0, 2.0, 1.0]})
    result = condition_following(generated, condition, true)
    assert set(result["generated_vs_condition"]) == {"lvedv_ml"}  # only indices the read-out has and images show
    assert result["generated_vs_condition"]["lvedv_ml"] == pytest.approx(
        np.corrcoef([100, 120, 140, 130], [110, 120, 130, 140])[0, 1])
    assert result["condition_vs_true_cine"]["lvedv_ml"] == pytest.approx(-1.0)


def test_rendered_readout_noise_is_the_pixel_noise_not_the_pools_texture():
    from cardiacnets.evaluate.generation_baselines import image_noise_sd

    rng = np.random.default_rng(0)
    labels = np.zeros((30, 32, 32), np.uint8)
    labels[:, 4:28, 4:28] = 1
    flat = 0.6 + rng.normal(scale=0.03, size=labels.shape)
    assert image_noise_sd(flat, labels) == pytest.approx(0.03, rel=0.05)
    # Slow texture (a ramp and a wide bump) without noise: the pool's spread is large, its pixel noise is nil.
    y, x = np.mgrid[0:32, 0:32] / 32.0
    textured = np.broadcast_to(0.4 + 0.3 * x + 0.2 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.05),
                               labels.shape)
    assert textured[labels == 1].std() > 0.08 and image_noise_sd(textured, labels) < 0.005
    # Tissue edges outside the (eroded) pool do not count.
    edged = flat.copy()
    edged[labels == 0] = 0.0
    assert image_noise_sd(edged, labels) == pytest.approx(0.03, rel=0.05)
    assert image_noise_sd(flat, np.zeros_like(labels)) == 0.0  # no pool: no estimate
