"""Raw trees → memory-mapped training sets (``cardiacnets preprocess``).

Subjects are found first (`cardiacnets.data.sources`), which fixes the row of
every subject, then arrays are allocated at full size and filled in parallel
by worker processes, each writing its rows in place. A status array records
each finished row, so an interrupted run resumes where it stopped and a rerun
with the same inputs and config does nothing new (idempotent). A record that
fails is skipped and listed with its reason in ``failures.csv``; the run always
finishes. The raw tree is only ever read.

Crash safety. Each finished row's entry is appended to ``records.jsonl`` and
made durable (flush + fsync, after the worker's array writes are synced)
before ``status.npy`` marks the row done, so a kill at any point loses at most
work, never bookkeeping; a truncated last log line is dropped on rerun, and a
row marked done without a log entry is processed again. One run at a time may
write into a folder (a lock file, ``.preprocess.lock``). Workers are separate
processes that die with the parent (``PR_SET_PDEATHSIG`` on Linux, else a
watchdog on ``os.getppid``), each under an address-space limit of
``worker_memory_gb`` beyond what it holds at start (``RLIMIT_AS``): a record
that needs more fails with "out of memory", and a worker that is killed
outright (the kernel's OOM killer) fails only the record it was reading, which
is listed with the reason and, like every failed record, not retried on a
rerun unless ``retry_failed`` is set.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import yaml

from cardiacnets.cmr.config import CMRConfig
from cardiacnets.config import to_dict
from cardiacnets.data.labels import DEFAULT_ICD10_MAP, ICD10Mapper
from cardiacnets.data.sources import SubjectFiles, scan_ukb, scan_wfdb
from cardiacnets.data.splits import SplitConfig, assign_split
from cardiacnets.data.store import DATASET_YAML, FAILURES, MANIFEST, REPORT, ArraySpec, RowWriter, create_arrays
from cardiacnets.ecg.config import ECGConfig
from cardiacnets.errors import CardiacNetsError, ConfigError, InputError
from cardiacnets.io.ecg_leads import STANDARD_LEADS

FORMAT_VERSION = 1
# Row states in status.npy: not yet processed, processed cleanly, processed with failures (not retried by default).
STATUS_PENDING, STATUS_DONE, STATUS_FAILED = 0, 1, 2
DEFAULT_WORKER_MEMORY_GB = 4.0
_RECORDS = "records.jsonl"  # per-row results, appended as rows finish (resume state)
_STATUS = "status.npy"
_LOCK = ".preprocess.lock"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class PreprocessConfig:
    """Everything that decides the content of a training set.

    Attributes:
        ecg: the standard ECG representation.
        cmr: the standard CMR representation (UK Biobank sources only).
        split: patient-level split (sources with official folds use those).
        icd10: disease label → ICD-10 codes, categories or ranges.
        storage_dtype: dtype of the float arrays on disk.
        ecg_instance: UK Biobank instance of the ECG (2 = first imaging visit).
        ptbxl_records: PTB-XL resolution to read, ``hr`` (500 Hz) or ``lr`` (100 Hz).
    """

    ecg: ECGConfig = field(default_factory=ECGConfig)
    cmr: CMRConfig = field(default_factory=CMRConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    icd10: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ICD10_MAP.items()})
    storage_dtype: Literal["float16", "float32"] = "float16"
    ecg_instance: int = 2
    ptbxl_records: Literal["hr", "lr"] = "hr"

    def validate(self) -> None:
        try:
            ICD10Mapper(self.icd10)
        except ValueError as err:
            raise ConfigError(f"icd10: {err}") from None


@dataclass
class PreprocessResult:
    """What a run did: counts, timings and where the outputs are."""

    out: Path
    n_subjects: int
    n_processed: int
    n_skipped_done: int
    n_failed_records: int
    seconds: float
    failures: list[dict]
    counts: dict
    n_failed_not_retried: int = 0


def array_specs(source: str, config: PreprocessConfig) -> list[ArraySpec]:
    """The arrays a training set of this source and config holds."""
    dtype = config.storage_dtype
    specs = [
        ArraySpec("ecg", (len(STANDARD_LEADS), config.ecg.n_samples), dtype),
        ArraySpec("ecg_lead_mask", (len(STANDARD_LEADS),), "bool"),
    ]
    if source == "ukb":
        c = config.cmr
        for view in c.views:
            n_slices = c.n_slices_out if view == "sa" else 1
            shape = (n_slices, c.n_frames, c.crop_size, c.crop_size)
            specs.append(ArraySpec(f"cmr_{view}", shape, dtype))
            specs.append(ArraySpec(f"seg_{view}", shape, "uint8"))
    return specs


# --------------------------------------------------------------------------- workers

_WORKER: dict = {}


def _no_report(*_args) -> None:
    """Progress report of a row processed in this process: nothing to tell."""


def _init_worker(out: str, source: str, config: PreprocessConfig, specs: list[ArraySpec],
                 report: Callable = _no_report) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; MONAI transforms must not oversubscribe
    _WORKER.clear()
    _WORKER.update(out=Path(out), source=source, config=config, writer=RowWriter(Path(out), specs), report=report,
                   memory_gb=None)


def _failure(subject: SubjectFiles, modality: str, path: Path | None, err: BaseException) -> dict:
    name = Path(path).name if path else "the record"
    if isinstance(err, InputError):
        reason = err.problem
    elif isinstance(err, MemoryError):
        limit = _WORKER.get("memory_gb")
        where = f"the worker's limit of {limit:g} GiB (--worker-memory-gb)" if limit else "the memory available"
        reason = f"out of memory reading {name}: it needs more than {where}"
    else:  # a bug or an unforeseen library error: say so, in one line
        detail = " ".join(str(err).split())[:300]
        reason = f"unexpected {type(err).__name__} reading {name}" + (f": {detail}" if detail else "")
    reason = " ".join(reason.split())
    return {"subject_id": subject.subject_id, "modality": modality, "file": str(path) if path else "", "reason": reason}


def _process_ecg(row: int, subject: SubjectFiles, info: dict, failures: list) -> None:
    from cardiacnets.ecg.standardize import standardize_ecg
    from cardiacnets.io.ecg import read_ecg

    config: PreprocessConfig = _WORKER["config"]
    writer: RowWriter = _WORKER["writer"]
    info["has_ecg"] = False
    if subject.ecg is None:
        return
    info["ecg_file"] = str(subject.ecg)
    _WORKER["report"]("reading", row, "ecg", str(subject.ecg))
    try:
        record = read_ecg(subject.ecg)
        std = standardize_ecg(record, config.ecg)
    except Exception as err:  # CardiacNetsError, MemoryError or an unforeseen reader crash: skip and list it
        failures.append(_failure(subject, "ecg", subject.ecg, err))
        return
    valid = np.flatnonzero(std.sample_mask)
    writer.write("ecg", row, std.signal)
    writer.write("ecg_lead_mask", row, std.lead_mask)
    info.update(
        has_ecg=True,
        ecg_valid_start=int(valid[0]) if valid.size else 0,
        ecg_valid_end=int(valid[-1]) + 1 if valid.size else 0,
        ecg_n_leads=int(std.lead_mask.sum()),
        ecg_source_rate_hz=float(record.sampling_rate_hz),
        ecg_quality=";".join(sorted({f.code for f in std.findings})),
    )
    for key, value in (record.measurements or {}).items():
        info[f"ecg_{key}"] = value
    for key in ("age_years", "sex_male"):
        if key in record.metadata and key not in info:
            info[key] = record.metadata[key]


def _process_cmr(row: int, subject: SubjectFiles, info: dict, failures: list) -> None:
    from cardiacnets.cmr.indices import function_indices
    from cardiacnets.cmr.standardize import standardize_cine
    from cardiacnets.io.cmr import read_cmr

    config: PreprocessConfig = _WORKER["config"]
    writer: RowWriter = _WORKER["writer"]
    report = _WORKER["report"]
    for view in config.cmr.views:
        info[f"has_{view}"] = False
        info[f"has_seg_{view}"] = False
        path = subject.cmr.get(view)
        if path is None:
            continue
        info[f"{view}_file"] = str(path)
        seg_path = subject.seg.get(view)
        seg = None
        try:
            report("reading", row, view, str(path))
            image = read_cmr(path, view=view)
            if seg_path is not None:
                info[f"seg_{view}_file"] = str(seg_path)
                report("reading", row, f"seg_{view}", str(seg_path))
                try:
                    seg = read_cmr(seg_path, view=view)
                except Exception as err:  # the cine is still usable; the crop falls back to its variance map
                    failures.append(_failure(subject, f"seg_{view}", seg_path, err))
                report("reading", row, view, str(path))
            std = standardize_cine(image, config.cmr, seg=seg)
        except Exception as err:  # CardiacNetsError, MemoryError or an unforeseen crash: skip and list it
            failures.append(_failure(subject, view, path, err))
            continue
        writer.write(f"cmr_{view}", row, std.frames)
        info[f"has_{view}"] = True
        if seg is not None and std.seg is not None:
            writer.write(f"seg_{view}", row, std.seg)
            info[f"has_seg_{view}"] = True
            if view == "sa":
                try:
                    for key, value in function_indices(seg).items():
                        info[f"seg_{key}"] = value
                except CardiacNetsError as err:
                    failures.append(_failure(subject, "seg_sa", seg_path, err))


def _process_rows(rows: list[tuple[int, SubjectFiles]]) -> list[tuple[int, dict, list[dict]]]:
    results = []
    for row, subject in rows:
        info: dict = {}
        failures: list[dict] = []
        _WORKER["report"]("row", row, "", "")
        _process_ecg(row, subject, info, failures)
        if _WORKER["source"] == "ukb":
            _process_cmr(row, subject, info, failures)
        results.append((row, info, failures))
    _WORKER["writer"].sync()  # the rows' arrays are durable before the parent logs them
    return results


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when the parent does (the OOM killer or a kill -9 of the run)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # also where prctl is missing, and if the parent died before prctl ran
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _limit_memory(memory_gb: float | None) -> None:
    """Cap this process's address space at what it maps now plus `memory_gb` GiB (Linux)."""
    if not memory_gb:
        return
    try:
        import resource

        with open("/proc/self/status") as stream:
            mapped_kb = next(int(line.split()[1]) for line in stream if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration, ValueError):
        return  # no /proc: no limit
    limit = mapped_kb * 1024 + int(memory_gb * (1 << 30))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    _WORKER["memory_gb"] = memory_gb


