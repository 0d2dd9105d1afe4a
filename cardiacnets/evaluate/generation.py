"""Evaluation of ECG→CMR generation on held-out pairs, against a nearest-neighbour retrieval baseline.

CardiacNets (arXiv 2411.13602) generates a subject's short-axis cine from
the ECG and judges it by image similarity to the true cine and by the cardiac
function measured on it. `evaluate_generation` runs that protocol on a
training-set split of paired ECG and cine:

1. **Generators.** Each is a function ``generate_batch(batch) -> cines`` over
   the split's collated batches (``index`` is the row in the split):
   `pipeline_generator` wraps the trained ``ECGToCMRPipeline``;
   `nearest_neighbour_generator` is the baseline a generator must beat — the
   training subject whose aligned ECG embedding (``CardiacCLIP.encode_ecg``)
   is closest in cosine similarity, and that subject's real cine;
   `random_generator` (a random training subject's real cine) marks chance.
2. **Scoring** (`score_cines`, the same for every generator), against the
   true cine: SSIM (MONAI ``SSIMMetric``, 2-D per frame, data range 1) and
   PSNR (MONAI ``PSNRMetric``, max 1, per cine), both on cines clipped to
   [0, 1] (the training set's range); the Fréchet distance (MONAI
   ``get_fid_score``) between the feature distributions of generated and true
   cines under our own aligned CMR encoder (no hub weights); and physiological
   consistency: a `CineSegmenter` labels every frame of generated and true
   cines, `cavity_measurements` turns the labels into LV/RV cavity sizes, EF
   and LV mass, and the Pearson r and mean absolute error between generated
   and true cines' measurements are reported (``lvedv_r``, ``lvedv_mae_ml``,
   ...). Each side's r against the manifest's ground-truth indices
   (``seg_lvedv_ml``, ``seg_lvef_pct``, ...) is reported for context.

Honest names: the demo training sets hold one mid-ventricular slice, so
"lvedv" is a mid-slice proxy — the LV cavity area at ED (the frame of largest
LV cavity) × the slice spacing (default 10 mm) in ml — and "lvef" the
area-based ejection fraction of that slice; with several slices the
measurements are Simpson sums over slices (`cardiacnets.cmr.indices`).

With an output folder, `write_comparisons` adds pictures of a few subjects
(true cine beside each method's); their generated panels carry the burned-in
SYNTHETIC label and the files are marked synthetic in their metadata
(`cardiacnets.io.previews`).

This module holds the evaluation's steps; the scoring is in
`cardiacnets.evaluate.generation_scoring`, the methods (pipeline adapter,
running them over the split) in `cardiacnets.evaluate.generation_methods`, the
baselines in `cardiacnets.evaluate.generation_baselines` and the comparison
pictures in `cardiacnets.evaluate.generation_comparisons`; their public names
are importable from here too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cardiacnets.errors import ConfigError, InputError
from cardiacnets.evaluate.generation_baselines import GenerateFn, ReferenceCines, random_generator
from cardiacnets.evaluate.generation_comparisons import RETRIEVED_METHODS, write_comparisons
from cardiacnets.evaluate.generation_methods import (
    BASELINES, Method, baseline_methods, generate_all, is_baseline, load_feature_encoder, nearest_neighbour_generator,
    pipeline_generator, pipeline_method, recorded_path,
)
from cardiacnets.evaluate.generation_scoring import (
    GROUND_TRUTH, SUMMARISED, Described, ScoringTools, anatomy_agreement, as_cines, condition_following,
    describe_cines, frechet_distance, image_similarity, score_cines, score_samples, statistics_distance,
    temporal_coherence,
)
from cardiacnets.evaluate.segmentation import (
    DEFAULT_SLICE_SPACING_MM, MEASUREMENTS, CineGeometry, Segmenter, load_segmenter,
)

__all__ = [
    "BASELINES", "GROUND_TRUTH", "RETRIEVED_METHODS", "SUMMARISED", "Described", "GenerateFn", "Method",
    "ReferenceCines", "ScoringTools", "anatomy_agreement", "as_cines", "condition_following", "describe_cines",
    "evaluate_generation", "frechet_distance", "image_similarity", "nearest_neighbour_generator",
    "pipeline_generator", "random_generator", "score_cines", "score_samples", "statistics_distance",
    "temporal_coherence",
    "write_comparisons",
]


@dataclass
class _Setup:
    """What the first step resolved: the split, the methods and the evaluated subjects.

    Attributes:
        data: the training set folder.
        split: the evaluated split.
        model_dirs: the pipeline folders.
        geometry: the training set's cine geometry.
        targets: the manifest's ground-truth columns present (`GROUND_TRUTH`).
        methods: every method to score, generators first.
        view: the CMR view generated.
        dataset: the evaluated subjects (an ECG and a cine of `view`), a `TrainingSet`.
        n: subjects evaluated (the first `n` of `dataset`).
    """

    data: object
    split: str
    model_dirs: list[Path]
    geometry: CineGeometry
    targets: tuple[str, ...]
    methods: list[Method] = field(default_factory=list)
    view: str = "sa"
    dataset: object = None
    n: int = 0

    @property
    def where(self):
        """The folder named in errors about the generated cines."""
        return self.model_dirs[0] if self.model_dirs else self.data

    def subject_ids(self) -> np.ndarray:
        """The evaluated subjects' ids, in order."""
        return self.dataset.manifest["subject_id"].iloc[:self.n].astype(str).to_numpy()


