"""``cardiacnets demo``: the whole CardiacNets pipeline on a simulated cohort.

Simulate a UK Biobank-style cohort → preprocess it into a training set → load
the reference bundle's models (when the config names one) → train the
configured stages with the one training loop → evaluate every model on the
held-out split (retrieval, heads, generation) → write ``report.html`` and
``metrics.json`` (every figure of the report, with the models that produced it
and the time each step took).

Steps already done by an earlier run of the same demo folder with the same
settings are reused (the simulated cohort when its settings match, the
training set, and each stage whose run folder holds a ``demo_stage.json`` for
the same resolved training config); ``force`` redoes everything.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cardiacnets.config import load_config, to_dict
from cardiacnets.data.store import COHORT_RECORD
from cardiacnets.demo.config import DemoConfig, fill_placeholders, resolve_path, run_references
from cardiacnets.errors import InputError

STAGE_MARKER = "demo_stage.json"
STEPS_RECORD = "demo_steps.json"  # seconds each step took when it last did its work in this folder


@dataclass
class DemoRun:
    """Folders and results of one demo run."""

    out: Path
    config: DemoConfig
    folders: dict[str, Path] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    reused_s: dict[str, float | None] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    models: dict[str, Path] = field(default_factory=dict)
    bundle: object | None = None
    raw_removed: bool = False  # the cohort was deleted after preprocessing; its training set is reused

    def __post_init__(self):
        self.folders = {"out": self.out, "raw": self.out / "raw", "dataset": self.out / "dataset",
                        "runs": self.out / "runs", "evaluation": self.out / "evaluation"}
        for name in self.config.stages:
            self.folders[f"run:{name}"] = self.out / "runs" / name

    def run_dir(self, stage: str) -> Path:
        """The folder stage `stage` trains into."""
        return self.folders[f"run:{stage}"]

    def stage_enabled(self, stage: str) -> bool:
        return stage in self.config.stages and self.config.stages[stage].enabled

    def has_model(self, stage: str) -> bool:
        """Whether the demo has stage `stage`'s model (trained here or from the reference bundle)."""
        return stage in self.models or self.stage_enabled(stage)

    def model_dir(self, stage: str) -> Path:
        """The folder holding stage `stage`'s model, laid out like its run folder: trained by this demo, or the
        reference bundle's component of that name."""
        if self.stage_enabled(stage):
            return self.run_dir(stage)
        if stage in self.models:
            return self.models[stage]
        raise InputError(self.out, f"the demo has no {stage!r} model (not trained here, not in the reference bundle)")


def _announce(index: int, total: int, text: str) -> None:
    print(f"\n[{index}/{total}] {text}", flush=True)


def run_demo(out: str | Path, config: DemoConfig, force: bool = False, progress: bool = True) -> DemoRun:
    """Run the demo into `out`.

    Args:
        out: the demo folder (created).
        config: the `DemoConfig`.
        force: redo steps an earlier run of this folder already did.
        progress: progress bars.

    Returns:
        The `DemoRun` (``metrics`` is what ``metrics.json`` holds).
    """
    from cardiacnets.demo.report import write_report

    config.validate()
    demo = DemoRun(Path(out), config)
    demo.out.mkdir(parents=True, exist_ok=True)
    stages = [name for name, stage in config.stages.items() if stage.enabled]
    steps = [*(["load models"] if config.reference else []), "simulate", "preprocess", *stages, "evaluate", "report"]
    total = len(steps)
    started = time.perf_counter()

    if config.reference:  # first: a bundle that does not verify stops the demo before any work
        _announce(1, total, f"loading the reference models ({config.reference})")
        _timed(demo, "load_models", lambda: _load_reference(demo))
    _announce(steps.index("simulate") + 1, total,
              f"simulating {config.n_subjects} UK Biobank-style subjects into {demo.folders['raw']}")
    _timed(demo, "simulate", lambda: _simulate(demo, force, progress))
    _announce(steps.index("preprocess") + 1, total, f"preprocessing into {demo.folders['dataset']}")
    _timed(demo, "preprocess", lambda: _preprocess(demo, force, progress))
    for i, name in enumerate(stages, start=steps.index("preprocess") + 2):
        _announce(i, total, f"training stage {name!r} ({config.stages[name].config})")
        _timed(demo, f"train_{name}", lambda name=name: _train_stage(demo, name, force, progress))
    _announce(total - 1, total, f"evaluating on the {config.evaluate.split!r} split")
    _timed(demo, "evaluate", lambda: _evaluate(demo, progress))
    _review_folder(demo)
    _announce(total, total, "writing the report")
    demo.timings_s["total"] = round(time.perf_counter() - started, 1)
    demo.metrics["timings_s"] = demo.timings_s
    demo.metrics["reused_s"] = demo.reused_s
    demo.metrics["config"] = to_dict(config)
    _timed(demo, "report", lambda: write_report(demo))
    (demo.out / "metrics.json").write_text(json.dumps(demo.metrics, indent=2, default=str) + "\n")
    return demo


