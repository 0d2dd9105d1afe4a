"""The standard cine representation, on constructed phantoms and on ACDC."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cardiacnets.cmr.config import CMRConfig
from cardiacnets.cmr.standardize import (
    canonical_inplane_axcodes,
    find_crop_center,
    resample_cycle,
    select_slices,
    standardize_cine,
)
from cardiacnets.errors import InputError
from cardiacnets.io.acdc import read_acdc_h5
from cardiacnets.io.cmr_image import CMRImage


def disc_radius(t: int, n_frames: int, radius: float) -> float:
    """A disc that is largest at frame 0 (end-diastole) and smallest half-way."""
    return radius * (1 + 0.3 * np.cos(2 * np.pi * t / n_frames))


def pulsing_disc(
    shape=(120, 110, 5, 30), center=(80.0, 35.0), radius=12.0, spacing_mm=1.8, disc_slices=None, noise=2.0, seed=0
) -> tuple[CMRImage, CMRImage]:
    """A bright disc pulsing off-centre on a noisy background, and its segmentation (label 1)."""
    nx, ny, n_slices, n_frames = shape
    x, y = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    distance = np.hypot(x - center[0], y - center[1])
    disc_slices = range(n_slices) if disc_slices is None else disc_slices
    data = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    for t in range(n_frames):
        inside = distance <= disc_radius(t, n_frames, radius)
        for k in disc_slices:
            data[:, :, k, t] = 100.0 * inside
            labels[:, :, k, t] = inside
    data += np.random.default_rng(seed).normal(20.0, noise, shape).astype(np.float32)
    affine = np.diag([spacing_mm, spacing_mm, 10.0, 1.0])
    image = CMRImage(data, affine, source="phantom.nii.gz", view="sa", frame_interval_ms=30.0)
    seg = CMRImage(labels, affine.copy(), source="seg_phantom.nii.gz", view="sa", is_segmentation=True)
    return image, seg


def bright_centroid(frame: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return np.array(ndimage.center_of_mass(frame > threshold))


def test_crop_is_centred_on_the_pulsing_disc_without_segmentation():
    image, _ = pulsing_disc()
    out = standardize_cine(image, CMRConfig(crop_size=40, n_frames=50))
    assert out.center_method == "temporal_variance"
    np.testing.assert_allclose(out.center_xy, (80.0, 35.0), atol=1.0)
    assert out.frames.shape == (1, 50, 40, 40) and out.frames.dtype == np.float32
    assert 0.0 <= out.frames.min() and out.frames.max() <= 1.0
    np.testing.assert_allclose(bright_centroid(out.frames[0, 0]), (20.0, 20.0), atol=1.5)
    assert out.spacing_mm == 1.8 and out.frame_interval_ms == pytest.approx(30.0 * 30 / 50)


def test_crop_is_centred_from_the_segmentation():
    image, seg = pulsing_disc(center=(30.0, 70.0))
    center, method = find_crop_center(image, seg)
    assert method == "segmentation"
    np.testing.assert_allclose(center, (30.0, 70.0), atol=0.05)
    out = standardize_cine(image, CMRConfig(crop_size=40, n_frames=30), seg=seg)
    np.testing.assert_allclose(bright_centroid(out.frames[0, 0]), (20.0, 20.0), atol=1.0)
    assert out.seg.shape == (1, 30, 40, 40) and set(np.unique(out.seg)) == {0, 1}
    for t in (0, 15):  # the cropped labels cover the cropped disc
        disc = out.frames[0, t] > 0.5
        overlap = np.count_nonzero(disc & (out.seg[0, t] == 1)) / np.count_nonzero(disc | (out.seg[0, t] == 1))
        assert overlap > 0.95


def test_oblique_grid_is_reoriented_and_resampled():
    """A world-space phantom on a grid whose axes point posterior and left at 1.2 mm."""
    spacing, n_frames = 1.2, 20
    affine = np.array(
        [[0.0, -spacing, 0.0, 70.0], [-spacing, 0.0, 0.0, 40.0], [0.0, 0.0, 10.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )
    assert canonical_inplane_axcodes(affine) == "RAS"
    i, j = np.meshgrid(np.arange(130), np.arange(130), indexing="ij")
    world_r, world_a = 70.0 - spacing * j, 40.0 - spacing * i
    disc_r, disc_a, radius_mm = -26.0, -14.0, 15.0  # voxel (45, 80): off-centre
    data = np.zeros((130, 130, 1, n_frames), np.float32)
    marker = np.hypot(world_r - (disc_r + 25.0), world_a - disc_a) <= 3.0  # static, 25 mm to the right
    for t in range(n_frames):
        data[:, :, 0, t] = 100.0 * (np.hypot(world_r - disc_r, world_a - disc_a) <= disc_radius(t, n_frames, radius_mm))
        data[:, :, 0, t] += 100.0 * marker
    image = CMRImage(data, affine, view="la_4ch")
    out = standardize_cine(image, CMRConfig(crop_size=64, n_frames=n_frames, intensity_percentiles=(0.0, 100.0)))
    assert out.orientation == ("R", "A", "S") and out.slice_indices == [0]
    ed = out.frames[0, 0]
    labels, _ = ndimage.label(ed > 0.5)
    sizes = ndimage.sum(np.ones_like(ed), labels, index=[1, 2])
    disc_label, marker_label = (1, 2) if sizes[0] > sizes[1] else (2, 1)
    disc_center = np.array(ndimage.center_of_mass(labels == disc_label))
    marker_center = np.array(ndimage.center_of_mass(labels == marker_label))
    np.testing.assert_allclose(disc_center, (32.0, 32.0), atol=1.0)
    # R is the first output axis: the marker sits 25 mm / 1.8 mm further along it.
    np.testing.assert_allclose(marker_center - disc_center, (25.0 / 1.8, 0.0), atol=0.7)
    expected_area = np.pi * (disc_radius(0, n_frames, radius_mm) / 1.8) ** 2
    assert max(sizes) == pytest.approx(expected_area, rel=0.05)


def test_percentile_normalisation_matches_hand_computation():
    rng = np.random.default_rng(7)
    data = rng.gamma(2.0, 50.0, (60, 50, 3, 6)).astype(np.float32)
    labels = np.zeros(data.shape, np.uint8)
    labels[28:33, 19:24, :, :] = 1  # heart centred on voxel (30, 21)
    image = CMRImage(data, np.diag([1.8, 1.8, 10.0, 1.0]), view="sa")
    seg = CMRImage(labels, np.diag([1.8, 1.8, 10.0, 1.0]), view="sa", is_segmentation=True)
    config = CMRConfig(crop_size=20, n_frames=6, intensity_percentiles=(5.0, 95.0))
    out = standardize_cine(image, config, seg=seg)
    assert out.slice_indices == [1]  # LV cavity on slices 0-2
    low, high = np.percentile(data[:, :, 1, :], [5.0, 95.0])
    np.testing.assert_allclose(out.intensity_range, (low, high), rtol=1e-5)
    window = data[20:40, 11:31, 1, :]  # start = centre - crop // 2
    expected = np.clip((window - low) / (high - low), 0.0, 1.0)
    np.testing.assert_allclose(out.frames[0], np.moveaxis(expected, -1, 0), atol=1e-5)
    np.testing.assert_array_equal(out.seg[0, 0], labels[20:40, 11:31, 1, 0])


def test_resample_cycle_is_periodic_linear_interpolation():
    frames = np.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(resample_cycle(frames, 8), [0, 0.5, 1, 1.5, 2, 2.5, 3, 1.5])
    np.testing.assert_allclose(resample_cycle(frames, 2), [0, 2])
    np.testing.assert_allclose(resample_cycle(frames, 4), frames)
    labels = np.array([[0, 1, 2]], np.uint8)
    np.testing.assert_array_equal(resample_cycle(labels, 6, axis=1, nearest=True), [[0, 1, 1, 2, 2, 0]])


def test_frame_count_and_single_phase_input():
    image, seg = pulsing_disc(shape=(60, 60, 2, 30), center=(30.0, 30.0))
    for n_frames in (50, 30, 12):
        out = standardize_cine(image, CMRConfig(crop_size=32, n_frames=n_frames), seg=seg)
        assert out.frames.shape == (1, n_frames, 32, 32) and out.seg.shape == (1, n_frames, 32, 32)
    # A single phase (like ACDC ED) keeps its one frame; the segmentation places the crop.
    single = CMRImage(image.data[..., :1].copy(), image.affine, view="sa")
    single_seg = CMRImage(seg.data[..., :1].copy(), seg.affine, view="sa", is_segmentation=True)
    out = standardize_cine(single, CMRConfig(crop_size=32), seg=single_seg)
    assert out.frames.shape == (1, 1, 32, 32) and out.frame_interval_ms is None
    # An ED-only segmentation of a cine gives one label frame.
    out = standardize_cine(image, CMRConfig(crop_size=32, n_frames=10), seg=single_seg)
    assert out.frames.shape == (1, 10, 32, 32) and out.seg.shape == (1, 1, 32, 32)


def _stack_with_lv(n_slices=10, lv_slices=range(2, 8), apex_at_end=True) -> tuple[CMRImage, CMRImage]:
    """A 10-slice stack whose LV cavity (label 1) shrinks towards the apex."""
    image, _ = pulsing_disc(shape=(40, 40, n_slices, 4), center=(20.0, 20.0))
    labels = np.zeros(image.data.shape, np.uint8)
    for rank, k in enumerate(lv_slices):
        size = 8 - rank if apex_at_end else 3 + rank  # cavity half-width per slice
        labels[20 - size : 20 + size, 20 - size : 20 + size, k, :] = 1
    return image, CMRImage(labels, image.affine, view="sa", is_segmentation=True)


def test_slice_selection_by_hand():
    image, seg = _stack_with_lv()
    assert select_slices(image, CMRConfig(sa_slices="mid"), seg)[0] == [4]  # (2 + 7) // 2
    # thirds of slices 2..7 (6 slices): 2 + 1, 2 + 3, 2 + 5; base (larger cavity) first
    assert select_slices(image, CMRConfig(sa_slices="basal_mid_apical"), seg)[0] == [3, 5, 7]
    _, seg_apex_first = _stack_with_lv(apex_at_end=False)
    assert select_slices(image, CMRConfig(sa_slices="basal_mid_apical"), seg_apex_first)[0] == [7, 5, 3]
    assert select_slices(image, CMRConfig(sa_slices="all", n_sa_slices=4), seg)[0] == [3, 4, 5, 6]
    assert select_slices(image, CMRConfig(sa_slices="all", n_sa_slices=12), seg)[0] == list(range(10)) + [-1, -1]
    # without a segmentation: thirds of the whole stack, stack order
    assert select_slices(image, CMRConfig(sa_slices="basal_mid_apical"))[0] == [1, 5, 8]


def test_slices_without_segmentation_follow_the_beating_slices():
    image, _ = pulsing_disc(shape=(60, 60, 7, 12), center=(25.0, 35.0), disc_slices=[5])
    out = standardize_cine(image, CMRConfig(crop_size=32, n_frames=12))
    assert out.slice_indices == [5]
    stack, _ = pulsing_disc(shape=(60, 60, 10, 12), center=(25.0, 35.0), disc_slices=range(2, 8))
    center = (25.0, 35.0)
    assert select_slices(stack, CMRConfig(sa_slices="mid"), None, center)[0] == [4]
    assert select_slices(stack, CMRConfig(sa_slices="basal_mid_apical"), None, center)[0] == [3, 5, 7]
    assert select_slices(stack, CMRConfig(sa_slices="all", n_sa_slices=4), None, center)[0] == [3, 4, 5, 6]
    static = CMRImage(image.data[..., :1].copy(), image.affine, view="sa")
    _, seg = pulsing_disc(shape=(60, 60, 7, 1), center=(25.0, 35.0))
    seg.data[:, :, :, :] = 0  # no LV cavity anywhere, but a heart label for the centre
    seg.data[25, 35, :, 0] = 2
    assert select_slices(static, CMRConfig(sa_slices="mid"))[0] == [3]  # middle of the stack
    with pytest.raises(InputError, match="no LV cavity"):
        select_slices(static, CMRConfig(sa_slices="mid"), seg)


def test_all_slices_pads_with_empty_slices():
    image, seg = _stack_with_lv(n_slices=10)
    out = standardize_cine(image, CMRConfig(sa_slices="all", n_sa_slices=12, crop_size=16, n_frames=4), seg=seg)
    assert out.frames.shape == (12, 4, 16, 16) and out.slice_indices[-2:] == [-1, -1]
    assert not out.frames[-2:].any() and out.frames[:-2].any()
    assert not out.seg[-2:].any()


def test_long_axis_views_have_one_slice():
    image, _ = pulsing_disc(shape=(50, 50, 1, 8), center=(25.0, 25.0))
    image.view = "la_4ch"
    assert select_slices(image, CMRConfig(sa_slices="all"))[0] == [0]
    two, _ = pulsing_disc(shape=(50, 50, 2, 8), center=(25.0, 25.0))
    two.view = "la_2ch"
    with pytest.raises(InputError) as err:
        standardize_cine(two, CMRConfig(crop_size=16))
    assert "phantom.nii.gz" in str(err.value) and "one slice" in str(err.value)


def test_inputs_are_not_modified():
    image, seg = pulsing_disc(shape=(50, 50, 3, 10), center=(20.0, 30.0))
    data, labels, affine = image.data.copy(), seg.data.copy(), image.affine.copy()
    standardize_cine(image, CMRConfig(crop_size=24, n_frames=16, sa_slices="all", n_sa_slices=4), seg=seg)
    np.testing.assert_array_equal(image.data, data)
    np.testing.assert_array_equal(seg.data, labels)
    np.testing.assert_array_equal(image.affine, affine)


def test_bad_inputs_raise_input_error():
    image, seg = pulsing_disc(shape=(40, 40, 2, 6), center=(20.0, 20.0))
    wrong_grid = CMRImage(seg.data[:-1].copy(), seg.affine, source="seg_other.nii.gz", is_segmentation=True)
    with pytest.raises(InputError) as err:
        standardize_cine(image, CMRConfig(crop_size=16), seg=wrong_grid)
    assert "seg_other.nii.gz" in str(err.value) and "grid" in str(err.value)
    single = CMRImage(image.data[..., :1].copy(), image.affine, source="ed_only.nii.gz", view="sa")
    with pytest.raises(InputError) as err:
        standardize_cine(single, CMRConfig(crop_size=16))
    assert "ed_only.nii.gz" in str(err.value) and "single frame" in str(err.value)
    flat = CMRImage(np.full((40, 40, 1, 1), 5.0, np.float32), image.affine, source="flat.nii.gz", view="sa")
    flat_seg = CMRImage(np.ones((40, 40, 1, 1), np.uint8), image.affine, view="sa", is_segmentation=True)
    with pytest.raises(InputError) as err:
        standardize_cine(flat, CMRConfig(crop_size=16), seg=flat_seg)
    assert "flat.nii.gz" in str(err.value) and "constant" in str(err.value)
    with pytest.raises(InputError, match="segmentation"):
        standardize_cine(seg, CMRConfig(crop_size=16))


@pytest.mark.slow
def test_acdc_crops_contain_the_lv(acdc_dir):
    config = CMRConfig(sa_slices="basal_mid_apical")
    for path in sorted(acdc_dir.glob("patient*_frame*.h5")):
        image, seg = read_acdc_h5(path)
        out = standardize_cine(image, config, seg=seg)
        assert out.frames.shape == (3, 1, 80, 80) and out.spacing_mm is None
        assert any("spacing unknown" in step for step in out.steps)
        for i, k in enumerate(out.slice_indices):
            lv_in = np.count_nonzero(seg.data[:, :, k, 0] == 1)
            assert lv_in > 0
            assert np.count_nonzero(out.seg[i, 0] == 1) == lv_in, (path.name, k)
        # Native pixels (spacing unknown): crop pixel (40, 40) is the input pixel at the rounded centre.
        low, high = out.intensity_range
        cx, cy = (int(np.floor(v + 0.5)) for v in out.center_xy)
        expected = np.clip((image.data[cx, cy, out.slice_indices[1], 0] - low) / (high - low), 0, 1)
        assert out.frames[1, 0, 40, 40] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_variance_centre_finds_the_heart_on_acdc_ed_es_pairs(acdc_dir):
    """Without segmentations, two-frame (ED, ES) cines of real hearts: the crop still holds the LV."""
    distances, lv_inside, slice_offsets = [], 0, []
    patients = sorted({path.name[:10] for path in acdc_dir.glob("patient*_frame01.h5")})
    for patient in patients:
        ed, ed_seg = read_acdc_h5(acdc_dir / f"{patient}_frame01.h5")
        es, _ = read_acdc_h5(acdc_dir / f"{patient}_frame02.h5")
        cine = CMRImage(np.concatenate([ed.data, es.data], axis=3), ed.affine, view="sa", metadata=ed.metadata)
        (cx, cy), method = find_crop_center(cine)
        assert method == "temporal_variance"
        lv = np.argwhere(ed_seg.data[..., 0] == 1)
        distances.append(np.hypot(cx - lv[:, 0].mean(), cy - lv[:, 1].mean()))
        lv_inside += bool(np.all(np.abs(lv[:, 0] - cx) < 40) and np.all(np.abs(lv[:, 1] - cy) < 40))
        mid_without_seg = select_slices(cine, CMRConfig(), None, (cx, cy))[0][0]
        mid_with_seg = select_slices(ed, CMRConfig(), ed_seg)[0][0]
        slice_offsets.append(abs(mid_without_seg - mid_with_seg))
    assert len(patients) == 30
    assert np.median(distances) < 8.0
    assert lv_inside >= 28
    assert np.median(slice_offsets) <= 1 and max(slice_offsets) <= 3
