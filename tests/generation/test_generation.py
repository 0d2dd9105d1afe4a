"""Tests of the generation models and pipeline: autoencoder helpers, the denoiser's condition and patching,
`ECGToCMRPipeline` (round trip, seeds, guidance, samplers, input checks), the output files and the
paper-scale models on the meta device.

The models are the registered ones at tiny widths (`tiny_pipeline`); nothing is trained here
(the training stages and the command line are in ``test_generate_cli.py``).
"""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from cardiacnets.config import load_config
from cardiacnets.errors import ConfigError
from cardiacnets.generation import ECGToCMRPipeline
from cardiacnets.generation.outputs import cine_image, sha256_of, write_generation_outputs
from cardiacnets.generation.vae import decode_latents, encode_cines, scaling_factor_of, vae_losses
from cardiacnets.generation.zoo import parameter_counts, untrained_pipeline
from cardiacnets.models import create_model

from support import REPO_ROOT

TINY_ENCODER = {"n_samples": 500, "stem_width": 8, "widths": [8, 16], "blocks": [1, 1], "embed_dim": 8}
TINY_VAE = {"image_size": 16, "block_out_channels": [8, 16], "norm_num_groups": 4, "latent_channels": 2}
TINY_DENOISER = {"block_out_channels": [8, 16], "cross_attention_levels": [True, False], "attention_head_dim": 2,
                 "norm_num_groups": 4, "cross_attention_dim": 8, "condition_dim": 8}
#: The ECG standardisation of the tiny pipelines: 10 s at 50 Hz (500 samples).
TINY_ECG_CONFIG = {"sampling_rate_hz": 50.0, "duration_s": 10.0, "bandpass_hz": [0.5, 20.0], "notch_hz": None}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_pipeline(num_frames: int = 5, **denoiser) -> ECGToCMRPipeline:
    """An untrained pipeline: ResNet ECG encoder (12 x 500), 16 x 16 frames -> 2 x 8 x 8 latents."""
    return untrained_pipeline(ecg_encoder_overrides=TINY_ENCODER, projection_dim=6, vae_overrides=TINY_VAE,
                              denoiser_overrides={**TINY_DENOISER, **denoiser}, num_frames=num_frames,
                              ecg_config=TINY_ECG_CONFIG, seed=0)


