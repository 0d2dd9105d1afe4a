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


def _acdc_dir() -> Path | None:
    """The real ACDC samples (``$CARDIACNETS_SHARED_DATA/acdc_h5`` or ``../shared/data/acdc_h5``), if present."""
    import os

    from cardiacnets.demo.config import REPO_ROOT

    root = os.environ.get("CARDIACNETS_SHARED_DATA")
    candidate = Path(root) / "acdc_h5" if root else REPO_ROOT.parent / "shared" / "data" / "acdc_h5"
    return candidate if candidate.is_dir() else None


def heads(demo, config, out_dir: Path, progress: bool):
    """Indices and screening from the ECG alone, with bootstrap CIs, on the held-out split."""
    from cardiacnets.evaluate.heads import evaluate_heads

    result = evaluate_heads(demo.run_dir("heads"), demo.folders["dataset"], split=config.split, out_dir=out_dir,
                            n_boot=config.bootstrap, precision="bf16", progress=progress)
    figures = {p.stem: p for p in sorted(out_dir.rglob("*.png"))}
    return result, figures


#: Generation stages and the generator each one exports (``RUN/pipeline``), in the order they are scored.
GENERATOR_STAGES = ("anatomy", "diffusion")


def generation(demo, config, out_dir: Path, progress: bool):
    """Generated cines of every enabled generator, scored against the true ones and against the baselines."""
    from cardiacnets.evaluate.generation import evaluate_generation

    align = demo.run_dir("align")
    pipelines = [demo.run_dir(stage) / "pipeline" for stage in GENERATOR_STAGES if demo.stage_enabled(stage)]
    result = evaluate_generation(pipelines[0] if len(pipelines) == 1 else pipelines, demo.folders["dataset"],
                                 split=config.split, segmenter=demo.run_dir("segment"),
                                 feature_encoder=align / "cmr_sa_encoder", alignment=align,
                                 limit=config.generation_subjects or None, steps=config.generation_steps,
                                 guidance=config.guidance, acdc_dir=_acdc_dir(), out_dir=out_dir,
                                 n_examples=config.report_cines, bf16=True, progress=progress)
    figures = {p.name: p for p in sorted(out_dir.rglob("*")) if p.suffix in (".png", ".gif")}
    return result, figures


#: Evaluation name → function, in report order.
EVALUATIONS = {"retrieval": retrieval, "heads": heads, "generation": generation}


def needs(demo, name: str) -> list[str]:
    """The stages an evaluation needs that are not enabled (empty: it can run)."""
    required = {"retrieval": ["align"], "heads": ["align", "heads"], "generation": ["align", "segment"]}[name]
    missing = [stage for stage in required if not demo.stage_enabled(stage)]
    if name == "generation" and not any(demo.stage_enabled(stage) for stage in GENERATOR_STAGES):
        missing.append(" or ".join(GENERATOR_STAGES))
    return missing
