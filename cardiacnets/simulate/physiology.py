"""Latent physiology of one simulated subject, and the simulator's settings.

One `Physiology` per subject drives both modalities: the CMR renderer draws the
ventricles from the volumes, mass and wall motion; the ECG model derives its
dipole from the same state (see `cardiacnets.simulate.ecg_model`). Disease
states change both consistently. `sample_physiology` draws a subject from a
UK Biobank-like imaging population: demographics of the imaging visit (age
45-80), body size by sex, and normal ventricular volumes, ejection fractions and
LV mass scaled with body surface area, sex and age after the UK Biobank CMR
reference ranges (Petersen et al., JCMR 2017;19:18). Diseases then change them:
DCM (dilated, EF < 40 %), HCM (wall >= 15 mm, small cavity, high EF), old
infarct (akinetic AHA segments of one coronary territory, EF lowered by the
akinetic share), heart failure with reduced EF, pulmonary hypertension (dilated,
hypokinetic RV), pericarditis / pericardial effusion and myocarditis. Disease
prevalences are enriched by default so that a cohort of a few thousand holds
enough cases of each; `POPULATION_PREVALENCE` gives rough population rates for
reweighting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from cardiacnets.errors import ConfigError
from cardiacnets.simulate.heart_model import solve_lv_wall


@dataclass
class Physiology:
    """Ground-truth state of one subject (units in the names).

    Attributes:
        eid: UK Biobank-style participant id.
        age_years, is_male, height_cm, weight_kg: demographics (BMI derived).
        heart_rate_bpm: resting rate during both the ECG and the cine.
        lvedv_ml, lvesv_ml: LV end-diastolic and end-systolic cavity volumes.
        lv_mass_g: LV myocardial mass (1.05 g/ml times myocardial volume).
        lv_wall_thickness_mm: mean end-diastolic wall thickness (16 AHA segments).
        rvedv_ml, rvesv_ml: RV end-diastolic and end-systolic cavity volumes.
        akinetic_segments: AHA segments (1-17) that do not contract (old infarct).
        infarct_territory: ``"anterior"``, ``"inferior"``, ``"lateral"`` or ``None``.
        effusion_mm: pericardial effusion thickness (0 = none).
        dcm, hcm, cad, hf, ph, myocarditis: disease states.
        pericardial: acute pericarditis (with or without effusion); an effusion
            without pericarditis has ``effusion_mm > 0`` and ``pericardial`` False.
        lv_max_wall_thickness_mm: maximal end-diastolic wall thickness.
        lv_long_axis_mm: end-diastolic cavity length, mitral plane to apex.
        sa_base_offset_mm: distance from the end-diastolic mitral plane to the
            centre of the first short-axis slice.
        mapse_mm: systolic descent of the mitral plane toward the apex.
        akinetic_volume_pct: share of the end-diastolic cavity enclosed by
            akinetic wall (what the infarct removes from the stroke volume).
        remote_ef_pct: ejection fraction of the contracting (non-akinetic) wall.
        lv_ellipticity: in-plane elongation of the LV cross-section (0 = circle).
        septal_flattening: septal inward displacement from RV pressure (0-0.35).
        septal_hypertrophy_ratio: septal / free-wall thickness (1 = concentric).
        rv_sector_deg: half-width of the RV crescent around the septum.
        es_fraction: time of end-systole as a fraction of the cardiac cycle.
        e_fill_fraction: share of diastolic filling done in early diastole.
        la_max_ml, la_min_ml, ra_max_ml, ra_min_ml: atrial volumes.
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
    lv_max_wall_thickness_mm: float = 0.0
    lv_long_axis_mm: float = 85.0
    sa_base_offset_mm: float = 4.0
    mapse_mm: float = 12.0
    akinetic_volume_pct: float = 0.0
    remote_ef_pct: float = 0.0
    lv_ellipticity: float = 0.0
    septal_flattening: float = 0.0
    septal_hypertrophy_ratio: float = 1.0
    rv_sector_deg: float = 70.0
    es_fraction: float = 0.37
    e_fill_fraction: float = 0.7
    la_max_ml: float = 70.0
    la_min_ml: float = 30.0
    ra_max_ml: float = 80.0
    ra_min_ml: float = 40.0

    @property
    def bmi(self) -> float:
        return self.weight_kg / (self.height_cm / 100.0) ** 2

    @property
    def bsa_m2(self) -> float:
        """Body surface area (Mosteller)."""
        return float(np.sqrt(self.height_cm * self.weight_kg / 3600.0))

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
        out.update(bmi=self.bmi, bsa_m2=self.bsa_m2, lvsv_ml=self.lvsv_ml, lvef_pct=self.lvef_pct,
                   rvsv_ml=self.rvsv_ml, rvef_pct=self.rvef_pct)
        return out


