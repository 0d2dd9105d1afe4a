"""Tests of the anatomy-first generator's parts: the shape-and-motion model (distance maps, valid decoding,
round trips on synthetic and real ACDC labels), the ECG read-out and anatomy prior, the label-conditioned
image denoiser and `AnatomyFirstPipeline` (shapes, seeds, temperature, guidance, callbacks, save and load).

The models are tiny and untrained here; the training stages run end to end in
``test_anatomy_training.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from cardiacnets.cmr.indices import cavity_measurements
from cardiacnets.generation.anatomy_pipeline import AnatomyFirstPipeline
from cardiacnets.generation.anatomy_prior import AnatomyDenoiser
from cardiacnets.generation.conditioning import ECGConditionEncoder
from cardiacnets.generation.image_decoder import (
    APPEARANCE_NAMES, LabelConditionedDenoiser, appearance_codes, label_channels)
from cardiacnets.generation.readout import (
    ConditionReadout, correction_mlp, cross_fit, fit_correction, readout_features, ridge_loo)
from cardiacnets.generation.shape_model import (
    ShapeModel, anatomy_validity, contraction_count, label_dice, labels_from_distances, signed_distances,
)
from cardiacnets.models import create_model

SIZE, FRAMES = 32, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def heart_labels(size: int, lv_radius: float, wall: float, rv_radius: float, centre=(0.0, 0.0)) -> np.ndarray:
    """One frame: LV blood pool disc, myocardial ring, RV disc to the left of the LV."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    x, y = x - centre[0], y - centre[1]
    r = np.hypot(x, y)
    labels = np.zeros((size, size), np.uint8)
    rv_centre = -(lv_radius + wall + rv_radius * 0.8)
    labels[np.hypot(x - rv_centre, y) <= rv_radius] = 3
    labels[r <= lv_radius + wall] = 2
    labels[r <= lv_radius] = 1
    return labels


