"""Cross-modal retrieval metrics: can an ECG find its own subject's CMR, and back?

This is the retrieval evaluation of contrastive ECG–CMR alignment (CardiacNets,
arXiv 2411.13602, after CLIP). Row ``i`` of the ECG embeddings and row ``i`` of
the CMR embeddings belong to the same subject. The metric functions are pure
numpy (arrays in, numbers out, tested without a trained model);
`evaluate_retrieval` runs them on a trained model over a training-set split
(behind ``cardiacnets evaluate retrieval``).

Protocol (`retrieval_metrics`):

1. Similarity is the cosine similarity of the embeddings (each row is
   L2-normalised in float32 first, so bf16 rounding cannot break it).
2. Every subject is a query, in both directions. Its candidate set holds its
   true partner plus ``N - 1`` distractors drawn uniformly without replacement
   from the other subjects of the split, with ``numpy.random.default_rng(seed)``
   (queries in row order, one draw each), so the sets depend only on the split
   size, ``N`` and the seed. Both directions use the same candidate sets.
   When ``N`` is at least the split size, every subject is a candidate for
   every query (``N`` becomes the split size; the result says so).
3. The rank of the true partner is 1 + the number of candidates scoring
   strictly higher. Exact ties (untrained or collapsed models, bf16 outputs)
   are broken uniformly at random *in expectation*: a query whose partner ties
   with ``t`` others counts ``P(rank <= k)`` towards top-k and ``1 + b + t / 2``
   as its rank, so a constant embedding scores exactly chance instead of a
   perfect top-1 (ties counted as wins) or worse than chance (ties as losses).
4. Reported per direction: top-1/5/10 accuracy (fraction of queries whose
   partner ranks within k), median and mean rank; chance levels for reference
   are ``min(k, N) / N`` and ``(N + 1) / 2``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardiacnets.errors import InputError

DEFAULT_KS = (1, 5, 10)
# Rows of candidate similarities computed per block: bounds the temporary
# (block, N, D) gather to ~64 MB whatever the split size.
_BLOCK_ELEMENTS = 1 << 24


def normalize_rows(embeddings: np.ndarray) -> np.ndarray:
    """L2-normalise each row in float32.

    Args:
        embeddings: (n, dim) array.

    Returns:
        (n, dim) float32 array of unit rows.

    Raises:
        ValueError: non-finite values or an all-zero row (no direction to compare).
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, dim), got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} embedding row(s) hold NaN or inf (first: row {int(np.flatnonzero(bad)[0])})")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{int((norms == 0).sum())} embedding row(s) are all zero")
    return x / norms


def sample_candidates(n_subjects: int, n_candidates: int, seed: int = 0) -> np.ndarray:
    """Draw each query's candidate set: its partner plus ``n_candidates - 1`` distractors.

    Args:
        n_subjects: subjects in the split (queries and gallery alike).
        n_candidates: candidates per query, the partner included; must be
            below `n_subjects` (use every subject otherwise, see `retrieval_metrics`).
        seed: seed of ``numpy.random.default_rng``; the sets depend only on
            (`n_subjects`, `n_candidates`, `seed`).

    Returns:
        (n_subjects, n_candidates) int64 indices; column 0 is the query itself
        (its true partner), the other columns are distinct other subjects.
    """
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be at least 2, got {n_candidates}")
    if n_candidates >= n_subjects:
        raise ValueError(f"n_candidates ({n_candidates}) must be below n_subjects ({n_subjects})")
    rng = np.random.default_rng(seed)
    candidates = np.empty((n_subjects, n_candidates), dtype=np.int64)
    for query in range(n_subjects):
        # Draw among the n - 1 others, then skip over the query's own index.
        distractors = rng.choice(n_subjects - 1, size=n_candidates - 1, replace=False)
        candidates[query, 0] = query
        candidates[query, 1:] = distractors + (distractors >= query)
    return candidates


