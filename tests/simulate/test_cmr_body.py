"""Simulator version 2 on the CMR side: the body around the heart, per-subject acquisition, and version 1 kept."""

from __future__ import annotations

import numpy as np
import pytest

from cardiacnets.cmr.frame_statistics import cmr_features
from cardiacnets.cmr.indices import function_indices, mid_ventricular_slice
from cardiacnets.errors import ConfigError
from cardiacnets.simulate import SynthConfig
from cardiacnets.simulate.cmr_body import (
    TISSUE_SIGNAL_RANGE, heart_envelope_mm, sample_acquisition,
)
from cardiacnets.simulate.cmr_model import SIGNAL, _sample_pose, render_cmr
from cardiacnets.simulate.cohort import EID_START, sample_physiology, subject_rngs
from cardiacnets.simulate.heart_model import HeartModel
from support.simulate import SMALL_CMR, render_subject, sha256_of

SMALL = SMALL_CMR
_render, _sha = render_subject, sha256_of


#: SHA-256 of subject 0 of cohort 7 at `SMALL` (short axis, segmentation, 4-chamber), recorded before the next
#: version existed: version 1 at commit 114cbf7 (cardiacnets 0.1.0's simulator), version 2 at 8401802
#: (cardiacnets-reference-0.1.1 was built on it), version 3 at 7fb498f (reference bundles 0.1.2 to 0.1.4),
#: version 4 at 2cf965f (reference bundle 0.1.5). Each bundle was trained on exactly these draws.
PINNED = {
    1: ("80b2d82b82a7916a1cb6537dd0668b7e13fa978f457b18e701fb1b029441dde2",
        "25e5afc741c5175456fe50456b10ab26881841ce2581562f60e184f80fe4d746",
        "546b3545f82ae8e2dfb93265ce4d977fd987d5c5b40a16556c42dff42e3f48ef"),
    2: ("796164ee6342396a0d6c20d6531e50267b8141b711754a0f63f9062837a585ba",
        "25e5afc741c5175456fe50456b10ab26881841ce2581562f60e184f80fe4d746",
        "982dd65fe92c7d9185f3f27f5277bebbb4e9b20ce00e447a5fb1d2280583e210"),
    3: ("75bf0d3c88143c387a883c6a1233a5d05401b0ed62ca7796f02421d7ae2f8d6d",
        "25e5afc741c5175456fe50456b10ab26881841ce2581562f60e184f80fe4d746",
        "4b8a65f0e8b9bad902dcbb600c809f9745c0d828e79e4cc7e166967b5ad8c870"),
    4: ("74d3686900260aeead01a4a38a362512b2b8291f8c3f1e041a57691b20a50316",
        "25e5afc741c5175456fe50456b10ab26881841ce2581562f60e184f80fe4d746",
        "4471b23cb5b96b65f2ea1f3cf0921a1d5f138c6b2db7ff4d89b6ea85cdcd7436"),
}


@pytest.mark.parametrize("version", sorted(PINNED))
def test_a_version_draws_exactly_what_its_bundles_were_trained_on(version):
    cmr = _render(SynthConfig(version=version, **SMALL))
    assert (_sha(cmr.sa.data), _sha(cmr.seg_sa.data), _sha(cmr.la_4ch.data)) == PINNED[version]


def test_version_2_changes_the_images_not_the_ground_truth():
    v1, v2 = _render(SynthConfig(version=1, **SMALL)), _render(SynthConfig(version=2, **SMALL))
    np.testing.assert_array_equal(v1.seg_sa.data, v2.seg_sa.data)
    assert function_indices(v1.seg_sa) == function_indices(v2.seg_sa)
    assert not np.array_equal(v1.sa.data, v2.sa.data) and not np.array_equal(v1.la_4ch.data, v2.la_4ch.data)


