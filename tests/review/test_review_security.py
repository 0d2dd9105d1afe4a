"""Security tests of the review app (issue 17): cross-site requests and CSRF tokens, the Host
allow-list, body limits, the sign-in throttle, token strength, private files, the launch URL's
token, no 500 on hostile input, manifest paths relative to elsewhere, and the shipped demo study
config against the demo cohort."""

from __future__ import annotations

import io
import re
import shutil
import stat
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cardiacnets.cli import main
from cardiacnets.errors import ConfigError
from cardiacnets.review.app import ReviewSettings, create_app, subject_key
from cardiacnets.review.jobs import ReviewModels
from cardiacnets.review.security import LoginLimiter, allowed_hosts, same_origin
from cardiacnets.review.state import resolve_source_file

from support import REPO_ROOT
from support.review import BASE_URL, csrf_token_of, fake_predict, FakeCinePipeline, review_client

TOKEN = "review-token-0001"
READER_TOKEN = "reader-token-0001"
ADMIN_TOKEN = "admin-token-00001"
EVIL = {"Origin": "http://evil.example"}
slow = pytest.mark.slow  # tests on the shared simulated data set (~20 s to build once)


def _models() -> ReviewModels:
    return ReviewModels(generators={"sa": FakeCinePipeline()}, predictor=fake_predict, key="fake")


def _study_yaml(path: Path, **changes) -> Path:
    data = {"name": "tiny", "seed": 3, "reader_token": READER_TOKEN, "admin_token": ADMIN_TOKEN,
            "arms": ["ecg_only", "ecg_real_cmr"], "cases": {"ids": ["1000002", "1000007", "1000001"]},
            "questions": {"diagnosis": {"choices": {"normal": None, "cardiomyopathy": "label_cardiomyopathy",
                                                    "coronary_artery_disease": "label_coronary_artery_disease"}}}}
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def open_app(review_dataset, tmp_path):
    """The default launch: loopback, no token given (the app makes one), a generator and heads."""
    return create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app"), _models())


@pytest.fixture()
def study_app(review_dataset, tmp_path):
    """A configured token and a served study."""
    settings = ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app", token=TOKEN,
                              studies=[_study_yaml(tmp_path / "study.yaml")])
    return create_app(settings)


# --------------------------------------------------------------------------- CSRF and cross-site requests