def _timed(demo: DemoRun, name: str, fn) -> None:
    """Run step `name` and record its wall time. A step that reuses what an earlier run of this folder made (`fn`
    returns True) also records, in `DemoRun.reused_s`, the seconds that earlier run spent on it (from
    ``STEPS_RECORD``; None when that run predates the record)."""
    t0 = time.perf_counter()
    reused = fn() is True
    demo.timings_s[name] = round(time.perf_counter() - t0, 1)
    record_file = demo.out / STEPS_RECORD
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if reused:
        demo.reused_s[name] = record.get(name)
    else:
        record[name] = demo.timings_s[name]
        record_file.write_text(json.dumps(record, indent=2) + "\n")


# --- data -------------------------------------------------------------------------------------------------------
def _read_record(path: Path) -> dict | None:
    """A cohort record the demo wrote (None when absent); a damaged one is an error naming the file."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable cohort record ({err}); delete it to simulate the cohort again") from None
    if not isinstance(record, dict):
        raise InputError(path, "unreadable cohort record (not a JSON object); delete it to simulate the cohort again")
    return record


def _simulate(demo: DemoRun, force: bool, progress: bool) -> bool:
    from cardiacnets.simulate import write_cohort

    raw, c = demo.folders["raw"], demo.config
    synth = cohort_synth_config(c, demo.bundle.info if demo.bundle is not None else None)
    marker = raw / COHORT_RECORD
    wanted = {"n_subjects": c.n_subjects, "seed": c.seed, "synth": c.synth, "version": synth.version}
    earlier = _read_record(marker)
    if earlier is not None and "version" not in earlier:  # cohorts of cardiacnets 0.1.0: version 1, defaults
        earlier = {**earlier, "synth": [], "version": 1}
    kept_file = demo.folders["dataset"] / COHORT_RECORD
    kept = _read_record(kept_file) or {}
    demo.raw_removed = (not force and earlier is None and not raw.exists() and kept.get("key") == wanted
                        and (demo.folders["dataset"] / "dataset.yaml").is_file())
    reused = demo.raw_removed or (not force and earlier == wanted)
    if demo.raw_removed:
        print(f"the simulated cohort {raw} was removed; reusing the training set built from it "
              f"({demo.folders['dataset']}, same cohort settings)")
    elif reused:
        print(f"reusing the cohort simulated earlier in {raw}")
    else:
        if demo.folders["dataset"].exists():  # built from another cohort (or --force): stale
            _remove_training_set(demo.folders["dataset"])
        summary = write_cohort(raw, c.n_subjects, seed=c.seed, config=synth, workers=c.workers, progress=progress)
        marker.write_text(json.dumps(wanted) + "\n")
        del summary
    demo.metrics["cohort"] = {"n_subjects": c.n_subjects, "seed": c.seed, "raw": str(raw),
                              "simulator_version": synth.version, "synth": list(c.synth), "key": wanted}
    ceiling = raw / "ceiling.json"
    if ceiling.is_file():
        demo.metrics["ceiling"] = json.loads(ceiling.read_text()).get("r2", {})
    elif demo.raw_removed:
        demo.metrics["ceiling"] = (kept.get("ceiling") or {}).get("r2", {})
    return reused


def cohort_synth_config(config, bundle_info: dict | None):
    """The simulator settings of the demo's cohort: ``config.synth``, with the bundle's simulator version.

    A bundle records the version of the simulator it was trained on (``metadata.simulator_version``;
    bundles without the record were trained on version 1). Unless ``config.synth`` names a version, the
    cohort is drawn with it, so the models are scored on the data they were trained for; a different
    version named explicitly is allowed (a domain-shift test) and announced.
    """
    from cardiacnets.config import apply_overrides, from_dict
    from cardiacnets.simulate import SynthConfig

    data = apply_overrides({}, config.synth)
    if bundle_info is not None:
        trained_on = int(bundle_info.get("metadata", {}).get("simulator_version", 1))
        if "version" not in data:
            data["version"] = trained_on
        elif int(data["version"]) != trained_on:
            print(f"note: the reference models were trained on simulator version {trained_on}; this cohort is "
                  f"drawn with version {data['version']} (a domain shift)")
    return from_dict(SynthConfig, data)


def _remove_training_set(dataset: Path) -> None:
    """Delete a training set this demo built (only a folder holding a dataset.yaml is touched)."""
    import shutil

    if not (dataset / "dataset.yaml").is_file():
        raise InputError(dataset, "exists but is not a training set; choose another --out")
    shutil.rmtree(dataset)


def _preprocess(demo: DemoRun, force: bool, progress: bool) -> bool:
    from cardiacnets.data.preprocess import PreprocessConfig, preprocess

    dataset = demo.folders["dataset"]
    if dataset.exists() and not (dataset / "dataset.yaml").exists():
        raise InputError(dataset, "exists but is not a training set; choose another --out")
    reused = False
    if demo.raw_removed:  # nothing to add: the cohort it was built from is gone; its last preprocessing report
        from cardiacnets.data.store import REPORT

        report = json.loads((dataset / REPORT).read_text())
        demo.metrics["dataset"] = {"path": str(dataset), "counts": report["counts"],
                                   "failed_records": report["n_failed_records"], "raw_removed": True}
        return True
    if dataset.exists():
        info = yaml.safe_load((dataset / "dataset.yaml").read_text()) or {}
        if info.get("n_subjects") != demo.config.n_subjects or force:
            _remove_training_set(dataset)
        else:
            reused = True  # preprocess below only adds records the earlier run did not write
    config = load_config(PreprocessConfig, resolve_path(demo.config.preprocess), demo.config.preprocess_overrides)
    result = preprocess("ukb", demo.folders["raw"], dataset, config, workers=demo.config.workers, progress=progress)
    demo.metrics["dataset"] = {"path": str(dataset), "counts": result.counts,
                               "failed_records": result.n_failed_records}
    # The cohort's settings and ceiling, kept beside the training set: the raw cohort is large (about 6 MB a
    # subject) and may be deleted once preprocessed; a later run of this folder then reuses the training set.
    ceiling = demo.folders["raw"] / "ceiling.json"
    record = {"key": demo.metrics["cohort"]["key"],
              "ceiling": json.loads(ceiling.read_text()) if ceiling.is_file() else {}}
    (dataset / COHORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return reused


def _upstream_digests(demo: DemoRun, overrides: list[str]) -> dict[str, str | None]:
    """The config digests of the runs of this demo a stage's overrides name (``{run:NAME}``)."""
    names = sorted({name for item in overrides for name in run_references(item)})
    digests = {}
    for name in names:
        marker = demo.run_dir(name) / STAGE_MARKER
        digests[name] = json.loads(marker.read_text()).get("config_sha256") if marker.is_file() else None
    return digests


