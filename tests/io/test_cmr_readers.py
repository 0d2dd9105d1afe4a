"""Cine CMR readers: NIfTI, DICOM (folder, single file, UK Biobank zip), ACDC HDF5, dispatch."""

from __future__ import annotations

import gzip
import shutil
import warnings
import zipfile
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest

from cardiacnets.errors import InputError
from cardiacnets.io.acdc import acdc_diagnosis, read_acdc_h5
from cardiacnets.io.cmr import is_cmr_path, read_cmr
from cardiacnets.io.cmr_image import CMRImage
from cardiacnets.io.dicom import read_dicom_series
from cardiacnets.io.dicom_write import write_dicom_series
from cardiacnets.io.nifti import infer_is_segmentation, infer_view, read_nifti, write_nifti
from cardiacnets.io.stamp import burn_in_text, synthetic_label_box, text_bitmap


def oblique_affine(
    slice_sign: float = 1.0, spacing=(1.8, 1.7, 10.0), origin=(12.0, -30.0, 45.0), angles=(0.5, 0.7)
) -> np.ndarray:
    """A UK Biobank-like oblique affine: rotated axes, spacing in the columns."""
    a, b = angles
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rot_z @ rot_x @ np.diag([spacing[0], spacing[1], spacing[2] * slice_sign])
    affine[:3, 3] = origin
    return affine