@slow
def test_cross_site_posts_are_refused_without_a_configured_token(open_app):
    key = subject_key("1000004")
    with review_client(open_app) as client:  # signed in, with the CSRF token: only the origin is wrong
        refused = client.post(f"/cases/{key}/review", data={"reviewed": "yes", "note": "from evil"}, headers=EVIL)
        assert refused.status_code == 403 and "cross-site request refused" in refused.text
        assert open_app.state.review.reviews() == {}
        upload = client.post("/upload", files={"ecg": ("a.xml", b"<x/>")}, headers=EVIL)
        assert upload.status_code == 403 and not (open_app.state.review.uploads_dir).exists()
        generate = client.post(f"/api/cases/{key}/generate/sa", headers=EVIL)
        assert generate.status_code == 403 and generate.json()["error"].startswith("cross-site")
        assert client.post(f"/api/cases/{key}/predict", headers={"Origin": "null"}).status_code == 403
        assert client.post(f"/api/cases/{key}/predict", headers={"Referer": "http://evil.example/x"}).status_code == 403
        assert client.post(f"/api/cases/{key}/predict", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert client.post(f"/api/cases/{key}/predict", headers={"Origin": "http://127.0.0.1:9999"}).status_code == 403
        assert open_app.state.review.runner.jobs == {}  # nothing was queued
        # Without the CSRF token a same-origin post is refused too (a script, curl, a stale page).
        no_token = client.post(f"/cases/{key}/review", data={"reviewed": "yes"}, headers={"X-CSRF-Token": ""})
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        forged = client.post(f"/cases/{key}/review", data={"reviewed": "yes"}, headers={"X-CSRF-Token": "0" * 64})
        assert forged.status_code == 403
        # The same request from the app's own page goes through.
        ok = client.post(f"/cases/{key}/review", data={"reviewed": "yes", "note": "ok"},
                         headers={"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"}, follow_redirects=False)
        assert ok.status_code == 303 and open_app.state.review.reviews()[key] == (True, "ok")


@slow
def test_cross_site_posts_are_refused_with_a_token_and_forms_carry_theirs(study_app):
    with review_client(study_app, sign_in=False) as client:
        assert client.post("/login", data={"token": TOKEN}, headers=EVIL).status_code == 403
        signin = {"name": "alice", "token": READER_TOKEN}
        assert client.post("/study/tiny/signin", data=signin, headers=EVIL).status_code == 403
        assert client.post("/study/tiny/admin/login", data={"token": ADMIN_TOKEN}, headers=EVIL).status_code == 403
        assert study_app.state.review.studies["tiny"].store.readers() == []
        # A browser posts the form's hidden field; the header is not needed then.
        page = client.get("/study/tiny/")
        field = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)
        assert field == csrf_token_of(page.text)
        del client.headers["X-CSRF-Token"]
        assert client.post("/study/tiny/signin", data=signin).status_code == 403  # no token at all
        response = client.post("/study/tiny/signin", data={**signin, "csrf_token": field}, follow_redirects=False,
                               headers={"Origin": BASE_URL})
        assert response.status_code == 303 and response.headers["location"] == "/study/tiny/readings/1"
        autosave = client.post("/study/tiny/api/readings/1", json={"answer": {"diagnosis": "normal"}})
        assert autosave.status_code == 403 and "CSRF" in autosave.json()["error"]
        saved = client.post("/study/tiny/api/readings/1", json={"answer": {"diagnosis": "normal"}},
                            headers={"X-CSRF-Token": field})
        assert saved.status_code == 200 and saved.json()["saved"]
        client.cookies.clear()  # a new browser gets a new CSRF cookie with its first page
        cookie = client.get("/login").headers["set-cookie"]
        assert re.fullmatch(r"cn_csrf=[\w-]{43}; Max-Age=\d+; Path=/; HttpOnly; SameSite=Lax", cookie)


@slow
def test_every_state_changing_route_needs_the_csrf_token(study_app):
    # A signed-in client without the token: every POST route answers 403 before doing anything.
    from cardiacnets.review.routes import ROUTERS
    from cardiacnets.review.web import require_csrf

    assert all(any(d.dependency is require_csrf for d in router.dependencies) for router in ROUTERS)
    routes = [r for router in ROUTERS for r in router.routes if "POST" in r.methods]
    assert len(routes) == 10
    with review_client(study_app, token=TOKEN) as client:
        client.headers["X-CSRF-Token"] = ""
        for route in routes:
            path = (route.path.replace("{name}", "tiny").replace("{case_key}", subject_key("1000001"))
                    .replace("{view}", "sa").replace("{number}", "1"))
            assert client.post(path, data={"token": TOKEN}).status_code == 403, path


@slow
def test_cookies_are_secure_over_https(study_app):
    from fastapi.testclient import TestClient

    with TestClient(study_app, base_url="https://127.0.0.1") as client:  # as behind a TLS proxy
        first = client.get("/login")
        assert first.headers["set-cookie"].endswith("; Secure")
        response = client.post("/login", data={"token": TOKEN, "csrf_token": csrf_token_of(first.text)},
                               headers={"Origin": "https://127.0.0.1"}, follow_redirects=False)
        assert response.status_code == 303 and "; secure" in response.headers["set-cookie"].lower()


# --------------------------------------------------------------------------- Host allow-list

