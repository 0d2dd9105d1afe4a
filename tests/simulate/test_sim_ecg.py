"""Tests of the simulator's ECG model and its UK Biobank XML writer."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy.signal import find_peaks

from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.errors import InputError
from cardiacnets.simulate.ecg_model import (
    BASELINE_WANDER_MAX_MV,
    DOWER_MATRIX,
    ECG_VISIBLE_LATENTS,
    EMG_RMS_MAX_MV,
    MAINS_MAX_MV,
    MEDIAN_QRS_ONSET_MS,
    ECGParams,
    direction_vector,
    ecg_parameters,
    lead_features,
    synthesize_ecg,
    vcg_to_leads,
)
from cardiacnets.simulate.physiology import RHYTHMS, RhythmPrevalence
from cardiacnets.simulate.ukb_xml_writer import MEASUREMENT_KEYS, write_ukb_xml
from support.ecg import NORMAL, make_phys

LEAD = {name: i for i, name in enumerate(STANDARD_LEADS)}
SINUS_ONLY = RhythmPrevalence(**{name: 0.0 for name in RHYTHMS})
FS_MEDIAN = 500.0


def clean(params: ECGParams, seed: int = 0, **kwargs):
    return synthesize_ecg(params, np.random.default_rng(seed), noise=False, **kwargs)


def median_index(ms: float) -> int:
    return int(round(ms / 1000.0 * FS_MEDIAN))


def pr_baseline(median_mV: np.ndarray) -> np.ndarray:
    """Level of the PR segment just before QRS onset, per lead."""
    q_on = median_index(MEDIAN_QRS_ONSET_MS)
    return median_mV[:, q_on - 5:q_on - 2].mean(axis=1)


def frontal_axis_deg(ecg) -> float:
    """Axis from net QRS areas of I and aVF over the device's QRS, as a device computes it (hexaxial)."""
    median_mV = ecg.median_mV
    q_on = median_index(ecg.measurements["q_onset_ms"])
    window = slice(q_on, median_index(ecg.measurements["q_offset_ms"]) + 1)
    base = median_mV[:, q_on - 3:q_on + 1].mean(axis=1)  # PR level just before the QRS
    area_i = (median_mV[LEAD["I"], window] - base[LEAD["I"]]).sum()
    area_avf = (median_mV[LEAD["aVF"], window] - base[LEAD["aVF"]]).sum()
    return math.degrees(math.atan2(area_avf * 2.0 / math.sqrt(3.0), area_i))


def initial_deflection_mV(median_mV: np.ndarray, lead: str, window_ms: float = 40.0) -> float:
    """Most negative excursion in the first ``window_ms`` of the QRS, before any
    positive deflection above 0.05 mV (i.e. the depth of a Q wave; 0 if none)."""
    q_on = median_index(MEDIAN_QRS_ONSET_MS)
    trace = median_mV[LEAD[lead], q_on:q_on + median_index(window_ms)] - pr_baseline(median_mV)[LEAD[lead]]
    above = np.flatnonzero(trace > 0.05)
    head = trace[: above[0]] if above.size else trace
    return float(-min(head.min(initial=0.0), 0.0))


# --------------------------------------------------------------------------- geometry


def test_dower_projection_of_pure_dipoles_matches_the_table():
    # A 1 mV dipole along +X (to the left): I, II, V1-V6 are the X column of the
    # Dower table; III = II - I, aVR = -(I+II)/2, aVL = I - II/2, aVF = II - I/2.
    x_leads = vcg_to_leads(np.array([[1.0], [0.0], [0.0]]))[:, 0]
    expected_x = {
        "I": 0.632, "II": 0.235, "III": 0.235 - 0.632, "aVR": -(0.632 + 0.235) / 2,
        "aVL": 0.632 - 0.235 / 2, "aVF": 0.235 - 0.632 / 2,
        "V1": -0.515, "V2": 0.044, "V3": 0.882, "V4": 1.213, "V5": 1.125, "V6": 0.831,
    }
    for name, value in expected_x.items():
        assert x_leads[LEAD[name]] == pytest.approx(value, abs=1e-12), name
    # A 2 mV dipole along +Z (to the back) is strongly negative in V2 (-1.387 per mV).
    z_leads = vcg_to_leads(np.array([[0.0], [0.0], [2.0]]))[:, 0]
    assert z_leads[LEAD["V2"]] == pytest.approx(-2.774)
    assert z_leads[LEAD["V6"]] == pytest.approx(0.46)
    assert z_leads[LEAD["I"]] == pytest.approx(0.118)
    assert DOWER_MATRIX.shape == (8, 3)


