"""The ECG simulator's version 4: version 3 kept exactly, and the variety between subjects it lacked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cardiacnets.simulate import SynthConfig
from cardiacnets.simulate.cohort import simulate_ecg
from cardiacnets.simulate.ecg_beats import qrst_lobes
from cardiacnets.simulate.ecg_model import ecg_parameters
from cardiacnets.simulate.ecg_params import ECG_V4, _tail
from cardiacnets.simulate.physiology import RhythmPrevalence
from support.ecg import NORMAL, make_phys
from support.simulate import sha256_of


def test_version_3_draws_exactly_what_the_reference_bundles_0_1_2_to_0_1_4_were_trained_on():
    # Digests at commit 7fb498f (cardiacnets-reference-0.1.4, built on version 3), before version 4 existed.
    phys, _, ecg = simulate_ecg(0, 7, SynthConfig(version=3))
    assert sha256_of(ecg.signal_mV) == "d82791412fb2552d77843c84a840bddebb939f6754d8a2df354246e928014799"
    # The median beat goes through BLAS, whose kernels differ by CPU (one sample of 7,200 differs by 6e-14 mV
    # between OpenBLAS's Skylake-X and Zen kernels): its digest is taken at 1e-6 mV, the same arrays on both.
    assert sha256_of(np.round(ecg.median_mV.astype(np.float64), 6)) == (
        "d918d53530b815d10cde3ffe79be5a2f023d853e6b21cf763bd5037d0d47b864")


def test_tail_keeps_the_median_and_adds_a_right_tail():
    rng = np.random.default_rng(0)
    draws = np.array([_tail(rng, 10.0) for _ in range(20000)])
    assert abs(np.median(draws)) < 0.3 and draws.min() > -10.0 * np.log(2.0) - 1e-9
    assert np.percentile(draws, 90) - np.median(draws) > 2.0 * (np.median(draws) - np.percentile(draws, 10))
    state = np.random.default_rng(1)
    assert _tail(state, 0.0) == 0.0 and state.random() == np.random.default_rng(1).random()  # no draw at mean 0


def test_version_4_qtc_and_p_duration_have_right_tails():
    from scipy.stats import skew

    phys = make_phys()
    params = {v: [ecg_parameters(phys, np.random.default_rng(s), RhythmPrevalence(), version=v) for s in range(300)]
              for v in (3, 4)}
    values = {(field, v): np.array([getattr(p, field) for p in params[v]])
              for field in ("qt_interval_ms", "p_duration_ms") for v in (3, 4)}
    upper = lambda x: np.percentile(x, 95) - np.median(x)  # noqa: E731
    assert upper(values["qt_interval_ms", 4]) > upper(values["qt_interval_ms", 3]) + 3.0
    assert skew(values["p_duration_ms", 4]) > skew(values["p_duration_ms", 3]) + 0.25  # 0.54 vs 0.00
    for field in ("qt_interval_ms", "p_duration_ms"):
        assert abs(np.median(values[field, 4]) - np.median(values[field, 3])) < 6.0, field


def test_version_4_resizes_the_postero_basal_lobe_only():
    # Rows of a normal beat: septal, RV, the five table lobes, T; the postero-basal lobe is the table's third.
    v3, v4 = qrst_lobes(NORMAL, version=3), qrst_lobes(NORMAL, version=4)
    size = lambda lobes: np.linalg.norm(lobes.gauss_vectors, axis=1)  # noqa: E731
    ratio = size(v4) / size(v3)
    assert ratio[4] == pytest.approx(ECG_V4["basal_lobe_share"], rel=1e-12)
    np.testing.assert_allclose(np.delete(ratio, 4), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(v3.sigma_left_s, v4.sigma_left_s)
    # Conduction blocks keep their own tables.
    lbbb = dataclasses.replace(NORMAL, lbbb=True, septal_amplitude_mV=0.0, rv_amplitude_mV=0.0, qrs_duration_ms=140.0)
    np.testing.assert_array_equal(qrst_lobes(lbbb, version=3).gauss_vectors, qrst_lobes(lbbb, version=4).gauss_vectors)