def ecgs(batch: int, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(batch, 12, 500, generator=torch.Generator().manual_seed(seed))


# --- autoencoder ---------------------------------------------------------------------------------------------------

def test_vae_encode_decode_shapes_and_scaling():
    vae = create_model("cmr_vae_demo", **TINY_VAE).eval()
    cines = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        latents = encode_cines(vae, cines)
        assert latents.shape == (2, 2, 3, 8, 8)
        assert decode_latents(vae, latents).shape == (2, 3, 16, 16)
        # The scaling factor multiplies the latents and is divided out before decoding.
        vae.register_to_config(scaling_factor=2.0)
        torch.testing.assert_close(encode_cines(vae, cines), 2.0 * latents)
    assert scaling_factor_of(torch.tensor([1.0, -1.0, 3.0, -3.0])) == pytest.approx(1 / np.std([1, -1, 3, -3], ddof=1))
    with pytest.raises(ValueError, match="scaling factor"):
        scaling_factor_of(torch.ones(4))
    terms = vae_losses(vae, torch.rand(3, 1, 16, 16), kl_weight=0.5, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"loss_recon_l1", "loss_kl"} and all(v.ndim == 0 for v in terms.values())
    assert vae_losses(vae, torch.rand(3, 1, 16, 16), kl_weight=0.0)["loss_kl"] == 0


def test_vae_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        create_model("cmr_vae_demo", image_size=30)
    with pytest.raises(ConfigError, match="norm_num_groups"):
        create_model("cmr_vae_demo", block_out_channels=[12, 24, 48])


# --- denoiser ------------------------------------------------------------------------------------------------------

def test_patchify_round_trip_with_cyclic_frame_padding():
    denoiser = tiny_pipeline(num_frames=5, temporal_patch=2, spatial_patch=2).denoiser
    latents = torch.randn(2, 2, 5, 8, 8)
    patched = denoiser.patchify(latents)
    assert patched.shape == (2, 2 * 2 * 2 * 2, 3, 4, 4)  # 5 frames padded to 6, folded in pairs; 2 x 2 pixels
    padded = denoiser.unpatchify(patched, 6)
    torch.testing.assert_close(padded[:, :, :5], latents)
    torch.testing.assert_close(padded[:, :, 5], latents[:, :, 0])  # the frame after the last is the first
    torch.testing.assert_close(denoiser.unpatchify(patched, 5), latents)


def test_null_condition_ignores_the_ecg_and_demographics_enter():
    denoiser = tiny_pipeline(n_demographics=2).denoiser.eval()
    inputs = denoiser.example_inputs(2, torch.Generator().manual_seed(0))
    other = {**inputs, "ecg_tokens": torch.randn_like(inputs["ecg_tokens"]),
             "ecg_embedding": torch.randn_like(inputs["ecg_embedding"])}
    with torch.no_grad():
        conditional = denoiser(**inputs).sample
        assert conditional.shape == inputs["sample"].shape
        assert not torch.allclose(conditional, denoiser(**other).sample)
        drop = torch.tensor([True, False])
        a, b = denoiser(**inputs, drop_condition=drop).sample, denoiser(**other, drop_condition=drop).sample
        torch.testing.assert_close(a[0], b[0])  # dropped: the same whatever the ECG
        assert not torch.allclose(a[1], b[1])
        missing = denoiser(**{**inputs, "demographics_mask": torch.zeros(2, 2, dtype=torch.bool)}).sample
        assert not torch.allclose(missing, conditional)  # "missing" differs from the values given
        with pytest.raises(ValueError, match="ecg_embedding"):
            denoiser(**{**inputs, "ecg_embedding": torch.randn(2, 3)})
        with pytest.raises(ValueError, match="sample must be"):
            denoiser(**{**inputs, "sample": torch.randn(2, 2, 5, 6, 6)})


def test_index_projection_is_frozen_and_steers_only_the_conditional_branch():
    denoiser = tiny_pipeline(n_condition_indices=2).denoiser.eval()
    assert not denoiser.index_proj.weight.requires_grad and not denoiser.index_proj.bias.requires_grad
    inputs = denoiser.example_inputs(2, torch.Generator().manual_seed(1))
    drop = torch.tensor([False, True])
    with torch.no_grad():
        before = denoiser(**inputs, drop_condition=drop).sample
        denoiser.set_index_projection(torch.full((2, denoiser.config.ecg_embed_dim), 0.5), torch.tensor([1.0, -1.0]))
        after = denoiser(**inputs, drop_condition=drop).sample
    assert not torch.allclose(before[0], after[0])  # the conditional sample sees the read-out
    torch.testing.assert_close(before[1], after[1])  # the null condition does not
    with pytest.raises(ValueError, match="index projection must be"):
        denoiser.set_index_projection(torch.zeros(3, denoiser.config.ecg_embed_dim), torch.zeros(3))
    with pytest.raises(ValueError, match="no index projection"):
        tiny_pipeline().denoiser.set_index_projection(torch.zeros(1, 4), torch.zeros(1))


def test_index_values_replace_the_read_out_where_finite():
    denoiser = tiny_pipeline(n_condition_indices=2).denoiser.eval()
    denoiser.set_index_projection(torch.full((2, denoiser.config.ecg_embed_dim), 0.5), torch.tensor([1.0, -1.0]))
    inputs = denoiser.example_inputs(2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        read_out = denoiser.predict_indices(inputs["ecg_embedding"])
        torch.testing.assert_close(read_out, 0.5 * inputs["ecg_embedding"].sum(1, keepdim=True)
                                   + torch.tensor([1.0, -1.0]))
        base = denoiser(**inputs).sample
        same = denoiser(**inputs, index_values=read_out.clone()).sample
        kept = denoiser(**inputs, index_values=torch.full((2, 2), float("nan"))).sample
        teacher = read_out.clone()
        teacher[0, 0] += 3.0  # only the first sample's first index is replaced
        taught = denoiser(**inputs, index_values=torch.where(teacher == read_out, float("nan"), teacher)).sample
    torch.testing.assert_close(same, base)
    torch.testing.assert_close(kept, base)
    assert not torch.allclose(taught[0], base[0])
    torch.testing.assert_close(taught[1], base[1])
    with pytest.raises(ValueError, match="index_values must be"):
        denoiser(**inputs, index_values=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no condition indices"):
        plain = tiny_pipeline().denoiser
        plain(**plain.example_inputs(2), index_values=torch.zeros(2, 1))


def test_index_read_out_sees_demographics_with_missing_ones_at_the_mean():
    denoiser = tiny_pipeline(n_condition_indices=1, n_demographics=2).denoiser.eval()
    e = denoiser.config.ecg_embed_dim
    assert denoiser.index_proj.weight.shape == (1, e + 2)
    denoiser.set_index_projection(torch.cat([torch.zeros(1, e), torch.tensor([[2.0, -1.0]])], 1), torch.tensor([0.5]))
    embedding, demographics = torch.randn(2, e), torch.tensor([[1.0, 3.0], [1.0, 3.0]])
    mask = torch.tensor([[True, True], [True, False]])
    with torch.no_grad():
        out = denoiser.predict_indices(embedding, demographics, mask)
        unknown = denoiser.predict_indices(embedding)
    torch.testing.assert_close(out, torch.tensor([[2.0 - 3.0 + 0.5], [2.0 + 0.5]]))  # hand-computed
    torch.testing.assert_close(unknown, torch.full((2, 1), 0.5))


def test_index_features_hand_computed_and_in_the_read_out():
    from cardiacnets.generation.denoiser import index_feature_dim, index_features

    tokens = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])  # (1, 2 tokens, width 2): mean (2, 4)
    embedding, demographics = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[2.0, 3.0]])
    names = ("embedding", "token_mean", "demographics", "demographic_products", "embedding_x_demographics")
    out = index_features(names, tokens, embedding, demographics)
    expected = [0.5, -1.0, 2.0, 2.0, 4.0, 2.0, 3.0, 4.0, 6.0, 9.0, 1.0, 1.5, -2.0, -3.0, 4.0, 6.0]
    torch.testing.assert_close(out, torch.tensor([expected]))
    assert index_feature_dim(names, 3, 2, 2) == len(expected)
    with pytest.raises(ValueError, match="ecg_tokens"):
        index_features(("token_mean",), None, embedding, None)
    # A denoiser reading out of the mean token: its estimate follows the tokens, not the embedding.
    denoiser = tiny_pipeline(n_condition_indices=1, index_features=("token_mean",)).denoiser.eval()
    width = denoiser.config.ecg_token_dim
    assert denoiser.index_proj.weight.shape == (1, width)
    denoiser.set_index_projection(torch.ones(1, width), torch.zeros(1))
    tokens = torch.randn(2, 3, width)
    with torch.no_grad():
        estimate = denoiser.predict_indices(torch.randn(2, denoiser.config.ecg_embed_dim), ecg_tokens=tokens)
    torch.testing.assert_close(estimate[:, 0], tokens.mean(dim=1).sum(dim=1))
    with pytest.raises(ConfigError, match="need demographics"):
        tiny_pipeline(n_condition_indices=1, index_features=("embedding", "demographic_products"))
    with pytest.raises(ConfigError, match="distinct names"):
        tiny_pipeline(n_condition_indices=1, index_features=("embedding", "tokens"))