def test_vcg_to_leads_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(3, T\)"):
        vcg_to_leads(np.zeros((4, 10)))


def test_direction_vector_gives_the_hexaxial_axis_exactly():
    for axis_deg in (-60.0, 0.0, 45.0, 120.0, 180.0):
        leads = vcg_to_leads(direction_vector(axis_deg, 0.0)[:, None])[:, 0]
        assert leads[LEAD["I"]] == pytest.approx(math.cos(math.radians(axis_deg)), abs=1e-12)
        assert leads[LEAD["aVF"]] == pytest.approx(math.sin(math.radians(axis_deg)) * math.sqrt(3) / 2, abs=1e-12)
    # Elevation only moves the vector out of the frontal plane: Frank Z = sin(elevation).
    assert direction_vector(0.0, 30.0)[2] == pytest.approx(0.5)
    assert direction_vector([0.0, 90.0], [0.0, 0.0]).shape == (2, 3)


# --------------------------------------------------------------------------- synthesis basics


def test_limb_leads_satisfy_einthoven_and_goldberger_with_noise():
    ecg = synthesize_ecg(NORMAL, np.random.default_rng(1), noise=True)
    s = ecg.signal_mV.astype(np.float64)
    i, ii = s[LEAD["I"]], s[LEAD["II"]]
    atol = 1e-6  # float32 storage
    np.testing.assert_allclose(s[LEAD["III"]], ii - i, atol=atol)
    np.testing.assert_allclose(s[LEAD["aVR"]], -(i + ii) / 2, atol=atol)
    np.testing.assert_allclose(s[LEAD["aVL"]], i - ii / 2, atol=atol)
    np.testing.assert_allclose(s[LEAD["aVF"]], ii - i / 2, atol=atol)
    m = ecg.median_mV.astype(np.float64)
    np.testing.assert_allclose(m[LEAD["III"]], m[LEAD["II"]] - m[LEAD["I"]], atol=atol)
    np.testing.assert_allclose(m[LEAD["aVR"]] + m[LEAD["aVL"]] + m[LEAD["aVF"]], 0.0, atol=atol)


def test_shapes_dtypes_and_measurement_keys():
    ecg = synthesize_ecg(NORMAL, np.random.default_rng(0))
    assert ecg.signal_mV.shape == (12, 5000) and ecg.signal_mV.dtype == np.float32
    assert ecg.median_mV.shape == (12, 600) and ecg.median_mV.dtype == np.float32
    assert ecg.lead_names == STANDARD_LEADS
    required = {"ventricular_rate_bpm", "pq_interval_ms", "p_duration_ms", "qrs_duration_ms", "qt_interval_ms",
                "qtc_interval_ms", "rr_interval_ms", "pp_interval_ms", "p_axis_deg", "r_axis_deg", "t_axis_deg"}
    assert required <= set(ecg.measurements)
    assert set(ecg.measurements) <= MEASUREMENT_KEYS  # everything can be written to XML
    m = ecg.measurements
    bazett_ms = m["qt_interval_ms"] / math.sqrt(m["rr_interval_ms"] / 1000.0)
    assert abs(m["qtc_interval_ms"] - bazett_ms) <= 1.0  # rounding of QT and RR only
    # The device's median beat puts the QRS near 400 ms; the delineator measures about the latent width.
    assert abs(m["q_onset_ms"] - MEDIAN_QRS_ONSET_MS) <= 20
    assert m["q_offset_ms"] - m["q_onset_ms"] == pytest.approx(NORMAL.qrs_duration_ms, abs=8)
    assert ecg.interpretation[0] == "Normal sinus rhythm" and ecg.interpretation[-1] == "Normal ECG"
    record = ecg.as_record("sim.xml")
    assert record.lead("V1").shape == (5000,) and record.median_lead_names == list(STANDARD_LEADS)