def heart_cines(n: int, seed: int = 0, size: int = SIZE, frames: int = FRAMES) -> np.ndarray:
    """(n, 1, frames, size, size) label cines: random sizes, one contraction per cycle."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, frames, size, size), np.uint8)
    for i in range(n):
        lv, wall, rv = rng.uniform(4.0, 7.0), rng.uniform(1.5, 3.0), rng.uniform(3.0, 5.0)
        ef = rng.uniform(0.2, 0.45)
        shift = rng.uniform(-1.5, 1.5, 2)
        for f in range(frames):
            squeeze = 1.0 - ef * math.sin(math.pi * f / frames) ** 2
            out[i, 0, f] = heart_labels(size, lv * math.sqrt(squeeze), wall / math.sqrt(squeeze) ** 0.5,
                                        rv * math.sqrt(squeeze), tuple(shift))
    return out


# --- distance maps and valid decoding -------------------------------------------------------------------------------

def test_signed_distances_hand_computed():
    labels = np.zeros((1, 1, 1, 9, 9), np.uint8)
    labels[0, 0, 0, 3:6, 3:6] = 1  # a 3 x 3 blood pool: LV endocardium and epicardium
    d = signed_distances(labels, truncate_px=3.0)
    assert d.shape == (1, 3, 1, 1, 9, 9)
    endo = d[0, 0, 0, 0]
    assert endo[4, 4] == pytest.approx(-1.5)  # centre: 2 px to the outside, minus 0.5
    assert endo[4, 3] == pytest.approx(-0.5)  # edge pixel inside
    assert endo[4, 2] == pytest.approx(0.5)  # first pixel outside
    assert endo[4, 0] == pytest.approx(2.5)
    assert endo[0, 0] == pytest.approx(min(3.0, math.hypot(3, 3) - 0.5))  # truncated at 3
    np.testing.assert_array_equal(d[0, 1], d[0, 0])  # no myocardium: epicardium = endocardium
    assert (d[0, 2] == 3.0).all()  # no RV in the frame: +truncate everywhere
    with pytest.raises(ValueError, match="slices, frames"):
        signed_distances(labels[0], 3.0)


def test_labels_from_inconsistent_distances_are_anatomically_valid():
    size = 24
    y, x = np.mgrid[:size, :size] - 11.5
    r = np.hypot(x, y)
    endo = r - 5.0
    epi = r - 4.0  # inside the endocardium in places: the wall must be restored to >= 1 px
    epi[:, :12] = r[:, :12] - 8.0
    rv = np.hypot(x + 6.0, y) - 5.0  # overlaps the LV: the RV must be cut back to outside the epicardium
    endo[11, 11] = 1.0  # a hole in the blood pool: filled
    endo[1, 1] = -1.0  # a stray blob far away: dropped (largest component only)
    distances = np.stack([endo, epi, rv])[None, :, None, None]
    labels = labels_from_distances(distances, min_wall_px=1.0)[0, 0, 0]
    pool = labels == 1
    assert pool[11, 11] and not pool[1, 1]
    validity = anatomy_validity(labels[None, None, None])
    assert validity["closed_myocardium"] == 1.0 and validity["single_components"] == 1.0
    assert validity["rv_beside_lv"] == 1.0
    assert not ((labels == 3) & (r <= 5.0)).any()  # no RV inside the LV


def test_anatomy_validity_finds_an_open_myocardium_and_two_contractions():
    good = heart_cines(1)
    assert anatomy_validity(good) == {"closed_myocardium": 1.0, "single_components": 1.0, "rv_beside_lv": 1.0,
                                      "one_cycle": 1.0}
    broken = good.copy()
    broken[0, 0, 0][broken[0, 0, 0] == 2] = 0  # frame 0 loses its myocardium: the blood pool touches background
    assert anatomy_validity(broken)["closed_myocardium"] == pytest.approx((FRAMES - 1) / FRAMES)
    assert contraction_count(np.array([10, 9, 5, 4, 5, 9, 10, 10])) == 1
    assert contraction_count(np.array([10, 4, 3, 4, 10, 10, 10, 4, 3, 4, 10, 10])) == 2
    assert contraction_count(np.full(8, 7)) == 0


# --- the shape model -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted():
    train = heart_cines(60, seed=0)
    model, fit = ShapeModel.fit(train, n_components=12, grid_size=16, truncate_px=6.0)
    return model, fit, train


def test_shape_model_codes_are_whitened_and_round_trip(fitted):
    model, fit, train = fitted
    codes = model.encode(train)
    assert codes.shape == (60, 12)
    torch.testing.assert_close(fit.codes, codes, rtol=0, atol=0)  # the fit's training codes are encode's, exactly
    np.testing.assert_allclose(codes.std(dim=0, unbiased=True).numpy(), 1.0, atol=1e-3)
    np.testing.assert_allclose(codes.mean(dim=0).numpy(), 0.0, atol=1e-4)
    assert fit.n_subjects == 60 and 0.9 < fit.explained_variance.sum() <= 1.0
    held_out = heart_cines(20, seed=1)
    decoded = model.decode(model.encode(held_out))
    dice = label_dice(decoded, held_out)
    assert dice["lv_cavity"].mean() > 0.93 and dice["lv_myocardium"].mean() > 0.8 and dice["rv_cavity"].mean() > 0.9
    before = cavity_measurements(held_out, 2.0)
    after = cavity_measurements(decoded, 2.0)
    assert np.corrcoef(before["lvedv_ml"], after["lvedv_ml"])[0, 1] > 0.97
    assert np.corrcoef(before["lvef_pct"], after["lvef_pct"])[0, 1] > 0.9
    assert anatomy_validity(decoded)["closed_myocardium"] == 1.0
    assert anatomy_validity(decoded)["one_cycle"] == 1.0


def test_shape_model_saves_loads_and_checks_shapes(fitted, tmp_path):
    model, _, train = fitted
    model.save_pretrained(tmp_path / "shape")
    loaded = ShapeModel.from_pretrained(tmp_path / "shape")
    torch.testing.assert_close(loaded.encode(train[:3]), model.encode(train[:3]))
    np.testing.assert_array_equal(loaded.decode(model.encode(train[:3])), model.decode(model.encode(train[:3])))
    with pytest.raises(ValueError, match="label cines must be"):
        model.encode(np.zeros((2, 1, FRAMES, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="more than 12"):
        ShapeModel.fit(train[:12], n_components=12, grid_size=16)
    # Without the slice axis (one slice) the same codes.
    torch.testing.assert_close(model.encode(train[:2, 0]), model.encode(train[:2]))


def test_shape_model_round_trip_on_real_acdc_labels(acdc_dir):
    """Real expert labels (ACDC, ED and ES of the mid-ventricular slice as a two-frame cine), standardised like
    the training sets: a model fitted on 20 patients reconstructs the other 10."""
    from cardiacnets.evaluate.segmentation import CineGeometry, acdc_label_cines

    cines = acdc_label_cines(acdc_dir, CineGeometry(spacing_mm=2.2, crop_size=64, n_frames=2))
    assert cines.shape == (30, 1, 2, 64, 64)
    model, _ = ShapeModel.fit(cines[:20], n_components=12, grid_size=32)
    decoded = model.decode(model.encode(cines[20:]))
    dice = label_dice(decoded, cines[20:])
    assert np.nanmean(dice["lv_cavity"]) > 0.8
    assert anatomy_validity(decoded)["closed_myocardium"] == 1.0


# --- read-out and anatomy prior ------------------------------------------------------------------------------------

def tiny_readout(measurements: bool = True) -> ConditionReadout:
    demographics = {"columns": ["age_years", "sex_male"], "mean": [60.0, 0.5], "std": [10.0, 0.5]}
    measures = {"columns": ["qrs_duration_ms"], "mean": [90.0], "std": [10.0]} if measurements else None
    names = ("embedding", "token_mean", "demographics", "demographic_products") + (("measurements",) if measurements
                                                                                    else ())
    return ConditionReadout(feature_names=names, embed_dim=4, token_dim=3, demographics=demographics,
                            measurements=measures, index_names=("lvedv_ml", "lvef_pct"), index_mean=(100.0, 55.0),
                            index_std=(20.0, 8.0))


def test_readout_standardises_inputs_and_switches_fit_on_missing_measurements():
    readout = tiny_readout()
    assert readout.feature_width(readout.config.feature_names) == 4 + 3 + 2 + 3 + 1
    assert readout.condition_dim == 2 + 2 * 2 + 1
    inputs = readout.inputs(2, {"age_years": np.array([70.0, np.nan]), "sex_male": np.array([1.0, 0.0])},
                            {"qrs_duration_ms": np.array([110.0, np.nan])})
    torch.testing.assert_close(inputs["demographics"], torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
    assert inputs["demographics_present"].tolist() == [[True, True], [False, True]]
    torch.testing.assert_close(inputs["measurements"], torch.tensor([[2.0], [0.0]]))
    rng = torch.Generator().manual_seed(0)
    readout.set_fit("full", torch.randn(2, 13, generator=rng), torch.tensor([0.1, -0.2]))
    readout.set_fit("waveform", torch.randn(2, 12, generator=rng), torch.tensor([0.3, 0.4]))
    embedding, tokens = torch.randn(2, 4, generator=rng), torch.randn(2, 5, 3, generator=rng)
    estimates, full = readout.estimate(embedding, tokens, inputs["demographics"], inputs["measurements"],
                                       inputs["measurements_present"])
    assert full.tolist() == [True, False]
    d = inputs["demographics"]
    waveform = torch.cat([embedding, tokens.mean(1), d, torch.stack([d[:, 0] ** 2, d[:, 0] * d[:, 1], d[:, 1] ** 2], 1)],
                         dim=1)
    expected_full = torch.cat([waveform, inputs["measurements"]], 1) @ readout.full_weight.T + readout.full_bias
    expected_waveform = waveform @ readout.waveform_weight.T + readout.waveform_bias
    torch.testing.assert_close(estimates[0], expected_full[0])
    torch.testing.assert_close(estimates[1], expected_waveform[1])
    condition = readout.condition(estimates, full, d, inputs["demographics_present"])
    torch.testing.assert_close(condition[:, :2], estimates)
    assert condition[:, -1].tolist() == [1.0, 0.0]  # which fit read the subject
    units = readout.to_units(estimates)
    np.testing.assert_allclose(units["lvef_pct"], estimates[:, 1].numpy() * 8.0 + 55.0, rtol=1e-6)
    with pytest.raises(ValueError, match="full fit must be"):
        readout.set_fit("full", torch.zeros(2, 12), torch.zeros(2))
    with pytest.raises(ValueError, match="measurements normaliser"):
        ConditionReadout(feature_names=("embedding", "measurements"))


def test_ridge_loo_matches_refitting_without_each_row():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=30)
    weight, bias, penalty, loo_r2 = ridge_loo(x, y, [0.5, 5.0])
    errors = []
    for i in range(30):
        keep = np.arange(30) != i
        xc = x[keep] - x[keep].mean(0)
        w = np.linalg.solve(xc.T @ xc + penalty * np.eye(4), xc.T @ (y[keep] - y[keep].mean()))
        errors.append(y[i] - (y[keep].mean() + (x[i] - x[keep].mean(0)) @ w))
    assert loo_r2 == pytest.approx(1 - np.mean(np.square(errors)) / np.var(y), rel=1e-6)
    assert readout_features(("embedding",), torch.ones(2, 3), None, None, None).shape == (2, 3)


def _nonlinear_table(n: int, seed: int):
    """Features whose first column enters the truth linearly and whose age enters it quadratically."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    age = rng.normal(size=n)
    truth = 0.8 * x[:, :1] + 0.9 * (age[:, None] ** 2 - 1.0) + 0.2 * rng.normal(size=(n, 1))
    return x, age, truth