DISEASES: tuple[str, ...] = ("dcm", "hcm", "cad", "hf", "ph", "pericardial", "effusion", "myocarditis")

# ICD-10 codes as UK Biobank writes them (field 41270, no dot).
ICD10_CODES: dict[str, str] = {
    "dcm": "I420",  # dilated cardiomyopathy
    "hcm": "I421",  # obstructive hypertrophic cardiomyopathy
    "cad": "I252",  # old myocardial infarction
    "hf": "I500",  # congestive heart failure
    "ph": "I270",  # primary pulmonary hypertension
    "effusion": "I313",  # pericardial effusion (non-inflammatory)
    "pericardial": "I309",  # acute pericarditis, unspecified
    "myocarditis": "I409",  # acute myocarditis, unspecified
}


@dataclass
class DiseasePrevalence:
    """Probability of each disease state per simulated subject (enriched defaults).

    Attributes:
        dcm: dilated cardiomyopathy (always with heart failure).
        hcm: hypertrophic cardiomyopathy.
        cad: coronary artery disease with an old infarct.
        hf: heart failure with reduced EF; drawn with ``cad`` it is ischaemic,
            otherwise non-specific. Every DCM also counts as HF.
        ph: pulmonary hypertension.
        pericardial: acute pericarditis (60 % with an effusion).
        effusion: pericardial effusion without pericarditis.
        myocarditis: myocarditis with mild LV dysfunction.
    """

    dcm: float = 0.06
    hcm: float = 0.06
    cad: float = 0.10
    hf: float = 0.05
    ph: float = 0.06
    pericardial: float = 0.05
    effusion: float = 0.04
    myocarditis: float = 0.05

    def validate(self) -> None:
        for name in DISEASES:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"prevalence.{name}: {p} is not a probability in [0, 1]")
        if self.dcm + self.hcm + self.myocarditis > 1.0:
            raise ConfigError("prevalence: dcm + hcm + myocarditis (mutually exclusive) must not exceed 1")


RHYTHMS: tuple[str, ...] = ("atrial_fibrillation", "pvc", "pac", "rbbb", "lbbb", "lafb", "paced")


@dataclass
class RhythmPrevalence:
    """Probability per simulated subject of each rhythm or conduction pattern of the ECG.

    Defaults are near the rates of a middle-aged and older population (PTB-XL's
    first 500 records hold 13 AF, 16 PVC, 8 RBBB, 29 LAFB and 6 paced ECGs;
    UK Biobank's imaging visit is healthier). They are drawn on top of the
    disease states: a DCM or heart failure still brings its own LBBB.

    Attributes:
        atrial_fibrillation: no P waves, fibrillatory baseline, irregular RR; rises with age.
        pvc: subjects with premature ventricular complexes (1-8 per minute).
        pac: subjects with premature atrial complexes (1-8 per minute).
        rbbb: complete right bundle branch block.
        lbbb: left bundle branch block besides the one DCM and heart failure bring.
        lafb: left anterior fascicular block (left axis, qR in aVL).
        paced: ventricular pacing (from the RV apex; atrial too unless in AF).
    """

    atrial_fibrillation: float = 0.03
    pvc: float = 0.04
    pac: float = 0.04
    rbbb: float = 0.02
    lbbb: float = 0.01
    lafb: float = 0.05
    paced: float = 0.01

    def validate(self) -> None:
        for name in RHYTHMS:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"rhythm.{name}: {p} is not a probability in [0, 1]")
        if self.rbbb + self.lbbb > 1.0:
            raise ConfigError("rhythm: rbbb + lbbb (mutually exclusive) must not exceed 1")


