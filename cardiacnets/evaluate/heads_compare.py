"""The comparison of training modes and label fractions behind the paper's downstream table.

``cardiacnets heads compare --config configs/demo/heads_compare.yaml --out DIR``
trains every (mode, label fraction) run of a heads `TrainConfig` through the
one training loop, chooses each mode's hyperparameters on the VALIDATION loss
from a search grid shared by the modes, evaluates the chosen runs on the test
split with bootstrap CIs (also with reduced leads), compares modes pairwise on
the same test subjects (paired bootstrap; DeLong for AUROC) and writes the
table mode × task × label fraction (``results.md``; the reduced-lead scores in
``results_reduced_leads.md``).

Modes (CardiacNets, arXiv 2411.13602, downstream experiments):

- ``linear_probe``: the aligned ECG encoder, frozen; heads only.
- ``finetune``: the aligned encoder fine-tuned, heads started from the linear
  probe of the same label fraction (LP-FT).
- ``scratch``: the same encoder architecture from random weights, trained on the
  ECG only — the paper's "not aligned" baseline.
- ``mae_linear_probe`` / ``mae_finetune``: the same two with the encoder of a
  ``pretrain_ecg`` run (masked-autoencoder initialisation only), when
  ``mae_encoder`` is given.

A finished run (its ``summary.json`` written) is reused when the command is run
again, and an interrupted one resumes from its checkpoint, so a long comparison
can be stopped and continued.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from cardiacnets.config import apply_overrides, from_dict, load_config, read_yaml, save_config, to_dict
from cardiacnets.data.store import TrainingSet
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.evaluate.heads import compare_predictions, load_ceiling, result_rows, score_split
from cardiacnets.evaluate.heads_baseline import BASELINES, MeasurementBaseline
from cardiacnets.evaluate.report_tables import results_table, write_table
from cardiacnets.heads.inference import load_heads_model, model_columns, predict_split
from cardiacnets.heads.targets import (
    HeadTargets, labelled_rows, open_heads_split, select_label_fraction, with_derived_targets,
)
from cardiacnets.train import TrainConfig, train
from cardiacnets.train.checkpoint import latest_checkpoint

MODES = ("linear_probe", "finetune", "scratch", "mae_linear_probe", "mae_finetune")
#: Mode → (options.mode, which encoder, the mode whose model warm-starts it).
_MODE_PLAN = {
    "linear_probe": ("linear_probe", "aligned", None),
    "finetune": ("finetune", "aligned", "linear_probe"),
    "scratch": ("scratch", None, None),
    "mae_linear_probe": ("linear_probe", "mae", None),
    "mae_finetune": ("finetune", "mae", "mae_linear_probe"),
}
#: The metric of each kind of task in the headline table and the pairwise comparisons.
HEADLINE = {"regression": "r2", "binary": "auroc", "multiclass": "macro_auroc"}


@dataclass
class BudgetConfig:
    """Training length of one run: ``epochs`` over the selected subjects, at most ``max_steps`` optimiser steps.

    Attributes:
        epochs: passes over the run's training subjects.
        max_steps: cap on optimiser steps (large fractions stop here).
        min_steps: floor on optimiser steps (tiny fractions train at least this long).
    """

    epochs: int = 40
    max_steps: int = 300
    min_steps: int = 50

    def validate(self) -> None:
        if min(self.epochs, self.max_steps, self.min_steps) < 1 or self.min_steps > self.max_steps:
            raise ConfigError("budget: epochs, max_steps and min_steps must be >= 1 and min_steps <= max_steps")

    def steps(self, n_subjects: int, batch_size: int) -> int:
        """Optimiser steps for `n_subjects` training subjects in batches of `batch_size`."""
        per_epoch = max(1, n_subjects // batch_size)
        return int(min(self.max_steps, max(self.min_steps, self.epochs * per_epoch)))


@dataclass
class EvaluationConfig:
    """How the chosen runs are scored.

    Attributes:
        split: split of the table.
        val_split: split of the decision thresholds.
        lead_subsets: also score with only these leads shown.
        n_boot: bootstrap resamples of the CIs and comparisons.
        seed: bootstrap seed.
        comparisons: ``[reference, other]`` mode pairs compared at every label fraction (other − reference).
    """

    split: str = "test"
    val_split: str = "val"
    lead_subsets: list[str] = field(default_factory=lambda: ["I", "II", "limb"])
    n_boot: int = 1000
    seed: int = 0
    comparisons: list[list[str]] = field(default_factory=lambda: [["scratch", "finetune"],
                                                                  ["scratch", "linear_probe"]])


@dataclass
class CompareConfig:
    """A comparison of heads training modes across label fractions.

    Attributes:
        train_config: a ``task: heads`` `TrainConfig` YAML every run starts from.
        data: training set folder (overrides ``data.path``).
        aligned_encoder: the aligned ECG encoder (an ``align`` run's ``ecg_encoder``).
        mae_encoder: a ``pretrain_ecg`` run's model or ``ecg_encoder`` (for the ``mae_*`` modes).
        modes: modes to run and report (see the module docstring).
        label_fractions: fractions of the labelled training subjects.
        mode_fractions: mode → the fractions it runs at (a subset of ``label_fractions``; modes not
            listed run at all of them). A warm-started mode needs its probe at the same fractions,
            which is trained there even when not listed.
        fraction_seed: seed of the fractions' stratified draws.
        search: mode → {override key: candidate values}; every combination is trained and the
            lowest validation loss wins. Give compared modes the same grid for a fair comparison.
        search_fractions: the fractions where the search runs; the others use the choice of the
            nearest searched fraction (all fractions when empty).
        train_overrides: ``key=value`` overrides of the train config for every mode (e.g. the targets).
        overrides: mode → fixed ``key=value`` overrides of the train config.
        budget: mode → training length (`BudgetConfig`); modes not listed use the default.
        evaluation: scoring of the chosen runs.
    """

    train_config: str = "configs/demo/heads.yaml"
    data: str = ""
    aligned_encoder: str = ""
    mae_encoder: str | None = None
    modes: list[str] = field(default_factory=lambda: ["linear_probe", "finetune", "scratch"])
    label_fractions: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    mode_fractions: dict[str, list[float]] = field(default_factory=dict)
    fraction_seed: int = 0
    search: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    search_fractions: list[float] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)
    overrides: dict[str, list[str]] = field(default_factory=dict)
    budget: dict[str, BudgetConfig] = field(default_factory=dict)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def validate(self) -> None:
        unknown = [m for m in [*self.modes, *self.search, *self.overrides, *self.budget] if m not in MODES]
        if unknown:
            raise ConfigError(f"unknown mode(s) {sorted(set(unknown))}; modes: {', '.join(MODES)}")
        if not self.modes:
            raise ConfigError("modes is empty")
        if any(m.startswith("mae_") for m in self.modes) and not self.mae_encoder:
            raise ConfigError("the mae_* modes need mae_encoder (a pretrain_ecg run's model or ecg_encoder)")
        if any(_MODE_PLAN[m][1] == "aligned" for m in self.modes) and not self.aligned_encoder:
            raise ConfigError("aligned_encoder is empty (an align run's ecg_encoder folder)")
        if not self.label_fractions or any(not 0.0 < f <= 1.0 for f in self.label_fractions):
            raise ConfigError(f"label_fractions must be in (0, 1], got {self.label_fractions}")
        missing = [f for f in [*self.search_fractions, *(f for fs in self.mode_fractions.values() for f in fs)]
                   if f not in self.label_fractions]
        if missing:
            raise ConfigError(f"search_fractions / mode_fractions {missing} are not among label_fractions "
                              f"{self.label_fractions}")
        unknown = [m for m in self.mode_fractions if m not in MODES]
        if unknown:
            raise ConfigError(f"mode_fractions: unknown mode(s) {unknown}")

    def fractions(self, mode: str) -> list[float]:
        """The label fractions `mode` runs at."""
        return sorted(self.mode_fractions.get(mode, self.label_fractions))
        for pair in self.evaluation.comparisons:
            if len(pair) != 2 or any(m not in MODES for m in pair):
                raise ConfigError(f"evaluation.comparisons: {pair} is not a pair of modes")


@dataclass
class RunRecord:
    """One trained run of the comparison."""

    mode: str
    fraction: float
    overrides: dict[str, Any]
    run_dir: Path
    best_val_loss: float
    val: dict[str, float]
    train_seconds: float
    steps: int
    chosen: bool = False


def _fraction_tag(fraction: float) -> str:
    return f"f{round(100 * fraction):03d}"


def _run_name(mode: str, fraction: float, candidate: dict[str, Any]) -> str:
    tags = "_".join(f"{k.split('.')[-1]}{v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}{v}"
                    for k, v in candidate.items())
    return f"{mode}_{_fraction_tag(fraction)}" + (f"_{tags}" if tags else "")


def override_value(value: Any) -> str:
    """`value` as the YAML text of a ``key=value`` override (``3e-05`` → ``3.0e-05``, which YAML reads as a float)."""
    import yaml

    return yaml.safe_dump([value], default_flow_style=True, width=1 << 16).strip()[1:-1]


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _grid(search: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(search)
    return [dict(zip(keys, values)) for values in itertools.product(*(search[k] for k in keys))] or [{}]


class HeadsComparison:
    """Runs a `CompareConfig` into an output folder (see the module docstring).

    Args:
        config: the comparison.
        out_dir: output folder (runs, tables, comparisons).
        progress: show training progress bars.
        log: where progress lines go (``print`` by default).
    """

    def __init__(self, config: CompareConfig, out_dir: str | os.PathLike, progress: bool = False, log=print):
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.log = log
        self.base = load_config(TrainConfig, config.train_config,
                                ([f"data.path={config.data}"] if config.data else []) + list(config.train_overrides))
        if self.base.task != "heads":
            raise ConfigError(f"{config.train_config}: task is {self.base.task!r}; the comparison trains task heads")
        self.records: list[RunRecord] = []
        self.chosen: dict[tuple[str, float], RunRecord] = {}

    # --- training ----------------------------------------------------------------------------------------------
    def _n_train(self) -> int:
        return len(TrainingSet(self.base.data.path, split=self.base.data.train_split, require=("ecg",)))

    def _train_config(self, mode: str, fraction: float, candidate: dict[str, Any], steps: int):
        options_mode, encoder, warm_start = _MODE_PLAN[mode]
        data = copy.deepcopy(to_dict(self.base))
        overrides = [f"options.mode={options_mode}", f"options.label_fraction={fraction}",
                     f"options.fraction_seed={self.config.fraction_seed}", f"schedule.max_steps={steps}",
                     "schedule.epochs=null", "init.ecg_encoder=null", "init.model=null", "output_dir=null"]
        if warm_start is not None:
            overrides.append(f"init.model={self.chosen[(warm_start, fraction)].run_dir / 'model'}")
        elif encoder == "aligned":
            overrides.append(f"init.ecg_encoder={self.config.aligned_encoder}")
        elif encoder == "mae":
            overrides.append(f"init.ecg_encoder={self.config.mae_encoder}")
        if warm_start is not None:
            overrides.append("model.overrides={}")
        overrides += list(self.config.overrides.get(mode, []))
        overrides += [f"{k}={override_value(v)}" for k, v in candidate.items()]
        return from_dict(TrainConfig, apply_overrides(data, overrides))

    def _train_one(self, mode: str, fraction: float, candidate: dict[str, Any], steps: int) -> RunRecord:
        run_dir = self.out_dir / "runs" / _run_name(mode, fraction, candidate)
        summary_path = run_dir / "summary.json"
        config = self._train_config(mode, fraction, candidate, steps)
        config.validate()  # resolves the options, as the saved config.yaml holds them
        if (run_dir / "config.yaml").is_file():
            saved = read_yaml(run_dir / "config.yaml")
            differing = sorted(k for k, v in _flatten(to_dict(config)).items()
                               if k != "output_dir" and _flatten(saved).get(k) != v)
            if differing:
                raise ConfigError(f"{run_dir} was trained with another config ({', '.join(differing[:4])} differ); "
                                  "delete the folder or choose another --out")
        if summary_path.is_file() and (run_dir / "model").is_dir():
            summary = json.loads(summary_path.read_text())
            self.log(f"[{mode} {fraction:g}] reusing {run_dir.name}: best validation loss "
                     f"{summary['best_val_loss']:.4g}")
        else:
            resume = latest_checkpoint(run_dir) is not None
            self.log(f"[{mode} {fraction:g}] training {run_dir.name} ({steps} steps"
                     f"{', resuming' if resume else ''})")
            started = time.perf_counter()
            result = train(config, run_dir, resume=resume, progress=self.progress)
            summary = json.loads(summary_path.read_text())
            self.log(f"[{mode} {fraction:g}] {run_dir.name}: best validation loss {result.best_val_loss:.4g} at step "
                     f"{result.best_step} ({time.perf_counter() - started:.0f} s)")
        val = summary.get("val", {})
        return RunRecord(mode, fraction, candidate, run_dir, float(summary["best_val_loss"]), val,
                         float(summary.get("train_seconds", 0.0)), int(summary["step"]))

    def _candidates(self, mode: str, fraction: float) -> list[dict[str, Any]]:
        grid = _grid(self.config.search.get(mode, {}))
        searched = self.config.search_fractions or self.config.label_fractions
        if fraction in searched or len(grid) == 1:
            return grid
        nearest = min(searched, key=lambda f: (abs(math.log(f) - math.log(fraction)), f))
        return [self._choose(mode, nearest).overrides]

    def _choose(self, mode: str, fraction: float) -> RunRecord:
        if (mode, fraction) not in self.chosen:
            self._run_mode(mode, fraction)
        return self.chosen[(mode, fraction)]

    def _run_mode(self, mode: str, fraction: float) -> None:
        warm_start = _MODE_PLAN[mode][2]
        if warm_start is not None:
            self._choose(warm_start, fraction)
        budget = self.config.budget.get(mode, BudgetConfig())
        steps = budget.steps(max(1, round(fraction * self.n_train)), self.base.data.batch_size)
        records = [self._train_one(mode, fraction, candidate, steps) for candidate in self._candidates(mode, fraction)]
        best = min(records, key=lambda r: r.best_val_loss if math.isfinite(r.best_val_loss) else math.inf)
        best.chosen = True
        self.records += records
        self.chosen[(mode, fraction)] = best

    def train_all(self) -> None:
        """Train (or reuse) every run: each fraction's searched fractions first, so the others can copy their choice."""
        self.n_train = self._n_train()
        searched = self.config.search_fractions or self.config.label_fractions
        order = sorted(self.config.label_fractions, key=lambda f: (f not in searched, f))
        for fraction in order:
            for mode in self.config.modes:
                if fraction in self.config.fractions(mode):
                    self._choose(mode, fraction)

    # --- evaluation --------------------------------------------------------------------------------------------
    def evaluate_all(self) -> dict:
        """Score every chosen run of a reported mode, compare the mode pairs, write the tables."""
        ev = self.config.evaluation
        data = self.base.data.path
        ceiling, ceiling_path = load_ceiling(data)
        rows, scores, predictions = [], {}, {}
        for fraction in sorted(self.config.label_fractions):
            for mode in [m for m in self.config.modes if fraction in self.config.fractions(m)]:
                record = self.chosen[(mode, fraction)]
                model = load_heads_model(record.run_dir)
                columns = model_columns(model)
                test_set = open_heads_split(data, ev.split, columns)
                val_set = open_heads_split(data, ev.val_split, columns)
                infer = partial(predict_split, batch_size=64, device="cpu")
                test, val = infer(model, test_set), infer(model, val_set)
                predictions[(mode, fraction)] = (model, test, val)
                result = score_split(model, test, val, n_boot=ev.n_boot, seed=ev.seed, ceiling=ceiling)
                scores[f"{mode}@{fraction:g}"] = {"run": str(record.run_dir), "overrides": record.overrides,
                                                   "leads": "12", **result}
                rows += result_rows(result, mode=mode, label_fraction=fraction, leads="12", run=record.run_dir.name)
                for subset in ev.lead_subsets:
                    reduced = score_split(model, infer(model, test_set, leads=subset),
                                          infer(model, val_set, leads=subset), n_boot=ev.n_boot, seed=ev.seed,
                                          ceiling=ceiling)
                    scores[f"{mode}@{fraction:g}"][f"leads_{subset}"] = reduced
                    rows += result_rows(reduced, mode=f"{mode} [leads {subset}]", label_fraction=fraction,
                                        leads=subset, run=record.run_dir.name)
                self.log(f"[{mode} {fraction:g}] evaluated {record.run_dir.name}")
        comparisons = {}
        for fraction in sorted(self.config.label_fractions):
            rows += self._score_baselines(fraction, predictions, scores, comparisons, ceiling)
        for reference, other in ev.comparisons:
            if reference not in self.config.modes or other not in self.config.modes:
                continue
            for fraction in sorted(set(self.config.fractions(reference)) & set(self.config.fractions(other))):
                model_a, test_a, val_a = predictions[(reference, fraction)]
                model_b, test_b, val_b = predictions[(other, fraction)]
                comparisons[f"{other} - {reference} @ {fraction:g}"] = compare_predictions(
                    model_a, test_a, model_b, test_b, val_a, val_b, n_boot=ev.n_boot, seed=ev.seed)
        headline = {r["task"]: "r2" for r in rows if r["metric"] == "r2"}
        outputs = write_table(results_table([r for r in rows if r["leads"] == "12"]), self.out_dir / "results",
                              metric_per_task=headline)
        reduced_rows = [r for r in rows if r["leads"] != "12"]
        if reduced_rows:
            outputs += write_table(results_table(reduced_rows), self.out_dir / "results_reduced_leads",
                                   metric_per_task=headline)
        (self.out_dir / "comparisons.md").write_text(comparison_markdown(comparisons))
        (self.out_dir / "comparisons.json").write_text(json.dumps(comparisons, indent=2) + "\n")
        selection = self._selection_table()
        summary = {"config": to_dict(self.config), "ceiling": ceiling_path, "n_train_split": self.n_train,
                   "scores": scores, "selection": selection,
                   "outputs": [str(p) for p in outputs] + [str(self.out_dir / n) for n in (
                       "comparisons.md", "comparisons.json", "selection.csv", "compare.json")]}
        (self.out_dir / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _score_baselines(self, fraction: float, predictions: dict, scores: dict, comparisons: dict,
                         ceiling: dict | None) -> list[dict]:
        """The measurement baselines fitted on the same label fraction of the training split as the heads runs
        (the seeded stratified draw of `select_label_fraction`, before any case-control balancing), scored on the
        same test subjects and compared with every mode at that fraction."""
        ev = self.config.evaluation
        modes = [m for m in self.config.modes if (m, fraction) in predictions]
        if not modes:
            return []
        model, test, val = predictions[(modes[0], fraction)]
        c = model.config
        targets = HeadTargets(list(c.regression_targets), list(c.regression_units), list(c.binary_targets),
                              c.multiclass_target, list(c.multiclass_classes))
        train = with_derived_targets(TrainingSet(self.base.data.path, split=self.base.data.train_split,
                                                 require=("ecg",)).manifest)
        keep = labelled_rows(train, targets)
        if fraction < 1.0:
            keep &= select_label_fraction(train, targets, fraction, self.config.fraction_seed)
        subjects = set(train.loc[keep, "subject_id"].astype(str))
        rows = []
        for name in BASELINES:
            try:
                baseline = MeasurementBaseline(self.base.data.path, name, list(c.regression_targets),
                                               list(c.binary_targets), split=self.base.data.train_split,
                                               subjects=subjects)
            except InputError as err:
                scores[f"baseline_{name}@{fraction:g}"] = {"skipped": str(err)}
                continue
            base_test = baseline.predict(test)
            base_val = baseline.predict(val)
            result = score_split(model, base_test, base_val, n_boot=ev.n_boot, seed=ev.seed, ceiling=ceiling)
            scores[f"baseline_{name}@{fraction:g}"] = {**baseline.info(), "leads": "none", **result}
            rows += result_rows(result, mode=f"baseline: {name}", label_fraction=fraction, leads="12",
                                run=f"baseline_{name}")
            for mode in modes:
                mode_model, mode_test, mode_val = predictions[(mode, fraction)]
                comparisons[f"{mode} - baseline {name} @ {fraction:g}"] = compare_predictions(
                    model, base_test, mode_model, mode_test, base_val, mode_val, n_boot=ev.n_boot, seed=ev.seed)
        self.log(f"[baselines {fraction:g}] fitted on {len(subjects)} training subjects")
        return rows

    def _selection_table(self) -> list[dict]:
        import pandas as pd

        rows = [{"mode": r.mode, "label_fraction": r.fraction, "run": r.run_dir.name,
                 "overrides": json.dumps(r.overrides), "steps": r.steps, "best_val_loss": r.best_val_loss,
                 "val_r2_mean": r.val.get("r2_mean"), "val_auroc_mean": r.val.get("auroc_mean"),
                 "train_seconds": r.train_seconds, "chosen": r.chosen} for r in self.records]
        pd.DataFrame(rows).to_csv(self.out_dir / "selection.csv", index=False)
        return rows

    def run(self) -> dict:
        """Train everything, evaluate, write the outputs; returns the summary (``compare.json``)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.out_dir / "config.yaml")
        self.train_all()
        return self.evaluate_all()


def comparison_markdown(comparisons: dict) -> str:
    """Markdown tables of the pairwise comparisons: headline metric per task, difference, 95% CI, p."""
    lines = ["# Pairwise comparisons on the same test subjects", "",
             "Differences are other − reference; CIs and p-values from a paired bootstrap; for AUROC also "
             "DeLong's test.", ""]
    for name, result in comparisons.items():
        lines += [f"## {name} (n = {result['n']})", "",
                  "| task | metric | reference | other | difference (95% CI) | p (bootstrap) | p (DeLong) |",
                  "|---|---|---|---|---|---|---|"]
        for kind in ("regression", "binary", "multiclass"):
            metric = HEADLINE[kind] if kind != "multiclass" else "balanced_accuracy"
            for task, entry in result[kind].items():
                e = entry.get(metric)
                if e is None:
                    continue
                delong = f"{entry['delong']['p_value']:.3g}" if "delong" in entry else ""
                lines.append(f"| {task} | {metric} | {e['a']:.3f} | {e['b']:.3f} | {e['diff']:+.3f} "
                             f"({e['low']:+.3f} to {e['high']:+.3f}) | {e['p_value']:.3g} | {delong} |")
        lines.append("")
    return "\n".join(lines)


def load_compare_config(path: str | os.PathLike, overrides=()) -> CompareConfig:
    """Read a `CompareConfig` YAML with ``key=value`` overrides.

    Raises:
        ConfigError: unknown keys or invalid values, naming the file.
    """
    if not Path(path).is_file():
        raise InputError(path, "no such comparison config")
    read_yaml(path)  # a clear error for unreadable YAML first
    return load_config(CompareConfig, path, overrides)
