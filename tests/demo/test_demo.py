"""`cardiacnets demo`: the end-to-end run on a tiny cohort, its report, metrics and reuse of finished steps."""

import json

import pytest
import yaml

from cardiacnets.cli import main
from cardiacnets.demo.config import DemoConfig, StageConfig, fill_placeholders
from cardiacnets.errors import ConfigError
from support import REPO_ROOT

SHORT = ["schedule.epochs=null", "schedule.max_steps=2", "schedule.warmup_steps=1", "data.batch_size=8"]


def tiny_demo_config(path):
    """configs/demo/demo.yaml with every stage cut to 2 steps of 8 and small evaluations."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "demo" / "demo.yaml").read_text())
    for name, stage in config["stages"].items():
        extra = ["precise_bn_batches=1"] if name in ("align", "segment") else []
        if name == "anatomy":  # 30 subjects: fewer training cines than the demo's 32 shape components
            extra = ["options.n_components=8", "options.readout_folds=2", "options.selection_steps=2"]
        stage["overrides"] = stage.get("overrides", []) + SHORT + extra
    config["evaluate"].update(generation_subjects=3, generation_steps=2, bootstrap=50, report_cines=1)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_demo_end_to_end_on_a_tiny_cohort(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--n", "30", "--no-progress", "--config",
            str(tiny_demo_config(tmp_path / "demo.yaml"))]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"report:  {out / 'report.html'}" in printed and "[1/" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cohort"]["n_subjects"] == 30
    assert metrics["training"]["align"]["exports"]["ecg_encoder"].endswith("ecg_encoder")
    # fewer test subjects than candidates: every test subject is a candidate, chance = 1/N
    retrieval = metrics["retrieval"]
    assert retrieval["chance"]["top1"] == pytest.approx(1 / retrieval["n_candidates"])
    assert set(metrics["timings_s"]) >= {"simulate", "preprocess", "train_align", "evaluate", "total"}
    assert set(metrics["training"]) == {"align", "heads", "segment", "frame_vae", "anatomy_image", "anatomy"}
    for key in ("ssim", "psnr", "lvedv_r", "temporal"):
        assert key in metrics["generation"] and key in metrics["generation"]["nn_baseline"]
        assert key in metrics["generation"]["rendered_readout"]
    assert "dice_vs_segmented_cine" in metrics["generation"]["anatomy"]
    assert "r2" in metrics["heads"]["regression"]["lvedv_ml"]
    html = (out / "report.html").read_text()
    assert "ECG ↔ CMR retrieval" in html and "data:image/png;base64," in html and "data:image/gif;base64," in html
    assert f"{retrieval['ecg_to_cmr']['top1']:.3f}" in html  # the tables show the measured figures
    assert f"{metrics['generation']['ssim']:.3f}" in html and "SYNTHETIC" in html
    assert metrics["review_command"] == f"cardiacnets review --data {out / 'dataset'} --model {out / 'model'}"
    assert (out / "model" / "generator" / "model_index.json").is_file() and (out / "model" / "heads").is_dir()
    assert "AnatomyFirstPipeline" in (out / "model" / "generator" / "model_index.json").read_text()

    # A second run reuses the cohort and the trained stage.
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reusing the cohort" in printed and "reusing stage 'align'" in printed


def test_demo_config_checks_placeholders():
    config = DemoConfig(stages={"align": StageConfig("a.yaml", ["init.x={run:heads}"]),
                                "heads": StageConfig("h.yaml")})
    with pytest.raises(ConfigError, match=r"stage 'align' refers to \{run:heads\}, which is not an earlier stage"):
        config.validate()
    with pytest.raises(ConfigError, match="unknown placeholder"):
        DemoConfig(stages={"align": StageConfig("a.yaml", ["x={data}"])}).validate()
    with pytest.raises(ConfigError, match="n_subjects must be at least 10"):
        DemoConfig(n_subjects=3).validate()


def test_fill_placeholders(tmp_path):
    folders = {"out": tmp_path, "dataset": tmp_path / "ds", "run:align": tmp_path / "runs" / "align"}
    assert fill_placeholders("init.ecg_encoder={run:align}/ecg_encoder", folders) == \
        f"init.ecg_encoder={tmp_path}/runs/align/ecg_encoder"
    assert fill_placeholders("data.path={dataset}", folders) == f"data.path={tmp_path}/ds"
