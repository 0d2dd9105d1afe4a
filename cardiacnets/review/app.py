"""The review web app: case browser, case pages, ECG upload and reader studies (FastAPI).

`create_app` builds a FastAPI application with server-rendered pages (Jinja2
templates and a little vanilla JavaScript and CSS served from the package, so
it runs with no internet):

* ``/cases`` — the data set's subjects and the uploads, with search (subject id,
  ICD-10 code) and filters (label, split, reviewed or not);
* ``/cases/<subject_id>`` and ``/uploads/<id>`` — a case: the 12-lead ECG in
  the clinical layout, the real cine(s) of the data set, the generated cine(s)
  (computed on demand by the background worker, with a progress bar, cached,
  and labelled ``SYNTHETIC`` in the page and in the pixels), the heads'
  predicted indices with units and normal ranges and the screening
  probabilities, and a reviewed mark with a note;
* ``/upload`` — an ECG file (UK Biobank XML, or a WFDB record as a .zip) becomes
  a case; generation starts at once and the case page shows its progress;
* ``/study/<name>/...`` — reader studies (`cardiacnets.review.study`): sign-in
  with a name and the study's token, blinded readings in each reader's own
  order with autosave, and the summary and CSV export behind the study's admin
  token.

Security: the command binds 127.0.0.1 by default. The review pages need the
app token when the app listens on any other address or serves a study (readers
must not see subject ids, real and generated cines side by side, or the arm
key); study pages need the study tokens. Sessions are HMAC-signed cookies
(HttpOnly, SameSite=Strict). Uploads are limited in size and type and stored
under generated names (`cardiacnets.review.uploads`). Every response carries a
strict Content-Security-Policy (no inline scripts, nothing from other origins).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from cardiacnets.errors import CardiacNetsError, ConfigError, InputError
from cardiacnets.review import render
from cardiacnets.review.auth import (
    is_loopback,
    load_secret,
    sign,
    token_fingerprint,
    tokens_equal,
    unsign,
)
from cardiacnets.review.jobs import (
    GenerationSettings,
    JobRunner,
    ReviewModels,
    generate_cine,
    load_cine,
    save_cine,
    save_json,
)
from cardiacnets.review.study import (
    ARM_TITLES,
    AnswerError,
    StudyConfig,
    StudyStore,
    load_study,
    required_answers,
    resolve_cases,
    study_db_path,
    summarize,
)
from cardiacnets.review.uploads import UPLOAD_KINDS, StoredUpload, is_upload_id, read_upload, store_upload

PACKAGE_DIR = Path(__file__).resolve().parent
VIEW_TITLES = {"sa": "short-axis", "la_4ch": "4-chamber long-axis"}
REVIEW_COOKIE = "cn_review"
SESSION_MAX_AGE_S = 7 * 24 * 3600
CINE_SCALE = 3
DEFAULT_CYCLE_MS = 1000.0
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Indices the heads may return, with display names (others are shown by their key).
INDEX_TITLES = {
    "lvedv_ml": "LV end-diastolic volume", "lvesv_ml": "LV end-systolic volume", "lvsv_ml": "LV stroke volume",
    "lvef_pct": "LV ejection fraction", "lvm_g": "LV mass", "lvco_l_min": "LV cardiac output",
    "rvedv_ml": "RV end-diastolic volume", "rvesv_ml": "RV end-systolic volume", "rvsv_ml": "RV stroke volume",
    "rvef_pct": "RV ejection fraction", "wt_global": "Mean wall thickness",
}
MEASUREMENT_FIELDS = (("ventricular_rate_bpm", "Rate", "bpm"), ("pq_interval_ms", "PR", "ms"),
                      ("qrs_duration_ms", "QRS", "ms"), ("qt_interval_ms", "QT", "ms"),
                      ("qtc_interval_ms", "QTc", "ms"), ("p_axis_deg", "P axis", "°"),
                      ("r_axis_deg", "R axis", "°"), ("t_axis_deg", "T axis", "°"))


@dataclass
class ReviewSettings:
    """Settings of one review app.

    Attributes:
        data_dir: the training set (`cardiacnets preprocess` output), read only.
        app_dir: the app's own folder: review marks, uploads, caches, study databases.
        host: the address the server binds (decides whether a token is required).
        token: the review pages' token; required unless ``host`` is loopback and
            no study is served.
        studies: study YAML files to serve.
        max_upload_bytes: the largest accepted upload.
        generation: generator call settings.
        prefetch_studies: generate the cines of the studies' generated arms at start.
        cases_per_page: rows of the case list per page.
    """

    data_dir: Path
    app_dir: Path
    host: str = "127.0.0.1"
    token: str | None = None
    studies: list[Path] = field(default_factory=list)
    max_upload_bytes: int = 20 * 1024 * 1024
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prefetch_studies: bool = True
    cases_per_page: int = 50

    def validate(self) -> None:
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("the review token must have at least 8 characters")
        if self.token is None and not is_loopback(self.host):
            raise ConfigError(f"binding {self.host} (not this machine only) needs a token: pass --token or set "
                              "CARDIACNETS_REVIEW_TOKEN")
        if self.token is None and self.studies:
            raise ConfigError("serving a reader study needs a review token (--token or CARDIACNETS_REVIEW_TOKEN), so "
                              "that readers cannot open the case pages, which show what the study hides")
        if self.max_upload_bytes < 1024:
            raise ConfigError("the upload limit must be at least 1 kB")


# --------------------------------------------------------------------------- app state

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
    return "d" + hashlib.sha256(str(subject_id).encode()).hexdigest()[:16]


class ReviewState:
    """Everything the routes share: data set, models, worker, stores, studies.

    Args:
        settings: the app settings.
        models: the run's models (None: no generator, no heads).
    """

    def __init__(self, settings: ReviewSettings, models: ReviewModels | None = None):
        from cardiacnets.config import from_dict
        from cardiacnets.data.store import TrainingSet
        from cardiacnets.ecg.config import ECGConfig

        settings.validate()
        self.settings = settings
        self.models = models or ReviewModels(None)
        self.app_dir = Path(settings.app_dir)
        self.app_dir.mkdir(parents=True, exist_ok=True)
        self.secret = load_secret(self.app_dir)
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
        self.db_path = self.app_dir / "review.sqlite"
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
        if case.row is not None:
            r = int(case.row["row"])
            signal = np.asarray(self.data.arrays["ecg"][r], dtype=np.float32)
            sample_mask = np.zeros(signal.shape[-1], bool)
            sample_mask[int(case.row["ecg_valid_start"]):int(case.row["ecg_valid_end"])] = True
            measurements = {name: _number(case.row.get(f"ecg_{name}")) for name, _, _ in MEASUREMENT_FIELDS}
            sex = _number(case.row.get("sex_male"))
            view = ECGView(signal, float(self.ecg_config.sampling_rate_hz),
                           np.asarray(self.data.arrays["ecg_lead_mask"][r], bool), sample_mask, measurements,
                           sex_male=None if sex is None else sex >= 0.5)
        else:
            from cardiacnets.ecg.standardize import standardize_ecg

            record = read_upload(case.upload)
            try:
                std = standardize_ecg(record, self.ecg_config)
            except InputError as err:
                raise InputError(case.upload.original_name, err.problem) from None
            view = ECGView(std.signal, std.sampling_rate_hz, std.lead_mask, std.sample_mask,
                           {k: _number(v) for k, v in record.measurements.items()}, list(record.interpretation),
                           sex_male=record.metadata.get("sex_male"))
        with self._cache_lock:
            self._ecg_cache[case.key] = view
            while len(self._ecg_cache) > 64:
                self._ecg_cache.popitem(last=False)
        return view

    def frame_ms(self, case: Case, n_frames: int) -> float:
        """Display time of one frame: the case's RR interval over the frames (1 s cycles when unknown)."""
        ecg = self.ecg_view(case)
        rr_ms = None
        if case.row is not None:
            rr_ms = _number(case.row.get("ecg_rr_interval_ms"))
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
        name = f"{case.key}_{view}_seed{g.seed}_steps{g.num_inference_steps}_cfg{g.guidance_scale:g}.npy"
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
            if case.row is not None:
                ecg = self.ecg_view(case)
                model_input = {"ecg": ecg.signal_mV[None], "lead_mask": ecg.lead_mask[None]}
            else:
                model_input = pipe.standardize_file(case.upload.ecg_path)
            cine = generate_cine(pipe, model_input["ecg"], model_input.get("lead_mask"), settings, progress)
            save_cine(path, cine)

        return self.runner.submit(f"generate|{path}", "generate", run, priority, retry_failed)

    def predictions_path(self, case: Case) -> Path:
        return self.app_dir / "cache" / "predictions" / self.models.key("heads") / f"{case.key}.json"

    def ecg_file(self, case: Case) -> Path | None:
        if case.upload is not None:
            return case.upload.ecg_path
        value = case.row.get("ecg_file")
        return Path(str(value)) if isinstance(value, str) and value else None

    def predictions(self, case: Case) -> dict | None:
        if not self.models.has_heads:
            return None
        path = self.predictions_path(case)
        return json.loads(path.read_text()) if path.is_file() else None

    def request_predictions(self, case: Case, priority: int = 5):
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
        if "ecg_generated_cmr" in config.arms:
            missing = [v for v in config.views if v not in self.models.generator_views]
            if missing:
                raise ConfigError(f"{path}: arm ecg_generated_cmr needs a generator for view(s) {missing}; "
                                  "--model has none")
        cases = resolve_cases(config, self.manifest, data_path=self.settings.data_dir)
        store = StudyStore(study_db_path(self.app_dir, config.name))
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


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# --------------------------------------------------------------------------- the FastAPI app