def test_fit_correction_learns_what_the_linear_fit_misses_and_stops_early():
    x, age, truth = _nonlinear_table(600, 0)
    inputs = np.stack([x[:, 0], age], axis=1)
    residual = truth - 0.8 * x[:, :1]  # what a linear fit of x leaves: the age term and the noise
    mlp = fit_correction(correction_mlp(2, 16, 1), inputs, residual, steps=400, seed=0)
    assert not any(p.requires_grad for p in mlp.parameters())
    x2, age2, truth2 = _nonlinear_table(300, 1)
    with torch.no_grad():
        predicted = mlp(torch.as_tensor(np.stack([x2[:, 0], age2], 1), dtype=torch.float32)).numpy()
    left = truth2 - 0.8 * x2[:, :1]
    assert np.mean((left - predicted) ** 2) < 0.3 * np.mean(left**2)  # most of the quadratic term learnt
    # Pure noise: the held-out error never beats the zero correction by much, so the kept one stays near zero.
    noise = np.random.default_rng(2).normal(size=(600, 1))
    quiet = fit_correction(correction_mlp(2, 16, 1), inputs, noise, steps=400, seed=0)
    with torch.no_grad():
        assert quiet(torch.as_tensor(inputs, dtype=torch.float32)).std() < 0.3


