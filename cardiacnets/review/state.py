"""What the review app's routes share: its settings, the data set, models, worker, databases and studies.

`ReviewSettings` is the app's typed configuration (filled by ``cardiacnets
review``); `ReviewState` opens everything once at start-up — the training set,
the review database (marks and uploads), the signing secret, the served
studies — and answers the routes' questions: which case a key names, its
standard ECG, its real and generated cines, its predictions, and the
background jobs that compute the latter two.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from cardiacnets.errors import ConfigError, InputError
from cardiacnets.review import render
from cardiacnets.review.auth import (
    check_token_strength,
    generate_token,
    is_loopback,
    load_secret,
    private_file,
    private_folder,
)
from cardiacnets.review.display import MEASUREMENT_FIELDS, number, reference_ranges
from cardiacnets.review.jobs import GenerationSettings, JobRunner, ReviewModels, generate_cine, load_cine, save_cine, save_json
from cardiacnets.review.security import LoginLimiter, allowed_hosts
from cardiacnets.review.study import StudyConfig, load_study, resolve_cases
from cardiacnets.review.study_store import StudyStore, study_db_path
from cardiacnets.review.uploads import PARSE_MEMORY_BYTES, PARSE_TIMEOUT_S, StoredUpload, is_upload_id, read_upload

DEFAULT_CYCLE_MS = 1000.0
TOKEN_SOURCE = "--token / CARDIACNETS_REVIEW_TOKEN"
# Tokens printed in configs/demo/study.yaml: public, so refused unless the app binds loopback only.
PUBLISHED_TOKENS = frozenset({"demo-reader-token", "demo-admin-token"})


@dataclass
class ReviewSettings:
    """Settings of one review app.

    Attributes:
        data_dir: the training set (`cardiacnets preprocess` output), read only.
        app_dir: the app's own folder: review marks, uploads, caches, study databases.
        host: the address the server binds; any address but loopback needs a
            configured token, and is answered as a ``Host`` name unless a wildcard.
        token: the review pages' token (at least 16 characters); None makes a
            random one per launch (`ReviewState.token`), which is then required
            just the same. A configured one is required when ``host`` is not
            loopback or a study is served.
        allowed_hosts: further ``Host`` names the app answers (``--allowed-host``),
            besides 127.0.0.1, localhost and ``host``.
        studies: study YAML files to serve.
        max_upload_bytes: the largest accepted upload.
        upload_parse_memory_bytes: address space of the worker process that parses an upload.
        upload_parse_timeout_s: that worker is stopped (and the upload refused) after this long.
        max_body_bytes: the largest JSON or form body (uploads excepted).
        login_attempts_per_minute: wrong tokens a client may send to one sign-in
            form per minute (all clients together: ten times as many) before 429.
        generation: generator call settings.
        prefetch_studies: generate the cines of the studies' generated arms at start.
        cases_per_page: rows of the case list per page.
    """

    data_dir: Path
    app_dir: Path
    host: str = "127.0.0.1"
    token: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    studies: list[Path] = field(default_factory=list)
    max_upload_bytes: int = 20 * 1024 * 1024
    upload_parse_memory_bytes: int = PARSE_MEMORY_BYTES
    upload_parse_timeout_s: float = PARSE_TIMEOUT_S
    max_body_bytes: int = 1024 * 1024
    login_attempts_per_minute: int = 5
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prefetch_studies: bool = True
    cases_per_page: int = 50

    def validate(self) -> None:
        """Raise ConfigError on a weak or missing token, a bad host name or limit."""
        if self.token is not None:
            check_token_strength(self.token, f"the review token ({TOKEN_SOURCE})")
        if self.token is None and not is_loopback(self.host):
            raise ConfigError(f"binding {self.host} (not this machine only) needs a token: pass --token or set "
                              "CARDIACNETS_REVIEW_TOKEN")
        if self.token is None and self.studies:
            raise ConfigError("serving a reader study needs a review token (--token or CARDIACNETS_REVIEW_TOKEN), so "
                              "that readers cannot open the case pages, which show what the study hides")
        allowed_hosts(self.host, self.allowed_hosts)
        if self.max_upload_bytes < 1024:
            raise ConfigError("the upload limit must be at least 1 kB")
        if self.upload_parse_memory_bytes < 256 * 2**20:
            raise ConfigError("the upload parser's memory limit must be at least 256 MB")
        if not self.upload_parse_timeout_s > 0:
            raise ConfigError("the upload parser's time limit must be positive")
        if self.max_body_bytes < 16 * 1024:
            raise ConfigError("the request body limit must be at least 16 kB")
        if self.login_attempts_per_minute < 1:
            raise ConfigError("login_attempts_per_minute must be at least 1")


@dataclass
class Case:
    """A case shown by the app: a data-set subject or an upload.

    Attributes:
        key: URL- and file-safe key (``d`` + hash of the subject id, or ``u`` + upload id).
        title: the subject id or the upload's file name.
        row: the manifest row (data-set cases).
        upload: the stored upload (uploaded cases).
    """

    key: str
    title: str
    row: pd.Series | None = None
    upload: StoredUpload | None = None

    @property
    def subject_id(self) -> str | None:
        return None if self.row is None else str(self.row["subject_id"])

    @property
    def url(self) -> str:
        return f"/cases/{quote(self.subject_id, safe='')}" if self.row is not None else f"/uploads/{self.upload.upload_id}"


@dataclass
class ECGView:
    """An ECG ready to draw: (12, T) mV with its masks and rate."""

    signal_mV: np.ndarray
    sampling_rate_hz: float
    lead_mask: np.ndarray
    sample_mask: np.ndarray
    measurements: dict = field(default_factory=dict)
    interpretation: list = field(default_factory=list)
    sex_male: bool | None = None


@dataclass
class StudyRuntime:
    """A served study: its config, database and case rows."""

    config: StudyConfig
    store: StudyStore
    path: Path


def subject_key(subject_id: str) -> str:
    """The URL key of a data-set subject: ``d`` + 16 hex digits of its id's SHA-256."""
    return "d" + hashlib.sha256(str(subject_id).encode()).hexdigest()[:16]


