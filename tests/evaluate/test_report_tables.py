"""Tests of the results tables (formatting, long table, paper-style pivot, CSV and
Markdown files) and of the downstream-head plots (ROC, calibration, scatter,
Bland–Altman)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cardiacnets.evaluate.plots import bland_altman_plot, calibration_plot, roc_plot, scatter_plot
from cardiacnets.evaluate.report_tables import (
    COLUMNS,
    format_ci,
    markdown_table,
    paper_table,
    results_table,
    rows_from_ci,
    write_table,
)
from cardiacnets.stats.bootstrap import bootstrap_ci
from cardiacnets.stats.metrics import classification_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows():
    rows = []
    for mode, offset in (("linear", 0.0), ("finetune", 0.05)):
        for fraction in (1.0, 0.1):
            shared = {"model": "cardiacnets", "mode": mode, "label_fraction": fraction, "n": 184}
            auroc = 0.80 + offset - (0.1 if fraction < 1 else 0.0)
            rows.append({**shared, "task": "heart_failure", "metric": "auroc", "value": auroc,
                         "low": auroc - 0.05, "high": auroc + 0.05})
            rows.append({**shared, "task": "heart_failure", "metric": "ece", "value": 0.04, "low": 0.02, "high": 0.07})
            rows.append({**shared, "task": "lvedv_ml", "metric": "mae", "value": 12.5 - 10 * offset,
                         "low": 11.0, "high": 14.25})
    return rows


def test_format_ci():
    assert format_ci(0.8123, 0.7741, 0.8499) == "0.812 (0.774–0.850)"
    assert format_ci(12.345, 11.0, 14.0, digits=1) == "12.3 (11.0–14.0)"
    assert format_ci(0.5, float("nan"), None) == "0.500"
    assert format_ci(float("nan"), 0.1, 0.2) == "–"


def test_results_table_columns_defaults_and_errors():
    df = results_table([{"task": "lvef_pct", "metric": "mae", "value": 4, "seed": 3},
                        {"task": "lvef_pct", "metric": "r2", "value": "0.5", "mode": "linear", "label_fraction": 0.1}])
    assert list(df.columns) == list(COLUMNS) + ["seed"]
    assert df["model"].tolist() == ["", ""] and df["mode"].tolist() == ["", "linear"]
    assert df["value"].tolist() == [4.0, 0.5] and np.isnan(df.loc[0, "low"]) and np.isnan(df.loc[0, "label_fraction"])
    with pytest.raises(ValueError, match="row 0 lacks \\['metric'\\]"):
        results_table([{"task": "x", "value": 1.0}])
    with pytest.raises(ValueError, match="row 0: value must be a number"):
        results_table([{"task": "x", "metric": "auroc", "value": "high"}])


def test_rows_from_ci_feed_the_table():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    score = np.clip(0.3 * y + 0.7 * rng.random(60), 0, 1)
    ci = bootstrap_ci(classification_metrics, y, score, n_boot=100, stratify=y)
    rows = rows_from_ci(ci, "heart_failure", metrics=["auroc", "auprc"], model="m", mode="linear",
                        label_fraction=0.5, n=60)
    df = results_table(rows)
    assert df["metric"].tolist() == ["auroc", "auprc"]
    assert df.loc[0, "value"] == ci["auroc"]["value"] and df.loc[1, "high"] == ci["auprc"]["high"]
    assert (df.loc[0, "mode"], df.loc[0, "label_fraction"], df.loc[0, "n"]) == ("linear", 0.5, 60.0)
    with pytest.raises(ValueError, match="not in the CI results"):
        rows_from_ci(ci, "heart_failure", metrics=["pearson_r"])


def test_paper_table_pivots_headline_metrics():
    table = paper_table(results_table(_rows()))
    assert table.index.tolist() == [("heart_failure", "auroc"), ("lvedv_ml", "mae")]
    assert table.columns.names == ["mode", "label_fraction"]
    assert table.columns.tolist() == [("linear", "10% labels"), ("linear", "100% labels"),
                                      ("finetune", "10% labels"), ("finetune", "100% labels")]
    assert table.loc[("heart_failure", "auroc"), ("finetune", "100% labels")] == "0.850 (0.800–0.900)"
    assert table.loc[("lvedv_ml", "mae"), ("linear", "10% labels")] == "12.500 (11.000–14.250)"


def test_paper_table_metric_choice_models_and_gaps():
    df = results_table(_rows())
    chosen = paper_table(df, {"heart_failure": "ece"}, digits=2)
    assert chosen.index.tolist() == [("heart_failure", "ece"), ("lvedv_ml", "mae")]
    assert chosen.iloc[0, 0] == "0.04 (0.02–0.07)"
    assert paper_table(df, "all").index.tolist() == [("heart_failure", "auroc"), ("heart_failure", "ece"),
                                                     ("lvedv_ml", "mae")]
    with pytest.raises(ValueError, match="task 'lvedv_ml' has no metric 'auroc'"):
        paper_table(df, {"lvedv_ml": "auroc"})
    # A second model adds a model level; a combination it did not run shows "–".
    extra = results_table(_rows() + [{"model": "ecg_only", "mode": "scratch", "label_fraction": 1.0,
                                      "task": "heart_failure", "metric": "auroc", "value": 0.7}])
    table = paper_table(extra)
    assert table.columns.names == ["model", "mode", "label_fraction"]
    assert table.loc[("heart_failure", "auroc"), ("ecg_only", "scratch", "100% labels")] == "0.700"
    assert table.loc[("lvedv_ml", "mae"), ("ecg_only", "scratch", "100% labels")] == "–"
    with pytest.raises(ValueError, match="two results for task 'heart_failure'"):
        paper_table(results_table(_rows() + _rows()))


def test_markdown_table_by_hand():
    df = pd.DataFrame({"a": ["x|y", "z"], "b": [1.5, None]}, index=pd.Index(["r1", "r2"], name="row"))
    assert markdown_table(df) == "| row | a | b |\n|---|---|---|\n| r1 | x\\|y | 1.5 |\n| r2 | z |  |\n"
    plain = pd.DataFrame({"a": [1]})
    assert markdown_table(plain) == "| a |\n|---|\n| 1 |\n"


def test_write_table_csv_round_trip_and_markdown(tmp_path):
    df = results_table(_rows())
    csv_path, markdown_path = write_table(df, tmp_path / "out" / "heads_results")
    assert (csv_path.name, markdown_path.name) == ("heads_results.csv", "heads_results.md")
    back = pd.read_csv(csv_path)
    pd.testing.assert_frame_equal(back, df)
    text = markdown_path.read_text()
    lines = text.splitlines()
    assert lines[0] == "## Headline metrics (value, 95% CI)"
    assert lines[2] == "| task | metric | linear, 10% labels | linear, 100% labels | finetune, 10% labels | finetune, 100% labels |"
    assert lines[4] == ("| heart_failure | auroc | 0.700 (0.650–0.750) | 0.800 (0.750–0.850) | 0.750 (0.700–0.800) "
                        "| 0.850 (0.800–0.900) |")
    assert "## All metrics (value, 95% CI)" in lines
    assert sum(line.startswith("| heart_failure | ece |") for line in lines) == 1


# ---------------------------------------------------------------- plots

@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 60)
    probability = np.clip(0.35 * y + 0.65 * rng.random(120), 0, 1)
    truth = rng.normal(150, 30, 120)
    return y, probability, truth, truth + rng.normal(5, 12, 120)


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def test_classification_plots_write_pngs(tmp_path, predictions):
    y, probability, _, _ = predictions
    curves = {"aligned": (y, probability), "scratch": (y, np.clip(probability + 0.2, 0, 1))}
    assert _is_png(roc_plot(curves, tmp_path / "plots" / "roc.png", title="heart failure"))
    assert _is_png(calibration_plot(curves, tmp_path / "calibration.png", title="heart failure", n_bins=5))
    with pytest.raises(ValueError, match="both classes"):
        roc_plot({"m": (np.ones(5), np.linspace(0, 1, 5))}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="probabilities"):
        calibration_plot({"m": (y, probability * 3)}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_regression_plots_write_pngs(tmp_path, predictions):
    _, _, truth, prediction = predictions
    assert _is_png(scatter_plot(truth, prediction, tmp_path / "scatter.png", unit="ml", title="LVEDV"))
    assert _is_png(bland_altman_plot(truth, prediction, tmp_path / "ba.png", unit="ml", title="LVEDV"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        scatter_plot(truth, np.full_like(truth, np.nan), tmp_path / "bad.png", unit="ml")