# Rough rates in a middle-aged population cohort like UK Biobank's imaging visit
# (order of magnitude, for reweighting enriched cohorts; not used for sampling).
POPULATION_PREVALENCE = DiseasePrevalence(
    dcm=0.003, hcm=0.002, cad=0.03, hf=0.01, ph=0.002, pericardial=0.002, effusion=0.005, myocarditis=0.001
)


# Simulator calibrations (`SynthConfig.version`). Version 1 is the simulator of cardiacnets 0.1.0; version 2 is
# calibrated against real recordings with `cardiacnets bench realism` (CMR: body around the heart `cmr_body`,
# blood-pool structure, blur, noise that is lower in air than in tissue, as in ACDC and Sunnybrook);
# version 3 puts the heart into a real thorax (`thorax_atlas`) and refits the ECG; 4 widens the spread between subjects;
# 5 refits the ECG (version 4's cines). The default is the committed reference bundle's version, 5.
SIMULATOR_VERSIONS = (1, 2, 3, 4, 5)
VERSION_DEFAULTS = {
    1: dict(noise_sigma=0.05, signal_noise=0.0, cmr_texture=False, psf_sigma_px=0.0, image_size=80),
    2: dict(noise_sigma=0.008, signal_noise=0.035, cmr_texture=True, psf_sigma_px=0.7, image_size=80),
    **{version: dict(noise_sigma=0.004, signal_noise=0.03, cmr_texture=True, psf_sigma_px=0.7, image_size=96)
       for version in (3, 4, 5)},
}


