"""The demo's evaluations: each takes the demo's models and returns (metrics, figure files).

Every function has the signature ``fn(demo, config, out_dir, progress) -> (dict, dict[str, Path])``
and calls the same code as the corresponding ``cardiacnets evaluate`` command. A model is a stage's
folder (`DemoRun.model_dir`): trained by the demo or taken from the reference bundle.
"""

from __future__ import annotations

from pathlib import Path


def retrieval(demo, config, out_dir: Path, progress: bool):
    """ECG ↔ CMR retrieval of the aligned model among `retrieval_candidates` held-out candidates."""
    from cardiacnets.evaluate.retrieval import evaluate_retrieval

    result = evaluate_retrieval(demo.model_dir("align"), demo.folders["dataset"], split=config.split,
                                n_candidates=config.retrieval_candidates, out_dir=out_dir, color_by="lvef_pct",
                                precision="bf16", progress=progress)
    figures = {Path(p).stem: Path(p) for p in result.get("outputs", []) if str(p).endswith(".png")}
    keep = {"ecg_to_cmr", "cmr_to_ecg", "chance", "n_candidates", "split", "views", "n_subjects_with_ecg"}
    summary = {k: v for k, v in result.items() if k in keep}
    for block in summary.get("views", {}).values():
        block.pop("ranks", None)
    return summary, figures


def _acdc_dir() -> Path | None:
    """The real ACDC samples (``acdc_h5`` in `cardiacnets.config.shared_data_dir`), if present."""
    from cardiacnets.config import shared_data_dir

    candidate = shared_data_dir() / "acdc_h5"
    return candidate if candidate.is_dir() else None


def heads_stages(demo) -> list[str]:
    """The demo's heads models beside the main one (``heads``): stages named ``heads_*`` (e.g. the lead-I head,
    or heads trained by the demo from the aligned encoder and from scratch)."""
    names = set(demo.models) | {name for name in demo.config.stages if demo.stage_enabled(name)}
    return sorted(name for name in names if name.startswith("heads_"))


def heads(demo, config, out_dir: Path, progress: bool):
    """Indices and screening from the ECG alone, with bootstrap CIs, on the held-out split: the 12-lead heads (also
    shown lead I only), then every other heads model on the same subjects (``others``)."""
    from cardiacnets.evaluate.heads import evaluate_heads

    result = evaluate_heads(demo.model_dir("heads"), demo.folders["dataset"], split=config.split, out_dir=out_dir,
                            lead_subsets=["I"], n_boot=config.bootstrap, precision="bf16", progress=progress)
    figures = {p.stem: p for p in sorted(out_dir.glob("*.png"))}
    result["others"] = {}
    for name in heads_stages(demo):
        other = evaluate_heads(demo.model_dir(name), demo.folders["dataset"], split=config.split,
                               out_dir=out_dir / name, n_boot=config.bootstrap, precision="bf16", progress=progress,
                               baselines=False)
        result["others"][name] = {key: other.get(key) for key in ("n_subjects", "regression", "binary", "leads")
                                  if key in other}
    return result, figures


#: Generation stages and the generator each one exports (``RUN/pipeline``), in the order they are scored.
GENERATOR_STAGES = ("anatomy", "diffusion")


def generation(demo, config, out_dir: Path, progress: bool):
    """Generated cines of every enabled generator, scored against the true ones and against the baselines."""
    from cardiacnets.evaluate.generation import evaluate_generation

    align = demo.model_dir("align")
    pipelines = [demo.model_dir(stage) / "pipeline" for stage in GENERATOR_STAGES if demo.has_model(stage)]
    result = evaluate_generation(pipelines[0] if len(pipelines) == 1 else pipelines, demo.folders["dataset"],
                                 split=config.split, segmenter=demo.model_dir("segment"),
                                 feature_encoder=align / "model", alignment=align,
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
    missing = [stage for stage in required if not demo.has_model(stage)]
    if name == "generation" and not any(demo.has_model(stage) for stage in GENERATOR_STAGES):
        missing.append(" or ".join(GENERATOR_STAGES))
    return missing
