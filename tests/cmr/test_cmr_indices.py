"""Function indices from segmentations, against hand-computed values."""

import numpy as np
import pytest

from cardiacnets.cmr.indices import ed_es_indices, function_indices, label_volumes_ml
from cardiacnets.errors import InputError
from cardiacnets.io.cmr_image import CMRImage


def _affine(sx=2.0, sy=2.0, sz=10.0):
    return np.diag([sx, sy, sz, 1.0])


def _cine():
    # 3 frames; voxel 2 x 2 x 10 mm = 0.04 ml
    seg = np.zeros((20, 20, 2, 3), dtype=np.uint8)
    seg[0:10, 0:10, :, 0] = 1   # LV 200 voxels = 8 ml (frame 0, ED)
    seg[0:5, 0:10, :, 1] = 1    # LV 100 voxels = 4 ml (frame 1, ES)
    seg[0:8, 0:10, :, 2] = 1    # LV 160 voxels
    seg[10:15, 0:10, :, :] = 2  # myocardium 100 voxels = 4 ml each frame
    seg[15:20, 0:10, :, 0] = 3  # RV 100 voxels = 4 ml at ED
    seg[15:20, 0:4, :, 1] = 3   # RV 40 voxels = 1.6 ml at ES
    return CMRImage(seg, _affine(), source="seg.nii.gz", is_segmentation=True)


def test_function_indices_hand_computed():
    out = function_indices(_cine())
    assert out["ed_frame"] == 0 and out["es_frame"] == 1
    assert out["lvedv_ml"] == pytest.approx(8.0)
    assert out["lvesv_ml"] == pytest.approx(4.0)
    assert out["lvsv_ml"] == pytest.approx(4.0)
    assert out["lvef_pct"] == pytest.approx(50.0)
    assert out["lvm_g"] == pytest.approx(4.0 * 1.05)
    assert out["rvedv_ml"] == pytest.approx(4.0)
    assert out["rvesv_ml"] == pytest.approx(1.6)
    assert out["rvef_pct"] == pytest.approx(60.0)


def test_function_indices_uses_affine_and_overrides():
    seg = _cine()
    seg.affine = _affine(1.0, 1.0, 10.0)  # 0.01 ml voxels
    out = function_indices(seg, ed_frame=2, es_frame=1)
    assert out["lvedv_ml"] == pytest.approx(1.6)  # frame 2: 8 x 10 voxels x 2 slices x 0.01 ml
    assert out["lvesv_ml"] == pytest.approx(1.0) and out["lvef_pct"] == pytest.approx(37.5)
    vols = label_volumes_ml(seg.data, 0.01)
    np.testing.assert_allclose(vols["lv_cavity"], [2.0, 1.0, 1.6])


def test_ed_es_separate_frames():
    seg = _cine()
    ed = CMRImage(seg.data[..., :1], seg.affine, is_segmentation=True)
    es = CMRImage(seg.data[..., 1:2], seg.affine, is_segmentation=True)
    out = ed_es_indices(ed, es)
    assert out["lvef_pct"] == pytest.approx(50.0) and out["rvef_pct"] == pytest.approx(60.0)
    with pytest.raises(InputError, match="differs"):
        ed_es_indices(ed, CMRImage(seg.data[:10, ..., :1], seg.affine, source="es.nii.gz"))


def test_function_indices_errors():
    empty = CMRImage(np.zeros((4, 4, 1, 2), np.uint8), _affine(), source="empty_seg.nii.gz", is_segmentation=True)
    with pytest.raises(InputError, match="empty_seg.nii.gz: segmentation has no LV cavity"):
        function_indices(empty)
    with pytest.raises(InputError, match="expected"):
        function_indices(CMRImage(np.zeros((4, 4, 2), np.uint8), _affine(), source="x"))


def test_acdc_ejection_fractions_from_expert_labels(acdc_dir):
    """On ACDC ED/ES labels EF is exact without voxel spacing; DCM hearts eject less than normal ones."""
    import h5py

    from cardiacnets.io.acdc import acdc_diagnosis, read_acdc_h5

    lvef = {}
    for ed_path in sorted(acdc_dir.glob("patient*_frame01.h5")):
        number = int(ed_path.name[7:10])
        _, seg_ed = read_acdc_h5(ed_path)
        _, seg_es = read_acdc_h5(ed_path.with_name(ed_path.name.replace("frame01", "frame02")))
        out = ed_es_indices(seg_ed, seg_es)
        with h5py.File(ed_path, "r") as f_ed, h5py.File(str(ed_path).replace("frame01", "frame02"), "r") as f_es:
            lv_ed = int((np.asarray(f_ed["label"]) == 3).sum())  # ACDC: 3 = LV cavity
            lv_es = int((np.asarray(f_es["label"]) == 3).sum())
        assert out["lvef_pct"] == pytest.approx(100.0 * (lv_ed - lv_es) / lv_ed)
        lvef[number] = (acdc_diagnosis(number), out["lvef_pct"])
    by_group = {}
    for group, ef in lvef.values():
        by_group.setdefault(group, []).append(ef)
    assert np.mean(by_group["DCM"]) < 30 < 50 < np.mean(by_group["NOR"])