def evaluate_generation(model_dir, data, split: str = "test", *, segmenter, feature_encoder=None, alignment=None,
                        generate_batch: GenerateFn | None = None, baselines: bool = True, limit: int | None = None,
                        steps: int = 25, guidance: float | None = None, seed: int = 0, scheduler: str = "dpm++",
                        n_samples: int = 1, batch_size: int = 8, slice_spacing_mm: float = DEFAULT_SLICE_SPACING_MM,
                        reference_split: str = "train", acdc_dir=None, out_dir=None, n_examples: int = 4,
                        device: str = "cpu", bf16: bool = False, progress: bool = False,
                        temperature: float | None = None, knn: int = 5,
                        shape_temperature: float | None = None, acquisition_noise: bool = True) -> dict:
    """Generate the split's cines from their ECGs with one or more generators, and score them with the baselines.

    Steps: (1) check and load the inputs (pipelines, segmenter, feature encoder, alignment run,
    split); (2) run each method over the split in batches, timing it; (3) describe the true cines
    once and score every method with `score_cines` (and the anatomy a method drew with
    `anatomy_agreement`); (4) optionally the segmenter's ACDC Dice; (5) gather the result; (6) with
    `out_dir`, write ``metrics.json``, ``per_subject.csv`` and comparison PNG strips and GIFs of a
    few subjects.

    Args:
        model_dir: a pipeline folder (either generator), a list of them (scored side by side, named by
            their generator: ``direct``, ``anatomy``), or ``None`` with `generate_batch` given or
            with ``baselines`` only.
        data: training set folder.
        split: evaluated split (held out from generator training).
        segmenter: a ``segment`` run or saved `CineSegmenter` folder (or a loaded `Segmenter`).
        feature_encoder: saved CMR encoder folder for the Fréchet features (default: the one the
            first pipeline folder records as ``feature_encoder``).
        alignment: alignment run of the neighbour baselines (default: the one the first pipeline
            records as ``alignment_run``); needed when ``baselines``.
        generate_batch: evaluate this function instead of a pipeline (tests, other generators).
        baselines: also score the nearest-neighbour, k-nearest mean, random and rendered read-out baselines.
        limit: evaluate the first N subjects of the split only.
        steps, guidance, seed, scheduler: sampling settings of the pipelines (guidance None: 3 for
            the direct generator, the anatomy-first pipeline's validation-chosen value).
        temperature: the anatomy-first pipelines' index temperature (None: their default).
        shape_temperature: the anatomy-first pipelines' shape temperature (None: their default).
        acquisition_noise: False: the anatomy-first pipelines' decoded frames without their acquisition noise.
        n_samples: cines the generators make per ECG. The scores of each generator are those of its
            first sample (one cine per ECG, as the baselines); with more, ``samples`` adds the r and MAE
            of the mean of each subject's samples' measurements, each sample's own r, and the spread.
        batch_size: subjects per generation batch.
        slice_spacing_mm: slice spacing of the volume measurements (10 mm: UK Biobank).
        reference_split: split the baselines draw real cines from and fit on.
        acdc_dir: ACDC HDF5 folder: also report the segmenter's Dice there.
        out_dir: write results and comparison images here.
        n_examples: subjects drawn in the comparison images.
        device: torch device.
        bf16: bf16 autocast for the segmenter and the feature encoder.
        progress: show progress bars.
        knn: neighbours averaged by the k-nearest baseline.

    Returns:
        The metrics dict: the first generator's summary at the top level (``ssim``, ``psnr``,
        ``frechet``, ``frechet_statistics``, ``statistics``, ``lvedv_r``, ``lvef_r``, ``lvedv_mae_ml``,
        ``temporal``, ...; with an anatomy, ``anatomy``), ``generators`` (every generator's summary by
        name), ``nn_baseline``, ``knn<k>_baseline``, ``random_baseline`` and ``rendered_readout`` with
        the same keys, ``n``, ``settings``, ``timing``, ``segmenter`` (with ``acdc_dice``) and ``notes``.

    Raises:
        InputError: unusable folders, split or view; ConfigError: invalid numbers or a missing
            option (no feature encoder, no alignment run for the baselines).
    """

    # 1. Inputs: the split, the methods (pipelines, a given function, the baselines) and the scoring tools.
    if batch_size < 1 or (limit is not None and limit < 1) or steps < 1 or n_samples < 1 or knn < 1:
        raise ConfigError("--batch-size, --limit, --steps, --n-samples and --knn must be at least 1")
    model_dirs = [] if model_dir is None else [Path(m) for m in (model_dir if isinstance(model_dir, (list, tuple))
                                                                  else [model_dir])]
    if not model_dirs and generate_batch is None and not baselines:
        raise ConfigError("nothing to evaluate: give a pipeline folder (--model) or the baselines")
    started = time.perf_counter()
    sampling = {"steps": steps, "guidance": guidance, "temperature": temperature,
                "shape_temperature": shape_temperature, "seed": seed, "acquisition_noise": acquisition_noise,
                "scheduler": scheduler, "n_samples": n_samples}
    setup = _generators(model_dirs, data, split, generate_batch, sampling, device)
    seg = segmenter if isinstance(segmenter, Segmenter) else load_segmenter(segmenter)
    if feature_encoder is None and model_dirs:
        feature_encoder = recorded_path(model_dirs[0], ("feature_encoder",))
    if feature_encoder is None:
        raise ConfigError("no feature encoder for the Fréchet distance: pass --feature-encoder DIR "
                          "(an aligned CMR encoder, e.g. ALIGN_RUN/cmr_sa_encoder)")
    encoder = load_feature_encoder(feature_encoder, setup.view)
    if baselines and alignment is None and model_dirs:
        alignment = recorded_path(model_dirs[0], ("alignment_run",))
    if baselines and alignment is None:
        raise ConfigError("the nearest-neighbour baseline needs the alignment run: pass --alignment RUN")
    _open_subjects(setup, limit)
    tools = ScoringTools(seg, encoder, setup.geometry.spacing_mm, slice_spacing_mm, device, bf16)
    if baselines:
        setup.methods += baseline_methods(data, reference_split, split, setup.dataset, alignment, setup.geometry,
                                          slice_spacing_mm, seed, knn, setup.view, device)

    # 2. Generate: every method over the first n subjects, in batches.
    true_cines, outputs, timing = _generate(setup, batch_size, progress)

    # 3. Score: the true cines described once, every method against them.
    results, per_subject, notes = _score_all(setup, tools, true_cines, outputs, timing)
    if baselines and Path(feature_encoder).resolve().is_relative_to(Path(alignment).resolve()):
        notes.append("frechet: the features are the alignment model's CMR encoder, in which the nearest-neighbour "
                     "baseline retrieves its cines, so that baseline's distance is low by construction; "
                     "frechet_statistics (hand-made image statistics, statistics.auroc: generated vs true) "
                     "favours no method")

    # 4. The segmenter's check on real scans.
    segmenter_info = _segmenter_check(seg, setup.geometry, acdc_dir, device, bf16, timing, notes)
    timing["total_seconds"] = round(time.perf_counter() - started, 2)

    # 5. The result: the first generator's scores at the top level, the other methods' by name.
    result = _by_method(setup.methods, results)
    result.update({
        "n": setup.n, "split": split, "data": str(data), "view": setup.view,
        "model": None if not model_dirs else (str(model_dirs[0]) if len(model_dirs) == 1
                                              else [str(m) for m in model_dirs]),
        "settings": {**sampling, "batch_size": batch_size, "limit": limit, "slice_spacing_mm": slice_spacing_mm,
                     "spacing_mm": setup.geometry.spacing_mm, "reference_split": reference_split, "knn": knn,
                     "feature_encoder": str(feature_encoder), "bf16": bf16, "device": device},
        "segmenter": segmenter_info,
        "timing": timing,
        "measurement_note": ("one mid-ventricular slice: lvedv/lvesv are the LV cavity area at ED/ES x slice "
                             f"spacing ({slice_spacing_mm} mm), in ml; lvef is the area-based EF of that slice"
                             if true_cines.shape[1] == 1 else "Simpson sums over the stored slices"),
        "notes": notes,
    })

    # 6. Files.
    if out_dir is not None:
        _write_files(Path(out_dir), result, per_subject, setup, true_cines, outputs, n_examples)
    return result


