"""A corpus of malformed inputs made from the real samples (issue 17): every file must be refused cleanly.

The corpus is built in ``tmp_path`` from ``../shared/data``: NIfTI written from
an ACDC volume, Sunnybrook DICOM files and zips of them, ``.npy`` arrays, the UK
Biobank XML, PTB-XL WFDB records and ACDC HDF5 files, then truncated, given huge
declared sizes, turned into decompression bombs, given NaN, zero or negative
spacings and affines, negative dimensions, complex dtypes or a wrong magic.

For every file, ``cardiacnets inspect FILE --json`` runs in its own process
(address space capped at `MEMORY_LIMIT_BYTES` with ``RLIMIT_AS``, set by
``ulimit -v`` in the shell that execs it, and killed after
`TIMEOUT_S`) and must exit 2 with one line on stderr naming the file and the
problem (the header field or tag where there is one), no traceback, nothing on
stdout; and the reader function (`read_ecg` / `read_cmr`), run under the same
limits, must raise `InputError` with the same kind of one-line message.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest

MEMORY_LIMIT_BYTES = 2 << 30
TIMEOUT_S = 30.0
NPY_ARGS = ["--sampling-rate", "500", "--leads", "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"]
LEADS = NPY_ARGS[3].split(",")
RECORD = "00001_hr"
SUNNYBROOK_FILE = "1.dcm"


@dataclass(frozen=True)
class Case:
    """One corpus file: its name, how to make it, and a phrase its message must hold."""

    name: str
    phrase: str
    extra_args: tuple[str, ...] = ()


# --------------------------------------------------------------------------- builders


def _nifti_bytes(acdc_dir: Path) -> bytes:
    """An ACDC end-diastole volume written as a NIfTI-1 with a 1.5 x 1.5 x 10 mm affine."""
    with h5py.File(acdc_dir / "patient001_frame01.h5", "r") as h5:
        image = np.asarray(h5["image"][()])  # (slices, H, W)
    volume = (np.transpose(image, (2, 1, 0)) * 1000).astype(np.int16)[..., None]  # (x, y, slices, 1 frame)
    img = nib.Nifti1Image(volume, np.diag([1.5, 1.5, 10.0, 1.0]))
    img.header.set_xyzt_units("mm", "msec")
    return img.to_bytes()


def _edit_nifti(raw: bytes, **fields) -> bytes:
    """The NIfTI bytes with header fields replaced (written as stored, without nibabel's fixes)."""
    header = nib.Nifti1Header(raw[:348], check=False)
    for key, value in fields.items():
        header[key] = value
    return header.binaryblock + raw[348:]


def _gzip(raw: bytes) -> bytes:
    return zlib.compress(raw, 6, wbits=31)


def _zeros_gzip_member(n_bytes: int) -> bytes:
    """A gzip member that inflates to `n_bytes` zeros (gzip members concatenate)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(n_bytes >> 20)]
    return b"".join(parts) + compressor.flush()


def _dicom_with(source: Path, target: Path, **tags) -> Path:
    ds = pydicom.dcmread(source)
    for key, value in tags.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(target)
    return target


def _deflated_dicom_bomb(source: Path, target: Path, inflated_bytes: int) -> Path:
    """A Part 10 file whose meta says Deflated Explicit VR Little Endian, followed by deflated zeros."""
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    meta_stream = pydicom.filebase.DicomBytesIO()
    meta_stream.is_little_endian, meta_stream.is_implicit_VR = True, False
    pydicom.filewriter.write_file_meta_info(meta_stream, ds.file_meta, enforce_standard=True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    body = b"".join(compressor.compress(chunk) for _ in range(inflated_bytes >> 20)) + compressor.flush()
    target.write_bytes(b"\0" * 128 + b"DICM" + meta_stream.getvalue() + body)
    return target


def _zip_of(target: Path, files: list[Path], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(target, "w", method) as archive:
        for file in files:
            archive.write(file, file.name)
    return target


def _patch_zip(target: Path, source: Path, *, flag_bits: int | None = None, method: int | None = None,
               file_size: int | None = None) -> Path:
    """Rewrite the first member's local and central headers: flag bits, method or declared size."""
    data = bytearray(source.read_bytes())
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    for start, flag_at, method_at, size_at in ((local, 6, 8, 22), (central, 8, 10, 24)):
        if flag_bits is not None:
            struct.pack_into("<H", data, start + flag_at, struct.unpack_from("<H", data, start + flag_at)[0] | flag_bits)
        if method is not None:
            struct.pack_into("<H", data, start + method_at, method)
        if file_size is not None:
            struct.pack_into("<I", data, start + size_at, file_size)
    target.write_bytes(bytes(data))
    return target


def _zip_bomb(target: Path, inflated_bytes: int) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("IM-0001-0001.dcm", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(inflated_bytes >> 20):
                member.write(chunk)
    return target


def _npy_with_header(target: Path, header: dict, payload: bytes = b"") -> Path:
    with open(target, "wb") as stream:
        np.lib.format.write_array_header_1_0(stream, header)
        stream.write(payload)
    return target


def _xml_with(source: Path, target: Path, old: str, new: str) -> Path:
    text = source.read_bytes().decode("latin-1")
    target.write_bytes(text.replace(old, new, 1).encode("latin-1"))
    return target


def _wfdb_copy(source: Path, folder: Path, edit=None, dat: bytes | None = None) -> Path:
    folder.mkdir(parents=True)
    text = source.with_suffix(".hea").read_text()
    header = folder / f"{RECORD}.hea"
    header.write_text(edit(text) if edit else text)
    data = source.with_suffix(".dat").read_bytes()
    (folder / f"{RECORD}.dat").write_bytes(data if dat is None else dat)
    return header


def build_corpus(root: Path, shared: Path) -> dict[str, tuple[Path, Case]]:
    """Write every corpus file under `root`; returns name -> (path, case)."""
    root.mkdir(parents=True, exist_ok=True)
    acdc_dir, sunnybrook = shared / "acdc_h5", shared / "sunnybrook" / "SCD0000101"
    xml_source = shared / "ukb_ecg_xml" / "ukbb_scrubbed.xml"
    wfdb_source = shared / "ptbxl" / "records500" / "00000" / RECORD
    dicom_source = sunnybrook / SUNNYBROOK_FILE
    corpus: dict[str, tuple[Path, Case]] = {}

    def add(case: Case, path: Path) -> None:
        corpus[case.name] = (path, case)

    def nifti(name: str, phrase: str, data: bytes) -> None:
        path = root / name
        path.write_bytes(data)
        add(Case(name, phrase), path)

    # NIfTI ------------------------------------------------------------------
    raw = _nifti_bytes(acdc_dir)
    header = nib.Nifti1Header(raw[:348], check=False)
    dim = header["dim"].copy()
    nifti("nifti_truncated.nii", "truncated", raw[: len(raw) // 2])
    nifti("nifti_truncated.nii.gz", "truncated", _gzip(raw)[: len(_gzip(raw)) // 2])
    nifti("nifti_header_cut.nii.gz", "header", _gzip(raw[:200]))
    nifti("nifti_empty.nii.gz", "empty", b"")
    nifti("nifti_wrong_magic.nii", "magic", _edit_nifti(raw, magic=b"xyz"))
    nifti("nifti_not_nifti.nii", "sizeof_hdr", b"hello, this is not an image\n" * 20)
    huge = dim.copy()
    huge[:5] = [4, 30000, 30000, 1000, 50]
    nifti("nifti_huge_dims.nii", "dim", _edit_nifti(raw, dim=huge))
    nifti("nifti_huge_dims.nii.gz", "dim", _gzip(_edit_nifti(raw, dim=huge)))
    negative0 = dim.copy()
    negative0[0] = -4
    nifti("nifti_dim0_negative.nii", "dim[0]", _edit_nifti(raw, dim=negative0))
    negative = dim.copy()
    negative[2] = -dim[2]
    nifti("nifti_dim_negative.nii", "dim[2]", _edit_nifti(raw, dim=negative))
    nifti("nifti_zero_sform.nii", "sform", _edit_nifti(raw, sform_code=1, srow_x=[0] * 4, srow_y=[0] * 4, srow_z=[0] * 4))
    nifti("nifti_nan_sform.nii", "sform",
          _edit_nifti(raw, sform_code=1, srow_x=[np.nan, 0, 0, 0], srow_y=[0, 1, 0, 0], srow_z=[0, 0, 1, 0]))
    nifti("nifti_flat_sform.nii", "sform",  # two voxel axes along the same direction
          _edit_nifti(raw, sform_code=1, srow_x=[1.5, 1.5, 0, 0], srow_y=[0, 0, 0, 0], srow_z=[0, 0, 10, 0]))
    nifti("nifti_nan_qform.nii", "qform", _edit_nifti(raw, sform_code=0, qform_code=1, quatern_b=np.nan))
    pixdim = header["pixdim"].copy()
    for label, value in (("zero", 0.0), ("negative", -1.5), ("nan", np.nan)):
        bad = pixdim.copy()
        bad[1] = value
        nifti(f"nifti_{label}_pixdim.nii", "pixdim", _edit_nifti(raw, sform_code=0, qform_code=1, pixdim=bad))
    nifti("nifti_complex.nii", "datatype", _edit_nifti(raw, datatype=32, bitpix=64))
    nifti("nifti_rgb.nii", "datatype", _edit_nifti(raw, datatype=128, bitpix=24))
    nifti("nifti_inf_slope.nii", "scl_slope", _edit_nifti(raw, scl_slope=np.inf))
    nifti("nifti_nan_vox_offset.nii", "vox_offset", _edit_nifti(raw, vox_offset=np.nan))
    # A 2 MB gzip bomb: the header declares 512 x 512 x 64 x 50 int16 (1.6 GB) and the stream really
    # inflates to that many zeros.
    bomb = dim.copy()
    bomb[:5] = [4, 512, 512, 64, 50]
    bomb_header = _edit_nifti(raw, dim=bomb)[:352]
    member = _zeros_gzip_member(64 << 20)
    nifti("nifti_gzip_bomb.nii.gz", "dim", _gzip(bomb_header) + member * 25)
    # Header extension whose declared size runs past the data offset (nibabel would read it whole).
    extension = bytearray(_edit_nifti(raw, vox_offset=368)[:348]) + b"\x01\0\0\0" + struct.pack("<ii", 1 << 30, 0)
    nifti("nifti_extension_bomb.nii.gz", "extension", _gzip(bytes(extension) + bytes(8) + raw[352:])
          + _zeros_gzip_member(16 << 20))

    # DICOM -------------------------------------------------------------------
    for name, tags, phrase in (
        ("dicom_nan_spacing.dcm", {"PixelSpacing": ["nan", "nan"]}, "PixelSpacing"),
        ("dicom_zero_spacing.dcm", {"PixelSpacing": [0, 0]}, "PixelSpacing"),
        ("dicom_negative_spacing.dcm", {"PixelSpacing": [-1.37, 1.37]}, "PixelSpacing"),
        ("dicom_inf_position.dcm", {"ImagePositionPatient": ["inf", 0, 0]}, "ImagePositionPatient"),
        ("dicom_zero_orientation.dcm", {"ImageOrientationPatient": [0] * 6}, "ImageOrientationPatient"),
        ("dicom_parallel_orientation.dcm", {"ImageOrientationPatient": [1, 0, 0, 1, 0, 0]}, "ImageOrientationPatient"),
        ("dicom_nan_thickness.dcm", {"SliceThickness": "nan"}, "SliceThickness"),
        ("dicom_negative_thickness.dcm", {"SliceThickness": -10}, "SliceThickness"),
        ("dicom_nan_slope.dcm", {"RescaleSlope": "nan", "RescaleIntercept": 0}, "RescaleSlope"),
        ("dicom_huge_matrix.dcm", {"Rows": 65535, "Columns": 65535}, "Rows"),
        ("dicom_no_spacing.dcm", {"PixelSpacing": None}, "PixelSpacing"),
    ):
        add(Case(name, phrase), _dicom_with(dicom_source, root / name, **tags))
    patched = bytearray(dicom_source.read_bytes())  # InstanceNumber (IS) made non-numeric, bypassing pydicom's writer
    at = patched.find(b"\x20\x00\x13\x00IS")
    length = struct.unpack_from("<H", patched, at + 6)[0]
    patched[at + 8 : at + 8 + length] = b"x" * length
    (root / "dicom_bad_instance_number.dcm").write_bytes(bytes(patched))
    add(Case("dicom_bad_instance_number.dcm", "InstanceNumber"), root / "dicom_bad_instance_number.dcm")
    truncated = root / "dicom_truncated.dcm"
    truncated.write_bytes(dicom_source.read_bytes()[:5000])
    add(Case(truncated.name, "pixel data"), truncated)
    wrong_magic = root / "dicom_wrong_magic.dcm"
    wrong_magic.write_bytes(b"\0" * 128 + b"XXXX" + dicom_source.read_bytes()[132:])
    add(Case(wrong_magic.name, "DICOM"), wrong_magic)
    add(Case("dicom_deflate_bomb.dcm", "inflates"),
        _deflated_dicom_bomb(dicom_source, root / "dicom_deflate_bomb.dcm", 96 << 20))

    # Zips of DICOM ------------------------------------------------------------
    members = [sunnybrook / f"{i}.dcm" for i in (1, 2, 3)]
    good_zip = _zip_of(root / "good.zip.tmp", members)
    add(Case("zip_encrypted.zip", "encrypted"), _patch_zip(root / "zip_encrypted.zip", good_zip, flag_bits=0x1))
    add(Case("zip_unknown_method.zip", "compression method 99"),
        _patch_zip(root / "zip_unknown_method.zip", good_zip, method=99))
    add(Case("zip_lying_size.zip", "zip"), _patch_zip(root / "zip_lying_size.zip", good_zip, file_size=1000))
    add(Case("zip_bomb.zip", "67108864"), _zip_bomb(root / "zip_bomb.zip", 96 << 20))
    data = good_zip.read_bytes()
    (root / "zip_truncated.zip").write_bytes(data[: len(data) // 2])
    add(Case("zip_truncated.zip", "zip"), root / "zip_truncated.zip")
    many = bytearray(data)
    eocd = many.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", many, eocd + 8, 60000, 60000)
    (root / "zip_many_members.zip").write_bytes(bytes(many))
    add(Case("zip_many_members.zip", "60000 members"), root / "zip_many_members.zip")
    nan_member = _dicom_with(dicom_source, root / "nan_member.dcm.tmp", PixelSpacing=["nan", "nan"])
    with zipfile.ZipFile(root / "zip_nan_spacing_member.zip", "w") as archive:
        archive.write(nan_member, "IM-0001-0001.dcm")
    add(Case("zip_nan_spacing_member.zip", "PixelSpacing"), root / "zip_nan_spacing_member.zip")
    good_zip.unlink()
    nan_member.unlink()

    # .npy ------------------------------------------------------------------------
    add(Case("npy_48tb.npy", "limit", tuple(NPY_ARGS)),
        _npy_with_header(root / "npy_48tb.npy", {"descr": "<f4", "fortran_order": False, "shape": (12, 10**12)}))
    many_leads = ",".join(f"X{i}" for i in range(20))  # 20 leads x 9 M float64 samples: 1.4 GB, under the sample limit
    add(Case("npy_over_byte_limit.npy", "bytes; the limit is", ("--sampling-rate", "500", "--leads", many_leads)),
        _npy_with_header(root / "npy_over_byte_limit.npy",
                         {"descr": "<f8", "fortran_order": False, "shape": (20, 9_000_000)}, bytes(4096)))
    add(Case("npy_truncated.npy", "truncated", tuple(NPY_ARGS)),
        _npy_with_header(root / "npy_truncated.npy", {"descr": "<f4", "fortran_order": False, "shape": (12, 5000)},
                         bytes(1000)))
    np.save(root / "npy_complex.npy", np.zeros((12, 5000), np.complex64))
    add(Case("npy_complex.npy", "complex", tuple(NPY_ARGS)), root / "npy_complex.npy")
    np.save(root / "npy_object.npy", np.array([[1, None]] * 12, dtype=object), allow_pickle=True)
    add(Case("npy_object.npy", "object", tuple(NPY_ARGS)), root / "npy_object.npy")
    (root / "npy_wrong_magic.npy").write_bytes(b"\x93NUMPX" + bytes(200))
    add(Case("npy_wrong_magic.npy", "magic", tuple(NPY_ARGS)), root / "npy_wrong_magic.npy")
    (root / "npy_bad_header.npy").write_bytes(b"\x93NUMPY\x01\x00\x20\x00{'descr': __import__('os')}    \n")
    add(Case("npy_bad_header.npy", "header", tuple(NPY_ARGS)), root / "npy_bad_header.npy")
    np.save(root / "npy_inf.npy", np.full((12, 5000), np.inf, np.float32))
    add(Case("npy_inf.npy", "infinite", tuple(NPY_ARGS)), root / "npy_inf.npy")
    np.save(root / "npy_tiny_rate.npy", np.zeros((12, 5000), np.float32))
    add(Case("npy_tiny_rate.npy", "sampling_rate_hz", ("--sampling-rate", "1e-9", "--leads", NPY_ARGS[3])),
        root / "npy_tiny_rate.npy")

    # UK Biobank XML ---------------------------------------------------------------
    sparse = root / "xml_sparse_3gb.xml"
    shutil.copy(xml_source, sparse)
    os.truncate(sparse, 3 << 30)  # a sparse file: 3 GB declared, ~1 MB on disk
    add(Case(sparse.name, "limit"), sparse)
    (root / "xml_truncated.xml").write_bytes(xml_source.read_bytes()[:20000])
    add(Case("xml_truncated.xml", "XML"), root / "xml_truncated.xml")
    add(Case("xml_tiny_rate.xml", "SampleRate"), _xml_with(
        xml_source, root / "xml_tiny_rate.xml", '<SampleRate units="Hz">500</SampleRate>',
        '<SampleRate units="Hz">1e-9</SampleRate>'))
    laughs = "".join(f'<!ENTITY l{i} "{"&l%d;" % (i - 1) * 10}">' for i in range(1, 10))
    (root / "xml_entity_bomb.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE CardiologyXML [<!ENTITY l0 "lol">{laughs}]><CardiologyXML>&l9;</CardiologyXML>')
    add(Case("xml_entity_bomb.xml", "XML"), root / "xml_entity_bomb.xml")

    # WFDB --------------------------------------------------------------------------
    record_line = f"{RECORD} 12 500 5000"
    for name, edit, phrase in (
        ("wfdb_huge_samples", lambda t: t.replace(record_line, f"{RECORD} 12 500 900000000000"), "number of samples"),
        ("wfdb_tiny_rate", lambda t: t.replace(record_line, f"{RECORD} 12 1e-9 5000"), "sampling frequency"),
        ("wfdb_nan_gain", lambda t: t.replace("1000.0(0)/mV", "nan(0)/mV", 1), "ADC gain"),
    ):
        add(Case(name, phrase), _wfdb_copy(wfdb_source, root / name, edit))
    add(Case("wfdb_truncated_dat", "truncated"),
        _wfdb_copy(wfdb_source, root / "wfdb_truncated_dat", dat=wfdb_source.with_suffix(".dat").read_bytes()[:5000]))
    sparse_header = _wfdb_copy(wfdb_source, root / "wfdb_sparse_header")
    os.truncate(sparse_header, 2 << 30)
    add(Case("wfdb_sparse_header", "limit"), sparse_header)

    # ACDC HDF5 ----------------------------------------------------------------------
    h5_source = acdc_dir / "patient001_frame01.h5"
    (root / "h5_truncated.h5").write_bytes(h5_source.read_bytes()[:30000])
    add(Case("h5_truncated.h5", "HDF5"), root / "h5_truncated.h5")
    with h5py.File(root / "h5_huge_dataset.h5", "w") as h5:  # declared, never written: the file stays small
        h5.create_dataset("image", shape=(100_000, 100_000, 100), dtype="f4", chunks=(1, 256, 100), compression="gzip")
        h5.create_dataset("label", shape=(100_000, 100_000, 100), dtype="u1", chunks=(1, 256, 100), compression="gzip")
    add(Case("h5_huge_dataset.h5", "limit"), root / "h5_huge_dataset.h5")
    with h5py.File(root / "h5_complex.h5", "w") as h5:
        h5["image"] = np.zeros((2, 8, 8), np.complex64)
        h5["label"] = np.zeros((2, 8, 8), np.uint8)
    add(Case("h5_complex.h5", "complex"), root / "h5_complex.h5")
    with h5py.File(root / "h5_group.h5", "w") as h5:
        h5.create_group("image")
        h5["label"] = np.zeros((2, 8, 8), np.uint8)
    add(Case("h5_group.h5", "dataset"), root / "h5_group.h5")
    return corpus


# --------------------------------------------------------------------------- running under limits


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_bytes: int


# Runs the command as its own child and writes that child's peak RSS to a file. A process started
# straight from the test process would report that process's peak RSS (Linux carries the parent's
# high-water mark into ru_maxrss across vfork/fork and exec), which grows with every test run before.
_LAUNCHER = r"""
import os, signal, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_limited(argv: list[str], timeout_s: float = TIMEOUT_S) -> Outcome:
    """Run `argv` with the address-space cap; kill it after `timeout_s`; return its own peak RSS.

    The cap is set by the shell that then execs `argv` (``ulimit -v``: RLIMIT_AS), not by a
    ``preexec_fn``, which is unsafe while other threads run (two commands run at a time here).
    `argv` runs under a small launcher (`_LAUNCHER`) that measures its own peak RSS.
    """
    import tempfile

    started = time.monotonic()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    fd, rss_file = tempfile.mkstemp(suffix=".rss")
    os.close(fd)
    launched = [sys.executable, "-c", _LAUNCHER, rss_file, *argv]
    limited = ["/bin/sh", "-c", f'ulimit -v {MEMORY_LIMIT_BYTES // 1024} && exec "$@"', "limited", *launched]
    proc = subprocess.Popen(limited, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    outputs: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda key=key, stream=stream: outputs.__setitem__(key, stream.read()))
               for key, stream in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    try:
        _, status, _ = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    for reader in readers:
        reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        peak_kb = int(Path(rss_file).read_text() or 0)  # empty when the launcher itself was killed
    finally:
        os.unlink(rss_file)
    return Outcome(proc.returncode, outputs["out"].decode(errors="replace"), outputs["err"].decode(errors="replace"),
                   time.monotonic() - started, peak_kb * 1024)


_READER_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from cardiacnets.errors import InputError
from cardiacnets.io.cmr import is_cmr_path, read_cmr
from cardiacnets.io.ecg import is_ecg_path, read_ecg

for line in sys.stdin:
    job = json.loads(line)
    path, started = Path(job["path"]), time.monotonic()
    result = {"name": job["name"]}
    try:
        if job["npy"]:
            read_ecg(path, sampling_rate_hz=job["rate"], lead_names=job["leads"])
        elif is_ecg_path(path):
            read_ecg(path)
        else:
            read_cmr(path)
        result["raised"] = None
    except InputError as err:
        result.update(raised="InputError", message=str(err), path=err.path)
    except BaseException as err:
        result.update(raised=type(err).__name__, message=str(err))
    result["seconds"] = time.monotonic() - started
    print(json.dumps(result), flush=True)
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data) -> dict[str, tuple[Path, Case]]:
    return build_corpus(tmp_path_factory.mktemp("corpus"), shared_data)


@pytest.fixture(scope="module")
def inspect_outcomes(corpus) -> dict[str, Outcome]:
    """``cardiacnets inspect FILE --json`` for every file, two processes at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def inspect(item):
        name, (path, case) = item
        return name, run_limited([sys.executable, "-m", "cardiacnets.cli", "inspect", str(path), "--json",
                                  *case.extra_args])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(inspect, corpus.items()))


@pytest.fixture(scope="module")
def reader_outcomes(corpus, tmp_path_factory) -> dict[str, dict]:
    """The reader functions on every file, in one capped process; one JSON line per file."""
    jobs = []
    for name, (path, case) in corpus.items():
        npy = path.suffix == ".npy"
        args = dict(zip(case.extra_args[::2], case.extra_args[1::2]))
        jobs.append({"name": name, "path": str(path), "npy": npy, "rate": float(args.get("--sampling-rate", 0)),
                     "leads": args.get("--leads", "").split(",")})
    script = tmp_path_factory.mktemp("reader") / "run_readers.py"
    script.write_text(_READER_SCRIPT)
    jobs_file = script.with_suffix(".jsonl")
    jobs_file.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    outcome = run_limited(["/bin/sh", "-c", f'exec "{sys.executable}" "{script}" < "{jobs_file}"'], timeout_s=TIMEOUT_S * 4)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    results = {}
    for line in outcome.stdout.splitlines():
        entry = json.loads(line)
        results[entry["name"]] = entry
    results["__peak_rss_bytes__"] = outcome.peak_rss_bytes
    return results


# Building the corpus needs the real samples; the names are fixed here so the tests can be parametrised.
CASE_NAMES = [
    "nifti_truncated.nii", "nifti_truncated.nii.gz", "nifti_header_cut.nii.gz", "nifti_empty.nii.gz",
    "nifti_wrong_magic.nii", "nifti_not_nifti.nii", "nifti_huge_dims.nii", "nifti_huge_dims.nii.gz",
    "nifti_dim0_negative.nii", "nifti_dim_negative.nii", "nifti_zero_sform.nii", "nifti_nan_sform.nii",
    "nifti_flat_sform.nii", "nifti_nan_qform.nii", "nifti_zero_pixdim.nii", "nifti_negative_pixdim.nii",
    "nifti_nan_pixdim.nii", "nifti_complex.nii", "nifti_rgb.nii", "nifti_inf_slope.nii", "nifti_nan_vox_offset.nii",
    "nifti_gzip_bomb.nii.gz", "nifti_extension_bomb.nii.gz",
    "dicom_nan_spacing.dcm", "dicom_zero_spacing.dcm", "dicom_negative_spacing.dcm", "dicom_inf_position.dcm",
    "dicom_zero_orientation.dcm", "dicom_parallel_orientation.dcm", "dicom_nan_thickness.dcm",
    "dicom_negative_thickness.dcm", "dicom_nan_slope.dcm", "dicom_huge_matrix.dcm", "dicom_no_spacing.dcm",
    "dicom_bad_instance_number.dcm", "dicom_truncated.dcm", "dicom_wrong_magic.dcm", "dicom_deflate_bomb.dcm",
    "zip_encrypted.zip", "zip_unknown_method.zip", "zip_lying_size.zip", "zip_bomb.zip", "zip_truncated.zip",
    "zip_many_members.zip", "zip_nan_spacing_member.zip",
    "npy_48tb.npy", "npy_over_byte_limit.npy", "npy_truncated.npy", "npy_complex.npy", "npy_object.npy",
    "npy_wrong_magic.npy", "npy_bad_header.npy", "npy_inf.npy", "npy_tiny_rate.npy",
    "xml_sparse_3gb.xml", "xml_truncated.xml", "xml_tiny_rate.xml", "xml_entity_bomb.xml",
    "wfdb_huge_samples", "wfdb_tiny_rate", "wfdb_nan_gain", "wfdb_truncated_dat", "wfdb_sparse_header",
    "h5_truncated.h5", "h5_huge_dataset.h5", "h5_complex.h5", "h5_group.h5",
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_corpus_names_are_listed(corpus):
    assert sorted(corpus) == sorted(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_inspect_refuses_cleanly(name, corpus, inspect_outcomes):
    path, case = corpus[name]
    outcome = inspect_outcomes[name]
    assert outcome.returncode >= 0, f"killed by signal {signal.Signals(-outcome.returncode).name}: {outcome.stderr[-500:]}"
    assert outcome.returncode == 2, (outcome.returncode, outcome.stdout[-500:], outcome.stderr[-2000:])
    assert outcome.stdout == ""
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr
    line = lines[0]
    assert line.startswith("cardiacnets inspect: error: "), line
    assert path.name in line and case.phrase in line, line
    for word in ("Traceback", "MemoryError"):
        assert word not in line, line
    assert outcome.seconds < TIMEOUT_S
    assert outcome.peak_rss_bytes < MEMORY_LIMIT_BYTES


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reader_raises_input_error(name, corpus, reader_outcomes):
    path, case = corpus[name]
    result = reader_outcomes[name]
    assert result["raised"] == "InputError", result
    message = result["message"]
    assert "\n" not in message and path.name in message and case.phrase in message, message
    assert result["seconds"] < TIMEOUT_S


def test_corpus_bounds(corpus, inspect_outcomes, reader_outcomes, capsys):
    """Print the corpus size, the slowest file and the largest peak memory (for the issue's report)."""
    slowest = max(inspect_outcomes.items(), key=lambda item: item[1].seconds)
    largest = max(inspect_outcomes.items(), key=lambda item: item[1].peak_rss_bytes)
    with capsys.disabled():
        print(f"\ncorpus: {len(corpus)} files, all exit 2; slowest inspect {slowest[0]} {slowest[1].seconds:.2f} s; "
              f"largest peak RSS {largest[0]} {largest[1].peak_rss_bytes / 2**20:.0f} MiB; "
              f"readers in one process: peak RSS {reader_outcomes['__peak_rss_bytes__'] / 2**20:.0f} MiB")
    assert largest[1].peak_rss_bytes < 1 << 30


def test_strict_json_on_a_good_file_with_nan_fields(tmp_path, shared_data):
    """A readable file whose description holds NaN and infinity prints strict JSON (null), exit 0."""
    xml = shared_data / "ukb_ecg_xml" / "ukbb_scrubbed.xml"
    edited = _xml_with(xml, tmp_path / "nan_measurements.xml", '<VentricularRate units="BPM">75</VentricularRate>',
                       '<VentricularRate units="BPM">NaN</VentricularRate>')
    edited = _xml_with(edited, edited, '<PAxis units="degrees">1</PAxis>', '<PAxis units="degrees">-inf</PAxis>')
    outcome = run_limited([sys.executable, "-m", "cardiacnets.cli", "inspect", str(edited), "--json"])
    assert outcome.returncode == 0, outcome.stderr
    desc = json.loads(outcome.stdout, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    assert desc["measurements"]["ventricular_rate_bpm"] is None and desc["measurements"]["p_axis_deg"] is None

    from cardiacnets.commands.inspect import strict_json_value

    value = strict_json_value({"a": float("nan"), "b": [np.float32("inf"), np.int64(3)], "c": (1.5, None)})
    assert value == {"a": None, "b": [None, 3], "c": [1.5, None]}
    json.dumps(value, allow_nan=False)
