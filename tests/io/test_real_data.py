"""Every real sample in ../shared/data goes through our readers and matches a reference reader."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import wfdb

from cardiacnets.ecg.config import ECGConfig
from cardiacnets.ecg.standardize import standardize_ecg
from cardiacnets.io.cmr import read_cmr
from cardiacnets.io.cmr_image import ACDC_TO_UKB
from cardiacnets.io.ecg import read_ecg


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["records500", "records100"])
def test_every_ptbxl_record_reads_like_wfdb_and_standardises(ptbxl_dir, folder):
    headers = sorted((ptbxl_dir / folder).rglob("*.hea"))
    assert len(headers) == 400
    config = ECGConfig()
    for header in headers:
        ours = read_ecg(header)
        ref = wfdb.rdrecord(str(header.with_suffix("")))
        assert ours.sampling_rate_hz == ref.fs and ours.signal_mV.shape == (ref.n_sig, ref.sig_len)
        np.testing.assert_allclose(ours.signal_mV, ref.p_signal.T.astype(np.float32), atol=1e-6, err_msg=str(header))
        std = standardize_ecg(ours, config)
        assert std.signal.shape == (12, 5000) and std.lead_mask.all() and np.isfinite(std.signal).all()


def test_ptbdb_and_ukb_xml_read(ptbdb_record, ukb_xml_path):
    rec = read_ecg(ptbdb_record)
    ref = wfdb.rdrecord(str(ptbdb_record))
    np.testing.assert_allclose(rec.signal_mV, ref.p_signal.T.astype(np.float32), atol=1e-6)
    std = standardize_ecg(rec, ECGConfig())
    assert std.signal.shape == (12, 5000) and std.lead_mask.all()  # 38.4 s at 1 kHz cropped to 10 s at 500 Hz
    xml = read_ecg(ukb_xml_path)
    assert xml.signal_mV.shape == (12, 5000) and standardize_ecg(xml, ECGConfig()).lead_mask.all()


def test_every_acdc_file_reads_like_h5py(acdc_dir):
    files = sorted(acdc_dir.glob("*.h5"))
    assert len(files) == 60
    for path in files:
        image = read_cmr(path)
        with h5py.File(path, "r") as f:
            ref = np.asarray(f["image"])  # (slices, H, W)
        assert image.shape == (ref.shape[1], ref.shape[2], ref.shape[0], 1), path
        np.testing.assert_allclose(image.data[..., 0], np.transpose(ref, (1, 2, 0)), err_msg=str(path))


def test_acdc_labels_remap(acdc_dir):
    from cardiacnets.io.acdc import read_acdc_h5

    _, seg = read_acdc_h5(acdc_dir / "patient001_frame01.h5")
    with h5py.File(acdc_dir / "patient001_frame01.h5", "r") as f:
        label = np.transpose(np.asarray(f["label"]), (1, 2, 0))
    np.testing.assert_array_equal(seg.data[..., 0], ACDC_TO_UKB[label.astype(np.uint8)])


def test_sunnybrook_cine_records_each_images_instance_number(shared_data):
    image = read_cmr(shared_data / "sunnybrook" / "SCD0000101", view="sa")
    assert image.shape == (256, 256, 12, 20)
    # Files 1-20 are the first slice's phases, 21-40 the second's, ...: InstanceNumber = 20 * slice + phase + 1.
    assert image.metadata["instance_numbers"] == [[20 * s + f + 1 for f in range(20)] for s in range(12)]
