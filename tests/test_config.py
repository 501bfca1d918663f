import pytest

from hovit_nas.config import (ArchConfig, StageConfig, load_run_config, run_config_from_dict, save_run_config,
                              to_dict)
from hovit_nas.errors import ConfigError
from hovit_nas.models import PRESETS, hovit_b


def _cfg(**stage):
    s = dict(dim=64, heads=4, blocks=2, keep=None, downsample="none")
    s.update(stage)
    return ArchConfig(stages=[StageConfig(**s)], img_size=64)


@pytest.mark.parametrize("stage, field", [
    (dict(keep=3), "stages[0].keep"),
    (dict(heads=3), "stages[0].heads"),
    (dict(downsample="maxpool"), "stages[0].downsample"),
    (dict(dim=-8), "stages[0].dim"),
    (dict(blocks=0), "stages[0].blocks"),
])
def test_invalid_stage_names_field(stage, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        _cfg(**stage).validate()


def test_negative_head_width_names_field():
    cfg = _cfg()
    cfg.head_width = -1
    with pytest.raises(ConfigError, match="head_width"):
        cfg.validate()


def test_dim_change_without_downsampling_is_rejected():
    cfg = ArchConfig(stages=[StageConfig(64, 4, 1), StageConfig(96, 4, 1, None, "none")], img_size=64)
    with pytest.raises(ConfigError, match=r"stages\[1\]\.dim"):
        cfg.validate()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_yaml(tmp_path, name):
    cfg = PRESETS[name]()
    path = save_run_config(cfg, tmp_path / f"{name}.yaml")
    assert to_dict(load_run_config(path)) == to_dict(cfg)


def test_unknown_key_and_wrong_type_name_file_and_field(tmp_path):
    d = to_dict(hovit_b())
    d["model"]["stages"][1]["keepp"] = 2
    with pytest.raises(ConfigError, match=r"x\.yaml: .*stages\[1\].*unknown key 'keepp'"):
        run_config_from_dict(d, "x.yaml")
    d = to_dict(hovit_b())
    d["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number"):
        run_config_from_dict(d, "x.yaml")


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  stages: [\n    - dim: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: malformed YAML \(line"):
        load_run_config(p)


def test_studies_preset_files_match_functions():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "studies"
    for name in ("hovit_b", "hovit_s", "hovit_b_attn_down"):
        assert to_dict(load_run_config(root / f"{name}.yaml")) == to_dict(PRESETS[name]())
