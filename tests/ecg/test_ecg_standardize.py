"""Standard ECG representation: resampling, filters, derived leads, crop/pad, normalisation, lead subsets."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
import scipy.signal
import torch

from cardiacnets.ecg.config import ECGConfig
from cardiacnets.ecg.filters import (
    EDGE_PAD_S,
    _image_segments,
    apply_filters,
    bandpass,
    bandpass_sos,
    cascade_settings,
    filter_cascade,
    median_baseline,
    notch,
    notch_sos,
    resampling_taps,
    zero_phase_fft,
)
from cardiacnets.ecg.standardize import StandardECG, apply_lead_subset, reduce_leads, standardize_ecg
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.io.ecg import read_ecg
from cardiacnets.io.ecg_leads import STANDARD_LEADS, derive_limb_leads
from cardiacnets.io.ecg_record import ECGRecord

RAW = dict(bandpass_hz=None, notch_hz=None, baseline_removal="none")  # no filtering: exact references


def synthetic_ecg(fs: float = 500.0, duration_s: float = 10.0, leads=STANDARD_LEADS, heart_rate_bpm: float = 72.0):
    """Beats of Gaussian QRS and T waves; limb leads obey Einthoven exactly."""
    t = np.arange(int(round(fs * duration_s))) / fs
    beats = np.arange(0.3, duration_s, 60.0 / heart_rate_bpm)
    qrs = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in beats)
    twave = sum(np.exp(-0.5 * ((t - b - 0.3) / 0.05) ** 2) for b in beats)
    lead_i = 0.8 * qrs + 0.2 * twave
    lead_ii = 1.2 * qrs + 0.3 * twave
    rows = {"I": lead_i, "II": lead_ii, **derive_limb_leads(lead_i, lead_ii)}
    for k, name in enumerate(STANDARD_LEADS[6:]):
        rows[name] = (-1.0 + 0.4 * k) * qrs + 0.25 * twave
    signal = np.stack([rows[name] for name in leads]).astype(np.float32)
    return ECGRecord(signal_mV=signal, lead_names=list(leads), sampling_rate_hz=fs, source="synthetic.npy")


def idx(name: str) -> int:
    return STANDARD_LEADS.index(name)


# --------------------------------------------------------------------------- real files


def test_real_files_give_the_standard_shape(ukb_xml_path, ptbxl_dir, ptbdb_record):
    for path in (ukb_xml_path, ptbxl_dir / "records500/00000/00001_hr", ptbxl_dir / "records100/00000/00001_lr", ptbdb_record):
        std = standardize_ecg(read_ecg(path), ECGConfig())
        assert isinstance(std, StandardECG)
        assert std.signal.shape == (12, 5000) and std.signal.dtype == np.float32
        assert std.sample_mask.shape == (5000,) and std.sample_mask.all()
        assert std.lead_mask.all() and std.derived_leads == ()
        assert std.sampling_rate_hz == 500.0
        assert std.normalization == {"method": "none", "units": "mV"}
        assert np.isfinite(std.signal).all()


def test_resampling_100_to_500_hz_matches_resample_poly(ptbxl_dir):
    record = read_ecg(ptbxl_dir / "records100/00000/00001_lr")
    std = standardize_ecg(record, ECGConfig(**RAW))
    expected = scipy.signal.resample_poly(record.signal_mV.astype(np.float64), 5, 1, axis=-1, padtype="line")
    assert expected.shape == (12, 5000)
    np.testing.assert_allclose(std.signal, expected.astype(np.float32), atol=1e-6)


def test_resampling_non_integer_ratio_length_and_values():
    fs = 360.0
    t = np.arange(3600) / fs
    sine = np.sin(2 * np.pi * 3.0 * t)
    record = ECGRecord(np.stack([sine, 1.5 * sine]).astype(np.float32), ["I", "II"], fs, source="mitdb.npy")
    std = standardize_ecg(record, ECGConfig(**RAW))
    assert std.sample_mask.sum() == 5000  # 3600 * 25 / 18, exactly 10 s
    t500 = np.arange(5000) / 500.0
    inner = slice(250, 4750)
    np.testing.assert_allclose(std.signal[idx("I"), inner], np.sin(2 * np.pi * 3.0 * t500)[inner], atol=2e-3)


def test_unmatchable_rate_is_an_error():
    values = np.random.default_rng(5).normal(0, 0.5, (2, 40)).astype(np.float32)
    record = ECGRecord(values, ["I", "II"], 0.2, source="slow.npy")  # 0.2 Hz: 2500x upsampling
    with pytest.raises(InputError, match="slow.npy: cannot resample 0.2 Hz to 500 Hz"):
        standardize_ecg(record, ECGConfig())


def test_crop_start_and_center_from_a_long_record(ptbdb_record):
    record = read_ecg(ptbdb_record)  # 38.4 s at 1 kHz
    full = scipy.signal.resample_poly(record.signal_mV[:12].astype(np.float64), 1, 2, axis=-1, padtype="line")
    assert full.shape[1] == 19200
    start = standardize_ecg(record, ECGConfig(**RAW, crop="start"))
    center = standardize_ecg(record, ECGConfig(**RAW, crop="center"))
    np.testing.assert_allclose(start.signal, full[:, :5000].astype(np.float32), atol=1e-6)
    offset = (19200 - 5000) // 2
    np.testing.assert_allclose(center.signal, full[:, offset: offset + 5000].astype(np.float32), atol=1e-6)
    assert start.sample_mask.all() and center.sample_mask.all()


def test_short_record_is_padded_and_masked():
    record = synthetic_ecg(duration_s=6.0)
    std = standardize_ecg(record, ECGConfig(**RAW))
    assert std.n_valid_samples == 3000
    assert std.sample_mask[:3000].all() and not std.sample_mask[3000:].any()
    assert not std.signal[:, 3000:].any()
    np.testing.assert_array_equal(std.signal[:, :3000], record.signal_mV)


def test_derived_limb_leads_follow_einthoven_exactly():
    eight = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    std = standardize_ecg(synthetic_ecg(leads=eight), ECGConfig())
    assert std.derived_leads == ("III", "aVR", "aVL", "aVF")
    assert std.lead_mask.all()
    lead_i, lead_ii = std.signal[idx("I")], std.signal[idx("II")]
    np.testing.assert_array_equal(std.signal[idx("III")], lead_ii - lead_i)
    np.testing.assert_array_equal(std.signal[idx("aVR")], -(lead_i + lead_ii) / 2)
    np.testing.assert_array_equal(std.signal[idx("aVL")], lead_i - lead_ii / 2)
    np.testing.assert_array_equal(std.signal[idx("aVF")], lead_ii - lead_i / 2)
    # The filtered file leads equal the filtered twelve-lead record's, so derivation is faithful.
    full = standardize_ecg(synthetic_ecg(), ECGConfig())
    np.testing.assert_allclose(std.signal, full.signal, atol=1e-5)


def test_no_derivation_when_disabled_or_lead_ii_missing():
    eight = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    std = standardize_ecg(synthetic_ecg(leads=eight), ECGConfig(derive_limb_leads=False))
    assert std.derived_leads == () and not std.lead_mask[[idx(n) for n in ("III", "aVR", "aVL", "aVF")]].any()
    no_ii = ("I", "V1", "V2", "V3", "V4", "V5", "V6")
    std = standardize_ecg(synthetic_ecg(leads=no_ii), ECGConfig())
    assert std.derived_leads == ()
    assert list(np.flatnonzero(std.lead_mask)) == [idx(n) for n in no_ii]


def test_missing_and_flat_leads_are_zero_and_masked():
    record = synthetic_ecg(leads=tuple(n for n in STANDARD_LEADS if n != "V4"))
    record.signal_mV[record.lead_names.index("V3")] = 0.25  # flat: electrode off
    std = standardize_ecg(record, ECGConfig())
    for name in ("V3", "V4"):
        assert not std.lead_mask[idx(name)] and not std.signal[idx(name)].any()
    assert std.lead_mask.sum() == 10
    assert [f.code for f in std.findings] == ["flat_lead"]


def test_notch_removes_mains_and_keeps_the_ecg_band():
    fs = 500.0
    t = np.arange(5000) / fs
    wanted = np.sin(2 * np.pi * 10.0 * t)
    hum = 0.5 * np.sin(2 * np.pi * 50.0 * t)
    record = ECGRecord(np.stack([wanted + hum, wanted]).astype(np.float32), ["I", "II"], fs, source="hum.npy")
    std = standardize_ecg(record, ECGConfig(bandpass_hz=None, baseline_removal="none", notch_hz=50.0))
    inner = slice(750, 4250)  # 1.5 s from each edge, where the notch's transient has died out
    residual = std.signal[idx("I"), inner] - wanted[inner]
    assert np.sqrt(np.mean(residual**2)) < 0.01 * np.sqrt(np.mean(hum**2)) * 2  # hum down by > 34 dB
    np.testing.assert_allclose(std.signal[idx("II"), inner], wanted[inner], atol=0.01)


@pytest.mark.parametrize("removal", ["bandpass", "median"])
def test_baseline_drift_is_removed(removal):
    record = synthetic_ecg()
    t = np.arange(record.n_samples) / record.sampling_rate_hz
    drift = (1.0 * np.sin(2 * np.pi * 0.1 * t) + 0.5).astype(np.float32)
    drifting = ECGRecord(record.signal_mV + drift, record.lead_names, 500.0, source="drift.npy")
    config = ECGConfig(baseline_removal=removal, bandpass_hz=(0.5, 100.0) if removal == "bandpass" else None, notch_hz=None)
    clean = standardize_ecg(record, config).signal
    cleaned = standardize_ecg(drifting, config).signal
    inner = slice(500, 4500)
    difference = cleaned[:, inner] - clean[:, inner]
    # The 1.5 mV peak-to-peak drift is gone: its 1 s running mean is down > 20-fold
    # (the median estimate is nonlinear: a sloped baseline shifts which sample is the median).
    running_mean = scipy.signal.convolve(difference, np.ones((1, 500)) / 500, mode="valid")
    assert np.abs(running_mean).max() < 0.075
    if removal == "bandpass":  # linear: the drifting record matches the clean one sample by sample
        assert np.abs(difference).max() < 0.03


def test_bandpass_design_is_cached_and_read_only():
    assert bandpass_sos(500.0, 0.5, 100.0, 2) is bandpass_sos(500.0, 0.5, 100.0, 2)
    sos = filter_cascade(500.0, (0.5, 100.0), 2, 50.0, 30.0)
    assert sos.shape == (3, 6) and not sos.flags.writeable
    with pytest.raises(ValueError, match="Nyquist"):
        bandpass_sos(200.0, 0.5, 100.0, 2)


def test_filters_leave_the_input_untouched_and_median_keeps_constants():
    signal = np.random.default_rng(0).normal(0, 1, (3, 2000)).astype(np.float32)
    before = signal.copy()
    apply_filters(signal, 500.0, ECGConfig(baseline_removal="median"))
    np.testing.assert_array_equal(signal, before)
    np.testing.assert_allclose(median_baseline(np.full((2, 1000), 0.7), 500.0), 0.7)


def test_zscore_per_lead_statistics():
    record = synthetic_ecg(duration_s=8.0)  # padded to 10 s: stats over real samples only
    raw = standardize_ecg(record, ECGConfig())
    std = standardize_ecg(record, ECGConfig(normalization="zscore_lead"))
    valid = raw.signal[:, raw.sample_mask].astype(np.float64)
    np.testing.assert_allclose(std.normalization["mean_mV"], valid.mean(axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(std.normalization["std_mV"], valid.std(axis=1), rtol=1e-5)
    out = std.signal[:, std.sample_mask]
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-4)
    assert not std.signal[:, ~std.sample_mask].any()
    assert std.normalization["method"] == "zscore_lead"


def test_zscore_per_record_statistics_ignore_masked_leads():
    record = synthetic_ecg()
    record.signal_mV[idx("V5")] = 0.0  # flat, masked
    raw = standardize_ecg(record, ECGConfig())
    std = standardize_ecg(record, ECGConfig(normalization="zscore_record"))
    valid = raw.signal[raw.lead_mask].astype(np.float64)
    assert std.normalization["mean_mV"] == pytest.approx(valid.mean(), abs=1e-7)
    assert std.normalization["std_mV"] == pytest.approx(valid.std(), rel=1e-6)
    assert not std.signal[idx("V5")].any()
    np.testing.assert_allclose(std.signal[raw.lead_mask].std(), 1.0, atol=1e-4)


def test_quality_errors_raise_input_error_naming_the_file():
    record = synthetic_ecg()
    record.signal_mV[idx("V2"), 100:110] = np.nan
    with pytest.raises(InputError) as info:
        standardize_ecg(record, ECGConfig())
    assert "synthetic.npy" in str(info.value) and "nan [V2]" in str(info.value)
    short = synthetic_ecg(duration_s=1.0)
    with pytest.raises(InputError, match="too_short"):
        standardize_ecg(short, ECGConfig())


def test_config_errors():
    with pytest.raises(ConfigError, match="Nyquist"):
        standardize_ecg(synthetic_ecg(), ECGConfig(sampling_rate_hz=100.0))


# --------------------------------------------------------------------------- reduced-lead views


def test_apply_lead_subset_numpy_single_and_batch():
    std = standardize_ecg(synthetic_ecg(), ECGConfig())
    signal, mask = apply_lead_subset(std.signal, std.lead_mask, "I")
    assert list(np.flatnonzero(mask)) == [0]
    assert not signal[1:].any() and np.array_equal(signal[0], std.signal[0])
    batch = np.stack([std.signal, 2 * std.signal])  # (batch, leads, time)
    batch_mask = np.stack([std.lead_mask, std.lead_mask])
    out, out_mask = apply_lead_subset(batch, batch_mask, "limb")
    assert out.shape == batch.shape and out_mask.shape == (2, 12)
    assert out_mask[:, :6].all() and not out_mask[:, 6:].any()
    np.testing.assert_array_equal(out[1, :6], 2 * std.signal[:6])
    assert not out[:, 6:].any()
    out, out_mask = apply_lead_subset(std.signal, std.lead_mask, ["V2", "ii"])
    assert list(np.flatnonzero(out_mask)) == [idx("II"), idx("V2")]
    assert np.array_equal(std.signal, standardize_ecg(synthetic_ecg(), ECGConfig()).signal)  # input untouched


def test_apply_lead_subset_torch_and_errors():
    signal = torch.randn(4, 12, 100)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[:, 1] = False  # lead II unusable: stays masked
    out, out_mask = apply_lead_subset(signal, mask, "I,II")
    assert isinstance(out, torch.Tensor) and out.dtype == signal.dtype
    assert out_mask[:, 0].all() and not out_mask[:, 1:].any()
    assert torch.equal(out[:, :2], signal[:, :2]) and not out[:, 2:].any()
    with pytest.raises(ValueError, match="unknown lead"):
        apply_lead_subset(signal, mask, "I,V7")
    with pytest.raises(ValueError, match="expected signal"):
        apply_lead_subset(torch.randn(8, 100), mask, "I")


def test_reduce_leads_returns_a_new_record():
    std = standardize_ecg(synthetic_ecg(), ECGConfig())
    single = reduce_leads(std, "II")
    assert list(np.flatnonzero(single.lead_mask)) == [idx("II")]
    assert std.lead_mask.all() and std.signal[0].any()
    assert single.source == std.source and single.sampling_rate_hz == std.sampling_rate_hz


# --------------------------------------------------------------------------- fast paths against references


def _reference(signal_mV: np.ndarray, up: int, down: int, config: ECGConfig, target_hz: float = 500.0) -> np.ndarray:
    """resample_poly, then sosfiltfilt of the notch + band-pass designed at the target rate (2 s odd pad)."""
    signal = signal_mV.astype(np.float64)
    if (up, down) != (1, 1):
        signal = scipy.signal.resample_poly(signal, up, down, axis=-1, padtype="line")
    sos = np.array(filter_cascade(target_hz, *cascade_settings(config)))
    padlen = min(int(round(EDGE_PAD_S * target_hz)), signal.shape[1] - 1)
    return scipy.signal.sosfiltfilt(sos, signal, axis=-1, padlen=padlen)


def _relative_rms(actual: np.ndarray, expected: np.ndarray, trim: float) -> float:
    """RMS of the difference over the middle (1 - 2 * trim) of the samples, relative to the expected RMS there."""
    n = expected.shape[-1]
    middle = slice(int(round(trim * n)), n - int(round(trim * n)))
    difference = actual[..., middle] - expected[..., middle]
    return float(np.sqrt(np.mean(difference**2) / np.mean(expected[..., middle] ** 2)))


@pytest.mark.slow
def test_upsampling_path_matches_resample_then_filter_on_every_ptbxl_100hz_record(ptbxl_dir):
    config = ECGConfig()
    errors, against_default_pad = [], []
    for header in sorted((ptbxl_dir / "records100").rglob("*.hea")):
        record = read_ecg(header)
        std = standardize_ecg(record, config)
        errors.append(_relative_rms(std.signal, _reference(record.signal_mV, 5, 1, config), trim=0.1))
        # scipy's default (42 ms) pad, as before the fused path: same away from the edges.
        resampled = scipy.signal.resample_poly(record.signal_mV.astype(np.float64), 5, 1, axis=-1, padtype="line")
        sos = np.array(filter_cascade(500.0, *cascade_settings(config)))
        default_pad = scipy.signal.sosfiltfilt(sos, resampled, axis=-1)
        against_default_pad.append(_relative_rms(std.signal, default_pad, trim=0.2))
    assert len(errors) == 400
    assert max(errors) < 1e-2 and np.median(errors) < 1e-3  # measured: 3.5e-3 and 4e-4
    assert np.median(against_default_pad) < 5e-3  # measured 1.9e-3


def test_downsampling_path_matches_resample_then_filter_on_ptbdb(ptbdb_record):
    record = read_ecg(ptbdb_record)  # 38.4 s at 1 kHz
    config = ECGConfig()
    full = _reference(record.signal_mV[:12], 1, 2, config)
    assert full.shape == (12, 19200)
    for crop, offset in (("start", 0), ("center", (19200 - 5000) // 2)):
        std = standardize_ecg(record, dataclasses.replace(config, crop=crop))
        assert _relative_rms(std.signal, full[:, offset: offset + 5000], trim=0.1) < 1e-4  # measured 6e-6


def test_same_rate_path_matches_sosfiltfilt_on_ukb_xml(ukb_xml_path):
    record = read_ecg(ukb_xml_path)
    std = standardize_ecg(record, ECGConfig())
    assert _relative_rms(std.signal, _reference(record.signal_mV, 1, 1, ECGConfig()), trim=0.1) < 1e-3  # measured 6e-5


@pytest.mark.parametrize(
    ("fs", "config", "duration_s"),
    [
        (100.0, ECGConfig(notch_hz=None), 10.0),  # band-pass only
        (100.0, ECGConfig(baseline_removal="median"), 10.0),  # median: resample_poly first
        (250.0, ECGConfig(), 10.0),  # up = 2
        (250.0, ECGConfig(notch_hz=60.0, bandpass_hz=(1.0, 40.0)), 10.0),
        (360.0, ECGConfig(), 10.0),  # 25/18: resample_poly first
        (100.0, ECGConfig(), 2.0),  # shortest accepted record: the pad shrinks to the record
        (500.0, ECGConfig(), 2.5),
    ],
)
def test_other_rates_and_settings_match_the_reference(ptbxl_dir, fs, config, duration_s):
    ratio = Fraction(500, int(fs))
    if fs == 100.0:
        source = read_ecg(ptbxl_dir / "records100/00000/00001_lr").signal_mV
    else:  # the 500 Hz record brought down to fs
        full_rate = read_ecg(ptbxl_dir / "records500/00000/00001_hr").signal_mV.astype(np.float64)
        source = scipy.signal.resample_poly(full_rate, ratio.denominator, ratio.numerator, axis=-1).astype(np.float32)
    source = np.ascontiguousarray(source[:, : int(round(duration_s * fs))])
    std = standardize_ecg(ECGRecord(source, list(STANDARD_LEADS), fs, source="rate.npy"), config)
    expected = _reference(source, ratio.numerator, ratio.denominator, config)
    if config.baseline_removal == "median":
        resampled = scipy.signal.resample_poly(source.astype(np.float64), 5, 1, axis=-1, padtype="line")
        expected = _reference(resampled - median_baseline(resampled, 500.0), 1, 1, config)
    n_valid = std.n_valid_samples
    assert n_valid == min(5000, expected.shape[1])
    assert _relative_rms(std.signal[:, :n_valid], expected[:, :n_valid], trim=0.1) < 5e-3  # measured <= 3.4e-3


def test_notch_only_upsampling_keeps_offset_slope_and_ecg_band():
    fs = 250.0
    t = np.arange(2500) / fs
    wanted = 0.3 + 0.1 * t + 0.2 * np.sin(2 * np.pi * 10.0 * t)  # offset and slope: the removed line's path
    hum = 0.5 * np.sin(2 * np.pi * 50.0 * t)
    record = ECGRecord(np.stack([wanted + hum, wanted]).astype(np.float32), ["I", "II"], fs, source="hum250.npy")
    std = standardize_ecg(record, ECGConfig(bandpass_hz=None, baseline_removal="none", notch_hz=50.0))
    t500 = np.arange(5000) / 500.0
    expected = 0.3 + 0.1 * t500 + 0.2 * np.sin(2 * np.pi * 10.0 * t500)
    inner = slice(750, 4250)
    np.testing.assert_allclose(std.signal[idx("I"), inner], expected[inner], atol=0.01)
    np.testing.assert_allclose(std.signal[idx("II"), inner], expected[inner], atol=1e-3)


def test_zero_phase_fft_on_white_noise_matches_resample_then_filter():
    # White noise fills the band up to the source Nyquist, so the images of the
    # zero-stuffed spectrum (which the low-pass edge partly passes) matter:
    # leaving them out gives 5.6e-2 here instead of 4e-4.
    noise = np.random.default_rng(3).normal(0.0, 1.0, (3, 1000)).astype(np.float32)
    config = ECGConfig()
    out = zero_phase_fft(noise, 100.0, config, up=5)
    assert out.shape == (3, 5000) and out.dtype == np.float32
    assert _relative_rms(out, _reference(noise, 5, 1, config), trim=0.2) < 2e-3


def test_zero_phase_fft_rejects_bad_arguments():
    signal = np.zeros((2, 1000), dtype=np.float32)
    with pytest.raises(ValueError, match="neither a band-pass nor a notch"):
        zero_phase_fft(signal, 500.0, ECGConfig(**RAW))
    with pytest.raises(ValueError, match="positive integer"):
        zero_phase_fft(signal, 500.0, ECGConfig(), up=0)


def test_resampling_taps_are_resample_polys_own_design():
    taps = resampling_taps(5, 1)
    assert taps is resampling_taps(5, 1) and not taps.flags.writeable and taps.shape == (101,)
    signal = np.random.default_rng(4).normal(0, 1, (2, 300))
    for up, down in ((5, 1), (1, 2), (25, 18)):
        np.testing.assert_array_equal(
            scipy.signal.resample_poly(signal, up, down, axis=-1, window=resampling_taps(up, down)),
            scipy.signal.resample_poly(signal, up, down, axis=-1),
        )


@pytest.mark.parametrize("n_fft", [7, 8, 9, 1440, 1441])
def test_image_segments_lay_out_the_zero_stuffed_spectrum(n_fft):
    signal = np.random.default_rng(n_fft).normal(0, 1, n_fft)
    half_spectrum, full_spectrum = np.fft.rfft(signal), np.fft.fft(signal)
    for n_bins in (1, n_fft // 2 + 1, n_fft + 3, 5 * n_fft // 2 + 1):
        laid_out = np.empty(n_bins, dtype=complex)
        for out_bins, source_bins, mirrored in _image_segments(n_fft, n_bins):
            laid_out[out_bins] = np.conj(half_spectrum[source_bins]) if mirrored else half_spectrum[source_bins]
        np.testing.assert_allclose(laid_out, full_spectrum[np.arange(n_bins) % n_fft], atol=1e-9)


def test_bandpass_and_notch_helpers_use_the_package_edge_pad():
    signal = np.random.default_rng(5).normal(0, 1, (2, 3000))
    padlen = int(EDGE_PAD_S * 500)
    expected = scipy.signal.sosfiltfilt(np.array(bandpass_sos(500.0, 0.5, 40.0, 2)), signal, padlen=padlen)
    np.testing.assert_allclose(bandpass(signal, 500.0, 0.5, 40.0), expected)
    expected = scipy.signal.sosfiltfilt(np.array(notch_sos(500.0, 50.0, 30.0)), signal, padlen=padlen)
    np.testing.assert_allclose(notch(signal, 500.0, 50.0), expected)
