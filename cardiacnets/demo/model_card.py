"""The reference bundle's model card (``MODEL_CARD.md``), written from the build's measured figures.

Every number in the card comes from the build's ``metrics.json`` (the held-out
simulated split and the real files); nothing is typed in. The card also lists
the SHA-256 of every other file of the bundle (the card itself is hashed in
``bundle.json`` and ``SHA256SUMS``).
"""

from __future__ import annotations

import json
from pathlib import Path

INDICES = [("lvedv_ml", "LVEDV"), ("lvesv_ml", "LVESV"), ("lvef_pct", "LVEF"), ("lvm_g", "LV mass"),
           ("rvedv_ml", "RVEDV"), ("rvef_pct", "RVEF")]


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        if "value" not in value:
            return "–"
        text = _num(value["value"], digits)
        if value.get("low") is not None and value.get("high") is not None:
            text += f" ({value['low']:.{digits}f}–{value['high']:.{digits}f})"
        return text
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _timing_rows(metadata: dict) -> list[list[str]]:
    timings, reused = metadata.get("timings_s", {}), metadata.get("reused_s", {})
    rows, work = [], 0.0
    for step, seconds in timings.items():
        if step == "total":
            continue
        if step in reused:
            seconds, by = reused[step], "an earlier run"
        else:
            by = "this run"
        part = step.startswith("evaluate_")  # a part of the step "evaluate", counted there
        work += 0.0 if part else seconds or 0.0
        rows.append([f"– {step} (part of evaluate)" if part else step, _num(seconds, 1),
                     _num(None if seconds is None else seconds / 60, 1), by])
    unknown = " (steps of unknown time left out)" if any(v is None for v in reused.values()) else ""
    rows.append([f"all steps{unknown}", _num(work, 1), _num(work / 60, 1), ""])
    return rows


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_num(cell) if not isinstance(cell, str) else cell for cell in row) + " |"
              for row in rows]
    return lines + [""]


def _heads_rows(block: dict) -> tuple[list[list], list[list]]:
    regression = [[label, _num(block.get("regression", {}).get(key, {}).get("r2")),
                   _num(block.get("regression", {}).get(key, {}).get("r2_fraction_of_ceiling")),
                   _num(block.get("regression", {}).get(key, {}).get("mae"), 1)]
                  for key, label in INDICES + [("wt_global", "wall thickness")] if key in block.get("regression", {})]
    binary = [[name.replace("_", " "), _num(m.get("n_positive")), _num(m.get("auroc"))]
              for name, m in block.get("binary", {}).items()]
    return regression, binary


def _heads_section(metrics: dict) -> list[str]:
    heads = metrics.get("heads", {})
    if not heads or "regression" not in heads:
        return ["Heads: not evaluated.", ""]
    lines = [f"### Heads (held-out simulated test split, {_num(heads.get('n_subjects'))} subjects; 95% bootstrap CIs)",
             ""]
    models = {"12-lead": heads, **{name.replace("heads_", "").replace("_", " "): block
                                   for name, block in heads.get("others", {}).items()}}
    for name, block in models.items():
        regression, binary = _heads_rows(block)
        lines += [f"**{name} heads** — indices:", ""]
        lines += _table(["index", "R²", "R² / simulator ceiling", "MAE"], regression)
        lines += ["screening:", ""] + _table(["condition", "cases", "AUROC"], binary)
    return lines


def _generation_section(metrics: dict) -> list[str]:
    g = metrics.get("generation", {})
    if not g or "skipped" in g:
        return ["Generation: not evaluated.", ""]
    columns = [("anatomy-first generator", g)] + [(name.replace("_", " "), g[name]) for name in
                                                   ("nn_baseline", "knn5_baseline", "random_baseline",
                                                    "rendered_readout") if isinstance(g.get(name), dict)]
    keys = [("lvedv_r", "LVEDV r"), ("lvesv_r", "LVESV r"), ("lvef_r", "LVEF r"), ("lvm_r", "LV mass r"),
            ("rvedv_r", "RVEDV r"), ("ssim", "SSIM"), ("frechet", "Fréchet distance"),
            ("frechet_statistics", "Fréchet distance, image statistics")]
    rows = [[label] + [_num(block.get(key)) for _, block in columns] for key, label in keys]
    temporal = g.get("temporal", {})
    rows.append(["one contraction per cycle"] + [_num((block.get("temporal") or {}).get("one_cycle"))
                                                 for _, block in columns])
    rows.append(["AUROC generated vs true, image statistics (0.5: indistinguishable)"]
                + [_num((block.get("statistics") or {}).get("auroc")) for _, block in columns])
    lines = [f"### Generation (held-out simulated test split, {_num(g.get('n'))} subjects; generated vs true cine, "
             f"both measured with the reference segmenter)", ""]
    lines += _table(["metric"] + [name for name, _ in columns], rows)
    noise = (g.get("method") or {}).get("acquisition_noise")
    if noise is not None:
        lines += [("The generated cines carry the pipeline's acquisition noise (`generation.acquisition`); "
                   if noise else "The generated cines are the decoded frames, without acquisition noise; ")
                  + "`cardiacnets evaluate generation --no-acquisition-noise` scores the same samples without it.", ""]
    bank = (g.get("method") or {}).get("appearance_bank")
    if bank:
        lines += [f"Each generated cine draws the appearance code (tissue intensities) of one of {bank} training "
                  "cines stored with the image denoiser (`generation.image_decoder`).", ""]
    dice = (g.get("anatomy") or {}).get("dice_vs_segmented_cine", {})
    if dice:
        lines += ["Generated anatomy vs the segmented generated cine, Dice: "
                  + ", ".join(f"{k.replace('_', ' ')} {_num(v)}" for k, v in dice.items())
                  + f"; LV area curve r vs the true cine {_num(temporal.get('lv_curve_r'))}.", ""]
    return lines


