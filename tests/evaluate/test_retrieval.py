"""Tests of the retrieval evaluation: metrics on hand-computed cases, the
candidate protocol, embedding export, the projection plot, and
``cardiacnets evaluate retrieval`` end to end on tiny saved models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cardiacnets.cli import main
from cardiacnets.data.store import TrainingSet
from cardiacnets.errors import InputError
from cardiacnets.evaluate.embeddings import SplitEmbeddings, collate_samples, load_embeddings, save_embeddings
from cardiacnets.evaluate.plots import pca_2d, plot_projection
from cardiacnets.evaluate.retrieval import (
    chance_metrics,
    partner_rank_counts,
    rank_metrics,
    retrieval_metrics,
    sample_candidates,
)

from support.datasets import TINY_CMR, TINY_ECG, save_tiny_clip, simulated_training_set, write_training_set

# ECG query rows against one-hot CMR rows: sims[i, j] = Q[i, j] / |Q[i]|.
# ECG->CMR partner ranks by hand: row 0: 1; row 1: 0.5 < 0.9 -> 2; row 2: 0.1 below
# 0.9, 0.8, 0.2 -> 4; row 3: 0.4 is the largest -> 1.
# CMR->ECG (columns of the row-normalised Q): col 0 [1, .093, .735, .548] -> 1;
# col 1 [0, .464, .653, .365] -> 2; col 2 [0, .836, .082, .183] -> 3; col 3 [0, .279, .163, .730] -> 1.
HAND_Q = np.array([[1.0, 0.0, 0.0, 0.0], [0.1, 0.5, 0.9, 0.3], [0.9, 0.8, 0.1, 0.2], [0.3, 0.2, 0.1, 0.4]])
HAND_G = np.eye(4)


def test_identity_embeddings_rank_first():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 16))
    for n_candidates in (10, 100):
        result = retrieval_metrics(emb, emb * 3.0, n_candidates=n_candidates, seed=1)  # scale does not matter
        for direction in ("ecg_to_cmr", "cmr_to_ecg"):
            assert result[direction] == {"top1": 1.0, "top5": 1.0, "top10": 1.0, "median_rank": 1.0, "mean_rank": 1.0}


def test_hand_computed_ranks_both_directions():
    better, tied = partner_rank_counts(HAND_Q, HAND_G)
    np.testing.assert_array_equal(better + 1, [1, 2, 4, 1])
    np.testing.assert_array_equal(tied, [0, 0, 0, 0])
    better_back, _ = partner_rank_counts(HAND_G, HAND_Q)
    np.testing.assert_array_equal(better_back + 1, [1, 2, 3, 1])
    result = retrieval_metrics(HAND_Q, HAND_G, n_candidates=4, ks=(1, 2, 3))
    assert result["ecg_to_cmr"] == pytest.approx({"top1": 0.5, "top2": 0.75, "top3": 0.75, "median_rank": 1.5, "mean_rank": 2.0})
    assert result["cmr_to_ecg"] == pytest.approx({"top1": 0.5, "top2": 0.75, "top3": 1.0, "median_rank": 1.5, "mean_rank": 1.75})
    assert result["all_candidates"] and result["n_candidates"] == 4


def test_explicit_candidate_sets_only_count_their_members():
    # Query 2 (partner sim 0.1) against {2, 3}: only 0.2 is better -> rank 2;
    # query 1 against {1, 0, 3}: 0.1 and 0.3 are below 0.5 -> rank 1.
    candidates = np.array([[0, 1], [1, 0], [2, 3], [3, 2]])
    better, _ = partner_rank_counts(HAND_Q, HAND_G, candidates)
    np.testing.assert_array_equal(better + 1, [1, 1, 2, 1])
    candidates = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0], [3, 2, 1]])
    better, _ = partner_rank_counts(HAND_Q, HAND_G, candidates)
    np.testing.assert_array_equal(better + 1, [1, 1, 3, 1])
    with pytest.raises(ValueError, match="column 0"):
        partner_rank_counts(HAND_Q, HAND_G, candidates[:, ::-1].copy())


def test_reversed_pairing_with_ties():
    # One-hot queries and the gallery in reverse order: each query's partner
    # scores 0, one candidate scores 1 (better) and the other n - 2 tie at 0.
    n = 6
    queries = np.eye(n)
    gallery = queries[::-1].copy()
    better, tied = partner_rank_counts(queries, gallery)
    np.testing.assert_array_equal(better, np.ones(n))
    np.testing.assert_array_equal(tied, np.full(n, n - 2))
    metrics = rank_metrics(better, tied, ks=(1, 2, 5, 6))
    # Rank uniform on 2..6: P(rank <= 2) = 1/5, P(<= 5) = 4/5; expected rank 4.
    assert metrics == pytest.approx({"top1": 0.0, "top2": 0.2, "top5": 0.8, "top6": 1.0, "median_rank": 4.0, "mean_rank": 4.0})


def test_constant_embeddings_score_exactly_chance():
    emb = np.ones((30, 8))
    result = retrieval_metrics(emb, emb, n_candidates=10, seed=0)
    chance = chance_metrics(10)
    assert chance == pytest.approx({"top1": 0.1, "top5": 0.5, "top10": 1.0, "median_rank": 5.5, "mean_rank": 5.5})
    for direction in ("ecg_to_cmr", "cmr_to_ecg"):
        assert result[direction] == pytest.approx(chance)
    assert result["chance"] == pytest.approx(chance)


def test_rank_metrics_tie_formula():
    # b better, t tied: P(rank <= k) = clip((k - b) / (t + 1), 0, 1).
    metrics = rank_metrics(np.array([0, 2, 0]), np.array([1, 0, 3]), ks=(1, 3))
    assert metrics["top1"] == pytest.approx((0.5 + 0.0 + 0.25) / 3)
    assert metrics["top3"] == pytest.approx((1.0 + 1.0 + 0.75) / 3)
    assert metrics["median_rank"] == pytest.approx(2.5)  # expected ranks 1.5, 3, 2.5


def test_candidate_sampling_protocol():
    candidates = sample_candidates(50, 10, seed=3)
    assert candidates.shape == (50, 10)
    np.testing.assert_array_equal(candidates[:, 0], np.arange(50))
    for query, row in enumerate(candidates):
        assert len(set(row.tolist())) == 10  # distinct
        assert query not in row[1:]
        assert row.min() >= 0 and row.max() < 50
    np.testing.assert_array_equal(candidates, sample_candidates(50, 10, seed=3))
    assert not np.array_equal(candidates, sample_candidates(50, 10, seed=4))
    # Distractors are uniform over the other subjects: each appears ~ 50 * 9 / 49 times.
    many = sample_candidates(200, 20, seed=0)[:, 1:]
    counts = np.bincount(many.ravel(), minlength=200)
    assert counts.sum() == 200 * 19 and 5 <= counts.min() and counts.max() <= 35
    with pytest.raises(ValueError, match="below n_subjects"):
        sample_candidates(5, 5)


def test_metrics_deterministic_per_seed_and_noisy_pairs_between_chance_and_perfect():
    rng = np.random.default_rng(1)
    ecg = rng.normal(size=(120, 32))
    cmr = ecg + rng.normal(scale=1.5, size=ecg.shape)
    first = retrieval_metrics(ecg, cmr, n_candidates=20, seed=7)
    assert first == retrieval_metrics(ecg, cmr, n_candidates=20, seed=7)
    assert first != retrieval_metrics(ecg, cmr, n_candidates=20, seed=8)
    assert 0.05 < first["ecg_to_cmr"]["top1"] < 1.0
    assert first["ecg_to_cmr"]["top10"] >= first["ecg_to_cmr"]["top5"] >= first["ecg_to_cmr"]["top1"]


def test_more_candidates_than_subjects_uses_everyone():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(7, 4))
    result = retrieval_metrics(emb, rng.normal(size=(7, 4)), n_candidates=100, seed=0, return_ranks=True)
    assert result["all_candidates"] is True
    assert (result["n_candidates"], result["n_candidates_requested"], result["n_queries"]) == (7, 100, 7)
    assert result["chance"]["top1"] == pytest.approx(1 / 7)
    assert result["chance"]["top10"] == 1.0 and result["ecg_to_cmr"]["top10"] == 1.0
    assert result["ranks"]["ecg_to_cmr"].shape == (7,)
    assert result["ranks"]["ecg_to_cmr"].max() <= 7


def test_bad_embeddings_are_refused():
    emb = np.ones((4, 3))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.where(np.eye(4, 3) > 0, np.nan, emb), emb)
    with pytest.raises(ValueError, match="all zero"):
        retrieval_metrics(np.zeros((4, 3)), emb)
    with pytest.raises(ValueError, match="paired"):
        retrieval_metrics(emb, emb[:3])
    with pytest.raises(ValueError, match="at least 2"):
        retrieval_metrics(emb[:1], emb[:1])


def test_pca_on_a_line_and_sign_is_deterministic():
    t = np.linspace(-1, 1, 11)
    direction = np.array([1.0, 2.0, 2.0]) / 3.0
    points = t[:, None] * direction + np.array([5.0, 0.0, -1.0])
    coords, mean, components, explained = pca_2d(points)
    np.testing.assert_allclose(mean, [5.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(components[0]), direction, atol=1e-9)
    assert components[0][np.abs(components[0]).argmax()] > 0
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(t), atol=1e-9)
    assert explained[0] == pytest.approx(1.0)
    coords_again = pca_2d(points[::-1].copy())[0]
    np.testing.assert_allclose(coords_again[::-1], coords, atol=1e-9)


def _embeddings(n=20, dim=8, seed=0) -> SplitEmbeddings:
    rng = np.random.default_rng(seed)
    ecg = rng.normal(size=(n, dim)).astype(np.float32)
    has_la = np.arange(n) % 4 != 0
    la = rng.normal(size=(n, dim)).astype(np.float32)
    la[~has_la] = np.nan
    return SplitEmbeddings(subject_ids=[f"{1000 + i}" for i in range(n)], ecg=ecg,
                           cmr={"sa": ecg + 0.1, "la_4ch": la}, has={"sa": np.ones(n, bool), "la_4ch": has_la})


def test_embedding_export_round_trip(tmp_path):
    emb = _embeddings()
    written = save_embeddings(emb, tmp_path / "out")
    assert sorted(p.name for p in written) == ["embeddings_cmr_la_4ch.npy", "embeddings_cmr_sa.npy",
                                               "embeddings_ecg.npy", "subject_ids.txt"]
    back = load_embeddings(tmp_path / "out")
    assert back.subject_ids == emb.subject_ids
    np.testing.assert_array_equal(back.ecg, emb.ecg)
    np.testing.assert_array_equal(back.cmr["la_4ch"], emb.cmr["la_4ch"])  # NaN rows kept
    np.testing.assert_array_equal(back.has["la_4ch"], emb.has["la_4ch"])
    ecg, la, ids = back.paired("la_4ch")
    assert len(ecg) == len(la) == len(ids) == 15 and np.isfinite(la).all()
    (tmp_path / "out" / "subject_ids.txt").write_text("1\n2\n")
    with pytest.raises(InputError, match=r"embeddings_ecg\.npy: 20 rows but subject_ids\.txt lists 2 subjects"):
        load_embeddings(tmp_path / "out")


def test_projection_plot_is_a_png(tmp_path):
    emb = _embeddings()
    values = np.linspace(30, 70, 20)
    values[3] = np.nan
    png = plot_projection(emb.ecg, emb.cmr, values, "lvef_pct", tmp_path / "plots" / "p.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


# ---------------------------------------------------------------------------
# A tiny training set written directly in the store layout (fast), and the CLI
# ---------------------------------------------------------------------------

def test_collate_samples_stacks_and_drops_segmentations(tmp_path):
    root = write_training_set(tmp_path / "set", n=4)
    dataset = TrainingSet(root, targets=("lvef_pct",))
    samples = [dict(dataset[i], seg_sa=np.zeros((1, 2, 3, 3), np.uint8)) for i in range(3)]
    batch = collate_samples(samples)
    assert batch["ecg"].shape == (3, 12, 2500) and str(batch["ecg"].dtype) == "torch.float32"
    assert batch["cmr_sa"].shape == (3, 1, 25, 64, 64)
    assert batch["has_la_4ch"].tolist() == [True, True, True]
    assert batch["subject_id"] == ["2000", "2001", "2002"]
    assert batch["targets"]["lvef_pct"].shape == (3,)
    assert "seg_sa" not in batch
    np.testing.assert_array_equal(batch["ecg"][1].numpy(), samples[1]["ecg"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    save_tiny_clip(run / "model")
    return run


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    # 12 subjects: 6 train, 6 test; subjects 6 and 9 (test) have no 4-chamber cine.
    has_la = np.ones(12, bool)
    has_la[[6, 9]] = False
    return write_training_set(tmp_path_factory.mktemp("data") / "set", n=12, ecg_samples=500, cine_shape=(1, 4, 16, 16),
                              has_view={"la_4ch": has_la})


def _retrieval(capsys, *args):
    status = main(["evaluate", "retrieval", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.slow
def test_cli_json_and_export(tiny_run, tiny_set, tmp_path, capsys):
    out = tmp_path / "eval"
    status, stdout, _ = _retrieval(capsys, "--model", tiny_run, "--data", tiny_set, "--split", "test", "--candidates", 3,
                                   "--seed", 5, "--json", "--out", out, "--batch-size", 4)
    assert status == 0
    result = json.loads(stdout)
    for direction in ("ecg_to_cmr", "cmr_to_ecg"):
        assert set(result[direction]) == {"top1", "top5", "top10", "median_rank", "mean_rank"}
        assert 0.0 <= result[direction]["top1"] <= result[direction]["top5"] <= 1.0
    assert (result["view"], result["n_queries"], result["n_candidates"], result["split"]) == ("sa", 6, 3, "test")
    assert result["chance"]["top1"] == pytest.approx(1 / 3)
    assert list(result["views"]) == ["sa", "la_4ch"]
    assert result["views"]["la_4ch"]["n_queries"] == 4
    assert result["views"]["sa"]["ecg_to_cmr"] == result["ecg_to_cmr"]
    assert json.loads((out / "retrieval.json").read_text()) == result

    # The exported embeddings are the ones scored: rescoring them gives the same numbers.
    ids = (out / "subject_ids.txt").read_text().split()
    assert ids == ["2006", "2007", "2008", "2009", "2010", "2011"]
    ecg = np.load(out / "embeddings_ecg.npy")
    sa, la = np.load(out / "embeddings_cmr_sa.npy"), np.load(out / "embeddings_cmr_la_4ch.npy")
    assert ecg.shape == sa.shape == la.shape == (6, 8) and ecg.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ecg, axis=1), 1.0, rtol=1e-5)
    assert np.isnan(la[[0, 3]]).all() and np.isfinite(la[[1, 2, 4, 5]]).all()
    rescored = retrieval_metrics(ecg, sa, n_candidates=3, seed=5)
    assert rescored["ecg_to_cmr"] == pytest.approx(result["ecg_to_cmr"])
    rescored_la = retrieval_metrics(ecg[[1, 2, 4, 5]], la[[1, 2, 4, 5]], n_candidates=3, seed=5)
    assert rescored_la["cmr_to_ecg"] == pytest.approx(result["views"]["la_4ch"]["cmr_to_ecg"])
    ranks = pd.read_csv(out / "ranks_la_4ch.csv", dtype={"subject_id": str})
    assert ranks["subject_id"].tolist() == ["2007", "2008", "2010", "2011"]
    assert ranks["ecg_to_cmr_rank"].between(1, 3).all()
    assert (out / "projection_lvef_pct.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_cli_more_candidates_than_subjects_bf16_and_text_output(tiny_run, tiny_set, tmp_path, capsys):
    status, stdout, _ = _retrieval(capsys, "--model", tiny_run / "model", "--data", tiny_set, "--view", "sa",
                                   "--precision", "bf16", "--out", tmp_path / "e", "--color-by", "label_heart_failure")
    assert status == 0
    assert "view sa: 6 queries, 6 candidates each, every subject (100 requested)" in stdout
    assert "fewer than the 100 candidates requested" in stdout
    assert "ECG -> CMR" in stdout and "CMR -> ECG" in stdout and "chance" in stdout
    result = json.loads((tmp_path / "e" / "retrieval.json").read_text())
    assert result["all_candidates"] and result["n_candidates"] == 6 and result["n_candidates_requested"] == 100
    assert list(result["views"]) == ["sa"] and result["precision"] == "bf16"
    assert np.isfinite(np.load(tmp_path / "e" / "embeddings_ecg.npy")).all()
    assert (tmp_path / "e" / "projection_label_heart_failure.png").is_file()
    assert not (tmp_path / "e" / "embeddings_cmr_la_4ch.npy").exists()


@pytest.mark.slow
def test_cli_skips_default_views_without_pairs_but_refuses_requested_ones(tiny_run, tmp_path, capsys):
    has_la = np.zeros(8, bool)
    has_la[5] = True  # a single test subject with a 4-chamber cine
    data = write_training_set(tmp_path / "set", n=8, ecg_samples=500, cine_shape=(1, 4, 16, 16), has_view={"la_4ch": has_la})
    status, stdout, _ = _retrieval(capsys, "--model", tiny_run, "--data", data, "--json")
    assert status == 0
    result = json.loads(stdout)
    assert list(result["views"]) == ["sa"] and "la_4ch" in result["skipped_views"]
    assert "has 1 subject(s) with both ECG and la_4ch" in result["skipped_views"]["la_4ch"]
    status, _, err = _retrieval(capsys, "--model", tiny_run, "--data", data, "--view", "la_4ch")
    assert status == 2 and str(data) in err and "retrieval needs at least 2" in err


@pytest.mark.slow
def test_cli_film_model_uses_the_runs_demographics(tiny_set, tmp_path, capsys):
    from cardiacnets.data.torch_data import DemographicsNormalizer

    run = tmp_path / "run"
    save_tiny_clip(run / "model", film=True)
    status, _, err = _retrieval(capsys, "--model", run, "--data", tiny_set)
    assert status == 2 and str(run) in err and "no demographics.json" in err
    manifest = pd.read_csv(tiny_set / "manifest.csv")
    DemographicsNormalizer.fit(manifest[manifest["split"] == "train"], ["age_years", "sex_male", "bmi"]).save(
        run / "demographics.json")
    status, stdout, _ = _retrieval(capsys, "--model", run, "--data", tiny_set, "--json")
    assert status == 0 and json.loads(stdout)["n_queries"] == 6


def _bad_inputs(tmp_path, tiny_run, tiny_set):
    """(name, arguments, path expected in the message, problem expected in the message)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    encoder = tmp_path / "encoder"
    from cardiacnets.models import create_model

    create_model("ecg_vit_tiny", **TINY_ECG).save_pretrained(encoder)
    ecg_only = write_training_set(tmp_path / "ecg_only", n=6, views=(), ecg_samples=500)
    cmr_only = write_training_set(tmp_path / "cmr_only", n=6, with_ecg=False, cine_shape=(1, 4, 16, 16))
    long_ecg = write_training_set(tmp_path / "long_ecg", n=6, ecg_samples=1000, cine_shape=(1, 4, 16, 16))
    base = ["--model", tiny_run, "--data", tiny_set]
    return [
        ("missing run", ["--model", tmp_path / "nope", "--data", tiny_set], tmp_path / "nope", "no such training run"),
        ("run without model", ["--model", empty, "--data", tiny_set], empty, "not a training run or saved model"),
        ("not an alignment model", ["--model", encoder, "--data", tiny_set], encoder, "cannot embed both ECG and CMR"),
        ("not a training set", ["--model", tiny_run, "--data", empty], empty, "not a cardiacnets training set"),
        ("no CMR", ["--model", tiny_run, "--data", ecg_only], ecg_only, "holds no CMR"),
        ("no ECG", ["--model", tiny_run, "--data", cmr_only], cmr_only, "holds no ECGs"),
        ("unknown split", [*base, "--split", "holdout"], tiny_set / "manifest.csv", "no split 'holdout'; splits present: test, train"),
        ("unknown view", [*base, "--view", "la_2ch"], tiny_set, "no CMR view 'la_2ch'; stored views: sa, la_4ch"),
        ("unknown phenotype", [*base, "--out", tmp_path / "o", "--color-by", "lvef"], tiny_set / "manifest.csv",
         "no phenotype column 'lvef'"),
        ("text phenotype", [*base, "--out", tmp_path / "o", "--color-by", "icd10"], tiny_set / "manifest.csv", "is not numeric"),
        ("data does not fit the model", ["--model", tiny_run, "--data", long_ecg], long_ecg, "does not fit the model"),
        ("too few candidates", [*base, "--candidates", "1"], "--candidates", "must be at least 2"),
    ]