# --- models -----------------------------------------------------------------------------------------------------
def _load_reference(demo: DemoRun) -> None:
    """Verify and load the reference bundle; its components become the models of the stages of the same name."""
    from cardiacnets.demo.config import resolve_path
    from cardiacnets.models.bundle import load_bundle

    bundle = load_bundle(resolve_path(demo.config.reference))
    demo.bundle = bundle
    for key in bundle.info["components"]:
        stage = key.split("/")[0]
        demo.models[stage] = bundle.root / stage
        demo.folders[f"ref:{stage}"] = bundle.root / stage
    card = bundle.path / "MODEL_CARD.md"
    demo.metrics["models"] = {
        "bundle": bundle.info["name"], "bundle_path": str(bundle.path), "sha256": bundle.digest,
        "package_version": bundle.info["package_version"], "model_card": str(card) if card.is_file() else None,
        "built": bundle.info.get("created"), "training": (bundle.info.get("metadata") or {}).get("training"),
        "stages": {stage: "reference bundle" for stage in sorted(demo.models)}}


# --- training ---------------------------------------------------------------------------------------------------
def _train_stage(demo: DemoRun, name: str, force: bool, progress: bool) -> bool:
    from cardiacnets.train import TrainConfig, train

    stage = demo.config.stages[name]
    overrides = [fill_placeholders(item, demo.folders) for item in stage.overrides]
    overrides.insert(0, f"data.path={demo.folders['dataset']}")
    config = load_config(TrainConfig, resolve_path(stage.config), overrides)
    run_dir = demo.run_dir(name)
    # The stage is reused only when its config, the cohort it trains on and the runs it builds on ({run:NAME}:
    # their own digests, so a retrained upstream stage retrains this one) are the same.
    key = {"config": to_dict(config), "cohort": demo.metrics.get("cohort", {}).get("key")}
    upstream = _upstream_digests(demo, stage.overrides)
    if upstream:  # absent for stages without upstream runs: their digests stay those of earlier versions
        key["upstream"] = upstream
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    marker = run_dir / STAGE_MARKER
    reused = not force and marker.is_file() and json.loads(marker.read_text()).get("config_sha256") == digest
    if reused:
        print(f"reusing stage {name!r} trained earlier in {run_dir}")
        summary = json.loads(marker.read_text())["summary"]
    else:
        if run_dir.exists():
            import shutil

            if not (run_dir / "config.yaml").is_file():
                raise InputError(run_dir, "exists but is not a training run; choose another --out")
            shutil.rmtree(run_dir)
        result = train(config, run_dir, progress=progress)
        summary = {"steps": result.steps if hasattr(result, "steps") else None,
                   "exports": {k: str(v) for k, v in result.exports.items()}}
        summary_file = run_dir / "summary.json"
        if summary_file.is_file():
            summary.update(json.loads(summary_file.read_text()))
        marker.write_text(json.dumps({"config_sha256": digest, "summary": summary}, indent=2, default=str) + "\n")
    demo.metrics.setdefault("training", {})[name] = summary
    if "models" in demo.metrics:
        demo.metrics["models"]["stages"][name] = "trained by this demo"
    return reused


