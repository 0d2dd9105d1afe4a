"""A reader study's SQLite store: the resolved cases with their ground truth, each reader's order, every answer.

`StudyStore` keeps them in one SQLite file in write-ahead-log mode with
``synchronous=FULL``: each autosave is a committed transaction, so answers
survive a refresh, a browser crash or a server restart, and concurrent readers
never overwrite each other (each writes only its own rows, under SQLite's
lock). `validate_answer` checks an answer against the study's questions. The
study's definition and reading orders are in `cardiacnets.review.study`.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from cardiacnets.errors import ConfigError, InputError
from cardiacnets.review.study import (
    IMAGE_ARMS, MAX_FREE_TEXT_CHARS, SCHEMA_VERSION, StudyCase, StudyConfig, reader_seed, reading_order,
)


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


def study_db_path(app_dir: str | os.PathLike, name: str) -> Path:
    """Where the review app keeps study `name`: ``APP_DIR/studies/<name>.sqlite``."""
    return Path(app_dir) / "studies" / f"{name}.sqlite"
