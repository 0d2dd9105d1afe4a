"""Latent physiology of one simulated subject.

One `Physiology` per subject drives both modalities: the CMR renderer draws the
ventricles from the volumes, mass and wall motion; the ECG model derives its
dipole from the same state (see `cardiacnets.simulate.ecg_model`). Disease
states change both consistently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Physiology:
    """Ground-truth state of one subject (units in the names).

    Attributes:
        eid: UK Biobank-style participant id.
        age_years, is_male, height_cm, weight_kg: demographics (BMI derived).
        heart_rate_bpm: resting rate during both the ECG and the cine.
        lvedv_ml, lvesv_ml: LV end-diastolic and end-systolic cavity volumes.
        lv_mass_g: LV myocardial mass (1.05 g/ml times myocardial volume).
        lv_wall_thickness_mm: mean end-diastolic wall thickness.
        rvedv_ml, rvesv_ml: RV end-diastolic and end-systolic cavity volumes.
        akinetic_segments: AHA segments (1-17) that do not contract (old infarct).
        infarct_territory: ``"anterior"``, ``"inferior"``, ``"lateral"`` or ``None``.
        effusion_mm: pericardial effusion thickness (0 = none).
        dcm, hcm, cad, hf, ph, pericardial, myocarditis: disease states.
    """

    eid: int
    age_years: float
    is_male: bool
    height_cm: float
    weight_kg: float
    heart_rate_bpm: float
    lvedv_ml: float
    lvesv_ml: float
    lv_mass_g: float
    lv_wall_thickness_mm: float
    rvedv_ml: float
    rvesv_ml: float
    akinetic_segments: list[int] = field(default_factory=list)
    infarct_territory: str | None = None
    effusion_mm: float = 0.0
    dcm: bool = False
    hcm: bool = False
    cad: bool = False
    hf: bool = False
    ph: bool = False
    pericardial: bool = False
    myocarditis: bool = False

    @property
    def bmi(self) -> float:
        return self.weight_kg / (self.height_cm / 100.0) ** 2

    @property
    def lvsv_ml(self) -> float:
        return self.lvedv_ml - self.lvesv_ml

    @property
    def lvef_pct(self) -> float:
        return 100.0 * self.lvsv_ml / self.lvedv_ml

    @property
    def rvsv_ml(self) -> float:
        return self.rvedv_ml - self.rvesv_ml

    @property
    def rvef_pct(self) -> float:
        return 100.0 * self.rvsv_ml / self.rvedv_ml

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(bmi=self.bmi, lvsv_ml=self.lvsv_ml, lvef_pct=self.lvef_pct,
                   rvsv_ml=self.rvsv_ml, rvef_pct=self.rvef_pct)
        return out
