"""Readers (and the writers the simulator and exports need) for ECG and CMR files.

`read_ecg` and `read_cmr` pick the right reader from the path; every reader
raises `cardiacnets.errors.InputError` naming the file and the problem.
`previews` writes the GIF and PNG pictures of cines and `stamp` holds the
burned-in SYNTHETIC label that every writer of generated images uses (GIF,
PNG, DICOM).
"""

from cardiacnets.io.cmr import is_cmr_path, read_cmr
from cardiacnets.io.ecg import is_ecg_path, read_ecg

__all__ = ["read_ecg", "read_cmr", "is_ecg_path", "is_cmr_path"]
