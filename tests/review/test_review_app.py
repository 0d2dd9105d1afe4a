"""Tests of the review app over HTTP (FastAPI's TestClient, no browser): the case list
and its filters, case pages with and without models, background generation and its
cache, predictions, uploads (accepted formats, limits, hostile zips), tokens and
sessions, blinding of reader studies, and ``cardiacnets review`` itself."""

from __future__ import annotations

import base64
import io
import os
import re
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cardiacnets.cli import main
from cardiacnets.data.store import TrainingSet
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.review.app import ReviewSettings, _prediction_rows, create_app, reference_ranges, subject_key
from cardiacnets.review.jobs import JobRunner, ReviewModels, folder_key
from cardiacnets.review.uploads import store_upload

from support.marking import assert_gif_marked, assert_not_marked, assert_png_marked
from support.review import fake_predict, FakeCinePipeline, free_socket, review_client

pytestmark = pytest.mark.slow  # the shared simulated data set takes ~20 s to build

TOKEN = "review-token-0001"
READER_TOKEN = "reader-token-0001"
ADMIN_TOKEN = "admin-token-00001"


def _wait_job(client, job: dict, timeout_s: float = 30.0) -> dict:
    deadline = time.time() + timeout_s
    while job["state"] not in ("done", "failed"):
        assert time.time() < deadline, job
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['job_id']}").json()
    return job


@pytest.fixture()
def plain_app(review_dataset, tmp_path):
    """The app over the data set alone (no model), on loopback without a token."""
    return create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app"))


def _fake_models(**kwargs) -> ReviewModels:
    return ReviewModels(generators={"sa": FakeCinePipeline(**kwargs)}, predictor=fake_predict, key="fake")


def test_case_list_search_filters_and_pages(plain_app):
    with review_client(plain_app) as client:
        listed = lambda query="": re.findall(r'href="/cases/(\d+)"', client.get("/cases" + query).text)  # noqa: E731
        assert listed() == [str(1000001 + i) for i in range(8)]
        assert listed("?label=label_cardiomyopathy") == ["1000004", "1000005", "1000007"]
        assert listed("?label=none") == ["1000002", "1000006", "1000008"]
        assert listed("?q=I25") == ["1000001", "1000003"]  # ICD-10 search
        assert listed("?q=0005") == ["1000005"]
        splits = {sid: client.get(f"/cases/{sid}").text for sid in listed()}
        assert listed("?split=train") == [s for s, page in splits.items() if "<dt>Split</dt><dd>train</dd>" in page]
        key = subject_key("1000004")
        client.post(f"/cases/{key}/review", data={"reviewed": "yes", "note": "checked <b>"})
        assert listed("?reviewed=yes") == ["1000004"]
        assert "1000004" not in listed("?reviewed=no") and len(listed("?reviewed=no")) == 7
        page = client.get("/cases/1000004").text
        assert "checked &lt;b&gt;" in page and "checked <b>" not in page
    paged = create_app(ReviewSettings(data_dir=plain_app.state.review.settings.data_dir,
                                      app_dir=plain_app.state.review.app_dir, cases_per_page=3))
    with review_client(paged) as client:
        page2 = client.get("/cases?page=2&label=").text
        assert re.findall(r'href="/cases/(\d+)"', page2) == ["1000004", "1000005", "1000006"]
        assert "page 2 of 3" in page2 and 'href="/cases?page=3"' in page2


def test_case_page_without_a_model_shows_ecg_and_real_cines(plain_app):
    with review_client(plain_app) as client:
        response = client.get("/cases/1000007")
        assert response.status_code == 200
        page = response.text
        assert "No model given (--model)" in page and "no predictions" in page
        assert "SYNTHETIC" not in page
        key = subject_key("1000007")
        svg = client.get(f"/media/{key}/ecg.svg")
        assert svg.headers["content-type"] == "image/svg+xml" and b'id="lead-II-rhythm"' in svg.content
        real = client.get(f"/media/{key}/real/sa.png")
        assert real.headers["x-frames"] == "25"
        sheet = np.asarray(Image.open(io.BytesIO(real.content)))
        assert sheet.shape == (192, 25 * 192)
        assert client.get(f"/media/{key}/real/la_4ch.gif").headers["content-type"] == "image/gif"
        assert_not_marked(real.content)  # a real cine: no SYNTHETIC label, no synthetic metadata
        assert_not_marked(client.get(f"/media/{key}/real/sa.gif").content)
        assert client.get(f"/media/{key}/generated/sa.png").status_code == 404
        assert client.get("/cases/9999999").status_code == 404
        assert client.get("/media/dffff/real/sa.png").status_code == 404
        headers = client.get("/cases").headers
        assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"