@slow
def test_hosts_outside_the_allow_list_get_400(review_dataset, tmp_path, open_app):
    with review_client(open_app) as client:
        assert client.get("/healthz", headers={"Host": "attacker.example"}).status_code == 400  # DNS rebinding
        assert client.get("/cases", headers={"Host": "attacker.example:8000"}).status_code == 400
        assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "[::1]:8000"}).status_code == 200
    settings = ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "net", host="10.1.2.3", token=TOKEN,
                              allowed_hosts=["study.example.org"])
    with review_client(create_app(settings)) as client:
        for host, status in (("10.1.2.3:8000", 200), ("study.example.org", 200), ("evil.example.org", 400)):
            assert client.get("/healthz", headers={"Host": host}).status_code == status, host
    assert allowed_hosts("0.0.0.0", ["::1", "Study.Example.org"]) == ["127.0.0.1", "localhost", "[::1]",
                                                                     "study.example.org"]
    for bad in ("*", "http://x.org", "x.org:8000", "a/b"):
        with pytest.raises(ConfigError, match="--allowed-host"):
            allowed_hosts("127.0.0.1", [bad])
    assert same_origin("https://study.example.org", "study.example.org")
    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not same_origin("http://127.0.0.1:8001", "127.0.0.1:8000")
    assert not same_origin("http://evil.example", "127.0.0.1:8000") and not same_origin("null", "127.0.0.1:8000")


# --------------------------------------------------------------------------- body limits

@slow
def test_json_and_form_bodies_over_the_limit_get_413(review_dataset, tmp_path):
    settings = ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app", token=TOKEN,
                              studies=[_study_yaml(tmp_path / "study.yaml")], max_body_bytes=64 * 1024)
    app = create_app(settings)
    with review_client(app, sign_in=False) as client:
        assert client.post("/study/tiny/signin", data={"name": "alice", "token": READER_TOKEN}).status_code == 200
        big = {"answer": {"free_text": "x" * 100_000}}
        response = client.post("/study/tiny/api/readings/1", json=big)
        assert response.status_code == 413 and "larger than the limit" in response.json()["error"]

        def chunks():  # no Content-Length: the limit holds for a streamed body too
            for _ in range(100):
                yield b"[" * 1024

        streamed = client.post("/study/tiny/api/readings/1", content=chunks(),
                               headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413
        form = client.post("/login", data={"token": "t" * 100_000})
        assert form.status_code == 413
        small = client.post("/study/tiny/api/readings/1", json={"answer": {"free_text": "fine"}})
        assert small.status_code == 200 and small.json()["saved"]


# --------------------------------------------------------------------------- sign-in throttle

@slow
def test_wrong_tokens_are_throttled_with_429(study_app):
    state = study_app.state.review
    clock = [1000.0]
    state.limiter.clock = lambda: clock[0]
    with review_client(study_app, sign_in=False) as client:
        for _ in range(5):
            assert client.post("/login", data={"token": "wrong-token-00000"}).status_code == 403
        locked = client.post("/login", data={"token": TOKEN}, follow_redirects=False)  # even the right one
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) == 60
        assert "too many wrong tokens" in locked.text
        assert client.get(f"/cases?token={TOKEN}", follow_redirects=False).status_code == 429  # the launch URL too
        # Each study form counts on its own.
        for _ in range(5):
            assert client.post("/study/tiny/signin", data={"name": "a", "token": "nope"}).status_code == 403
        assert client.post("/study/tiny/signin", data={"name": "a", "token": READER_TOKEN}).status_code == 429
        assert client.post("/study/tiny/admin/login", data={"token": ADMIN_TOKEN},
                           follow_redirects=False).status_code == 303
        clock[0] += 61  # the minute has passed
        assert client.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303


def test_login_limiter_counts_per_client_and_per_form():
    clock = [0.0]
    limiter = LoginLimiter(per_client=3, per_form=5, window_s=60.0, clock=lambda: clock[0])
    for _ in range(3):
        limiter.failed("review", "10.0.0.1")
    assert limiter.retry_after("review", "10.0.0.1") == 60
    assert limiter.retry_after("review", "10.0.0.2") is None and limiter.retry_after("study", "10.0.0.1") is None
    limiter.failed("review", "10.0.0.2")
    limiter.failed("review", "10.0.0.3")
    assert limiter.retry_after("review", "10.0.0.4") == 60  # five failures on the form from anyone
    clock[0] = 30.0
    assert limiter.retry_after("review", "10.0.0.1") == 30
    clock[0] = 60.5
    assert limiter.retry_after("review", "10.0.0.1") is None
    limiter.failed("review", "10.0.0.1")
    limiter.succeeded("review", "10.0.0.1")
    assert limiter.retry_after("review", "10.0.0.1") is None


