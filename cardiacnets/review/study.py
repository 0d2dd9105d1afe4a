"""Reader studies: the YAML definition, blinded reading orders, the SQLite store, the summary.

A study crosses cases with arms — what a reader is shown besides the ECG:
``ecg_only``, ``ecg_generated_cmr`` (the model's cine) or ``ecg_real_cmr`` (the
data set's cine) — and asks each reader the same questions for every (case,
arm) reading: a diagnosis among the study's choices, a confidence 1–5, the
image's realism 1–5 when an image is shown, and free text. It is defined in YAML
(`StudyConfig`, unknown keys are errors; ``configs/demo/study.yaml``).

Every reader gets every reading once, in an order drawn from a seed derived from
the study seed and the reader's name (`reader_seed`), so it is stable across
reloads and restarts and differs between readers; `reading_order` never puts
two readings of the same case back to back (it draws uniformly among the cases
that keep the rest of the sequence feasible). Pages show only "reading k of
n"; the case id and the arm stay on the server.

`StudyStore` keeps the resolved cases with their ground truth, each reader's
order and every answer in one SQLite file in write-ahead-log mode with
``synchronous=FULL``: each autosave is a committed transaction, so answers
survive a refresh, a browser crash or a server restart, and concurrent readers
never overwrite each other (each writes only its own rows, under SQLite's
lock). `summarize` gives per-arm and per-reader accuracy against the ground
truth (Wilson 95 % intervals) and, for every pair of arms, the exact McNemar test
on the paired correct/incorrect readings of the same reader and case
(statsmodels).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

from cardiacnets.errors import ConfigError, InputError

ARMS: tuple[str, ...] = ("ecg_only", "ecg_generated_cmr", "ecg_real_cmr")
IMAGE_ARMS: tuple[str, ...] = ("ecg_generated_cmr", "ecg_real_cmr")
ARM_TITLES = {"ecg_only": "ECG only", "ecg_generated_cmr": "ECG + generated CMR", "ecg_real_cmr": "ECG + real CMR"}
MAX_FREE_TEXT_CHARS = 4000
MAX_READER_NAME_CHARS = 64
SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- definition

@dataclass
class CaseSelection:
    """Which data-set subjects the study reads.

    Attributes:
        ids: explicit subject ids; when given, the other fields are ignored.
        split: draw from this split (``None``: every split).
        per_choice: subjects drawn for each diagnosis choice (a subject whose
            labels match several choices counts for the first one drawn).
        seed: seed of the draw.
    """

    ids: list[str] = field(default_factory=list)
    split: str | None = "test"
    per_choice: int = 2
    seed: int = 0


@dataclass
class DiagnosisQuestion:
    """The diagnosis question and how its ground truth is read from the data set.

    Attributes:
        prompt: the question as readers see it.
        choices: answer -> boolean manifest column that makes it correct (e.g.
            ``cardiomyopathy: label_cardiomyopathy``); ``null`` for the answer
            that is correct when no ``label_*`` column of the case is true
            (e.g. ``normal``). A case with several true columns accepts each
            matching answer.
    """

    prompt: str = "Most likely diagnosis"
    choices: dict[str, str | None] = field(default_factory=lambda: {
        "normal": None,
        "cardiomyopathy": "label_cardiomyopathy",
        "heart_failure": "label_heart_failure",
        "coronary_artery_disease": "label_coronary_artery_disease",
    })

    def validate(self) -> None:
        if len(self.choices) < 2:
            raise ConfigError("questions.diagnosis.choices: need at least two answers")
        if sum(column is None for column in self.choices.values()) > 1:
            raise ConfigError("questions.diagnosis.choices: at most one answer may have no column (null)")


@dataclass
class Questions:
    """What readers answer for each reading.

    Attributes:
        diagnosis: the diagnosis choice (always asked).
        confidence: ask the confidence in the diagnosis, 1-5.
        realism: ask how realistic the image looks, 1-5, on readings with an image.
        free_text: offer a free-text comment.
    """

    diagnosis: DiagnosisQuestion = field(default_factory=DiagnosisQuestion)
    confidence: bool = True
    realism: bool = True
    free_text: bool = True


@dataclass
class StudyConfig:
    """A reader study.

    Attributes:
        name: identifier used in URLs and the database file name (letters,
            digits, ``-`` and ``_``).
        title: shown to readers.
        instructions: shown on the sign-in page.
        seed: study seed; each reader's order derives from it and their name.
        reader_token: the per-study token readers sign in with (with their name).
        admin_token: the token of the summary and export pages (never given to readers).
        readers: names allowed to sign in; empty allows any name.
        arms: the arms every case is read under (see `ARMS`).
        views: cine views shown on image readings (``sa``, ``la_4ch``).
        blind_image_source: hide whether an image is real or generated (the
            page says that images may be either); False labels generated images
            ``SYNTHETIC`` as the review app does.
        cases: the subjects read.
        questions: the questions asked.
    """

    name: str = "study"
    title: str = "ECG reader study"
    instructions: str = ""
    seed: int = 0
    reader_token: str = ""
    admin_token: str = ""
    readers: list[str] = field(default_factory=list)
    arms: list[Literal["ecg_only", "ecg_generated_cmr", "ecg_real_cmr"]] = field(default_factory=lambda: list(ARMS))
    views: list[Literal["sa", "la_4ch"]] = field(default_factory=lambda: ["sa"])
    blind_image_source: bool = True
    cases: CaseSelection = field(default_factory=CaseSelection)
    questions: Questions = field(default_factory=Questions)

    def validate(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name) or not self.name.isascii():
            raise ConfigError(f"name: {self.name!r} must be letters, digits, '-' or '_'")
        if len(self.reader_token) < 8:
            raise ConfigError("reader_token: set a token of at least 8 characters")
        if len(self.admin_token) < 8 or self.admin_token == self.reader_token:
            raise ConfigError("admin_token: set a token of at least 8 characters, different from reader_token")
        if not self.arms or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms: need one or more distinct arms of {', '.join(ARMS)}")
        if not self.views or len(set(self.views)) != len(self.views):
            raise ConfigError("views: need one or more distinct views")
        for reader in self.readers:
            check_reader_name(reader, where="readers")
        if self.cases.per_choice < 1 and not self.cases.ids:
            raise ConfigError("cases.per_choice: must be at least 1")

    @property
    def has_image_arms(self) -> bool:
        return any(arm in IMAGE_ARMS for arm in self.arms)

    def public_definition(self) -> dict:
        """The definition without the tokens (what the database stores)."""
        data = asdict(self)
        data.pop("reader_token")
        data.pop("admin_token")
        return data


def load_study(path: str | os.PathLike, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read a study YAML file.

    Args:
        path: the YAML file.
        overrides: ``key=value`` overrides.

    Returns:
        The validated `StudyConfig`.

    Raises:
        ConfigError: unknown keys, bad values (the message names the file).
    """
    from cardiacnets.config import load_config

    return load_config(StudyConfig, path, overrides)