def test_generation_runs_in_the_background_and_is_cached(review_dataset, tmp_path):
    settings = ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app")
    pipeline = FakeCinePipeline(step_delay_s=0.01)
    models = ReviewModels(generators={"sa": pipeline}, predictor=fake_predict, key="fake")
    key = subject_key("1000004")
    with review_client(create_app(settings, models)) as client:
        page = client.get("/cases/1000004").text
        assert f'data-start-url="/api/cases/{key}/generate/sa"' in page  # the page starts the job
        job = client.post(f"/api/cases/{key}/generate/sa").json()
        assert job["state"] in ("queued", "running") and job["ready_url"] == f"/media/{key}/generated/sa.png"
        again = client.post(f"/api/cases/{key}/generate/sa").json()
        assert again["job_id"] == job["job_id"]  # one job per case, model and seed
        seen = []
        while job["state"] not in ("done", "failed"):
            time.sleep(0.02)
            job = client.get(f"/api/jobs/{job['job_id']}").json()
            seen.append(job["progress"])
        assert job["state"] == "done", job
        assert any(p is not None and 0 < p < 1 for p in seen)  # step progress through callback_on_step_end
        generated = client.get(f"/media/{key}/generated/sa.png")
        assert generated.status_code == 200 and generated.headers["x-frames"] == "25"
        page = client.get("/cases/1000004").text
        assert "Generated short-axis cine (SYNTHETIC)" in page and 'class="synthetic-badge">SYNTHETIC' in page
        # The stamp is in the pixels: the top-left corner differs from an unstamped rendering.
        from cardiacnets.review import render

        cached = sorted((tmp_path / "app" / "cache" / "generated").rglob("*.npy"))
        assert len(cached) == 1 and cached[0].name == f"{key}_sa_seed0_steps25_cfgdefault.npy"
        plain = render.cine_sprite_png(np.load(cached[0]).astype(np.float32), scale=3)
        assert generated.content != plain
        # Read back: the label in every frame, and the metadata, of the PNG and the GIF.
        sheet = assert_png_marked(generated.content, frame_width=192)
        assert sheet.shape == (192, 25 * 192)
        assert len(assert_gif_marked(client.get(f"/media/{key}/generated/sa.gif").content)) == 25
        assert_not_marked(client.get(f"/media/{key}/real/sa.png").content)
        job = _wait_job(client, client.post(f"/api/cases/{key}/predict").json())
        fragment = client.get(f"/fragments/{key}/predictions").text
        assert "LV ejection fraction" in fragment and "38.5 %" in fragment and "51–74 %" in fragment
        assert 'class="tag warn">low' in fragment and "cardiomyopathy" in fragment
        assert "120.0–185.0 ml" in fragment  # the heads' 95 % prediction interval
        assert "V1: high-frequency noise" in fragment and "<b>dilated</b>" in fragment
    assert pipeline.calls == 1
    # A restart finds the cache: no new job, no new call.
    with review_client(create_app(settings, models)) as client:
        job = client.post(f"/api/cases/{key}/generate/sa").json()
        assert job["state"] == "done" and "job_id" not in job
        page = client.get("/cases/1000004").text
        assert "LV mass" in page and "data-start-url" not in page
    assert pipeline.calls == 1


class RecordingPipeline:
    """A real pipeline whose calls are recorded (what the app passed), answering like the pipeline itself."""

    def __init__(self, pipe):
        self.pipe, self.calls, self.steps_seen = pipe, [], []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        callback = kwargs["callback_on_step_end"]

        def record(pipe, step, timestep, callback_kwargs):
            self.steps_seen.append((step, callback_kwargs.get("stage")))
            return callback(pipe, step, timestep, callback_kwargs)

        return self.pipe(**{**kwargs, "callback_on_step_end": record})


