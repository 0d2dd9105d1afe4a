"""`cardiacnets reference build` and `cardiacnets demo`: a tiny reference bundle trained by the build command, then
the demo evaluating it on a fresh cohort (report, metrics, provenance, reuse of finished steps, a tampered bundle)."""

import hashlib
import json
import shutil

import pytest
import yaml

from cardiacnets.cli import main
from cardiacnets.demo.config import DemoConfig, StageConfig, fill_placeholders
from cardiacnets.demo.reference import BUNDLE_STAGES
from cardiacnets.demo.run import cohort_synth_config
from cardiacnets.errors import ConfigError
from cardiacnets.simulate.physiology import SynthConfig
from support import REPO_ROOT

# The simulator version configs/reference/reference.yaml trains on (what the bundle records, what the demo draws).
REFERENCE_SYNTH = yaml.safe_load((REPO_ROOT / "configs" / "reference" / "reference.yaml").read_text())["synth"]
REFERENCE_VERSION = int(REFERENCE_SYNTH[0].split("=")[1])

SHORT = ["schedule.epochs=null", "schedule.max_steps=2", "schedule.warmup_steps=1", "data.batch_size=8"]


def tiny_config(source, path, batch_size=8, **changes):
    """A demo-format config (`source`) with every stage cut to 2 steps of `batch_size` and small evaluations."""
    config = yaml.safe_load(source.read_text())
    for name, stage in config["stages"].items():
        extra = [f"data.batch_size={batch_size}"]
        extra += ["precise_bn_batches=1"] if name in ("align", "segment") else []
        if name == "anatomy":  # 30 subjects: fewer training cines than the demo's 32 shape components
            extra += ["options.n_components=8", "options.readout_folds=2", "options.selection_steps=2"]
        stage["overrides"] = stage.get("overrides", []) + SHORT + extra
    config["evaluate"].update(generation_subjects=3, generation_steps=2, bootstrap=50, report_cines=1)
    config.update(changes)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """`cardiacnets reference build` of configs/reference/reference.yaml on 30 subjects, 2 steps per stage."""
    root = tmp_path_factory.mktemp("reference")
    config = tiny_config(REPO_ROOT / "configs" / "reference" / "reference.yaml", root / "reference.yaml")
    build = root / "build"
    assert main(["reference", "build", "--out", str(build), "--config", str(config), "--name", "tiny-reference",
                 "--no-real-data", "--no-progress", "n_subjects=30"]) == 0
    return build


