"""Results tables of the downstream heads: long tables, paper-style pivots, CSV and Markdown.

A result is one row ``{model, mode, label_fraction, task, metric, value, low,
high, n}``: e.g. the AUROC (with its 95% bootstrap CI, see
`cardiacnets.stats.bootstrap.bootstrap_ci`) of the linear-probe head on
aligned ECG features trained on 10% of the labels, for the task
``lvef_below_40``. `results_table` gathers rows into a long
``pandas.DataFrame``; `paper_table` pivots it the way the CardiacNets paper
(arXiv 2411.13602) lays out its downstream results: one row per task (and
metric), one column per training mode and label fraction, cells
``value (low–high)``; `write_table` writes the long table as CSV and the
pivot as Markdown. Markdown is written here (`markdown_table`) rather than with
``DataFrame.to_markdown``, which needs the optional ``tabulate`` package.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "COLUMNS",
    "HEADLINE_METRICS",
    "format_ci",
    "markdown_table",
    "paper_table",
    "results_table",
    "rows_from_ci",
    "write_table",
]

COLUMNS = ("model", "mode", "label_fraction", "task", "metric", "value", "low", "high", "n")
_REQUIRED = ("task", "metric", "value")
_TEXT_COLUMNS = ("model", "mode", "task", "metric")
_NUMBER_COLUMNS = ("label_fraction", "value", "low", "high", "n")
# The metric a paper table shows for a task when none is chosen: the first of
# these the task has (classification, multi-class, regression).
HEADLINE_METRICS = ("auroc", "macro_auroc", "pearson_r", "mae", "r2")


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_ci(value, low, high, digits: int = 3) -> str:
    """A value with its confidence interval: ``"0.812 (0.774–0.850)"``.

    Args:
        value: the point estimate.
        low: lower CI bound (NaN/None: no interval shown).
        high: upper CI bound.
        digits: decimals.

    Returns:
        The text; ``"–"`` for a missing value, the bare value when the
        interval is missing.
    """
    if _is_missing(value) or not np.isfinite(float(value)):
        return "–"
    text = f"{float(value):.{digits}f}"
    if _is_missing(low) or _is_missing(high) or not (np.isfinite(float(low)) and np.isfinite(float(high))):
        return text
    return f"{text} ({float(low):.{digits}f}–{float(high):.{digits}f})"


def rows_from_ci(ci: dict, task: str, metrics=None, **fields) -> list[dict]:
    """Result rows from the output of `bootstrap_ci` for one task.

    Args:
        ci: ``{metric: {"value", "low", "high", ...}}`` (`bootstrap_ci`).
        task: the task's name (``"lvef_pct"``, ``"heart_failure"``).
        metrics: the metrics to keep, in order; None keeps all.
        **fields: the other columns, shared by every row (``model=``,
            ``mode=``, ``label_fraction=``, ``n=``).

    Returns:
        One row per metric, ready for `results_table`.
    """
    names = list(ci) if metrics is None else list(metrics)
    missing = [name for name in names if name not in ci]
    if missing:
        raise ValueError(f"metric(s) {missing} not in the CI results (have {sorted(ci)})")
    return [{**fields, "task": task, "metric": name, "value": ci[name]["value"], "low": ci[name]["low"],
             "high": ci[name]["high"]} for name in names]


def results_table(rows: list[dict]) -> pd.DataFrame:
    """Gather result rows into a long table.

    Args:
        rows: dicts with at least ``task``, ``metric`` and ``value``; ``model``,
            ``mode``, ``label_fraction``, ``low``, ``high`` and ``n`` are
            optional (empty text / NaN when absent); other keys become extra
            columns after the standard ones.

    Returns:
        A DataFrame with the columns of `COLUMNS` first, one row per result,
        in the order given.

    Raises:
        ValueError: a row lacks a required key or has a non-numeric value.
    """
    records = []
    for position, row in enumerate(rows):
        missing = [key for key in _REQUIRED if key not in row]
        if missing:
            raise ValueError(f"result row {position} lacks {missing}: {row}")
        record = dict(row)
        for key in _NUMBER_COLUMNS:
            value = record.get(key)
            try:
                record[key] = float("nan") if _is_missing(value) else float(value)
            except (TypeError, ValueError):
                raise ValueError(f"result row {position}: {key} must be a number, got {value!r}") from None
        for key in _TEXT_COLUMNS:
            record[key] = "" if _is_missing(record.get(key)) else str(record[key])
        records.append(record)
    extra = [key for record in records for key in record if key not in COLUMNS]
    columns = list(COLUMNS) + list(dict.fromkeys(extra))
    return pd.DataFrame.from_records(records, columns=columns)


def _fraction_label(fraction: float) -> str:
    return "" if math.isnan(fraction) else f"{100.0 * fraction:g}% labels"


def _headline(metrics: list[str]) -> str:
    for name in HEADLINE_METRICS:
        if name in metrics:
            return name
    return metrics[0]


def paper_table(df: pd.DataFrame, metric_per_task: dict | str | None = None, digits: int = 3) -> pd.DataFrame:
    """Pivot a long results table into the paper's layout: tasks down, (mode, label fraction) across.

    Args:
        df: a `results_table`.
        metric_per_task: which metric each task shows: None picks its headline
            metric (the first of `HEADLINE_METRICS` it has, else its first
            metric); a dict ``{task: metric}`` overrides that per task;
            ``"all"`` shows every metric.
        digits: decimals of the cells.

    Returns:
        A DataFrame indexed by (task, metric), tasks in order of first
        appearance; columns are a MultiIndex (mode, label fraction) — with a
        leading model level when the table holds more than one model — modes
        in order of first appearance, fractions ascending; cells
        ``"value (low–high)"``, ``"–"`` where a combination was not run.

    Raises:
        ValueError: a chosen metric is missing for its task, or two rows fill
            the same cell.
    """
    if df.empty:
        raise ValueError("the results table is empty")
    tasks = list(dict.fromkeys(df["task"]))
    chosen = []
    for task in tasks:
        task_metrics = list(dict.fromkeys(df.loc[df["task"] == task, "metric"]))
        if metric_per_task == "all":
            chosen.extend((task, metric) for metric in task_metrics)
            continue
        if isinstance(metric_per_task, str):
            raise ValueError(f"metric_per_task must be None, a dict or 'all', got {metric_per_task!r}")
        metric = (metric_per_task or {}).get(task) or _headline(task_metrics)
        if metric not in task_metrics:
            raise ValueError(f"task {task!r} has no metric {metric!r} (has {task_metrics})")
        chosen.append((task, metric))
    keep = pd.MultiIndex.from_frame(df[["task", "metric"]]).isin(chosen)
    selected = df[keep]

    with_model = selected["model"].nunique() > 1
    modes = list(dict.fromkeys(selected["mode"]))
    models = list(dict.fromkeys(selected["model"]))
    known = selected["label_fraction"].dropna()
    fractions = sorted(set(known.tolist())) + ([float("nan")] if len(known) < len(selected) else [])
    column_keys, cells = [], {}
    for _, row in selected.iterrows():
        fraction = _fraction_label(row["label_fraction"])
        column = (row["model"], row["mode"], fraction) if with_model else (row["mode"], fraction)
        cell = (row["task"], row["metric"], column)
        if cell in cells:
            raise ValueError(f"two results for task {row['task']!r}, metric {row['metric']!r}, column {column}; "
                             "tell them apart with model / mode / label_fraction")
        cells[cell] = format_ci(row["value"], row["low"], row["high"], digits)
    for model in (models if with_model else [None]):
        for mode in modes:
            for fraction in fractions:
                column = (model, mode, _fraction_label(fraction)) if with_model else (mode, _fraction_label(fraction))
                if any(key[2] == column for key in cells):
                    column_keys.append(column)
    names = ["model", "mode", "label_fraction"] if with_model else ["mode", "label_fraction"]
    table = pd.DataFrame(
        [[cells.get((task, metric, column), "–") for column in column_keys] for task, metric in chosen],
        index=pd.MultiIndex.from_tuples(chosen, names=["task", "metric"]),
        columns=pd.MultiIndex.from_tuples(column_keys, names=names),
    )
    return table


def _markdown_cell(value) -> str:
    text = "" if _is_missing(value) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame.

    Index levels become the leading columns unless the index is a plain
    ``RangeIndex``; MultiIndex column labels are joined with ``", "``
    (empty levels left out).

    Args:
        df: the table.

    Returns:
        The Markdown text, one line per row, ending in a newline.
    """
    def label(key) -> str:
        parts = key if isinstance(key, tuple) else (key,)
        return ", ".join(str(part) for part in parts if not _is_missing(part) and str(part) != "")

    show_index = not isinstance(df.index, pd.RangeIndex)
    index_names = [name or "" for name in df.index.names] if show_index else []
    header = index_names + [label(column) for column in df.columns]
    lines = ["| " + " | ".join(_markdown_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for index, row in zip(df.index, df.itertuples(index=False, name=None)):
        leading = list(index) if isinstance(index, tuple) else [index]
        values = (leading if show_index else []) + list(row)
        lines.append("| " + " | ".join(_markdown_cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, path_stem: str | os.PathLike, metric_per_task: dict | None = None,
                digits: int = 3) -> list[Path]:
    """Write a results table as ``STEM.csv`` (long, every number) and ``STEM.md`` (paper-style pivots).

    The Markdown holds the headline table (`paper_table` with
    `metric_per_task`) and then every metric.

    Args:
        df: a `results_table`.
        path_stem: output path without suffix (parent folders are created).
        metric_per_task: see `paper_table`.
        digits: decimals in the Markdown cells (the CSV keeps full precision).

    Returns:
        ``[csv_path, markdown_path]``.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path = stem.with_name(stem.name + ".csv")
    markdown_path = stem.with_name(stem.name + ".md")
    df.to_csv(csv_path, index=False)
    headline = paper_table(df, metric_per_task, digits)
    every_metric = paper_table(df, "all", digits)
    markdown_path.write_text(
        "## Headline metrics (value, 95% CI)\n\n" + markdown_table(headline)
        + "\n## All metrics (value, 95% CI)\n\n" + markdown_table(every_metric)
    )
    return [csv_path, markdown_path]
