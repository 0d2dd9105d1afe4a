"""Reader studies: the YAML definition, the cases, and each reader's blinded reading order.

A study crosses cases with arms — what a reader is shown besides the ECG:
``ecg_only``, ``ecg_generated_cmr`` (the model's cine) or ``ecg_real_cmr`` (the
data set's cine) — and asks each reader the same questions for every (case,
arm) reading: a diagnosis among the study's choices, a confidence 1–5, the
image's realism 1–5 when an image is shown, and free text. It is defined in YAML
(`StudyConfig`, unknown keys are errors; ``configs/demo/study.yaml``);
`resolve_cases` picks its cases from a data set's manifest with their ground truth.

Every reader gets every reading once, in an order drawn from a seed derived from
the study seed and the reader's name (`reader_seed`), so it is stable across
reloads and restarts and differs between readers; `reading_order` never puts
two readings of the same case back to back (it draws uniformly among the cases
that keep the rest of the sequence feasible). Pages show only "reading k of
n"; the case id and the arm stay on the server.

The answers are kept by `cardiacnets.review.study_store` and summarised by
`cardiacnets.review.study_summary`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from typing import Literal, Sequence

import numpy as np

from cardiacnets.errors import ConfigError, InputError

ARMS: tuple[str, ...] = ("ecg_only", "ecg_generated_cmr", "ecg_real_cmr")
IMAGE_ARMS: tuple[str, ...] = ("ecg_generated_cmr", "ecg_real_cmr")
ARM_TITLES = {"ecg_only": "ECG only", "ecg_generated_cmr": "ECG + generated CMR", "ecg_real_cmr": "ECG + real CMR"}
MAX_FREE_TEXT_CHARS = 4000
MAX_READER_NAME_CHARS = 64
SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- definition

@dataclass
class CaseSelection:
    """Which data-set subjects the study reads.

    Attributes:
        ids: explicit subject ids; when given, the other fields are ignored.
        split: draw from this split (``None``: every split).
        per_choice: subjects drawn for each diagnosis choice (a subject whose
            labels match several choices counts for the first one drawn).
        seed: seed of the draw.
    """

    ids: list[str] = field(default_factory=list)
    split: str | None = "test"
    per_choice: int = 2
    seed: int = 0


@dataclass
class DiagnosisQuestion:
    """The diagnosis question and how its ground truth is read from the data set.

    Attributes:
        prompt: the question as readers see it.
        choices: answer -> boolean manifest column that makes it correct (e.g.
            ``cardiomyopathy: label_cardiomyopathy``); ``null`` for the answer
            that is correct when no ``label_*`` column of the case is true
            (e.g. ``normal``). A case with several true columns accepts each
            matching answer.
    """

    prompt: str = "Most likely diagnosis"
    choices: dict[str, str | None] = field(default_factory=lambda: {
        "normal": None,
        "cardiomyopathy": "label_cardiomyopathy",
        "heart_failure": "label_heart_failure",
        "coronary_artery_disease": "label_coronary_artery_disease",
    })

    def validate(self) -> None:
        if len(self.choices) < 2:
            raise ConfigError("questions.diagnosis.choices: need at least two answers")
        if sum(column is None for column in self.choices.values()) > 1:
            raise ConfigError("questions.diagnosis.choices: at most one answer may have no column (null)")


@dataclass
class Questions:
    """What readers answer for each reading.

    Attributes:
        diagnosis: the diagnosis choice (always asked).
        confidence: ask the confidence in the diagnosis, 1-5.
        realism: ask how realistic the image looks, 1-5, on readings with an image.
        free_text: offer a free-text comment.
    """

    diagnosis: DiagnosisQuestion = field(default_factory=DiagnosisQuestion)
    confidence: bool = True
    realism: bool = True
    free_text: bool = True


@dataclass
class StudyConfig:
    """A reader study.

    Attributes:
        name: identifier used in URLs and the database file name (letters,
            digits, ``-`` and ``_``).
        title: shown to readers.
        instructions: shown on the sign-in page.
        seed: study seed; each reader's order derives from it and their name.
        reader_token: the per-study token readers sign in with (with their name).
        admin_token: the token of the summary and export pages (never given to readers).
        readers: names allowed to sign in; empty allows any name.
        arms: the arms every case is read under (see `ARMS`).
        views: cine views shown on image readings (``sa``, ``la_4ch``).
        blind_image_source: hide whether an image is real or generated (the
            page says that images may be either); False labels generated images
            ``SYNTHETIC`` as the review app does.
        cases: the subjects read.
        questions: the questions asked.
    """

    name: str = "study"
    title: str = "ECG reader study"
    instructions: str = ""
    seed: int = 0
    reader_token: str = ""
    admin_token: str = ""
    readers: list[str] = field(default_factory=list)
    arms: list[Literal["ecg_only", "ecg_generated_cmr", "ecg_real_cmr"]] = field(default_factory=lambda: list(ARMS))
    views: list[Literal["sa", "la_4ch"]] = field(default_factory=lambda: ["sa"])
    blind_image_source: bool = True
    cases: CaseSelection = field(default_factory=CaseSelection)
    questions: Questions = field(default_factory=Questions)

    def validate(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name) or not self.name.isascii():
            raise ConfigError(f"name: {self.name!r} must be letters, digits, '-' or '_'")
        if len(self.reader_token) < 8:
            raise ConfigError("reader_token: set a token of at least 8 characters")
        if len(self.admin_token) < 8 or self.admin_token == self.reader_token:
            raise ConfigError("admin_token: set a token of at least 8 characters, different from reader_token")
        if not self.arms or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms: need one or more distinct arms of {', '.join(ARMS)}")
        if not self.views or len(set(self.views)) != len(self.views):
            raise ConfigError("views: need one or more distinct views")
        for reader in self.readers:
            check_reader_name(reader, where="readers")
        if self.cases.per_choice < 1 and not self.cases.ids:
            raise ConfigError("cases.per_choice: must be at least 1")

    @property
    def has_image_arms(self) -> bool:
        return any(arm in IMAGE_ARMS for arm in self.arms)

    def public_definition(self) -> dict:
        """The definition without the tokens (what the database stores)."""
        data = asdict(self)
        data.pop("reader_token")
        data.pop("admin_token")
        return data


def load_study(path: str | os.PathLike, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read a study YAML file.

    Args:
        path: the YAML file.
        overrides: ``key=value`` overrides.

    Returns:
        The validated `StudyConfig`.

    Raises:
        ConfigError: unknown keys, bad values (the message names the file).
    """
    from cardiacnets.config import load_config

    return load_config(StudyConfig, path, overrides)


