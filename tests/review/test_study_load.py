"""A bounded load test of a reader study through the real server, with a ``kill -9`` (issue 17).

``cardiacnets review`` runs as a subprocess on a free loopback port with a served
study. Six readers, one thread each, sign in and answer through the real
endpoints as fast as they can: open a reading, autosave answers to it, submit it,
go on; when a reader has finished every reading it signs in under a new name.
After a few seconds the server and its process group get SIGKILL; it is started
again on the same app folder and port, the readers reconnect (their cookies stay
valid: the signing secret is in the app folder) and go on for a few seconds more.

Every autosave carries its own visit id, so each one the server acknowledged
(200 with ``saved``) leaves its own row in the study database, written in the
same transaction as the answer. Afterwards: every acknowledged autosave's row is
there, each reading holds the answers of its last acknowledged autosave (or of
one sent later whose reply the kill swallowed) with all fields of one autosave
together, every acknowledged submit is submitted (read through the admin's CSV
export), ``PRAGMA integrity_check`` is ok, no response was a 5xx or anything
else unexpected, and the only connection errors fall between the kill and the
restarted server answering. The test prints one line with the load figure.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from support.review import csrf_token_of, free_socket

pytestmark = pytest.mark.slow

READERS = 6
LOAD_BEFORE_KILL_S = 5.0
LOAD_AFTER_RESTART_S = 4.0
AUTOSAVES_PER_READING = 15
REQUEST_TIMEOUT_S = 15.0
SERVER_START_TIMEOUT_S = 60.0
RECONNECT_GRACE_S = 1.0  # a reader's last failed try may end just after the restarted server answers
TOKEN = "review-token-load-0001"
READER_TOKEN = "reader-token-load-0001"
ADMIN_TOKEN = "admin-token-load-00001"
STUDY = "load"
CHOICES = ("normal", "cardiomyopathy", "coronary_artery_disease")


def _study_yaml(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": STUDY, "seed": 5, "reader_token": READER_TOKEN, "admin_token": ADMIN_TOKEN,
        "arms": ["ecg_only", "ecg_real_cmr"], "cases": {"ids": ["1000002", "1000007", "1000001"]},
        "questions": {"diagnosis": {"choices": {"normal": None, "cardiomyopathy": "label_cardiomyopathy",
                                                "coronary_artery_disease": "label_coronary_artery_disease"}}},
    }, sort_keys=False))
    return path


class ReviewServer:
    """``cardiacnets review`` as a subprocess in its own process group, its output in a log file."""

    def __init__(self, data: Path, study: Path, app_dir: Path, log_path: Path):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "cardiacnets.cli", "review", "--data", str(data), "--study", str(study),
                        "--app-dir", str(app_dir), "--port", str(self.port)]
        self.env = {**os.environ, "CARDIACNETS_REVIEW_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the server and wait until it answers ``/healthz``."""
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(self.base):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the review server did not start:\n{self.log()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the server's process group (the server and any children)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """End the server the ordinary way (SIGTERM), SIGKILL if it does not end."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def _free_port() -> int:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    return port


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2.0).text == "ok"
    except httpx.TransportError:
        return False


# --------------------------------------------------------------------------- readers

class Unexpected(Exception):
    """A response the test did not expect (a 5xx, a refused CSRF token, a lost session...)."""


@dataclass
class ReaderLog:
    """What one reader thread sent and what the server acknowledged."""

    # (reader, position, visit id, active_ms, seq, when acknowledged)
    acked: list[tuple[str, int, str, int, int, float]] = field(default_factory=list)
    last_acked: dict[tuple[str, int], int] = field(default_factory=dict)
    last_sent: dict[tuple[str, int], int] = field(default_factory=dict)
    submitted: list[tuple[str, int]] = field(default_factory=list)
    connection_errors: list[tuple[float, str, float]] = field(default_factory=list)  # when, what, request sent at
    unexpected: list[str] = field(default_factory=list)


def answer_of(reader: str, seq: int, shows_image: bool) -> dict:
    """The answers of autosave number ``seq``: every field changes with it, so a mix of two autosaves shows."""
    answer = {"diagnosis": CHOICES[seq % len(CHOICES)], "confidence": 1 + seq % 5, "free_text": f"{reader}#{seq}"}
    if shows_image:
        answer["realism"] = 1 + (seq + 2) % 5
    return answer


