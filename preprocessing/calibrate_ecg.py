"""Fit a simulator version's ECG variety (`ecg_params.ECG_V4`, `ECG_V5`) to PTB-XL NORM.

    python preprocessing/calibrate_ecg.py [--version 5] [--real-data DIR] [--n 150] [--rounds 1] [--only A,B]
                                           [--out FILE]

The realism benchmark (`cardiacnets bench realism`) tells simulated from real ECGs by a logistic regression
on 66 features whose separation lives in their marginal distributions (see `cardiacnets.bench.calibration`).
This script fits the table of ``--version`` (4: `ECG_V4`, 5: `ECG_V5`, whose search adds each chest lead's
gain, the limb leads' gain, the recorder's low-pass, the later QRS lobes' width, the terminal lobe's size
and the P wave's size) to PTB-XL's NORM records of ``strat_fold`` 1-8 (PTB-XL's own training folds), by
``--loss``: the distance between the feature means a linear classifier uses (default) or the features'
quantiles, comparing the healthy simulated subjects among the first ``--n`` (the same subjects at every
evaluation; the others are not drawn); NORM of folds 9-10 stays held out and its AUROC is reported beside
the calibration one. From version 5 the loss adds `calibration.median_ratio_penalty` on the precordial R and
S medians (``--band``, default 0.15), so the fit cannot buy AUROC with amplitudes outside the simulator
issue's 25 %. The result (JSON: start and final settings, loss, AUROCs, every evaluation) is printed and
written to ``--out``; copying it into the table is a deliberate edit, not done here. The real data are only
read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cardiacnets.bench import realism
from cardiacnets.bench.calibration import calibration_parser, median_ratio_penalty, run_calibration
from cardiacnets.config import shared_data_dir
from cardiacnets.simulate import ecg_params
from cardiacnets.simulate.physiology import SynthConfig

#: Per setting of `ECG_V4`: the step of one move and the bounds it may not leave.
SEARCH_V4 = {
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
#: `ECG_V5`: the lead gains and the recorder's low-pass first, then version 4's settings again.
SEARCH_V5 = {
    **{f"chest_gain_V{k}": (0.04, (0.6, 1.5)) for k in range(1, 7)},
    "limb_lead_gain": (0.03, (0.7, 1.4)),
    "device_lowpass_hz": (10.0, (40.0, 150.0)),
    "qrs_lobe_width": (0.05, (0.7, 1.5)),
    "p_amplitude_factor": (0.05, (0.5, 1.5)),
    "terminal_lobe_share": (0.05, (0.5, 1.5)),
    **SEARCH_V4,
}
TABLES = {4: (ecg_params.ECG_V4, SEARCH_V4), 5: (ecg_params.ECG_V5, SEARCH_V5)}


def main() -> None:
    parser = calibration_parser(__doc__.split("\n")[0], n_default=150)
    parser.add_argument("--version", type=int, choices=sorted(TABLES), default=5, help="simulator version to fit")
    parser.add_argument("--band", type=float, default=0.15,
                        help="version 5: precordial R/S medians may leave NORM's by this share before the "
                             "penalty (default 0.15)")
    parser.add_argument("--only", default=None,
                        help="comma-separated settings to search (default: all of the version's search)")
    args = parser.parse_args()
    rows, _, _ = realism.real_features(args.real_data or shared_data_dir())
    norm = [r for r in rows if r["set"] == "ptbxl" and r["norm"]]
    calibration = [r for r in norm if r["strat_fold"] not in realism.HELD_OUT_FOLDS]
    held_out = [r for r in norm if r["strat_fold"] in realism.HELD_OUT_FOLDS]
    table, search = TABLES[args.version]
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - set(search)
        if unknown:
            parser.error(f"--only: {', '.join(sorted(unknown))} not in version {args.version}'s search")
        search = {name: search[name] for name in names}
    precordial = [f"{wave}_{lead}_mV" for lead in realism.PRECORDIAL for wave in ("r", "s")]

    def simulate() -> list[dict]:  # the healthy subjects: NORM is the comparison
        with tempfile.TemporaryDirectory() as workdir:
            sim, _ = realism.simulated_features(args.n, args.seed, SynthConfig(version=args.version), Path(workdir),
                                                healthy_only=True)
        return sim

    def penalty(sim: list[dict], real: list[dict]) -> float:
        return median_ratio_penalty(sim, real, precordial, band=args.band)

    run_calibration(args, table, search, simulate, calibration, held_out, realism.feature_names(calibration),
                    {"version": args.version,
                     "calibration": f"PTB-XL NORM, strat_fold 1-8 ({len(calibration)} records)",
                     "held_out": f"PTB-XL NORM, strat_fold 9-10 ({len(held_out)} records)"},
                    penalty=penalty if args.version >= 5 else None)


if __name__ == "__main__":
    main()