def integer_cine(shape=(24, 20, 3, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, shape).astype(np.float32)


# --------------------------------------------------------------------------- NIfTI


def test_nifti_round_trip_keeps_data_affine_interval_and_view(tmp_path):
    affine = oblique_affine()
    image = CMRImage(integer_cine(), affine, view="sa", frame_interval_ms=25.0)
    path = write_nifti(image, tmp_path / "sa.nii.gz")
    back = read_nifti(path)
    assert back.data.dtype == np.float32 and back.shape == (24, 20, 3, 5)
    np.testing.assert_array_equal(back.data, image.data)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    assert back.frame_interval_ms == pytest.approx(25.0)
    assert back.view == "sa" and not back.is_segmentation and back.format == "nifti"
    assert nib.load(path).get_data_dtype() == np.int16


def test_nifti_float_intensities_are_scaled_into_int16(tmp_path):
    data = np.random.default_rng(1).normal(0.5, 0.2, (10, 9, 2, 4)).astype(np.float32)
    path = write_nifti(CMRImage(data, np.eye(4)), tmp_path / "la_4ch.nii.gz")
    back = read_nifti(path)
    slope = nib.load(path).dataobj.slope
    assert np.abs(back.data - data).max() <= slope / 2 + 1e-6
    assert back.view == "la_4ch" and back.frame_interval_ms is None


def test_nifti_segmentation_round_trip_and_inference(tmp_path):
    labels = np.random.default_rng(2).integers(0, 4, (12, 11, 3, 2)).astype(np.uint8)
    seg = CMRImage(labels, oblique_affine(), view="sa", is_segmentation=True)
    path = write_nifti(seg, tmp_path / "seg_sa.nii.gz")
    back = read_nifti(path)
    assert back.is_segmentation and back.data.dtype == np.uint8 and back.view == "sa"
    np.testing.assert_array_equal(back.data, labels)
    assert nib.load(path).get_data_dtype() == np.uint8
    # The label intent marks it as a segmentation whatever the name.
    renamed = tmp_path / "subject.nii.gz"
    shutil.copy(path, renamed)
    assert read_nifti(renamed).is_segmentation


def test_nifti_write_is_deterministic(tmp_path):
    image = CMRImage(integer_cine(), oblique_affine(), view="sa", frame_interval_ms=30.0)
    first = write_nifti(image, tmp_path / "a" / "sa.nii.gz").read_bytes()
    second = write_nifti(image, tmp_path / "b" / "sa.nii.gz").read_bytes()
    assert first == second
    assert first[4:8] == b"\0\0\0\0"  # gzip MTIME field


def test_nifti_3d_gets_a_frame_axis_and_ukb_time_units(tmp_path):
    volume = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    nib.save(nib.Nifti1Image(volume, np.diag([1.8, 1.8, 10.0, 1.0])), tmp_path / "sa_ED.nii.gz")
    back = read_nifti(tmp_path / "sa_ED.nii.gz")
    assert back.shape == (4, 5, 3, 1) and back.view == "sa" and back.frame_interval_ms is None
    np.testing.assert_array_equal(back.data[..., 0], volume)

    # The UK Biobank pipeline stores the frame step in seconds with no unit code.
    cine = nib.Nifti1Image(np.zeros((4, 5, 3, 6), np.int16), np.eye(4))
    cine.header["pixdim"][4] = 0.0254
    nib.save(cine, tmp_path / "sa.nii.gz")
    assert read_nifti(tmp_path / "sa.nii.gz").frame_interval_ms == pytest.approx(25.4)
    cine.header["pixdim"][4] = 1.0  # nibabel's default: not a frame interval
    nib.save(cine, tmp_path / "sa.nii.gz")
    assert read_nifti(tmp_path / "sa.nii.gz").frame_interval_ms is None


@pytest.mark.parametrize(
    "name, view, is_seg",
    [
        ("sa.nii.gz", "sa", False),
        ("seg_sa.nii.gz", "sa", True),
        ("seg_sa_ED.nii.gz", "sa", True),
        ("la_2ch.nii.gz", "la_2ch", False),
        ("la_3ch.nii", "la_3ch", False),
        ("seg4_la_4ch.nii.gz", "la_4ch", True),
        ("patient001_frame01_gt.nii.gz", "unknown", True),
        ("salad.nii.gz", "unknown", False),
    ],
)
def test_view_and_segmentation_inference_from_name(name, view, is_seg):
    assert infer_view(name) == view
    assert infer_is_segmentation(name) is is_seg


def test_nifti_acdc_label_convention_is_remapped(tmp_path):
    acdc = np.array([0, 1, 2, 3], np.uint8).reshape(2, 2, 1)
    nib.save(nib.Nifti1Image(acdc, np.eye(4)), tmp_path / "patient001_frame01_gt.nii.gz")
    back = read_nifti(tmp_path / "patient001_frame01_gt.nii.gz", label_convention="acdc")
    np.testing.assert_array_equal(back.data[..., 0, 0].ravel(), [0, 3, 2, 1])


def _assert_input_error(err: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(err.value)
    assert path.name in message, message
    for word in words:
        assert word.lower() in message.lower(), message


def test_nifti_corrupt_inputs_raise_input_error(tmp_path):
    good = write_nifti(CMRImage(integer_cine(), np.eye(4), view="sa"), tmp_path / "sa.nii.gz")

    truncated = tmp_path / "truncated_sa.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError) as err:
        read_nifti(truncated)
    _assert_input_error(err, truncated, "truncated")

    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as err:
        read_nifti(empty)
    _assert_input_error(err, empty, "empty")

    text = tmp_path / "text.nii"
    text.write_text("not an image")
    with pytest.raises(InputError) as err:
        read_nifti(text)
    _assert_input_error(err, text, "nifti")

    nan = np.zeros((4, 4, 2, 3), np.float32)
    nan[1, 2, 0, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan_sa.nii.gz")
    with pytest.raises(InputError) as err:
        read_nifti(tmp_path / "nan_sa.nii.gz")
    _assert_input_error(err, tmp_path / "nan_sa.nii.gz", "1 NaN")

    for shape in [(4, 4), (4, 4, 2, 3, 2)]:
        nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), tmp_path / "ndim.nii.gz")
        with pytest.raises(InputError) as err:
            read_nifti(tmp_path / "ndim.nii.gz")
        _assert_input_error(err, tmp_path / "ndim.nii.gz", str(shape))

    labels = np.zeros((4, 4, 2), np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 2, 5
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "seg_sa.nii.gz")
    with pytest.raises(InputError) as err:
        read_nifti(tmp_path / "seg_sa.nii.gz")
    _assert_input_error(err, tmp_path / "seg_sa.nii.gz", "[0, 2, 5]", "unexpected: [5]")

    with pytest.raises(InputError) as err:
        read_nifti(tmp_path / "missing.nii.gz")
    _assert_input_error(err, tmp_path / "missing.nii.gz", "does not exist")


# --------------------------------------------------------------------------- DICOM


@pytest.mark.parametrize("slice_sign", [1.0, -1.0])
def test_dicom_round_trip_multislice_cine(tmp_path, slice_sign):
    affine = oblique_affine(slice_sign)
    image = CMRImage(integer_cine(), affine, view="sa", frame_interval_ms=25.0)
    paths = write_dicom_series(image, tmp_path / "cine", series_description="CINE_segmented_SAX", synthetic=False)
    assert len(paths) == 3 * 5
    back = read_dicom_series(tmp_path / "cine")
    np.testing.assert_array_equal(back.data, image.data)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert back.frame_interval_ms == pytest.approx(25.0)
    assert back.view == "sa" and back.format == "dicom"
    assert back.metadata["trigger_times_ms"] == pytest.approx([0, 25, 50, 75, 100])

    ds = pydicom.dcmread(paths[0])
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY"] and ds.BurnedInAnnotation == "NO"
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in paths}) == len(paths)