def resolve_source_file(value, data_dir: Path, raw_dir: str | None = None) -> Path | None:
    """A manifest's source-file path (``ecg_file``) as a file that exists, when it can be found.

    `preprocess` records source files as it was given them: absolute, or
    relative to the folder it ran in, which the app may not share. A relative
    path is looked for under the data set folder, then under the raw folder
    recorded in ``dataset.yaml`` (its leading folders matched against the raw
    folder's trailing ones: ``runs/cohort/ecg/x.xml`` under ``/work/runs/cohort``),
    then under the folder the app runs in.

    Args:
        value: the manifest's value (NaN or empty: no file).
        data_dir: the training set folder.
        raw_dir: ``dataset.yaml``'s absolute ``raw`` folder, if recorded.

    Returns:
        The first candidate that exists, else the data-set-relative one (for
        the error message); None when the manifest names no file.
    """
    if not isinstance(value, str) or not value:
        return None
    path = Path(value)
    if path.is_absolute():
        return path
    candidates = [Path(data_dir) / path]
    if raw_dir:
        raw = Path(raw_dir)
        for k in range(min(len(raw.parts), len(path.parts) - 1), 0, -1):
            if raw.parts[-k:] == path.parts[:k]:
                candidates.append(raw.joinpath(*path.parts[k:]))
        candidates.append(raw / path)
    candidates.append(path.resolve())
    return next((c for c in candidates if c.is_file()), candidates[0])