def test_generation_with_a_real_pipeline_passes_demographics_and_reports_steps(review_dataset, tmp_path):
    """The review app generates through the same request path as the command line: the stored ECG with the
    manifest's demographics, and step progress from the real pipeline's callback_on_step_end."""
    from cardiacnets.generation.zoo import untrained_pipeline

    pipe = untrained_pipeline(denoiser_overrides={"n_demographics": 2, "block_out_channels": [16, 32],
                                                  "norm_num_groups": 8, "cross_attention_dim": 16,
                                                  "condition_dim": 16},
                              vae_overrides={"block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4})
    pipe.register_to_config(demographics={"columns": ["age_years", "sex_male"], "mean": [60.0, 0.5],
                                          "std": [8.0, 0.5]}, precision="fp32")
    recording = RecordingPipeline(pipe)
    settings = ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app")
    settings.generation.num_inference_steps = 3
    models = ReviewModels(generators={"sa": recording}, key="real")
    key = subject_key("1000004")
    with review_client(create_app(settings, models)) as client:
        job = _wait_job(client, client.post(f"/api/cases/{key}/generate/sa").json(), timeout_s=120)
        assert job["state"] == "done", job
        assert client.get(f"/media/{key}/generated/sa.png").headers["x-frames"] == "25"
    call = recording.calls[0]
    manifest = TrainingSet(review_dataset).manifest.set_index("subject_id")
    age, sex = float(manifest.loc["1000004", "age_years"]), float(manifest.loc["1000004", "sex_male"])
    assert call["demographics_mask"].tolist() == [[True, True]]
    np.testing.assert_allclose(call["demographics"].numpy(), [[(age - 60.0) / 8.0, (sex - 0.5) / 0.5]], rtol=1e-5)
    assert call["ecg"].shape == (1, 12, 2500) and "guidance_scale" not in call  # the pipeline's own default
    assert recording.steps_seen == [(0, None), (1, None), (2, None)]  # every denoising step reported


def test_failed_generation_is_reported(review_dataset, tmp_path):
    class Broken(FakeCinePipeline):
        def __call__(self, *args, **kwargs):
            raise RuntimeError("out of memory")

    models = ReviewModels(generators={"sa": Broken()}, key="broken")
    with review_client(create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app"), models)) as client:
        job = _wait_job(client, client.post(f"/api/cases/{subject_key('1000001')}/generate/sa").json())
        assert job["state"] == "failed" and job["message"] == "RuntimeError: out of memory"
        page = client.get("/cases/1000001").text
        assert "No model given" not in page and "The model has no heads" in page
        assert f'data-start-url="/api/cases/{subject_key("1000001")}/generate/sa"' in page  # the page may retry


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_uploads_are_parsed_generated_and_stored_under_generated_names(review_dataset, tmp_path, ukb_xml_path,
                                                                      ptbxl_dir):
    app_dir = tmp_path / "app"
    models = _fake_models()
    with review_client(create_app(ReviewSettings(data_dir=review_dataset, app_dir=app_dir), models)) as client:
        response = client.post("/upload", files={"ecg": ("../../../etc/passwd.xml", ukb_xml_path.read_bytes())},
                               follow_redirects=False)
        assert response.status_code == 303
        url = response.headers["location"]
        upload_id = url.rsplit("/", 1)[1]
        assert re.fullmatch(r"/uploads/[0-9a-f]{24}", url)
        stored = sorted(p.relative_to(app_dir / "uploads").as_posix() for p in (app_dir / "uploads").rglob("*"))
        assert stored == [upload_id, f"{upload_id}/ecg.xml"]  # the client's name is display text only
        page = client.get(url).text
        assert "passwd.xml" in page and "Uploaded ECG" in page and "etc/passwd" not in page
        key = "u" + upload_id
        assert b"lead-V6" in client.get(f"/media/{key}/ecg.svg").content
        job = _wait_job(client, client.post(f"/api/cases/{key}/generate/sa").json())
        assert job["state"] == "done"
        assert client.get(f"/media/{key}/generated/sa.png").status_code == 200
        _wait_job(client, client.post(f"/api/cases/{key}/predict").json())
        assert "LV end-diastolic volume" in client.get(url).text
        assert "passwd.xml" in client.get("/cases").text  # listed under uploads

        record = ptbxl_dir / "records500" / "00000" / "00001_hr"
        wfdb_zip = _zip({"rec/00001_hr.hea": record.with_suffix(".hea").read_bytes(),
                         "rec/00001_hr.dat": record.with_suffix(".dat").read_bytes()})
        response = client.post("/upload", files={"ecg": ("ptbxl 1.zip", wfdb_zip)}, follow_redirects=False)
        assert response.status_code == 303
        page = client.get(response.headers["location"]).text
        assert "ptbxl 1.zip" in page and "WFDB record" in page

        def refused(name, data):
            response = client.post("/upload", files={"ecg": (name, data)}, follow_redirects=False)
            return response.status_code, re.search(r'<p class="error" role="alert">(.*?)</p>', response.text).group(1)

        hea = record.with_suffix(".hea").read_bytes()
        assert refused("ecg.pkl", b"\x80\x04data") == (400, "ecg.pkl: unsupported file type; upload UK Biobank ECG "
                                                       "XML or WFDB record in a .zip (.hea with .dat or .mat)")
        assert refused("bad.xml", b"<CardiologyXML><broken")[0] == 400
        assert "bad.xml:" in refused("bad.xml", b"<CardiologyXML><broken")[1]
        assert "document type" in refused("x.xml", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>')[1]
        assert "unsafe path" in refused("t.zip", _zip({"../../evil.hea": hea}))[1]
        assert "only WFDB files" in refused("t.zip", _zip({"run.sh": b"rm -rf /"}))[1]
        assert "exactly one WFDB header" in refused("t.zip", _zip({"a.hea": hea, "b.hea": hea}))[1]
        assert "not a zip file" in refused("t.zip", b"PK-but-not-really")[1]
        assert "header" in refused("t.zip", _zip({"00001_hr.hea": hea}))[1]  # the signal file is missing
        link = zipfile.ZipInfo("00001_hr.dat")
        link.external_attr = (0o120777 << 16)  # a symbolic link
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("00001_hr.hea", hea)
            archive.writestr(link, "/etc/passwd")
        assert "not a regular file" in refused("t.zip", buffer.getvalue())[1]
        assert refused("empty.xml", b"")[1] == "empty.xml: file is empty"
        assert len(list((app_dir / "uploads").iterdir())) == 2  # refused uploads leave nothing behind


def test_upload_header_cannot_reach_files_outside_the_zip(review_dataset, tmp_path, ptbxl_dir, ukb_xml_path):
    # Issue 17: a .hea naming /etc/shadow answered "truncated signal file: 631 bytes" (the real size).
    app_dir = tmp_path / "app"
    record = ptbxl_dir / "records500" / "00000" / "00001_hr"
    hea = record.with_suffix(".hea").read_text()
    dat = record.with_suffix(".dat").read_bytes()
    passwd = Path("/etc/passwd")
    passwd_size = str(passwd.stat().st_size)
    passwd_line = passwd.read_text().splitlines()[0]
    with review_client(create_app(ReviewSettings(data_dir=review_dataset, app_dir=app_dir))) as client:

        def refused(name, data):
            response = client.post("/upload", files={"ecg": (name, data)}, follow_redirects=False)
            assert response.status_code == 400, response.text
            message = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.S).group(1)
            assert "\n" not in message and "Traceback" not in response.text
            return message

        for hostile in ("/etc/passwd", "../x.dat", "../../../../etc/passwd", "..\\x.dat", "~/.ssh/id_rsa"):
            for header in (hea.replace("00001_hr.dat", hostile, 1), hea.replace("00001_hr.dat", hostile)):
                message = refused("hostile.zip", _zip({"00001_hr.hea": header.encode(), "00001_hr.dat": dat}))
                assert message.startswith("hostile.zip: 00001_hr.hea: bad header: line 2: signal 1 file name"), message
                assert "is not a plain file name in the record&#39;s folder" in message, message
                assert passwd_size not in message and passwd_line not in message and "bytes" not in message
                assert str(app_dir) not in message

        # Plain names, but not packed in the zip: refused before anything is read.
        message = refused("other.zip", _zip({"00001_hr.hea": hea.replace("00001_hr.dat", "other.dat").encode(),
                                             "00001_hr.dat": dat}))
        assert message == ("other.zip: WFDB header 00001_hr.hea names &#39;other.dat&#39;, which the zip does not "
                           "hold; pack the header with its signal files")
        message = refused("nan.zip", _zip({"00001_hr.hea": hea.replace("12 500 5000", "12 nan 5000", 1).encode(),
                                           "00001_hr.dat": dat}))
        assert "00001_hr.hea" in message and "not a plausible rate" in message
        message = refused("long.zip", _zip({"00001_hr.hea": hea.replace("12 500 5000", "12 500 6000", 1).encode(),
                                            "00001_hr.dat": dat}))
        assert "truncated signal file 00001_hr.dat" in message and str(app_dir) not in message

        text = ukb_xml_path.read_bytes().decode("latin-1")
        strip = text.index("<StripData>")
        rate = text.index('<SampleRate units="Hz">500</SampleRate>', strip)
        nan_xml = text[:rate] + '<SampleRate units="Hz">NaN</SampleRate>' + text[rate + len('<SampleRate units="Hz">500</SampleRate>'):]
        message = refused("nan.xml", nan_xml.encode("latin-1"))
        assert message.startswith("nan.xml: StripData/SampleRate must be a plausible rate"), message
        assert not (app_dir / "uploads").exists() or not any((app_dir / "uploads").iterdir())  # nothing left behind

        # A normal PTB-XL record (members in a folder, as zip tools write them) is still accepted.
        response = client.post("/upload", files={"ecg": ("ptbxl.zip", _zip({"rec/00001_hr.hea": hea.encode(),
                                                                          "rec/00001_hr.dat": dat}))},
                               follow_redirects=False)
        assert response.status_code == 303
        assert "WFDB record" in client.get(response.headers["location"]).text


def _patch_zip_member(data: bytes, name: str, *, flag_bits: int = 0, method: int | None = None) -> bytes:
    """Set general-purpose flag bits and/or the compression method of one member, in its local and central headers."""
    buffer = bytearray(data)
    # (signature, offset of the flags, offset of the name length, offset of the name); the method follows the flags.
    for signature, flags_at, length_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        position = buffer.find(signature)
        while position >= 0:
            (length,) = struct.unpack_from("<H", buffer, position + length_at)
            if bytes(buffer[position + name_at:position + name_at + length]) == name.encode():
                (flags,) = struct.unpack_from("<H", buffer, position + flags_at)
                struct.pack_into("<H", buffer, position + flags_at, flags | flag_bits)
                if method is not None:
                    struct.pack_into("<H", buffer, position + flags_at + 2, method)
            position = buffer.find(signature, position + 4)
    return bytes(buffer)


def _mat_bomb(n_signals: int, n_samples: int) -> bytes:
    """A MATLAB v5 file whose one (n_signals, n_samples) float64 matrix of zeros is zlib-compressed about 250:1."""
    data_bytes = 8 * n_signals * n_samples
    body = (struct.pack("<IIII", 6, 8, 6, 0)  # array flags: double
            + struct.pack("<IIii", 5, 8, n_signals, n_samples)  # dimensions
            + struct.pack("<II", 1, 3) + b"val\0\0\0\0\0"  # name, padded to 8 bytes
            + struct.pack("<II", 9, data_bytes))  # the real part: float64
    packer = zlib.compressobj(1)
    chunks = [packer.compress(struct.pack("<II", 14, len(body) + data_bytes) + body)]
    zeros = bytes(1 << 22)
    chunks += [packer.compress(zeros) for _ in range(data_bytes >> 22)]
    chunks += [packer.compress(bytes(data_bytes & ((1 << 22) - 1))), packer.flush()]
    packed = b"".join(chunks)
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    return header + struct.pack("<II", 15, len(packed)) + packed


def test_upload_zip_members_that_cannot_be_read_and_parsing_limits(review_dataset, tmp_path, ptbxl_dir,
                                                                   ukb_xml_path):
    # Issue 17: an encrypted member (RuntimeError in zipfile) or an unknown compression method
    # (NotImplementedError) answered 500; a decompression bomb inside a .mat could exhaust the server's memory.
    record = ptbxl_dir / "records500" / "00000" / "00001_hr"
    hea, dat = record.with_suffix(".hea").read_bytes(), record.with_suffix(".dat").read_bytes()
    settings = ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app",
                              upload_parse_memory_bytes=512 * 2**20)
    with review_client(create_app(settings)) as client:

        def refused(name, data):
            response = client.post("/upload", files={"ecg": (name, data)}, follow_redirects=False)
            assert 400 <= response.status_code < 500 and "Traceback" not in response.text, response.text
            message = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.S).group(1)
            assert "\n" not in message and str(tmp_path) not in message
            return message

        deflated = io.BytesIO()
        with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("00001_hr.hea", hea)
            archive.writestr("00001_hr.dat", dat)
        plain = deflated.getvalue()
        assert refused("locked.zip", _patch_zip_member(plain, "00001_hr.dat", flag_bits=0x1)) == (
            "locked.zip: zip member &#39;00001_hr.dat&#39; is encrypted; upload a zip without a password")
        assert refused("odd.zip", _patch_zip_member(plain, "00001_hr.dat", method=99)) == (
            "odd.zip: zip member &#39;00001_hr.dat&#39; uses compression method 99, which cannot be read; "
            "use deflate or no compression")
        start = plain.index(b"PK\x03\x04", 4) + 30 + len("00001_hr.dat")  # the .dat member's compressed bytes
        damaged = plain[:start] + bytes(64) + plain[start + 64:]
        assert refused("damaged.zip", damaged).startswith("damaged.zip: zip member &#39;00001_hr.dat&#39; cannot be "
                                                          "read: ")

        # 12 x 5,000,000 float64 samples: 480 MB once inflated, from 2 MB; the parser may use 512 MB.
        leads = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
        bomb_hea = "bomb 12 500 5000000\n" + "".join(f"bomb.mat 16+24 1000/mV 16 0 0 0 0 {lead}\n" for lead in leads)
        message = refused("bomb.zip", _zip({"bomb.hea": bomb_hea.encode(), "bomb.mat": _mat_bomb(12, 5_000_000)}))
        assert message == "bomb.zip: reading the ECG needs more than 512 MB of memory; refused", message
        # The server is still up and still parses uploads.
        assert client.get("/cases").status_code == 200
        response = client.post("/upload", files={"ecg": ("ok.zip", _zip({"00001_hr.hea": hea, "00001_hr.dat": dat}))},
                               follow_redirects=False)
        assert response.status_code == 303
    assert not any(p.name.startswith("bomb") for p in (tmp_path / "app" / "uploads").rglob("*"))

    settings = ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app2", upload_parse_timeout_s=1e-4)
    with review_client(create_app(settings)) as client:
        response = client.post("/upload", files={"ecg": ("slow.xml", ukb_xml_path.read_bytes())})
        assert response.status_code == 400
        assert "slow.xml: reading the ECG took longer than 0.0001 s; refused" in response.text
        assert client.get("/cases").status_code == 200


def test_upload_size_limit(review_dataset, tmp_path):
    settings = ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app", max_upload_bytes=4096)
    with review_client(create_app(settings)) as client:
        response = client.post("/upload", files={"ecg": ("big.xml", b"<" + b"x" * 200_000)})
        assert response.status_code == 413 and "larger than the limit" in response.text
    with pytest.raises(InputError, match="limit is 0.0 MB"):
        store_upload(tmp_path / "uploads", "a.xml", b"<x/>" * 100, max_bytes=10)


def test_tokens_sessions_and_bind_address(review_dataset, tmp_path):
    with pytest.raises(ConfigError, match="needs a token"):
        create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "a", host="0.0.0.0"))
    with pytest.raises(ConfigError, match="at least 16"):
        create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "a", token="short"))
    app = create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "a", host="0.0.0.0", token=TOKEN))
    with review_client(app, sign_in=False) as client:
        response = client.get("/cases/1000001", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login?next=%2Fcases%2F1000001"
        assert client.get(f"/media/{subject_key('1000001')}/ecg.svg", follow_redirects=False).status_code == 303
        assert client.post("/upload", files={"ecg": ("a.xml", b"<x/>")}).status_code == 401
        assert client.get("/healthz").text == "ok" and client.get("/static/app.js").status_code == 200
        assert client.post("/login", data={"token": "wrong-token", "next": "/cases"}).status_code == 403
        client.cookies.set("cn_review", "eyJrIjoicmV2aWV3In0.Zm9yZ2Vk")  # forged
        assert client.get("/cases", follow_redirects=False).status_code == 303
        response = client.post("/login", data={"token": TOKEN, "next": "//evil.example/x"}, follow_redirects=False)
        assert response.headers["location"] == "/cases"  # no open redirect
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        client.cookies.set("cn_review", response.cookies["cn_review"])
        assert client.get("/cases/1000001").status_code == 200
    # A new token ends old sessions.
    app = create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "a", token="another-token-0001"))
    with review_client(app, sign_in=False) as client:
        client.cookies.set("cn_review", response.cookies["cn_review"])
        assert client.get("/cases", follow_redirects=False).status_code == 303


