"""UK Biobank field ids used by cardiacnets, with names and units.

Tabular exports name columns ``field-instance.array`` (``24100-2.0`` is field
24100 at the first imaging visit, instance 2). The CMR phenotypes 24100–24181
come from the UK Biobank cardiac imaging pipeline (Bai et al., JCMR 2018):
ventricular and atrial volumes and function, aortic areas, regional wall
thickness and strain by AHA segment. Short names are what the rest of the
package uses (`lvedv_ml`, `lvef_pct`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UKBField:
    """One UK Biobank data field: id, short name, unit and description."""

    field_id: int
    name: str
    unit: str
    description: str


def _aha(first_id: int, prefix: str, unit: str, what: str, segments: int = 16) -> list[UKBField]:
    fields = [
        UKBField(first_id + i, f"{prefix}_seg{i + 1}", unit, f"{what}, AHA segment {i + 1}") for i in range(segments)
    ]
    fields.append(UKBField(first_id + segments, f"{prefix}_global", unit, f"{what}, global"))
    return fields


CMR_FIELDS: tuple[UKBField, ...] = tuple(
    [
        UKBField(24100, "lvedv_ml", "ml", "LV end-diastolic volume"),
        UKBField(24101, "lvesv_ml", "ml", "LV end-systolic volume"),
        UKBField(24102, "lvsv_ml", "ml", "LV stroke volume"),
        UKBField(24103, "lvef_pct", "%", "LV ejection fraction"),
        UKBField(24104, "lvco_l_min", "L/min", "LV cardiac output"),
        UKBField(24105, "lvm_g", "g", "LV myocardial mass"),
        UKBField(24106, "rvedv_ml", "ml", "RV end-diastolic volume"),
        UKBField(24107, "rvesv_ml", "ml", "RV end-systolic volume"),
        UKBField(24108, "rvsv_ml", "ml", "RV stroke volume"),
        UKBField(24109, "rvef_pct", "%", "RV ejection fraction"),
        UKBField(24110, "lav_max_ml", "ml", "LA maximum volume"),
        UKBField(24111, "lav_min_ml", "ml", "LA minimum volume"),
        UKBField(24112, "lasv_ml", "ml", "LA stroke volume"),
        UKBField(24113, "laef_pct", "%", "LA ejection fraction"),
        UKBField(24114, "rav_max_ml", "ml", "RA maximum volume"),
        UKBField(24115, "rav_min_ml", "ml", "RA minimum volume"),
        UKBField(24116, "rasv_ml", "ml", "RA stroke volume"),
        UKBField(24117, "raef_pct", "%", "RA ejection fraction"),
        UKBField(24118, "aao_max_area_mm2", "mm2", "Ascending aorta maximum area"),
        UKBField(24119, "aao_min_area_mm2", "mm2", "Ascending aorta minimum area"),
        UKBField(24120, "aao_distensibility", "10-3 mmHg-1", "Ascending aorta distensibility"),
        UKBField(24121, "dao_max_area_mm2", "mm2", "Descending aorta maximum area"),
        UKBField(24122, "dao_min_area_mm2", "mm2", "Descending aorta minimum area"),
        UKBField(24123, "dao_distensibility", "10-3 mmHg-1", "Descending aorta distensibility"),
    ]
    + _aha(24124, "wt", "mm", "LV mean myocardial wall thickness")  # 24124-24140
    + _aha(24141, "ecc", "%", "LV circumferential strain")  # 24141-24157
    + _aha(24158, "err", "%", "LV radial strain")  # 24158-24174
    + _aha(24175, "ell", "%", "LV longitudinal strain", segments=6)  # 24175-24181
)

CMR_FIELD_BY_ID: dict[int, UKBField] = {f.field_id: f for f in CMR_FIELDS}
CMR_FIELD_BY_NAME: dict[str, UKBField] = {f.name: f for f in CMR_FIELDS}

# Demographic and diagnosis fields read from tabular exports.
SEX_FIELD = 31  # 0 female, 1 male
YEAR_OF_BIRTH_FIELD = 34
AGE_AT_VISIT_FIELD = 21003
HEIGHT_FIELD = 50  # standing height, cm
WEIGHT_FIELD = 21002  # kg
BMI_FIELD = 21001  # kg/m2
ICD10_FIELD = 41270  # diagnoses, ICD-10 codes without the dot (I420)
ECG_XML_FIELD = 20205  # resting 12-lead ECG (CardioSoft XML), bulk
CMR_LAX_DICOM_FIELD = 20208  # long-axis cine DICOM, bulk zip
CMR_SAX_DICOM_FIELD = 20209  # short-axis cine DICOM, bulk zip

DEMOGRAPHIC_FIELDS: dict[str, int] = {
    "sex_male": SEX_FIELD,
    "age_years": AGE_AT_VISIT_FIELD,
    "height_cm": HEIGHT_FIELD,
    "weight_kg": WEIGHT_FIELD,
    "bmi": BMI_FIELD,
}

# The imaging visit: CMR and the imaging-visit ECG are instance 2.
IMAGING_INSTANCE = 2


def column(field_id: int, instance: int = IMAGING_INSTANCE, array: int = 0) -> str:
    """Column name of a field in a UK Biobank tabular export (``24100-2.0``)."""
    return f"{field_id}-{instance}.{array}"
