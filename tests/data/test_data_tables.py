"""ICD-10 labels, patient-level splits, UK Biobank tabular exports, field ids."""

import pandas as pd
import pytest

from cardiacnets.data.labels import DEFAULT_ICD10_MAP, ICD10Mapper, normalize_icd10
from cardiacnets.data.splits import SplitConfig, assign_split, ptbxl_split
from cardiacnets.data.tabular import read_ukb_tabular
from cardiacnets.data.ukb_fields import CMR_FIELD_BY_ID, CMR_FIELD_BY_NAME, CMR_FIELDS, column
from cardiacnets.errors import InputError


def test_icd10_default_mapping():
    m = ICD10Mapper()
    assert normalize_icd10(" i25.5") == "I255"
    assert m(["I420"])["cardiomyopathy"] and not m(["I420"])["heart_failure"]
    labels = m(["I255"])  # ischaemic cardiomyopathy: both cardiomyopathy and CAD
    assert labels["cardiomyopathy"] and labels["coronary_artery_disease"]
    assert not m(["I251"])["cardiomyopathy"] and m(["I251"])["coronary_artery_disease"]
    assert m(["I200"])["coronary_artery_disease"] and not m(["I260"])["coronary_artery_disease"]
    assert m(["I319"])["pericardial_disease"] and not m(["I33"])["pericardial_disease"]
    assert m(["I409", ""])["myocarditis"] and m(["I411"])["myocarditis"]
    assert m(["I270"])["pulmonary_hypertension"]
    assert not any(m([]).values()) and not any(m([float("nan")]).values())
    assert set(m.labels) == set(DEFAULT_ICD10_MAP)


def test_icd10_custom_and_bad_mapping():
    m = ICD10Mapper({"af": ["I48"], "valve": ["I34-I35"]})
    assert m(["I480"]) == {"af": True, "valve": False}
    assert m(["I350"])["valve"]
    for bad in (["I25-J30"], ["hello"], ["I30-I20"]):
        with pytest.raises(ValueError):
            ICD10Mapper({"x": bad})


def test_splits_are_stable_patient_level_and_proportional():
    cfg = SplitConfig(val_fraction=0.2, test_fraction=0.1, seed=1)
    splits = [assign_split(i, cfg) for i in range(5000)]
    assert [assign_split(i, cfg) for i in range(50)] == splits[:50]  # pure function of the id
    frac = pd.Series(splits).value_counts(normalize=True)
    assert abs(frac["test"] - 0.1) < 0.02 and abs(frac["val"] - 0.2) < 0.02
    assert assign_split(7, SplitConfig(seed=2)) in ("train", "val", "test")
    assert [ptbxl_split(f) for f in (1, 8, 9, 10)] == ["train", "train", "val", "test"]
    with pytest.raises(ValueError):
        ptbxl_split(11)


def test_ukb_field_table():
    assert CMR_FIELD_BY_ID[24100].name == "lvedv_ml" and CMR_FIELD_BY_ID[24103].unit == "%"
    assert CMR_FIELD_BY_ID[24105].name == "lvm_g" and CMR_FIELD_BY_ID[24109].name == "rvef_pct"
    ids = [f.field_id for f in CMR_FIELDS]
    assert ids == list(range(24100, 24182))  # 24100-24181, each once
    assert CMR_FIELD_BY_ID[24140].name == "wt_global" and CMR_FIELD_BY_ID[24181].name == "ell_global"
    assert CMR_FIELD_BY_NAME["rvedv_ml"].field_id == 24106
    assert column(24100) == "24100-2.0" and column(41270, 0, 3) == "41270-0.3"


def test_read_ukb_tabular_merges_and_names(tmp_path):
    a = tmp_path / "main.csv"
    a.write_text(
        "eid,31-0.0,21003-2.0,21003-0.0,24100-2.0,24100-3.0,24103-2.0,41270-0.0,41270-0.1,20003-0.0\n"
        "1000001,1,61,50,150.5,149,55.5,I420,I500,123\n"
        "1000002,0,70,60,,130,62,,,\n"
    )
    b = tmp_path / "extra.csv"
    b.write_text("eid,24106-2.0,21001-2.0\n1000002,160,27.5\n1000003,140,22\n")
    df = read_ukb_tabular([a, b])
    assert list(df.index) == [1000001, 1000002, 1000003]
    assert df.loc[1000001, "age_years"] == 61  # instance 2, not 0
    assert df.loc[1000001, "lvedv_ml"] == 150.5 and pd.isna(df.loc[1000002, "lvedv_ml"])
    assert df.loc[1000002, "rvedv_ml"] == 160 and df.loc[1000003, "bmi"] == 22
    assert df.loc[1000001, "icd10"] == "I420;I500"
    assert df.loc[1000001, "label_cardiomyopathy"] and df.loc[1000001, "label_heart_failure"]
    assert not df.loc[1000002, "label_heart_failure"]
    assert df.loc[1000001, "sex_male"] == 1
    assert "20003-0.0" not in df.columns


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,31-0.0\n1,1\n", "no 'eid' column"),
        ("eid,31-0.0\nabc,1\n", "eid 'abc' is not an integer"),
        ("eid,31-0.0\n5,1\n5,0\n", "eid 5 appears twice"),
        ("", "cannot read tabular CSV"),
    ],
)
def test_read_ukb_tabular_errors(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        read_ukb_tabular([path])
    assert "t.csv" in str(info.value)
