import copy

import optuna
import pytest
import yaml

from conftest import ROOT
from hovit_nas.config import load_run_config, to_dict
from hovit_nas.errors import ConfigError
from hovit_nas.models import hovit_b
from hovit_nas.space import config_yaml_for_trial, load_space, space_from_dict

BASE = yaml.safe_load((ROOT / "search_spaces" / "hovit.yaml").read_text())


def _bad(mutate, match):
    d = copy.deepcopy(BASE)
    mutate(d)
    with pytest.raises(ConfigError, match=match):
        space_from_dict(d, "s.yaml")


@pytest.mark.parametrize("name", ["hovit", "hovit-cpu"])
def test_shipped_spaces_load_and_contain_hovit_b(name):
    sp = load_space(name)
    fp = sp.fixed_point_params()
    assert fp["blocks_0"] == "4:2" and fp["blocks_1"] == "4:2" and fp["downsample_1"] == "conv"
    cfg = sp.suggest(optuna.trial.FixedTrial(fp))
    assert to_dict(cfg.model) == to_dict(hovit_b(img_size=sp.base.model.img_size,
                                                 num_classes=sp.base.model.num_classes).model)


def test_validation_errors_name_file_and_field():
    _bad(lambda d: d.update(colour="red"), r"s\.yaml: unknown key 'colour'")
    _bad(lambda d: d["params"].update(depth={"type": "int", "low": 1, "high": 2}), r"params\.depth: unknown parameter")
    _bad(lambda d: d["params"]["downsample"].update(choices=[]), r"params\.downsample: choices must be a non-empty")
    _bad(lambda d: d["params"]["head_width"].update(low=900), r"params\.head_width: impossible range low=900 > high=768")
    _bad(lambda d: d["params"]["tau_end"].update(low=-1.0), r"params\.tau_end: log scale needs low > 0")
    _bad(lambda d: d["params"]["blocks"].update(choices=["2:3"]), r"params\.blocks: value '2:3' cannot build")
    _bad(lambda d: d["params"]["downsample"].update(choices=["maxpool"]), r"params\.downsample: value 'maxpool' cannot build")
    _bad(lambda d: d["params"]["head_width"].update(bogus=1), r"params\.head_width: unknown key 'bogus'")
    _bad(lambda d: d["base"]["model"]["stages"][0].update(heads=5), r"s\.yaml: base: model\.stages\[0\]\.heads")
    _bad(lambda d: d["params"]["blocks"].update(choices=["1:1", "2:2"]), r"fixed_point hovit_b: blocks_0='4:2' is not among")


def test_malformed_yaml_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nparams: {blocks: [1, 2\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: malformed YAML \(line"):
        load_space(str(p))


def test_suggestion_config_round_trip(tmp_path):
    sp = load_space("hovit")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen_pruned = seen_dense = False
    for _ in range(25):
        trial = study.ask()
        cfg = sp.suggest(trial)
        assert sp.params_for(cfg) == trial.params  # config -> params inverts params -> config
        seen_pruned |= cfg.model.pruned
        seen_dense |= not cfg.model.pruned
        if not cfg.model.pruned:
            assert not {"tau_start", "tau_end", "lora_rank"} & set(trial.params)  # conditional
        path = tmp_path / f"t{trial.number}.yaml"
        path.write_text(config_yaml_for_trial(sp, trial.params))
        assert to_dict(load_run_config(path)) == to_dict(sp.suggest(optuna.trial.FixedTrial(trial.params)))
        study.tell(trial, [0.5, 1.0])
    assert seen_pruned and seen_dense


def test_builtin_budget_applies_only_overrides():
    sp = load_space("hovit")
    demo = sp.with_builtin_budget()
    assert demo.base.model.img_size == 64 and demo.trials == 10 and demo.base.train.max_steps_per_epoch == 20
    assert sp.base.model.img_size == 224 and demo.base.train.lr == 0.002 and sp.base.train.lr == 0.001