def test_other_sampling_rate_and_duration():
    ecg = synthesize_ecg(NORMAL, np.random.default_rng(0), sampling_rate_hz=250.0, duration_s=8.0, mains_hz=60.0)
    assert ecg.signal_mV.shape == (12, 2000)
    assert ecg.median_mV.shape == (12, 600)  # the median beat is always 500 Hz, 1.2 s


def test_same_seed_same_ecg_and_different_seed_differs():
    params = ecg_parameters(make_phys(), np.random.default_rng(7))
    again = ecg_parameters(make_phys(), np.random.default_rng(7))
    assert params == again
    a = synthesize_ecg(params, np.random.default_rng(3))
    b = synthesize_ecg(params, np.random.default_rng(3))
    c = synthesize_ecg(params, np.random.default_rng(4))
    np.testing.assert_array_equal(a.signal_mV, b.signal_mV)
    np.testing.assert_array_equal(a.median_mV, b.median_mV)
    assert a.measurements == b.measurements and a.interpretation == b.interpretation
    assert not np.array_equal(a.signal_mV, c.signal_mV)


def test_params_as_dict_and_visible_latents():
    d = NORMAL.as_dict()
    assert ECGParams(**d) == NORMAL
    names = {f.name for f in dataclasses.fields(ECGParams)}
    assert set(ECG_VISIBLE_LATENTS) <= names
    assert {"thorax_factor", "attenuation_factor", "source_dipole_mV"}.isdisjoint(ECG_VISIBLE_LATENTS)
    assert {"heart_rate_bpm", "qrs_duration_ms", "qrs_amplitude_mV", "qrs_axis_deg", "q_amplitude_mV"} \
        <= set(ECG_VISIBLE_LATENTS)
    params = ecg_parameters(make_phys(), np.random.default_rng(0))
    assert all(isinstance(params.as_dict()[k], (float, bool)) for k in ECG_VISIBLE_LATENTS)


def test_unknown_infarct_territory_is_rejected():
    with pytest.raises(ValueError, match="posterior"):
        ecg_parameters(make_phys(cad=True, infarct_territory="posterior"), np.random.default_rng(0))


# --------------------------------------------------------------------------- measured properties


def test_r_peak_spacing_matches_heart_rate():
    for rate_bpm in (50.0, 75.0, 110.0):
        params = dataclasses.replace(NORMAL, heart_rate_bpm=rate_bpm)
        ecg = clean(params)
        peaks, _ = find_peaks(ecg.signal_mV[LEAD["II"]], height=0.6, distance=int(0.3 * 500))
        rr_s = np.diff(peaks) / 500.0
        assert rr_s == pytest.approx(60.0 / rate_bpm, abs=0.004)  # one 2 ms sample
        assert ecg.measurements["ventricular_rate_bpm"] == pytest.approx(rate_bpm, abs=1)
    # With sinus arrhythmia the beats vary but the mean rate holds.
    varied = clean(dataclasses.replace(NORMAL, heart_rate_bpm=70.0, rr_variability_frac=0.05))
    peaks, _ = find_peaks(varied.signal_mV[LEAD["II"]], height=0.6, distance=150)
    rr_s = np.diff(peaks) / 500.0
    assert rr_s.std() > 0.005
    assert rr_s.mean() == pytest.approx(60.0 / 70.0, rel=0.05)
    assert np.diff(varied.beat_times_ms).mean() == pytest.approx(varied.measurements["rr_interval_ms"], abs=1)


def qrs_width_ms(median_mV: np.ndarray) -> float:
    """Span where the spatial slope exceeds 5 % of its maximum around the QRS."""
    q_on = median_index(MEDIAN_QRS_ONSET_MS)
    segment = median_mV[:, q_on - 20:q_on + 100].astype(np.float64)
    slope = np.sqrt((np.diff(segment, axis=1) ** 2).sum(axis=0))
    active = np.flatnonzero(slope > 0.05 * slope.max())
    return (active[-1] - active[0] + 1) / FS_MEDIAN * 1000.0