def test_pipeline_demographics_and_index_estimates_in_units():
    pipe = tiny_pipeline(n_condition_indices=1, n_demographics=2)
    pipe.register_to_config(demographics={"columns": ["age_years", "sex_male"], "mean": [60.0, 0.5], "std": [8.0, 0.5]},
                            condition_indices=[{"name": "lvedv_ml", "mean": 150.0, "std": 40.0}])
    e = pipe.denoiser.config.ecg_embed_dim
    pipe.denoiser.set_index_projection(torch.cat([torch.zeros(1, e), torch.tensor([[0.5, 1.0]])], 1),
                                       torch.tensor([0.25]))
    z, mask, report = pipe.demographics_from({"age_years": 1, "sex_male": True, "bmi": 30})
    assert mask.tolist() == [[False, True]] and z.tolist() == [[0.0, 1.0]]
    assert report["used"] == {"sex_male": 1.0} and "implausible" in report["ignored"]["age_years"]
    assert "-7.4 SD" in report["ignored"]["age_years"]  # (1 - 60) / 8
    z, mask, report = pipe.demographics_from({"age_years": "72", "sex_male": None})
    assert z.tolist() == [[1.5, 0.0]] and mask.tolist() == [[True, False]]
    assert report["ignored"] == {"sex_male": "not given"}
    condition = pipe.encode_ecg(ecgs(1), demographics=z, demographics_mask=mask)
    estimates = pipe.estimate_indices(condition)
    assert list(estimates) == ["lvedv_ml"]
    assert estimates["lvedv_ml"][0] == pytest.approx((0.5 * 1.5 + 0.25) * 40.0 + 150.0, rel=1e-5)  # 190 ml
    assert tiny_pipeline().estimate_indices(condition) == {}
    assert tiny_pipeline().demographics_from({"age_years": 60})[0] is None
    # The pipeline returns the estimates its cines were generated for, one per ECG (not per sample).
    out = pipe(ecgs(1), demographics=z, demographics_mask=mask, num_inference_steps=2, num_samples_per_ecg=2)
    assert out.cines.shape[0] == 2 and list(out.index_estimates) == ["lvedv_ml"]
    np.testing.assert_allclose(out.index_estimates["lvedv_ml"], estimates["lvedv_ml"], rtol=1e-6)
    cines, as_tuple = pipe(ecgs(1), demographics=z, demographics_mask=mask, num_inference_steps=2,
                           generator=torch.Generator().manual_seed(0), return_dict=False)
    np.testing.assert_allclose(as_tuple["lvedv_ml"], estimates["lvedv_ml"], rtol=1e-6)
    assert tiny_pipeline()(ecgs(1), num_inference_steps=1).index_estimates == {}


