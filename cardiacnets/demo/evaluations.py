"""The demo's evaluations: each takes the trained stages and returns (metrics, figure files).

Every function has the signature ``fn(demo, config, out_dir, progress) -> (dict, dict[str, Path])``
and calls the same code as the corresponding ``cardiacnets evaluate`` command.
"""

from __future__ import annotations

from pathlib import Path


def retrieval(demo, config, out_dir: Path, progress: bool):
    """ECG ↔ CMR retrieval of the aligned model among `retrieval_candidates` held-out candidates."""
    from cardiacnets.evaluate.retrieval import evaluate_retrieval

    result = evaluate_retrieval(demo.run_dir("align"), demo.folders["dataset"], split=config.split,
                                n_candidates=config.retrieval_candidates, out_dir=out_dir, color_by="lvef_pct",
                                precision="bf16", progress=progress)
    figures = {Path(p).stem: Path(p) for p in result.get("outputs", []) if str(p).endswith(".png")}
    keep = {"ecg_to_cmr", "cmr_to_ecg", "chance", "n_candidates", "split", "views", "n_subjects_with_ecg"}
    summary = {k: v for k, v in result.items() if k in keep}
    for block in summary.get("views", {}).values():
        block.pop("ranks", None)
    return summary, figures


#: Evaluation name → function, in report order.
EVALUATIONS = {"retrieval": retrieval}
#: Stages each evaluation needs.
NEEDS = {"retrieval": ["align"]}