@pytest.mark.slow
def test_cli_bad_inputs_exit_2_with_one_clear_line(tiny_run, tiny_set, tmp_path, capsys):
    for name, args, path, problem in _bad_inputs(tmp_path, tiny_run, tiny_set):
        status, _, err = _retrieval(capsys, *args)
        assert status == 2, name
        lines = err.strip().splitlines()
        assert len(lines) == 1, (name, err)
        assert str(path) in lines[0] and problem in lines[0], (name, lines[0])
        assert lines[0].startswith("cardiacnets evaluate: error: "), name
    assert not (tmp_path / "o").exists()  # nothing written when the inputs are refused


@pytest.mark.slow
def test_cli_on_a_simulated_preprocessed_cohort(tmp_path, capsys):
    # The real pipeline: simulator -> preprocess (demo config) -> evaluate, with a tiny
    # model shaped for the demo set (ECG 12 x 2500; cines 1 x 25 x 64 x 64, resized to 16²).
    from cardiacnets.models import create_model

    data = simulated_training_set(tmp_path, 8, seed=3, overrides=["split.test_fraction=0.5", "split.val_fraction=0.0"])
    n_test = int((pd.read_csv(data / "manifest.csv")["split"] == "test").sum())
    model = create_model("cardiac_clip_demo", ecg={"model": "ecg_vit_tiny", "overrides": {**TINY_ECG, "n_samples": 2500}},
                         cmr={v: {"model": "cmr_encoder_demo", "overrides": {**TINY_CMR, "frames": 25}} for v in ("sa", "la_4ch")},
                         embed_dim=8)
    model.save_pretrained(tmp_path / "run" / "model")
    status, stdout, _ = _retrieval(capsys, "--model", tmp_path / "run", "--data", data, "--json",
                                   "--out", tmp_path / "eval")
    assert status == 0
    result = json.loads(stdout)
    assert result["n_queries"] == n_test >= 2 and set(result["views"]) == {"sa", "la_4ch"}
    assert (tmp_path / "eval" / "projection_lvef_pct.png").is_file()
    assert len((tmp_path / "eval" / "subject_ids.txt").read_text().split()) == n_test
