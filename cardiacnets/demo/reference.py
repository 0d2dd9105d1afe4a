"""``cardiacnets reference build``: train, evaluate and export the reference models.

The build is a demo run of ``configs/reference/reference.yaml`` (a large simulated
cohort, every stage trained, every evaluation on its held-out split; steps done
earlier in the same folder are reused), followed by the evaluations on the real
files available (`real_data`), and the export of a bundle (`cardiacnets.models.bundle`):
the models that ``make demo`` evaluates, in half precision, with a model card
written from the measured figures and the SHA-256 of every file.

Layout of the bundle (each component laid out like the stage's run folder)::

    BUNDLE/bundle.json, SHA256SUMS, MODEL_CARD.md
    BUNDLE/align/model/              CardiacCLIP (ECG encoder, short-axis and 4-chamber encoders)
    BUNDLE/align/demographics.json   (when the alignment used demographics)
    BUNDLE/heads/model/              12-lead heads (indices, screening)
    BUNDLE/heads_lead_i/model/       lead-I heads
    BUNDLE/segment/model/            short-axis segmenter
    BUNDLE/anatomy/pipeline/         anatomy-first ECG → CMR generator
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from cardiacnets.demo.config import REPO_ROOT
from cardiacnets.errors import InputError

REFERENCE_CONFIG = REPO_ROOT / "configs" / "reference" / "reference.yaml"
#: Stage → the files and folders of its run folder the bundle keeps (``model`` etc.); optional ones may be absent.
BUNDLE_STAGES = {
    "align": (["model"], ["demographics.json"]),
    "heads": (["model"], ["demographics.json"]),
    "heads_lead_i": (["model"], ["demographics.json"]),
    "segment": (["model"], []),
    "anatomy": (["pipeline"], []),
}


def build_reference(out: str | Path, config_path: str | Path | None = None, overrides: list[str] | None = None,
                    bundle_out: str | Path | None = None, name: str | None = None, shared: str | Path | None = None,
                    command: str | None = None, real: bool = True, force: bool = False, progress: bool = True) -> Path:
    """Train and evaluate every stage (reusing what `out` holds), evaluate on real files, export the bundle.

    Args:
        out: the build folder (cohort, training set, runs, evaluation, ``metrics.json``).
        config_path: the build's demo config (default ``configs/reference/reference.yaml``).
        overrides: its ``key=value`` overrides.
        bundle_out: where the bundle is written (default ``OUT/bundle``): a new or empty folder, or the bundle of
            an earlier build (a folder holding ``bundle.json``), which the new export replaces.
        name: the bundle's name (default ``cardiacnets-reference-<version>``).
        shared: the folder of real samples (default ``$CARDIACNETS_SHARED_DATA`` or ``../shared/data``).
        command: the command line recorded in the model card.
        real: evaluate on the real samples (``False``: the model card says they were not evaluated).
        force: redo every step.
        progress: progress bars.

    Returns:
        The bundle folder.
    """
    from cardiacnets import __version__
    from cardiacnets.demo.run import cohort_synth_config, load_demo_config, run_demo
    from cardiacnets.models.bundle import export_bundle, seal_bundle

    config = load_demo_config(config_path or REFERENCE_CONFIG, overrides)
    missing = [stage for stage in BUNDLE_STAGES if stage not in config.stages or not config.stages[stage].enabled]
    if missing:
        raise InputError(config_path or REFERENCE_CONFIG, f"the reference build needs the stage(s) {', '.join(missing)}")
    config.reference = None
    bundle = Path(bundle_out) if bundle_out else Path(out) / "bundle"
    earlier = _check_bundle_target(bundle)  # before hours of work, not after
    demo = run_demo(out, config, force=force, progress=progress)
    t0 = time.perf_counter()
    demo.metrics["real_data"] = real_data(demo, shared) if real else {"skipped": "not requested (--no-real-data)"}
    demo.timings_s["real_data"] = round(time.perf_counter() - t0, 1)
    (demo.out / "metrics.json").write_text(json.dumps(demo.metrics, indent=2, default=str) + "\n")

    staging = demo.out / "bundle_staging"
    if staging.exists():
        shutil.rmtree(staging)
    sources = _stage_components(demo, staging)
    if earlier:
        print(f"replacing the bundle an earlier build exported to {bundle}")
        shutil.rmtree(bundle)
    name = name or f"cardiacnets-reference-{__version__}"
    synth = cohort_synth_config(config, None)
    metadata = {"seed": config.seed, "n_subjects": config.n_subjects, "simulator_version": synth.version,
                "synth": list(config.synth), "command": command,
                "commit": _git_commit(), "config": str(config_path or REFERENCE_CONFIG),
                # Every trained stage, those whose models live inside another's too (frame_vae and
                # anatomy_image inside the anatomy pipeline).
                "training": {stage: demo.metrics.get("training", {}).get(stage, {}).get("step")
                             for stage, spec in config.stages.items() if spec.enabled},
                "timings_s": demo.timings_s, "reused_s": demo.reused_s}
    export_bundle(sources, bundle, name=name, metadata=metadata)
    shutil.rmtree(staging)
    from cardiacnets.demo.model_card import write_model_card

    write_model_card(bundle, demo.metrics, metadata)
    seal_bundle(bundle)
    return bundle


def _check_bundle_target(bundle: Path) -> bool:
    """Whether `bundle` holds an earlier build's bundle (to be replaced); raise when it holds anything else."""
    if not bundle.exists() or (bundle.is_dir() and not any(bundle.iterdir())):
        return False
    if bundle.is_dir() and (bundle / "bundle.json").is_file():
        return True
    raise InputError(bundle, "exists and is neither empty nor a bundle of an earlier build; choose another "
                             "--bundle-out")