def test_cross_fit_keeps_a_correction_only_where_it_helps():
    x, age, truth = _nonlinear_table(800, 3)
    demographics = {"columns": ["age_years"], "mean": [0.0], "std": [1.0]}
    readout = ConditionReadout(feature_names=("embedding",), embed_dim=4, token_dim=4, demographics=demographics,
                               index_names=("lvedv_ml",), hidden_dim=16)
    folds = np.arange(800) % 4
    age_t = torch.as_tensor(age[:, None], dtype=torch.float32)
    estimates, report = cross_fit(readout, "waveform", x, truth, folds, [1e-3, 1.0], demographics=age_t,
                                  correction_steps=300)
    assert report["correction"]["kept"] and report["correction"]["corrected_mse"] < report["correction"]["linear_mse"]
    assert report["lvedv_ml"]["corrected_cross_fitted_r"] > report["lvedv_ml"]["cross_fitted_r"] + 0.1
    # The read-out applies linear fit + correction; the residual spread is the corrected estimates' scatter.
    embedding = torch.as_tensor(x, dtype=torch.float32)
    estimate, _ = readout.estimate(embedding, None, age_t)
    linear = embedding @ readout.waveform_weight.T + readout.waveform_bias
    torch.testing.assert_close(estimate, linear + readout.waveform_mlp(torch.cat([linear, age_t], 1)))
    assert float(readout.waveform_residual[0, 0]) ** 2 == pytest.approx(np.var(truth - estimates, ddof=1), rel=1e-3)
    # Linear truth: the correction cannot lower the cross-fitted error and is left at zero.
    plain = ConditionReadout(feature_names=("embedding",), embed_dim=4, token_dim=4, demographics=demographics,
                             index_names=("lvedv_ml",), hidden_dim=16)
    linear_truth = x[:, :1] + 0.1 * np.random.default_rng(4).normal(size=(800, 1))
    _, plain_report = cross_fit(plain, "waveform", x, linear_truth, folds, [1e-3], demographics=age_t,
                                correction_steps=300)
    if not plain_report["correction"]["kept"]:
        assert float(plain.waveform_mlp[-1].weight.abs().sum()) == 0.0
    assert plain_report["lvedv_ml"]["corrected_cross_fitted_r"] == pytest.approx(
        plain_report["lvedv_ml"]["cross_fitted_r"], abs=0.01)


def test_readout_with_correction_saves_and_loads(tmp_path):
    readout = tiny_readout()
    assert ConditionReadout(**{**readout.config, "hidden_dim": 0}).correct("full", torch.ones(1, 2)).sum() == 2
    corrected = ConditionReadout(**{**readout.config, "hidden_dim": 8})
    assert corrected.correction_width("full") == 2 + 2 + 1 and corrected.correction_width("waveform") == 2 + 2
    linear = torch.randn(3, 2)
    torch.testing.assert_close(corrected.correct("full", linear, torch.zeros(3, 2), torch.zeros(3, 1)), linear)
    torch.nn.init.normal_(corrected.full_mlp[-1].weight)  # an untrained correction is zero: make it respond
    corrected.save_pretrained(tmp_path / "readout")
    loaded = ConditionReadout.from_pretrained(tmp_path / "readout")
    demographics, measurements = torch.randn(3, 2), torch.randn(3, 1)
    torch.testing.assert_close(loaded.correct("full", linear, demographics, measurements),
                               corrected.correct("full", linear, demographics, measurements))
    assert not torch.allclose(loaded.correct("full", linear, demographics, measurements), linear)
    with pytest.raises(ValueError, match="hidden_dim"):
        ConditionReadout(hidden_dim=-1)


def test_anatomy_denoiser_null_condition_and_errors():
    model = AnatomyDenoiser(code_dim=6, condition_dim=5, width=16, depth=2).eval()
    torch.nn.init.normal_(model.output_proj.weight)  # zero-initialised: make the output depend on the input
    for block in model.blocks:
        torch.nn.init.normal_(block.modulation.weight, std=0.1)
    rng = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 6, generator=rng), torch.randn(2, 5, generator=rng)
    other = torch.randn(2, 5, generator=rng)
    drop = torch.tensor([True, False])
    with torch.no_grad():
        a, b = model(x, 10, c, drop_condition=drop).sample, model(x, 10, other, drop_condition=drop).sample
        torch.testing.assert_close(a[0], b[0])  # null condition: the condition does not matter
        assert not torch.allclose(a[1], b[1])
        assert not torch.allclose(model(x, 10, c).sample, model(x, 500, c).sample)  # the timestep matters
    with pytest.raises(ValueError, match="condition must be"):
        model(x, 10, torch.randn(2, 4))
    with pytest.raises(ValueError, match="sample must be"):
        model(torch.randn(2, 5), 10, c)


# --- anatomy → image ---------------------------------------------------------------------------------------------------