def check_reader_name(name: str, where: str = "name") -> str:
    """A reader name, stripped; raises ConfigError when empty, too long or with control characters."""
    name = name.strip()
    if not name or len(name) > MAX_READER_NAME_CHARS or not name.isprintable():
        raise ConfigError(f"{where}: reader name {name!r} must be 1-{MAX_READER_NAME_CHARS} printable characters")
    return name


# --------------------------------------------------------------------------- cases and truth

@dataclass(frozen=True)
class StudyCase:
    """One case of a study: the data-set subject and the answers that are correct for it."""

    case_id: str
    truth: tuple[str, ...]
    has_real_cmr: bool


def case_truth(row, choices: dict[str, str | None]) -> tuple[str, ...]:
    """The correct answers of one manifest row.

    Args:
        row: a manifest row (mapping column -> value).
        choices: `DiagnosisQuestion.choices`.

    Returns:
        The answers whose column is true; the null-column answer when no
        ``label_*`` column of the row is true; empty when the row's only
        positive labels are not among the choices (such a case cannot be scored).
    """
    def is_true(value) -> bool:
        return bool(value) and str(value).lower() not in ("false", "0", "nan", "")

    positive = tuple(answer for answer, column in choices.items() if column is not None and is_true(row[column]))
    if positive:
        return positive
    if any(is_true(value) for column, value in row.items() if str(column).startswith("label_")):
        return ()
    return tuple(answer for answer, column in choices.items() if column is None)


