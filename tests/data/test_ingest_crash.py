"""Crash-safe, memory-bounded batch ingest (issue 17): ``cardiacnets preprocess`` killed at its
bookkeeping points, with a worker killed outright or out of memory, with its parent killed,
with a torn log line, and with a second run into the same folder.

Every scenario ends with the same check: each subject of the raw tree is in
``manifest.csv`` or ``failures.csv``, and the arrays equal those of an
uninterrupted run."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cardiacnets.io.ecg as ecg_io
from cardiacnets.cli import main
from cardiacnets.config import load_config
from cardiacnets.data.preprocess import STATUS_DONE, STATUS_PENDING, PreprocessConfig, preprocess
from cardiacnets.errors import InputError

from support import DEMO_PREPROCESS_CONFIG
from support.datasets import synth_cohort

N_SUBJECTS = 6
ARRAYS = ("ecg", "ecg_lead_mask", "cmr_sa", "seg_sa", "cmr_la_4ch")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth_cohort(tmp_path_factory.mktemp("ingest") / "raw", N_SUBJECTS, seed=11)


@pytest.fixture(scope="module")
def config() -> PreprocessConfig:
    return load_config(PreprocessConfig, DEMO_PREPROCESS_CONFIG)


@pytest.fixture(scope="module")
def reference(cohort, config, tmp_path_factory) -> Path:
    """An uninterrupted run, in this process."""
    out = tmp_path_factory.mktemp("reference") / "ds"
    result = preprocess("ukb", cohort, out, config, workers=0)
    assert result.n_failed_records == 0
    return out


def _subject_ids(raw: Path) -> set[str]:
    return {str(eid) for eid in pd.read_csv(raw / "ukb_tabular.csv")["eid"]}


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    manifest = pd.read_csv(out / "manifest.csv", dtype={"subject_id": str})
    failures = pd.read_csv(out / "failures.csv", dtype={"subject_id": str})
    return manifest, failures


def _assert_accounted(out: Path, raw: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every subject is in the manifest or in failures.csv, and the log parses line by line."""
    manifest, failures = _tables(out)
    assert set(manifest["subject_id"]) | set(failures["subject_id"]) == _subject_ids(raw)
    for line in (out / "records.jsonl").read_text().splitlines():
        json.loads(line)
    return manifest, failures


def _assert_same_arrays(out: Path, reference: Path, rows=None) -> None:
    for name in ARRAYS:
        got, want = np.load(out / f"{name}.npy"), np.load(reference / f"{name}.npy")
        if rows is not None:
            got, want = got[rows], want[rows]
        np.testing.assert_array_equal(got, want, err_msg=name)


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    """The pids still alive (not zombies) after waiting up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as stream:
                    if stream.read().split(") ", 1)[1][0] != "Z":
                        alive.append(pid)
            except (FileNotFoundError, ProcessLookupError):
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


_KILL_AT_SCRIPT = r"""
import json, multiprocessing as mp, os, signal, sys
from pathlib import Path
import cardiacnets.data.preprocess as pp
from cardiacnets.config import load_config

point, nth, raw, out, config_path, pids_file = sys.argv[1:7]
calls = 0

def kill_at(name):
    global calls
    if name == point:
        calls += 1
        if calls == int(nth):
            Path(pids_file).write_text(json.dumps([p.pid for p in mp.active_children()]))
            os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does