def _expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise Unexpected(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                         f"(expected {status}) {response.text[:300]!r}")
    return response


class Reader:
    """One reader thread: signs in, reads, autosaves and submits until told to stop; reconnects after a kill."""

    def __init__(self, index: int, base: str, stop: threading.Event):
        self.index, self.base, self.stop = index, base, stop
        self.log = ReaderLog()
        self.seq = 0
        self.request_sent_at = 0.0

    def run(self) -> None:
        session = 0

        def sending(request: httpx.Request) -> None:
            self.request_sent_at = time.monotonic()

        with httpx.Client(base_url=self.base, timeout=REQUEST_TIMEOUT_S, event_hooks={"request": [sending]}) as client:
            while not self.stop.is_set():
                try:
                    if "X-CSRF-Token" not in client.headers:  # the sign-in page sets the CSRF cookie
                        signin_page = _expect(client.get(f"/study/{STUDY}/"), 200).text
                        client.headers["X-CSRF-Token"] = csrf_token_of(signin_page)
                    if self.read_all(client, f"reader{self.index}-{session}"):
                        session += 1  # every reading submitted: sign in as the next reader
                except httpx.TransportError as err:
                    # The server went away: wait for it, then sign in again under the same name,
                    # which resumes at the reader's first unsubmitted reading.
                    self.log.connection_errors.append((time.monotonic(), type(err).__name__, self.request_sent_at))
                    while not self.stop.is_set() and not _healthy(self.base):
                        time.sleep(0.05)
                except Unexpected as err:
                    self.log.unexpected.append(str(err))
                    return

    def read_all(self, client: httpx.Client, name: str) -> bool:
        """Sign in as ``name`` and work through the readings; True when all are submitted."""
        signin = _expect(client.post(f"/study/{STUDY}/signin", data={"name": name, "token": READER_TOKEN}), 303)
        location = signin.headers["location"]
        while location != f"/study/{STUDY}/done":
            number = int(location.rsplit("/", 1)[1])
            shows_image = 'name="realism"' in _expect(client.get(location), 200).text
            for _ in range(AUTOSAVES_PER_READING):
                if self.stop.is_set():
                    return False
                self.autosave(client, name, number, shows_image)
            submit = _expect(client.post(location, data={}), 303)  # to the next reading, or the done page
            self.log.submitted.append((name, number - 1))
            location = submit.headers["location"]
        return True

    def autosave(self, client: httpx.Client, name: str, number: int, shows_image: bool) -> None:
        self.seq += 1
        seq, key = self.seq, (name, number - 1)
        visit, active_ms = f"r{self.index}n{seq:07d}", 10 * seq
        self.log.last_sent[key] = seq
        response = client.post(f"/study/{STUDY}/api/readings/{number}",
                               json={"answer": answer_of(name, seq, shows_image), "visit": visit, "active_ms": active_ms})
        body = _expect(response, 200).json()
        if body.get("saved") is not True or not body.get("updated_at"):
            raise Unexpected(f"autosave answered 200 without saving: {body}")
        self.log.acked.append((name, number - 1, visit, active_ms, seq, time.monotonic()))
        self.log.last_acked[key] = seq


# --------------------------------------------------------------------------- checks

def _admin_export(base: str) -> list[dict]:
    """The study's readings from the admin's CSV export."""
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as admin:
        admin.headers["X-CSRF-Token"] = csrf_token_of(_expect(admin.get(f"/study/{STUDY}/admin"), 200).text)
        _expect(admin.post(f"/study/{STUDY}/admin/login", data={"token": ADMIN_TOKEN}), 303)
        return list(csv.DictReader(io.StringIO(_expect(admin.get(f"/study/{STUDY}/admin/export.csv"), 200).text)))