def _stage_components(demo, staging: Path) -> dict[str, Path]:
    """Copy what the bundle keeps of each stage's run folder into `staging` (one folder per stage)."""
    sources = {}
    for stage, (required, optional) in BUNDLE_STAGES.items():
        run = demo.model_dir(stage)
        target = staging / stage
        target.mkdir(parents=True)
        for item in required + optional:
            source = run / item
            if not source.exists():
                if item in required:
                    raise InputError(run, f"has no {item!r}: stage {stage!r} did not export it")
                continue
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / item)
        sources[stage] = target
    return sources


def _git_commit() -> str | None:
    """The code's git commit (with ``+dirty`` when the working tree has changes), or ``None`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def real_data(demo, shared: str | Path | None = None) -> dict:
    """The reference models on real files: the segmenter on ACDC (Dice, LVEF) and on the Sunnybrook cine (volumes,
    EF, Dice against the expert contours), the 12-lead and lead-I heads on PTB-XL (LV estimates of LVH vs NORM
    records beside Sokolow-Lyon and Cornell voltage). A missing sample folder is reported, not an error."""
    from cardiacnets.config import shared_data_dir
    from cardiacnets.evaluate.ptbxl import evaluate_ptbxl
    from cardiacnets.evaluate.segmentation import evaluate_acdc, load_segmenter
    from cardiacnets.evaluate.sunnybrook import evaluate_sunnybrook

    folder = Path(shared) if shared is not None else shared_data_dir()
    if not folder.is_dir():
        raise InputError(folder, "is not a folder of real samples (give --shared DIR or --no-real-data)")
    result, lines = {"folder": str(folder)}, []
    segmenter = load_segmenter(demo.model_dir("segment"))
    if (folder / "acdc_h5").is_dir():
        acdc = evaluate_acdc(segmenter, folder / "acdc_h5", bf16=True)
        result["acdc"] = acdc
        dice, ef = acdc["dice_volume"], acdc["lvef"]
        lines.append(f"ACDC ({acdc['n_patients']} patients, ED and ES): segmenter Dice LV {dice['lv_cavity']:.3f}, "
                     f"myocardium {dice['lv_myocardium']:.3f}, RV {dice['rv_cavity']:.3f}; LVEF MAE "
                     f"{ef['mae_pct']:.1f} points (bias {ef['bias_pct']:+.1f})")
    else:
        result["acdc"] = {"skipped": f"no {folder / 'acdc_h5'}"}
    if (folder / "sunnybrook").is_dir():
        sb = evaluate_sunnybrook(segmenter, folder / "sunnybrook", bf16=True)
        result["sunnybrook"] = sb
        e, m = sb["expert"], sb["segmenter_same_slices"]
        lines.append(f"Sunnybrook cine ({len(sb['compared']['slices'])} contoured slices, ED phase "
                     f"{sb['compared']['ed_phase']}, ES phase {sb['compared']['es_phase']}): LVEDV {m['lvedv_ml']:.0f} "
                     f"ml vs expert {e['lvedv_ml']:.0f}, LVESV {m['lvesv_ml']:.0f} vs {e['lvesv_ml']:.0f}, LVEF "
                     f"{m['lvef_pct']:.1f} % vs {e['lvef_pct']:.1f} %; Dice LV blood pool ED "
                     f"{sb['dice']['ed']['lv_cavity']:.3f}, ES {sb['dice']['es']['lv_cavity']:.3f}; contoured area "
                     f"inside the crop {sb['label_coverage']:.0%}")
    else:
        result["sunnybrook"] = {"skipped": f"no {folder / 'sunnybrook'}"}
    if (folder / "ptbxl").is_dir():
        runs = [demo.model_dir("heads"), demo.model_dir("heads_lead_i")]
        px = evaluate_ptbxl(runs, folder / "ptbxl", out_dir=demo.out / "evaluation" / "ptbxl")
        result["ptbxl"] = px
        lvh = px["comparisons"].get("LVH_vs_NORM", {})
        for score, entry in lvh.items():
            if "not_scored" in entry:
                continue
            folds = ("" if entry.get("fold_auroc_mean") is None else
                     f", per fold {entry['fold_auroc_mean']:.3f} ± {entry['fold_auroc_sd'] or 0:.3f} over "
                     f"{entry['n_folds_scored']} folds")
            lines.append(f"PTB-XL LVH vs NORM ({entry['n_positive']} vs {entry['n_negative']} records): {score} "
                         f"AUROC {entry['auroc']['value']:.3f} ({entry['auroc']['low']:.3f}–"
                         f"{entry['auroc']['high']:.3f}){folds}")
        lines.append(f"PTB-XL: {px['label_note']}")
    else:
        result["ptbxl"] = {"skipped": f"no {folder / 'ptbxl'}"}
    result["summary_lines"] = lines
    return result