@pytest.mark.slow
def test_reference_build_exports_a_sealed_bundle_with_its_model_card(tiny_bundle, capsys):
    bundle = tiny_bundle / "bundle"
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["name"] == "tiny-reference" and info["metadata"]["n_subjects"] == 30 and info["metadata"]["seed"] == 1
    assert info["metadata"]["simulator_version"] == REFERENCE_VERSION and info["metadata"]["synth"] == REFERENCE_SYNTH
    assert {key.split("/")[0] for key in info["components"]} == set(BUNDLE_STAGES)
    assert (bundle / "anatomy" / "pipeline" / "model_index.json").is_file()
    assert (bundle / "anatomy" / "pipeline" / "acquisition" / "config.json").is_file()  # the image stage's noise
    assert (bundle / "heads_lead_i" / "model").is_dir() and (bundle / "align" / "model").is_dir()
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert on_disk - set(info["files"]) == {"bundle.json", "SHA256SUMS"}
    for path, entry in info["files"].items():  # every file's recorded hash, recomputed here
        assert sha256(bundle / path) == entry["sha256"], path
    card = (bundle / "MODEL_CARD.md").read_text()
    metrics = json.loads((tiny_bundle / "metrics.json").read_text())
    assert "Not for clinical use" in card and "reference build" in card
    assert f"{metrics['retrieval']['views']['sa']['ecg_to_cmr']['top1']:.3f}" in card  # measured, not typed in
    assert f"{metrics['generation']['lvedv_r']:.3f}" in card
    assert metrics["generation"]["method"]["acquisition_noise"] is True and "carry the pipeline's acquisition" in card
    bank = metrics["generation"]["method"]["appearance_bank"]  # every training cine of the tiny cohort's split
    assert 2 <= bank <= 30 and f"one of {bank} training cines" in card
    assert info["files"]["anatomy/pipeline/model_index.json"]["sha256"] in card
    # Every trained stage's steps, those whose models live inside the anatomy pipeline too.
    assert set(info["metadata"]["training"]) >= set(BUNDLE_STAGES) | {"frame_vae", "anatomy_image"}
    assert "| frame_vae (anatomy) |" in card and "| anatomy_image (anatomy) |" in card
    assert metrics["real_data"] == {"skipped": "not requested (--no-real-data)"}
    capsys.readouterr()
    assert main(["reference", "verify", str(bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "tiny-reference"


@pytest.mark.slow
def test_demo_evaluates_the_bundle_on_a_fresh_cohort(tiny_bundle, tmp_path, capsys):
    bundle = tiny_bundle / "bundle"
    config = tiny_config(REPO_ROOT / "configs" / "demo" / "demo.yaml", tmp_path / "demo.yaml", batch_size=4,
                         reference=str(bundle))
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--n", "30", "--seed", "7", "--no-progress", "--config", str(config)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"report:  {out / 'report.html'}" in printed and "models:  tiny-reference" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    models = metrics["models"]
    assert models["bundle"] == "tiny-reference" and models["sha256"] == sha256(bundle / "bundle.json")
    assert models["stages"] == {**{stage: "reference bundle" for stage in BUNDLE_STAGES},
                                "heads_aligned": "trained by this demo", "heads_scratch": "trained by this demo"}
    assert set(metrics["training"]) == {"heads_aligned", "heads_scratch"}
    # The fresh cohort is drawn with the simulator version the bundle records.
    assert {k: metrics["cohort"][k] for k in ("n_subjects", "seed", "raw", "simulator_version")} == {
        "n_subjects": 30, "seed": 7, "raw": str(out / "raw"), "simulator_version": REFERENCE_VERSION}
    heads = metrics["heads"]
    assert set(heads["others"]) == {"heads_aligned", "heads_lead_i", "heads_scratch"}
    assert heads["others"]["heads_lead_i"]["leads"] == "I" and "I" in heads["lead_subsets"]
    assert "r2" in heads["regression"]["lvedv_ml"]
    # The measurement baselines are scored once, on the reference heads' subjects, and shown in the report.
    assert set(heads["baselines"]) == {"measurements", "measurements_boosted", "sokolow"}
    assert "baselines" not in heads["others"]["heads_scratch"]
    measurements = heads["baselines"]["measurements"]
    assert "ecg_sokolov_lvh_index_mV" in measurements["features"]
    assert set(measurements["fitted"]) | set(measurements["not_fitted"]) >= set(heads["regression"])
    assert set(measurements["regression"]) <= set(measurements["fitted"])
    assert "lvedv_r" in metrics["generation"] and "lvedv_r" in metrics["generation"]["nn_baseline"]
    html = (out / "report.html").read_text()
    assert "tiny-reference" in html and models["sha256"] in html and "Heads models compared" in html
    assert "baseline: measurements" in html and "baseline: sokolow" in html
    assert f"{metrics['generation']['ssim']:.3f}" in html and "SYNTHETIC" in html
    assert metrics["review_command"] == f"cardiacnets review --data {out / 'dataset'} --model {out / 'model'}"
    assert "AnatomyFirstPipeline" in (out / "model" / "generator" / "model_index.json").read_text()

    # A second run reuses the cohort and the trained stages.
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reusing the cohort" in printed and "reusing stage 'heads_aligned'" in printed


@pytest.mark.slow
def test_demo_refuses_a_modified_bundle(tiny_bundle, tmp_path, capsys):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle / "bundle", bundle)
    weights = next((bundle / "segment" / "model").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    config = tiny_config(REPO_ROOT / "configs" / "demo" / "demo.yaml", tmp_path / "demo.yaml", reference=str(bundle))
    assert main(["demo", "--out", str(tmp_path / "demo"), "--n", "12", "--no-progress", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "segment/model/" in error and weights.name in error


def test_shipped_demo_configs_resolve():
    """The default demo names the committed bundle and trains only short stages; --from-scratch trains the rest."""
    from cardiacnets.demo.config import DEFAULT_CONFIG, FROM_SCRATCH_CONFIG, resolve_path
    from cardiacnets.demo.run import load_demo_config
    from cardiacnets.models.bundle import committed_bundle

    demo = load_demo_config(DEFAULT_CONFIG)
    demo.validate()
    assert resolve_path(demo.reference).resolve() == committed_bundle() and committed_bundle().is_dir()
    assert set(demo.stages) == {"heads_aligned", "heads_scratch"}
    scratch = load_demo_config(FROM_SCRATCH_CONFIG)
    scratch.validate()
    assert scratch.reference is None and {"align", "heads", "segment", "anatomy"} <= set(scratch.stages)
    protocol = load_demo_config(REPO_ROOT / "configs" / "demo" / "generation_2000.yaml")  # the generation issue's
    protocol.validate()
    assert protocol.n_subjects == 2000 and protocol.reference is None and protocol.synth == REFERENCE_SYNTH
    assert {"align", "segment", "frame_vae", "anatomy_image", "anatomy"} <= set(protocol.stages)


def test_demo_config_checks_placeholders():
    config = DemoConfig(stages={"align": StageConfig("a.yaml", ["init.x={run:heads}"]),
                                "heads": StageConfig("h.yaml")})
    with pytest.raises(ConfigError, match=r"stage 'align' refers to \{run:heads\}, which is not an earlier stage"):
        config.validate()
    with pytest.raises(ConfigError, match="unknown placeholder"):
        DemoConfig(stages={"align": StageConfig("a.yaml", ["x={data}"])}).validate()
    with pytest.raises(ConfigError, match="n_subjects must be at least 10"):
        DemoConfig(n_subjects=3).validate()
    with pytest.raises(ConfigError, match=r"refers to \{ref:align\} but no reference bundle is set"):
        DemoConfig(stages={"heads": StageConfig("h.yaml", ["init.ecg_encoder={ref:align}/model"])}).validate()


def test_fill_placeholders(tmp_path):
    folders = {"out": tmp_path, "dataset": tmp_path / "ds", "run:align": tmp_path / "runs" / "align",
               "ref:segment": tmp_path / "bundle" / "segment"}
    assert fill_placeholders("init.ecg_encoder={run:align}/ecg_encoder", folders) == \
        f"init.ecg_encoder={tmp_path}/runs/align/ecg_encoder"
    assert fill_placeholders("data.path={dataset}", folders) == f"data.path={tmp_path}/ds"
    assert fill_placeholders("x={ref:segment}/model", folders) == f"x={tmp_path}/bundle/segment/model"
    with pytest.raises(ConfigError, match="the reference bundle has no 'align'"):
        fill_placeholders("x={ref:align}", folders)


def test_reused_steps_keep_the_time_of_the_run_that_did_them(tmp_path):
    from cardiacnets.demo.model_card import _timing_rows
    from cardiacnets.demo.run import STEPS_RECORD, DemoRun, _timed

    first = DemoRun(tmp_path, DemoConfig())
    _timed(first, "simulate", lambda: None)  # did the work
    _timed(first, "train_align", lambda: False)
    record = json.loads((tmp_path / STEPS_RECORD).read_text())
    assert set(record) == {"simulate", "train_align"} and first.reused_s == {}

    record["simulate"] = 120.0  # as if simulating had taken two minutes
    (tmp_path / STEPS_RECORD).write_text(json.dumps(record))
    second = DemoRun(tmp_path, DemoConfig())
    _timed(second, "simulate", lambda: True)  # reused: keeps the earlier time, the record is not overwritten
    _timed(second, "train_heads", lambda: True)  # reused, but no earlier time on record
    assert second.reused_s == {"simulate": 120.0, "train_heads": None}
    assert json.loads((tmp_path / STEPS_RECORD).read_text())["simulate"] == 120.0

    rows = _timing_rows({"timings_s": {"simulate": 0.1, "train_align": 60.0, "evaluate_heads": 6.0,
                                       "evaluate": 30.0, "total": 90.1}, "reused_s": {"simulate": 120.0}})
    assert rows == [["simulate", "120.0", "2.0", "an earlier run"], ["train_align", "60.0", "1.0", "this run"],
                    ["– evaluate_heads (part of evaluate)", "6.0", "0.1", "this run"],
                    ["evaluate", "30.0", "0.5", "this run"], ["all steps", "210.0", "3.5", ""]]
    rows = _timing_rows({"timings_s": {"train_heads": 0.2}, "reused_s": {"train_heads": None}})
    assert rows == [["train_heads", "–", "–", "an earlier run"], ["all steps (steps of unknown time left out)",
                                                                   "0.0", "0.0", ""]]


@pytest.mark.slow
def test_a_second_build_reuses_the_runs_and_replaces_its_bundle(tiny_bundle, tmp_path, capsys):
    config = tmp_path / "reference.yaml"
    tiny_config(REPO_ROOT / "configs" / "reference" / "reference.yaml", config)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    common = ["reference", "build", "--config", str(config), "--name", "tiny-reference", "--no-real-data",
              "--no-progress", "n_subjects=30"]
    assert main([*common, "--out", str(tmp_path / "other"), "--bundle-out", str(taken)]) == 2
    assert "neither empty nor a bundle" in capsys.readouterr().err
    assert not (tmp_path / "other").exists() and (taken / "notes.txt").read_text() == "mine"  # refused before work

    assert main([*common, "--out", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "reusing stage 'anatomy'" in out and "replacing the bundle" in out
    card = (tiny_bundle / "bundle" / "MODEL_CARD.md").read_text()
    assert "| train_align |" in card and "an earlier run" in card
    assert main(["reference", "verify", str(tiny_bundle / "bundle")]) == 0

    # The raw cohort deleted to save disk: the training set built from it is reused, not re-simulated.
    kept = json.loads((tiny_bundle / "dataset" / "demo_cohort.json").read_text())
    assert kept["key"] == {"n_subjects": 30, "seed": 1, "synth": REFERENCE_SYNTH, "version": REFERENCE_VERSION}
    shutil.rmtree(tiny_bundle / "raw")
    # A retrained upstream stage retrains the stages built on it: the image denoiser, then the generator.
    tiny_config(REPO_ROOT / "configs" / "reference" / "reference.yaml", config)
    changed = yaml.safe_load(config.read_text())
    changed["stages"]["anatomy_image"]["overrides"].append("schedule.max_steps=3")
    config.write_text(yaml.safe_dump(changed, sort_keys=False))
    assert main([*common, "--out", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "was removed; reusing the training set built from it" in out and not (tiny_bundle / "raw").exists()
    assert "reusing stage 'frame_vae'" in out and "reusing stage 'anatomy_image'" not in out
    assert "reusing stage 'anatomy'" not in out
    metrics = json.loads((tiny_bundle / "metrics.json").read_text())
    assert metrics["dataset"]["raw_removed"] is True and metrics["ceiling"] == kept["ceiling"]["r2"]
    assert metrics["heads"]["ceiling"]["path"].endswith("demo_cohort.json")  # R² as a fraction of the ceiling
    assert metrics["dataset"]["counts"]["has_sa"] == 30 and metrics["dataset"]["failed_records"] == 0
    assert metrics["training"]["anatomy_image"]["step"] == 3

    # A damaged cohort record is an error naming it, not a traceback, and nothing is re-simulated.
    record = tiny_bundle / "dataset" / "demo_cohort.json"
    original = record.read_text()
    record.write_text(original[: len(original) // 2])
    try:
        assert main([*common, "--out", str(tiny_bundle)]) == 2
        err = capsys.readouterr().err
        assert "demo_cohort.json" in err and "unreadable cohort record" in err
        assert not (tiny_bundle / "raw").exists()
    finally:
        record.write_text(original)


def test_the_cohort_is_drawn_with_the_bundles_simulator_version(capsys):
    config = DemoConfig(synth=["image_size=64"])
    assert cohort_synth_config(config, None).version == SynthConfig().version  # no bundle: the default simulator
    assert cohort_synth_config(config, {"metadata": {}}).version == 1  # bundles before the record: version 1
    drawn = cohort_synth_config(config, {"metadata": {"simulator_version": 2}})
    assert drawn.version == 2 and drawn.image_size == 64
    assert "domain shift" not in capsys.readouterr().out
    shifted = cohort_synth_config(DemoConfig(synth=["version=2"]), {"metadata": {"simulator_version": 1}})
    assert shifted.version == 2  # named explicitly: allowed, and said
    said = capsys.readouterr().out
    assert "trained on simulator version 1; this cohort is drawn with version 2 (a domain shift)" in said
    with pytest.raises(ConfigError, match="version"):
        cohort_synth_config(DemoConfig(synth=["version=7"]), None)