def _study_yaml(path: Path, **changes) -> Path:
    data = {"name": "tiny", "title": "Tiny study", "seed": 3, "reader_token": READER_TOKEN,
            "admin_token": ADMIN_TOKEN, "readers": ["alice", "bob"],
            "arms": ["ecg_only", "ecg_generated_cmr", "ecg_real_cmr"], "cases": {"ids": ["1000002", "1000007", "1000001"]},
            "questions": {"diagnosis": {"choices": {"normal": None, "cardiomyopathy": "label_cardiomyopathy",
                                                    "coronary_artery_disease": "label_coronary_artery_disease"}}}}
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sign_in(client, name, token=READER_TOKEN):
    return client.post("/study/tiny/signin", data={"name": name, "token": token}, follow_redirects=False)


def test_study_blinding_and_separation_of_readers(review_dataset, tmp_path):
    study = _study_yaml(tmp_path / "study.yaml")
    with pytest.raises(ConfigError, match="needs a review token"):
        create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app", studies=[study]), _fake_models())
    with pytest.raises(ConfigError, match="needs a generator"):
        create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app", studies=[study], token=TOKEN))
    app = create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app", studies=[study], token=TOKEN),
                     _fake_models())
    with review_client(app, sign_in=False) as alice, review_client(app, sign_in=False) as bob:
        assert _sign_in(alice, "alice", "wrong-token").status_code == 403
        assert _sign_in(alice, "mallory").status_code == 403
        assert _sign_in(alice, "alice").status_code == 303
        assert _sign_in(bob, "bob").status_code == 303
        deadline = time.time() + 30  # generated cines are prepared before the first reading
        while not alice.get("/study/tiny/api/preparation").json()["done"]:
            assert time.time() < deadline
            time.sleep(0.05)
        store = app.state.review.studies["tiny"].store
        case_ids = {c.case_id for c in store.cases()}
        for number in range(1, 10):
            page = alice.get(f"/study/tiny/readings/{number}", follow_redirects=False)
            if number > 1:
                assert page.status_code == 303  # no skipping ahead
                break
            text = page.text
            for secret in case_ids | {"ecg_only", "ecg_generated_cmr", "ecg_real_cmr", "SYNTHETIC", "Generated short",
                                      "Real short", "data set", "real CMR", "generated CMR"}:
                assert secret not in text, secret
            assert "may be real or computer-generated" in text
        # Each reader's order is their own, and their cookies only reach their rows.
        order = {r: [(x.case_id, x.arm) for x in store.readings(r)] for r in ("alice", "bob")}
        assert order["alice"] != order["bob"]
        assert alice.post("/study/tiny/api/readings/1", json={"answer": {"diagnosis": "normal"}}).json()["saved"]
        assert "checked" not in bob.get("/study/tiny/readings/1").text.split("Most likely diagnosis")[1].split("</fieldset>")[0]
        assert store.reading("bob", 0).diagnosis is None
        # Image readings look alike whether real or generated: same size and frame count.
        shapes = set()
        for reader, client in (("alice", alice), ("bob", bob)):
            for r in store.readings(reader)[:1]:
                if r.shows_image:
                    response = client.get("/study/tiny/readings/1/sa.png")
                    shapes.add((response.headers["x-frames"], Image.open(io.BytesIO(response.content)).size))
                else:
                    assert client.get("/study/tiny/readings/1/sa.png").status_code == 404
        assert len(shapes) <= 1
        # Readers cannot reach the admin pages, the export or the review pages.
        assert "Admin token" in alice.get("/study/tiny/admin").text and "Accuracy" not in alice.get("/study/tiny/admin").text
        assert alice.get("/study/tiny/admin/export.csv").status_code == 403
        assert alice.get("/study/tiny/admin/summary.json").status_code == 403
        assert alice.get("/cases/1000002", follow_redirects=False).status_code == 303
        assert bob.post("/study/tiny/admin/login", data={"token": READER_TOKEN}).status_code == 403
        # A reader cookie edited to another name is refused.
        body, mac = alice.cookies["cn_study_tiny"].split(".")
        forged = base64.urlsafe_b64encode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).replace(
            b'"alice"', b'"bob"')).rstrip(b"=").decode() + "." + mac
        bob.cookies.clear()
        bob.cookies.set("cn_study_tiny", alice.cookies["cn_study_tiny"])  # the genuine cookie works from anywhere
        assert bob.get("/study/tiny/readings/1", follow_redirects=False).status_code == 200
        bob.cookies.clear()
        bob.cookies.set("cn_study_tiny", forged)
        assert bob.get("/study/tiny/readings/1", follow_redirects=False).headers["location"] == "/study/tiny/"


