"""`write_cohort` and a disk that is (or becomes) too small: a clear error naming the folder, not a silent trail
of failed subjects (a 10,000-subject cohort is about 60 GB)."""

from __future__ import annotations

import errno
import pickle
from collections import namedtuple

import pytest

import cardiacnets.io.nifti
import cardiacnets.simulate.cohort as cohort
from cardiacnets.errors import InputError
from cardiacnets.simulate import SynthConfig, write_cohort

SMALL = dict(image_size=64, la_image_size=48, n_frames=12)
Usage = namedtuple("Usage", "total used free")


def test_a_cohort_that_would_not_fit_is_refused_after_its_first_subject(tmp_path, monkeypatch):
    out = tmp_path / "cohort"
    monkeypatch.setattr(cohort.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    with pytest.raises(cohort.DiskFullError) as err:
        write_cohort(out, 50, config=SynthConfig(**SMALL), workers=1, ceiling=False)
    message = str(err.value)
    assert str(out) in message and "50 subjects need about" in message and "0.0 GB are free" in message
    assert isinstance(err.value, InputError)
    # Only the probe subject was simulated.
    assert len(list((out / "ecg").iterdir())) == 1 and len(list((out / "cmr").iterdir())) == 1


def test_the_disk_filling_up_stops_the_cohort_instead_of_failing_each_subject(tmp_path, monkeypatch):
    real_write = cardiacnets.io.nifti.write_nifti
    calls = {"n": 0}

    def filling(image, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:  # the first subject's three files fit; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(image, path, *args, **kwargs)

    monkeypatch.setattr(cardiacnets.io.nifti, "write_nifti", filling)
    with pytest.raises(cohort.DiskFullError, match="the disk is full .subject 1000002: No space left on device"):
        write_cohort(tmp_path / "cohort", 4, config=SynthConfig(**SMALL), workers=1, ceiling=False)


def test_input_errors_survive_a_worker_process():
    error = pickle.loads(pickle.dumps(cohort.DiskFullError("/data/cohort", "the disk is full")))
    assert type(error) is cohort.DiskFullError and error.path == "/data/cohort" and error.problem == "the disk is full"
    assert str(error) == "/data/cohort: the disk is full"
