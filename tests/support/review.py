"""Helpers of the review-app tests: a tiny simulated training set, stand-ins for the
generator and the heads (the real ones live in other parts of the package), and a
uvicorn server on a free port in a background thread."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from support.datasets import simulated_training_set

# The review app answers only the Host names it allows (loopback by default); TestClient's own
# "testserver" is not one of them.
BASE_URL = "http://127.0.0.1"


def build_review_dataset(root: Path, n: int = 8) -> Path:
    """``n`` simulated subjects preprocessed with the demo config; returns the training set folder.

    With the default seed the first 8 subjects hold every study answer: normal
    (1000002, 1000006, 1000008), cardiomyopathy (1000004, 1000005, 1000007), heart
    failure (1000004, 1000005) and coronary artery disease (1000001, 1000003).
    """
    return simulated_training_set(root, n, seed=0, cohort_workers=1)


class FakeCinePipeline:
    """Stands in for `ECGToCMRPipeline`: the same call signature and output, no model.

    The cine is a bright disk on a dark field whose radius beats once per cycle
    and grows with the ECG's RMS amplitude, plus seeded noise, so outputs depend
    on the ECG and the seed like the real pipeline's do.

    Args:
        frames, size: output (frames, size, size).
        step_delay_s: sleep per denoising step (to watch progress in the browser).
    """

    def __init__(self, frames: int = 25, size: int = 64, step_delay_s: float = 0.0):
        self.frames, self.size, self.step_delay_s = frames, size, step_delay_s
        self.calls = 0

    def __call__(self, ecg, lead_mask=None, num_inference_steps=25, guidance_scale=3.0, generator=None,
                 num_samples_per_ecg=1, callback_on_step_end=None):
        import torch

        self.calls += 1
        ecg = torch.as_tensor(ecg, dtype=torch.float32)
        assert ecg.ndim == 3 and ecg.shape[1] == 12, ecg.shape
        for step in range(num_inference_steps):
            time.sleep(self.step_delay_s)
            if callback_on_step_end is not None:
                callback_on_step_end(self, step, 1000 - step, {})
        rms = float(ecg.pow(2).mean().sqrt())
        t = np.arange(self.frames) / self.frames
        radius = self.size * (0.18 + 0.05 * np.cos(2 * np.pi * t) + 0.05 * min(rms, 1.0))
        yy, xx = np.mgrid[: self.size, : self.size] - (self.size - 1) / 2
        distance = np.hypot(yy, xx)[None]
        cine = 0.1 + 0.8 * (distance < radius[:, None, None])
        noise = torch.rand(ecg.shape[0], self.frames, self.size, self.size, generator=generator).numpy()
        return SimpleNamespace(cines=(cine[None] + 0.05 * noise).astype(np.float32))

    #: The ECG standardisation the app's request path reads uploads with (the demo's: 10 s at 250 Hz).
    ecg_config = {"sampling_rate_hz": 250.0, "duration_s": 10.0}


def fake_predict(ecg_path: Path) -> dict:
    """Stands in for `predict_record`: its output format (prediction intervals, screening with
    thresholds, quality findings, subtype), plus one index in the brief's form with its own
    ``low``/``high`` normal range; values depend on the file size."""
    size = Path(ecg_path).stat().st_size
    return {
        "indices": {
            "seg_lvedv_ml": {"value": 150.0 + size % 7, "unit": "ml", "description": "LV end-diastolic volume",
                             "interval": {"low": 120.0, "high": 185.0, "coverage": 0.95}},
            "lvef_pct": {"value": 38.5, "unit": "%", "low": 51.0, "high": 74.0},
            "seg_lvm_g": {"value": 95.0, "unit": "g", "description": "LV myocardial mass", "interval": None},
        },
        "screening": {"cardiomyopathy": {"probability": 0.71, "threshold": 0.5, "positive": True},
                      "heart failure": {"probability": 0.12, "threshold": 0.4, "positive": False}},
        "quality": {"usable": True, "findings": [{"code": "noise", "severity": "warning", "lead": "V1",
                                                  "message": "V1: high-frequency noise"}]},
        "cardiomyopathy_subtype": {"probabilities": {"none": 0.2, "dilated": 0.7, "hypertrophic": 0.1},
                                   "most_likely": "dilated"},
        "notes": [],
    }


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve(app):
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the review server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def csrf_token_of(html: str) -> str:
    """The CSRF token a review page embeds in ``<meta name="csrf-token">``."""
    return re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html).group(1)


@contextlib.contextmanager
def review_client(app, *, sign_in: bool = True, token: str | None = None):
    """A TestClient of the review app as a browser uses it: on an allowed Host, with its CSRF cookie
    and the matching ``X-CSRF-Token`` header on every request, signed in to the review pages
    (with ``token``, default the app's own) unless ``sign_in`` is False."""
    from fastapi.testclient import TestClient

    with TestClient(app, base_url=BASE_URL) as client:
        client.headers["X-CSRF-Token"] = csrf_token_of(client.get("/login").text)
        if sign_in:
            response = client.post("/login", data={"token": token or app.state.review.token, "next": "/cases"},
                                   follow_redirects=False)
            assert response.status_code == 303, response.text
        yield client
