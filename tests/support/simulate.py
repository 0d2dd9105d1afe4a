"""Simulated subjects rendered as the cohort draws them, and array digests, shared by the simulator's tests."""

import hashlib

import numpy as np

from cardiacnets.simulate.cmr_model import render_cmr
from cardiacnets.simulate.cohort import EID_START, sample_physiology, subject_rngs

#: A small short-axis and 4-chamber cine: fast to render, every part of the renderer still runs.
SMALL_CMR = dict(image_size=56, la_image_size=56, n_frames=10)


def render_subject(config, index: int = 0, seed: int = 7):
    """Subject ``index`` of cohort ``seed``'s `SimulatedCMR`, drawn as ``cardiacnets synth`` draws it."""
    physiology_rng, _, cmr_rng = subject_rngs(seed, index)
    phys = sample_physiology(EID_START + index, physiology_rng, config)
    return render_cmr(phys, cmr_rng, config)


def sha256_of(array) -> str:
    """SHA-256 of an array's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