def _worker_main(connection, parent_pid: int, lock_fd: int | None, init_args: tuple, memory_gb: float | None) -> None:
    """A worker process: rows in, results out over `connection`, until told to stop."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    if lock_fd is not None:
        os.close(lock_fd)  # the output lock belongs to the parent

    def report(kind: str, row: int, modality: str, file: str) -> None:
        connection.send((kind, row, modality, file))

    _init_worker(*init_args, report=report)
    _limit_memory(memory_gb)
    connection.send(("ready", -1, "", ""))
    while True:
        try:
            chunk = connection.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        connection.send(("done", _process_rows(chunk)))


def _death_reason(exitcode: int | None, reading_file: bool) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        what = f"worker killed by {name}"
        if -exitcode == signal.SIGKILL:
            what += " — out of memory? (the kernel's OOM killer sends SIGKILL)"
    else:
        what = f"worker exited with status {exitcode}"
    where = "while reading this file" if reading_file else "while processing this subject"
    return f"{what} {where}; not retried on a rerun unless --retry-failed"


class _WorkerPool:
    """Worker processes fed one chunk at a time; a worker that dies fails only the record it was reading."""

    def __init__(self, n_workers: int, init_args: tuple, memory_gb: float | None, lock_fd: int | None):
        self.context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        if self.context.get_start_method() == "fork":
            # Import what the workers run once, here: every fork (a replacement too) then starts warm.
            import torch  # noqa: F401

            import cardiacnets.cmr.indices  # noqa: F401
            import cardiacnets.cmr.standardize  # noqa: F401
            import cardiacnets.ecg.standardize  # noqa: F401
            import cardiacnets.io.cmr  # noqa: F401
            import cardiacnets.io.ecg  # noqa: F401
        self.init_args, self.memory_gb = init_args, memory_gb
        # A forked worker inherits the lock's descriptor and closes it; a spawned one never has it.
        self.lock_fd = lock_fd if self.context.get_start_method() == "fork" else None
        self.n_workers = n_workers
        self.workers: list[dict] = []
        self.deaths_before_a_record = 0

    def _start(self) -> dict:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=_worker_main, args=(child_end, os.getpid(), self.lock_fd, self.init_args, self.memory_gb),
            daemon=True, name="cardiacnets-preprocess-worker",
        )
        process.start()
        child_end.close()
        worker = {"process": process, "connection": parent_end, "ready": False, "chunk": None, "reading": None}
        self.workers.append(worker)
        return worker

    def run(self, chunks: list[list[tuple[int, SubjectFiles]]], subjects: list[SubjectFiles],
            consume: Callable[[list[tuple[int, dict, list[dict]]]], None]) -> None:
        """Process every chunk; `consume` gets each batch of results (rows of a chunk, or a killed row)."""
        queue = list(chunks)
        for _ in range(min(self.n_workers, len(queue))):
            self._start()
        try:
            while queue or any(w["chunk"] is not None for w in self.workers):
                for worker in self.workers:
                    if worker["ready"] and worker["chunk"] is None and queue:
                        chunk = queue.pop(0)
                        try:
                            worker["connection"].send(chunk)
                        except OSError:  # died while idle: its sentinel fires below
                            queue.insert(0, chunk)
                            continue
                        worker["chunk"], worker["reading"] = chunk, None
                by_handle = {}
                for worker in self.workers:
                    by_handle[worker["connection"]] = worker
                    by_handle[worker["process"].sentinel] = worker
                for handle in wait(list(by_handle)):
                    worker = by_handle[handle]
                    if worker not in self.workers:
                        continue  # already replaced in this round
                    if handle is worker["connection"]:
                        self._receive(worker, consume)
                    elif not self._drain(worker, consume):
                        self._replace(worker, queue, subjects, consume)
        finally:
            self.close()

    def _receive(self, worker: dict, consume) -> bool:
        try:
            message = worker["connection"].recv()
        except (EOFError, OSError):
            return False  # the worker is gone; its sentinel says so next
        kind = message[0]
        if kind == "ready":
            worker["ready"] = True
        elif kind == "row":
            worker["reading"] = (message[1], "", "")
        elif kind == "reading":
            worker["reading"] = (message[1], message[2], message[3])
        elif kind == "done":
            worker["chunk"], worker["reading"] = None, None
            consume(message[1])
        return True

    def _drain(self, worker: dict, consume) -> bool:
        """Read what a finished worker sent before it died; True if it is still alive."""
        while worker["connection"].poll():
            if not self._receive(worker, consume):
                break
        return worker["process"].is_alive()

    def _replace(self, worker: dict, queue: list, subjects: list[SubjectFiles], consume) -> None:
        process = worker["process"]
        process.join()
        self.workers.remove(worker)
        worker["connection"].close()
        if not worker["ready"]:
            raise RuntimeError(f"a preprocess worker failed to start (exit code {process.exitcode})")
        chunk = worker["chunk"]
        if chunk is not None and worker["reading"] is None:
            # Died before starting on any record: nobody to blame, unless that keeps happening.
            self.deaths_before_a_record += 1
            if self.deaths_before_a_record > 2 * self.n_workers:
                raise RuntimeError(f"preprocess workers keep dying before reading a record (exit code {process.exitcode})")
            queue.insert(0, chunk)
        elif chunk is not None:
            row, modality, file = worker["reading"]
            subject = subjects[row]
            failure = {"subject_id": subject.subject_id, "modality": modality or "all", "file": file,
                       "reason": _death_reason(process.exitcode, bool(file))}
            consume([(row, {}, [failure])])
            rest = [item for item in chunk if item[0] != row]  # rows before it are redone: their results were lost
            if rest:
                queue.insert(0, rest)
        if queue or any(w["chunk"] is not None for w in self.workers):
            self._start()

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker["connection"].send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 5.0
        for worker in self.workers:
            worker["process"].join(max(0.0, deadline - time.monotonic()))
            if worker["process"].is_alive():
                worker["process"].kill()
                worker["process"].join()
            worker["connection"].close()
        self.workers = []


# --------------------------------------------------------------------------- driver

def _check_out(raw: Path, out: Path) -> None:
    raw_r, out_r = raw.resolve(), out.resolve()
    if out_r == raw_r or raw_r in out_r.parents:
        raise InputError(out, f"output folder lies inside the raw tree {raw}; the raw tree is never written to")


def _prepare_out(out: Path, source: str, raw: Path, config: PreprocessConfig, n: int, subject_ids: list[str], specs: list[ArraySpec]) -> bool:
    """Create the output folder or check that it matches; return True when resuming."""
    header = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "raw": str(raw.resolve()),
        "n_subjects": n,
        "config": to_dict(config),
        "arrays": [{"name": s.name, "row_shape": list(s.row_shape), "dtype": s.dtype} for s in specs],
        "lead_order": list(STANDARD_LEADS),
    }
    yaml_path = out / DATASET_YAML
    ids_path = out / "subject_ids.txt"
    if yaml_path.is_file():
        existing = yaml.safe_load(yaml_path.read_text())
        for key in ("format_version", "source", "n_subjects", "config", "arrays"):
            if existing.get(key) != header[key]:
                raise InputError(out, f"already holds a training set made with a different {key.replace('_', ' ')}; choose a new --out (or delete it)")
        if ids_path.read_text().split() != subject_ids:
            raise InputError(out, "already holds a training set of other subjects (the raw tree changed); choose a new --out")
        return True
    if out.exists() and any(entry.name != _LOCK for entry in out.iterdir()):
        raise InputError(out, "output folder exists and is not empty; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    create_arrays(out, n, specs)
    np.save(out / _STATUS, np.zeros(n, dtype=np.uint8))
    ids_path.write_text("\n".join(subject_ids) + "\n")
    yaml_path.write_text(yaml.safe_dump(header, sort_keys=False))
    return False


def _load_records(out: Path) -> dict[int, dict]:
    """The log's entries by row (the last entry of a row wins).

    A last line cut short by a kill is removed from the file (so that appends
    start on a fresh line); any other unreadable line is skipped, and its row,
    having no entry, is processed again.
    """
    records: dict[int, dict] = {}
    path = out / _RECORDS
    if not path.is_file():
        return records
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        with open(path, "r+b") as stream:
            stream.truncate(complete)
            os.fsync(stream.fileno())
    for line in data[:complete].splitlines():
        try:
            entry = json.loads(line)
            records[int(entry["row"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return records


def _lock_out(out: Path) -> int | None:
    """Create the output folder and hold its lock for this run; returns the lock's file descriptor."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise InputError(out, f"cannot create the output folder or its lock: {err.strerror or err}") from None
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): run unlocked
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InputError(
            out, f"another preprocess (pid {holder}) is writing into this folder; wait for it to finish or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unlock_out(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing releases the flock


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file and rename, so a kill never leaves a half-written file."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _after_bookkeeping(point: str) -> None:
    """Called at each bookkeeping step of a run (``log_written``, ``log_synced``, ``status_marked``).

    Does nothing; tests replace it to kill the run at exactly that point.
    """


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def preprocess(source: Literal["ukb", "wfdb"], raw: str | Path, out: str | Path, config: PreprocessConfig | None = None,
               workers: int | None = None, chunk_size: int = 8, progress: bool = False, retry_failed: bool = False,
               worker_memory_gb: float | None = DEFAULT_WORKER_MEMORY_GB) -> PreprocessResult:
    """Build (or resume) a training set from a raw tree.

    Args:
        source: ``"ukb"`` (ECG XML + CMR + tabular CSVs) or ``"wfdb"`` (ECG-only trees).
        raw: the raw tree; never written to.
        out: the training set folder to create or resume.
        config: preprocessing config (defaults when None).
        workers: processes; 0 runs in this process (no crash isolation or
            memory limit), None uses every CPU.
        chunk_size: subjects per task sent to a worker.
        progress: show a progress bar.
        retry_failed: process again the rows that failed in an earlier run
            (by default they keep their recorded failure).
        worker_memory_gb: GiB of address space each worker may add to what it
            maps at start (``RLIMIT_AS``, Linux); None or 0 for no limit.

    Returns:
        A `PreprocessResult`; ``manifest.csv``, ``failures.csv`` and
        ``report.json`` are written in `out`.

    Raises:
        InputError: the raw tree has no records, `out` lies inside it, holds
            another training set, or another preprocess is writing into it.
    """
    config = config or PreprocessConfig()
    raw, out = Path(raw), Path(out)
    _check_out(raw, out)
    started = time.perf_counter()
    if source == "ukb":
        subjects, tables = scan_ukb(raw, config.ecg_instance, tuple(config.cmr.views))
        notes = {"tabular_files": [str(t) for t in tables]}
    elif source == "wfdb":
        subjects, notes = scan_wfdb(raw, config.ptbxl_records)
        tables = []
    else:
        raise ConfigError(f"unknown source {source!r}; use ukb or wfdb")
    if not subjects:
        raise InputError(raw, f"no {source} records found (see the README's raw layouts)")
    n = len(subjects)
    specs = array_specs(source, config)
    lock_fd = _lock_out(out)
    try:
        resuming = _prepare_out(out, source, raw, config, n, [s.subject_id for s in subjects], specs)
        records = _load_records(out) if resuming else {}
        status = np.load(out / _STATUS, mmap_mode="r+")
        todo, n_not_retried = [], 0
        for row, subject in enumerate(subjects):
            state = int(status[row])
            if state == STATUS_FAILED and not retry_failed and row in records:
                n_not_retried += 1
            elif state == STATUS_PENDING or row not in records or (state == STATUS_FAILED and retry_failed):
                todo.append((row, subject))  # a row marked finished without its log entry is done again
        n_skipped = n - len(todo)
        workers = default_workers() if workers is None else workers
        chunks = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"preprocess {source}", unit="subject")
        with open(out / _RECORDS, "a") as log:
            def consume(results: list[tuple[int, dict, list[dict]]]) -> None:
                # The entries are durable before the rows are marked: a kill in between only repeats work.
                for row, info, failures in results:
                    entry = {"row": row, "info": info, "failures": failures}
                    records[row] = entry
                    log.write(json.dumps(entry, default=float) + "\n")
                _after_bookkeeping("log_written")
                log.flush()
                os.fsync(log.fileno())
                _after_bookkeeping("log_synced")
                for row, _, failures in results:
                    status[row] = STATUS_FAILED if failures else STATUS_DONE
                status.flush()
                _after_bookkeeping("status_marked")
                if bar is not None:
                    bar.update(len(results))

            init_args = (str(out), source, config, specs)
            if not chunks:
                pass
            elif workers == 0:
                _init_worker(*init_args)
                try:
                    for chunk in chunks:
                        consume(_process_rows(chunk))
                finally:
                    _WORKER["writer"].close()
            else:
                pool = _WorkerPool(min(workers, len(chunks)), init_args, worker_memory_gb, lock_fd)
                pool.run(chunks, subjects, consume)
        if bar is not None:
            bar.close()
        del status

        manifest, failures = _build_manifest(source, subjects, records, tables, config)
        _write_atomically(out / MANIFEST, lambda p: manifest.to_csv(p, index=False))
        failure_table = pd.DataFrame(failures, columns=["subject_id", "modality", "file", "reason"])
        _write_atomically(out / FAILURES, lambda p: failure_table.to_csv(p, index=False))
        counts = {col: int(manifest[col].sum()) for col in manifest.columns if col.startswith("has_")}
        counts.update({f"split_{k}": int(v) for k, v in manifest["split"].value_counts().items()})
        seconds = time.perf_counter() - started
        result = PreprocessResult(out=out, n_subjects=n, n_processed=len(todo), n_skipped_done=n_skipped,
                                  n_failed_records=len(failures), seconds=seconds, failures=failures, counts=counts,
                                  n_failed_not_retried=n_not_retried)
        report = {"source": source, "raw": str(raw), "n_subjects": n, "n_in_manifest": len(manifest),
                  "n_processed_this_run": len(todo), "n_skipped_already_done": n_skipped,
                  "n_failed_not_retried": n_not_retried, "n_failed_records": len(failures),
                  "seconds": round(seconds, 3),
                  "subjects_per_s": round(len(todo) / seconds, 2) if seconds > 0 else None,
                  "workers": workers, "worker_memory_gb": worker_memory_gb or None, "counts": counts, **notes}
        _write_atomically(out / REPORT, lambda p: p.write_text(json.dumps(report, indent=2) + "\n"))
    finally:
        _unlock_out(lock_fd)
    return result