# --------------------------------------------------------------------------- tokens at start-up

@slow
def test_weak_tokens_stop_the_start(review_dataset, tmp_path, capsys):
    with pytest.raises(ConfigError, match="at least 16 characters"):
        create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "a", token="fifteen-chars-x"))
    assert main(["review", "--data", str(review_dataset), "--app-dir", str(tmp_path / "b"), "--token", "short"]) == 2
    assert "--token / CARDIACNETS_REVIEW_TOKEN" in capsys.readouterr().err
    weak = _study_yaml(tmp_path / "weak.yaml", reader_token="reader-token-1")
    with pytest.raises(ConfigError, match=re.escape(f"{weak}: reader_token: the token must have at least 16")):
        create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "c", token=TOKEN, studies=[weak]))
    same = _study_yaml(tmp_path / "same.yaml", admin_token=TOKEN)
    with pytest.raises(ConfigError, match="admin_token must differ from the review token"):
        create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "d", token=TOKEN, studies=[same]))
    demo = _study_yaml(tmp_path / "demo.yaml", reader_token="demo-reader-token", admin_token="demo-admin-token")
    with pytest.raises(ConfigError, match="published demo token"):
        create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "e", host="10.1.2.3", token=TOKEN,
                                  studies=[demo]))
    create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "f", token=TOKEN, studies=[demo]))