def test_study_submit_flow_and_admin_export(review_dataset, tmp_path):
    study = _study_yaml(tmp_path / "study.yaml", arms=["ecg_only", "ecg_real_cmr"])
    app = create_app(ReviewSettings(data_dir=review_dataset, app_dir=tmp_path / "app", studies=[study], token=TOKEN))
    store = app.state.review.studies["tiny"].store
    with review_client(app, sign_in=False) as client:
        assert _sign_in(client, "alice").headers["location"] == "/study/tiny/readings/1"
        truth = {c.case_id: c.truth[0] for c in store.cases()}
        for number in range(1, 7):
            reading = store.reading("alice", number - 1)
            page = client.post(f"/study/tiny/readings/{number}", data={"diagnosis": truth[reading.case_id]})
            assert page.status_code == 422 and "please answer: confidence" in page.text  # nothing lost though
            assert store.reading("alice", number - 1).diagnosis == truth[reading.case_id]
            fields = {"confidence": "4", "visit": "f" * 32, "active_ms": "2000"}
            if reading.shows_image:
                fields["realism"] = "5"
            response = client.post(f"/study/tiny/readings/{number}", data=fields, follow_redirects=False)
            assert response.status_code == 303
            assert response.headers["location"] == ("/study/tiny/done" if number == 6 else f"/study/tiny/readings/{number + 1}")
        locked = client.post("/study/tiny/api/readings/1", json={"answer": {"diagnosis": "normal"}})
        assert locked.status_code == 409
        assert "You have submitted all 6 readings" in client.get("/study/tiny/done").text
        assert 'disabled' in client.get("/study/tiny/readings/2").text  # earlier readings are read-only
        assert client.post("/study/tiny/admin/login", data={"token": ADMIN_TOKEN}, follow_redirects=False).status_code == 303
        summary = client.get("/study/tiny/admin/summary.json").json()
        assert summary["per_arm"]["ecg_only"]["accuracy"] == 1.0 and summary["n_submitted"] == 6
        assert "McNemar exact p" in client.get("/study/tiny/admin").text
        export = client.get("/study/tiny/admin/export.csv")
        assert export.headers["content-type"].startswith("text/csv")
        lines = export.text.splitlines()
        assert len(lines) == 7 and all(line.split(",")[10] == "2.0" for line in lines[1:])  # active seconds


