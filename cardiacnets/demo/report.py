"""The demo's HTML report: one self-contained file (figures embedded), every number from ``metrics.json``.

Sections: the cohort and timings, retrieval, heads (tables with 95% confidence
intervals, ROC and scatter plots), generation (metrics against the
nearest-neighbour baseline, generated vs true cines as GIFs), and how to open
the review app on these results. Nothing is pasted in: the report is rendered
from the metrics the run measured and the figures it wrote.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d2430;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em} h2{border-bottom:2px solid #e3e7ee;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0 1.2em 0;font-size:.92em} th,td{border:1px solid #d6dbe4;padding:.3em .6em;
text-align:right} th{background:#f2f4f8} td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0}.figs img{max-width:520px;border:1px solid #e3e7ee}
figcaption{font-size:.85em;color:#566} .note{color:#566;font-size:.9em} code{background:#f2f4f8;padding:0 .25em}
.synthetic{color:#b00020;font-weight:600}
"""


def _esc(value) -> str:
    return html.escape(str(value))


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return _esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _esc(value)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell if isinstance(cell, _Raw) else _fmt(cell)}</td>" for cell in row)
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _ci(block: dict, digits: int = 3) -> _Raw:
    """``value (low–high)`` of a {value, low, high} dict."""
    if not isinstance(block, dict) or "value" not in block:
        return _Raw(_fmt(block, digits))
    text = _fmt(block["value"], digits)
    if block.get("low") is not None and block.get("high") is not None:
        text += f" <span class='note'>({_fmt(block['low'], digits)}–{_fmt(block['high'], digits)})</span>"
    return _Raw(text)


def _not_evaluated(result: dict) -> bool:
    """Whether an evaluation did not run: no result, or ``skipped`` holding the reason (a string; a heads result's
    ``skipped`` is the dict of targets it left out, and the evaluation did run)."""
    return not result or isinstance(result.get("skipped"), str)


def _image(path: Path, caption: str, width: int | None = None) -> str:
    path = Path(path)
    if not path.is_file():
        return f"<p class='note'>missing figure {_esc(path)}</p>"
    mime = {".png": "image/png", ".gif": "image/gif", ".svg": "image/svg+xml"}.get(path.suffix.lower(), "image/png")
    data = base64.b64encode(path.read_bytes()).decode()
    style = f" style='width:{width}px'" if width else ""
    return f"<figure><img src='data:{mime};base64,{data}' alt='{_esc(caption)}'{style}><figcaption>{_esc(caption)}</figcaption></figure>"


# --- sections ---------------------------------------------------------------------------------------------------
def _summary_section(demo) -> str:
    m = demo.metrics
    counts = m.get("dataset", {}).get("counts", {})
    rows = [["simulated subjects", m.get("cohort", {}).get("n_subjects")],
            ["failed records", m.get("dataset", {}).get("failed_records")]]
    rows += [[f"training set: {k}", v] for k, v in sorted(counts.items())]
    timing_rows = [[name, seconds, f"{seconds / 60:.1f}"] for name, seconds in m.get("timings_s", {}).items()]
    out = "<h2>Cohort and timings</h2>" + _table(["", "value"], rows)
    out += _table(["step", "seconds", "minutes"], timing_rows)
    return out


def _models_section(demo) -> str:
    """Which models produced the figures: the reference bundle (name, hash, model card) and the stages trained here."""
    m = demo.metrics.get("models")
    if not m:
        return ("<h2>Models</h2><p>Every model below was trained by this run on the demo cohort "
                "(<code>--from-scratch</code>).</p>")
    card = m.get("model_card")
    link = (f"<a href='{_esc(Path(card).resolve().as_uri())}'>{_esc(card)}</a>" if card else "no model card")
    rows = [[stage, source] for stage, source in sorted(m.get("stages", {}).items())]
    return (f"<h2>Models</h2><p>The figures come from the reference bundle <b>{_esc(m['bundle'])}</b> "
            f"(bundle.json SHA-256 <code>{_esc(m['sha256'])}</code>, package version {_esc(m['package_version'])}, "
            f"built {_esc(m.get('built'))}; model card: {link}), trained on simulated subjects the demo's cohort "
            f"does not contain, except the stages this run trained:</p>" + _table(["stage", "model"], rows))