@slow
def test_launch_url_carries_the_token_made_for_this_launch(review_dataset, tmp_path, monkeypatch, capsys):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append((app, kwargs)))
    monkeypatch.delenv("CARDIACNETS_REVIEW_TOKEN", raising=False)
    assert main(["review", "--data", str(review_dataset), "--app-dir", str(tmp_path / "a"), "--port", "8123"]) == 0
    (app, kwargs), = served
    token = app.state.review.token
    assert app.state.review.token_generated and len(token) >= 40 and kwargs["host"] == "127.0.0.1"
    out = capsys.readouterr().out
    assert f"review: open http://127.0.0.1:8123/cases?token={token} " in out
    assert main(["review", "--data", str(review_dataset), "--app-dir", str(tmp_path / "a"), "--port", "8123"]) == 0
    assert served[1][0].state.review.token != token  # a new token per launch
    assert main(["review", "--data", str(review_dataset), "--app-dir", str(tmp_path / "a"), "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert "review: open http://127.0.0.1:8000/cases (sign in with the token)" in out and TOKEN not in out


# --------------------------------------------------------------------------- no 500s

@slow
def test_hostile_input_gets_4xx_never_500(study_app):
    with review_client(study_app, sign_in=False) as anonymous:
        response = anonymous.post("/study/a%20b/signout")  # issue 17: this was a 500
        assert response.status_code == 404 and "no such study" in response.text
        del anonymous.headers["X-CSRF-Token"]
        assert anonymous.post("/study/a%20b/signout").status_code == 404
    with review_client(study_app, token=TOKEN) as client:
        assert client.post("/study/tiny/signin", data={"name": "alice", "token": READER_TOKEN}).status_code == 200
        answers = [b"[" * 200_000, b"\xff\xfe", b'{"answer": [1]}', b'{"answer": {"diagnosis": [1]}}',
                   b'{"answer": {"diagnosis": {"a": 1}}}', b'{"answer": {"free_text": "\\ud800"}}',
                   b'{"answer": {}, "active_ms": "abc", "visit": "f00dfeedf00dfeed"}',
                   b'{"answer": {}, "active_ms": 1e400, "visit": "f00dfeedf00dfeed"}',
                   b'{"answer": {}, "active_ms": 5, "visit": ["x"]}', b'{"answer": {"confidence": 1e9}}', b'"x"',
                   b"null"]
        for body in answers:
            response = client.post("/study/tiny/api/readings/1", content=body,
                                   headers={"Content-Type": "application/json"})
            assert 400 <= response.status_code < 500, (body[:40], response.text)
        form = {"diagnosis": "normal", "active_ms": "²", "visit": "not a visit!"}
        assert client.post("/study/tiny/readings/1", data=form).status_code == 422
        files = {"diagnosis": ("d.txt", io.BytesIO(b"normal"))}
        assert client.post("/study/tiny/readings/1", files=files).status_code == 422
        requests = [("get", "/cases?page=abc"), ("get", "/cases?page=99999999999999999999"),
                    ("get", "/cases/%00%ff"), ("get", "/study/tiny/readings/abc"),
                    ("get", "/study/tiny/readings/-99999999999999999999"), ("get", "/study/%2e%2e/admin"),
                    ("get", "/media/x/real/sa.png"), ("get", "/login?next=/%09/evil.example"),
                    ("post", "/upload"), ("post", "/cases/zzz/review"), ("post", "/api/cases/zzz/generate/sa"),
                    ("get", "/api/jobs/%00"), ("get", "/fragments/u000/predictions"),
                    ("get", "/study/tiny/readings/1/ecg.svg/x")]
        for method, path in requests:
            response = getattr(client, method)(path, follow_redirects=False)
            assert response.status_code < 500, (path, response.status_code)
        assert "/%09/evil" not in client.get("/login?next=/%09/evil.example").text
        text_as_file = client.post("/upload", data={"ecg": "not a file"})
        assert text_as_file.status_code == 400 and "choose an ECG file" in text_as_file.text


# --------------------------------------------------------------------------- files

@slow
def test_databases_and_secret_are_owner_only(review_dataset, tmp_path):
    app_dir = tmp_path / "runs" / "review"
    app = create_app(ReviewSettings(data_dir=review_dataset, app_dir=app_dir, token=TOKEN,
                                    studies=[_study_yaml(tmp_path / "study.yaml")]))
    with review_client(app) as client:
        client.post(f"/cases/{subject_key('1000001')}/review", data={"reviewed": "yes", "note": "n"})
        client.post("/study/tiny/signin", data={"name": "alice", "token": READER_TOKEN})
    files = [app_dir / "secret.key", app_dir / "review.sqlite", app_dir / "studies" / "tiny.sqlite"]
    files += [p for p in app_dir.rglob("*.sqlite-*")]  # WAL files, when SQLite keeps them
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(app_dir.stat().st_mode) == 0o700
    # Files made by an older version are tightened at the next start.
    (app_dir / "review.sqlite").chmod(0o644)
    (app_dir / "secret.key").chmod(0o644)
    create_app(ReviewSettings(data_dir=review_dataset, app_dir=app_dir, token=TOKEN))
    assert stat.S_IMODE((app_dir / "review.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((app_dir / "secret.key").stat().st_mode) == 0o600
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by every user"):
        create_app(ReviewSettings(data_dir=review_dataset, app_dir=shared))


# --------------------------------------------------------------------------- manifest paths

def test_relative_source_files_resolve_against_the_data_set_and_raw_folders(tmp_path, monkeypatch):
    data_dir, raw = tmp_path / "work" / "dataset", tmp_path / "work" / "runs" / "cohort"
    for path in (data_dir / "ecg" / "a.xml", raw / "ecg" / "b.xml", tmp_path / "elsewhere" / "c.xml"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<x/>")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert resolve_source_file("ecg/a.xml", data_dir, str(raw)) == data_dir / "ecg" / "a.xml"
    assert resolve_source_file("runs/cohort/ecg/b.xml", data_dir, str(raw)) == raw / "ecg" / "b.xml"
    assert resolve_source_file("ecg/b.xml", data_dir, str(raw)) == raw / "ecg" / "b.xml"
    assert resolve_source_file("c.xml", data_dir, str(raw)) == tmp_path / "elsewhere" / "c.xml"
    assert resolve_source_file(str(raw / "ecg" / "b.xml"), data_dir) == raw / "ecg" / "b.xml"
    assert resolve_source_file("missing.xml", data_dir, str(raw)) == data_dir / "missing.xml"
    assert resolve_source_file(float("nan"), data_dir) is None


@slow
def test_predictions_find_relative_ecg_files_from_any_folder(review_dataset, tmp_path, monkeypatch):
    # As if preprocess had run in the raw folder's parent's parent: paths like review_data0/raw/ecg/x.xml.
    data_dir = tmp_path / "copy" / "dataset"
    shutil.copytree(review_dataset, data_dir)
    raw = Path(yaml.safe_load((data_dir / "dataset.yaml").read_text())["raw"])
    manifest = pd.read_csv(data_dir / "manifest.csv", dtype={"subject_id": str})
    manifest["ecg_file"] = [str(Path(f).relative_to(raw.parent.parent)) for f in manifest["ecg_file"]]
    manifest.to_csv(data_dir / "manifest.csv", index=False)
    monkeypatch.chdir(tmp_path)  # not where preprocess ran
    app = create_app(ReviewSettings(data_dir=data_dir, app_dir=tmp_path / "app"), _models())
    with review_client(app) as client:
        job = client.post(f"/api/cases/{subject_key('1000002')}/predict").json()
        deadline = time.time() + 30
        while job["state"] not in ("done", "failed"):
            assert time.time() < deadline
            time.sleep(0.05)
            job = client.get(f"/api/jobs/{job['job_id']}").json()
        assert job["state"] == "done", job
        assert "LV ejection fraction" in client.get("/cases/1000002").text


# --------------------------------------------------------------------------- the shipped demo study

def test_shipped_demo_study_runs_on_the_demo_cohort(tmp_path, capsys):
    """`cardiacnets study check configs/demo/study.yaml` on the demo cohort's labels and splits.

    Rendering and preprocessing 600 subjects takes minutes, but a subject's diagnoses
    and split depend only on its drawn physiology (cheap) and its id: this draws the
    demo's subjects (configs/demo/demo.yaml: n_subjects, seed), maps their ICD-10
    codes with preprocess's default map and splits them with configs/demo/preprocess.yaml
    and the demo's preprocess overrides, as `cardiacnets demo` does, and checks the study
    on that manifest.
    """
    from cardiacnets.config import load_config
    from cardiacnets.data.labels import ICD10Mapper
    from cardiacnets.data.preprocess import PreprocessConfig
    from cardiacnets.data.splits import assign_split
    from cardiacnets.simulate.cohort import EID_START, subject_rngs
    from cardiacnets.simulate.physiology import SynthConfig, icd10_codes, sample_physiology

    demo = yaml.safe_load((REPO_ROOT / "configs/demo/demo.yaml").read_text())
    split = load_config(PreprocessConfig, REPO_ROOT / "configs/demo/preprocess.yaml",
                        demo.get("preprocess_overrides", [])).split
    mapper, rows = ICD10Mapper(), []
    for index in range(demo["n_subjects"]):
        eid = str(EID_START + index)
        phys = sample_physiology(EID_START + index, subject_rngs(demo["seed"], index)[0], SynthConfig())
        labels = {f"label_{k}": v for k, v in mapper(icd10_codes(phys)).items()}
        rows.append({"subject_id": eid, "split": assign_split(eid, split), "has_ecg": True, "has_sa": True, **labels})
    manifest = pd.DataFrame(rows)
    test = manifest[manifest["split"] == "test"]
    assert len(test) == 250 and int(test["label_coronary_artery_disease"].sum()) == 22  # enough for per_choice up to 22
    data = tmp_path / "data"
    data.mkdir()
    manifest.to_csv(data / "manifest.csv", index=False)
    (data / "dataset.yaml").write_text(yaml.safe_dump({"format_version": 1, "arrays": []}))
    assert main(["study", "check", str(REPO_ROOT / "configs/demo/study.yaml"), "--data", str(data), "--json"]) == 0
    checked = yaml.safe_load(capsys.readouterr().out)
    truths = [set(c["truth"]) for c in checked["cases"]]
    assert len(truths) == 4 and {"coronary_artery_disease"} in truths and {"normal"} in truths