def _ring_features(config, n=6):
    rows = []
    for index in range(n):
        cmr = _render(config, index=index, seed=3)
        seg = cmr.seg_sa.data
        mid = mid_ventricular_slice(seg[:, :, :, 0])
        rows.append(cmr_features(cmr.sa.data[:, :, mid, 0], seg[:, :, mid, 0]))
    return {key: float(np.nanmedian([r[key] for r in rows])) for key in rows[0]}


def test_version_2_surroundings_move_toward_real_frames():
    # Real mid-ventricular frames (ACDC, Sunnybrook; `cardiacnets bench realism --modality cmr`): the ring 1-3 LV
    # radii outside the cavity has median 0.27 of the blood pool and 41 % dark pixels (< 0.2); dark pixels carry
    # noise of SD 0.006. Version 1: 0.50, 16 %, 0.035 (one grey mediastinum, thermal noise only).
    v1, v2 = _ring_features(SynthConfig(version=1)), _ring_features(SynthConfig(version=2))
    assert v1["ring_dark_fraction"] < 0.25 < v2["ring_dark_fraction"]
    assert v2["ring_median"] < v1["ring_median"] - 0.05
    assert v2["dark_noise_sd"] < 0.5 * v1["dark_noise_sd"]
    assert 0.15 < v2["blood_cv"] < 0.45  # papillary muscles and trabeculae (real 0.24-0.36 interquartile)


def test_acquisition_draws_within_its_ranges_and_leaves_the_blood_signal():
    rng = np.random.default_rng(0)
    draws = [sample_acquisition(SIGNAL, rng) for _ in range(200)]
    for name, (lo, hi) in TISSUE_SIGNAL_RANGE.items():
        values = np.array([d.signal[name] for d in draws])
        assert lo <= values.min() and values.max() <= hi and values.std() > 0.2 * (hi - lo) / np.sqrt(12)
    assert all(d.signal["blood"] == SIGNAL["blood"] for d in draws)  # intensities stay relative to the blood pool
    assert SIGNAL["myocardium"] == 0.27  # the shared table is not modified


def test_heart_envelope_holds_the_heart_and_ends_above_the_atria():
    config = SynthConfig()
    physiology_rng, _, cmr_rng = subject_rngs(0, 0)
    phys = sample_physiology(EID_START, physiology_rng, config)
    model, pose = HeartModel(phys, config), _sample_pose(phys, cmr_rng)
    mid = pose.base_centre + 0.4 * phys.lv_long_axis_mm * pose.long_axis
    outer = model.radii(np.array([0.4 * phys.lv_long_axis_mm]))["rv_wall"][0].max(axis=0)  # per angle, mm
    points = np.stack([mid,                                              # on the axis: inside
                       mid + (outer.max() + 40.0) * pose.lateral,        # beyond the wall and margin: outside
                       pose.base_centre - 60.0 * pose.long_axis])        # above the great-vessel column: outside
    distance = heart_envelope_mm(model, pose, points, margin_mm=5.0)
    assert distance[0] < -outer.min() and distance[1] > 0 and distance[2] > 0
    # The margin moves the boundary by exactly its width.
    assert heart_envelope_mm(model, pose, points[:2], 10.0)[1] == pytest.approx(distance[1] - 5.0)


def test_version_settings_and_validation():
    old = SynthConfig(version=1)
    assert old.setting("noise_sigma") == 0.05 and old.setting("cmr_texture") is False
    assert SynthConfig().setting("cmr_texture") is True and SynthConfig(noise_sigma=0.02).setting("noise_sigma") == 0.02
    with pytest.raises(ConfigError, match="version: 9"):
        SynthConfig(version=9).validate()
    assert SynthConfig(version=2).setting("image_size") == 80 and SynthConfig(version=3).setting("image_size") == 96
    assert SynthConfig(version=3, image_size=96).setting("image_size") == 96
    with pytest.raises(ConfigError, match="signal_noise"):
        SynthConfig(signal_noise=0.9).validate()