def _retrieval_section(demo) -> str:
    r = demo.metrics.get("retrieval", {})
    if _not_evaluated(r):
        return f"<h2>Retrieval</h2><p class='note'>not evaluated: {_esc(r.get('skipped', 'no result'))}</p>"
    rows = []
    for view, block in r.get("views", {}).items():
        for label, key in (("ECG → CMR", "ecg_to_cmr"), ("CMR → ECG", "cmr_to_ecg"), ("chance", "chance")):
            b = block[key]
            rows.append([f"{view}: {label}", b["top1"], b["top5"], b["top10"], b["median_rank"]])
    out = (f"<h2>ECG ↔ CMR retrieval</h2><p>Each held-out subject's ECG ranks its own cine among "
           f"{_fmt(r.get('n_candidates'))} candidates (and the reverse), split {_esc(r.get('split'))}.</p>")
    out += _table(["direction", "top-1", "top-5", "top-10", "median rank"], rows)
    figs = [_image(p, "PCA of the shared embedding space (ECG and CMR), coloured by LVEF")
            for k, p in demo.figures.items() if k.startswith("retrieval/")]
    return out + f"<div class='figs'>{''.join(figs)}</div>"


def _generic_section(title: str, key: str, demo) -> str:
    """A section for an evaluation without a dedicated renderer: its scalar metrics and figures."""
    r = demo.metrics.get(key, {})
    if _not_evaluated(r):
        return f"<h2>{_esc(title)}</h2><p class='note'>not evaluated: {_esc(r.get('skipped', 'no result'))}</p>"
    rows = [[k, v] for k, v in _flatten(r).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    figs = [_image(p, k.split("/", 1)[1]) for k, p in demo.figures.items() if k.startswith(f"{key}/")]
    return f"<h2>{_esc(title)}</h2>" + _table(["metric", "value"], rows) + f"<div class='figs'>{''.join(figs)}</div>"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


SECTIONS: dict[str, callable] = {}


def register_section(key: str):
    """Decorator: a dedicated renderer ``fn(demo) -> html`` for evaluation `key`."""
    def wrap(fn):
        SECTIONS[key] = fn
        return fn
    return wrap


def write_report(demo) -> Path:
    """Write ``report.html`` in the demo folder and return its path."""
    from cardiacnets.demo import evaluations

    parts = [f"<h1>CardiacNets demo report</h1><p class='note'>{_esc(demo.out.resolve())} — every figure below was "
             f"computed by this run (<code>metrics.json</code> holds them all).</p>", _models_section(demo),
             _summary_section(demo), _retrieval_section(demo)]
    for key in evaluations.EVALUATIONS:
        if key == "retrieval":
            continue
        renderer = SECTIONS.get(key)
        parts.append(renderer(demo) if renderer else _generic_section(key.capitalize(), key, demo))
    review = demo.metrics.get("review_command")
    if review:
        parts.append(f"<h2>Review</h2><p>Open the review app on these results:</p><pre>{_esc(review)}</pre>")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>CardiacNets demo report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}"
            f"<details><summary>metrics.json</summary><pre>{_esc(json.dumps(demo.metrics, indent=1, default=str))}"
            f"</pre></details></body></html>")
    path = demo.out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