def _build_manifest(source: str, subjects: list[SubjectFiles], records: dict[int, dict], tables: list[Path],
                    config: PreprocessConfig) -> tuple[pd.DataFrame, list[dict]]:
    rows, failures = [], []
    for row, subject in enumerate(subjects):
        entry = records.get(row, {"info": {}, "failures": []})
        failures.extend(entry["failures"])
        info = dict(entry["info"])
        split = subject.extra.get("split") or assign_split(subject.patient_id, config.split)
        base = {"row": row, "subject_id": subject.subject_id, "patient_id": subject.patient_id, "split": split}
        base.update({k: v for k, v in subject.extra.items() if k != "split"})
        base.update(info)
        rows.append(base)
    manifest = pd.DataFrame(rows)
    has_cols = [c for c in manifest.columns if c.startswith("has_") and not c.startswith("has_seg_")]
    for col in [c for c in manifest.columns if c.startswith("has_")]:
        manifest[col] = manifest[col].fillna(False).astype(bool)
    # A subject stays when any modality was read; those with none are only in failures.csv.
    manifest = manifest[manifest[has_cols].any(axis=1)] if has_cols else manifest
    if source == "ukb" and tables:
        from cardiacnets.data.tabular import read_ukb_tabular

        tab = read_ukb_tabular(tables, ICD10Mapper(config.icd10))
        tab.index = tab.index.astype(str)
        tab = tab.drop(columns=[c for c in tab.columns if c in manifest.columns and c not in ("age_years", "sex_male")])
        manifest = manifest.drop(columns=[c for c in ("age_years", "sex_male") if c in manifest.columns and c in tab.columns])
        manifest = manifest.merge(tab, left_on="subject_id", right_index=True, how="left")
        for col in [c for c in tab.columns if c.startswith("label_")]:
            manifest[col] = manifest[col].fillna(False).astype(bool)
    return manifest.reset_index(drop=True), failures
