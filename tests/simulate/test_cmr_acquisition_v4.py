"""Simulator version 4 on the CMR side: a wider per-subject acquisition (version 3 pinned in test_cmr_body)."""

from __future__ import annotations

import numpy as np

from cardiacnets.cmr.frame_statistics import cmr_features
from cardiacnets.cmr.indices import function_indices, mid_ventricular_slice
from cardiacnets.simulate import SynthConfig
from cardiacnets.simulate.cmr_body import ACQUISITION_V4, TISSUE_SIGNAL_RANGE_V3, sample_acquisition
from cardiacnets.simulate.cmr_model import SIGNAL
from cardiacnets.simulate.thorax_atlas import committed_atlas, real_surroundings
from support.simulate import SMALL_CMR, render_subject

SMALL = SMALL_CMR
_render = render_subject


def test_version_4_changes_the_images_not_the_ground_truth():
    for index in range(3):
        v3 = _render(SynthConfig(version=3, **SMALL), index=index)
        v4 = _render(SynthConfig(version=4, **SMALL), index=index)
        np.testing.assert_array_equal(v3.seg_sa.data, v4.seg_sa.data)
        assert function_indices(v3.seg_sa) == function_indices(v4.seg_sa)
        assert not np.array_equal(v3.sa.data, v4.sa.data)


def test_version_4_acquisition_draws_within_its_ranges():
    rng = np.random.default_rng(0)
    draws = [sample_acquisition(SIGNAL, rng, version=4) for _ in range(300)]
    for name in ("dark_floor", "surround_blur_px", "atlas_gamma", "atlas_gain", "trabecular_depth", "psf"):
        lo, hi = ACQUISITION_V4[name]
        values = np.array([getattr(d, name) for d in draws])
        assert lo <= values.min() and values.max() <= hi, name
        assert values.std() > 0.2 * (hi - lo) / np.sqrt(12) if hi > lo else np.all(values == lo), name
    myocardium = np.array([d.signal["myocardium"] for d in draws])
    assert ACQUISITION_V4["myocardium"][0] <= myocardium.min() and myocardium.max() <= ACQUISITION_V4["myocardium"][1]
    assert all(d.signal["blood"] == SIGNAL["blood"] for d in draws)
    # Version 3 keeps its ranges and the extras' no-op values.
    old = [sample_acquisition(SIGNAL, rng, version=3) for _ in range(50)]
    lo, hi = TISSUE_SIGNAL_RANGE_V3["myocardium"]
    assert all(lo <= d.signal["myocardium"] <= hi for d in old)
    assert all(d.dark_floor == 0.0 and d.surround_blur_px == 0.0 and d.atlas_gamma is None
               and d.trabecular_depth is None for d in old)


def test_given_atlas_gamma_leaves_the_generator_where_a_drawn_one_does():
    kwargs = dict(n=40, pixel_mm=1.8, lv_centre_px=np.array([20.0, 20.0]), rv_direction=np.array([0.0, 1.0]),
                  anterior=np.array([-1.0, 0.0]), slice_fractions=np.array([0.5]), n_frames=2, heart_radius_mm=40.0)
    drawn_rng, given_rng = np.random.default_rng(5), np.random.default_rng(5)
    drawn = real_surroundings(committed_atlas(), rng=drawn_rng, **kwargs)
    flat = real_surroundings(committed_atlas(), rng=given_rng, gamma=1.0, **kwargs)
    assert drawn_rng.random() == given_rng.random()  # the same draws were made
    assert not np.allclose(drawn, flat)
    # A gamma below 1 lifts the dark surroundings (the atlas is blood-normalised: values below 1).
    dim = real_surroundings(committed_atlas(), rng=np.random.default_rng(5), gamma=0.5, **kwargs)
    dark = (flat > 0.02) & (flat < 0.3)
    assert np.all(dim[dark] > flat[dark])


def test_version_4_widens_the_dark_level_and_keeps_the_blood_pool_at_one():
    # Version 3's darkest 5 % of the field sat at 0.01-0.05 of the blood signal (the Sunnybrook thorax's level);
    # ACDC's at 0.02-0.16. The dark floor lifts it per subject without moving the blood pool.
    rows = {}
    for version in (3, 4):
        rows[version] = []
        for index in range(8):
            cmr = _render(SynthConfig(version=version), index=index, seed=3)
            seg = cmr.seg_sa.data
            mid = mid_ventricular_slice(seg[:, :, :, 0])
            rows[version].append(cmr_features(cmr.sa.data[:, :, mid, 0], seg[:, :, mid, 0]))
    p05 = {v: np.array([r["field_p05"] for r in rows[v]]) for v in rows}
    assert np.median(p05[4]) > np.median(p05[3]) and p05[4].max() > p05[3].max() + 0.02