class ReviewState:
    """Everything the routes share: data set, models, worker, stores, studies, tokens.

    Args:
        settings: the app settings (validated here).
        models: the run's models (None: no generator, no heads).

    Raises:
        ConfigError / InputError: bad settings, a world-writable app folder, a
            bad data set, study definition or model folder.
    """

    def __init__(self, settings: ReviewSettings, models: ReviewModels | None = None):
        from cardiacnets.config import from_dict
        from cardiacnets.data.store import TrainingSet
        from cardiacnets.ecg.config import ECGConfig

        settings.validate()
        self.settings = settings
        self.token = settings.token or generate_token()
        self.token_generated = settings.token is None
        self.allowed_hosts = allowed_hosts(settings.host, settings.allowed_hosts)
        self.models = models or ReviewModels(None)
        self.app_dir = private_folder(Path(settings.app_dir))
        self.secret = load_secret(self.app_dir)
        self.limiter = LoginLimiter(per_client=settings.login_attempts_per_minute,
                                    per_form=10 * settings.login_attempts_per_minute)
        self.data = TrainingSet(settings.data_dir)
        manifest = self.data.manifest.copy()
        manifest["subject_id"] = manifest["subject_id"].astype(str)
        self.manifest = manifest
        self.label_columns = [c for c in manifest.columns if c.startswith("label_")]
        self.reference = reference_ranges(manifest)
        self.by_key = {subject_key(sid): i for i, sid in enumerate(manifest["subject_id"])}
        self.by_subject = {sid: i for i, sid in enumerate(manifest["subject_id"])}
        ecg_section = dict((self.data.info.get("config") or {}).get("ecg") or {})
        self.ecg_config = from_dict(ECGConfig, ecg_section, "ecg") if ecg_section else ECGConfig()
        self.runner = JobRunner()
        self.db_path = private_file(self.app_dir / "review.sqlite")
        self._init_review_db()
        self._ecg_cache: OrderedDict[str, ECGView] = OrderedDict()
        self._media_cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.studies: dict[str, StudyRuntime] = {}
        for path in settings.studies:
            self._open_study(Path(path))

    # -- review database (marks and uploads)

    def _init_review_db(self) -> None:
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript("""
                CREATE TABLE IF NOT EXISTS reviews (case_key TEXT PRIMARY KEY, reviewed INTEGER NOT NULL,
                    note TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS uploads (upload_id TEXT PRIMARY KEY, original_name TEXT NOT NULL,
                    kind TEXT NOT NULL, ecg_file TEXT NOT NULL, created_at TEXT NOT NULL);
            """)

    @contextlib.contextmanager
    def _db(self):
        db = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def reviews(self) -> dict[str, tuple[bool, str]]:
        with self._db() as db:
            return {k: (bool(r), n) for k, r, n in db.execute("SELECT case_key, reviewed, note FROM reviews")}

    def set_review(self, case_key: str, reviewed: bool, note: str) -> None:
        with self._db() as db:
            db.execute("INSERT INTO reviews(case_key, reviewed, note, updated_at) VALUES(?, ?, ?, ?) ON CONFLICT(case_key) "
                       "DO UPDATE SET reviewed=excluded.reviewed, note=excluded.note, updated_at=excluded.updated_at",
                       (case_key, int(reviewed), note[:4000], dt.datetime.now(dt.timezone.utc).isoformat()))

    def add_upload(self, upload: StoredUpload) -> None:
        with self._db() as db:
            db.execute("INSERT INTO uploads(upload_id, original_name, kind, ecg_file, created_at) VALUES(?, ?, ?, ?, ?)",
                       (upload.upload_id, upload.original_name, upload.kind,
                        str(upload.ecg_path.relative_to(self.uploads_dir)), dt.datetime.now(dt.timezone.utc).isoformat()))

    def uploads(self) -> list[dict]:
        with self._db() as db:
            rows = db.execute("SELECT upload_id, original_name, kind, created_at FROM uploads ORDER BY created_at DESC")
            return [dict(zip(("upload_id", "original_name", "kind", "created_at"), r)) for r in rows]

    @property
    def uploads_dir(self) -> Path:
        return self.app_dir / "uploads"

    # -- cases

    def case_by_subject(self, subject_id: str) -> Case | None:
        index = self.by_subject.get(subject_id)
        if index is None:
            return None
        row = self.manifest.iloc[index]
        return Case(subject_key(subject_id), subject_id, row=row)

    def case_by_key(self, key: str) -> Case | None:
        if key.startswith("d") and key in self.by_key:
            return self.case_by_subject(self.manifest["subject_id"].iloc[self.by_key[key]])
        if key.startswith("u"):
            return self.case_by_upload(key[1:])
        return None

    def case_by_upload(self, upload_id: str) -> Case | None:
        if not is_upload_id(upload_id):
            return None
        with self._db() as db:
            row = db.execute("SELECT original_name, kind, ecg_file FROM uploads WHERE upload_id=?", (upload_id,)).fetchone()
        if row is None:
            return None
        name, kind, ecg_file = row
        upload = StoredUpload(upload_id, self.uploads_dir / upload_id, self.uploads_dir / ecg_file, name, kind)
        return Case("u" + upload_id, name, upload=upload)

    def ecg_view(self, case: Case) -> ECGView:
        """The case's standard ECG: the data set's array, or the parsed and standardised upload."""
        with self._cache_lock:
            if case.key in self._ecg_cache:
                self._ecg_cache.move_to_end(case.key)
                return self._ecg_cache[case.key]
        view = self._dataset_ecg(case.row) if case.row is not None else self._upload_ecg(case.upload)
        with self._cache_lock:
            self._ecg_cache[case.key] = view
            while len(self._ecg_cache) > 64:
                self._ecg_cache.popitem(last=False)
        return view

    def _dataset_ecg(self, row: pd.Series) -> ECGView:
        r = int(row["row"])
        signal = np.asarray(self.data.arrays["ecg"][r], dtype=np.float32)
        sample_mask = np.zeros(signal.shape[-1], bool)
        sample_mask[int(row["ecg_valid_start"]):int(row["ecg_valid_end"])] = True
        measurements = {name: number(row.get(f"ecg_{name}")) for name, _, _ in MEASUREMENT_FIELDS}
        sex = number(row.get("sex_male"))
        return ECGView(signal, float(self.ecg_config.sampling_rate_hz),
                       np.asarray(self.data.arrays["ecg_lead_mask"][r], bool), sample_mask, measurements,
                       sex_male=None if sex is None else sex >= 0.5)

    def _upload_ecg(self, upload: StoredUpload) -> ECGView:
        from cardiacnets.ecg.standardize import standardize_ecg

        record = read_upload(upload, memory_bytes=self.settings.upload_parse_memory_bytes,
                             timeout_s=self.settings.upload_parse_timeout_s)
        try:
            std = standardize_ecg(record, self.ecg_config)
        except InputError as err:
            raise InputError(upload.original_name, err.problem) from None
        return ECGView(std.signal, std.sampling_rate_hz, std.lead_mask, std.sample_mask,
                       {k: number(v) for k, v in record.measurements.items()}, list(record.interpretation),
                       sex_male=record.metadata.get("sex_male"))

    def frame_ms(self, case: Case, n_frames: int) -> float:
        """Display time of one frame: the case's RR interval over the frames (1 s cycles when unknown)."""
        ecg = self.ecg_view(case)
        rr_ms = None
        if case.row is not None:
            rr_ms = number(case.row.get("ecg_rr_interval_ms"))
        rate = ecg.measurements.get("ventricular_rate_bpm")
        if rr_ms is None and rate:
            rr_ms = 60000.0 / rate
        cycle = rr_ms if rr_ms and 250.0 <= rr_ms <= 2500.0 else DEFAULT_CYCLE_MS
        return cycle / max(n_frames, 1)

    def real_cine(self, case: Case, view: str) -> np.ndarray | None:
        """(frames, H, W) real cine of a data-set case (the middle stored slice), or None."""
        if case.row is None or f"cmr_{view}" not in self.data.arrays or not bool(case.row.get(f"has_{view}", False)):
            return None
        return render.display_slice(np.asarray(self.data.arrays[f"cmr_{view}"][int(case.row["row"])], np.float32))

    # -- generation and prediction

    def generated_path(self, case: Case, view: str) -> Path:
        """Cache file of a generated cine: model key / case, view, seed and sampler settings."""
        key = self.models.key(f"generator_{view}")
        g = self.settings.generation
        guidance = "default" if g.guidance_scale is None else f"{g.guidance_scale:g}"
        name = f"{case.key}_{view}_seed{g.seed}_steps{g.num_inference_steps}_cfg{guidance}.npy"
        return self.app_dir / "cache" / "generated" / key / name

    def generated_cine(self, case: Case, view: str) -> np.ndarray | None:
        if view not in self.models.generator_views:
            return None
        path = self.generated_path(case, view)
        return load_cine(path) if path.is_file() else None

    def request_generation(self, case: Case, view: str, priority: int = 10, retry_failed: bool = True):
        """Queue the generation of a case's cine (no-op when cached or queued); returns the job or None when cached."""
        if view not in self.models.generator_views:
            raise InputError(case.title, f"the model has no {view} generator")
        path = self.generated_path(case, view)
        if path.is_file():
            return None
        settings = self.settings.generation

        def run(progress):
            progress(None, "loading the generator")
            pipe = self.models.generator(view)
            progress(None, "preparing the ECG")
            cine, labels = generate_cine(pipe, self.generation_inputs(case, pipe), settings, progress)
            save_cine(path, cine)
            if labels is not None:
                save_cine(path.with_name(path.stem + "_anatomy.npy"), labels)

        return self.runner.submit(f"generate|{path}", "generate", run, priority, retry_failed)

    def generation_inputs(self, case: Case, pipe) -> dict:
        """A case's pipeline inputs through the one generation request path (`cardiacnets.generation.request`).

        A data-set case gives its stored standard ECG with the manifest's demographics and device
        measurements; an upload is read and standardised from its file (`build_request`).
        """
        import torch

        from cardiacnets.generation.request import build_request, pipeline_inputs, request_columns

        if case.row is None:
            request = build_request(pipe, case.upload.ecg_path)
            return pipeline_inputs(pipe, request.ecg, request.lead_mask,
                                   {k: np.array([v]) for k, v in request.demographics.items()} or None,
                                   {k: np.array([v]) for k, v in request.measurements.items()} or None)
        ecg = self.ecg_view(case)
        demographic_columns, measurement_names = request_columns(pipe)

        def raw(column):
            try:
                return np.array([float(case.row.get(column))])
            except (TypeError, ValueError):
                return np.array([np.nan])

        return pipeline_inputs(pipe, torch.from_numpy(np.array(ecg.signal_mV[None], dtype=np.float32)),
                               torch.from_numpy(np.array(ecg.lead_mask[None], dtype=bool)),
                               {c: raw(c) for c in demographic_columns} or None,
                               {m: raw(f"ecg_{m}") for m in measurement_names} or None)

    def predictions_path(self, case: Case) -> Path:
        return self.app_dir / "cache" / "predictions" / self.models.key("heads") / f"{case.key}.json"

    def ecg_file(self, case: Case) -> Path | None:
        """The case's ECG source file: the upload, or the manifest's ``ecg_file`` (see `resolve_source_file`)."""
        if case.upload is not None:
            return case.upload.ecg_path
        return resolve_source_file(case.row.get("ecg_file"), self.settings.data_dir, self.data.info.get("raw"))

    def predictions(self, case: Case) -> dict | None:
        if not self.models.has_heads:
            return None
        path = self.predictions_path(case)
        return json.loads(path.read_text()) if path.is_file() else None

    def request_predictions(self, case: Case, priority: int = 5):
        """Queue the heads on a case's ECG file (no-op when cached or queued); returns the job or None when cached."""
        if not self.models.has_heads:
            raise InputError(case.title, "the model has no heads")
        path = self.predictions_path(case)
        if path.is_file():
            return None
        ecg_file = self.ecg_file(case)

        def run(progress):
            progress(None, "running the heads")
            if ecg_file is None or not ecg_file.exists():
                raise InputError(ecg_file or case.title, "the ECG source file is not available for the heads")
            save_json(path, self.models.predict(ecg_file))

        return self.runner.submit(f"predict|{path}", "predict", run, priority)

    # -- media

    def media(self, key: tuple, make) -> bytes:
        """``make()``'s bytes, kept in a small in-memory cache under ``key``."""
        with self._cache_lock:
            if key in self._media_cache:
                self._media_cache.move_to_end(key)
                return self._media_cache[key]
        data = make()
        with self._cache_lock:
            self._media_cache[key] = data
            while len(self._media_cache) > 128:
                self._media_cache.popitem(last=False)
        return data

    # -- studies

    def _open_study(self, path: Path) -> None:
        config = load_study(path)
        if config.name in self.studies:
            raise ConfigError(f"{path}: a study named {config.name!r} is already served")
        for key in ("reader_token", "admin_token"):
            token = getattr(config, key)
            check_token_strength(token, f"{path}: {key}")
            if token == self.token:
                raise ConfigError(f"{path}: {key} must differ from the review token (readers would reach the case pages)")
            if token in PUBLISHED_TOKENS and not is_loopback(self.settings.host):
                raise ConfigError(f"{path}: {key} is the published demo token; set your own before serving "
                                  f"{self.settings.host}")
        if "ecg_generated_cmr" in config.arms:
            missing = [v for v in config.views if v not in self.models.generator_views]
            if missing:
                raise ConfigError(f"{path}: arm ecg_generated_cmr needs a generator for view(s) {missing}; "
                                  "--model has none")
        cases = resolve_cases(config, self.manifest, data_path=self.settings.data_dir)
        store = StudyStore(private_file(study_db_path(self.app_dir, config.name)))
        store.initialize(config, cases)
        self.studies[config.name] = StudyRuntime(config, store, path)

    def study_generation_jobs(self, study: StudyRuntime) -> tuple[int, int, list]:
        """(ready, total, jobs) of the generated cines a study needs."""
        if "ecg_generated_cmr" not in study.config.arms:
            return 0, 0, []
        ready, total, jobs = 0, 0, []
        for case in study.store.cases():
            for view in study.config.views:
                total += 1
                c = self.case_by_subject(case.case_id)
                job = self.request_generation(c, view, priority=20, retry_failed=False)
                if job is None:
                    ready += 1
                else:
                    jobs.append(job)
        return ready, total, jobs