def test_ridge_loo_matches_refitting_without_each_row():
    from cardiacnets.generation.readout import ridge_loo

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = x @ np.array([1.0, 0.0, -2.0, 0.5]) + 0.5 * rng.normal(size=30) + 3.0

    def fit(xx, yy, penalty):
        xm, ym = xx.mean(axis=0), yy.mean()
        w = np.linalg.solve((xx - xm).T @ (xx - xm) + penalty * np.eye(4), (xx - xm).T @ (yy - ym))
        return w, ym - xm @ w

    def loo_error(penalty):
        errors = []
        for i in range(30):
            keep = np.arange(30) != i
            w, b = fit(x[keep], y[keep], penalty)
            errors.append((y[i] - x[i] @ w - b) ** 2)
        return np.mean(errors)

    penalties = [0.1, 10.0, 1000.0]
    weight, bias, penalty, loo_r2 = ridge_loo(x, y, penalties)
    assert penalty == min(penalties, key=loo_error)
    assert loo_r2 == pytest.approx(1 - loo_error(penalty) / np.var(y))
    w, b = fit(x, y, penalty)
    np.testing.assert_allclose(weight, w, atol=1e-10)
    assert bias == pytest.approx(b)


def test_timestep_bias_shifts_training_steps_towards_noise():
    from cardiacnets.generation.diffusion import sample_timesteps

    uniform = sample_timesteps(20000, 1000, 0.0, torch.Generator().manual_seed(0))
    biased = sample_timesteps(20000, 1000, 1.0, torch.Generator().manual_seed(0))
    for t in (uniform, biased):
        assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) <= 999
    assert float(uniform.double().mean()) == pytest.approx(499.5, abs=10)
    # density 2x on [0, 1): mean 2/3 of T, a quarter of the draws below T/2
    assert float(biased.double().mean()) == pytest.approx(666.7, abs=10)
    assert float((biased < 500).double().mean()) == pytest.approx(0.25, abs=0.02)