@dataclass
class SynthConfig:
    """Settings of the paired ECG-CMR simulator (defaults are UK Biobank-like).

    Attributes:
        prevalence: disease probabilities per subject (enriched by default).
        rhythm: probabilities of the ECG's rhythm and conduction patterns.
        age_range_years: uniform-ish age range of the imaging visit.
        male_fraction: probability of a male subject.
        image_size: short-axis in-plane matrix (square), pixels (version 3: 96, a 173 mm field of view
            around the heart's 144 mm window; earlier versions: 80).
        la_image_size: long-axis (4-chamber) in-plane matrix (square), pixels.
        pixel_spacing_mm: in-plane pixel size of both cines.
        n_slices: short-axis slices, base to apex.
        slice_spacing_mm: centre-to-centre slice distance (the affine's third column).
        slice_thickness_mm: nominal slice thickness (recorded in the header only).
        la_slice_thickness_mm: long-axis slice thickness (the affine's third column).
        n_frames: cine frames over one cardiac cycle.
        noise_sigma: Rician (thermal) noise level relative to the blood-pool signal.
        signal_noise: SD of the noise proportional to the signal (reconstruction, flow, ghosting),
            relative; real frames are noisier in tissue than in air, which thermal noise alone is not.
        bias_field: peak relative amplitude of the smooth coil sensitivity field.
        cmr_texture: paint papillary muscles, trabeculae and flow variation into the short-axis blood
            pool (`cardiacnets.simulate.cmr_texture`; labels and indices unchanged).
        psf_sigma_px: in-plane Gaussian point-spread function of the short-axis cine, pixels (0: none).
        image_size, noise_sigma, signal_noise, cmr_texture and psf_sigma_px left None take the value of the
        simulator ``version`` (`VERSION_DEFAULTS`; `SynthConfig.setting` reads them).
        ecg_sampling_rate_hz, ecg_duration_s: the resting ECG strip.
        mains_hz: mains frequency of the ECG hum (50 in the UK).
        ecg_noise: add baseline wander, hum and EMG noise to the ECG.
        version: the simulator's calibration. 1 draws exactly what cardiacnets 0.1.0's simulator drew
            (the data the reference bundle ``cardiacnets-reference-0.1.0`` was trained on); 2 adds the
            realism calibration against real recordings (`cardiacnets bench realism`; the data of
            ``cardiacnets-reference-0.1.1``); 3 takes the short-axis surroundings from a real cine
            (`cardiacnets.simulate.thorax_atlas`, a 173 mm field of view) and refits the ECG's QRS and T
            lobes, limb-lead gain, spreads and noise to PTB-XL NORM; 4 widens the acquisition and ECG variety
            (`cmr_body.ACQUISITION_V4`, `ecg_params.ECG_V4`); 5 (default) refits the ECG (`ECG_V5`; version
            4's cines). A model bundle records the version it was trained on, and the demo draws its cohort with it.
    """

    prevalence: DiseasePrevalence = field(default_factory=DiseasePrevalence)
    rhythm: RhythmPrevalence = field(default_factory=RhythmPrevalence)
    age_range_years: tuple[float, float] = (45.0, 80.0)
    male_fraction: float = 0.48
    image_size: int | None = None
    la_image_size: int = 80
    pixel_spacing_mm: float = 1.8
    n_slices: int = 10
    slice_spacing_mm: float = 10.0
    slice_thickness_mm: float = 8.0
    la_slice_thickness_mm: float = 6.0
    n_frames: int = 50
    noise_sigma: float | None = None
    signal_noise: float | None = None
    bias_field: float = 0.2
    cmr_texture: bool | None = None
    psf_sigma_px: float | None = None
    ecg_sampling_rate_hz: float = 500.0
    ecg_duration_s: float = 10.0
    mains_hz: float = 50.0
    ecg_noise: bool = True
    version: int = 5

    def setting(self, name: str):
        """The value of a version-dependent setting: the field if set, else `VERSION_DEFAULTS` of ``version``."""
        value = getattr(self, name)
        return VERSION_DEFAULTS[self.version][name] if value is None else value

    @property
    def prevalence_enriched(self) -> bool:
        """True when any disease is drawn at more than twice its population rate."""
        return any(getattr(self.prevalence, d) > 2 * getattr(POPULATION_PREVALENCE, d) for d in DISEASES)

    def validate(self) -> None:
        if self.version not in SIMULATOR_VERSIONS:  # first: the version-dependent settings depend on it
            raise ConfigError(f"version: {self.version} is not one of {SIMULATOR_VERSIONS}")
        self.prevalence.validate()
        self.rhythm.validate()
        lo, hi = self.age_range_years
        if not 18 <= lo < hi <= 100:
            raise ConfigError(f"age_range_years: need 18 <= low < high <= 100, got {self.age_range_years}")
        if not 0.0 <= self.male_fraction <= 1.0:
            raise ConfigError(f"male_fraction: {self.male_fraction} is not in [0, 1]")
        if self.setting("image_size") < 48 or self.la_image_size < 48:
            raise ConfigError("image_size and la_image_size must be at least 48 pixels (the heart must fit)")
        if self.n_slices < 4 or self.n_frames < 8:
            raise ConfigError("n_slices >= 4 and n_frames >= 8 are required")
        if (self.n_slices - 1) * self.slice_spacing_mm < 70.0:
            raise ConfigError("the short-axis stack must span the LV: (n_slices - 1) * slice_spacing_mm >= 70 mm")
        if self.pixel_spacing_mm <= 0 or self.slice_spacing_mm <= 0 or self.slice_thickness_mm <= 0:
            raise ConfigError("pixel_spacing_mm, slice_spacing_mm and slice_thickness_mm must be positive")
        if self.slice_thickness_mm > self.slice_spacing_mm:
            raise ConfigError("slice_thickness_mm must not exceed slice_spacing_mm (slices would overlap)")
        if not 0.0 <= self.setting("noise_sigma") <= 0.5 or not 0.0 <= self.bias_field < 0.9:
            raise ConfigError("noise_sigma must be in [0, 0.5] and bias_field in [0, 0.9)")
        if not 0.0 <= self.setting("signal_noise") <= 0.5:
            raise ConfigError(f"signal_noise must be in [0, 0.5], got {self.signal_noise}")
        if not 0.0 <= self.setting("psf_sigma_px") <= 3.0:
            raise ConfigError(f"psf_sigma_px must be in [0, 3] pixels, got {self.psf_sigma_px}")
        if self.ecg_sampling_rate_hz < 100 or self.ecg_duration_s < 2:
            raise ConfigError("ecg_sampling_rate_hz >= 100 and ecg_duration_s >= 2 are required")
        if self.mains_hz not in (50.0, 60.0):
            raise ConfigError(f"mains_hz: {self.mains_hz} is not 50 or 60")