def partner_rank_counts(queries: np.ndarray, gallery: np.ndarray, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Count, per query, the candidates scoring above and level with its true partner.

    Args:
        queries: (n, dim) embeddings; query ``i``'s partner is ``gallery[i]``.
        gallery: (n, dim) embeddings of the other modality.
        candidates: (n, N) indices into `gallery` with the partner in column 0
            (`sample_candidates`), or None to rank against the whole gallery.

    Returns:
        ``(n_better, n_tied)``: (n,) int64 counts of candidates with a strictly
        higher cosine similarity, and of other candidates with exactly the
        partner's similarity.
    """
    q = normalize_rows(queries)
    g = normalize_rows(gallery)
    if q.shape != g.shape:
        raise ValueError(f"queries {q.shape} and gallery {g.shape} must have the same shape (paired rows)")
    n, dim = q.shape
    n_better = np.empty(n, dtype=np.int64)
    n_tied = np.empty(n, dtype=np.int64)
    width = n if candidates is None else candidates.shape[1]
    if candidates is not None:
        if candidates.ndim != 2 or candidates.shape[0] != n:
            raise ValueError(f"candidates must be (n={n}, N), got shape {candidates.shape}")
        if not np.array_equal(candidates[:, 0], np.arange(n)):
            raise ValueError("column 0 of candidates must hold each query's own index (its partner)")
    block = max(1, _BLOCK_ELEMENTS // (width * (dim if candidates is not None else 1)))
    for start in range(0, n, block):
        stop = min(n, start + block)
        if candidates is None:
            sims = q[start:stop] @ g.T  # (block, n): similarity to every gallery item
            partner = sims[np.arange(stop - start), np.arange(start, stop)]
        else:
            cand = g[candidates[start:stop]]  # (block, N, dim)
            sims = np.einsum("bnd,bd->bn", cand, q[start:stop])
            partner = sims[:, 0]
        n_better[start:stop] = (sims > partner[:, None]).sum(axis=1)
        n_tied[start:stop] = (sims == partner[:, None]).sum(axis=1) - 1  # minus the partner itself
    return n_better, n_tied


def rank_metrics(n_better: np.ndarray, n_tied: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict:
    """Top-k accuracies and rank statistics from `partner_rank_counts`.

    Ties are broken uniformly at random in expectation: with ``b`` better and
    ``t`` tied candidates the partner's rank is uniform on ``b+1 .. b+t+1``.

    Args:
        n_better: (n,) counts of candidates scoring above the partner.
        n_tied: (n,) counts of other candidates scoring equal to it.
        ks: the k of each top-k accuracy.

    Returns:
        ``{"top1": ..., "top5": ..., "top10": ..., "median_rank": ..., "mean_rank": ...}``
        (accuracies as fractions in [0, 1], ranks 1-based).
    """
    b = np.asarray(n_better, dtype=np.float64)
    t = np.asarray(n_tied, dtype=np.float64)
    result = {}
    for k in ks:
        # P(b + 1 + U <= k) for U uniform on {0, ..., t}.
        result[f"top{k}"] = float(np.mean(np.clip((k - b) / (t + 1.0), 0.0, 1.0)))
    expected_rank = 1.0 + b + t / 2.0
    result["median_rank"] = float(np.median(expected_rank))
    result["mean_rank"] = float(np.mean(expected_rank))
    return result


def chance_metrics(n_candidates: int, ks: tuple[int, ...] = DEFAULT_KS) -> dict:
    """What a random ranking scores among `n_candidates`: ``min(k, N) / N`` and ``(N + 1) / 2``."""
    result = {f"top{k}": min(k, n_candidates) / n_candidates for k in ks}
    result["median_rank"] = (n_candidates + 1) / 2.0
    result["mean_rank"] = (n_candidates + 1) / 2.0
    return result


def retrieval_metrics(ecg_embeddings: np.ndarray, cmr_embeddings: np.ndarray, n_candidates: int = 100, seed: int = 0,
                      ks: tuple[int, ...] = DEFAULT_KS, return_ranks: bool = False) -> dict:
    """ECG→CMR and CMR→ECG retrieval among `n_candidates`, following the module's protocol.

    Args:
        ecg_embeddings: (n, dim); row ``i`` is subject ``i``'s ECG.
        cmr_embeddings: (n, dim); row ``i`` is subject ``i``'s CMR (one view).
        n_candidates: candidates per query including the partner (N); every
            subject is used when N is at least n.
        seed: seed of the distractor draw.
        ks: the k of each top-k accuracy.
        return_ranks: also return each query's expected rank under ``"ranks"``.

    Returns:
        ``{"ecg_to_cmr": {top1, top5, top10, median_rank, mean_rank},
        "cmr_to_ecg": {...}, "chance": {...}, "n_queries": n,
        "n_candidates": N used, "n_candidates_requested": N asked,
        "all_candidates": bool, "seed": seed}`` (+ ``"ranks"``: {direction: (n,) array}).
    """
    n = len(ecg_embeddings)
    if len(cmr_embeddings) != n:
        raise ValueError(f"{n} ECG embeddings but {len(cmr_embeddings)} CMR embeddings; rows must be paired")
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 paired subjects, got {n}")
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be at least 2, got {n_candidates}")
    all_candidates = n_candidates >= n
    candidates = None if all_candidates else sample_candidates(n, n_candidates, seed)
    n_used = n if all_candidates else n_candidates
    result: dict = {}
    ranks = {}
    for direction, (queries, gallery) in {"ecg_to_cmr": (ecg_embeddings, cmr_embeddings),
                                          "cmr_to_ecg": (cmr_embeddings, ecg_embeddings)}.items():
        n_better, n_tied = partner_rank_counts(queries, gallery, candidates)
        result[direction] = rank_metrics(n_better, n_tied, ks)
        ranks[direction] = 1.0 + n_better + n_tied / 2.0
    result.update({
        "chance": chance_metrics(n_used, ks),
        "n_queries": n,
        "n_candidates": n_used,
        "n_candidates_requested": n_candidates,
        "all_candidates": all_candidates,
        "seed": seed,
    })
    if return_ranks:
        result["ranks"] = ranks
    return result


# ---------------------------------------------------------------------------
# Running the protocol on a trained model and a training-set split
# ---------------------------------------------------------------------------

PRIMARY_VIEW = "sa"


def _order_views(views) -> list[str]:
    """Views with the primary (short-axis) first, the rest in their given order."""
    views = list(dict.fromkeys(views))
    return sorted(views, key=lambda v: v != PRIMARY_VIEW)


def _phenotype_values(dataset, column: str) -> np.ndarray:
    """A numeric manifest column of the dataset's subjects, as float (NaN where missing)."""
    import pandas as pd

    from cardiacnets.data.store import MANIFEST

    manifest = dataset.manifest
    path = dataset.root / MANIFEST
    if column not in manifest.columns:
        numeric = [c for c in manifest.columns if pd.api.types.is_numeric_dtype(manifest[c]) and c != "row"]
        raise InputError(path, f"no phenotype column {column!r}; numeric columns include {', '.join(numeric[:12])}")
    values = manifest[column]
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    raise InputError(path, f"column {column!r} is not numeric (dtype {values.dtype}); choose a numeric phenotype such as lvef_pct")


def _open_split(data, split: str):
    """The split's subjects that have an ECG, as a `TrainingSet`; clear errors otherwise."""
    from cardiacnets.data.store import MANIFEST, TrainingSet

    everyone = TrainingSet(data)  # raises when `data` is not a training set
    manifest_path = everyone.root / MANIFEST
    if "ecg" not in everyone.arrays or "has_ecg" not in everyone.manifest.columns:
        raise InputError(everyone.root, "training set holds no ECGs (no ecg.npy); retrieval needs paired ECG and CMR")
    if not everyone.views:
        raise InputError(everyone.root, "training set holds no CMR (no cmr_<view>.npy); retrieval needs paired ECG and CMR")
    splits = sorted(everyone.manifest["split"].dropna().astype(str).unique())
    if split not in splits:
        raise InputError(manifest_path, f"no split {split!r}; splits present: {', '.join(splits) or 'none'}")
    dataset = TrainingSet(data, split=split, require=("ecg",))
    if len(dataset) == 0:
        raise InputError(manifest_path, f"split {split!r} has no subject with an ECG")
    return dataset


DEMOGRAPHICS_FILE = "demographics.json"


def _run_demographics(run, model_dir: Path, model):
    """The run's demographics normaliser when the model's ECG encoder conditions on demographics (FiLM).

    Training fits it on the training split and saves it as ``RUN/demographics.json``;
    inference must normalise identically, so it is required, never refitted here.
    """
    from cardiacnets.data.torch_data import DemographicsNormalizer

    encoder_config = getattr(getattr(model, "ecg_encoder", None), "config", None)
    if not getattr(encoder_config, "film", False):
        return None
    for folder in (Path(run), model_dir, model_dir.parent):
        if (folder / DEMOGRAPHICS_FILE).is_file():
            return DemographicsNormalizer.load(folder / DEMOGRAPHICS_FILE)
    raise InputError(run, f"the model's ECG encoder conditions on demographics but the run has no {DEMOGRAPHICS_FILE} "
                          "(the training split's normalisation written by 'cardiacnets train')")


def _choose_views(dataset, split: str, encodable, model_dir, views) -> tuple[list[str], dict[str, str]]:
    """The views to score (primary first) and the views skipped for too few paired subjects, with the reason.

    Raises:
        InputError: a requested view the data or the model lacks, or one with too few pairs; no view to score.
    """
    if views:
        for view in views:
            if view not in dataset.views:
                raise InputError(dataset.root, f"training set has no CMR view {view!r}; stored views: {', '.join(dataset.views)}")
            if encodable is not None and view not in encodable:
                raise InputError(model_dir, f"model has no encoder for CMR view {view!r}; its views: {', '.join(encodable)}")
        chosen = _order_views(views)
    else:
        chosen = _order_views(v for v in dataset.views if encodable is None or v in encodable)
        if not chosen:
            raise InputError(dataset.root, f"no CMR view shared by the training set ({', '.join(dataset.views)}) "
                                           f"and the model ({', '.join(encodable or ())})")
    n_paired = {view: int(dataset.manifest[f"has_{view}"].astype(bool).sum()) for view in chosen}
    skipped = {view: f"split {split!r} has {n} subject(s) with both ECG and {view}; retrieval needs at least 2"
               for view, n in n_paired.items() if n < 2}
    if views and skipped:
        raise InputError(dataset.root, next(iter(skipped.values())))
    chosen = [v for v in chosen if v not in skipped]
    if not chosen:
        raise InputError(dataset.root, "; ".join(skipped.values()))
    return chosen, skipped


def _export(result: dict, embeddings, ranks: dict, phenotype, color_by: str, out_dir: Path, title: str) -> list[str]:
    """Write the embeddings, per-subject ranks, the projection plot and ``retrieval.json``; the files written."""
    import json

    import pandas as pd

    from cardiacnets.evaluate.embeddings import save_embeddings
    from cardiacnets.evaluate.plots import plot_projection

    written = save_embeddings(embeddings, out_dir)
    for view, (ids, view_ranks) in ranks.items():
        path = out_dir / f"ranks_{view}.csv"
        pd.DataFrame({"subject_id": ids, "ecg_to_cmr_rank": view_ranks["ecg_to_cmr"],
                      "cmr_to_ecg_rank": view_ranks["cmr_to_ecg"]}).to_csv(path, index=False)
        written.append(path)
    png = plot_projection(embeddings.ecg, embeddings.cmr, phenotype, color_by, out_dir / f"projection_{color_by}.png",
                          title=title)
    written.append(png)
    json_path = out_dir / "retrieval.json"
    written.append(json_path)
    outputs = [str(p) for p in written]
    json_path.write_text(json.dumps({**result, "outputs": outputs}, indent=2) + "\n")
    return outputs


def evaluate_retrieval(run, data, split: str = "test", views: list[str] | None = None, n_candidates: int = 100,
                       seed: int = 0, out_dir=None, color_by: str = "lvef_pct", batch_size: int = 64,
                       precision: str = "fp32", device: str = "auto", num_workers: int = 0,
                       progress: bool = False) -> dict:
    """Embed a split with a trained alignment model and score retrieval in both directions.

    Steps: (1) check the model, data, split, views and phenotype; (2) embed the
    split's ECGs and each view's cines in batches; (3) score each view with
    `retrieval_metrics`; (4) with `out_dir`, write the embeddings, per-subject
    ranks, a PCA projection plot and ``retrieval.json``.

    Args:
        run: training run folder (``RUN/model/``) or saved model folder.
        data: training set folder (``cardiacnets preprocess`` output).
        split: the split to evaluate (``"test"``, ``"val"``, ``"train"``).
        views: CMR views to score; None scores every view both the data and the
            model hold (views with fewer than 2 paired subjects in the split are
            then listed under ``skipped_views``). The primary view (``sa`` when
            scored) fills the top-level keys.
        n_candidates: candidates per query, the true partner included.
        seed: seed of the distractor draw.
        out_dir: folder for the exported files; None writes nothing.
        color_by: numeric manifest column colouring the projection plot.
        batch_size: subjects per forward pass.
        precision: ``"fp32"`` or ``"bf16"`` autocast.
        device: torch device, or ``"auto"`` (CUDA when available, else CPU).
        num_workers: DataLoader worker processes.
        progress: show a progress bar while embedding.

    Returns:
        The result dict: top-level ``ecg_to_cmr`` / ``cmr_to_ecg`` (``top1``,
        ``top5``, ``top10``, ``median_rank``, ``mean_rank``), ``chance``,
        ``n_candidates``, ``n_queries``, ``view`` for the primary view; ``views``
        with the same block per view; run details (``split``, ``seed``, ``model``,
        ``data``, ``precision``, ``device``, ``protocol``, ``timing``, ``notes``) and
        ``outputs`` (files written).

    Raises:
        InputError: missing run, not a training set, no ECG or CMR, unknown
            split, view or phenotype, too few paired subjects.
        ConfigError: invalid numbers (fewer than 2 candidates, batch size below 1).
    """
    import torch

    from cardiacnets.data.torch_data import CardiacTorchDataset
    from cardiacnets.errors import ConfigError
    from cardiacnets.evaluate.embeddings import PRECISIONS, embed_split, load_alignment_model, model_views

    # 1. Check inputs before any expensive work.
    if n_candidates < 2:
        raise ConfigError(f"--candidates must be at least 2, got {n_candidates}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    model, model_dir = load_alignment_model(run)
    dataset = _open_split(data, split)
    phenotype = _phenotype_values(dataset, color_by) if out_dir is not None else None
    chosen, skipped = _choose_views(dataset, split, model_views(model), model_dir, views)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    # 2. Embed the split.
    torch_dataset = CardiacTorchDataset(dataset, demographics=_run_demographics(run, model_dir, model), augment=None,
                                        views=chosen)
    try:
        embeddings = embed_split(model, torch_dataset, tuple(chosen), batch_size=batch_size, device=device,
                                 precision=precision, num_workers=num_workers, progress=progress)
    except ValueError as err:  # the model's input checks: this data does not fit this model
        raise InputError(dataset.root, f"does not fit the model in {model_dir}: {err}") from err

    # 3. Score each view.
    notes = []
    per_view, ranks = {}, {}
    for view in chosen:
        ecg, cmr, ids = embeddings.paired(view)
        try:
            scores = retrieval_metrics(ecg, cmr, n_candidates=n_candidates, seed=seed, return_ranks=True)
        except ValueError as err:  # non-finite embeddings: the model, not the data, is at fault
            raise InputError(model_dir, f"{view}: {err}") from None
        ranks[view] = (ids, scores.pop("ranks"))
        if scores["all_candidates"] and n_candidates > scores["n_queries"]:
            note = (f"{view}: split {split!r} has {scores['n_queries']} paired subjects, fewer than the "
                    f"{n_candidates} candidates requested: every subject is a candidate (N={scores['n_queries']})")
            scores["note"] = note
            notes.append(note)
        per_view[view] = scores
    primary = chosen[0]
    result = {key: per_view[primary][key] for key in ("ecg_to_cmr", "cmr_to_ecg", "chance", "n_candidates",
                                                      "n_candidates_requested", "all_candidates", "n_queries")}
    result.update({
        "view": primary,
        "views": per_view,
        "skipped_views": skipped,
        "split": split,
        "seed": seed,
        "n_subjects_with_ecg": len(embeddings.subject_ids),
        "model": str(model_dir),
        "model_class": type(model).__name__,
        "data": str(dataset.root),
        "precision": precision,
        "device": str(device),
        "protocol": ("each subject's ECG (CMR) queries its own CMR (ECG) among N candidates: the partner plus N-1 "
                     "distractors drawn without replacement from the split's paired subjects with "
                     "numpy.random.default_rng(seed) (every subject when N >= split size); cosine similarity; "
                     "exact ties broken uniformly at random in expectation"),
        "timing": {"embed_seconds": round(embeddings.seconds, 3),
                   "subjects_per_s": round(len(embeddings.subject_ids) / max(embeddings.seconds, 1e-9), 2)},
        "notes": notes + list(skipped.values()),
    })

    # 4. Export.
    if out_dir is not None:
        result["outputs"] = _export(result, embeddings, ranks, phenotype, color_by, Path(out_dir),
                                    f"{model_dir} on {dataset.root.name}/{split}: PCA of the shared embedding space")
    return result
