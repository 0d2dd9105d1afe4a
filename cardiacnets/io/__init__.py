"""Readers and writers of ECG and CMR files, and the in-memory forms they read into: the floor of the package.

`read_ecg` and `read_cmr` pick the right reader from the path; every reader
raises `cardiacnets.errors.InputError` naming the file and the problem. The
readers return an `ecg_record.ECGRecord` (lead names and aliases in
`ecg_leads`) or a `cmr_image.CMRImage` (with the label convention
`SEG_LABELS` and the `VIEWS`); these sit here, below `cardiacnets.ecg` and
`cardiacnets.cmr`, because every reader needs them. DICOM: `dicom` reads a
series, `dicom_files` reads the files of a folder or zip within size ceilings,
`dicom_write` writes one. `previews` writes the GIF and PNG pictures of cines
and `stamp` holds the burned-in SYNTHETIC label that every writer of generated
images uses (GIF, PNG, DICOM).
"""

from cardiacnets.io.cmr import is_cmr_path, read_cmr
from cardiacnets.io.ecg import is_ecg_path, read_ecg

__all__ = ["read_ecg", "read_cmr", "is_ecg_path", "is_cmr_path"]