# UK Biobank CMR reference values of healthy adults (Petersen et al., JCMR
# 2017): per sex, LV end-diastolic volume index (ml/m2), LVEF (%), LV mass index
# (g/m2), RVEDV relative to LVEDV and RVEF (%). Volumes fall with age.
_REFERENCE = {
    True: dict(lvedvi=83.0, lvef=58.0, lvmi=53.0, rv_ratio=1.10, rvef=56.0, la_ratio=0.45, ra_ratio=0.55),
    False: dict(lvedvi=72.0, lvef=61.0, lvmi=42.0, rv_ratio=1.05, rvef=59.0, la_ratio=0.52, ra_ratio=0.52),
}

# Segments of each coronary territory (AHA 17-segment model), in the order an
# infarct of growing size involves them.
TERRITORY_SEGMENTS: dict[str, tuple[int, ...]] = {
    "anterior": (13, 7, 14, 17, 8, 1, 2),  # LAD
    "inferior": (10, 4, 15, 9, 3),  # RCA
    "lateral": (11, 12, 5, 16, 6),  # LCx
}


def icd10_codes(phys: Physiology) -> list[str]:
    """The subject's ICD-10 diagnoses, UK Biobank style (``I420``, no dot).

    Args:
        phys: the subject.

    Returns:
        Codes in a fixed order; empty for a subject without disease.
    """
    codes = []
    for name in ("dcm", "hcm", "cad", "hf", "ph", "pericardial", "myocarditis"):
        if getattr(phys, name):
            codes.append(ICD10_CODES[name])
    if phys.effusion_mm > 0:
        codes.append(ICD10_CODES["effusion"])
    return codes