def test_denoiser_config_errors():
    with pytest.raises(ConfigError, match="cross_attention_levels"):
        create_model("cine_unet3d_demo", cross_attention_levels=[True])
    with pytest.raises(ConfigError, match="latent_size"):
        create_model("cine_unet3d_demo", latent_size=12, spatial_patch=2, block_out_channels=[16, 32, 32],
                     cross_attention_levels=[True, True, False])


# --- pipeline ------------------------------------------------------------------------------------------------------

def test_pipeline_output_round_trip_and_seeds(tmp_path):
    pipe = tiny_pipeline()
    kwargs = dict(num_inference_steps=3, guidance_scale=2.0)
    out = pipe(ecgs(2), generator=torch.Generator().manual_seed(0), num_samples_per_ecg=2, **kwargs).cines
    assert out.shape == (4, 5, 16, 16) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    pipe.save_pretrained(tmp_path / "pipe")
    assert {p.name for p in (tmp_path / "pipe").iterdir()} >= {"model_index.json", "condition_encoder", "denoiser",
                                                                "vae", "scheduler"}
    loaded = ECGToCMRPipeline.from_pretrained(tmp_path / "pipe")
    again = loaded(ecgs(2), generator=torch.Generator().manual_seed(0), num_samples_per_ecg=2, **kwargs).cines
    np.testing.assert_array_equal(again, out)
    assert (loaded.view, loaded.spacing_mm, loaded.frame_interval_ms) == ("sa", 2.2, 40.0)
    assert loaded.ecg_config == TINY_ECG_CONFIG
    other_seed = loaded(ecgs(2), generator=torch.Generator().manual_seed(1), num_samples_per_ecg=2, **kwargs).cines
    assert not np.allclose(other_seed, out)
    assert not np.allclose(out[0], out[1])  # two samples of one ECG differ


def test_pipeline_from_pretrained_names_a_bad_folder(tmp_path):
    from cardiacnets.errors import InputError

    with pytest.raises(InputError, match="model_index.json") as err:
        ECGToCMRPipeline.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value)


class Recorder:
    """Wraps the denoiser's forward and the sampler's step to record what they saw."""

    def __init__(self, pipe, monkeypatch):
        import cardiacnets.generation.pipeline as module

        self.calls, self.steps = [], []
        forward = pipe.denoiser.forward

        def recording_forward(sample, timestep, *args, drop_condition=None, **kw):
            out = forward(sample, timestep, *args, drop_condition=drop_condition, **kw)
            self.calls.append((drop_condition.clone(), out.sample.clone()))
            return out

        monkeypatch.setattr(pipe.denoiser, "forward", recording_forward)
        make_sampler = module.make_sampler

        def recording_sampler(scheduler, name):
            sampler = make_sampler(scheduler, name)
            step = sampler.step

            def recording_step(model_output, *args, **kw):
                self.steps.append(model_output.clone())
                return step(model_output, *args, **kw)

            sampler.step = recording_step
            return sampler

        monkeypatch.setattr(module, "make_sampler", recording_sampler)