def test_label_channels_fold_each_pixel_into_its_own_channel():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 1, 2] = 1
    labels[0, 3, 3] = 3
    folded = label_channels(labels, 2)
    assert folded.shape == (1, 12, 2, 2)
    # pixel (1, 2) is in block (0, 1) at offset (1, 0): channel label_index * 4 + 1 * 2 + 0
    assert folded[0, 0 * 4 + 2, 0, 1] == 1.0
    assert folded[0, 2 * 4 + 3, 1, 1] == 1.0  # label 3 at (3, 3): block (1, 1), offset (1, 1)
    assert folded.sum() == 2.0


def test_label_conditioned_denoiser_follows_the_labels():
    model = LabelConditionedDenoiser(latent_channels=2, latent_size=8, downsample_factor=2,
                                     block_out_channels=(8, 16), attention_levels=(False, False),
                                     norm_num_groups=4).eval()
    labels = torch.from_numpy(heart_cines(1, size=16)[0, 0, :2]).long()
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model(x, 5, labels).sample
        b = model(x, 5, torch.zeros_like(labels)).sample
    assert a.shape == x.shape and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="labels must be"):
        model(x, 5, labels[:, :8])


def test_appearance_codes_are_the_regions_intensity_quantiles():
    labels = torch.zeros(2, 6, 6, dtype=torch.long)
    labels[0, :2, :2] = 1  # 4 blood pixels
    labels[0, 2, :4] = 2  # 4 myocardium pixels
    labels[0, 5, 5] = 3  # 1 RV pixel: too few
    frames = torch.arange(72, dtype=torch.float32).reshape(2, 6, 6) / 100.0
    codes = appearance_codes(frames, labels)
    assert codes.shape == (2, len(APPEARANCE_NAMES))
    assert codes[0, 0].item() == pytest.approx(np.median([0.00, 0.01, 0.06, 0.07]))
    assert codes[0, 1].item() == pytest.approx(np.median([0.12, 0.13, 0.14, 0.15]))
    assert math.isnan(codes[0, 2].item())
    rest = frames[0][labels[0] == 0].numpy()
    np.testing.assert_allclose(codes[0, 3:].numpy(), np.quantile(rest, [0.1, 0.5, 0.9]), rtol=1e-6)
    # The second frame is all background: no tissue medians; its percentiles are those of 0.36 ... 0.71.
    assert torch.isnan(codes[1, :3]).all()
    np.testing.assert_allclose(codes[1, 3:].numpy(), np.quantile(np.arange(36, 72) / 100.0, [0.1, 0.5, 0.9]),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="both be"):
        appearance_codes(frames, labels[:, :5])


def appearance_denoiser(bank: int = 16) -> LabelConditionedDenoiser:
    torch.manual_seed(0)
    return LabelConditionedDenoiser(latent_channels=2, latent_size=8, downsample_factor=2, block_out_channels=(8, 16),
                                    attention_levels=(False, False), norm_num_groups=4,
                                    appearance_dim=len(APPEARANCE_NAMES), appearance_bank_size=bank).eval()


def test_denoiser_follows_the_appearance_code_and_runs_without_one(tmp_path):
    model = appearance_denoiser()
    codes = torch.rand(40, len(APPEARANCE_NAMES), generator=torch.Generator().manual_seed(1))
    codes[3, 2] = float("nan")  # incomplete codes are left out of the statistics and the bank
    model.set_appearance(codes, torch.Generator().manual_seed(0))
    complete = torch.cat([codes[:3], codes[4:]])
    np.testing.assert_allclose(model.appearance_mean.numpy(), complete.mean(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(model.appearance_std.numpy(), complete.std(0).numpy(), rtol=1e-5)
    bank_rows = {tuple(row.tolist()) for row in model.appearance_bank}
    assert len(bank_rows) == 16 and bank_rows <= {tuple(row.tolist()) for row in complete}
    drawn = model.draw_appearance(5, torch.Generator().manual_seed(2))
    assert drawn.shape == (5, len(APPEARANCE_NAMES)) and {tuple(r.tolist()) for r in drawn} <= bank_rows

    labels = torch.from_numpy(heart_cines(1, size=16)[0, 0, :2]).long()
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        bright, dark = (model(x, 5, labels, drawn[i:i + 1].expand(2, -1)).sample for i in (0, 1))
        none = model(x, 5, labels).sample
        nan_rows = model(x, 5, labels, torch.full((2, len(APPEARANCE_NAMES)), float("nan"))).sample
    assert not torch.allclose(bright, dark)
    torch.testing.assert_close(nan_rows, none)  # a row of NaN is "no code"
    model.save_pretrained(tmp_path / "denoiser")
    loaded = LabelConditionedDenoiser.from_pretrained(tmp_path / "denoiser").eval()
    torch.testing.assert_close(loaded.appearance_bank, model.appearance_bank)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 5, labels, drawn[:2]).sample, model(x, 5, labels, drawn[:2]).sample)
    with pytest.raises(ValueError, match="appearance must be"):
        model(x, 5, labels, drawn[:1])
    plain = LabelConditionedDenoiser(latent_channels=2, latent_size=8, downsample_factor=2, block_out_channels=(8, 16),
                                     attention_levels=(False, False), norm_num_groups=4)
    with pytest.raises(ValueError, match="no appearance input"):
        plain(x, 5, labels, drawn[:2])
    with pytest.raises(ValueError, match="no appearance input"):
        plain.set_appearance(codes)
    with pytest.raises(ValueError, match="appearance_dim must be"):
        LabelConditionedDenoiser(appearance_dim=3)