def _lost(logs: list[ReaderLog], rows: list[dict], visits: dict[tuple[str, int, str], int]) -> list[str]:
    """Every acknowledged autosave or submit that the database does not hold, described."""
    lost = []
    for log in logs:
        for reader, position, visit, active_ms, seq, _ in log.acked:
            if visits.get((reader, position, visit)) != active_ms:
                lost.append(f"autosave {seq} of {reader}, reading {position + 1}: visit row missing")
    by_reading = {(r["reader"], int(r["position"]) - 1): r for r in rows}
    for log in logs:
        for (reader, position), acked in log.last_acked.items():
            row = by_reading.get((reader, position))
            if row is None:
                lost.append(f"{reader}, reading {position + 1}: not in the export")
                continue
            stored = int(row["free_text"].rsplit("#", 1)[1]) if "#" in row["free_text"] else -1
            expected = answer_of(reader, stored, bool(row["realism"]))
            fields = {"diagnosis": row["diagnosis"], "confidence": _number(row["confidence"]),
                      "free_text": row["free_text"]}
            if row["realism"]:
                fields["realism"] = _number(row["realism"])
            if not acked <= stored <= log.last_sent[(reader, position)] or fields != expected:
                lost.append(f"{reader}, reading {position + 1}: holds {fields}, last acknowledged autosave {acked}")
        for reader, position in log.submitted:
            if not by_reading.get((reader, position), {}).get("submitted_at"):
                lost.append(f"{reader}, reading {position + 1}: acknowledged submit not stored")
    return lost


def _number(text: str) -> int | None:
    return int(text) if text else None


def test_concurrent_readers_lose_no_acknowledged_answer_across_a_kill_9(review_dataset, tmp_path, capsys):
    app_dir = tmp_path / "app"
    server = ReviewServer(review_dataset, _study_yaml(tmp_path / "study.yaml"), app_dir, tmp_path / "server.log")
    stop = threading.Event()
    readers = [Reader(i, server.base, stop) for i in range(READERS)]
    threads = [threading.Thread(target=r.run, name=f"reader{r.index}", daemon=True) for r in readers]
    try:
        server.start()
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(LOAD_BEFORE_KILL_S)
        killed = time.monotonic()
        server.kill()
        server.start()  # same app folder, same port
        serving_again = time.monotonic()
        time.sleep(LOAD_AFTER_RESTART_S)
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_S + 5)
        ended = time.monotonic()
        assert not any(t.is_alive() for t in threads), "a reader did not stop"
        rows = _admin_export(server.base)
    finally:
        stop.set()
        server.stop()
    log_text = server.log()
    logs = [r.log for r in readers]

    unexpected = [message for log in logs for message in log.unexpected]
    assert not unexpected, unexpected  # 5xx, 4xx, a 200 that did not save: none
    outside = [(round(t - killed, 2), kind) for log in logs for t, kind, _ in log.connection_errors
               if not killed <= t <= serving_again + RECONNECT_GRACE_S]
    assert not outside, f"connection errors outside the kill window (s after the kill): {outside}"
    assert "Traceback" not in log_text, log_text[-3000:]
    cut_off = sum(sent < killed for log in logs for _, _, sent in log.connection_errors)
    assert cut_off, "the kill interrupted no request; it proves nothing"
    for log in logs:  # every reader was answered before the kill and again after the restart
        assert any(t < killed for *_, t in log.acked) and any(t > serving_again for *_, t in log.acked)

    with sqlite3.connect(f"file:{app_dir / 'studies' / f'{STUDY}.sqlite'}?mode=ro", uri=True) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchall()
        visits = {(r, p, v): ms for r, p, v, ms in db.execute("SELECT reader, position, visit_id, active_ms FROM visits")}
    assert integrity == [("ok",)], integrity
    lost = _lost(logs, rows, visits)
    assert not lost, f"{len(lost)} acknowledged answers lost: {lost[:10]}"

    n_acked = sum(len(log.acked) for log in logs)
    n_submitted = sum(len(log.submitted) for log in logs)
    serving_s = (ended - started) - (serving_again - killed)
    with capsys.disabled():
        print(f"\nreview study load: {READERS} readers, {n_acked} autosaved ratings + {n_submitted} submits "
              f"acknowledged in {ended - started:.1f} s ({n_acked / serving_s:.0f} ratings/s while serving), "
              f"kill -9 at {killed - started:.1f} s cut off {cut_off} requests, serving again "
              f"{serving_again - killed:.1f} s later; "
              f"lost {len(lost)}, integrity_check ok")