def test_guidance_one_is_the_conditional_prediction_only(monkeypatch):
    pipe = tiny_pipeline()
    recorder = Recorder(pipe, monkeypatch)
    pipe(ecgs(2), num_inference_steps=2, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert len(recorder.calls) == 2
    for (drop, prediction), used in zip(recorder.calls, recorder.steps):
        assert drop.shape == (2,) and not drop.any()  # no null branch at all
        torch.testing.assert_close(used, prediction.float())


def test_guidance_combines_conditional_and_null(monkeypatch):
    pipe = tiny_pipeline()
    recorder = Recorder(pipe, monkeypatch)
    pipe(ecgs(2), num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    for (drop, prediction), used in zip(recorder.calls, recorder.steps):
        assert drop.tolist() == [False, False, True, True]  # conditional and null branch in one batch
        conditional, null = prediction.float().chunk(2)
        torch.testing.assert_close(used, null + 3.0 * (conditional - null))


def test_scheduler_choice_and_precision():
    pipe = tiny_pipeline()
    run = dict(num_inference_steps=3, guidance_scale=2.0)
    dpm = pipe(ecgs(1), generator=torch.Generator().manual_seed(0), scheduler="dpm++", **run).cines
    ddim = pipe(ecgs(1), generator=torch.Generator().manual_seed(0), scheduler="ddim", **run).cines
    assert np.isfinite(ddim).all() and not np.allclose(dpm, ddim)
    bf16 = pipe(ecgs(1), generator=torch.Generator().manual_seed(0), precision="bf16", **run).cines
    assert bf16.shape == dpm.shape and np.abs(bf16 - dpm).mean() < 0.05
    with pytest.raises(ValueError, match="scheduler must be one of"):
        pipe(ecgs(1), scheduler="euler")


def test_pipeline_input_checks():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match=r"\(batch, 12, samples\)"):
        pipe(torch.zeros(1, 8, 500))
    with pytest.raises(ValueError, match="500"):
        pipe(torch.zeros(1, 12, 400))
    with pytest.raises(ValueError, match="NaN"):
        pipe(torch.full((1, 12, 500), float("nan")))
    with pytest.raises(ValueError, match="not conditioned on demographics"):
        pipe(ecgs(1), demographics=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="lead_mask"):
        pipe(ecgs(1), lead_mask=torch.ones(1, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_samples_per_ecg"):
        pipe(ecgs(1), num_samples_per_ecg=0)


def test_absent_leads_change_the_condition():
    pipe = tiny_pipeline()
    ecg = ecgs(1)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 6:] = False
    full, reduced = pipe.encode_ecg(ecg), pipe.encode_ecg(ecg, mask)
    zeroed = pipe.encode_ecg(ecg * mask[..., None])
    assert not torch.allclose(full.embedding, reduced.embedding)
    torch.testing.assert_close(reduced.embedding, zeroed.embedding)  # an absent lead contributes nothing


def test_standardize_file_reads_a_uk_biobank_xml(ukb_xml_path):
    pipe = tiny_pipeline()
    standard = pipe.standardize_file(ukb_xml_path)
    assert standard["ecg"].shape == (1, 12, 500) and standard["lead_mask"].shape == (1, 12)
    assert standard["sampling_rate_hz"] == 50.0 and isinstance(standard["quality"], list)
    out = pipe(standard["ecg"], standard["lead_mask"], num_inference_steps=1, guidance_scale=1.0)
    assert out.cines.shape == (1, 5, 16, 16)


# --- output files --------------------------------------------------------------------------------------------------

def test_outputs_open_in_nibabel_and_pydicom_marked_synthetic(tmp_path):
    rng = np.random.default_rng(0)
    cines = rng.random((2, 5, 64, 64)).astype(np.float32)  # the DICOM label needs 55 columns
    files = write_generation_outputs(cines, tmp_path, view="sa", spacing_mm=2.2, frame_interval_ms=40.0,
                                     slice_thickness_mm=8.0, uid_seed="abc")
    assert files["nifti"] == ["sample_0/cine.nii.gz", "sample_1/cine.nii.gz"]
    image = nib.load(tmp_path / "sample_0" / "cine.nii.gz")
    assert image.shape == (64, 64, 1, 5)
    np.testing.assert_allclose(image.header.get_zooms(), (2.2, 2.2, 8.0, 40.0), rtol=1e-5)
    np.testing.assert_allclose(image.affine[:3, 3], [-69.3, -69.3, 0.0])  # centred in-plane
    data = np.asarray(image.dataobj, dtype=np.float32)[:, :, 0]  # (x, y, frames)
    np.testing.assert_allclose(np.moveaxis(data, -1, 0), cines[0], atol=1.0 / 32000)

    dicoms = sorted((tmp_path / "sample_1" / "dicom").glob("*.dcm"))
    assert len(dicoms) == 5
    ds = pydicom.dcmread(dicoms[0])
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert "SYNTHETIC" in ds.SeriesDescription and ds.BurnedInAnnotation == "YES"
    assert ds.PatientID == "" and "SYNTHETIC" in str(ds.PatientName)
    from cardiacnets.io.dicom import read_dicom_series

    series = read_dicom_series(tmp_path / "sample_1" / "dicom")
    assert series.shape == (64, 64, 1, 5) and series.metadata["synthetic"]

    gif = Image.open(tmp_path / "sample_0" / "cine.gif")
    assert gif.n_frames == 5 and gif.info["duration"] == 40  # GIF stores centiseconds
    strip = Image.open(tmp_path / "sample_0" / "frames.png")
    assert strip.size[0] == 5 * strip.size[1]  # frames side by side
    std = nib.load(tmp_path / "std.nii.gz")
    np.testing.assert_allclose(np.moveaxis(np.asarray(std.dataobj, np.float32)[:, :, 0], -1, 0), cines.std(axis=0),
                               atol=1e-4)
    assert Image.open(tmp_path / "std.png").size[0] > 100
    # The same UID seed gives the same series; single samples write no spread maps.
    again = write_generation_outputs(cines[:1], tmp_path / "again", view="sa", spacing_mm=2.2, frame_interval_ms=40.0,
                                     uid_seed="abc")
    assert "std_png" not in again
    assert pydicom.dcmread(sorted((tmp_path / "again" / "sample_0" / "dicom").glob("*.dcm"))[0]).StudyInstanceUID \
        == pydicom.dcmread(sorted((tmp_path / "sample_0" / "dicom").glob("*.dcm"))[0]).StudyInstanceUID


def test_cine_image_affine_and_sha256(tmp_path):
    image = cine_image(np.zeros((3, 4, 6), np.float32), view="sa", spacing_mm=2.0, slice_thickness_mm=8.0,
                       frame_interval_ms=30.0)
    assert image.shape == (4, 6, 1, 3) and image.spacing_mm == (2.0, 2.0, 8.0)
    assert image.orientation == ("R", "A", "S")
    path = tmp_path / "x.bin"
    path.write_bytes(b"cardiac")
    assert sha256_of(path) == hashlib.sha256(b"cardiac").hexdigest()


# --- paper scale ---------------------------------------------------------------------------------------------------

def test_paper_configs_instantiate_on_the_meta_device(capsys):
    from cardiacnets.train import TrainConfig

    vae_config = load_config(TrainConfig, REPO_ROOT / "configs/paper/vae.yaml")
    diffusion_config = load_config(TrainConfig, REPO_ROOT / "configs/paper/diffusion.yaml")
    assert (vae_config.task, diffusion_config.task) == ("vae", "diffusion")
    pipe = untrained_pipeline(ecg_encoder="ecg_vit_large", projection_dim=256, vae=vae_config.model.name,
                              vae_overrides=vae_config.model.overrides, denoiser=diffusion_config.model.name,
                              denoiser_overrides=diffusion_config.model.overrides, device="meta")
    counts = parameter_counts(pipe)
    with capsys.disabled():
        print("\npaper-scale generation models (parameters): "
              + json.dumps({k: f"{v / 1e6:.1f} M" for k, v in counts.items()}))
    c = pipe.denoiser.config
    assert (c.num_frames, pipe.image_size, c.ecg_token_dim, c.latent_size) == (50, 256, 1024, 32)
    assert counts["condition_encoder"] > 300e6 and counts["vae"] > 50e6 and counts["denoiser"] > 300e6
    assert next(pipe.denoiser.parameters()).device.type == "meta"