# --- the pipeline ------------------------------------------------------------------------------------------------------

TINY_ENCODER = {"n_samples": 500, "stem_width": 8, "widths": [8, 16], "blocks": [1, 1], "embed_dim": 4}


def tiny_anatomy_pipeline(fitted) -> AnatomyFirstPipeline:
    from cardiacnets.config import to_dict

    shape_model, _, _ = fitted
    torch.manual_seed(0)
    encoder = create_model("ecg_resnet1d", **TINY_ENCODER)
    condition_encoder = ECGConditionEncoder(encoder_class=type(encoder).__name__, encoder_config=to_dict(encoder.config))
    readout = ConditionReadout(feature_names=("embedding", "token_mean", "demographics"), embed_dim=4, token_dim=16,
                               demographics={"columns": ["age_years"], "mean": [60.0], "std": [10.0]},
                               index_names=("lvedv_ml",), index_mean=(100.0,), index_std=(20.0,))
    readout.set_fit("full", torch.full((1, 21), 0.1), torch.zeros(1))
    readout.set_fit("waveform", torch.full((1, 21), 0.1), torch.zeros(1))
    scatter = torch.randn(64, 1, generator=torch.Generator().manual_seed(3))  # the read-out's residuals
    readout.set_residual("full", scatter)
    readout.set_residual("waveform", scatter)
    prior = AnatomyDenoiser(code_dim=shape_model.code_dim, condition_dim=readout.condition_dim, width=16, depth=1)
    torch.nn.init.normal_(prior.output_proj.weight, std=0.3)  # zero-initialised: let the untrained prior respond
    for block in prior.blocks:
        torch.nn.init.normal_(block.modulation.weight, std=0.3)
    vae = create_model("cmr_vae_demo", image_size=SIZE, block_out_channels=[8, 8], norm_num_groups=4,
                       latent_channels=2)
    image = LabelConditionedDenoiser(latent_channels=2, latent_size=SIZE // 2, downsample_factor=2,
                                     block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                              prediction_type="v_prediction", clip_sample=False)
    image_scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction", clip_sample=False)
    return AnatomyFirstPipeline(condition_encoder, readout, prior, shape_model, image, vae, scheduler, image_scheduler,
                                spacing_mm=2.0, frame_interval_ms=40.0,
                                ecg_config={"sampling_rate_hz": 50.0, "duration_s": 10.0})