def _generators(model_dirs: list[Path], data, split: str, generate_batch: GenerateFn | None, sampling: dict,
                device: str) -> _Setup:
    """Check the split and load the generators: a given function (``generator``) and the pipeline folders.

    A single pipeline is named ``generator``, several by their kind (``direct``, ``anatomy``; a suffix
    ``_<i>`` where two share one); the view is the last pipeline's (``sa`` without one).
    """
    from cardiacnets.data.store import TrainingSet

    geometry = CineGeometry.from_dataset(data)
    everyone = TrainingSet(data)
    splits = sorted(everyone.manifest["split"].dropna().astype(str).unique())
    if split not in splits:
        raise InputError(Path(data) / "manifest.csv", f"no split {split!r}; splits present: {', '.join(splits)}")
    targets = tuple(c for c in GROUND_TRUTH.values() if c in everyone.manifest.columns)
    setup = _Setup(data, split, model_dirs, geometry, targets)
    if generate_batch is not None:
        setup.methods.append(Method("generator", generate_batch, sampling["n_samples"]))
    dataset = None
    for i, folder in enumerate(model_dirs):
        if dataset is None:  # the pipelines look up demographics and measurements in this set's manifest
            dataset = TrainingSet(data, split=split, require=("ecg", setup.view), targets=targets)
        method = pipeline_method("", folder, dataset, sampling["steps"], sampling["guidance"],
                                 sampling["temperature"], sampling["seed"], sampling["scheduler"],
                                 sampling["n_samples"], device, sampling["shape_temperature"],
                                 sampling["acquisition_noise"])
        method.name = method.info["generator"] if len(model_dirs) > 1 else "generator"
        if method.name in {m.name for m in setup.methods}:
            method.name = f"{method.name}_{i}"
        setup.view = method.info["view"]
        setup.methods.append(method)
    return setup


