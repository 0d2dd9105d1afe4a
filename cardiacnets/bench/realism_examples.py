"""Side-by-side examples of simulated and real recordings (``cardiacnets bench realism --examples DIR``).

Two figures a reader can judge by eye, beside the benchmark's numbers:

* ``cmr_examples.png``: mid-ventricular end-diastolic frames, simulated (top
  row) over ACDC and Sunnybrook (rows below), each cropped to the same square
  around the LV cavity (``CROP_RADII`` cavity radii either side) and shown between
  its own 1st and 99.5th percentiles, as a viewer's auto-window does;
* ``ecg_examples.png``: 4 s of leads II, V1 and V4 of healthy simulated subjects
  beside PTB-XL NORM records, on the same millivolt scale.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: Crop half-width in LV cavity radii, and the examples per row.
CROP_RADII = 4.0
N_EXAMPLES = 5
ECG_LEADS = ("II", "V1", "V4")
ECG_SECONDS = 4.0


def lv_crop(image: np.ndarray, labels: np.ndarray, size: int = 96) -> np.ndarray:
    """A (size, size) crop centred on the LV cavity (label 1), ``CROP_RADII`` radii either side, windowed to [0, 1].

    Outside the image counts as 0. Intensities are divided by the crop's 99.5th percentile (clipped).
    """
    from scipy import ndimage

    lv = labels == 1
    radius = math.sqrt(lv.sum() / math.pi)
    cy, cx = ndimage.center_of_mass(lv)
    half = CROP_RADII * radius
    grid = np.linspace(-half, half, size)
    rows, cols = np.meshgrid(cy + grid, cx + grid, indexing="ij")
    crop = ndimage.map_coordinates(np.asarray(image, np.float32), [rows, cols], order=1, cval=0.0)
    low, high = np.percentile(crop, [1.0, 99.5])
    return np.clip((crop - low) / max(high - low, 1e-6), 0.0, 1.0)


def cmr_examples(sim_frames: list[dict], real_frames: list[dict], path: Path, version: int) -> Path:
    """Write ``path``: ED frames of the first simulated subjects over the first ACDC and Sunnybrook frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def pick(frames, set_name):
        chosen = [f for f in frames if f["set"] == set_name and f["phase"] == "ED"]
        step = max(len(chosen) // N_EXAMPLES, 1)
        return chosen[::step][:N_EXAMPLES]

    rows = [(f"simulated (version {version})", pick(sim_frames, "simulated")), ("ACDC", pick(real_frames, "acdc")),
            ("Sunnybrook", pick(real_frames, "sunnybrook"))]
    rows = [(name, frames) for name, frames in rows if frames]
    fig, axes = plt.subplots(len(rows), N_EXAMPLES, figsize=(2.0 * N_EXAMPLES, 2.15 * len(rows)), squeeze=False)
    for r, (name, frames) in enumerate(rows):
        for c in range(N_EXAMPLES):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(frames):
                ax.imshow(lv_crop(frames[c]["image"], frames[c]["labels"]), cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.set_title(name, fontsize=9, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def ecg_examples(config, seed: int, real_dir: Path, path: Path, n: int = 3) -> Path:
    """Write ``path``: leads `ECG_LEADS` of ``n`` healthy simulated subjects beside ``n`` PTB-XL NORM records.

    Raises:
        InputError: no PTB-XL NORM record can be read under ``real_dir``.
    """
    import ast

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from cardiacnets.errors import InputError
    from cardiacnets.io.ecg import read_ecg
    from cardiacnets.simulate.cohort import simulate_ecg
    from cardiacnets.simulate.physiology import icd10_codes

    simulated, index = [], 0
    while len(simulated) < n and index < 50 * n:
        phys, params, ecg = simulate_ecg(index, seed, config)
        index += 1
        if not icd10_codes(phys) and not params.atrial_fibrillation and not params.paced:
            simulated.append((f"simulated {phys.eid}", ecg.signal_mV, ecg.sampling_rate_hz, list(ecg.lead_names)))
    database = pd.read_csv(real_dir / "ptbxl" / "ptbxl_database.csv")
    real = []
    for _, rec in database.iterrows():
        if len(real) == n:
            break
        if ast.literal_eval(rec["scp_codes"]).get("NORM", 0.0) < 50.0:
            continue
        file = real_dir / "ptbxl" / rec["filename_hr"]
        if file.with_suffix(".hea").exists():
            record = read_ecg(file)
            real.append((f"PTB-XL {rec['ecg_id']} (NORM)", record.signal_mV, record.sampling_rate_hz,
                         list(record.lead_names)))
    if not real:
        raise InputError(real_dir / "ptbxl", "no PTB-XL NORM record could be read")
    fig, axes = plt.subplots(len(ECG_LEADS), 2 * n, figsize=(3.2 * 2 * n, 1.6 * len(ECG_LEADS)), squeeze=False,
                             sharey="row")
    for c, (name, signal, fs, leads) in enumerate(simulated + real):
        samples = int(ECG_SECONDS * fs)
        t = np.arange(samples) / fs
        for r, lead in enumerate(ECG_LEADS):
            ax = axes[r, c]
            trace = np.asarray(signal[leads.index(lead), :samples], float)
            ax.plot(t, trace - np.median(trace), lw=0.7, color="black")
            ax.set_xticks([])
            ax.grid(True, lw=0.3)
            if r == 0:
                ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{lead} (mV)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

