"""Tests of reader studies: the YAML definition, ground truth, the blinded reading order
(no case twice in a row, stable per reader), the SQLite store (autosave, locking,
restart, concurrent readers, WAL), the CSV export, the summary with its exact McNemar
test, and ``cardiacnets study``."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cardiacnets.cli import main
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.review.study import (
    CaseSelection,
    StudyConfig,
    _can_follow,
    case_truth,
    load_study,
    reader_seed,
    reading_order,
    resolve_cases,
)
from cardiacnets.review.study_store import EXPORT_COLUMNS, AnswerError, StudyStore
from cardiacnets.review.study_summary import summarize

from support import REPO_ROOT

CHOICES = {"normal": None, "cardiomyopathy": "label_cardiomyopathy",
           "coronary_artery_disease": "label_coronary_artery_disease"}


def _manifest() -> pd.DataFrame:
    # id, split, cardiomyopathy, coronary artery disease, pericardial disease, has_sa
    rows = [("s1", "test", 0, 0, 0, 1), ("s2", "test", 1, 0, 0, 1), ("s3", "test", 0, 1, 0, 1),
            ("s4", "test", 1, 1, 0, 1), ("s5", "test", 0, 0, 1, 1), ("s6", "test", 0, 0, 0, 0),
            ("s7", "train", 1, 0, 0, 1), ("s8", "test", 0, 0, 0, 1), ("s9", "test", 0, 1, 0, 1)]
    return pd.DataFrame([{"subject_id": sid, "split": split, "has_ecg": True, "has_sa": bool(sa),
                          "label_cardiomyopathy": bool(cm), "label_coronary_artery_disease": bool(cad),
                          "label_pericardial_disease": bool(peri)} for sid, split, cm, cad, peri, sa in rows])


def _config(**changes) -> StudyConfig:
    config = StudyConfig(name="t", reader_token="reader-token", admin_token="admin-token",
                         arms=["ecg_only", "ecg_real_cmr"], cases=CaseSelection(ids=["s1", "s2", "s3", "s4"]))
    config.questions.diagnosis.choices = dict(CHOICES)
    for key, value in changes.items():
        setattr(config, key, value)
    config.validate()
    return config


def _store(tmp_path, config=None) -> tuple[StudyStore, StudyConfig]:
    config = config or _config()
    store = StudyStore(tmp_path / "study.sqlite")
    store.initialize(config, resolve_cases(config, _manifest()))
    return store, config


# --------------------------------------------------------------------------- definition

def test_demo_study_config_loads_and_rejects_unknown_keys(tmp_path):
    config = load_study(REPO_ROOT / "configs/demo/study.yaml")
    assert config.name == "demo" and config.arms == ["ecg_only", "ecg_generated_cmr", "ecg_real_cmr"]
    assert list(config.questions.diagnosis.choices) == ["normal", "cardiomyopathy", "heart_failure",
                                                        "coronary_artery_disease"]
    data = yaml.safe_load((REPO_ROOT / "configs/demo/study.yaml").read_text())
    data["questions"]["realsim"] = True
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="realsim"):
        load_study(bad)
    with pytest.raises(ConfigError, match="admin_token"):
        load_study(REPO_ROOT / "configs/demo/study.yaml", ["admin_token=demo-reader-token"])
    with pytest.raises(ConfigError, match="arms"):
        load_study(REPO_ROOT / "configs/demo/study.yaml", ["arms=[ecg_only, ecg_only]"])
    with pytest.raises(ConfigError, match="name"):
        load_study(REPO_ROOT / "configs/demo/study.yaml", ["name=../x"])


def test_case_truth_by_hand():
    m = _manifest().set_index("subject_id", drop=False)
    assert case_truth(m.loc["s1"], CHOICES) == ("normal",)
    assert case_truth(m.loc["s2"], CHOICES) == ("cardiomyopathy",)
    assert case_truth(m.loc["s4"], CHOICES) == ("cardiomyopathy", "coronary_artery_disease")
    assert case_truth(m.loc["s5"], CHOICES) == ()  # pericardial disease only: no choice is right


def test_resolve_cases_ids_selection_and_errors():
    manifest = _manifest()
    cases = resolve_cases(_config(), manifest)
    assert [(c.case_id, c.truth) for c in cases] == [
        ("s1", ("normal",)), ("s2", ("cardiomyopathy",)), ("s3", ("coronary_artery_disease",)),
        ("s4", ("cardiomyopathy", "coronary_artery_disease"))]
    drawn = resolve_cases(_config(cases=CaseSelection(split="test", per_choice=2, seed=0)), manifest)
    ids = [c.case_id for c in drawn]
    assert len(ids) == 6 == len(set(ids))
    assert "s6" not in ids and "s7" not in ids and "s5" not in ids  # no real cine / train split / unscorable
    assert ids == [c.case_id for c in resolve_cases(_config(cases=CaseSelection(split="test", per_choice=2)), manifest)]
    with pytest.raises(InputError, match="'nope' is not in the data set"):
        resolve_cases(_config(cases=CaseSelection(ids=["s1", "nope"])), manifest)
    with pytest.raises(InputError, match="s6 has no real sa cine"):
        resolve_cases(_config(cases=CaseSelection(ids=["s1", "s6"])), manifest)
    with pytest.raises(InputError, match="none of the diagnosis choices"):
        resolve_cases(_config(cases=CaseSelection(ids=["s1", "s5"])), manifest)
    with pytest.raises(InputError, match=r"2 usable subjects with answer 'normal' in split 'test', 3 needed"):
        resolve_cases(_config(cases=CaseSelection(split="test", per_choice=3)), manifest)
    with pytest.raises(InputError, match="label_x"):
        config = _config()
        config.questions.diagnosis.choices = {"a": None, "b": "label_x"}
        resolve_cases(config, manifest)


# --------------------------------------------------------------------------- order

def _brute_force_can_follow(counts: dict, last: str) -> bool:
    items = [case for case, n in counts.items() for _ in range(n)]
    for perm in set(itertools.permutations(items)):
        seq = (last,) + perm
        if all(a != b for a, b in zip(seq, seq[1:])):
            return True
    return not items


@pytest.mark.parametrize("counts", [(1, 1), (2, 1), (3, 1), (2, 2), (3, 2), (3, 3, 1), (4, 2, 1), (2, 2, 2), (5, 2, 2)])
def test_feasibility_rule_matches_brute_force(counts):
    cases = dict(zip("abc", counts))
    for last in ["", "a", "b", "c"][: len(cases) + 1]:
        assert _can_follow(dict(cases), last) == _brute_force_can_follow(dict(cases), last), (cases, last)


def test_reading_order_covers_everything_never_repeats_a_case_and_is_seeded():
    arms = ["ecg_only", "ecg_generated_cmr", "ecg_real_cmr"]
    for n_cases in (2, 3, 5, 12):
        cases = [f"c{i}" for i in range(n_cases)]
        for seed in range(40):
            order = reading_order(cases, arms, seed)
            assert sorted(order) == sorted(itertools.product(cases, arms))
            assert all(a[0] != b[0] for a, b in zip(order, order[1:])), order
    cases = [f"c{i}" for i in range(12)]
    assert reading_order(cases, arms, 7) == reading_order(cases, arms, 7)
    assert reading_order(cases, arms, 7) != reading_order(cases, arms, 8)
    assert reader_seed(0, "alice") == reader_seed(0, "alice") != reader_seed(0, "bob")
    assert reader_seed(0, "alice") != reader_seed(1, "alice")
    # A fixed function of the study seed and the name (stable across runs and machines, unlike hash()).
    assert reader_seed(0, "alice") == int.from_bytes(hashlib.sha256(b"0\x00alice").digest()[:8], "little")
    with pytest.raises(ConfigError, match="add cases"):
        reading_order(["only"], arms, 0)
    assert reading_order(["only"], ["ecg_only"], 0) == [("only", "ecg_only")]


def test_reading_order_spreads_arms_over_positions():
    # Over many readers each arm takes each half of the sequence about equally often.
    cases = [f"c{i}" for i in range(6)]
    arms = ["ecg_only", "ecg_generated_cmr", "ecg_real_cmr"]
    first_half = {arm: 0 for arm in arms}
    for seed in range(300):
        for case, arm in reading_order(cases, arms, seed)[:9]:
            first_half[arm] += 1
    for arm in arms:
        assert abs(first_half[arm] / (300 * 9) - 1 / 3) < 0.03


# --------------------------------------------------------------------------- store

def test_store_is_wal_and_survives_a_restart(tmp_path):
    store, _ = _store(tmp_path)
    readings = store.ensure_reader("alice")
    assert len(readings) == 8 and all(not r.submitted for r in readings)
    assert all(a.case_id != b.case_id for a, b in zip(readings, readings[1:]))
    store.save_answer("alice", 0, {"diagnosis": "normal"})
    store.save_answer("alice", 0, {"confidence": "4", "free_text": "ST changes?"}, visit_id="a" * 32, active_ms=1500)
    with sqlite3.connect(tmp_path / "study.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # "Restart": a new store on the same file, and the reader signs in again.
    again = StudyStore(tmp_path / "study.sqlite")
    assert [(r.case_id, r.arm) for r in again.ensure_reader("alice")] == [(r.case_id, r.arm) for r in readings]
    first = again.reading("alice", 0)
    assert (first.diagnosis, first.confidence, first.free_text, first.active_ms) == ("normal", 4, "ST changes?", 1500)
    assert StudyStore.current_position(again.readings("alice")) == 0


def test_answers_are_validated_locked_after_submit_and_timed_per_visit(tmp_path):
    store, _ = _store(tmp_path)
    readings = store.ensure_reader("bob")
    image = next(r.position for r in readings if r.arm == "ecg_real_cmr")
    plain = next(r.position for r in readings if r.arm == "ecg_only")
    for bad, message in [({"diagnosis": "flu"}, "not one of the choices"), ({"confidence": 6}, "1 to 5"),
                         ({"confidence": "2.5"}, "1 to 5"), ({"confidence": True}, "1 to 5"),
                         ({"colour": "red"}, "does not ask"), ({"free_text": "x" * 5000}, "limited")]:
        with pytest.raises(AnswerError, match=message):
            store.save_answer("bob", image, bad)
    with pytest.raises(AnswerError, match="does not ask 'realism'"):
        store.save_answer("bob", plain, {"realism": 3})
    store.save_answer("bob", image, {"diagnosis": "cardiomyopathy", "confidence": 5})
    with pytest.raises(AnswerError, match="please answer: realism"):
        store.submit("bob", image)
    store.save_answer("bob", image, {"realism": 2}, visit_id="v1visit1", active_ms=1000)
    store.save_answer("bob", image, {}, visit_id="v1visit1", active_ms=4000)
    store.save_answer("bob", image, {}, visit_id="v1visit1", active_ms=3000)  # late, smaller report: ignored
    store.save_answer("bob", image, {}, visit_id="v2visit2", active_ms=2500)  # a second visit adds up
    assert store.reading("bob", image).active_ms == 6500
    submitted = store.submit("bob", image)
    assert submitted.submitted and submitted.realism == 2
    with pytest.raises(AnswerError, match="can no longer be changed"):
        store.save_answer("bob", image, {"diagnosis": "normal"})
    store.save_answer("bob", image, {}, visit_id="v3visit3", active_ms=500)  # time on a locked reading still counts
    assert store.reading("bob", image).diagnosis == "cardiomyopathy"
    assert store.reading("bob", image).active_ms == 7000
    with pytest.raises(AnswerError, match="bad visit id"):
        store.save_answer("bob", plain, {}, visit_id="../x", active_ms=1)
    store.save_answer("bob", plain, {"confidence": 3, "diagnosis": "normal"})
    store.save_answer("bob", plain, {"confidence": ""})  # clearing a field
    assert store.reading("bob", plain).confidence is None


def test_definition_cannot_change_under_started_readers(tmp_path):
    store, config = _store(tmp_path)
    store.initialize(_config(title="Renamed", reader_token="another-token"), resolve_cases(config, _manifest()))
    store.ensure_reader("alice")
    changed = _config(seed=1)
    with pytest.raises(ConfigError, match="differ from those its 1 reader"):
        store.initialize(changed, resolve_cases(changed, _manifest()))
    assert store.meta()["definition"]["title"] == "Renamed"
    assert "reader_token" not in json.dumps(store.meta())  # tokens never stored


def test_concurrent_readers_lose_nothing(tmp_path):
    store, _ = _store(tmp_path)
    readers = [f"reader{i}" for i in range(4)]
    for reader in readers:
        store.ensure_reader(reader)
    errors = []

    def work(reader):
        try:
            stores = StudyStore(tmp_path / "study.sqlite")  # as another process would
            for position in range(8):
                for value in ("1", "2", "3", "4", "5"):
                    stores.save_answer(reader, position, {"confidence": value}, visit_id=f"visit{position:04d}",
                                       active_ms=int(value) * 100)
                stores.save_answer(reader, position, {"diagnosis": "normal", "free_text": f"{reader}-{position}"})
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(r,)) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for reader in readers:
        for r in store.readings(reader):
            assert (r.confidence, r.diagnosis, r.free_text, r.active_ms) == (5, "normal", f"{reader}-{r.position}", 500)


# --------------------------------------------------------------------------- export and summary

def _answer_all(store: StudyStore, reader: str, correct: dict[str, set[str]], truth: dict[str, str]) -> None:
    """Submit every reading of `reader`; correct[arm] lists the cases answered correctly."""
    for r in store.ensure_reader(reader):
        right = r.case_id in correct[r.arm]
        answer = {"diagnosis": truth[r.case_id] if right else ("cardiomyopathy" if truth[r.case_id] == "normal"
                                                               else "normal"), "confidence": 3}
        if r.shows_image:
            answer["realism"] = 4
        store.save_answer(r.reader, r.position, answer)
        store.submit(r.reader, r.position)


def test_export_csv_and_summary_with_hand_computed_mcnemar(tmp_path):
    manifest = pd.DataFrame([{"subject_id": f"p{i}", "split": "test", "has_ecg": True, "has_sa": True,
                              "label_cardiomyopathy": i % 2 == 1, "label_coronary_artery_disease": False}
                             for i in range(8)])
    config = _config(cases=CaseSelection(ids=[f"p{i}" for i in range(8)]))
    store = StudyStore(tmp_path / "s.sqlite")
    store.initialize(config, resolve_cases(config, manifest))
    truth = {f"p{i}": "cardiomyopathy" if i % 2 else "normal" for i in range(8)}
    # Reader 1: ECG only right on p0, p1, p7; with the real cine right on p0-p6.
    # Pairs: both right {p0, p1} = 2, only ECG-only {p7} = 1, only real {p2..p6} = 5, both wrong 0.
    _answer_all(store, "r1", {"ecg_only": {"p0", "p1", "p7"}, "ecg_real_cmr": {f"p{i}" for i in range(7)}}, truth)
    store.ensure_reader("r2")  # signed in, answered nothing
    store.save_answer("r2", 0, {"diagnosis": "normal", "free_text": '=HYPERLINK("http://x")'})  # not submitted

    rows = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert tuple(rows[0]) == EXPORT_COLUMNS and len(rows) == 32
    r1 = [r for r in rows if r["reader"] == "r1"]
    assert sum(r["correct"] == "1" for r in r1) == 10 and all(r["submitted_at"] for r in r1)
    assert {r["realism"] for r in r1 if r["arm"] == "ecg_only"} == {""}
    p7_only = next(r for r in r1 if r["case_id"] == "p7" and r["arm"] == "ecg_only")
    assert (p7_only["truth"], p7_only["diagnosis"], p7_only["correct"]) == ("cardiomyopathy", "cardiomyopathy", "1")
    r2_first = next(r for r in rows if r["reader"] == "r2" and r["position"] == "1")
    assert r2_first["correct"] == "" and r2_first["free_text"] == "'=HYPERLINK(\"http://x\")"  # not a formula

    summary = summarize(store)
    assert summary["n_submitted"] == 16 and summary["progress"] == {"r1": {"submitted": 16, "total": 16},
                                                                      "r2": {"submitted": 0, "total": 16}}
    only = summary["per_arm"]["ecg_only"]
    assert (only["n"], only["n_correct"], only["accuracy"]) == (8, 3, 0.375)
    z = 1.959963984540054  # Wilson interval by hand
    centre, half = (0.375 + z * z / 16) / (1 + z * z / 8), z / (1 + z * z / 8) * math.sqrt(0.375 * 0.625 / 8 + z * z / 256)
    assert only["ci95"] == pytest.approx([centre - half, centre + half])
    assert summary["per_arm"]["ecg_real_cmr"]["accuracy"] == 7 / 8
    assert summary["per_arm"]["ecg_real_cmr"]["mean_realism"] == 4.0 and only["mean_realism"] is None
    assert summary["per_reader"]["r1"]["all"]["accuracy"] == 10 / 16
    assert summary["per_reader"]["r2"]["all"]["accuracy"] is None
    (pair,) = summary["paired"]
    assert (pair["n_pairs"], pair["both_correct"], pair["only_a_correct"], pair["only_b_correct"],
            pair["both_wrong"]) == (8, 2, 1, 5, 0)
    # Exact McNemar: 2 * P(X <= 1), X ~ Binomial(6, 1/2) = 2 * (1 + 6) / 64.
    assert pair["mcnemar_exact_p"] == pytest.approx(14 / 64)


# --------------------------------------------------------------------------- command line

def _tiny_training_set(root: Path) -> Path:
    root.mkdir()
    _manifest().to_csv(root / "manifest.csv", index=False)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"format_version": 1, "arrays": []}))
    return root


def test_cli_check_summary_export(tmp_path, capsys):
    data = _tiny_training_set(tmp_path / "data")
    study_yaml = tmp_path / "study.yaml"
    study_yaml.write_text(yaml.safe_dump({
        "name": "t", "reader_token": "reader-token", "admin_token": "admin-token", "arms": ["ecg_only", "ecg_real_cmr"],
        "cases": {"ids": ["s1", "s2", "s3"]}, "questions": {"diagnosis": {"choices": CHOICES}}}, sort_keys=False))
    assert main(["study", "check", str(study_yaml), "--data", str(data), "--reader", "alice", "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert [c["case_id"] for c in checked["cases"]] == ["s1", "s2", "s3"] and len(checked["order"]) == 6

    config = load_study(study_yaml)
    app_dir = tmp_path / "app"
    store = StudyStore(app_dir / "studies" / "t.sqlite")
    store.initialize(config, resolve_cases(config, _manifest()))
    truth = {"s1": "normal", "s2": "cardiomyopathy", "s3": "coronary_artery_disease"}
    _answer_all(store, "alice", {"ecg_only": {"s1"}, "ecg_real_cmr": {"s1", "s2", "s3"}}, truth)

    assert main(["study", "summary", str(app_dir), "--json"]) == 0  # the app folder with its only study
    summary = json.loads(capsys.readouterr().out)
    assert summary["per_arm"]["ecg_only"]["accuracy"] == pytest.approx(1 / 3)
    assert main(["study", "summary", str(app_dir), "--name", "t"]) == 0
    text = capsys.readouterr().out
    assert "ECG only" in text and "p = 0.5000" in text  # 2 discordant pairs, one way: p = 2 * 1/4
    out = tmp_path / "readings.csv"
    assert main(["study", "export", str(store.path), "--out", str(out)]) == 0
    assert "wrote 6 readings" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 7
    assert main(["study", "summary", str(tmp_path / "missing.sqlite")]) == 2
    assert "no such study database" in capsys.readouterr().err