def _open_subjects(setup: _Setup, limit: int | None) -> None:
    """The evaluated subjects: those of the split with an ECG and a cine of the view, the first `limit`."""
    from cardiacnets.data.store import TrainingSet

    setup.dataset = TrainingSet(setup.data, split=setup.split, require=("ecg", setup.view), targets=setup.targets)
    if len(setup.dataset) == 0:
        raise InputError(setup.data, f"split {setup.split!r} has no subject with both an ECG and a {setup.view} cine")
    setup.n = len(setup.dataset) if limit is None else min(limit, len(setup.dataset))


def _generate(setup: _Setup, batch_size: int,
              progress: bool) -> tuple[np.ndarray, dict[str, list[np.ndarray]], dict[str, float]]:
    """The true cines, every method's cines (``{name: [sample 1, ...]}``, each like the true cines) and the timing.

    Raises:
        InputError: a method made cines of another shape than the true cines.
    """
    from cardiacnets.data.torch_data import CardiacTorchDataset

    torch_dataset = CardiacTorchDataset(setup.dataset, views=[setup.view])
    true_cines = np.stack([setup.dataset[i][f"cmr_{setup.view}"] for i in range(setup.n)])
    outputs, timing = generate_all(setup.methods, torch_dataset, setup.n, batch_size, true_cines.shape[1],
                                   setup.where, progress)
    for method in setup.methods:
        if outputs[method.name][0].shape != true_cines.shape:
            raise InputError(setup.where, f"{method.name} made cines of shape {outputs[method.name][0].shape[1:]}, "
                                          f"the true cines are {true_cines.shape[1:]}")
    return true_cines, outputs, timing


