"""The simulated heart vector's geometry: the Frank frame, the Dower transform to the 12 leads, wave directions.

The simulator's ECG (`cardiacnets.simulate.ecg_model`) is a time-varying heart
vector in the Frank X/Y/Z frame (X to the left, Y to the feet, Z to the back,
mV), projected onto I, II and V1-V6 with the Dower transform (Dower, Machado &
Osborne, Clin Cardiol 1980; Edenbrandt & Pahlm, J Electrocardiol 1988); III,
aVR, aVL and aVF are derived by Einthoven/Goldberger so the limb-lead
identities hold exactly. Wave directions are given as (frontal axis,
elevation) in the ECG's own "display" frame (`direction_vector`). Each subject
sees the heart through its own lead field (`subject_lead_field`: electrode
position and torso).
"""

from __future__ import annotations

import math

import numpy as np

from cardiacnets.io.ecg_leads import derive_limb_leads

# Dower transform (Dower, Machado & Osborne 1980; Edenbrandt & Pahlm 1988):
# lead = X*a + Y*b + Z*c, Frank axes X to the left, Y to the feet, Z to the back.
DOWER_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
DOWER_MATRIX = np.array(
    [
        [0.632, -0.235, 0.059],   # I
        [0.235, 1.066, -0.132],   # II
        [-0.515, 0.157, -0.917],  # V1
        [0.044, 0.164, -1.387],   # V2
        [0.882, 0.098, -1.277],   # V3
        [1.213, 0.127, -0.601],   # V4
        [1.125, 0.127, -0.086],   # V5
        [0.831, 0.076, 0.230],    # V6
    ]
)
DOWER_MATRIX.flags.writeable = False

# Wave directions are given as (frontal axis, elevation) in the ECG's own frame:
# unit vector (cos e cos a, cos e sin a, sin e) whose first component is what lead I
# sees, second what aVF * 2/sqrt(3) sees (the hexaxial convention devices use for
# the axis) and third the Frank Z (posterior) component. In this frame the axis a
# device measures from leads I and aVF equals the latent axis exactly.
_DISPLAY_FROM_FRANK = np.stack([
    DOWER_MATRIX[0],
    (2.0 / math.sqrt(3.0)) * (DOWER_MATRIX[1] - DOWER_MATRIX[0] / 2.0),
    np.array([0.0, 0.0, 1.0]),
])
FRANK_FROM_DISPLAY = np.linalg.inv(_DISPLAY_FROM_FRANK)
FRANK_FROM_DISPLAY.flags.writeable = False


def vcg_to_leads(vcg_mV: np.ndarray) -> np.ndarray:
    """Project a Frank vectorcardiogram onto the 12 standard leads.

    I, II and V1-V6 come from the Dower transform; III, aVR, aVL and aVF from
    I and II by Einthoven/Goldberger, so the limb-lead identities hold exactly.

    Args:
        vcg_mV: (3, T) X, Y, Z heart vector in mV (X left, Y feet, Z back).

    Returns:
        (12, T) leads in `STANDARD_LEADS` order, same dtype as the input.
    """
    if vcg_mV.ndim != 2 or vcg_mV.shape[0] != 3:
        raise ValueError(f"vcg_mV must have shape (3, T), got {vcg_mV.shape}")
    independent = np.einsum("lk,kt->lt", DOWER_MATRIX.astype(vcg_mV.dtype), vcg_mV)  # (8, T)
    return assemble_12(independent)


def assemble_12(independent: np.ndarray) -> np.ndarray:
    """(8, T) I, II, V1-V6 -> (12, T) standard order with derived limb leads."""
    limb = derive_limb_leads(independent[0], independent[1])
    return np.stack([independent[0], independent[1], limb["III"], limb["aVR"], limb["aVL"],
                     limb["aVF"], *independent[2:]])


def direction_vector(axis_deg, elevation_deg) -> np.ndarray:
    """Frank-frame vector(s) for (frontal axis, elevation) directions of unit size.

    Args:
        axis_deg: frontal axis, hexaxial convention (0 = lead I, +90 = aVF); scalar or (L,).
        elevation_deg: + posterior, - anterior; same shape as ``axis_deg``.

    Returns:
        (3,) or (L, 3) Frank X, Y, Z components; projected by `vcg_to_leads`, a unit
        vector gives lead I = cos(e)cos(a) and aVF = cos(e)sin(a)*sqrt(3)/2.
    """
    a = np.deg2rad(np.asarray(axis_deg, dtype=float))
    e = np.deg2rad(np.asarray(elevation_deg, dtype=float))
    display = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1)
    return display @ FRANK_FROM_DISPLAY.T


def angles_of(vector_display: np.ndarray) -> tuple[float, float, float]:
    """(axis_deg, elevation_deg, magnitude) of a display-frame vector."""
    x, y, z = (float(v) for v in vector_display)
    magnitude = math.sqrt(x * x + y * y + z * z)
    if magnitude == 0.0:
        return 0.0, 0.0, 0.0
    return math.degrees(math.atan2(y, x)), math.degrees(math.asin(z / magnitude)), magnitude


def display_vector(axis_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector of a (frontal axis, elevation) direction in the display frame (`direction_vector`: Frank)."""
    a, e = math.radians(axis_deg), math.radians(elevation_deg)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def wrap_deg(angle_deg: float) -> float:
    """Angle in (-180, 180]."""
    wrapped = (angle_deg + 180.0) % 360.0 - 180.0
    return 180.0 if wrapped == -180.0 else wrapped


# Electrode placement and torso differences between subjects: SD of each independent
# lead's gain (log) and of the share of the other Frank components it picks up.
LIMB_LEAD_GAIN_SD, CHEST_LEAD_GAIN_SD, LEAD_MIXING_SD = 0.05, 0.12, 0.12
# Version 3 (`cardiacnets bench realism`): with the chest leads' R and S at PTB-XL NORM's
# medians, version 2's healthy subjects had R in I, II and aVF at 0.90, 0.88 and 0.83 of
# NORM's and T in II at 0.83 (T in V5 at 1.20): the limb leads (I, II; the others follow)
# see the heart vector this much more strongly than Dower's table gives.
LIMB_LEAD_GAIN_V3 = 1.13  # fitted with `ecg_beats.QRS_LOBE_TURN_V3`


def subject_lead_field(rng: np.random.Generator, *, version: int = 2) -> np.ndarray:
    """The subject's (8, 3) transfer from the heart vector to I, II, V1-V6: Dower's
    table with per-lead gain and direction changes (electrode position, torso); from
    ``version`` 3 the limb leads' gain is `LIMB_LEAD_GAIN_V3` (same draws)."""
    gain_sd = np.array([LIMB_LEAD_GAIN_SD] * 2 + [CHEST_LEAD_GAIN_SD] * 6)
    gain = np.exp(rng.normal(0.0, gain_sd))[:, None]
    if version >= 3:
        gain[:2] *= LIMB_LEAD_GAIN_V3
    norm = np.linalg.norm(DOWER_MATRIX, axis=1, keepdims=True)
    mixing = rng.normal(0.0, 1.0, DOWER_MATRIX.shape) * norm * np.where(gain_sd[:, None] > 0.1, LEAD_MIXING_SD,
                                                                        0.3 * LEAD_MIXING_SD)
    return DOWER_MATRIX * gain + mixing