@register_section("heads")
def _heads_section(demo) -> str:
    r = demo.metrics.get("heads", {})
    if _not_evaluated(r):
        return f"<h2>Heads</h2><p class='note'>not evaluated: {_esc(r.get('skipped', 'no result'))}</p>"
    out = (f"<h2>Cardiac function and screening from the ECG alone</h2><p>Heads on the aligned ECG encoder, "
           f"evaluated on {_fmt(r.get('n_subjects'))} held-out subjects (split {_esc(r.get('split'))}); 95% "
           f"bootstrap confidence intervals ({_fmt(r.get('n_boot'))} resamples); thresholds chosen on "
           f"{_esc(r.get('threshold_split'))} (Youden).</p>")
    rows = []
    for name, m in r.get("regression", {}).items():
        rows.append([name, m.get("unit", ""), m.get("n"), _ci(m.get("pearson_r")), _ci(m.get("r2")),
                     _ci(m.get("mae"), 1), _ci(m.get("r2_fraction_of_ceiling")) if "r2_fraction_of_ceiling" in m else "–"])
    if rows:
        out += "<h3>Indices</h3>" + _table(["index", "unit", "n", "Pearson r", "R²", "MAE", "R² / simulator ceiling"], rows)
    rows = []
    for name, m in r.get("binary", {}).items():
        rows.append([name, m.get("n"), m.get("n_positive"), _ci(m.get("auroc")), _ci(m.get("auprc")),
                     _ci(m.get("sensitivity")), _ci(m.get("specificity")), _ci(m.get("ece"))])
    if rows:
        out += "<h3>Screening</h3>" + _table(["condition", "n", "cases", "AUROC", "AUPRC", "sensitivity",
                                               "specificity", "calibration error"], rows)
    rows = []
    for name, m in r.get("multiclass", {}).items():
        rows.append([name, m.get("n"), _ci(m.get("accuracy")), _ci(m.get("balanced_accuracy")), _ci(m.get("macro_auroc"))])
    if rows:
        out += _table(["multiclass", "n", "accuracy", "balanced accuracy", "macro AUROC"], rows)
    out += _heads_comparison(r)
    figs = [_image(p, k.split("/", 1)[1].replace("_", " ")) for k, p in demo.figures.items() if k.startswith("heads/")]
    return out + f"<div class='figs'>{''.join(figs)}</div>"


#: Indices and screening labels compared across heads models in the report.
_COMPARED_INDICES = [("lvedv_ml", "LVEDV R²"), ("lvef_pct", "LVEF R²"), ("lvm_g", "LV mass R²")]
_COMPARED_LABELS = [("cardiomyopathy", "cardiomyopathy AUROC"), ("heart_failure", "heart failure AUROC")]


def _heads_comparison(r: dict) -> str:
    """The heads models side by side on the same subjects: the 12-lead heads, the same shown lead I only, and every
    other heads model (lead-I heads, heads trained by this run from the aligned encoder and from scratch)."""
    models = [("heads (12 leads)", r)] + [(f"heads, lead I shown only", block)
                                          for subset, block in r.get("lead_subsets", {}).items() if subset == "I"]
    models += [(name.replace("_", " "), block) for name, block in r.get("others", {}).items()]
    baselines = {name: block for name, block in r.get("baselines", {}).items() if "regression" in block}
    models += [(f"baseline: {name.replace('_', ' ')}", block) for name, block in baselines.items()]
    if len(models) < 2:
        return ""
    rows = [[name] + [_ci(block.get("regression", {}).get(key, {}).get("r2")) for key, _ in _COMPARED_INDICES]
            + [_ci(block.get("binary", {}).get(key, {}).get("auroc")) for key, _ in _COMPARED_LABELS]
            for name, block in models]
    return ("<h3>Heads models compared</h3><p>Same held-out subjects. <i>heads lead i</i> was trained on lead I "
            "alone; <i>heads aligned</i> and <i>heads scratch</i>, if present, were trained by this run on its "
            "training split (a linear probe on the aligned ECG encoder, and the same network from random "
            "weights).</p>" + _baseline_note(baselines)
            + _table(["model"] + [label for _, label in _COMPARED_INDICES + _COMPARED_LABELS], rows))


def _baseline_note(baselines: dict) -> str:
    if not baselines:
        return ""
    n_train = {block.get("n_train") for block in baselines.values()}
    return ("<p><i>baseline: measurements</i> is a ridge (indices) or logistic regression (labels) on the ECG "
            "device's measurements and the demographics; <i>baseline: measurements boosted</i> gradient-boosted "
            "trees on the same numbers (their nonlinear relations too); <i>baseline: sokolow</i> the Sokolow-Lyon "
            f"voltage alone; all fitted on the {', '.join(_fmt(n) for n in sorted(n_train))} subjects of this "
            "cohort's training split. Where a heads model does not beat them, its waveform adds nothing the "
            "device's numbers do not already say (paired differences with CIs in metrics.json, "
            "<code>heads.baselines</code>).</p>")