def _clip_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def sample_physiology(eid: int, rng: np.random.Generator, config: SynthConfig | None = None) -> Physiology:
    """Draw one subject's latent physiology.

    The steps draw from `rng` in a fixed order, so a subject depends on its generator only.

    Args:
        eid: participant id to record.
        rng: the subject's random generator (all randomness comes from it).
        config: simulator settings (prevalences, slice geometry); defaults if None.

    Returns:
        A `Physiology` whose volumes, mass, wall thickness and akinetic share
        are consistent with the short-axis geometry the renderer will draw.
    """
    config = config or SynthConfig()

    # 1. Demographics of the imaging visit.
    is_male = bool(rng.random() < config.male_fraction)
    lo, hi = config.age_range_years
    age = _clip_normal(rng, 0.5 * (lo + hi) + 2.0, (hi - lo) / 4.0, lo, hi)
    height = _clip_normal(rng, 176.0 if is_male else 163.0, 7.0 if is_male else 6.5, 145.0, 205.0)
    bmi = float(np.clip(np.exp(rng.normal(np.log(27.0 if is_male else 26.0), 0.15)), 17.0, 48.0))
    weight = bmi * (height / 100.0) ** 2
    bsa = float(np.sqrt(height * weight / 3600.0))
    heart_rate = _clip_normal(rng, 64.0, 9.0, 45.0, 100.0)

    # 2. Disease states; 3. the normal heart for this body size, sex and age; 4. what the diseases change.
    states = _disease_states(rng, config.prevalence)
    h = _normal_heart(rng, is_male, age, bsa, heart_rate)  # the heart being drawn
    _myocardial_disease(h, rng, states)
    _coronary_disease(h, rng, states)
    _right_heart_and_pericardium(h, rng, states)

    # 5. Rate, slice position, long-axis motion and timing.
    heart_rate = float(np.clip(h.heart_rate, 45.0, 125.0))
    base_offset = float(rng.uniform(1.5, 6.0))
    # The stack covers the apex: the cavity ends before the last slice.
    long_axis = float(np.clip(h.long_axis, 60.0,
                              base_offset + config.slice_spacing_mm * (config.n_slices - 1) - 3.0))
    mapse = float(np.clip(rng.normal(13.0, 1.5) * (min(h.remote_ef, h.lvef) / 60.0) ** 0.8 * h.mapse_scale,
                          3.0, 18.0))
    # End-systole later in the cycle at faster rates (systole shortens less than diastole).
    es_fraction = float(np.clip(0.30 + 0.0012 * heart_rate + rng.normal(0.0, 0.01), 0.33, 0.44))

    phys = Physiology(
        eid=int(eid), age_years=round(age, 1), is_male=is_male, height_cm=round(height, 1),
        weight_kg=round(weight, 1), heart_rate_bpm=heart_rate, lvedv_ml=float(h.lvedv), lvesv_ml=0.0,
        lv_mass_g=float(h.lv_mass), lv_wall_thickness_mm=0.0, rvedv_ml=float(h.rvedv),
        rvesv_ml=float(h.rvedv * (1.0 - h.rvef / 100.0)), akinetic_segments=h.akinetic,
        infarct_territory=h.territory, effusion_mm=float(h.effusion), dcm=bool(states["dcm"]),
        hcm=bool(states["hcm"]), cad=bool(states["cad"]), hf=bool(states["hf"]), ph=bool(states["ph"]),
        pericardial=bool(states["pericarditis"]), myocarditis=bool(states["myocarditis"]),
        lv_long_axis_mm=long_axis, sa_base_offset_mm=base_offset, mapse_mm=mapse,
        remote_ef_pct=float(h.remote_ef), lv_ellipticity=h.ellipticity, septal_flattening=float(h.septal_flattening),
        septal_hypertrophy_ratio=float(h.septal_ratio), rv_sector_deg=float(h.rv_sector), es_fraction=es_fraction,
        e_fill_fraction=float(h.e_fill), la_max_ml=float(h.la_max), la_min_ml=float(h.la_max * (1.0 - h.la_ef / 100.0)),
        ra_max_ml=float(h.ra_max), ra_min_ml=float(h.ra_max * (1.0 - h.ra_ef / 100.0)),
    )

    # 6. Make the LV consistent with the short-axis geometry: the akinetic share
    # of the cavity sets the ESV; the wall thickness follows from the mass (or,
    # for HCM, the mass from the wall thickness).
    wall = solve_lv_wall(phys, config, max_thickness_mm=h.hcm_thickness)
    phys.akinetic_volume_pct = 100.0 * wall.akinetic_fraction
    a = wall.akinetic_fraction
    phys.lvesv_ml = phys.lvedv_ml * (a + (1.0 - a) * (1.0 - h.remote_ef / 100.0))
    phys.lv_mass_g = wall.mass_g
    phys.lv_wall_thickness_mm = wall.mean_thickness_mm
    phys.lv_max_wall_thickness_mm = wall.max_thickness_mm
    if states["cad"] and phys.lvef_pct < 40.0:
        phys.hf = True
    return phys


def _disease_states(rng: np.random.Generator, prev: DiseasePrevalence) -> dict[str, bool]:
    """The subject's diseases. DCM, HCM and myocarditis exclude each other; CAD never co-occurs with
    (non-ischaemic) DCM; DCM brings heart failure; an isolated effusion is one without pericarditis."""
    u = rng.random()
    dcm = u < prev.dcm
    hcm = prev.dcm <= u < prev.dcm + prev.hcm
    myocarditis = prev.dcm + prev.hcm <= u < prev.dcm + prev.hcm + prev.myocarditis
    p_cad = min(1.0, prev.cad / max(1e-9, 1.0 - prev.dcm))
    cad = bool(rng.random() < p_cad) and not dcm
    hf = bool(rng.random() < prev.hf) or dcm
    ph = bool(rng.random() < prev.ph)
    pericarditis = bool(rng.random() < prev.pericardial)
    isolated_effusion = bool(rng.random() < prev.effusion) and not pericarditis
    return {"dcm": dcm, "hcm": hcm, "myocarditis": myocarditis, "cad": cad, "hf": hf, "ph": ph,
            "pericarditis": pericarditis, "isolated_effusion": isolated_effusion}


