"""The models behind the review app and the background worker that runs them.

`ReviewModels` reads a run folder laid out as

    DIR/generator/            ECGToCMRPipeline (save_pretrained folder): short-axis cines
    DIR/generator_la_4ch/     optional second pipeline: 4-chamber long-axis cines
    DIR/heads/                heads folder read by cardiacnets.heads.predict.predict_record

any of which may be absent (the pages then say so). Models are imported and
loaded on first use, so the app starts at once and works with a data set alone.

`JobRunner` is one worker thread that runs generation and prediction jobs one
at a time (they are CPU-bound), predictions first. Each job reports its
progress (diffusion steps when the pipeline takes the diffusers-style
``callback_on_step_end``, otherwise its stage), and writes its result into a
content-addressed cache under the app folder, keyed by the model's key (a hash
of its folder's file names, sizes and modification times), the case, the seed
and the sampler settings; a finished result is never computed twice, even
across restarts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cardiacnets.errors import CardiacNetsError, InputError

GENERATOR_FOLDERS = {"sa": "generator", "la_4ch": "generator_la_4ch"}
HEADS_FOLDER = "heads"


def folder_key(path: str | os.PathLike) -> str:
    """A short hash of a model folder's contents (names, sizes, modification times)."""
    path = Path(path).resolve()
    digest = hashlib.sha256(str(path).encode())
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = child.stat()
        digest.update(f"{child.relative_to(path)}\x00{stat.st_size}\x00{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class GenerationSettings:
    """How cines are generated (the pipeline's call arguments).

    Attributes:
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance weight (None: the pipeline's own default, 3 for the
            direct generator and the validation-chosen value of the anatomy-first one).
        seed: seed of the ``torch.Generator``; part of the cache key.
    """

    num_inference_steps: int = 25
    guidance_scale: float | None = None
    seed: int = 0


class ReviewModels:
    """The optional generators and heads of a run folder, loaded lazily.

    Args:
        run_dir: the ``--model`` folder (layout above), or None for none.
        generators: view -> pipeline object, instead of loading from ``run_dir``
            (tests inject stand-ins this way).
        predictor: ``f(ecg_path) -> dict`` in `predict_record`'s output format,
            instead of the heads of ``run_dir``.
        key: cache key of injected models.

    Raises:
        InputError: ``run_dir`` does not exist or holds none of the folders.
    """

    def __init__(self, run_dir: str | os.PathLike | None = None, *, generators: dict[str, Any] | None = None,
                 predictor: Callable[[Path], dict] | None = None, key: str = "injected"):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._generators: dict[str, Any] = dict(generators or {})
        self._predictor = predictor
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()
        self.generator_dirs: dict[str, Path] = {}
        self.heads_dir: Path | None = None
        for view in self._generators:
            self._keys[f"generator_{view}"] = f"{key}-{view}"
        if predictor is not None:
            self._keys["heads"] = f"{key}-heads"
        if self.run_dir is None:
            return
        if not self.run_dir.is_dir():
            raise InputError(self.run_dir, "no such model folder")
        for view, name in GENERATOR_FOLDERS.items():
            if (self.run_dir / name).is_dir():
                self.generator_dirs[view] = self.run_dir / name
        if (self.run_dir / HEADS_FOLDER).is_dir():
            self.heads_dir = self.run_dir / HEADS_FOLDER
        if not self.generator_dirs and self.heads_dir is None and not self._generators and predictor is None:
            raise InputError(self.run_dir, "holds none of generator/, generator_la_4ch/ or heads/ "
                                           "(the review app's run folder layout)")

    @property
    def generator_views(self) -> list[str]:
        """Views a cine can be generated for (sa first)."""
        views = set(self._generators) | set(self.generator_dirs)
        return [v for v in GENERATOR_FOLDERS if v in views]

    @property
    def has_heads(self) -> bool:
        return self._predictor is not None or self.heads_dir is not None

    def describe(self) -> dict:
        """What the run folder offers, for the pages."""
        return {"run_dir": str(self.run_dir) if self.run_dir else None, "generator_views": self.generator_views,
                "heads": self.has_heads, "any": bool(self.generator_views or self.has_heads)}

    def key(self, what: str) -> str:
        """Cache key of ``generator_<view>`` or ``heads``."""
        with self._lock:
            if what not in self._keys:
                folder = self.heads_dir if what == "heads" else self.generator_dirs[what[len("generator_"):]]
                self._keys[what] = folder_key(folder)
            return self._keys[what]

    def generator(self, view: str):
        """The pipeline of one view (either generator), loaded on first use (`generation.request.load_pipeline`)."""
        with self._lock:
            if view not in self._generators:
                from cardiacnets.generation.request import load_pipeline

                self._generators[view] = load_pipeline(self.generator_dirs[view])
            return self._generators[view]

    def predict(self, ecg_path: Path) -> dict:
        """Heads' predictions for one ECG file (`predict_record`)."""
        if self._predictor is not None:
            return self._predictor(ecg_path)
        from cardiacnets.heads.predict import predict_record

        return predict_record(self.heads_dir, ecg_path)


def generate_cine(pipe, inputs: dict, settings: GenerationSettings,
                  progress: Callable[[float, str], None]) -> tuple[np.ndarray, np.ndarray | None]:
    """One generated cine (and the anatomy it was drawn from, for the anatomy-first generator).

    Args:
        pipe: a generation pipeline (or anything with their call signature).
        inputs: the pipeline's keyword inputs for one ECG (`cardiacnets.generation.request.pipeline_inputs`:
            the standard ECG, its lead mask, demographics and device measurements).
        settings: steps, guidance and seed.
        progress: called with (fraction done, message) after every denoising step of every stage.

    Returns:
        ``(cine, labels)``: (frames, H, W) float32 in the training-set intensity scale, and the
        (frames, H, W) uint8 anatomy or None.

    Raises:
        ValueError: when the pipeline returns cines of another shape.
    """
    import torch

    steps = settings.num_inference_steps
    total = pipe.num_steps(steps) if hasattr(pipe, "num_steps") else steps

    def on_step_end(_pipe, step, _timestep, callback_kwargs):
        stage = callback_kwargs.get("stage")
        progress((step + 1) / total, f"{stage + ' ' if stage else ''}denoising step {step + 1} of {total}")
        return callback_kwargs

    kwargs = dict(num_inference_steps=steps, generator=torch.Generator().manual_seed(settings.seed),
                  num_samples_per_ecg=1, callback_on_step_end=on_step_end)
    if settings.guidance_scale is not None:
        kwargs["guidance_scale"] = settings.guidance_scale
    progress(0.0, f"generating ({total} steps)")
    with torch.inference_mode():
        out = pipe(**inputs, **kwargs)
    cines = np.asarray(out.cines, dtype=np.float32)
    if cines.ndim != 4 or cines.shape[0] != 1:
        raise ValueError(f"the generator returned cines of shape {cines.shape}, expected (1, frames, H, W)")
    labels = getattr(out, "labels", None)
    return cines[0], (None if labels is None else np.asarray(labels, dtype=np.uint8)[0])


# --------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """A unit of background work and its state.

    Attributes:
        job_id: opaque id (hash of the key) used in URLs.
        kind: ``"generate"`` or ``"predict"``.
        state: ``queued``, ``running``, ``done`` or ``failed``.
        progress: fraction done in [0, 1], or None when unknown.
        message: what it is doing, or why it failed.
    """

    job_id: str
    kind: str
    state: str = "queued"
    progress: float | None = None
    message: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    run: Callable | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "run"}
        now = time.time()
        data["elapsed_s"] = round((self.finished or now) - (self.started or now), 1) if self.started else 0.0
        return data


class JobRunner:
    """One background thread running jobs by priority (lower first), then submission order."""

    def __init__(self):
        self.jobs: dict[str, Job] = {}
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._work, name="cardiacnets-review-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put((-1, next(self._counter), None))
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, key: str, kind: str, run: Callable[[Callable[[float | None, str], None]], None],
               priority: int = 10, retry_failed: bool = True) -> Job:
        """Queue ``run(progress)`` once per key.

        Args:
            key: what the job computes (model key, case, seed...).
            kind: ``generate`` or ``predict``.
            run: the work; it gets ``progress(fraction or None, message)``.
            priority: lower runs first.
            retry_failed: queue a key whose last run failed again (a user asked
                for it); False returns the failed job (a poller asked).

        Returns:
            The job (the existing one when the key is queued, running or done).
        """
        job_id = hashlib.sha256(key.encode()).hexdigest()[:20]
        with self._lock:
            job = self.jobs.get(job_id)
            if job is not None and (job.state != "failed" or not retry_failed):
                return job
            job = Job(job_id=job_id, kind=kind, run=run)
            self.jobs[job_id] = job
        self._queue.put((priority, next(self._counter), job))
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def queue_position(self, job: Job) -> int:
        """How many queued jobs run before this one (0 when it runs next or is running)."""
        with self._queue.mutex:
            items = sorted((p, n, j) for p, n, j in self._queue.queue if j is not None)
        ids = [j.job_id for _, _, j in items if j.state == "queued"]
        return ids.index(job.job_id) if job.job_id in ids else 0

    def _work(self) -> None:
        while not self._stop.is_set():
            _, _, job = self._queue.get()
            if job is None:
                continue
            job.state, job.started, job.message = "running", time.time(), "starting"

            def progress(fraction: float | None, message: str, job=job) -> None:
                job.progress = None if fraction is None else float(min(max(fraction, 0.0), 1.0))
                job.message = message

            try:
                job.run(progress)
                job.state, job.progress, job.message = "done", 1.0, "done"
            except CardiacNetsError as err:
                job.state, job.message = "failed", str(err)
            except Exception as err:  # a failed job is reported on its page; the worker goes on
                job.state, job.message = "failed", f"{type(err).__name__}: {err}"
                traceback.print_exc()
            job.finished = time.time()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers never see it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_cine(path: Path, cine: np.ndarray) -> None:
    """Cache a generated cine as ``.npy`` (float16), atomically."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(cine, dtype=np.float16), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def load_cine(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False).astype(np.float32)


def save_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, default=_json_default).encode())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
