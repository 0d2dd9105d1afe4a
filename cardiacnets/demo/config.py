"""Configuration of ``cardiacnets demo``: the cohort, the stages and the evaluations.

A demo config names the training config of every stage and the overrides that
wire the stages together. Overrides may use placeholders filled in at run time:
``{out}`` (the demo folder), ``{raw}`` (simulated files), ``{dataset}`` (the
training set), ``{runs}`` (the folder holding one run folder per stage) and
``{run:NAME}`` (the run folder of stage ``NAME``) and ``{ref:NAME}`` (the folder of
component ``NAME`` of the reference bundle).

With ``reference`` set (the default ``configs/demo/demo.yaml``), the demo
evaluates the committed reference models on a fresh cohort and trains only the
stages it lists (a short training run that shows training works); a stage
trained by the demo replaces the bundle's component of the same name.
``configs/demo/from_scratch.yaml`` trains every stage instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cardiacnets.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo" / "demo.yaml"
FROM_SCRATCH_CONFIG = REPO_ROOT / "configs" / "demo" / "from_scratch.yaml"
_PLACEHOLDER = re.compile(r"\{(out|raw|dataset|runs|run:[a-z_0-9]+|ref:[a-z_0-9]+)\}")


@dataclass
class StageConfig:
    """One training stage of the demo.

    Attributes:
        config: training config (``cardiacnets train`` YAML); relative paths are taken
            from the repository root when they do not exist from the working directory.
        overrides: ``key=value`` overrides, with placeholders.
        enabled: run this stage.
    """

    config: str
    overrides: list[str] = field(default_factory=list)
    enabled: bool = True


@dataclass
class EvaluationConfig:
    """What the demo evaluates on the held-out split.

    Attributes:
        split: the split evaluated.
        retrieval_candidates: candidates per query in the retrieval evaluation.
        generation_subjects: held-out subjects whose cines are generated and scored (0: all).
        generation_steps: sampler steps per cine.
        guidance: classifier-free guidance scale (null: each generator's own default, 3 for the direct
            one and the validation-chosen value of the anatomy-first one).
        bootstrap: bootstrap resamples for the confidence intervals.
        report_cines: generated-vs-true cine pairs shown in the report.
    """

    split: str = "test"
    retrieval_candidates: int = 100
    generation_subjects: int = 48
    generation_steps: int = 25
    guidance: float | None = None
    bootstrap: int = 1000
    report_cines: int = 4


@dataclass
class DemoConfig:
    """The whole demo.

    Attributes:
        n_subjects: simulated subjects.
        seed: simulator seed.
        synth: `SynthConfig` overrides of the simulated cohort (``key=value``). With a reference bundle
            and no ``version=`` here, the cohort is drawn with the simulator version the bundle was
            trained on (its metadata; 1 for bundles that predate the record).
        workers: worker processes for simulation and preprocessing (``None``: all CPUs).
        preprocess: preprocessing config.
        preprocess_overrides: its overrides.
        reference: the reference bundle whose models are evaluated (a folder; relative paths are taken from
            the repository root when they do not exist as given), or ``None`` to evaluate only what the demo
            trains.
        stages: training stages in the order they run (keys are stage names).
        evaluate: the evaluations.
    """

    n_subjects: int = 600
    seed: int = 0
    synth: list[str] = field(default_factory=list)
    workers: int | None = None
    preprocess: str = "configs/demo/preprocess.yaml"
    preprocess_overrides: list[str] = field(default_factory=list)
    reference: str | None = None
    stages: dict[str, StageConfig] = field(default_factory=dict)
    evaluate: EvaluationConfig = field(default_factory=EvaluationConfig)

    def validate(self) -> None:
        if self.n_subjects < 10:
            raise ConfigError(f"demo: n_subjects must be at least 10, got {self.n_subjects}")
        names = list(self.stages)
        for name, stage in self.stages.items():
            for item in stage.overrides:
                for match in _PLACEHOLDER.finditer(item):
                    key = match.group(1)
                    if key.startswith("run:") and key[4:] not in names[:names.index(name)]:
                        raise ConfigError(f"demo: stage {name!r} refers to {{{key}}}, which is not an earlier stage")
                    if key.startswith("ref:") and self.reference is None:
                        raise ConfigError(f"demo: stage {name!r} refers to {{{key}}} but no reference bundle is set")
                leftover = _PLACEHOLDER.sub("", item)
                if "{" in leftover or "}" in leftover:
                    raise ConfigError(f"demo: stage {name!r}: unknown placeholder in override {item!r}")


def resolve_path(path: str) -> Path:
    """A config path as given, or relative to the repository root when it does not exist as given."""
    candidate = Path(path)
    if candidate.exists() or candidate.is_absolute():
        return candidate
    return REPO_ROOT / candidate


def run_references(text: str) -> list[str]:
    """The stages whose run folders `text` names with ``{run:NAME}`` placeholders."""
    return [m.group(1)[4:] for m in _PLACEHOLDER.finditer(text) if m.group(1).startswith("run:")]


def fill_placeholders(text: str, folders: dict[str, Path]) -> str:
    """Replace ``{out}``, ``{dataset}``, ``{run:NAME}``, ``{ref:NAME}``, ... with the folders of this demo run."""
    def folder(match):
        key = match.group(1)
        if key not in folders:
            raise ConfigError(f"demo: {{{key}}} names no folder of this run (the reference bundle has no {key[4:]!r})")
        return str(folders[key])

    return _PLACEHOLDER.sub(folder, text)