@register_section("generation")
def _generation_section(demo) -> str:
    r = demo.metrics.get("generation", {})
    if _not_evaluated(r):
        return f"<h2>Generation</h2><p class='note'>not evaluated: {_esc(r.get('skipped', 'no result'))}</p>"
    keys = [("lvedv_r", "LVEDV r (generated vs true cine)"), ("lvedv_mae_ml", "LVEDV MAE (ml)"),
            ("lvef_r", "LVEF r"), ("lvef_mae_pct", "LVEF MAE (points)"), ("lvm_r", "LV mass r"),
            ("rvedv_r", "RVEDV r"), ("ssim", "SSIM"), ("psnr", "PSNR (dB)"),
            ("frechet", "Fréchet distance (own CMR encoder)"),
            ("frechet_statistics", "Fréchet distance (image statistics)"),
            ("statistics.auroc", "AUROC generated vs true (image statistics; 0.5 = indistinguishable)"),
            ("temporal.one_cycle", "cines with one contraction per cycle"),
            ("temporal.lv_curve_r", "LV area curve r (vs true cine)")]
    generators = r.get("generators") or {"generated": r}
    baselines = [(name, r[name]) for name in r if isinstance(r.get(name), dict)
                 and (name.endswith("_baseline") or name == "rendered_readout")]
    columns = [(f"{name} generator" if name in ("anatomy", "direct") else name, block)
               for name, block in generators.items()] + [(name.replace("_", " "), block) for name, block in baselines]

    def value(block, key):
        for part in key.split("."):
            block = block.get(part, {}) if isinstance(block, dict) else {}
        return block if isinstance(block, (int, float)) else None

    rows = [[label] + [value(block, key) for _, block in columns] for key, label in keys]
    settings = r.get("settings", {})
    out = (f"<h2>ECG → CMR generation <span class='synthetic'>(generated images are SYNTHETIC)</span></h2>"
           f"<p>{_fmt(r.get('n'))} held-out subjects; {_esc(settings)}. Baselines: the nearest neighbour (the real "
           f"cine of the training subject whose aligned ECG embedding is closest), the mean of the k nearest, a "
           f"random real cine, and the rendered read-out (a ridge of the ECG's device measurements and demographics "
           f"drawn as a plain anatomy of that size). A generator that does not beat them adds nothing.</p>")
    out += _table(["metric"] + [name for name, _ in columns], rows)
    for name, block in generators.items():
        anatomy = block.get("anatomy")
        if anatomy:
            dice = anatomy.get("dice_vs_segmented_cine", {})
            predicted = anatomy.get("predicted_function", {})
            out += (f"<p>{_esc(name)}: the generated anatomy vs the segmented generated cine, Dice "
                    + ", ".join(f"{_esc(k)} {_fmt(v)}" for k, v in dice.items())
                    + "; the anatomy's own indices vs the true cine (predicted function), r "
                    + ", ".join(f"{_esc(k[:-2])} {_fmt(v)}" for k, v in predicted.items() if k.endswith("_r"))
                    + "</p>")
        differences = (block.get("statistics") or {}).get("largest_differences")
        if differences:
            out += (f"<p>{_esc(name)}: the image statistics furthest from the true cines' (generated mean − true "
                    "mean, in true SDs; generated SD / true SD): "
                    + ", ".join(f"{_esc(d['name'])} {_fmt(d['d'])} ({_fmt(d['sd_ratio'])})" for d in differences)
                    + "</p>")
    segmenter = r.get("segmenter", {})
    if segmenter.get("acdc_dice"):
        dice = segmenter["acdc_dice"]
        out += "<p>Segmenter used for the volumes, Dice on the real ACDC labels: " + ", ".join(
            f"{_esc(k)} {_fmt(v)}" for k, v in (dice.items() if isinstance(dice, dict) else [])
            if isinstance(v, (int, float))) + "</p>"
    if r.get("measurement_note"):
        out += f"<p class='note'>{_esc(r['measurement_note'])}</p>"
    figs = [_image(p, "SYNTHETIC generated vs true: " + k.split("/", 1)[1].replace("_", " "), 520)
            for k, p in demo.figures.items() if k.startswith("generation/")]
    return out + f"<div class='figs'>{''.join(figs[:8])}</div>"