def _retrieval_section(metrics: dict) -> list[str]:
    r = metrics.get("retrieval", {})
    if not r or "views" not in r:
        return ["Retrieval: not evaluated.", ""]
    rows = [[view, _num(b["ecg_to_cmr"]["top1"]), _num(b["ecg_to_cmr"]["top5"]), _num(b["cmr_to_ecg"]["top1"]),
             _num(b["chance"]["top1"])] for view, b in r["views"].items()]
    return ([f"### ECG ↔ CMR retrieval (among {_num(r.get('n_candidates'))} held-out candidates)", ""]
            + _table(["view", "ECG→CMR top-1", "top-5", "CMR→ECG top-1", "chance"], rows))


def _real_section(metrics: dict) -> list[str]:
    real = metrics.get("real_data", {})
    lines = ["## On real files (transfer from the simulator)", ""]
    if not real or "skipped" in real:
        return lines + [f"Not evaluated: {real.get('skipped', 'no result')}.", ""]
    summary = real.get("summary_lines") or []
    lines += [f"- {line}" for line in summary] + [""]
    lines += ["The full results are in the build's `metrics.json` (`real_data`).", ""]
    return lines


#: Stages whose models the bundle holds inside another stage's folder.
_INSIDE = {"frame_vae": "anatomy", "anatomy_image": "anatomy"}


def _stage_home(stage: str) -> str:
    return f"{stage} ({_INSIDE[stage]})" if stage in _INSIDE else stage


def write_model_card(bundle: str | Path, metrics: dict, metadata: dict) -> Path:
    """Write ``BUNDLE/MODEL_CARD.md`` from the build's metrics and the bundle's metadata; returns its path."""
    bundle = Path(bundle)
    info = json.loads((bundle / "bundle.json").read_text())
    dataset = metrics.get("dataset", {}).get("counts", {})
    lines = [f"# Model card: {info['name']}", "",
             "**Trained on simulated data only. Not for clinical use.** These are the reference models of "
             "cardiacnets: every stage trained by the package's own commands on a simulated UK Biobank-style cohort "
             "(`cardiacnets synth`), so that `make demo` can show what the code does without downloading anything.",
             "", "## Build", "",
             f"- Command: `{metadata.get('command') or 'cardiacnets reference build'}`",
             f"- Config: `{Path(str(metadata.get('config'))).name}`; cohort: {_num(metadata.get('n_subjects'))} "
             f"simulated subjects, seed {metadata.get('seed')} (the demo's fresh cohorts use other seeds); "
             f"training set: " + ", ".join(f"{k} {_num(v)}" for k, v in sorted(dataset.items())),
             f"- Code commit: `{metadata.get('commit')}`; package version {info['package_version']} "
             f"(loads with `{info['requires']}`); built {info.get('created')}",
             "- Weights stored in float16 (safetensors) and restored to float32 when loaded; the figures below were "
             "measured on the float32 models before export.", "",
             "Build log summary (wall time of each step on the build machine; a step that an earlier run of the "
             "build in the same folder had done is reused, and its time is that run's; training steps):", ""]
    lines += _table(["step", "seconds", "minutes", "done by"], _timing_rows(metadata))
    lines += _table(["stage (its model is in)", "training steps"],
                    [[_stage_home(k), _num(v)] for k, v in metadata.get("training", {}).items()])
    lines += ["## Components", ""]
    lines += _table(["component", "folder", "what"], [
        ["align", "`align/model`", "CardiacCLIP: 1-D ResNet ECG encoder, short-axis and 4-chamber cine encoders, "
                                   "contrastive projections"],
        ["heads", "`heads/model`", "12-lead heads: CMR indices with intervals, six screening labels"],
        ["heads_lead_i", "`heads_lead_i/model`", "the same heads from lead I only"],
        ["segment", "`segment/model`", "short-axis segmenter (LV, myocardium, RV)"],
        ["anatomy", "`anatomy/pipeline`", "anatomy-first ECG → CMR generator (shape model, read-out, anatomy "
                                          "prior, label-conditioned image denoiser, frame autoencoder, "
                                          "acquisition-noise model)"]])
    lines += ["## Figures on the held-out simulated test split", ""]
    lines += _retrieval_section(metrics) + _heads_section(metrics) + _generation_section(metrics)
    lines += _real_section(metrics)
    lines += ["## Known limits", "",
              "- Trained and tested on simulated data: the figures above bound what the simulator lets an ECG "
              "predict, not what a real ECG does. The real-file figures show where transfer works and where not.",
              "- Generated cines are SYNTHETIC (marked in every file written) and must not be read as a patient's "
              "images.",
              "- Rebuild the bundle (`cardiacnets reference build`) whenever the simulator or a model changes.", "",
              "## Files (SHA-256)", ""]
    lines += _table(["file", "bytes", "sha256"], [[f"`{path}`", _num(entry["bytes"]), f"`{entry['sha256']}`"]
                                                   for path, entry in sorted(info["files"].items())
                                                   if path != "MODEL_CARD.md"])
    path = bundle / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