def check_reader_name(name: str, where: str = "name") -> str:
    """A reader name, stripped; raises ConfigError when empty, too long or with control characters."""
    name = name.strip()
    if not name or len(name) > MAX_READER_NAME_CHARS or not name.isprintable():
        raise ConfigError(f"{where}: reader name {name!r} must be 1-{MAX_READER_NAME_CHARS} printable characters")
    return name


# --------------------------------------------------------------------------- cases and truth

@dataclass(frozen=True)
class StudyCase:
    """One case of a study: the data-set subject and the answers that are correct for it."""

    case_id: str
    truth: tuple[str, ...]
    has_real_cmr: bool


def case_truth(row, choices: dict[str, str | None]) -> tuple[str, ...]:
    """The correct answers of one manifest row.

    Args:
        row: a manifest row (mapping column -> value).
        choices: `DiagnosisQuestion.choices`.

    Returns:
        The answers whose column is true; the null-column answer when no
        ``label_*`` column of the row is true; empty when the row's only
        positive labels are not among the choices (such a case cannot be scored).
    """
    def is_true(value) -> bool:
        return bool(value) and str(value).lower() not in ("false", "0", "nan", "")

    positive = tuple(answer for answer, column in choices.items() if column is not None and is_true(row[column]))
    if positive:
        return positive
    if any(is_true(value) for column, value in row.items() if str(column).startswith("label_")):
        return ()
    return tuple(answer for answer, column in choices.items() if column is None)