def test_qrs_widens_for_dilated_cardiomyopathy():
    narrow = qrs_width_ms(clean(NORMAL).median_mV)
    wide = qrs_width_ms(clean(dataclasses.replace(NORMAL, qrs_duration_ms=150.0, lbbb=True,
                                                  septal_amplitude_mV=0.0)).median_mV)
    assert 70.0 <= narrow <= 110.0
    assert wide >= narrow + 40.0
    # From physiology: a dilated LV gives a wider QRS on average, often an LBBB.
    normal_ms = [ecg_parameters(make_phys(), np.random.default_rng(s)).qrs_duration_ms for s in range(30)]
    dcm = [ecg_parameters(make_phys(dcm=True, lvedv_ml=300.0, lvesv_ml=230.0, lv_mass_g=170.0),
                          np.random.default_rng(s)) for s in range(30)]
    assert np.mean([p.qrs_duration_ms for p in dcm]) > np.mean(normal_ms) + 20.0
    assert 3 <= sum(p.lbbb for p in dcm) <= 20


def test_frontal_axis_quadrant_normal_vs_pulmonary_hypertension():
    assert 0.0 < frontal_axis_deg(clean(NORMAL)) < 90.0
    # A large late RV vector with an anterior QRS (pressure-loaded RV) turns the axis right.
    rv_loaded = dataclasses.replace(NORMAL, rv_amplitude_mV=1.4, qrs_elevation_deg=0.0)
    ecg = clean(rv_loaded)
    axis = frontal_axis_deg(ecg)
    assert 90.0 < axis < 180.0
    assert ecg.measurements["r_axis_deg"] == pytest.approx(axis, abs=3)
    assert "Right axis deviation" in ecg.interpretation
    # From physiology, over seeds (no fascicular block or pacing, which set their own axis).
    normal_axes, ph_axes = [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        params = ecg_parameters(make_phys(), rng, SINUS_ONLY)
        normal_axes.append(frontal_axis_deg(clean(params, seed)))
        params = ecg_parameters(make_phys(ph=True, rvedv_ml=290.0, rvesv_ml=200.0), rng, SINUS_ONLY)
        ph_axes.append(frontal_axis_deg(clean(params, seed)))
    assert sum(0.0 <= a <= 90.0 for a in normal_axes) >= 10
    assert sum(90.0 < a <= 180.0 for a in ph_axes) >= 10


def test_rv_strain_inverts_t_in_right_precordial_leads():
    params = ecg_parameters(make_phys(ph=True, rvedv_ml=290.0, rvesv_ml=200.0), np.random.default_rng(2))
    features = lead_features(clean(params).median_mV, clean(params).measurements)
    for lead in ("V1", "V2", "V3"):
        assert features.of(lead)["t_mV"] < -0.05, lead
    normal = lead_features(clean(NORMAL).median_mV, clean(NORMAL).measurements)
    assert normal.of("V2")["t_mV"] > 0.1 and normal.of("V3")["t_mV"] > 0.1


def with_infarct(territory: str) -> ECGParams:
    """NORMAL plus the Q vector `ecg_parameters` uses for an old infarct."""
    phys = make_phys(cad=True, infarct_territory=territory, akinetic_segments=[1, 2, 3])
    for seed in range(50):
        params = ecg_parameters(phys, np.random.default_rng(seed))
        if params.q_amplitude_mV > 0:
            return dataclasses.replace(NORMAL, q_axis_deg=params.q_axis_deg, q_elevation_deg=params.q_elevation_deg,
                                       q_amplitude_mV=0.6, q_duration_ms=45.0)
    raise AssertionError(f"no visible {territory} infarct in 50 seeds")


@pytest.mark.parametrize("territory, q_leads, free_leads, statement", [
    ("inferior", ("II", "III", "aVF"), ("I", "V1", "V2"), "Inferior infarct, age undetermined"),
    ("anterior", ("V1", "V2", "V3"), ("II", "III", "aVF"), "Anterior infarct, age undetermined"),
    ("lateral", ("I", "aVL", "V5", "V6"), ("II", "III", "aVF"), "Lateral infarct, age undetermined"),
])
def test_infarct_q_waves_in_the_matching_leads(territory, q_leads, free_leads, statement):
    normal = clean(NORMAL)
    infarct = clean(with_infarct(territory))
    for lead in q_leads:
        assert initial_deflection_mV(infarct.median_mV, lead) >= 0.1, lead
    for lead in free_leads:
        assert initial_deflection_mV(infarct.median_mV, lead) < 0.05, lead
    for lead in ("II", "III", "aVF"):  # a normal heart has no inferior Q
        assert initial_deflection_mV(normal.median_mV, lead) < 0.02, lead
    assert statement in infarct.interpretation
    assert not any("infarct" in s for s in normal.interpretation)


def test_some_infarcts_are_electrically_silent():
    phys = make_phys(cad=True, infarct_territory="lateral", akinetic_segments=[5, 6, 11])
    visible = [ecg_parameters(phys, np.random.default_rng(s)).q_amplitude_mV > 0 for s in range(60)]
    assert 10 <= sum(visible) <= 50  # about half of lateral scars show Q waves
    no_scar = ecg_parameters(make_phys(cad=True), np.random.default_rng(0))
    assert no_scar.q_amplitude_mV == 0.0


def limb_qrs_peak_to_peak_mV(ecg) -> np.ndarray:
    q_on = median_index(MEDIAN_QRS_ONSET_MS)
    q_off = median_index(ecg.measurements["q_offset_ms"])
    return np.ptp(ecg.median_mV[:6, q_on:q_off + 1], axis=1)


def test_effusion_gives_low_voltage():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        dry = clean(ecg_parameters(make_phys(), rng), seed)
        wet_params = ecg_parameters(make_phys(effusion_mm=22.0), np.random.default_rng(seed))
        wet = clean(wet_params, seed)
        assert limb_qrs_peak_to_peak_mV(dry).max() > 0.5
        assert limb_qrs_peak_to_peak_mV(wet).max() < 0.5
        assert "Low voltage QRS" in wet.interpretation
        assert wet_params.attenuation_factor < 0.25


def test_pericarditis_raises_st_in_many_leads():
    def st_levels(ecg):
        j60 = median_index(ecg.measurements["q_offset_ms"] + 60.0)
        return ecg.median_mV[:, j60] - pr_baseline(ecg.median_mV)

    for seed in range(3):
        params = ecg_parameters(make_phys(pericardial=True), np.random.default_rng(seed))
        ecg = clean(params, seed)
        st = st_levels(ecg)
        assert int(np.sum(st >= 0.1)) >= 5
        assert st[LEAD["aVR"]] < 0  # reciprocal depression
        assert "ST elevation consider early repolarization, pericarditis, or injury" in ecg.interpretation
        assert params.pr_depression_mV >= 0.04
    assert int(np.sum(np.abs(st_levels(clean(NORMAL))) >= 0.05)) == 0


def test_high_voltage_and_lateral_repolarisation_in_hcm():
    phys = make_phys(hcm=True, lv_mass_g=240.0, lv_wall_thickness_mm=20.0)
    lateral = [LEAD[n] for n in ("I", "aVL", "V5", "V6")]
    sokolov = {"normal": [], "hcm": []}
    lateral_inversions = {"normal": 0, "hcm": 0}
    for seed in range(10):
        for kind, subject in (("normal", make_phys()), ("hcm", phys)):
            ecg = clean(ecg_parameters(subject, np.random.default_rng(seed)))
            sokolov[kind].append(ecg.measurements["sokolov_lvh_index_mV"])
            features = lead_features(ecg.median_mV, ecg.measurements)
            if np.sum(features.t_mV[lateral] <= -0.1) >= 2 and np.sum(features.st_mV[lateral] < 0) >= 2:
                lateral_inversions[kind] += 1
    assert np.mean(sokolov["hcm"]) > 1.6 * np.mean(sokolov["normal"])
    assert lateral_inversions["normal"] == 0
    assert lateral_inversions["hcm"] >= 4  # strain pattern in about 70 %


def spectrum_amplitude(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    spectrum = np.abs(np.fft.rfft(x, axis=-1)) * 2.0 / x.shape[-1]
    return np.fft.rfftfreq(x.shape[-1], 1.0 / fs), spectrum


@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
def test_noise_components_within_stated_bounds(mains_hz):
    params = ecg_parameters(make_phys(), np.random.default_rng(11))
    for seed in range(4):
        noisy = synthesize_ecg(params, np.random.default_rng(seed), mains_hz=mains_hz, noise=True)
        quiet = synthesize_ecg(params, np.random.default_rng(seed), mains_hz=mains_hz, noise=False)
        # The device's median beat is formed from the recorded (noisy) strip: close, not equal.
        np.testing.assert_allclose(noisy.median_mV, quiet.median_mV, atol=0.05)
        noise = (noisy.signal_mV - quiet.signal_mV).astype(np.float64)[[LEAD[n] for n in
                                                                         ("I", "II", "V1", "V2", "V3", "V4", "V5",
                                                                          "V6")]]
        freqs, amplitude = spectrum_amplitude(noise, 500.0)
        slow = freqs < 0.5
        wander = np.fft.irfft(np.where(slow, np.fft.rfft(noise, axis=-1), 0), n=noise.shape[-1], axis=-1)
        assert np.abs(wander).max() <= BASELINE_WANDER_MAX_MV * 1.05
        assert np.abs(wander).max() > 0.005  # present
        mains_bin = int(np.argmin(np.abs(freqs - mains_hz)))
        other_bin = int(np.argmin(np.abs(freqs - (110.0 - mains_hz))))  # 60 Hz for 50 and vice versa
        assert amplitude[:, mains_bin].max() <= MAINS_MAX_MV * 1.1
        band = (freqs > 20) & (freqs < 100) & (np.abs(freqs - mains_hz) > 1)
        emg = np.fft.irfft(np.where(band, np.fft.rfft(noise, axis=-1), 0), n=noise.shape[-1], axis=-1)
        assert 0.0005 < np.sqrt(np.mean(emg ** 2)) <= EMG_RMS_MAX_MV * 1.05
        assert amplitude[:, other_bin].max() < max(amplitude[:, mains_bin].max(), 0.002)


# --------------------------------------------------------------------------- XML writer


def element_paths(root: ET.Element, skip: tuple[str, ...] = ()) -> set[str]:
    paths: set[str] = set()

    def walk(element: ET.Element, prefix: str) -> None:
        path = f"{prefix}/{element.tag}"
        if any(part in path.split("/") for part in skip):
            return
        paths.add(path)
        for child in element:
            walk(child, path)

    walk(root, "")
    return paths


def element_attributes(root: ET.Element) -> dict[str, dict[str, str]]:
    """Attributes of the first element at each path."""
    found: dict[str, dict[str, str]] = {}

    def walk(element: ET.Element, prefix: str) -> None:
        path = f"{prefix}/{element.tag}"
        found.setdefault(path, dict(element.attrib))
        for child in element:
            walk(child, path)

    walk(root, "")
    return found


@pytest.fixture(scope="module")
def simulated():
    phys = make_phys()
    rng = np.random.default_rng(5)
    return phys, synthesize_ecg(ecg_parameters(phys, rng), rng)


def write(tmp_path, ecg, phys, name="ecg.xml", **kwargs):
    path = tmp_path / name
    options = dict(median_mV=ecg.median_mV, measurements=ecg.measurements, interpretation=ecg.interpretation,
                   age_years=phys.age_years, is_male=phys.is_male, height_cm=phys.height_cm,
                   weight_kg=phys.weight_kg, acquired=dt.datetime(2016, 5, 17, 9, 41, 3),
                   beat_times_ms=ecg.beat_times_ms)
    options.update(kwargs)
    write_ukb_xml(path, ecg.signal_mV, ecg.sampling_rate_hz, **options)
    return path


def test_xml_mirrors_the_real_files_structure(tmp_path, simulated, ukb_xml_path):
    phys, ecg = simulated
    path = write(tmp_path, ecg, phys)
    not_written = ("FullDisclosure", "VectorLoops", "MeasurementTable", "CSWeb")
    real_root = ET.parse(ukb_xml_path).getroot()
    ours_root = ET.parse(path).getroot()
    assert element_paths(ours_root) == element_paths(real_root, skip=not_written)
    # Same attributes (units) on every element path the two share (lead names aside).
    real_attrs, our_attrs = element_attributes(real_root), element_attributes(ours_root)
    for element_path in set(real_attrs) & set(our_attrs):
        if not element_path.endswith("WaveformData"):
            assert our_attrs[element_path] == real_attrs[element_path], element_path
    assert our_attrs["/CardiologyXML/RestingECGMeasurements/QTCInterval"] == {"units": "ms"}
    raw = path.read_bytes()
    assert raw.startswith(b'<?xml version="1.0" encoding="ISO-8859-1" ?>\r\n<CardiologyXML>\r\n\t<ObservationType>')
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b'<WaveformData lead="I">\t\t' in raw  # strip samples follow two tabs, as in the real file


def test_xml_samples_round_trip(tmp_path, simulated):
    phys, ecg = simulated
    for resolution_uV in (5.0, 2.5):
        path = write(tmp_path, ecg, phys, name=f"r{resolution_uV}.xml", resolution_uV=resolution_uV)
        root = ET.parse(path).getroot()
        strip = root.find("StripData")
        assert float(strip.find("Resolution").text) == resolution_uV
        assert strip.find("Resolution").get("units") == "uVperLsb"
        assert int(strip.find("ChannelSampleCountTotal").text) == 5000
        leads = [el.get("lead") for el in strip.findall("WaveformData")]
        assert tuple(leads) == STANDARD_LEADS
        read_mV = np.array([[int(v) for v in el.text.split(",")] for el in strip.findall("WaveformData")]) \
            * resolution_uV / 1000.0
        np.testing.assert_allclose(read_mV, ecg.signal_mV, atol=resolution_uV / 2000.0 + 1e-9)
        median = root.find("RestingECGMeasurements/MedianSamples")
        read_median = np.array([[int(v) for v in el.text.split(",")] for el in median.findall("WaveformData")]) \
            * resolution_uV / 1000.0
        assert read_median.shape == (12, 600)
        np.testing.assert_allclose(read_median, ecg.median_mV, atol=resolution_uV / 2000.0 + 1e-9)
        assert median.find("LastValid").text == "599"


def test_xml_fields_and_text(tmp_path, simulated):
    phys, ecg = simulated
    measurements = dict(ecg.measurements, pq_interval_ms=None)
    statements = ["Normal sinus rhythm", "Bündel <check> & more", "Normal ECG"]
    path = write(tmp_path, ecg, phys, measurements=measurements, interpretation=statements, is_male=False)
    root = ET.parse(path).getroot()
    rm = root.find("RestingECGMeasurements")
    assert rm.find("VentricularRate").text == str(int(ecg.measurements["ventricular_rate_bpm"]))
    assert rm.find("VentricularRate").get("units") == "BPM"
    assert rm.find("PQInterval").text is None  # empty, as the device leaves unknowns
    assert rm.find("QRSDuration").text == str(int(ecg.measurements["qrs_duration_ms"]))
    assert rm.find("QOnset").text == str(int(ecg.measurements["q_onset_ms"]))
    assert [el.text for el in root.findall("Interpretation/Diagnosis/DiagnosisText")] == statements
    assert [el.text for el in root.findall("Interpretation/Conclusion/ConclusionText")] == statements
    info = root.find("PatientInfo")
    assert info.find("Gender").text == "FEMALE"
    assert info.find("Age").text == "55" and info.find("Age").get("units") == "YEARS"
    assert info.find("Height").text == "176" and info.find("Weight").text == "80.0"
    assert root.find("ObservationDateTime/Year").text == "2016"
    assert root.find("ObservationDateTime/Second").text == "3"
    times = [float(el.text) for el in root.findall("StripData/ArrhythmiaResults/Time")]
    assert times == pytest.approx(ecg.beat_times_ms.tolist())
    assert "Bündel".encode("iso-8859-1") in path.read_bytes()


def test_xml_is_deterministic_and_readable_by_the_project_reader(tmp_path, simulated):
    from cardiacnets.io.ukb_xml import read_ukb_xml

    phys, ecg = simulated
    a = write(tmp_path, ecg, phys, name="a.xml")
    b = write(tmp_path, ecg, phys, name="b.xml")
    assert a.read_bytes() == b.read_bytes()
    record = read_ukb_xml(a)
    np.testing.assert_allclose(record.signal_mV, ecg.signal_mV, atol=0.0025 + 1e-6)
    np.testing.assert_allclose(record.median_mV, ecg.median_mV, atol=0.0025 + 1e-6)
    assert record.interpretation == ecg.interpretation
    assert record.measurements["qt_interval_ms"] == ecg.measurements["qt_interval_ms"]
    assert record.metadata["age_years"] == 55


def test_xml_without_optional_parts(tmp_path, simulated):
    _, ecg = simulated
    path = tmp_path / "bare.xml"
    write_ukb_xml(path, ecg.signal_mV, 500.0, mains_filter_hz=60.0)
    root = ET.parse(path).getroot()
    assert root.find("RestingECGMeasurements/MedianSamples") is None
    assert root.find("StripData/ArrhythmiaResults") is None
    assert root.find("PatientInfo/Gender").text is None
    assert root.find("FilterSetting/Filter60Hz").text == "Yes"
    assert root.find("FilterSetting/Filter50Hz").text == "No"


@pytest.mark.parametrize("change, problem", [
    (dict(signal_mV=np.zeros((8, 100))), "shape (12, samples)"),
    (dict(signal_mV=np.full((12, 100), np.nan)), "non-finite"),
    (dict(median_mV=np.zeros((12,))), "median_mV must have shape"),
    (dict(measurements={"heart_rate": 60}), "unknown measurement keys heart_rate"),
    (dict(resolution_uV=0.0), "resolution_uV must be a positive number"),
    (dict(interpretation=["Sinus rhythm \u2192 fine"]), "ISO-8859-1"),
    (dict(mains_filter_hz=55.0), "mains_filter_hz"),
])
def test_xml_writer_errors_name_file_and_problem(tmp_path, change, problem):
    path = tmp_path / "bad.xml"
    args = dict(signal_mV=np.zeros((12, 100)), sampling_rate_hz=500.0)
    args.update(change)
    with pytest.raises(InputError) as err:
        write_ukb_xml(path, **args)
    assert str(path) in str(err.value) and problem in str(err.value)
    assert not path.exists()


def test_xml_writer_missing_folder(tmp_path):
    path = tmp_path / "nowhere" / "x.xml"
    with pytest.raises(InputError, match="does not exist") as err:
        write_ukb_xml(path, np.zeros((12, 10)), 500.0)
    assert str(path) in str(err.value)


def test_end_to_end_from_sampled_physiology(tmp_path):
    from cardiacnets.simulate.physiology import sample_physiology

    for index in range(6):
        rng = np.random.default_rng([2024, index])
        phys = sample_physiology(1_000_000 + index, rng)
        params = ecg_parameters(phys, rng)
        ecg = synthesize_ecg(params, rng)
        assert np.all(np.isfinite(ecg.signal_mV)) and np.abs(ecg.signal_mV).max() < 10.0
        assert ecg.measurements["ventricular_rate_bpm"] == pytest.approx(phys.heart_rate_bpm, abs=6)
        path = tmp_path / f"{phys.eid}_20205_2_0.xml"
        write_ukb_xml(path, ecg.signal_mV, ecg.sampling_rate_hz, median_mV=ecg.median_mV,
                      measurements=ecg.measurements, interpretation=ecg.interpretation,
                      age_years=phys.age_years, is_male=phys.is_male, height_cm=phys.height_cm,
                      weight_kg=phys.weight_kg, beat_times_ms=ecg.beat_times_ms)
        root = ET.parse(path).getroot()
        assert root.find("PatientInfo/Gender").text == ("MALE" if phys.is_male else "FEMALE")
        assert len(root.findall("StripData/WaveformData")) == 12
