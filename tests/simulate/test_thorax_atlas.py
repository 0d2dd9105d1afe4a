"""Simulator version 3: real surroundings from the Sunnybrook thorax atlas (`cardiacnets.simulate.thorax_atlas`)."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from cardiacnets.cmr.frame_statistics import cmr_features
from cardiacnets.cmr.indices import function_indices, mid_ventricular_slice
from cardiacnets.errors import InputError
from cardiacnets.simulate import SynthConfig
from cardiacnets.simulate import thorax_atlas as ta
from cardiacnets.simulate.cmr_model import render_cmr
from cardiacnets.simulate.cohort import EID_START, sample_physiology, subject_rngs
from support import REPO_ROOT

SMALL = dict(la_image_size=56, n_frames=10)


def _builder():
    """``preprocessing/build_thorax_atlas.py`` (a script, not part of the package) as a module."""
    spec = importlib.util.spec_from_file_location("build_thorax_atlas", REPO_ROOT / "preprocessing" / "build_thorax_atlas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _render(config, index=0, seed=7):
    physiology_rng, _, cmr_rng = subject_rngs(seed, index)
    phys = sample_physiology(EID_START + index, physiology_rng, config)
    return render_cmr(phys, cmr_rng, config)


def test_committed_atlas_is_what_the_builder_makes_from_the_shared_cine(shared_data):
    folder = shared_data / "sunnybrook"
    if not folder.is_dir():
        pytest.skip("no shared Sunnybrook cine")
    built, committed = _builder().build_thorax_atlas(folder), ta.committed_atlas()
    np.testing.assert_array_equal(built.frames, committed.frames)
    np.testing.assert_array_equal(built.heart_mask, committed.heart_mask)
    np.testing.assert_allclose(built.rv_direction, committed.rv_direction)
    assert built.lv_slices == committed.lv_slices and built.ed_phase == committed.ed_phase


def test_committed_atlas_layout():
    atlas = ta.committed_atlas()
    assert atlas.frames.dtype == np.uint8 and atlas.frames.shape == (12, 20, 224, 224)
    assert atlas.heart_mask.shape == (12, 224, 224) and atlas.lv_slices == (2, 10)
    assert atlas.pixel_mm == pytest.approx(1.367, abs=1e-3)
    assert np.linalg.norm(atlas.rv_direction) == pytest.approx(1.0) and np.linalg.norm(atlas.anterior) == pytest.approx(1.0)
    # The heart is inpainted: inside its mask the ED frame holds no blood-bright pool (blood = 1).
    mid = 6
    frame = atlas.frames[mid, atlas.ed_phase] / ta.INTENSITY_STEP
    assert np.percentile(frame[atlas.heart_mask[mid]], 90) < 0.9
    # Slices map by position along the LV: base above the mitral plane, apex beyond the last contour.
    assert atlas.slice_for(-0.3) < 2 and atlas.slice_for(0.0) == 2 and atlas.slice_for(0.99) == 10
    assert atlas.slice_for(1.5) == 11


def test_inpaint_fills_from_around_the_hole():
    inpaint = _builder().inpaint
    frame = np.full((40, 40), 0.7)
    hole = np.zeros((40, 40), bool)
    hole[10:30, 12:28] = True
    frame[hole] = 5.0
    np.testing.assert_allclose(inpaint(frame, hole), 0.7)
    ramp = np.tile(np.linspace(0.0, 1.0, 41), (41, 1))  # value = column / 40
    hole = np.zeros((41, 41), bool)
    hole[16:25, 16:25] = True
    filled = inpaint(np.where(hole, 9.0, ramp), hole)
    assert filled[20, 20] == pytest.approx(0.5, abs=0.02)  # symmetric about the hole's centre
    assert filled[20, 17] < filled[20, 20] < filled[20, 23]  # and it keeps the gradient
    np.testing.assert_array_equal(filled[~hole], ramp[~hole])


def _dot_atlas(rv_direction, anterior):
    """A 2-slice atlas, black but for two dots: 20 px along the RV direction and 12 px to its anterior side."""
    size = 64
    frames = np.zeros((2, 4, size, size), np.uint8)
    centre = np.array([32.0, 32.0])
    u = np.asarray(rv_direction, float)
    perp = np.array([-u[1], u[0]]) if np.array([-u[1], u[0]]) @ anterior > 0 else np.array([u[1], -u[0]])
    for offset, value in ((20 * u, 200), (12 * perp, 100)):
        r, c = np.rint(centre + offset).astype(int)
        frames[:, :, r, c] = value
    return ta.ThoraxAtlas(frames=frames, heart_mask=np.zeros((2, size, size), bool), lv_centre_px=np.array([centre] * 2),
                          epi_radius_px=np.array([10.0, 10.0]), rv_direction=u, anterior=np.asarray(anterior, float),
                          lv_slices=(0, 1), ed_phase=0, pixel_mm=1.0)


@pytest.mark.parametrize("sim_rv, sim_anterior", [((0.0, 1.0), (1.0, 0.0)), ((0.0, 1.0), (-1.0, 0.0)),
                                                  ((1.0, 0.0), (0.0, -1.0))])
def test_real_surroundings_put_the_atlas_anatomy_on_the_simulated_sides(monkeypatch, sim_rv, sim_anterior):
    monkeypatch.setattr(ta, "SCALE_JITTER", (1.0, 1.0))
    monkeypatch.setattr(ta, "ROTATION_SD_DEG", 0.0)
    monkeypatch.setattr(ta, "GAMMA_RANGE", (1.0, 1.0))
    monkeypatch.setattr(ta, "ELASTIC_MM", 0.0)
    monkeypatch.setattr(ta, "SLICE_JITTER", 0.0)
    atlas = _dot_atlas((0.6, 0.8), (0.8, -0.6))
    # Same heart size and pixel size: the dots land 20 px along the simulated RV direction and 12 px to the
    # simulated anterior side of the simulated LV centre, whatever the two images' orientations and handedness.
    out = ta.real_surroundings(atlas, n=64, pixel_mm=1.0, lv_centre_px=np.array([30.0, 34.0]),
                               rv_direction=np.array(sim_rv), anterior=np.array(sim_anterior),
                               slice_fractions=np.array([0.2]), n_frames=3, heart_radius_mm=10.0,
                               rng=np.random.default_rng(0))
    assert out.shape == (1, 3, 64, 64)
    frame = out[0, 0]
    rv_dot = np.unravel_index(np.argmax(frame), frame.shape)
    np.testing.assert_allclose(rv_dot, np.array([30.0, 34.0]) + 20 * np.array(sim_rv), atol=1)
    anterior_dot = np.unravel_index(np.argmax(np.where(frame > 1.5, 0, frame)), frame.shape)
    offset = np.array(anterior_dot) - np.array([30.0, 34.0])
    assert np.linalg.norm(offset) == pytest.approx(12, abs=1.5) and offset @ np.array(sim_anterior) > 0


def test_real_surroundings_scale_with_the_simulated_heart(monkeypatch):
    monkeypatch.setattr(ta, "SCALE_JITTER", (1.0, 1.0))
    monkeypatch.setattr(ta, "ROTATION_SD_DEG", 0.0)
    monkeypatch.setattr(ta, "ELASTIC_MM", 0.0)
    atlas = _dot_atlas((1.0, 0.0), (0.0, 1.0))
    out = ta.real_surroundings(atlas, n=64, pixel_mm=1.0, lv_centre_px=np.array([20.0, 32.0]),
                               rv_direction=np.array([1.0, 0.0]), anterior=np.array([0.0, 1.0]),
                               slice_fractions=np.array([0.5]), n_frames=1, heart_radius_mm=15.0,
                               rng=np.random.default_rng(1))
    r, c = np.unravel_index(np.argmax(out[0, 0]), (64, 64))
    assert (r, c) == (50, 32)  # 20 px of a 10 mm heart -> 30 px of a 15 mm heart


def test_version_3_keeps_the_ground_truth_of_version_2_and_widens_the_field_of_view():
    v2, v3 = _render(SynthConfig(version=2, **SMALL)), _render(SynthConfig(version=3, **SMALL))
    assert v3.sa.data.shape[:2] == (96, 96) and v2.sa.data.shape[:2] == (80, 80)
    np.testing.assert_array_equal(v3.seg_sa.data[8:88, 8:88], v2.seg_sa.data)  # the heart window, centred
    assert not v3.seg_sa.data[:8].any() and not v3.seg_sa.data[88:].any()
    assert function_indices(v3.seg_sa) == function_indices(v2.seg_sa)
    # The affine keeps the LV where it was: the window's first pixel is at v2's origin.
    np.testing.assert_allclose(v3.sa.affine[:3, :3], v2.sa.affine[:3, :3])
    np.testing.assert_allclose(v3.sa.affine[:3, :3] @ [8, 8, 0] + v3.sa.affine[:3, 3], v2.sa.affine[:3, 3], atol=1e-6)


def test_version_3_frames_carry_real_surroundings():
    # Outside the heart window the frame is the warped real cine, not a flat or drawn background: its
    # structure has real frames' spread (local SD in the ring 2-4 LV radii out: real 0.055-0.093 interquartile).
    rows = []
    for index in range(4):
        cmr = _render(SynthConfig(version=3, **SMALL), index=index, seed=3)
        seg = cmr.seg_sa.data
        mid = mid_ventricular_slice(seg[:, :, :, 0])
        rows.append(cmr_features(cmr.sa.data[:, :, mid, 0], seg[:, :, mid, 0]))
        border = cmr.sa.data[:8, :, mid, 0].astype(float)
        assert border.std() > 0.1 * border.mean()
    assert 0.04 < np.median([r["ring_local_sd"] for r in rows]) < 0.12
    assert 0.15 < np.median([r["ring_median"] for r in rows]) < 0.45


def test_elastic_deformation_is_smooth_and_of_the_stated_size():
    points = np.array([[0.0, 1.0, 40.0], [0.0, 0.0, 0.0]])  # mm: a point, its 1 mm neighbour, one 40 mm away
    draws = np.stack([ta._elastic_mm(points, np.random.default_rng(seed)) for seed in range(400)])  # (400, 2, 3)
    # Each component: a sum of plane waves whose sine has RMS 1/sqrt(2): SD ELASTIC_MM / sqrt(2) over subjects.
    assert draws[:, :, 0].std() == pytest.approx(ta.ELASTIC_MM / np.sqrt(2), rel=0.15)
    step = np.abs(draws[:, :, 1] - draws[:, :, 0])  # 1 mm apart: nearly the same shift, and never folding
    assert step.mean() < 0.15 and step.max() < 0.8
    assert np.abs(draws[:, :, 2] - draws[:, :, 0]).mean() > 1.0  # 40 mm apart: different shifts


def test_builder_names_the_folder_of_a_corrupted_cine(shared_data, tmp_path):
    """A truncated DICOM of the Sunnybrook cine: the builder stops with an InputError naming the cine folder."""
    source = shared_data / "sunnybrook"
    if not source.is_dir():
        pytest.skip("no shared Sunnybrook cine")
    copy = tmp_path / "sunnybrook"
    shutil.copytree(source, copy)
    dicom = copy / "SCD0000101" / "77.dcm"
    dicom.chmod(0o644)
    dicom.write_bytes((source / "SCD0000101" / "77.dcm").read_bytes()[:2000])
    with pytest.raises(InputError, match=r"SCD0000101: slices have different frame counts"):
        _builder().build_thorax_atlas(copy)
    assert (source / "SCD0000101" / "77.dcm").stat().st_size > 2000  # the source is untouched