def test_review_command_refuses_bad_settings(review_dataset, tmp_path, capsys):
    assert main(["review", "--data", str(review_dataset), "--host", "0.0.0.0", "--app-dir", str(tmp_path)]) == 2
    assert "needs a token" in capsys.readouterr().err
    assert main(["review", "--data", str(tmp_path / "nothing"), "--app-dir", str(tmp_path)]) == 2
    assert "not a cardiacnets training set" in capsys.readouterr().err
    assert main(["review", "--data", str(review_dataset), "--model", str(tmp_path), "--app-dir", str(tmp_path / "x")]) == 2
    assert "holds none of generator/" in capsys.readouterr().err


def test_review_command_serves(review_dataset, tmp_path):
    import http.cookiejar
    from urllib.parse import parse_qs, urlsplit

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "CARDIACNETS_REVIEW_TOKEN": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "cardiacnets.cli", "review", "--data", str(review_dataset), "--port", str(port),
         "--app-dir", str(tmp_path / "app")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    lines = []
    try:
        while not any("review: open" in line for line in lines):  # printed before the server starts
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        url = re.search(r"review: open (\S+)", lines[-1]).group(1)
        token = parse_qs(urlsplit(url).query)["token"][0]  # a token made for this launch, in the URL
        assert len(token) >= 32
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.read() == b"ok"
                break
            except OSError:
                assert process.poll() is None, "".join(lines) + process.stdout.read()
                assert time.time() < deadline
                time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError):  # no token, no page (the sign-in form is not the page)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/cases/1000003?token=wrong", timeout=10):
                pass
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with browser.open(f"http://127.0.0.1:{port}/cases/1000003?token={token}", timeout=10) as response:
            assert b"Subject 1000003" in response.read()
            assert response.url == f"http://127.0.0.1:{port}/cases/1000003"  # the token left the address bar
        with browser.open(f"http://127.0.0.1:{port}/cases/1000004", timeout=10) as response:
            assert b"Subject 1000004" in response.read()  # the session cookie signs in from then on
    finally:
        process.terminate()
        output = "".join(lines) + process.communicate(timeout=20)[0]
    assert f"review: open http://127.0.0.1:{port}/cases" in output
    assert f"review: open http://127.0.0.1:{port}/cases?token={token} " in output