def resolve_cases(config: StudyConfig, manifest, *, data_path: str | os.PathLike = "manifest.csv") -> list[StudyCase]:
    """Pick the study's subjects and their ground truth from a data-set manifest.

    Args:
        config: the study.
        manifest: the training set's manifest (pandas DataFrame).
        data_path: the data set, named in errors.

    Returns:
        The cases, in the order drawn (explicit ids keep their order).

    Raises:
        InputError: a diagnosis column missing from the manifest, an unknown
            subject id, a subject without an ECG, without a real cine when the
            study shows real cines, or whose labels none of the choices match;
            too few subjects for ``per_choice``.
    """
    choices = config.questions.diagnosis.choices
    for answer, column in choices.items():
        if column is not None and column not in manifest.columns:
            raise InputError(data_path, f"study {config.name}: diagnosis choice {answer!r} needs manifest column "
                                        f"{column!r}, which the data set lacks")
    needs_real = "ecg_real_cmr" in config.arms
    views = config.views if config.has_image_arms else []
    by_id = manifest.set_index(manifest["subject_id"].astype(str), drop=False)

    def usable(row) -> str | None:
        if not bool(row.get("has_ecg", True)):
            return "has no ECG"
        if needs_real:
            for view in views:
                if not bool(row.get(f"has_{view}", False)):
                    return f"has no real {view} cine"
        if not case_truth(row, choices):
            return "has labels that none of the diagnosis choices match"
        return None

    if config.cases.ids:
        cases = []
        for subject_id in config.cases.ids:
            subject_id = str(subject_id)
            if subject_id not in by_id.index:
                raise InputError(data_path, f"study {config.name}: subject {subject_id!r} is not in the data set")
            row = by_id.loc[subject_id]
            problem = usable(row)
            if problem:
                raise InputError(data_path, f"study {config.name}: subject {subject_id} {problem}")
            cases.append(StudyCase(subject_id, case_truth(row, choices), _has_views(row, views)))
        if len(set(c.case_id for c in cases)) != len(cases):
            raise InputError(data_path, f"study {config.name}: cases.ids lists a subject twice")
        return cases

    pool = by_id if config.cases.split is None else by_id[by_id["split"] == config.cases.split]
    rng = np.random.default_rng(config.cases.seed)
    taken: set[str] = set()
    cases = []
    for answer in choices:
        eligible = sorted(sid for sid, row in pool.iterrows()
                          if sid not in taken and usable(row) is None and answer in case_truth(row, choices))
        if len(eligible) < config.cases.per_choice:
            split = "every split" if config.cases.split is None else f"split {config.cases.split!r}"
            raise InputError(data_path, f"study {config.name}: {len(eligible)} usable subjects with answer "
                                        f"{answer!r} in {split}, {config.cases.per_choice} needed (cases.per_choice)")
        for sid in rng.choice(eligible, size=config.cases.per_choice, replace=False):
            taken.add(str(sid))
            row = by_id.loc[str(sid)]
            cases.append(StudyCase(str(sid), case_truth(row, choices), _has_views(row, views)))
    return cases


def _has_views(row, views: Sequence[str]) -> bool:
    return all(bool(row.get(f"has_{view}", False)) for view in views)


# --------------------------------------------------------------------------- reading order

def reader_seed(study_seed: int, reader: str) -> int:
    """The seed of a reader's order: a hash of the study seed and the reader's name."""
    digest = hashlib.sha256(f"{study_seed}\x00{reader}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _can_follow(counts: dict[str, int], last: str) -> bool:
    """Whether the remaining readings can be ordered with no case twice in a row after `last`.

    With ``k`` readings left, a sequence exists iff no case other than `last`
    has more than ceil(k / 2) of them and `last` has at most floor(k / 2)
    (a case with ceil(k / 2) of an odd ``k`` must take every other place from
    the first, which `last` would then touch).
    """
    k = sum(counts.values())
    for case, n in counts.items():
        if n > (k // 2 if case == last else (k + 1) // 2):
            return False
    return True


def reading_order(case_ids: Sequence[str], arms: Sequence[str], seed: int) -> list[tuple[str, str]]:
    """A randomised order of every (case, arm) reading with no case twice in a row.

    Each step draws a reading uniformly among those whose case differs from the
    previous one and leaves a feasible rest (`_can_follow`); each case's arms
    come in a random order.

    Args:
        case_ids: the study's cases.
        arms: the arms each case is read under.
        seed: the reader's seed (`reader_seed`).

    Returns:
        ``[(case_id, arm), ...]`` of length ``len(case_ids) * len(arms)``.

    Raises:
        ConfigError: when no such order exists (one case read under several arms).
    """
    counts = {case: len(arms) for case in case_ids}
    if len(arms) > 1 and not _can_follow(counts, last=""):
        raise ConfigError(f"a study with {len(case_ids)} case(s) and {len(arms)} arms cannot avoid showing a case "
                          "twice in a row; add cases")
    rng = np.random.default_rng(seed)
    arm_queue = {case: [arms[i] for i in rng.permutation(len(arms))] for case in case_ids}
    order: list[tuple[str, str]] = []
    last = ""
    for _ in range(len(case_ids) * len(arms)):
        candidates, weights = [], []
        for case, n in counts.items():
            if n == 0 or case == last:
                continue
            counts[case] -= 1
            if _can_follow(counts, case):
                candidates.append(case)
                weights.append(n)
            counts[case] += 1
        assert candidates, "the feasibility invariant guarantees a candidate"
        weights = np.asarray(weights, float)
        case = candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]
        counts[case] -= 1
        order.append((case, arm_queue[case].pop()))
        last = case
    return order