def test_dicom_geometry_agrees_with_nibabel_dicom_wrapper(tmp_path):
    """An independent reader of the geometry tags places the voxels where our affine does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
        from nibabel.nicom import dicomwrappers

    affine = oblique_affine()
    paths = write_dicom_series(
        CMRImage(integer_cine((8, 6, 1, 1)), affine), tmp_path, series_description="x", synthetic=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = dicomwrappers.wrapper_from_file(paths[0])
    ours_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    # nibabel's wrapper indexes (row, column): its first column is our y axis.
    np.testing.assert_allclose(wrapper.affine[:3, 0], ours_lps[:3, 1], atol=1e-6)
    np.testing.assert_allclose(wrapper.affine[:3, 1], ours_lps[:3, 0], atol=1e-6)
    np.testing.assert_allclose(wrapper.affine[:3, 3], ours_lps[:3, 3], atol=1e-6)


def test_dicom_float_intensities_round_trip_within_quantisation(tmp_path):
    data = np.random.default_rng(3).normal(0.4, 0.1, (10, 12, 2, 3)).astype(np.float32)
    write_dicom_series(CMRImage(data, np.diag([1.5, 1.5, 8.0, 1.0])), tmp_path, series_description="x", synthetic=False)
    back = read_dicom_series(tmp_path)
    slope = float(pydicom.dcmread(sorted(tmp_path.iterdir())[0]).RescaleSlope)
    assert np.abs(back.data - data).max() <= slope / 2 + 1e-6


def _write_ukb_zip(tmp_path: Path) -> tuple[Path, CMRImage, CMRImage]:
    """A UK Biobank-like 20209+20208 bulk file: one series per SAX slice, an InlineVF copy, a 4Ch view."""
    sax_affine = oblique_affine(slice_sign=-1.0)  # b1..b3 run against the plane normal
    sax = CMRImage(integer_cine((16, 14, 3, 4), seed=4), sax_affine, view="sa", frame_interval_ms=30.0)
    lax_affine = oblique_affine(spacing=(1.8, 1.8, 6.0), angles=(1.2, -0.4))  # another plane
    lax = CMRImage(integer_cine((16, 14, 1, 4), seed=5), lax_affine, view="la_4ch", frame_interval_ms=30.0)
    folder = tmp_path / "bulk"
    common = dict(synthetic=False, study_instance_uid="1.2.3.4", frame_of_reference_uid="1.2.3.5")
    for k in range(3):  # written in reverse so file order is not slice order
        slab = sax.data[:, :, 2 - k : 3 - k]
        slab_affine = sax_affine.copy()
        slab_affine[:3, 3] += (2 - k) * sax_affine[:3, 2]
        write_dicom_series(
            CMRImage(slab.copy(), slab_affine, frame_interval_ms=30.0),
            folder,
            series_description=f"CINE_segmented_SAX_b{3 - k}",
            series_number=10 + k,
            **common,
        )
    write_dicom_series(sax, folder, series_description="CINE_segmented_SAX_InlineVF", series_number=20, **common)
    write_dicom_series(lax, folder, series_description="CINE_segmented_LAX_4Ch", series_number=30, **common)
    (folder / "manifest.csv").write_text("filename,patientid\n")
    zip_path = tmp_path / "1000001_20209_2_0.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, file.name)
    return zip_path, sax, lax


def test_dicom_zip_ukb_bulk_with_several_series(tmp_path):
    zip_path, sax, lax = _write_ukb_zip(tmp_path)

    short_axis = read_dicom_series(zip_path, view="sa")
    assert short_axis.format == "dicom_zip" and short_axis.view == "sa"
    np.testing.assert_array_equal(short_axis.data, sax.data)  # b1, b2, b3 order, InlineVF left out
    np.testing.assert_allclose(short_axis.affine, sax.affine, atol=1e-6)
    assert short_axis.metadata["series_descriptions"] == [f"CINE_segmented_SAX_b{k}" for k in (1, 2, 3)]
    assert "CINE_segmented_SAX_InlineVF" in short_axis.metadata["series_left_out"]
    assert short_axis.metadata["skipped_files"] == ["manifest.csv"]

    four_chamber = read_dicom_series(zip_path, series="*LAX_4Ch")
    assert four_chamber.view == "la_4ch" and four_chamber.shape == (16, 14, 1, 4)
    np.testing.assert_array_equal(four_chamber.data, lax.data)
    np.testing.assert_allclose(four_chamber.affine, lax.affine, atol=1e-6)
    np.testing.assert_array_equal(read_cmr(zip_path, view="la_4ch").data, lax.data)

    with pytest.raises(InputError) as err:
        read_dicom_series(zip_path)
    _assert_input_error(err, zip_path, "plane orientations", "CINE_segmented_LAX_4Ch")
    with pytest.raises(InputError) as err:
        read_dicom_series(zip_path, view="la_2ch")
    _assert_input_error(err, zip_path, "no la_2ch series")


def test_synthetic_series_is_marked(tmp_path):
    data = integer_cine((64, 60, 1, 2), seed=6)
    image = CMRImage(data, oblique_affine(), view="la_4ch", frame_interval_ms=40.0)
    paths = write_dicom_series(image, tmp_path, series_description="generated LAX_4Ch", synthetic=True, uid_seed="s")
    ds = pydicom.dcmread(paths[0])
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert "SYNTHETIC" in ds.SeriesDescription
    assert str(ds.PatientName) == "ANONYMOUS^SYNTHETIC" and ds.PatientID == ""
    assert ds.BurnedInAnnotation == "YES"

    back = read_dicom_series(tmp_path)
    assert back.metadata["synthetic"] and back.view == "la_4ch"
    rows, cols = synthetic_label_box(60, 64)
    for t in range(2):
        shown_back, shown_in = back.data[:, :, 0, t].T, data[:, :, 0, t].T  # display: rows x columns
        assert np.count_nonzero(shown_back[rows, cols] != shown_in[rows, cols]) > 100
        outside = np.ones_like(shown_in, dtype=bool)
        outside[rows, cols] = False
        np.testing.assert_array_equal(shown_back[outside], shown_in[outside])
    # The strokes are the brightest value, the box the darkest.
    label = shown_back[rows, cols][1:-1, 1:-1]
    np.testing.assert_array_equal(label == data.max(), text_bitmap("SYNTHETIC"))

    # Same seed, same bytes.
    again = write_dicom_series(
        image, tmp_path / "again", series_description="generated LAX_4Ch", synthetic=True, uid_seed="s"
    )
    assert again[1].read_bytes() == paths[1].read_bytes()

    with pytest.raises(ValueError, match="patient"):
        write_dicom_series(image, tmp_path / "x", series_description="x", synthetic=True, patient_id="1000001")


def test_text_bitmap_and_burn_in_do_not_touch_input():
    bitmap = text_bitmap("SYNTHETIC")
    assert bitmap.shape == (7, 9 * 6 - 1) and bitmap[:, 5].sum() == 0  # gap between glyphs
    assert text_bitmap("T", scale=2).shape == (14, 10)
    assert text_bitmap("T")[0].all() and text_bitmap("T")[1:, 2].all()
    pixels = np.full((20, 70), 7, np.uint16)
    drawn = burn_in_text(pixels, "SYNTHETIC", value=100, background=0)
    assert (pixels == 7).all() and (drawn == 100).sum() == bitmap.sum()
    with pytest.raises(ValueError, match="not in the font"):
        text_bitmap("SYNTHETIQUE")
    with pytest.raises(ValueError, match="does not fit"):
        burn_in_text(np.zeros((8, 40)), "SYNTHETIC", value=1, background=0)


def test_dicom_folder_errors(tmp_path):
    empty = tmp_path / "no_dicom"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(InputError) as err:
        read_dicom_series(empty)
    _assert_input_error(err, empty, "no DICOM image files")

    folder = tmp_path / "missing_tag"
    paths = write_dicom_series(CMRImage(integer_cine(), np.eye(4)), folder, series_description="x", synthetic=False)
    ds = pydicom.dcmread(paths[4])
    del ds.ImagePositionPatient
    ds.save_as(paths[4])
    with pytest.raises(InputError) as err:
        read_dicom_series(folder)
    _assert_input_error(err, paths[4], "missing DICOM tag", "ImagePositionPatient")

    mixed = tmp_path / "mixed"
    write_dicom_series(CMRImage(integer_cine((8, 6, 1, 2)), np.eye(4)), mixed, series_description="a", synthetic=False)
    write_dicom_series(
        CMRImage(integer_cine((9, 6, 1, 2)), np.eye(4)), mixed, series_description="b", series_number=2, synthetic=False
    )
    with pytest.raises(InputError) as err:
        read_dicom_series(mixed)
    assert "image size" in str(err.value) and "mixed" in str(err.value)

    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    with pytest.raises(InputError) as err:
        read_dicom_series(corrupt)
    _assert_input_error(err, corrupt, "DICOM")

    zip_path, _, _ = _write_ukb_zip(tmp_path)
    truncated = tmp_path / "truncated_20209_2_0.zip"
    truncated.write_bytes(zip_path.read_bytes()[:1000])
    with pytest.raises(InputError) as err:
        read_dicom_series(truncated)
    _assert_input_error(err, truncated, "zip")


def test_dicom_repeated_slice_keeps_latest_series_and_gaps_are_errors(tmp_path):
    first = CMRImage(integer_cine((8, 6, 1, 3), seed=7), np.eye(4), frame_interval_ms=20.0)
    repeat = CMRImage(integer_cine((8, 6, 1, 3), seed=8), np.eye(4), frame_interval_ms=20.0)
    write_dicom_series(first, tmp_path / "repeat", series_description="CINE_segmented_SAX_b1", synthetic=False)
    write_dicom_series(
        repeat, tmp_path / "repeat", series_description="CINE_segmented_SAX_b1", series_number=2, synthetic=False
    )
    back = read_dicom_series(tmp_path / "repeat")
    np.testing.assert_array_equal(back.data, repeat.data)
    assert back.metadata["superseded_series"] == ["CINE_segmented_SAX_b1"]

    paths = write_dicom_series(
        CMRImage(integer_cine((8, 6, 4, 2)), np.diag([1.5, 1.5, 10.0, 1.0])),
        tmp_path / "gap",
        series_description="x",
        synthetic=False,
    )
    for path in paths[2:4]:  # slice 1 (both frames) missing
        path.unlink()
    with pytest.raises(InputError) as err:
        read_dicom_series(tmp_path / "gap")
    _assert_input_error(err, tmp_path / "gap", "not evenly spaced", "[20.0, 10.0]")
    paths[5].unlink()  # and one frame of slice 2
    with pytest.raises(InputError) as err:
        read_dicom_series(tmp_path / "gap")
    _assert_input_error(err, tmp_path / "gap", "different frame counts [2, 1, 2]")


# --------------------------------------------------------------------------- ACDC


def test_every_acdc_file_reads_with_ukb_labels(acdc_dir):
    files = sorted(acdc_dir.glob("patient*_frame*.h5"))
    assert len(files) == 60
    for path in files:
        image, seg = read_acdc_h5(path)
        with h5py.File(path, "r") as h5:
            raw_image, raw_label = h5["image"][()], h5["label"][()]
        n_slices, height, width = raw_image.shape
        assert image.shape == seg.shape == (height, width, n_slices, 1)
        assert image.data.dtype == np.float32 and seg.data.dtype == np.uint8 and seg.is_segmentation
        np.testing.assert_array_equal(image.data[:, :, 2, 0], raw_image[2])
        assert np.count_nonzero(seg.data == 1) == np.count_nonzero(raw_label == 3)  # LV cavity
        assert np.count_nonzero(seg.data == 3) == np.count_nonzero(raw_label == 1)  # RV cavity
        assert np.count_nonzero(seg.data == 2) == np.count_nonzero(raw_label == 2)  # myocardium
        np.testing.assert_array_equal(image.affine, np.eye(4))
        number = int(path.name[7:10])
        assert image.metadata["spacing_known"] is False
        assert image.metadata["patient_number"] == number
        assert image.metadata["diagnosis"] == acdc_diagnosis(number)
        assert image.metadata["phase"] == {"01": "ED", "02": "ES"}[path.stem[-2:]]


@pytest.mark.parametrize(
    "number, group",
    [(1, "DCM"), (20, "DCM"), (21, "HCM"), (40, "HCM"), (41, "MINF"), (61, "NOR"), (80, "NOR"), (100, "RV")],
)
def test_acdc_diagnosis_from_number(number, group):
    assert acdc_diagnosis(number) == group


def test_acdc_diagnosis_out_of_range():
    for number in (0, 101):
        with pytest.raises(ValueError, match="1-100"):
            acdc_diagnosis(number)


def test_acdc_corrupt_files_raise_input_error(acdc_dir, tmp_path):
    original = (acdc_dir / "patient001_frame01.h5").read_bytes()
    truncated = tmp_path / "patient001_frame01.h5"
    truncated.write_bytes(original[: len(original) // 3])
    with pytest.raises(InputError) as err:
        read_acdc_h5(truncated)
    _assert_input_error(err, truncated, "truncated")

    no_label = tmp_path / "patient002_frame01.h5"
    with h5py.File(no_label, "w") as h5:
        h5["image"] = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(InputError) as err:
        read_acdc_h5(no_label)
    _assert_input_error(err, no_label, "['label']")

    bad = tmp_path / "patient003_frame01.h5"
    with h5py.File(bad, "w") as h5:
        h5["image"] = np.zeros((2, 4, 4), np.float32)
        h5["label"] = np.full((2, 4, 4), 4, np.uint8)
    with pytest.raises(InputError) as err:
        read_acdc_h5(bad)
    _assert_input_error(err, bad, "labels [4]")

    empty = tmp_path / "patient004_frame01.h5"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as err:
        read_acdc_h5(empty)
    _assert_input_error(err, empty, "empty")


# --------------------------------------------------------------------------- dispatch


def test_read_cmr_dispatches_by_path(tmp_path, acdc_dir):
    image = CMRImage(integer_cine(), oblique_affine(), view="sa", frame_interval_ms=25.0)
    nifti = write_nifti(image, tmp_path / "sa.nii.gz")
    dicom_files = write_dicom_series(
        image, tmp_path / "dicom", series_description="CINE_segmented_SAX", synthetic=False
    )
    h5 = acdc_dir / "patient001_frame01.h5"

    assert read_cmr(nifti).format == "nifti"
    assert read_cmr(tmp_path / "dicom").format == "dicom"
    np.testing.assert_array_equal(read_cmr(tmp_path / "dicom").data, image.data)
    single = read_cmr(dicom_files[0])
    assert single.shape == (24, 20, 1, 1)
    np.testing.assert_array_equal(single.data[..., 0, 0], image.data[..., 0, 0])
    acdc = read_cmr(h5)
    assert acdc.format == "acdc_h5" and not acdc.is_segmentation

    for path in (nifti, tmp_path / "dicom", dicom_files[0], h5):
        assert is_cmr_path(path)
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert not is_cmr_path(other) and not is_cmr_path(tmp_path / "absent.nii.gz")
    with pytest.raises(InputError) as err:
        read_cmr(other)
    _assert_input_error(err, other, "unsupported file type")
    with pytest.raises(InputError) as err:
        read_cmr(h5, view="la_4ch")
    _assert_input_error(err, h5, "short-axis")

    zip_path = tmp_path / "plain.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("readme.txt", "x")
    assert not is_cmr_path(zip_path)
    with gzip.open(tmp_path / "x.gz", "wb") as stream:
        stream.write(b"x")
    assert not is_cmr_path(tmp_path / "x.gz")
