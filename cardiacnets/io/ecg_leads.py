"""Lead names: the standard 12-lead order, aliases used by PhysioNet, GE and
MIMIC files, derivation of the augmented limb leads, and reduced-lead views.

Einthoven and Goldberger relations (all in the same units):
    III = II - I,  aVR = -(I + II) / 2,  aVL = I - II / 2,  aVF = II - I / 2.
"""

from __future__ import annotations

import numpy as np

STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
LIMB_LEADS: tuple[str, ...] = STANDARD_LEADS[:6]
PRECORDIAL_LEADS: tuple[str, ...] = STANDARD_LEADS[6:]
# The eight independent leads from which the other four follow.
INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")

# Named reduced-lead views, so the same data serves single-lead use.
LEAD_SUBSETS: dict[str, tuple[str, ...]] = {
    "12": STANDARD_LEADS,
    "8": INDEPENDENT_LEADS,
    "limb": LIMB_LEADS,
    "precordial": PRECORDIAL_LEADS,
    "I": ("I",),
    "II": ("II",),
}

_ALIASES = {name.upper(): name for name in STANDARD_LEADS}
_ALIASES.update({
    "D1": "I", "D2": "II", "D3": "III", "LEAD I": "I", "LEAD II": "II", "LEAD III": "III",
    "-AVR": None,  # inverted aVR (Cabrera display) is not the same signal
    "MLII": "II", "ML2": "II",
})


def canonical_lead_name(name: str) -> str | None:
    """Map a lead label as written in a file to its standard name.

    Args:
        name: label such as ``"avr"``, ``"AVR"``, ``"Lead II"``, ``"v1"``, ``"MLII"``.

    Returns:
        The standard name (``"aVR"``, ``"II"``, ``"V1"``) or ``None`` when the
        label is not one of the 12 standard leads (Frank ``vx``, ``"-aVR"``, ...).
    """
    key = " ".join(name.strip().upper().split())
    return _ALIASES.get(key)


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL, aVF from leads I and II (Einthoven/Goldberger)."""
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2.0,
        "aVL": lead_i - lead_ii / 2.0,
        "aVF": lead_ii - lead_i / 2.0,
    }


def resolve_lead_subset(leads: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Turn a subset spec into standard lead names.

    Args:
        leads: a named subset (``"12"``, ``"8"``, ``"limb"``, ``"precordial"``,
            ``"I"``, ``"II"``), a comma-separated string (``"I,II,V1"``) or a list.

    Returns:
        The leads in standard order.

    Raises:
        ValueError: for an unknown or duplicated lead name.
    """
    if isinstance(leads, str):
        if leads in LEAD_SUBSETS:
            return LEAD_SUBSETS[leads]
        leads = [s for s in leads.split(",") if s.strip()]
    names = []
    for raw in leads:
        name = canonical_lead_name(raw)
        if name is None:
            raise ValueError(f"unknown lead {raw!r}; expected one of {', '.join(STANDARD_LEADS)}")
        if name in names:
            raise ValueError(f"lead {name} given twice")
        names.append(name)
    return tuple(n for n in STANDARD_LEADS if n in names)


def lead_mask(subset: str | list[str] | tuple[str, ...]) -> np.ndarray:
    """Boolean mask over `STANDARD_LEADS` selecting a subset (see `resolve_lead_subset`)."""
    keep = set(resolve_lead_subset(subset))
    return np.array([name in keep for name in STANDARD_LEADS])