def test_job_runner_priorities_progress_and_retries():
    runner = JobRunner()
    done, gate = [], __import__("threading").Event()

    def work(name, fail=False):
        def run(progress):
            gate.wait(5)
            progress(0.5, f"{name} half way")
            if fail:
                raise InputError(name, "broken input")
            done.append(name)
        return run

    first = runner.submit("a", "generate", work("a"), priority=10)
    low = runner.submit("b", "generate", work("b"), priority=20)
    high = runner.submit("c", "predict", work("c"), priority=1)
    broken = runner.submit("d", "predict", work("d", fail=True), priority=5)
    assert runner.submit("a", "generate", work("a2")) is first  # one job per key
    assert runner.queue_position(low) == 3 and runner.queue_position(high) == 0
    runner.start()
    gate.set()
    deadline = time.time() + 10
    while any(j.state in ("queued", "running") for j in (first, low, high, broken)):
        assert time.time() < deadline
        time.sleep(0.01)
    runner.stop()
    assert done == ["c", "a", "b"]  # priority, then submission order
    assert (broken.state, broken.message, broken.progress) == ("failed", "d: broken input", 0.5)
    assert first.as_dict()["progress"] == 1.0 and "run" not in first.as_dict()
    assert runner.submit("d", "predict", work("d"), retry_failed=False) is broken  # a poller does not retry
    assert runner.submit("d", "predict", work("d")) is not broken  # a user does