def resolve_cases(config: StudyConfig, manifest, *, data_path: str | os.PathLike = "manifest.csv") -> list[StudyCase]:
    """Pick the study's subjects and their ground truth from a data-set manifest.

    Args:
        config: the study.
        manifest: the training set's manifest (pandas DataFrame).
        data_path: the data set, named in errors.

    Returns:
        The cases, in the order drawn (explicit ids keep their order).

    Raises:
        InputError: a diagnosis column missing from the manifest, an unknown
            subject id, a subject without an ECG, without a real cine when the
            study shows real cines, or whose labels none of the choices match;
            too few subjects for ``per_choice``.
    """
    choices = config.questions.diagnosis.choices
    for answer, column in choices.items():
        if column is not None and column not in manifest.columns:
            raise InputError(data_path, f"study {config.name}: diagnosis choice {answer!r} needs manifest column "
                                        f"{column!r}, which the data set lacks")
    needs_real = "ecg_real_cmr" in config.arms
    views = config.views if config.has_image_arms else []
    by_id = manifest.set_index(manifest["subject_id"].astype(str), drop=False)

    def usable(row) -> str | None:
        if not bool(row.get("has_ecg", True)):
            return "has no ECG"
        if needs_real:
            for view in views:
                if not bool(row.get(f"has_{view}", False)):
                    return f"has no real {view} cine"
        if not case_truth(row, choices):
            return "has labels that none of the diagnosis choices match"
        return None

    if config.cases.ids:
        cases = []
        for subject_id in config.cases.ids:
            subject_id = str(subject_id)
            if subject_id not in by_id.index:
                raise InputError(data_path, f"study {config.name}: subject {subject_id!r} is not in the data set")
            row = by_id.loc[subject_id]
            problem = usable(row)
            if problem:
                raise InputError(data_path, f"study {config.name}: subject {subject_id} {problem}")
            cases.append(StudyCase(subject_id, case_truth(row, choices), _has_views(row, views)))
        if len(set(c.case_id for c in cases)) != len(cases):
            raise InputError(data_path, f"study {config.name}: cases.ids lists a subject twice")
        return cases

    pool = by_id if config.cases.split is None else by_id[by_id["split"] == config.cases.split]
    rng = np.random.default_rng(config.cases.seed)
    taken: set[str] = set()
    cases = []
    for answer in choices:
        eligible = sorted(sid for sid, row in pool.iterrows()
                          if sid not in taken and usable(row) is None and answer in case_truth(row, choices))
        if len(eligible) < config.cases.per_choice:
            split = "every split" if config.cases.split is None else f"split {config.cases.split!r}"
            raise InputError(data_path, f"study {config.name}: {len(eligible)} usable subjects with answer "
                                        f"{answer!r} in {split}, {config.cases.per_choice} needed (cases.per_choice)")
        for sid in rng.choice(eligible, size=config.cases.per_choice, replace=False):
            taken.add(str(sid))
            row = by_id.loc[str(sid)]
            cases.append(StudyCase(str(sid), case_truth(row, choices), _has_views(row, views)))
    return cases


def _has_views(row, views: Sequence[str]) -> bool:
    return all(bool(row.get(f"has_{view}", False)) for view in views)


# --------------------------------------------------------------------------- reading order