@dataclass
class _Heart:
    """The heart being drawn (volumes in ml, EFs in %), changed in place by the disease steps."""

    heart_rate: float
    lvedv: float
    lvef: float
    lv_mass: float
    rvedv: float
    rvef: float
    la_max: float
    ra_max: float
    la_ef: float
    ra_ef: float
    long_axis: float
    ellipticity: float
    rv_sector: float
    e_fill: float
    septal_flattening: float = 0.0
    septal_ratio: float = 1.0
    mapse_scale: float = 1.0
    hcm_thickness: float | None = None  # maximal wall thickness of HCM (mm)
    effusion: float = 0.0
    territory: str | None = None
    akinetic: list[int] = field(default_factory=list)
    remote_ef: float = 0.0  # EF of the contracting wall (set by `_coronary_disease`)


def _normal_heart(rng: np.random.Generator, is_male: bool, age: float, bsa: float, heart_rate: float) -> _Heart:
    """The normal heart for this body size, sex and age (Petersen et al. 2017)."""
    ref = _REFERENCE[is_male]
    z_edv, z_mass = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.6], [0.6, 1.0]])
    age_factor = 1.0 - 0.004 * (age - 60.0)
    lvedv = ref["lvedvi"] * bsa * age_factor * float(np.exp(0.13 * z_edv))
    lvef = _clip_normal(rng, ref["lvef"], 5.0, 48.0, 72.0)
    lv_mass = ref["lvmi"] * bsa * (1.0 - 0.002 * (age - 60.0) * is_male) * float(np.exp(0.12 * z_mass))
    rvedv = lvedv * ref["rv_ratio"] * float(np.exp(rng.normal(0.0, 0.07)))
    rvef = _clip_normal(rng, ref["rvef"], 5.5, 45.0, 70.0)
    la_max = lvedv * ref["la_ratio"] * float(np.exp(rng.normal(0.0, 0.15)))
    ra_max = rvedv * ref["ra_ratio"] * float(np.exp(rng.normal(0.0, 0.15)))
    la_ef = _clip_normal(rng, 60.0, 6.0, 40.0, 75.0)
    ra_ef = _clip_normal(rng, 50.0, 7.0, 30.0, 70.0)
    long_axis = 16.0 * lvedv ** (1.0 / 3.0) * float(np.exp(rng.normal(0.0, 0.05)))
    ellipticity = float(rng.uniform(0.0, 0.06))
    rv_sector = float(rng.uniform(68.0, 82.0))
    e_fill = _clip_normal(rng, 0.72 - 0.004 * (age - 60.0), 0.05, 0.4, 0.85)
    return _Heart(heart_rate=heart_rate, lvedv=lvedv, lvef=lvef, lv_mass=lv_mass, rvedv=rvedv, rvef=rvef,
                  la_max=la_max, ra_max=ra_max, la_ef=la_ef, ra_ef=ra_ef, long_axis=long_axis,
                  ellipticity=ellipticity, rv_sector=rv_sector, e_fill=e_fill)


