"""Typed YAML configs: unknown keys, types, overrides, round trip."""

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from cardiacnets.cmr.config import CMRConfig
from cardiacnets.config import apply_overrides, from_dict, load_config, save_config, to_dict
from cardiacnets.data.preprocess import PreprocessConfig
from cardiacnets.ecg.config import ECGConfig
from cardiacnets.errors import ConfigError


@dataclass
class Inner:
    rate: float = 1.0
    name: str = "a"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 3
    mode: Literal["x", "y"] = "x"
    band: tuple[float, float] | None = (0.5, 40.0)
    tags: list[str] = field(default_factory=list)


def test_from_dict_nested_and_conversion():
    cfg = from_dict(Outer, {"inner": {"rate": 2}, "steps": 5, "band": [1, 2], "tags": ["p"]})
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    assert cfg.steps == 5 and cfg.band == (1.0, 2.0) and cfg.tags == ["p"]
    assert from_dict(Outer, {"band": None}).band is None
    # PyYAML reads exponent literals without a dot (1e-5) as strings; float fields take them.
    rate = from_dict(Outer, {"inner": yaml.safe_load("{rate: 1e-5}")}).inner.rate
    assert rate == 1e-5 and isinstance(rate, float)
    assert from_dict(Inner, {"rate": "-2.5E+3"}).rate == -2500.0


@pytest.mark.parametrize(
    "data, message",
    [
        ({"stepz": 1}, "unknown config key 'stepz'"),
        ({"inner": {"rat": 1}}, "unknown config key 'inner.rat'"),
        ({"steps": "many"}, "steps: expected an integer"),
        ({"steps": 1.5}, "steps: expected an integer"),
        ({"mode": "z"}, "mode: 'z' is not one of"),
        ({"band": [1, 2, 3]}, "band"),
        ({"inner": 3}, "inner: expected a mapping"),
        ({"inner": {"rate": "fast"}}, "inner.rate: expected a number"),
        ({"inner": {"rate": "1e"}}, "inner.rate: expected a number"),
    ],
)
def test_from_dict_rejects(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_overrides_parse_yaml_values():
    data = apply_overrides({"inner": {"rate": 1.0}}, ["inner.rate=3.5", "steps=7", "band=[1, 5]", "inner.name=hello"])
    assert data == {"inner": {"rate": 3.5, "name": "hello"}, "steps": 7, "band": [1, 5]}
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["steps"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"steps": 1}, ["steps.x=1"])


def test_load_config_file_overrides_and_save_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  rate: 4\nsteps: 2\n")
    cfg = load_config(Outer, path, ["steps=9"])
    assert cfg.inner.rate == 4.0 and cfg.steps == 9
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert load_config(Outer, out) == cfg
    assert yaml.safe_load(out.read_text())["band"] == [0.5, 40.0]


def test_load_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Outer, bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("inner:\n  rte: 1\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'inner.rte'"):
        load_config(Outer, typo)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_component_configs_validate():
    assert ECGConfig().n_samples == 5000
    with pytest.raises(ConfigError, match="Nyquist"):
        from_dict(ECGConfig, {"sampling_rate_hz": 100, "bandpass_hz": [0.5, 100]})
    with pytest.raises(ConfigError, match="unknown view"):
        from_dict(CMRConfig, {"views": ["sa", "axial"]})
    assert CMRConfig(sa_slices="basal_mid_apical").n_slices_out == 3
    with pytest.raises(ConfigError, match="icd10"):
        from_dict(PreprocessConfig, {"icd10": {"x": ["not a code"]}})
    cfg = load_config(PreprocessConfig, None, ["ecg.notch_hz=60", "cmr.n_frames=16", "split.seed=3"])
    assert cfg.ecg.notch_hz == 60.0 and cfg.cmr.n_frames == 16 and cfg.split.seed == 3
    assert from_dict(PreprocessConfig, to_dict(cfg)) == cfg
