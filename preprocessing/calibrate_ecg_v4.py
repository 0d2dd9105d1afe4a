"""Fit simulator version 4's ECG variety (`ecg_params.ECG_V4`) to PTB-XL NORM.

    python preprocessing/calibrate_ecg_v4.py [--real-data DIR] [--n 150] [--rounds 1] [--out FILE]

The realism benchmark (`cardiacnets bench realism`) tells simulated from real ECGs by a logistic
regression on 66 features whose separation lives in their marginal distributions (see
`cardiacnets.bench.calibration`). This script fits `ECG_V4` to PTB-XL's NORM records of
``strat_fold`` 1-8 (PTB-XL's own training folds), by ``--loss``: the distance between the feature
means a linear classifier uses (default) or the features' quantiles, comparing the healthy simulated
subjects of ``--n`` (the same subjects at every evaluation); NORM of folds 9-10 stays held out and
its AUROC is reported beside the calibration one. The result (JSON: start and final settings, loss,
AUROCs, every evaluation) is printed and written to ``--out``; copying it into `ECG_V4` is a
deliberate edit, not done here. The real data are only read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cardiacnets.bench import realism
from cardiacnets.bench.calibration import calibration_parser, run_calibration
from cardiacnets.config import shared_data_dir
from cardiacnets.simulate import ecg_params
from cardiacnets.simulate.physiology import SynthConfig

#: Per setting of `ECG_V4`: the step of one move and the bounds it may not leave.
SEARCH = {
    "qrs_axis_shift_deg": (4.0, (-20.0, 20.0)),
    "t_axis_shift_deg": (4.0, (-30.0, 30.0)),
    "t_amplitude_factor": (0.05, (0.6, 1.5)),
    "basal_lobe_share": (0.05, (0.5, 1.5)),
    "lobe_share_sd": (0.04, (0.0, 0.6)),
    "lobe_axis_sd_deg": (3.0, (0.0, 25.0)),
    "corner_smoothing_ms": (0.2, (0.0, 3.0)),
    "beat_jitter": (0.2, (0.2, 4.0)),
    "qtc_tail_ms": (5.0, (0.0, 40.0)),
    "p_duration_tail_ms": (4.0, (0.0, 30.0)),
    "rr_log_sd": (0.1, (0.0, 1.0)),
}


def main() -> None:
    args = calibration_parser(__doc__.split("\n")[0], n_default=150).parse_args()
    rows, _, _ = realism.real_features(args.real_data or shared_data_dir())
    norm = [r for r in rows if r["set"] == "ptbxl" and r["norm"]]
    calibration = [r for r in norm if r["strat_fold"] not in realism.HELD_OUT_FOLDS]
    held_out = [r for r in norm if r["strat_fold"] in realism.HELD_OUT_FOLDS]

    def simulate() -> list[dict]:  # the healthy subjects: NORM is the comparison
        with tempfile.TemporaryDirectory() as workdir:
            sim, _ = realism.simulated_features(args.n, args.seed, SynthConfig(version=4), Path(workdir))
        return [r for r in sim if r["healthy"]]

    run_calibration(args, ecg_params.ECG_V4, SEARCH, simulate, calibration, held_out,
                    realism.feature_names(calibration),
                    {"calibration": f"PTB-XL NORM, strat_fold 1-8 ({len(calibration)} records)",
                     "held_out": f"PTB-XL NORM, strat_fold 9-10 ({len(held_out)} records)"})


if __name__ == "__main__":
    main()
