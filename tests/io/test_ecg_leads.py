"""Lead names, derived limb leads and reduced-lead subsets."""

import numpy as np
import pytest

from cardiacnets.io.ecg_leads import (
    STANDARD_LEADS, canonical_lead_name, derive_limb_leads, lead_mask, resolve_lead_subset,
)


@pytest.mark.parametrize(
    "raw, name",
    [("i", "I"), ("II", "II"), ("avr", "aVR"), ("AVL", "aVL"), ("aVF", "aVF"), ("v1", "V1"), ("V6", "V6"),
     ("Lead  II", "II"), ("MLII", "II"), ("D3", "III"), ("vx", None), ("-aVR", None), ("foo", None)],
)
def test_canonical_lead_name(raw, name):
    assert canonical_lead_name(raw) == name


def test_derive_limb_leads_einthoven_goldberger():
    lead_i = np.array([1.0, 0.5, -0.2])
    lead_ii = np.array([2.0, -0.5, 0.4])
    d = derive_limb_leads(lead_i, lead_ii)
    np.testing.assert_allclose(d["III"], [1.0, -1.0, 0.6])
    np.testing.assert_allclose(d["aVR"], [-1.5, 0.0, -0.1])
    np.testing.assert_allclose(d["aVL"], [0.0, 0.75, -0.4])
    np.testing.assert_allclose(d["aVF"], [1.5, -0.75, 0.5])
    # Goldberger: aVR + aVL + aVF = 0
    np.testing.assert_allclose(d["aVR"] + d["aVL"] + d["aVF"], 0.0, atol=1e-12)


def test_lead_subsets():
    assert resolve_lead_subset("12") == STANDARD_LEADS
    assert resolve_lead_subset("limb") == ("I", "II", "III", "aVR", "aVL", "aVF")
    assert resolve_lead_subset("v2,i") == ("I", "V2")
    assert lead_mask("I").tolist() == [True] + [False] * 11
    assert lead_mask(["II"]).sum() == 1 and lead_mask(["II"])[1]
    with pytest.raises(ValueError, match="unknown lead 'V7'"):
        resolve_lead_subset("I,V7")
    with pytest.raises(ValueError, match="given twice"):
        resolve_lead_subset(["I", "i"])
