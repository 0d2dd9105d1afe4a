"""The summary of a reader study: accuracy per arm and per reader, and paired comparisons between arms.

`summarize` reads a `cardiacnets.review.study_store.StudyStore`: accuracy
against the ground truth with Wilson 95 % intervals, and for every pair of arms
the exact McNemar test on the paired correct/incorrect readings of the same
reader and case (statsmodels).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cardiacnets.review.study import IMAGE_ARMS
from cardiacnets.review.study_store import StudyStore


def _accuracy(correct: Sequence[int]) -> dict:
    from statsmodels.stats.proportion import proportion_confint

    n, k = len(correct), int(sum(correct))
    if n == 0:
        return {"n": 0, "n_correct": 0, "accuracy": None, "ci95": None}
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return {"n": n, "n_correct": k, "accuracy": k / n, "ci95": [float(low), float(high)]}


def _mean(values: Sequence) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(store: StudyStore) -> dict:
    """Accuracy per arm and per reader, and paired comparisons between arms.

    Only submitted readings count. Accuracy: the diagnosis is one of the case's
    correct answers; 95 % Wilson intervals. Pairs: for arms A and B, the
    readings of the same reader and case under both; the exact McNemar test
    (binomial on the discordant pairs, statsmodels) compares A with B.

    Args:
        store: the study's store.

    Returns:
        A JSON-serialisable dict: ``study``, ``arms``, ``progress`` (per reader
        submitted/total), ``per_arm``, ``per_reader``, ``paired``.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    meta = store.meta()
    definition = meta["definition"]
    arms = list(definition["arms"])
    rows = store.export_rows()
    done = [r for r in rows if r["submitted_at"]]
    progress = {}
    for r in rows:
        entry = progress.setdefault(r["reader"], {"submitted": 0, "total": 0})
        entry["total"] += 1
        entry["submitted"] += int(bool(r["submitted_at"]))

    per_arm = {}
    for arm in arms:
        in_arm = [r for r in done if r["arm"] == arm]
        block = _accuracy([r["correct"] for r in in_arm])
        block["mean_confidence"] = _mean([r["confidence"] for r in in_arm])
        block["mean_realism"] = _mean([r["realism"] for r in in_arm]) if arm in IMAGE_ARMS else None
        block["median_active_seconds"] = float(np.median([r["active_seconds"] for r in in_arm])) if in_arm else None
        per_arm[arm] = block
    per_reader = {}
    for reader in progress:
        mine = [r for r in done if r["reader"] == reader]
        per_reader[reader] = {"all": _accuracy([r["correct"] for r in mine])}
        for arm in arms:
            per_reader[reader][arm] = _accuracy([r["correct"] for r in mine if r["arm"] == arm])

    correct_of = {(r["reader"], r["case_id"], r["arm"]): r["correct"] for r in done}
    paired = []
    for i, arm_a in enumerate(arms):
        for arm_b in arms[i + 1:]:
            table = np.zeros((2, 2), int)  # rows: A correct / wrong; columns: B correct / wrong
            for (reader, case_id, arm), a in correct_of.items():
                if arm != arm_a or (reader, case_id, arm_b) not in correct_of:
                    continue
                b = correct_of[(reader, case_id, arm_b)]
                table[1 - a, 1 - b] += 1
            n_pairs = int(table.sum())
            p_value = float(mcnemar(table, exact=True).pvalue) if table[0, 1] + table[1, 0] > 0 else 1.0
            paired.append({
                "arm_a": arm_a, "arm_b": arm_b, "n_pairs": n_pairs, "both_correct": int(table[0, 0]),
                "only_a_correct": int(table[0, 1]), "only_b_correct": int(table[1, 0]), "both_wrong": int(table[1, 1]),
                "accuracy_a": table[0].sum() / n_pairs if n_pairs else None,
                "accuracy_b": table[:, 0].sum() / n_pairs if n_pairs else None,
                "mcnemar_exact_p": p_value if n_pairs else None,
            })
    return {"study": definition["name"], "title": definition["title"], "arms": arms,
            "n_cases": len(store.cases()), "n_readers": len(progress), "n_submitted": len(done),
            "progress": progress, "per_arm": per_arm, "per_reader": per_reader, "paired": paired}