def test_model_folder_layout(tmp_path):
    (tmp_path / "run" / "heads").mkdir(parents=True)
    (tmp_path / "run" / "heads" / "config.json").write_text("{}")
    models = ReviewModels(tmp_path / "run")
    assert models.generator_views == [] and models.has_heads
    assert models.describe() == {"run_dir": str(tmp_path / "run"), "generator_views": [], "heads": True, "any": True}
    key = folder_key(tmp_path / "run" / "heads")
    assert models.key("heads") == key and len(key) == 16
    (tmp_path / "run" / "heads" / "config.json").write_text('{"changed": 1}')
    assert folder_key(tmp_path / "run" / "heads") != key  # retrained heads get a new cache key
    (tmp_path / "run" / "generator_la_4ch").mkdir()
    assert ReviewModels(tmp_path / "run").generator_views == ["la_4ch"]
    with pytest.raises(InputError, match="no such model folder"):
        ReviewModels(tmp_path / "missing")


def test_reference_ranges_and_prediction_rows_by_hand():
    import pandas as pd

    n = 41  # healthy men 0..40 ml above 100, healthy women 0..40 below; diseased subjects left out
    rows = [{"subject_id": f"m{i}", "split": "train", "sex_male": 1, "lvedv_ml": 100.0 + i, "label_x": False}
            for i in range(n)]
    rows += [{"subject_id": f"f{i}", "split": "train", "sex_male": 0, "lvedv_ml": 60.0 + i, "label_x": False}
             for i in range(n)]
    rows += [{"subject_id": f"d{i}", "split": "train", "sex_male": 1, "lvedv_ml": 400.0, "label_x": True}
             for i in range(30)]
    rows += [{"subject_id": "t0", "split": "test", "sex_male": 1, "lvedv_ml": 999.0, "label_x": False}]
    ranges = reference_ranges(pd.DataFrame(rows))
    # numpy's linear quantile of 0..40: 2.5 % -> 1.0, 97.5 % -> 39.0
    assert ranges["lvedv_ml"]["male"] == (101.0, 139.0, 41)
    assert ranges["lvedv_ml"]["female"] == (61.0, 99.0, 41)
    assert ranges["lvedv_ml"]["all"][2] == 82
    assert reference_ranges(pd.DataFrame(rows[:10])) == {}  # too few healthy subjects: no range
    predictions = {"indices": {"seg_lvedv_ml": {"value": 150.0, "unit": "ml", "interval": {"low": 140, "high": 160}},
                               "lvef_pct": {"value": 60.0, "unit": "%", "low": 50.0, "high": 70.0}},
                   "screening": {"a_b": {"probability": 0.2, "threshold": 0.1}, "c": {"probability": 0.9}},
                   "quality": {"findings": [{"message": "noisy"}]}}
    shown = _prediction_rows(predictions, ranges, sex_male=True)
    lvedv, lvef = shown["indices"]
    assert (lvedv["title"], lvedv["low"], lvedv["high"], lvedv["flag"], lvedv["interval"]) == (
        "LV end-diastolic volume", 101.0, 139.0, "high", (140.0, 160.0))
    assert "healthy male subjects of the data set, n = 41" in lvedv["range_source"]
    assert (lvef["low"], lvef["flag"], lvef["range_source"]) == (50.0, "", "model")
    assert _prediction_rows(predictions, ranges, sex_male=False)["indices"][0]["high"] == 99.0
    assert [(s["name"], s["positive"]) for s in shown["screening"]] == [("c", False), ("a b", True)]
    assert shown["quality"] == ["noisy"] and _prediction_rows(None) is None