def reader_seed(study_seed: int, reader: str) -> int:
    """The seed of a reader's order: a hash of the study seed and the reader's name."""
    digest = hashlib.sha256(f"{study_seed}\x00{reader}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _can_follow(counts: dict[str, int], last: str) -> bool:
    """Whether the remaining readings can be ordered with no case twice in a row after `last`.

    With ``k`` readings left, a sequence exists iff no case other than `last`
    has more than ceil(k / 2) of them and `last` has at most floor(k / 2)
    (a case with ceil(k / 2) of an odd ``k`` must take every other place from
    the first, which `last` would then touch).
    """
    k = sum(counts.values())
    for case, n in counts.items():
        if n > (k // 2 if case == last else (k + 1) // 2):
            return False
    return True


def reading_order(case_ids: Sequence[str], arms: Sequence[str], seed: int) -> list[tuple[str, str]]:
    """A randomised order of every (case, arm) reading with no case twice in a row.

    Each step draws a reading uniformly among those whose case differs from the
    previous one and leaves a feasible rest (`_can_follow`); each case's arms
    come in a random order.

    Args:
        case_ids: the study's cases.
        arms: the arms each case is read under.
        seed: the reader's seed (`reader_seed`).

    Returns:
        ``[(case_id, arm), ...]`` of length ``len(case_ids) * len(arms)``.

    Raises:
        ConfigError: when no such order exists (one case read under several arms).
    """
    counts = {case: len(arms) for case in case_ids}
    if len(arms) > 1 and not _can_follow(counts, last=""):
        raise ConfigError(f"a study with {len(case_ids)} case(s) and {len(arms)} arms cannot avoid showing a case "
                          "twice in a row; add cases")
    rng = np.random.default_rng(seed)
    arm_queue = {case: [arms[i] for i in rng.permutation(len(arms))] for case in case_ids}
    order: list[tuple[str, str]] = []
    last = ""
    for _ in range(len(case_ids) * len(arms)):
        candidates, weights = [], []
        for case, n in counts.items():
            if n == 0 or case == last:
                continue
            counts[case] -= 1
            if _can_follow(counts, case):
                candidates.append(case)
                weights.append(n)
            counts[case] += 1
        assert candidates, "the feasibility invariant guarantees a candidate"
        weights = np.asarray(weights, float)
        case = candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]
        counts[case] -= 1
        order.append((case, arm_queue[case].pop()))
        last = case
    return order


# --------------------------------------------------------------------------- store

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Reading:
    """One reading of one reader, as stored."""

    reader: str
    position: int
    case_id: str
    arm: str
    diagnosis: str | None = None
    confidence: int | None = None
    realism: int | None = None
    free_text: str | None = None
    first_opened_at: str | None = None
    updated_at: str | None = None
    submitted_at: str | None = None
    active_ms: int = 0

    @property
    def submitted(self) -> bool:
        return self.submitted_at is not None

    @property
    def shows_image(self) -> bool:
        return self.arm in IMAGE_ARMS


class AnswerError(ValueError):
    """An answer that the study does not accept (bad value, locked reading)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY, idx INTEGER NOT NULL, truth TEXT NOT NULL, has_real_cmr INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS readers (reader TEXT PRIMARY KEY, seed TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    reader TEXT NOT NULL, position INTEGER NOT NULL, case_id TEXT NOT NULL, arm TEXT NOT NULL,
    diagnosis TEXT, confidence INTEGER, realism INTEGER, free_text TEXT,
    first_opened_at TEXT, updated_at TEXT, submitted_at TEXT,
    PRIMARY KEY (reader, position));
CREATE TABLE IF NOT EXISTS visits (
    reader TEXT NOT NULL, position INTEGER NOT NULL, visit_id TEXT NOT NULL, active_ms INTEGER NOT NULL,
    PRIMARY KEY (reader, position, visit_id));
"""


class StudyStore:
    """A study's SQLite database: definition, cases with truth, orders, answers, reading times.

    Every call opens its own connection (safe from any thread or process) and
    commits before returning.

    Args:
        path: the ``.sqlite`` file; created when missing.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise InputError(self.path, f"SQLite refused write-ahead logging (journal mode {mode})")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- definition

    def meta(self) -> dict:
        """The stored definition (``definition`` without tokens, ``created_at``...)."""
        with self._connect() as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}

    def initialize(self, config: StudyConfig, cases: Sequence[StudyCase]) -> None:
        """Store the study definition and its cases, or check them against what is stored.

        Readers, tokens, title and instructions may change between runs; the
        arms, views, cases, questions and seed may not once a reader has started
        (their answers would no longer mean the same thing).

        Raises:
            ConfigError: the definition changed after readers started.
        """
        definition = config.public_definition()
        frozen = {k: definition[k] for k in ("seed", "arms", "views", "questions", "blind_image_source")}
        frozen["cases"] = [[c.case_id, list(c.truth)] for c in cases]
        digest = hashlib.sha256(json.dumps(frozen, sort_keys=True).encode()).hexdigest()
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key='frozen_sha256'").fetchone()
            n_readers = db.execute("SELECT COUNT(*) FROM readers").fetchone()[0]
            if row is not None and json.loads(row[0]) != digest and n_readers:
                raise ConfigError(f"study {config.name}: its arms, views, cases, questions or seed differ from those "
                                  f"its {n_readers} reader(s) started with ({self.path}); restore them or start a "
                                  "new study under another name")
            values = {"schema_version": SCHEMA_VERSION, "definition": definition, "frozen_sha256": digest,
                      "updated_at": _now()}
            if row is None:
                values["created_at"] = _now()
            for key, value in values.items():
                db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           (key, json.dumps(value)))
            db.execute("DELETE FROM cases")
            db.executemany("INSERT INTO cases(case_id, idx, truth, has_real_cmr) VALUES(?, ?, ?, ?)",
                           [(c.case_id, i, json.dumps(list(c.truth)), int(c.has_real_cmr)) for i, c in enumerate(cases)])

    def cases(self) -> list[StudyCase]:
        with self._connect() as db:
            rows = db.execute("SELECT case_id, truth, has_real_cmr FROM cases ORDER BY idx").fetchall()
        return [StudyCase(cid, tuple(json.loads(truth)), bool(real)) for cid, truth, real in rows]

    # -- readers

    def readers(self) -> list[str]:
        with self._connect() as db:
            return [r for (r,) in db.execute("SELECT reader FROM readers ORDER BY created_at, reader")]

    def ensure_reader(self, reader: str) -> list[Reading]:
        """The reader's readings in order, assigning them on the first sign-in.

        Args:
            reader: the reader's name.

        Returns:
            Their readings (answers so far included).
        """
        definition = self.meta()["definition"]
        with self._write() as db:
            exists = db.execute("SELECT 1 FROM readers WHERE reader=?", (reader,)).fetchone()
            if not exists:
                seed = reader_seed(int(definition["seed"]), reader)
                case_ids = [cid for (cid,) in db.execute("SELECT case_id FROM cases ORDER BY idx")]
                order = reading_order(case_ids, definition["arms"], seed)
                db.execute("INSERT INTO readers(reader, seed, created_at) VALUES(?, ?, ?)", (reader, str(seed), _now()))
                db.executemany("INSERT INTO readings(reader, position, case_id, arm) VALUES(?, ?, ?, ?)",
                               [(reader, i, cid, arm) for i, (cid, arm) in enumerate(order)])
        return self.readings(reader)

    def readings(self, reader: str | None = None, position: int | None = None) -> list[Reading]:
        """Stored readings with their active time: all, one reader's, or one reading."""
        query = ("SELECT r.reader, r.position, r.case_id, r.arm, r.diagnosis, r.confidence, r.realism, r.free_text, "
                 "r.first_opened_at, r.updated_at, r.submitted_at, COALESCE(SUM(v.active_ms), 0) "
                 "FROM readings r LEFT JOIN visits v ON v.reader=r.reader AND v.position=r.position ")
        args: tuple = ()
        if reader is not None:
            query += "WHERE r.reader=? " + ("AND r.position=? " if position is not None else "")
            args = (reader,) if position is None else (reader, position)
        query += "GROUP BY r.reader, r.position ORDER BY r.reader, r.position"
        with self._connect() as db:
            return [Reading(*row) for row in db.execute(query, args)]

    def reading(self, reader: str, position: int) -> Reading | None:
        found = self.readings(reader, position)
        return found[0] if found else None

    @staticmethod
    def current_position(readings: Sequence[Reading]) -> int | None:
        """The first reading not yet submitted (None when all are)."""
        return next((r.position for r in readings if not r.submitted), None)

    # -- answers

    def mark_opened(self, reader: str, position: int) -> None:
        with self._write() as db:
            db.execute("UPDATE readings SET first_opened_at=? WHERE reader=? AND position=? AND first_opened_at IS NULL",
                       (_now(), reader, position))

    def save_answer(self, reader: str, position: int, answer: dict, *, visit_id: str | None = None,
                    active_ms: int | None = None) -> Reading:
        """Autosave: store the given fields of one reading at once (one committed transaction).

        Args:
            reader: the reader (from their session; readers write only their own rows).
            position: the reading's place in their order.
            answer: any of ``diagnosis``, ``confidence``, ``realism``, ``free_text``;
                ``None`` or ``""`` clears a field.
            visit_id: the page visit the time belongs to.
            active_ms: time the page has been visible in that visit so far.

        Returns:
            The stored reading.

        Raises:
            AnswerError: an unknown field or a bad value, a reading already
                submitted (locked), or one that is not the reader's.
        """
        definition = self.meta()["definition"]
        reading = self.reading(reader, position)
        if reading is None:
            raise AnswerError(f"reading {position + 1} does not exist for this reader")
        values = validate_answer(answer, definition, reading.shows_image)
        with self._write() as db:
            locked = db.execute("SELECT submitted_at FROM readings WHERE reader=? AND position=?",
                                (reader, position)).fetchone()[0]
            if values:
                if locked is not None:
                    raise AnswerError(f"reading {position + 1} was submitted and can no longer be changed")
                assignments = ", ".join(f"{k}=?" for k in values)
                db.execute(f"UPDATE readings SET {assignments}, updated_at=? WHERE reader=? AND position=?",
                           (*values.values(), _now(), reader, position))
            if visit_id is not None and active_ms is not None:
                _record_visit(db, reader, position, visit_id, active_ms)
        return self.reading(reader, position)

    def submit(self, reader: str, position: int) -> Reading:
        """Lock a reading once its required answers are given.

        Raises:
            AnswerError: a required answer is missing, or the reading is not the
                reader's current one.
        """
        definition = self.meta()["definition"]
        readings = self.readings(reader)
        if not 0 <= position < len(readings):
            raise AnswerError(f"reading {position + 1} does not exist for this reader")
        reading = readings[position]
        if reading.submitted:
            return reading
        missing = [name for name in required_answers(definition, reading.shows_image) if getattr(reading, name) is None]
        if missing:
            raise AnswerError("please answer: " + ", ".join(missing))
        with self._write() as db:
            db.execute("UPDATE readings SET submitted_at=? WHERE reader=? AND position=? AND submitted_at IS NULL",
                       (_now(), reader, position))
        return self.reading(reader, position)

    # -- outputs

    def export_rows(self) -> list[dict]:
        """Every reading of every reader with its truth and correctness (the CSV's rows)."""
        truth = {c.case_id: c.truth for c in self.cases()}
        rows = []
        for r in self.readings():
            correct = None if r.diagnosis is None or not r.submitted else int(r.diagnosis in truth.get(r.case_id, ()))
            rows.append({
                "reader": r.reader, "position": r.position + 1, "case_id": r.case_id, "arm": r.arm,
                "truth": "|".join(truth.get(r.case_id, ())), "diagnosis": r.diagnosis or "", "correct": correct,
                "confidence": r.confidence, "realism": r.realism, "free_text": r.free_text or "",
                "active_seconds": round(r.active_ms / 1000.0, 3), "first_opened_at": r.first_opened_at or "",
                "updated_at": r.updated_at or "", "submitted_at": r.submitted_at or "",
            })
        return rows

    def export_csv(self) -> str:
        """The readings as CSV text (header first; empty cells for missing answers).

        Reader names and free text that begin with ``=``, ``+``, ``-``, ``@`` or a
        tab get a leading ``'`` so that spreadsheets do not run them as formulas.
        """
        rows = self.export_rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            row = {k: "" if v is None else v for k, v in row.items()}
            for key in ("reader", "free_text"):
                if str(row[key]).startswith(("=", "+", "-", "@", "\t", "\r")):
                    row[key] = "'" + str(row[key])
            writer.writerow(row)
        return buffer.getvalue()


EXPORT_COLUMNS = ("reader", "position", "case_id", "arm", "truth", "diagnosis", "correct", "confidence", "realism",
                  "free_text", "active_seconds", "first_opened_at", "updated_at", "submitted_at")


def _record_visit(db: sqlite3.Connection, reader: str, position: int, visit_id: str, active_ms: int) -> None:
    if not (isinstance(visit_id, str) and 8 <= len(visit_id) <= 64 and visit_id.isalnum()):
        raise AnswerError("bad visit id")
    active_ms = int(active_ms)
    if not 0 <= active_ms <= 24 * 3600 * 1000:
        raise AnswerError("active time out of range")
    # A visit reports its running total; keep the largest (reports may arrive out of order).
    db.execute("INSERT INTO visits(reader, position, visit_id, active_ms) VALUES(?, ?, ?, ?) "
               "ON CONFLICT(reader, position, visit_id) DO UPDATE SET active_ms=MAX(active_ms, excluded.active_ms)",
               (reader, position, visit_id, active_ms))


def required_answers(definition: dict, shows_image: bool) -> list[str]:
    """The answers a reading needs before it can be submitted."""
    questions = definition["questions"]
    names = ["diagnosis"]
    if questions["confidence"]:
        names.append("confidence")
    if questions["realism"] and shows_image:
        names.append("realism")
    return names


def validate_answer(answer: dict, definition: dict, shows_image: bool) -> dict:
    """Check and convert autosaved fields; raises AnswerError naming the bad one."""
    questions = definition["questions"]
    allowed = {"diagnosis"}
    if questions["confidence"]:
        allowed.add("confidence")
    if questions["realism"] and shows_image:
        allowed.add("realism")
    if questions["free_text"]:
        allowed.add("free_text")
    values = {}
    for name, value in answer.items():
        if name not in allowed:
            raise AnswerError(f"this reading does not ask {name!r}")
        if value is None or value == "":
            values[name] = None
        elif name == "diagnosis":
            if value not in questions["diagnosis"]["choices"]:
                raise AnswerError(f"diagnosis {value!r} is not one of the choices")
            values[name] = str(value)
        elif name in ("confidence", "realism"):
            number = _whole_number(value)
            if number is None or not 1 <= number <= 5:
                raise AnswerError(f"{name} must be a whole number from 1 to 5")
            values[name] = number
        else:
            text = str(value)
            if len(text) > MAX_FREE_TEXT_CHARS:
                raise AnswerError(f"free text is limited to {MAX_FREE_TEXT_CHARS} characters")
            values[name] = text
    return values


def _whole_number(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


# --------------------------------------------------------------------------- summary

def _accuracy(correct: Sequence[int]) -> dict:
    from statsmodels.stats.proportion import proportion_confint

    n, k = len(correct), int(sum(correct))
    if n == 0:
        return {"n": 0, "n_correct": 0, "accuracy": None, "ci95": None}
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return {"n": n, "n_correct": k, "accuracy": k / n, "ci95": [float(low), float(high)]}


def _mean(values: Sequence) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(store: StudyStore) -> dict:
    """Accuracy per arm and per reader, and paired comparisons between arms.

    Only submitted readings count. Accuracy: the diagnosis is one of the case's
    correct answers; 95 % Wilson intervals. Pairs: for arms A and B, the
    readings of the same reader and case under both; the exact McNemar test
    (binomial on the discordant pairs, statsmodels) compares A with B.

    Args:
        store: the study's store.

    Returns:
        A JSON-serialisable dict: ``study``, ``arms``, ``progress`` (per reader
        submitted/total), ``per_arm``, ``per_reader``, ``paired``.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    meta = store.meta()
    definition = meta["definition"]
    arms = list(definition["arms"])
    rows = store.export_rows()
    done = [r for r in rows if r["submitted_at"]]
    progress = {}
    for r in rows:
        entry = progress.setdefault(r["reader"], {"submitted": 0, "total": 0})
        entry["total"] += 1
        entry["submitted"] += int(bool(r["submitted_at"]))

    per_arm = {}
    for arm in arms:
        in_arm = [r for r in done if r["arm"] == arm]
        block = _accuracy([r["correct"] for r in in_arm])
        block["mean_confidence"] = _mean([r["confidence"] for r in in_arm])
        block["mean_realism"] = _mean([r["realism"] for r in in_arm]) if arm in IMAGE_ARMS else None
        block["median_active_seconds"] = float(np.median([r["active_seconds"] for r in in_arm])) if in_arm else None
        per_arm[arm] = block
    per_reader = {}
    for reader in progress:
        mine = [r for r in done if r["reader"] == reader]
        per_reader[reader] = {"all": _accuracy([r["correct"] for r in mine])}
        for arm in arms:
            per_reader[reader][arm] = _accuracy([r["correct"] for r in mine if r["arm"] == arm])

    correct_of = {(r["reader"], r["case_id"], r["arm"]): r["correct"] for r in done}
    paired = []
    for i, arm_a in enumerate(arms):
        for arm_b in arms[i + 1:]:
            table = np.zeros((2, 2), int)  # rows: A correct / wrong; columns: B correct / wrong
            for (reader, case_id, arm), a in correct_of.items():
                if arm != arm_a or (reader, case_id, arm_b) not in correct_of:
                    continue
                b = correct_of[(reader, case_id, arm_b)]
                table[1 - a, 1 - b] += 1
            n_pairs = int(table.sum())
            p_value = float(mcnemar(table, exact=True).pvalue) if table[0, 1] + table[1, 0] > 0 else 1.0
            paired.append({
                "arm_a": arm_a, "arm_b": arm_b, "n_pairs": n_pairs, "both_correct": int(table[0, 0]),
                "only_a_correct": int(table[0, 1]), "only_b_correct": int(table[1, 0]), "both_wrong": int(table[1, 1]),
                "accuracy_a": table[0].sum() / n_pairs if n_pairs else None,
                "accuracy_b": table[:, 0].sum() / n_pairs if n_pairs else None,
                "mcnemar_exact_p": p_value if n_pairs else None,
            })
    return {"study": definition["name"], "title": definition["title"], "arms": arms,
            "n_cases": len(store.cases()), "n_readers": len(progress), "n_submitted": len(done),
            "progress": progress, "per_arm": per_arm, "per_reader": per_reader, "paired": paired}


def study_db_path(app_dir: str | os.PathLike, name: str) -> Path:
    """Where the review app keeps study `name`: ``APP_DIR/studies/<name>.sqlite``."""
    return Path(app_dir) / "studies" / f"{name}.sqlite"