# --- evaluation -------------------------------------------------------------------------------------------------
def _evaluate(demo: DemoRun, progress: bool) -> None:
    from cardiacnets.demo import evaluations

    e = demo.config.evaluate
    for name, fn in evaluations.EVALUATIONS.items():
        missing = evaluations.needs(demo, name)
        if missing:
            demo.metrics[name] = {"skipped": f"needs stage(s) {', '.join(missing)}"}
            continue
        t0 = time.perf_counter()
        out_dir = demo.folders["evaluation"] / name
        out_dir.mkdir(parents=True, exist_ok=True)
        print(f"  {name} ...", flush=True)
        result, figures = fn(demo, e, out_dir, progress)
        demo.metrics[name] = result
        demo.figures.update({f"{name}/{k}": v for k, v in figures.items()})
        demo.timings_s[f"evaluate_{name}"] = round(time.perf_counter() - t0, 1)


def _review_folder(demo: DemoRun) -> None:
    """Lay out ``DIR/model/{generator,heads}`` for ``cardiacnets review`` and record the command."""
    import shutil

    model = demo.out / "model"
    from cardiacnets.demo.evaluations import GENERATOR_STAGES

    generator = next((demo.model_dir(stage) / "pipeline" for stage in GENERATOR_STAGES if demo.has_model(stage)),
                     None)
    exports = {"generator": generator,
               "heads": demo.model_dir("heads") / "model" if demo.has_model("heads") else None}
    present = {name: folder for name, folder in exports.items() if folder is not None and folder.is_dir()}
    if not present:
        return
    for name, folder in present.items():
        target = model / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target)
    demo.metrics["review_command"] = f"cardiacnets review --data {demo.folders['dataset']} --model {model}"


def load_demo_config(path: str | Path | None, overrides: list[str] | None = None) -> DemoConfig:
    """The demo config at `path` (default ``configs/demo/demo.yaml``) with overrides."""
    from cardiacnets.demo.config import DEFAULT_CONFIG

    return load_config(DemoConfig, path if path is not None else DEFAULT_CONFIG, overrides or [])