pp._after_bookkeeping = kill_at
pp.preprocess("ukb", raw, out, load_config(pp.PreprocessConfig, config_path), workers=2, chunk_size=2)
print("finished without being killed")
"""


@pytest.mark.parametrize("point", ["log_written", "log_synced", "status_marked"])
def test_kill_at_each_bookkeeping_point_then_rerun_accounts_for_everyone(point, cohort, config, reference, tmp_path):
    out, pids_file = tmp_path / "ds", tmp_path / "workers.json"
    script = tmp_path / "kill_at.py"
    script.write_text(_KILL_AT_SCRIPT)
    run = subprocess.run([sys.executable, str(script), point, "2", str(cohort), str(out), str(DEMO_PREPROCESS_CONFIG),
                          str(pids_file)], capture_output=True, text=True, timeout=240)
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stdout, run.stderr[-2000:])
    # The workers die with their parent instead of waiting for work forever.
    assert _wait_gone(json.loads(pids_file.read_text())) == []

    status = np.load(out / "status.npy")
    logged = {json.loads(line)["row"] for line in (out / "records.jsonl").read_text().splitlines() if line.strip()}
    marked = set(np.flatnonzero(status != STATUS_PENDING).tolist())
    assert marked <= logged  # a row is never marked finished before its log entry is durable

    rerun = preprocess("ukb", cohort, out, config, workers=0)
    assert rerun.n_processed == N_SUBJECTS - len(marked)
    manifest, failures = _assert_accounted(out, cohort)
    assert len(manifest) == N_SUBJECTS and len(failures) == 0
    _assert_same_arrays(out, reference)
    assert preprocess("ukb", cohort, out, config, workers=0).n_processed == 0  # and now it is complete


def test_torn_log_line_and_status_without_log_entry_are_redone(cohort, config, reference, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    lines = (out / "records.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["row"] not in (3, 4)]
    torn = next(line for line in lines if json.loads(line)["row"] == 3)[:40]
    # Row 3: killed while its entry was being written (status still pending).
    # Row 4: marked done in status.npy but its entry never reached the log (the bug this issue found).
    (out / "records.jsonl").write_text("\n".join(kept) + "\n" + torn)
    status = np.load(out / "status.npy", mmap_mode="r+")
    status[3], status[4] = STATUS_PENDING, STATUS_DONE
    status.flush()
    del status
    for name in ARRAYS:
        array = np.load(out / f"{name}.npy", mmap_mode="r+")
        array[3:5] = 0
        array.flush()
        del array

    rerun = preprocess("ukb", cohort, out, config, workers=0)
    assert rerun.n_processed == 2
    manifest, failures = _assert_accounted(out, cohort)
    assert len(manifest) == N_SUBJECTS and len(failures) == 0
    _assert_same_arrays(out, reference)


def _victim(cohort: Path) -> str:
    return sorted(_subject_ids(cohort))[2]


def test_killed_worker_fails_one_record_which_is_not_retried(cohort, config, reference, tmp_path, monkeypatch):
    victim = _victim(cohort)
    real_read_ecg = ecg_io.read_ecg

    def read_ecg_or_die(path, **kwargs):
        if Path(path).name.startswith(f"{victim}_"):
            os.kill(os.getpid(), signal.SIGKILL)  # the worker (a forked copy of this process) dies here
        return real_read_ecg(path, **kwargs)

    monkeypatch.setattr(ecg_io, "read_ecg", read_ecg_or_die)
    out = tmp_path / "ds"
    result = preprocess("ukb", cohort, out, config, workers=2, chunk_size=2)
    manifest, failures = _assert_accounted(out, cohort)
    assert failures["subject_id"].tolist() == [victim] and result.n_failed_records == 1
    failure = failures.iloc[0]
    assert failure["modality"] == "ecg" and Path(failure["file"]).name.startswith(f"{victim}_20205")
    assert "worker killed by SIGKILL" in failure["reason"] and "out of memory?" in failure["reason"]
    assert victim not in set(manifest["subject_id"]) and len(manifest) == N_SUBJECTS - 1
    others = [row for row, subject in enumerate(np.loadtxt(out / "subject_ids.txt", dtype=str)) if subject != victim]
    _assert_same_arrays(out, reference, rows=others)

    # A rerun does not try the record that killed a worker again...
    again = preprocess("ukb", cohort, out, config, workers=2, chunk_size=2)
    assert again.n_processed == 0 and again.n_failed_not_retried == 1
    assert _tables(out)[1]["subject_id"].tolist() == [victim]
    # ...unless asked to (here the cause is gone).
    monkeypatch.setattr(ecg_io, "read_ecg", real_read_ecg)
    retried = preprocess("ukb", cohort, out, config, workers=2, chunk_size=2, retry_failed=True)
    assert retried.n_processed == 1
    manifest, failures = _assert_accounted(out, cohort)
    assert len(manifest) == N_SUBJECTS and len(failures) == 0
    _assert_same_arrays(out, reference)


def test_retry_failed_from_the_command_line(cohort, tmp_path, monkeypatch, capsys):
    victim = _victim(cohort)
    real_read_ecg = ecg_io.read_ecg

    def read_ecg_or_die(path, **kwargs):
        if Path(path).name.startswith(f"{victim}_"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_read_ecg(path, **kwargs)

    monkeypatch.setattr(ecg_io, "read_ecg", read_ecg_or_die)
    out = tmp_path / "ds"
    argv = ["preprocess", "--source", "ukb", str(cohort), "--out", str(out), "--config", str(DEMO_PREPROCESS_CONFIG),
            "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    assert "worker killed by SIGKILL" in capsys.readouterr().out
    assert main(argv) == 0
    assert "1 records failed in an earlier run and were not retried" in capsys.readouterr().out
    monkeypatch.setattr(ecg_io, "read_ecg", real_read_ecg)
    assert main([*argv, "--retry-failed"]) == 0
    assert "0 had failures" in capsys.readouterr().out


def test_worker_memory_limit_gives_a_clear_reason(cohort, config, tmp_path, monkeypatch):
    victim = _victim(cohort)
    real_read_ecg = ecg_io.read_ecg

    def read_ecg_greedily(path, **kwargs):
        if Path(path).name.startswith(f"{victim}_"):
            np.ones(3 << 30, dtype=np.uint8)  # 3 GiB: more than the worker may add
        return real_read_ecg(path, **kwargs)

    monkeypatch.setattr(ecg_io, "read_ecg", read_ecg_greedily)
    out = tmp_path / "ds"
    preprocess("ukb", cohort, out, config, workers=1, worker_memory_gb=1.0)
    _, failures = _assert_accounted(out, cohort)
    assert failures["subject_id"].tolist() == [victim]
    reason = failures.iloc[0]["reason"]
    assert reason.startswith(f"out of memory reading {victim}_20205_2_0.xml") and "limit of 1 GiB" in reason, reason
    assert "MemoryError" not in reason


_PARENT_SCRIPT = r"""
import os, sys, time
from pathlib import Path
import cardiacnets.io.ecg as ecg_io
import cardiacnets.data.preprocess as pp
from cardiacnets.config import load_config

