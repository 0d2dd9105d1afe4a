"""Paired ECG-CMR simulator: UK Biobank-style files with known ground truth.

No public data set pairs ECG with cardiac MRI, so cardiacnets simulates both
from one latent physiology per subject (`sample_physiology`): demographics,
heart rate, ventricular volumes, ejection fractions and LV mass from UK Biobank
reference ranges (Petersen et al., JCMR 2017), and enriched disease states
(DCM, HCM, old infarct, heart failure, pulmonary hypertension, pericarditis /
effusion, myocarditis) that change them consistently.

* CMR: a biventricular geometry (`heart_model`) whose per-frame scales are
  solved so that Simpson's sums over the short-axis slices reproduce the volume
  curves, rendered (`cmr_model`) as bSSFP-like short-axis and 4-chamber cines
  with a segmentation; the indices measured on that segmentation match the
  latent targets.
* ECG (`ecg_model`, with the `ecg_*` modules it assembles): a dipole
  (vectorcardiogram) model projected to 12 leads with the Dower transform,
  written as GE CardioSoft XML (`ukb_xml_writer`).

What the ECG determines, and how strongly: the QRS dipole grows with LV mass
but is scaled by a hidden per-subject thorax factor and attenuated by body
habitus and effusion, so mass and wall thickness are only partly recoverable;
QRS width grows with LV size (DCM, heart failure), so volumes are moderately
recoverable; ejection fraction has no direct ECG correlate except through
disease signatures (Q waves of an infarct, LBBB, tachycardia); RV dilation in
pulmonary hypertension shifts the axis rightward and inverts right precordial T
waves. `measure_ceiling` quantifies this per index as the cross-validated R² of
the true ECG latents (`ceiling.json` beside every cohort). On 200 default
subjects (seed 0, enriched prevalences):

    index        R² (ECG latents)   R² (+ age, sex, height, weight)
    LV mass            0.73               0.75
    wall thickness     0.61               0.63
    LVEDV              0.36               0.62
    LVESV              0.43               0.54
    LVEF               0.42               0.42
    LVSV               0.10               0.37
    RVEDV              0.45               0.69
    RVEF               0.35               0.29

`write_cohort` writes the cohort tree (``cardiacnets synth``).
"""

from cardiacnets.simulate.ceiling import measure_ceiling
from cardiacnets.simulate.cohort import CohortSummary, write_cohort
from cardiacnets.simulate.physiology import DiseasePrevalence, Physiology, SynthConfig, sample_physiology

__all__ = [
    "CohortSummary",
    "DiseasePrevalence",
    "Physiology",
    "SynthConfig",
    "measure_ceiling",
    "sample_physiology",
    "write_cohort",
]