def _score_method(method: Method, samples: list[np.ndarray], truth: Described, tools: ScoringTools,
                  ground_truth: pd.DataFrame, slice_spacing_mm: float) -> tuple[dict, pd.DataFrame]:
    """One method's scores: its first sample's (`score_cines`), how it follows the read-out's estimates, the
    anatomy it drew (`anatomy_agreement`) and, with several samples, their scores together (`score_samples`)."""
    described = describe_cines(samples[0], tools)
    summary, per_cine = score_cines(described, truth, tools, ground_truth)
    condition = pd.concat(method.estimates, ignore_index=True) if method.estimates else None
    if condition is not None and len(condition.columns):
        summary["condition"] = condition_following(described.measurements, condition, truth.measurements)
        for column in condition.columns:
            per_cine[f"condition_{column}"] = condition[column].to_numpy()
    if method.labels:
        anatomy = as_cines(np.concatenate(method.labels)[::method.per_ecg], truth.cines.shape[1], "anatomy")
        summary["anatomy"] = anatomy_agreement(anatomy, described, truth, ground_truth, tools.spacing_mm,
                                               slice_spacing_mm)
    if len(samples) > 1:
        summary["samples"], means = score_samples([described, *(describe_cines(c, tools) for c in samples[1:])],
                                                  truth, ground_truth)
        for column in MEASUREMENTS:
            per_cine[f"samples_mean_{column}"] = means[column].to_numpy()
        if condition is not None and len(condition.columns):
            summary["samples"]["mean_of_samples"]["generated_vs_condition"] = condition_following(
                means, condition, truth.measurements)["generated_vs_condition"]
    if method.info:
        summary["method"] = {k: v for k, v in method.info.items() if k != "matches"}
    return summary, per_cine