def _myocardial_disease(h: _Heart, rng: np.random.Generator, states: dict[str, bool]) -> None:
    """DCM (dilated, EF < 40 %), HCM (thick wall, small cavity, high EF), myocarditis, and the heart
    failure with reduced EF that is not DCM's (an ischaemic one is drawn by `_coronary_disease`)."""
    if states["dcm"]:
        h.lvedv *= rng.uniform(1.45, 2.1)
        h.lvef = rng.uniform(18.0, 38.0)
        h.lv_mass *= rng.uniform(1.15, 1.5)
        h.long_axis *= 0.92  # more spherical
        h.la_max *= rng.uniform(1.4, 1.9)
        h.la_ef *= 0.6
        h.rvef -= rng.uniform(0.0, 12.0)
        h.heart_rate += rng.uniform(5.0, 15.0)
    elif states["hcm"]:
        h.lvedv *= rng.uniform(0.72, 0.95)
        h.lvef = rng.uniform(66.0, 80.0)
        h.hcm_thickness = rng.uniform(15.5, 26.0)  # maximal wall thickness
        h.septal_ratio = rng.uniform(1.2, 1.8)  # asymmetric septal hypertrophy
        h.la_max *= rng.uniform(1.3, 1.8)
        h.la_ef *= 0.75
        h.e_fill = rng.uniform(0.35, 0.55)  # impaired relaxation: more atrial filling
        h.mapse_scale = 0.75
    elif states["myocarditis"]:
        h.lvedv *= rng.uniform(1.0, 1.15)
        h.lvef = rng.uniform(40.0, 52.0)
        h.lv_mass *= rng.uniform(1.0, 1.1)  # oedema
        h.heart_rate += rng.uniform(8.0, 20.0)
        if rng.random() < 0.3:
            h.effusion = rng.uniform(2.0, 5.0)
    if states["hf"] and not states["dcm"]:
        if not states["cad"]:  # (ischaemic: a large infarct and impaired remote wall, in `_coronary_disease`)
            h.lvedv *= rng.uniform(1.2, 1.55)
            h.lvef = min(h.lvef, rng.uniform(25.0, 39.0))
            h.lv_mass *= rng.uniform(1.05, 1.3)
            h.la_max *= rng.uniform(1.3, 1.7)
            h.la_ef *= 0.7
        h.heart_rate += rng.uniform(3.0, 12.0)


def _coronary_disease(h: _Heart, rng: np.random.Generator, states: dict[str, bool]) -> None:
    """An old infarct: akinetic AHA segments of one coronary territory (more with heart failure), the
    contracting wall's EF and post-infarct remodelling; without CAD the remote EF is the EF."""
    h.remote_ef = h.lvef
    if not states["cad"]:
        return
    h.territory = str(rng.choice(["anterior", "inferior", "lateral"], p=[0.5, 0.3, 0.2]))
    segments = TERRITORY_SEGMENTS[h.territory]
    low, high = (4, len(segments)) if states["hf"] else (2, len(segments) - 1)
    h.akinetic = sorted(int(s) for s in segments[: int(rng.integers(low, high + 1))])
    h.lvedv *= 1.0 + 0.05 * len(h.akinetic)  # post-infarct remodelling
    h.remote_ef = rng.uniform(33.0, 48.0) if states["hf"] else min(h.lvef, rng.uniform(52.0, 66.0))
    h.la_max *= 1.0 + 0.04 * len(h.akinetic)


def _right_heart_and_pericardium(h: _Heart, rng: np.random.Generator, states: dict[str, bool]) -> None:
    """Pulmonary hypertension (dilated, hypokinetic RV, underfilled LV, flattened septum), pericarditis
    (faster rate, often an effusion) and an isolated effusion."""
    if states["ph"]:
        h.rvedv *= rng.uniform(1.35, 2.0)
        h.rvef = rng.uniform(22.0, 42.0)
        h.lvedv *= rng.uniform(0.82, 0.97)  # underfilled LV
        h.septal_flattening = rng.uniform(0.12, 0.3)
        h.rv_sector = rng.uniform(84.0, 98.0)
        h.ra_max *= rng.uniform(1.4, 2.0)
        h.ra_ef *= 0.7
    if states["pericarditis"]:
        h.heart_rate += rng.uniform(5.0, 15.0)
        if rng.random() < 0.6:
            h.effusion = max(h.effusion, rng.uniform(3.0, 10.0))
    if states["isolated_effusion"]:
        h.effusion = rng.uniform(4.0, 18.0)