def test_pipeline_generates_anatomy_and_images_reproducibly(fitted, tmp_path):
    pipe = tiny_anatomy_pipeline(fitted)
    ecg = 0.3 * torch.randn(2, 12, 500, generator=torch.Generator().manual_seed(0))
    seen = []

    def record(p, step, timestep, kwargs):
        seen.append((step, kwargs["stage"]))

    out = pipe(ecg, demographics={"age_years": np.array([50.0, np.nan])}, num_inference_steps=3, image_steps=2,
               num_samples_per_ecg=2, generator=torch.Generator().manual_seed(1), callback_on_step_end=record)
    assert out.cines.shape == (4, FRAMES, SIZE, SIZE) and out.cines.dtype == np.float32
    assert out.labels.shape == (4, FRAMES, SIZE, SIZE) and out.labels.dtype == np.uint8
    assert out.codes.shape == (4, pipe.shape_model.code_dim)
    assert out.index_estimates["lvedv_ml"].shape == (2,)
    assert seen == [(0, "anatomy"), (1, "anatomy"), (2, "anatomy"), (3, "image"), (4, "image")]
    assert pipe.num_steps(3, 2) == 5
    again = pipe(ecg, demographics={"age_years": np.array([50.0, np.nan])}, num_inference_steps=3, image_steps=2,
                 num_samples_per_ecg=2, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(out.cines, again.cines)
    # Both temperatures 0: every sample of an ECG gets the same (most typical) anatomy.
    cold = pipe(ecg, num_inference_steps=3, image_steps=1, num_samples_per_ecg=2, temperature=0.0,
                shape_temperature=0.0, generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(cold.codes[0], cold.codes[1], atol=1e-6)
    # Either temperature alone makes the samples differ: the indices' scatter changes the condition, the
    # shape temperature the code's initial noise under the same condition.
    for temperatures in ({"temperature": 1.0, "shape_temperature": 0.0},
                         {"temperature": 0.0, "shape_temperature": 1.0}):
        warm = pipe(ecg, num_inference_steps=3, image_steps=1, num_samples_per_ecg=2, **temperatures,
                    generator=torch.Generator().manual_seed(2))
        assert not np.allclose(warm.codes[0], warm.codes[1]), temperatures
    # The defaults are the pipeline's config (shape temperature: 1, a calibrated draw).
    assert pipe.config.default_shape_temperature == 1.0
    pipe.register_to_config(default_shape_temperature=0.0)
    default_cold = pipe(ecg, num_inference_steps=3, image_steps=1, num_samples_per_ecg=2, temperature=0.0,
                        generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(default_cold.codes, cold.codes, atol=1e-6)
    pipe.register_to_config(default_shape_temperature=1.0)
    guided = pipe(ecg, num_inference_steps=3, image_steps=1, temperature=0.0, shape_temperature=0.0,
                  guidance_scale=3.0)
    assert not np.allclose(guided.codes, pipe(ecg, num_inference_steps=3, image_steps=1, temperature=0.0,
                                              shape_temperature=0.0).codes)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = AnatomyFirstPipeline.from_pretrained(tmp_path / "pipe")
    reloaded = loaded(ecg, demographics={"age_years": np.array([50.0, np.nan])}, num_inference_steps=3,
                      image_steps=2, num_samples_per_ecg=2, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(reloaded.cines, out.cines, atol=1e-5)
    np.testing.assert_array_equal(reloaded.labels, out.labels)
    with pytest.raises(ValueError, match="samples per lead"):
        pipe(torch.zeros(1, 12, 400))
    with pytest.raises(ValueError, match="temperature"):
        pipe(ecg, temperature=-1.0)
    with pytest.raises(ValueError, match="shape_temperature"):
        pipe(ecg, shape_temperature=-0.5)


def test_render_shares_the_noise_across_frames(fitted):
    """The frames of a cine start from one noise map, so a static anatomy gives a static cine."""
    pipe = tiny_anatomy_pipeline(fitted)
    labels = np.repeat(heart_cines(1, size=SIZE)[:, :, :1], FRAMES, axis=2)  # the same frame 8 times
    cines = pipe.render(labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert cines.shape == (1, 1, FRAMES, SIZE, SIZE)
    np.testing.assert_allclose(cines[0, 0, 1:], np.broadcast_to(cines[0, 0, :1], cines[0, 0, 1:].shape), atol=1e-5)


def test_render_draws_one_appearance_per_cine_or_takes_given_codes(fitted):
    """With an appearance input, each cine draws one training code from the bank (the same for all its
    frames), reproducibly per seed; given codes are used as they are."""
    pipe = tiny_anatomy_pipeline(fitted)
    image = LabelConditionedDenoiser(latent_channels=2, latent_size=SIZE // 2, downsample_factor=2,
                                     block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4,
                                     appearance_dim=len(APPEARANCE_NAMES), appearance_bank_size=8)
    for module in image.appearance_embedding:  # an untrained embedding: make the code matter
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=1.0)
    image.set_appearance(torch.rand(20, len(APPEARANCE_NAMES), generator=torch.Generator().manual_seed(0)))
    pipe.register_modules(image_denoiser=image)
    labels = np.repeat(heart_cines(2, size=SIZE)[:, :, :1], 3, axis=2)  # static anatomies, 3 frames
    seen = []
    original = image.forward

    def spy(sample, timestep, labels, appearance=None, return_dict=True):
        seen.append(appearance.clone())
        return original(sample, timestep, labels, appearance, return_dict)

    image.forward = spy
    a = pipe.render(labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    codes = seen[0]
    assert codes.shape == (6, len(APPEARANCE_NAMES))
    torch.testing.assert_close(codes[:3], codes[:1].expand(3, -1))  # one code per cine, shared by its frames
    bank = {tuple(row.tolist()) for row in image.appearance_bank}
    assert tuple(codes[0].tolist()) in bank and tuple(codes[3].tolist()) in bank
    again = pipe.render(labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(again, a)
    given = image.appearance_bank[[1, 1]].numpy()
    b = pipe.render(labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0), appearance=given)
    torch.testing.assert_close(seen[-1][:3], torch.from_numpy(given[:1]).expand(3, -1))
    c = pipe.render(labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                    appearance=image.appearance_bank[[5, 5]].numpy())
    assert not np.allclose(b, c)
    with pytest.raises(ValueError, match="appearance must be"):
        pipe.render(labels, num_inference_steps=1, appearance=given[:1])
    pipe.register_modules(image_denoiser=tiny_anatomy_pipeline(fitted).image_denoiser)
    with pytest.raises(ValueError, match="no appearance input"):
        pipe.render(labels, num_inference_steps=1, appearance=given)


def test_acquisition_noise_is_added_after_decoding_saved_and_switchable(fitted, tmp_path):
    """With an `AcquisitionNoise`, the cines are the decoded frames plus its noise (per frame), unless turned off;
    the component is saved and loaded with the pipeline, and pipelines without it still load."""
    from cardiacnets.generation.acquisition import AcquisitionNoise

    pipe = tiny_anatomy_pipeline(fitted)
    ecg = 0.3 * torch.randn(1, 12, 500, generator=torch.Generator().manual_seed(0))
    clean = pipe(ecg, num_inference_steps=2, image_steps=2, generator=torch.Generator().manual_seed(4)).cines
    pipe.save_pretrained(tmp_path / "plain")
    assert AnatomyFirstPipeline.from_pretrained(tmp_path / "plain").acquisition is None
    noise = AcquisitionNoise(bin_edges=(0.0, 1.0))
    noise.log_sd_mean.fill_(math.log(0.05))
    pipe.register_modules(acquisition=noise)
    off = pipe(ecg, num_inference_steps=2, image_steps=2, generator=torch.Generator().manual_seed(4),
               acquisition_noise=False).cines
    np.testing.assert_array_equal(off, clean)
    noisy = pipe(ecg, num_inference_steps=2, image_steps=2, generator=torch.Generator().manual_seed(4)).cines
    inside = (clean > 0.2) & (clean < 0.8)  # away from the clipped ends
    assert inside.sum() > 100 and float(np.std((noisy - clean)[inside])) == pytest.approx(0.05, rel=0.15)
    # Paired: with one generator over two calls, the second call's anatomy and decoded frames do not depend
    # on whether the first added noise.
    for first in (True, False):
        generator = torch.Generator().manual_seed(9)
        pipe(ecg, num_inference_steps=2, image_steps=2, generator=generator, acquisition_noise=first)
        second = pipe(ecg, num_inference_steps=2, image_steps=2, generator=generator, acquisition_noise=False)
        if first:
            reference = second.cines
    np.testing.assert_array_equal(second.cines, reference)
    pipe.save_pretrained(tmp_path / "noisy")
    loaded = AnatomyFirstPipeline.from_pretrained(tmp_path / "noisy")
    assert isinstance(loaded.acquisition, AcquisitionNoise)
    again = loaded(ecg, num_inference_steps=2, image_steps=2, generator=torch.Generator().manual_seed(4)).cines
    np.testing.assert_allclose(again, noisy, atol=1e-5)


def test_paper_configs_of_the_anatomy_generator_instantiate_on_the_meta_device():
    from cardiacnets.config import load_config
    from cardiacnets.train import TrainConfig

    from support import REPO_ROOT

    image = load_config(TrainConfig, REPO_ROOT / "configs/paper/anatomy_image.yaml")
    prior = load_config(TrainConfig, REPO_ROOT / "configs/paper/anatomy.yaml")
    assert (image.task, prior.task) == ("anatomy_image", "anatomy")
    with torch.device("meta"):
        # The task sets the appearance sizes from its options and data (`AnatomyImageTask.model_overrides`).
        assert image.options["appearance"] is True
        denoiser = create_model(image.model.name, appearance_dim=len(APPEARANCE_NAMES),
                                appearance_bank_size=image.options["appearance_bank_size"], **image.model.overrides)
        anatomy = create_model(prior.model.name, condition_dim=14, **prior.model.overrides)
        shape = ShapeModel(n_slices=10, n_frames=50, image_size=256, grid_size=prior.options["grid_size"],
                           n_components=prior.options["n_components"])
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in
              (("image_denoiser", denoiser), ("anatomy_denoiser", anatomy))}
    assert denoiser.config.latent_size == 32 and denoiser.image_size == 256
    assert denoiser.appearance_bank.shape == (2048, len(APPEARANCE_NAMES))
    assert counts["image_denoiser"] > 50e6 and counts["anatomy_denoiser"] > 10e6
    assert shape.components.shape == (64, 3 * 10 * 50 * 64 * 64) and shape.components.device.type == "meta"


def test_readout_residual_scatter_is_measured_and_drawn_per_fit():
    readout = tiny_readout()
    rng = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[0.5, 0.0], [0.3, 0.2]])
    residuals = torch.randn(4000, 2, generator=rng) @ mixing.T
    readout.set_residual("full", residuals)
    readout.set_residual("waveform", 2.0 * residuals)
    expected = mixing @ mixing.T
    torch.testing.assert_close(readout.full_residual @ readout.full_residual.T, expected, atol=0.02, rtol=0.05)
    estimates = torch.tensor([[0.2, -0.1]]).repeat(20000, 1)
    full = torch.arange(20000) % 2 == 0
    assert torch.equal(readout.perturb(estimates, full, 0.0), estimates)  # temperature 0: the estimates
    drawn = readout.perturb(estimates, full, 1.0, torch.Generator().manual_seed(1)) - estimates
    torch.testing.assert_close(torch.cov(drawn[full].T), expected, atol=0.02, rtol=0.05)
    torch.testing.assert_close(torch.cov(drawn[~full].T), 4 * expected, atol=0.05, rtol=0.05)
    half = readout.perturb(estimates, full, 0.5, torch.Generator().manual_seed(1)) - estimates
    torch.testing.assert_close(half, 0.5 * drawn)
    with pytest.raises(ValueError, match="at least 2"):
        readout.set_residual("full", torch.full((3, 2), float("nan")))