def _score_all(setup: _Setup, tools: ScoringTools, true_cines: np.ndarray, outputs: dict[str, list[np.ndarray]],
               timing: dict) -> tuple[dict[str, dict], list[pd.DataFrame], list[str]]:
    """Every method's scores against the true cines: ``(summaries by name, per-cine tables, notes)``."""
    tick = time.perf_counter()
    n, notes = setup.n, []
    truth = describe_cines(true_cines, tools)
    ground_truth = setup.dataset.manifest.loc[:n - 1, list(setup.targets)]
    results: dict[str, dict] = {}
    per_subject = []
    for method in setup.methods:
        summary, per_cine = _score_method(method, outputs[method.name], truth, tools, ground_truth,
                                          tools.slice_spacing_mm)
        results[method.name] = summary
        per_cine.insert(0, "method", method.name)
        per_cine.insert(0, "subject_id", setup.subject_ids())
        if method.name == "nn_baseline":
            per_cine["nn_subject_id"] = [method.info["matches"][i] for i in range(n)]
            timing["nn_embed_seconds"] = method.info["embed_seconds"]
            summary["alignment_model"] = method.info["model"]
        per_subject.append(per_cine)
        if summary["n_unmeasured"]:
            notes.append(f"{method.name}: the segmenter found no LV cavity in {summary['n_unmeasured']} of {n} cines "
                         "(left out of r and MAE)")
    if n <= truth.features.shape[1]:
        notes.append(f"frechet: {n} subjects for {truth.features.shape[1]}-dimensional features, so the covariances "
                     "are rank-deficient and the distance is biased upwards; compare methods on the same subjects only")
    true_failures = int((truth.measurements["failure"] != "").sum())
    if true_failures:
        notes.append(f"the segmenter found no LV cavity in {true_failures} of {n} true cines (left out of r and MAE)")
    timing["scoring_seconds"] = round(time.perf_counter() - tick, 2)
    return results, per_subject, notes


def _segmenter_check(seg: Segmenter, geometry: CineGeometry, acdc_dir, device: str, bf16: bool, timing: dict,
                     notes: list[str]) -> dict:
    """The segmenter's model and, with `acdc_dir`, its Dice on ACDC's real scans (else a note saying so)."""
    segmenter_info: dict = {"model": str(seg.folder), "acdc_dice": None}
    if acdc_dir is not None:
        from cardiacnets.evaluate.segmentation import evaluate_acdc

        acdc = evaluate_acdc(seg, acdc_dir, geometry, device=device, bf16=bf16)
        segmenter_info["acdc_dice"] = acdc["dice_volume"]
        segmenter_info["acdc"] = acdc
        timing["acdc_seconds"] = acdc["seconds"]
    else:
        notes.append("segmenter ACDC Dice not measured here (pass --acdc DIR, or run 'cardiacnets evaluate "
                     "segmentation')")
    return segmenter_info


def _generator_names(methods: list[Method]) -> list[str]:
    return [m.name for m in methods if not is_baseline(m.name)]


def _by_method(methods: list[Method], results: dict[str, dict]) -> dict:
    """The first generator's summary at the top level, ``generators`` with several, the baselines by name."""
    generators = _generator_names(methods)
    result: dict = dict(results[generators[0]]) if generators else {}
    if len(generators) > 1:
        result["generators"] = {name: results[name] for name in generators}
    for method in methods:
        if method.name not in generators:
            result[method.name] = results[method.name]
    return result


def _write_files(out_dir: Path, result: dict, per_subject: list[pd.DataFrame], setup: _Setup,
                 true_cines: np.ndarray, outputs: dict[str, list[np.ndarray]], n_examples: int) -> None:
    """``per_subject.csv``, the comparison pictures of the generators and the image baselines, ``metrics.json``
    (listing the files in ``result["outputs"]``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.concat(per_subject, ignore_index=True).to_csv(out_dir / "per_subject.csv", index=False)
    generators = _generator_names(setup.methods)
    shown = {m.name: outputs[m.name][0] for m in setup.methods
             if m.name in generators or m.name in ("nn_baseline", "rendered_readout")}
    written = write_comparisons(out_dir, true_cines, shown, setup.subject_ids().tolist(), n_examples)
    result["outputs"] = [str(p) for p in [out_dir / "metrics.json", out_dir / "per_subject.csv", *written]]
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