raw, out, config_path, pids_dir = sys.argv[1:5]

def read_ecg_slowly(path, **kwargs):
    Path(pids_dir, str(os.getpid())).write_text("busy")
    time.sleep(600)  # a worker stuck on a slow record when the run is killed

ecg_io.read_ecg = read_ecg_slowly
pp.preprocess("ukb", raw, out, load_config(pp.PreprocessConfig, config_path), workers=2, chunk_size=2)
"""


def test_workers_exit_when_the_parent_is_killed(cohort, tmp_path):
    script, pids_dir = tmp_path / "parent.py", tmp_path / "pids"
    pids_dir.mkdir()
    script.write_text(_PARENT_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(cohort), str(tmp_path / "ds"), str(DEMO_PREPROCESS_CONFIG),
                               str(pids_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(pids_dir.iterdir())) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
        workers = [int(p.name) for p in pids_dir.iterdir()]
        assert len(workers) == 2, "the workers never started"
    finally:
        parent.kill()
        parent.wait()
    assert _wait_gone(workers) == []


def test_second_run_into_the_same_folder_is_refused(cohort, config, tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    with open(out / ".preprocess.lock", "a+") as held:  # what a running preprocess holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        with pytest.raises(InputError, match=r"another preprocess \(pid 4242\) is writing into this folder"):
            preprocess("ukb", cohort, out, config, workers=0)
        assert main(["preprocess", "--source", "ukb", str(cohort), "--out", str(out), "--workers", "0",
                     "--no-progress"]) == 2
        assert "another preprocess" in capsys.readouterr().err
        assert [p.name for p in out.iterdir()] == [".preprocess.lock"]  # nothing was written
    result = preprocess("ukb", cohort, out, config, workers=0)  # the lock is free again
    assert result.n_processed == N_SUBJECTS


def test_unexpected_errors_are_one_clear_line(cohort, config, tmp_path, monkeypatch):
    victim = _victim(cohort)
    real_read_ecg = ecg_io.read_ecg

    def read_ecg_badly(path, **kwargs):
        if Path(path).name.startswith(f"{victim}_"):
            raise MemoryError()
        if Path(path).name.startswith(sorted(_subject_ids(cohort))[3]):
            raise ValueError("leads\nmissing")
        return real_read_ecg(path, **kwargs)

    monkeypatch.setattr(ecg_io, "read_ecg", read_ecg_badly)
    preprocess("ukb", cohort, tmp_path / "ds", config, workers=0)
    _, failures = _assert_accounted(tmp_path / "ds", cohort)
    reasons = dict(zip(failures["subject_id"], failures["reason"]))
    assert reasons[victim] == f"out of memory reading {victim}_20205_2_0.xml: it needs more than the memory available"
    other = reasons[sorted(_subject_ids(cohort))[3]]
    assert other == f"unexpected ValueError reading {sorted(_subject_ids(cohort))[3]}_20205_2_0.xml: leads missing"