def create_app(settings: ReviewSettings, models: ReviewModels | None = None):
    """Build the review app.

    Args:
        settings: data set, app folder, host, tokens, studies, limits.
        models: the run's generators and heads (None: the data set alone).

    Returns:
        A FastAPI application; its background worker starts and stops with the
        app's lifespan (``uvicorn`` or ``TestClient`` as a context manager).

    Raises:
        ConfigError / InputError: a missing token where one is required, a bad
            data set, study definition or model folder.
    """
    state = ReviewState(settings, models)
    templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))
    templates.env.globals.update(view_titles=VIEW_TITLES, arm_titles=ARM_TITLES, index_titles=INDEX_TITLES)
    templates.env.filters["fmt"] = _fmt

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        state.runner.start()
        if settings.prefetch_studies:
            for study in state.studies.values():
                state.study_generation_jobs(study)
        yield
        state.runner.stop()

    app = FastAPI(title="cardiacnets review", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = state
    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if request.method == "POST" and path == "/upload":
            length = request.headers.get("content-length")
            if length is None:
                return PlainTextResponse("uploads need a Content-Length", status_code=411)
            if not length.isdigit() or int(length) > settings.max_upload_bytes + 64 * 1024:
                return _page(templates, request, "upload.html", state, status=413,
                             error=f"the file is larger than the limit ({settings.max_upload_bytes / 1e6:.1f} MB)")
        if settings.token and not _public_path(path) and not _review_session(state, request):
            if path.startswith("/api/") or request.method != "GET":
                return JSONResponse({"error": "sign in first"}, status_code=401)
            return RedirectResponse(f"/login?{urlencode({'next': path})}", status_code=303)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(CardiacNetsError)
    async def on_user_error(request: Request, err: CardiacNetsError):
        return _page(templates, request, "error.html", state, status=400, message=str(err))

    # -- sign-in for the review pages

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/cases"):
        return _page(templates, request, "login.html", state, next=_safe_next(next))

    @app.post("/login")
    async def login(request: Request):
        form = await request.form()
        target = _safe_next(str(form.get("next", "/cases")))
        if not tokens_equal(str(form.get("token", "")), settings.token):
            return _page(templates, request, "login.html", state, status=403, next=target, error="wrong token")
        response = RedirectResponse(target, status_code=303)
        _set_cookie(response, REVIEW_COOKIE, sign(state.secret, {"k": "review", "t": token_fingerprint(settings.token)}))
        return response

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz():
        return "ok"

    # -- case list and pages

    @app.get("/")
    def index():
        return RedirectResponse("/cases", status_code=303)

    @app.get("/cases", response_class=HTMLResponse)
    def case_list(request: Request, q: str = "", label: str = "", split: str = "", reviewed: str = "", page: int = 1):
        frame = state.manifest
        mask = np.ones(len(frame), bool)
        q = q.strip()
        if q:
            hit = frame["subject_id"].str.contains(q, case=False, regex=False).to_numpy(dtype=bool, copy=True)
            if "icd10" in frame.columns:
                hit = hit | frame["icd10"].fillna("").astype(str).str.contains(q, case=False, regex=False).to_numpy(bool)
            mask &= hit
        if label == "none":
            mask &= ~frame[state.label_columns].astype(bool).any(axis=1).to_numpy() if state.label_columns else mask
        elif label in state.label_columns:
            mask &= frame[label].astype(bool).to_numpy()
        if split:
            mask &= (frame["split"] == split).to_numpy()
        marks = state.reviews()
        keys = [subject_key(s) for s in frame["subject_id"]]
        is_reviewed = np.array([marks.get(k, (False, ""))[0] for k in keys], bool)
        if reviewed == "yes":
            mask &= is_reviewed
        elif reviewed == "no":
            mask &= ~is_reviewed
        selected = np.flatnonzero(mask)
        per_page = settings.cases_per_page
        n_pages = max(1, math.ceil(len(selected) / per_page))
        page = min(max(page, 1), n_pages)
        rows = []
        for i in selected[(page - 1) * per_page: page * per_page]:
            row = frame.iloc[i]
            rows.append({
                "subject_id": row["subject_id"], "url": f"/cases/{quote(row['subject_id'], safe='')}",
                "split": row["split"], "age": _number(row.get("age_years")), "sex": _sex(row.get("sex_male")),
                "labels": [c[len("label_"):].replace("_", " ") for c in state.label_columns if bool(row[c])],
                "icd10": row.get("icd10").replace(";", "; ") if isinstance(row.get("icd10"), str) else "",
                "cines": [v for v in VIEW_TITLES if bool(row.get(f"has_{v}", False))],
                "reviewed": bool(is_reviewed[i]),
            })
        filters = {"q": q, "label": label, "split": split, "reviewed": reviewed}
        page_links = {p: "/cases?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": p})
                      for p in (page - 1, page + 1) if 1 <= p <= n_pages}
        return _page(templates, request, "cases.html", state, rows=rows, filters=filters, page=page, n_pages=n_pages,
                     n_selected=len(selected), n_total=len(frame), page_links=page_links,
                     labels=[(c, c[len("label_"):].replace("_", " ")) for c in state.label_columns],
                     splits=sorted(frame["split"].dropna().unique()), uploads=state.uploads())

    @app.get("/cases/{subject_id}", response_class=HTMLResponse)
    def case_page(request: Request, subject_id: str):
        case = state.case_by_subject(subject_id)
        if case is None:
            return _page(templates, request, "error.html", state, status=404, message=f"no subject {subject_id!r} in the data set")
        return _case_page(templates, request, state, case)

    @app.get("/uploads/{upload_id}", response_class=HTMLResponse)
    def upload_page(request: Request, upload_id: str):
        case = state.case_by_upload(upload_id)
        if case is None:
            return _page(templates, request, "error.html", state, status=404, message="no such upload")
        return _case_page(templates, request, state, case)

    @app.post("/cases/{case_key}/review")
    async def mark_reviewed(request: Request, case_key: str):
        case = state.case_by_key(case_key)
        if case is None:
            return _page(templates, request, "error.html", state, status=404, message="no such case")
        form = await request.form()
        state.set_review(case.key, form.get("reviewed") == "yes", str(form.get("note", "")))
        return RedirectResponse(case.url, status_code=303)

    # -- upload

    @app.get("/upload", response_class=HTMLResponse)
    def upload_form(request: Request):
        return _page(templates, request, "upload.html", state)

    @app.post("/upload")
    async def upload(request: Request):
        form = await request.form(max_files=1, max_fields=4)
        item = form.get("ecg")
        if item is None or not hasattr(item, "read"):
            return _page(templates, request, "upload.html", state, status=400, error="choose an ECG file to upload")
        data = await item.read(settings.max_upload_bytes + 1)
        try:
            stored = store_upload(state.uploads_dir, item.filename, data, settings.max_upload_bytes)
        except InputError as err:
            status = 413 if "limit" in err.problem else 400
            return _page(templates, request, "upload.html", state, status=status, error=str(err))
        try:
            case = Case("u" + stored.upload_id, stored.original_name, upload=stored)
            state.ecg_view(case)  # parse and standardise now: a bad file is refused here
        except InputError as err:
            import shutil

            shutil.rmtree(stored.folder, ignore_errors=True)
            return _page(templates, request, "upload.html", state, status=400, error=str(err))
        state.add_upload(stored)
        for view in state.models.generator_views:
            state.request_generation(case, view, priority=5)
        if state.models.has_heads:
            state.request_predictions(case, priority=1)
        return RedirectResponse(case.url, status_code=303)

    # -- media of cases

    @app.get("/media/{case_key}/ecg.svg")
    def case_ecg(case_key: str):
        case = state.case_by_key(case_key)
        if case is None:
            return Response(status_code=404)
        ecg = state.ecg_view(case)
        svg = state.media(("ecg", case.key), lambda: render.ecg_svg(
            ecg.signal_mV, ecg.sampling_rate_hz, lead_mask=ecg.lead_mask, sample_mask=ecg.sample_mask,
            title=case.title, note=_filter_note(state)).encode())
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/media/{case_key}/{source}/{view}.{ext}")
    def case_cine(case_key: str, source: str, view: str, ext: str):
        case = state.case_by_key(case_key)
        if case is None or source not in ("real", "generated") or view not in VIEW_TITLES or ext not in ("png", "gif"):
            return Response(status_code=404)
        cine = state.real_cine(case, view) if source == "real" else state.generated_cine(case, view)
        if cine is None:
            return Response(status_code=404)
        synthetic = source == "generated"
        return _cine_response(state, (case.key, source, view, ext), cine, ext, synthetic, state.frame_ms(case, len(cine)))

    # -- jobs

    @app.post("/api/cases/{case_key}/generate/{view}")
    def start_generation(case_key: str, view: str):
        case = state.case_by_key(case_key)
        if case is None or view not in state.models.generator_views:
            return JSONResponse({"error": "no such case or generator"}, status_code=404)
        job = state.request_generation(case, view)
        return JSONResponse(_job_json(state, job, ready_url=f"/media/{case.key}/generated/{view}.png"))

    @app.post("/api/cases/{case_key}/predict")
    def start_prediction(case_key: str):
        case = state.case_by_key(case_key)
        if case is None or not state.models.has_heads:
            return JSONResponse({"error": "no such case or heads"}, status_code=404)
        job = state.request_predictions(case)
        return JSONResponse(_job_json(state, job, ready_url=f"/fragments/{case.key}/predictions"))

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        job = state.runner.get(job_id)
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return JSONResponse(_job_json(state, job))

    @app.get("/fragments/{case_key}/predictions", response_class=HTMLResponse)
    def predictions_fragment(request: Request, case_key: str):
        case = state.case_by_key(case_key)
        if case is None:
            return Response(status_code=404)
        rows = _prediction_rows(state.predictions(case), state.reference, state.ecg_view(case).sex_male)
        return templates.TemplateResponse(request, "_predictions.html", {"predictions": rows})

    # -- reader studies

    def study_or_404(name: str) -> StudyRuntime | None:
        return state.studies.get(name)

    def reader_of(request: Request, study: StudyRuntime) -> str | None:
        payload = unsign(state.secret, request.cookies.get(_study_cookie(study)), SESSION_MAX_AGE_S)
        if not payload or payload.get("study") != study.config.name \
                or payload.get("t") != token_fingerprint(study.config.reader_token):
            return None
        reader = payload.get("reader")
        if study.config.readers and reader not in study.config.readers:
            return None
        return reader if isinstance(reader, str) else None

    def is_admin(request: Request, study: StudyRuntime) -> bool:
        payload = unsign(state.secret, request.cookies.get(_study_cookie(study) + "_admin"), SESSION_MAX_AGE_S)
        return bool(payload and payload.get("study") == study.config.name
                    and payload.get("t") == token_fingerprint(study.config.admin_token))

    @app.get("/study/{name}/", response_class=HTMLResponse)
    def study_home(request: Request, name: str):
        study = study_or_404(name)
        if study is None:
            return _page(templates, request, "error.html", state, status=404, message="no such study")
        reader = reader_of(request, study)
        if reader is None:
            return _page(templates, request, "study_signin.html", state, study=study.config)
        return RedirectResponse(_current_url(state, study, reader), status_code=303)

    @app.post("/study/{name}/signin")
    async def study_signin(request: Request, name: str):
        from cardiacnets.review.study import check_reader_name

        study = study_or_404(name)
        if study is None:
            return _page(templates, request, "error.html", state, status=404, message="no such study")
        form = await request.form()
        given_name = str(form.get("name", ""))
        error = None
        try:
            reader = check_reader_name(given_name)
        except ConfigError:
            reader, error = None, "enter your name (1-64 characters)"
        if error is None and study.config.readers and reader not in study.config.readers:
            error = "this name is not on the study's list of readers"
        if error is None and not tokens_equal(str(form.get("token", "")), study.config.reader_token):
            error = "wrong study token"
        if error:
            return _page(templates, request, "study_signin.html", state, status=403, study=study.config, error=error,
                         name=given_name)
        study.store.ensure_reader(reader)
        response = RedirectResponse(_current_url(state, study, reader), status_code=303)
        _set_cookie(response, _study_cookie(study), sign(state.secret, {
            "study": study.config.name, "reader": reader, "t": token_fingerprint(study.config.reader_token)}),
            path=f"/study/{study.config.name}/")
        return response

    @app.post("/study/{name}/signout")
    def study_signout(name: str):
        response = RedirectResponse(f"/study/{name}/", status_code=303)
        response.delete_cookie(f"cn_study_{name}", path=f"/study/{name}/")
        return response

    @app.get("/study/{name}/preparing", response_class=HTMLResponse)
    def study_preparing(request: Request, name: str):
        study = study_or_404(name)
        if study is None or reader_of(request, study) is None:
            return RedirectResponse(f"/study/{name}/", status_code=303)
        ready, total, _ = state.study_generation_jobs(study)
        if ready == total:
            return RedirectResponse(f"/study/{name}/", status_code=303)
        return _page(templates, request, "study_preparing.html", state, study=study.config, ready=ready, total=total)

    @app.get("/study/{name}/api/preparation")
    def study_preparation(request: Request, name: str):
        study = study_or_404(name)
        if study is None or reader_of(request, study) is None:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        ready, total, jobs = state.study_generation_jobs(study)
        failed = [j.message for j in jobs if j.state == "failed"]
        running = [j for j in jobs if j.state == "running" and j.progress is not None]
        fraction = (ready + sum(j.progress for j in running)) / total if total else 1.0
        return JSONResponse({"ready": ready, "total": total, "fraction": fraction, "done": ready == total,
                             "failed": len(failed)})

    @app.get("/study/{name}/readings/{number}", response_class=HTMLResponse)
    def study_reading(request: Request, name: str, number: int):
        study = study_or_404(name)
        if study is None:
            return _page(templates, request, "error.html", state, status=404, message="no such study")
        reader = reader_of(request, study)
        if reader is None:
            return RedirectResponse(f"/study/{name}/", status_code=303)
        readings = study.store.readings(reader)
        current = StudyStore.current_position(readings)
        position = number - 1
        limit = len(readings) - 1 if current is None else current
        if not 0 <= position <= limit:
            return RedirectResponse(_current_url(state, study, reader), status_code=303)
        ready, total, _ = state.study_generation_jobs(study)
        if ready < total:
            return RedirectResponse(f"/study/{name}/preparing", status_code=303)
        reading = readings[position]
        study.store.mark_opened(reader, position)
        definition = study.config
        return _page(templates, request, "study_reading.html", state, study=definition, reader=reader,
                     reading=reading, number=number, n_readings=len(readings),
                     n_submitted=sum(r.submitted for r in readings), choices=list(definition.questions.diagnosis.choices),
                     required=required_answers(study.store.meta()["definition"], reading.shows_image),
                     visit_id=os.urandom(16).hex(), base=f"/study/{name}/readings/{number}",
                     show_synthetic_label=(not definition.blind_image_source and reading.arm == "ecg_generated_cmr"),
                     next_url=f"/study/{name}/readings/{number + 1}" if number < len(readings) else f"/study/{name}/done")

    @app.post("/study/{name}/api/readings/{number}")
    async def study_autosave(request: Request, name: str, number: int):
        study = study_or_404(name)
        reader = reader_of(request, study) if study else None
        if reader is None:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "expected JSON"}, status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("answer", {}), dict):
            return JSONResponse({"error": "expected {answer: {...}, visit, active_ms}"}, status_code=400)
        readings = study.store.readings(reader)
        current = StudyStore.current_position(readings)
        position = number - 1
        if not 0 <= position < len(readings) or (current is not None and position > current):
            return JSONResponse({"error": "no such reading"}, status_code=404)
        try:
            reading = study.store.save_answer(reader, position, body.get("answer", {}), visit_id=body.get("visit"),
                                              active_ms=body.get("active_ms"))
        except AnswerError as err:
            return JSONResponse({"error": str(err)}, status_code=409 if "submitted" in str(err) else 422)
        return JSONResponse({"saved": True, "updated_at": reading.updated_at, "submitted": reading.submitted})

    @app.post("/study/{name}/readings/{number}")
    async def study_submit(request: Request, name: str, number: int):
        study = study_or_404(name)
        reader = reader_of(request, study) if study else None
        if reader is None:
            return RedirectResponse(f"/study/{name}/", status_code=303)
        form = await request.form()
        position = number - 1
        readings = study.store.readings(reader)
        current = StudyStore.current_position(readings)
        if not 0 <= position < len(readings) or (current is not None and position > current):
            return RedirectResponse(_current_url(state, study, reader), status_code=303)
        fields = {k: form.get(k) for k in ("diagnosis", "confidence", "realism", "free_text") if k in form}
        try:
            if not readings[position].submitted:
                visit, active = form.get("visit"), form.get("active_ms")
                study.store.save_answer(reader, position, fields, visit_id=str(visit) if visit else None,
                                        active_ms=int(active) if active and str(active).isdigit() else None)
            study.store.submit(reader, position)
        except AnswerError as err:
            reading = study.store.reading(reader, position)
            return _page(templates, request, "study_reading.html", state, status=422, study=study.config,
                         reader=reader, reading=reading, number=number, n_readings=len(readings),
                         n_submitted=sum(r.submitted for r in readings),
                         choices=list(study.config.questions.diagnosis.choices),
                         required=required_answers(study.store.meta()["definition"], reading.shows_image),
                         visit_id=os.urandom(16).hex(), base=f"/study/{name}/readings/{number}", error=str(err),
                         show_synthetic_label=(not study.config.blind_image_source
                                               and reading.arm == "ecg_generated_cmr"),
                         next_url=f"/study/{name}/done")
        return RedirectResponse(_current_url(state, study, reader), status_code=303)

    @app.get("/study/{name}/done", response_class=HTMLResponse)
    def study_done(request: Request, name: str):
        study = study_or_404(name)
        reader = reader_of(request, study) if study else None
        if reader is None:
            return RedirectResponse(f"/study/{name}/", status_code=303)
        readings = study.store.readings(reader)
        if StudyStore.current_position(readings) is not None:
            return RedirectResponse(_current_url(state, study, reader), status_code=303)
        return _page(templates, request, "study_done.html", state, study=study.config, reader=reader,
                     n_readings=len(readings))

    @app.get("/study/{name}/readings/{number}/ecg.svg")
    def study_ecg(request: Request, name: str, number: int):
        study = study_or_404(name)
        reader = reader_of(request, study) if study else None
        reading = _reading_for_media(study, reader, number)
        if reading is None:
            return Response(status_code=404)
        case = state.case_by_subject(reading.case_id)
        ecg = state.ecg_view(case)
        svg = state.media(("study-ecg", case.key), lambda: render.ecg_svg(
            ecg.signal_mV, ecg.sampling_rate_hz, lead_mask=ecg.lead_mask, sample_mask=ecg.sample_mask,
            title=None, note=_filter_note(state)).encode())
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    @app.get("/study/{name}/readings/{number}/{view}.{ext}")
    def study_cine(request: Request, name: str, number: int, view: str, ext: str):
        study = study_or_404(name)
        reader = reader_of(request, study) if study else None
        reading = _reading_for_media(study, reader, number)
        if reading is None or not reading.shows_image or view not in study.config.views or ext not in ("png", "gif"):
            return Response(status_code=404)
        case = state.case_by_subject(reading.case_id)
        real = state.real_cine(case, view)
        if reading.arm == "ecg_real_cmr":
            cine = real
        else:
            cine = state.generated_cine(case, view)
            if cine is not None and real is not None:
                cine = match_display(cine, real.shape)
        if cine is None:
            return Response(status_code=404)
        synthetic = reading.arm == "ecg_generated_cmr" and not study.config.blind_image_source
        n_frames = len(real) if real is not None else len(cine)
        response = _cine_response(state, ("study", case.key, reading.arm, view, ext, synthetic), cine, ext, synthetic,
                                  state.frame_ms(case, n_frames))
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- study administration (admin token; never readers)

    @app.get("/study/{name}/admin", response_class=HTMLResponse)
    def study_admin(request: Request, name: str):
        study = study_or_404(name)
        if study is None:
            return _page(templates, request, "error.html", state, status=404, message="no such study")
        if not is_admin(request, study):
            return _page(templates, request, "study_admin_login.html", state, study=study.config)
        return _page(templates, request, "study_summary.html", state, study=study.config,
                     summary=summarize(study.store))

    @app.post("/study/{name}/admin/login")
    async def study_admin_login(request: Request, name: str):
        study = study_or_404(name)
        if study is None:
            return _page(templates, request, "error.html", state, status=404, message="no such study")
        form = await request.form()
        if not tokens_equal(str(form.get("token", "")), study.config.admin_token):
            return _page(templates, request, "study_admin_login.html", state, status=403, study=study.config,
                         error="wrong admin token")
        response = RedirectResponse(f"/study/{name}/admin", status_code=303)
        _set_cookie(response, _study_cookie(study) + "_admin", sign(state.secret, {
            "study": name, "t": token_fingerprint(study.config.admin_token)}), path=f"/study/{name}/")
        return response

    @app.get("/study/{name}/admin/export.csv")
    def study_export(request: Request, name: str):
        study = study_or_404(name)
        if study is None or not is_admin(request, study):
            return PlainTextResponse("admin sign-in required", status_code=403)
        return Response(study.store.export_csv(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{name}_readings.csv"'})

    @app.get("/study/{name}/admin/summary.json")
    def study_summary_json(request: Request, name: str):
        study = study_or_404(name)
        if study is None or not is_admin(request, study):
            return JSONResponse({"error": "admin sign-in required"}, status_code=403)
        return JSONResponse(summarize(study.store))

    return app


# --------------------------------------------------------------------------- helpers

def _public_path(path: str) -> bool:
    return path in ("/login", "/healthz") or path.startswith("/static/") or path.startswith("/study/")


def _review_session(state: ReviewState, request) -> bool:
    payload = unsign(state.secret, request.cookies.get(REVIEW_COOKIE), SESSION_MAX_AGE_S)
    return bool(payload and payload.get("k") == "review" and payload.get("t") == token_fingerprint(state.settings.token))


def _safe_next(target: str) -> str:
    """Only local absolute paths (no scheme, no host, no ``//``) are followed after sign-in."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/cases"


def _set_cookie(response, name: str, value: str, path: str = "/") -> None:
    response.set_cookie(name, value, max_age=SESSION_MAX_AGE_S, httponly=True, samesite="strict", path=path)


def _study_cookie(study: StudyRuntime) -> str:
    return f"cn_study_{study.config.name}"


def _page(templates, request, template: str, state: ReviewState, status: int = 200, **context):
    context.setdefault("error", None)
    context.update(models=state.models.describe(), studies=sorted(state.studies), token_required=bool(state.settings.token))
    return templates.TemplateResponse(request, template, context, status_code=status)


def _current_url(state: ReviewState, study: StudyRuntime, reader: str) -> str:
    readings = study.store.ensure_reader(reader)
    current = StudyStore.current_position(readings)
    return f"/study/{study.config.name}/done" if current is None else f"/study/{study.config.name}/readings/{current + 1}"


def _reading_for_media(study: StudyRuntime | None, reader: str | None, number: int):
    if study is None or reader is None:
        return None
    readings = study.store.readings(reader)
    current = StudyStore.current_position(readings)
    position = number - 1
    if not 0 <= position < len(readings) or (current is not None and position > current):
        return None
    return readings[position]


def match_display(cine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A generated cine resampled to a real cine's (frames, H, W), so blinded readings look alike in form."""
    from PIL import Image

    from cardiacnets.cmr.standardize import resample_cycle

    frames, height, width = shape
    if cine.shape[0] != frames:
        cine = resample_cycle(cine, frames, axis=0)
    if cine.shape[1:] != (height, width):
        cine = np.stack([np.asarray(Image.fromarray(f.astype(np.float32), mode="F").resize(
            (width, height), Image.Resampling.BICUBIC)) for f in cine])
    return cine.astype(np.float32)


def _cine_response(state: ReviewState, key: tuple, cine: np.ndarray, ext: str, synthetic: bool, frame_ms: float):
    if ext == "png":
        data = state.media(key, lambda: render.cine_sprite_png(cine, scale=CINE_SCALE, synthetic=synthetic))
        return Response(data, media_type="image/png", headers={
            "X-Frames": str(len(cine)), "X-Frame-Ms": f"{frame_ms:.1f}", "Cache-Control": "private, max-age=300"})
    data = state.media(key, lambda: render.cine_gif(cine, frame_ms=frame_ms, scale=CINE_SCALE, synthetic=synthetic))
    return Response(data, media_type="image/gif", headers={"Cache-Control": "private, max-age=300"})


def _job_json(state: ReviewState, job, ready_url: str | None = None) -> dict:
    if job is None:
        return {"state": "done", "progress": 1.0, "message": "ready", "ready_url": ready_url}
    data = job.as_dict()
    data["queue_position"] = state.runner.queue_position(job) if job.state == "queued" else 0
    if ready_url:
        data["ready_url"] = ready_url
    return data


def _filter_note(state: ReviewState) -> str:
    config = state.ecg_config
    parts = []
    if config.bandpass_hz:
        parts.append(f"band-pass {config.bandpass_hz[0]:g}–{config.bandpass_hz[1]:g} Hz")
    if config.notch_hz:
        parts.append(f"notch {config.notch_hz:g} Hz")
    return ", ".join(parts)


def _sex(value) -> str:
    number = _number(value)
    return "" if number is None else ("M" if number >= 0.5 else "F")


def _fmt(value, digits: int = 1) -> str:
    number = _number(value)
    if number is None:
        return "–"
    return f"{number:.{digits}f}"


REFERENCE_QUANTILES = (0.025, 0.975)
MIN_REFERENCE_SUBJECTS = 20


def reference_ranges(manifest: pd.DataFrame) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Normal ranges of the CMR indices from the data set's own healthy subjects.

    The heads predict values, not what is normal; the page compares them with
    the 2.5th-97.5th percentiles of the training subjects without any true
    ``label_*`` column (the reference-range convention of Petersen et al., JCMR
    2017, on UK Biobank), by sex and overall. Groups of fewer than
    `MIN_REFERENCE_SUBJECTS` get no range.

    Args:
        manifest: a training set's manifest.

    Returns:
        ``{column: {"male" | "female" | "all": (low, high, n)}}`` for every CMR
        index column (``lvedv_ml``, ``seg_lvedv_ml``, ...) the manifest holds.
    """
    from cardiacnets.data.ukb_fields import CMR_FIELD_BY_NAME

    labels = [c for c in manifest.columns if c.startswith("label_")]
    healthy = manifest
    if labels:
        healthy = healthy[~healthy[labels].fillna(False).astype(bool).any(axis=1)]
    if "split" in healthy.columns and (healthy["split"] == "train").any():
        healthy = healthy[healthy["split"] == "train"]
    sex = pd.to_numeric(healthy["sex_male"], errors="coerce") if "sex_male" in healthy.columns else None
    groups = {"all": np.ones(len(healthy), bool)}
    if sex is not None:
        groups.update(male=(sex >= 0.5).to_numpy(), female=(sex < 0.5).to_numpy())
    ranges: dict[str, dict[str, tuple[float, float, int]]] = {}
    for column in healthy.columns:
        if column.removeprefix("seg_") not in CMR_FIELD_BY_NAME:
            continue
        values = pd.to_numeric(healthy[column], errors="coerce").to_numpy(float)
        for group, keep in groups.items():
            chosen = values[keep & np.isfinite(values)]
            if len(chosen) >= MIN_REFERENCE_SUBJECTS:
                low, high = np.quantile(chosen, REFERENCE_QUANTILES)
                ranges.setdefault(column, {})[group] = (float(low), float(high), int(len(chosen)))
    return ranges


def _prediction_rows(predictions: dict | None, reference: dict | None = None, sex_male: bool | None = None) -> dict | None:
    """Predictions (`predict_record`'s output) in display form.

    Indices get their prediction interval, a normal range (the heads' own
    ``low``/``high`` when they give one, else the data set's healthy reference
    for the subject's sex, see `reference_ranges`) and a low/high flag;
    screening labels are sorted by probability.
    """
    if predictions is None:
        return None
    reference = reference or {}
    group = "all" if sex_male is None else ("male" if sex_male else "female")
    indices = []
    for name, item in (predictions.get("indices") or {}).items():
        item = item if isinstance(item, dict) else {"value": item}
        value, low, high = _number(item.get("value")), _number(item.get("low")), _number(item.get("high"))
        source = "model" if low is not None or high is not None else None
        if source is None:
            for column in (name, name.removeprefix("seg_"), "seg_" + name):
                ranges = reference.get(column, {})
                found = ranges.get(group) or ranges.get("all")
                if found:
                    low, high, n = found
                    source = f"healthy {group if group in ranges else 'all'} subjects of the data set, n = {n}"
                    break
        flag = ""
        if value is not None and low is not None and value < low:
            flag = "low"
        elif value is not None and high is not None and value > high:
            flag = "high"
        interval = item.get("interval") if isinstance(item.get("interval"), dict) else None
        title = INDEX_TITLES.get(name.removeprefix("seg_")) or item.get("description") or name.replace("_", " ")
        indices.append({"name": name, "title": title, "value": value, "unit": item.get("unit", ""), "low": low,
                        "high": high, "flag": flag, "range_source": source,
                        "interval": None if interval is None else (_number(interval.get("low")),
                                                                   _number(interval.get("high")))})
    screening = []
    for name, item in (predictions.get("screening") or {}).items():
        item = item if isinstance(item, dict) else {"probability": item}
        probability, threshold = _number(item.get("probability")), _number(item.get("threshold"))
        positive = item.get("positive")
        if positive is None:
            positive = probability is not None and threshold is not None and probability >= threshold
        screening.append({"name": name.replace("_", " "), "probability": probability, "threshold": threshold,
                          "positive": bool(positive)})
    screening.sort(key=lambda s: -(s["probability"] or 0.0))
    quality = predictions.get("quality") or []
    if isinstance(quality, dict):
        quality = quality.get("findings") or []
    quality = [q.get("message", str(q)) if isinstance(q, dict) else str(q) for q in quality]
    subtype = predictions.get("cardiomyopathy_subtype")
    if isinstance(subtype, dict) and isinstance(subtype.get("probabilities"), dict):
        subtype = {"most_likely": subtype.get("most_likely"),
                   "probabilities": sorted(((k.replace("_", " "), _number(v)) for k, v in subtype["probabilities"].items()),
                                           key=lambda kv: -(kv[1] or 0.0))}
    else:
        subtype = None
    notes = [str(n) for n in predictions.get("notes") or []]
    return {"indices": indices, "screening": screening, "quality": quality, "subtype": subtype, "notes": notes,
            "has_intervals": any(i["interval"] for i in indices)}


def _case_page(templates, request, state: ReviewState, case: Case):
    try:
        ecg = state.ecg_view(case)
    except InputError as err:
        return _page(templates, request, "error.html", state, status=400, message=str(err))
    panels = []
    for view in VIEW_TITLES:
        real = state.real_cine(case, view)
        has_generator = view in state.models.generator_views
        if real is None and not has_generator and not (case.row is not None and f"cmr_{view}" in state.data.arrays):
            continue
        panel = {"view": view, "title": VIEW_TITLES[view], "real": None, "generated": None,
                 "has_generator": has_generator}
        if real is not None:
            panel["real"] = {"url": f"/media/{case.key}/real/{view}", "frames": len(real),
                             "frame_ms": state.frame_ms(case, len(real))}
        if has_generator:
            generated = state.generated_cine(case, view)
            if generated is not None:
                panel["generated"] = {"url": f"/media/{case.key}/generated/{view}", "frames": len(generated),
                                      "frame_ms": state.frame_ms(case, len(generated))}
            else:
                panel["start_url"] = f"/api/cases/{case.key}/generate/{view}"
        panels.append(panel)
    predictions = _prediction_rows(state.predictions(case), state.reference, ecg.sex_male) \
        if state.models.has_heads else None
    row = case.row
    facts = []
    if row is not None:
        facts = [("Split", row["split"]), ("Age", _fmt(row.get("age_years"), 0)), ("Sex", _sex(row.get("sex_male"))),
                 ("ICD-10", row.get("icd10").replace(";", "; ") if isinstance(row.get("icd10"), str) else "none")]
    else:
        facts = [("Upload", case.upload.original_name), ("Format", UPLOAD_KINDS.get(
            ".xml" if case.upload.kind == "xml" else ".zip"))]
    labels = [c[len("label_"):].replace("_", " ") for c in state.label_columns if row is not None and bool(row[c])]
    measurements = [(title, ecg.measurements.get(name), unit) for name, title, unit in MEASUREMENT_FIELDS
                    if ecg.measurements.get(name) is not None]
    reviewed, note = state.reviews().get(case.key, (False, ""))
    return _page(templates, request, "case.html", state, case=case, panels=panels, predictions=predictions,
                 predict_url=f"/api/cases/{case.key}/predict" if state.models.has_heads and predictions is None else None,
                 facts=facts, labels=labels, measurements=measurements, interpretation=ecg.interpretation,
                 reviewed=reviewed, note=note, ecg_url=f"/media/{case.key}/ecg.svg",
                 absent_leads=[name for name, ok in zip(("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4",
                                                          "V5", "V6"), ecg.lead_mask) if not ok])
