"""The deployment target recorded with a study (issue 22, item 3), on real SQLite studies."""
import optuna
import pytest

from hovit_nas import target as tg
from hovit_nas.errors import HovitError
from hovit_nas.target import DeploymentTarget


def _study(tmp_path, **attrs):
    s = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}",
                            directions=["maximize", "minimize"])
    for k, v in attrs.items():
        s.set_user_attr(k, v)
    return s


def test_a_target_is_named_and_round_trips():
    cpu = DeploymentTarget.of("cpu", "openvino", 2, 1, 224)
    assert cpu.name == "cpu/openvino/fp32, 2 threads, batch 1, 224 px"
    gpu = DeploymentTarget.of("cuda:1", "torch", 16, 32, 224)  # which GPU, and CPU threads, are not part of it
    assert gpu == DeploymentTarget("cuda", "torch", "fp32", None, 32, 224)
    assert gpu.name == "cuda/torch/fp32, batch 32, 224 px"
    assert DeploymentTarget.from_dict(cpu.to_dict()) == cpu and cpu.to_dict()["name"] == cpu.name


def test_a_study_records_its_target_once_and_refuses_another(tmp_path):
    study = _study(tmp_path)
    a = DeploymentTarget.of("cpu", "onnxruntime", 1, 1, 64)
    tg.ensure(study, a)
    tg.ensure(study, a)  # the same target: a resume
    assert study.user_attrs[tg.TARGET_ATTR]["name"] == "cpu/onnxruntime/fp32, 1 thread, batch 1, 64 px"
    b = DeploymentTarget.of("cpu", "onnxruntime", 2, 1, 64)
    with pytest.raises(HovitError) as e:
        tg.ensure(study, b)
    assert str(e.value) == ("study 's' was created for deployment target cpu/onnxruntime/fp32, 1 thread, batch 1, "
                            "64 px, not cpu/onnxruntime/fp32, 2 threads, batch 1, 64 px (threads 1 -> 2); run it the "
                            "same way or use `study` NEW_NAME")
    assert tg.recorded(study) == a  # the refused target was not written


def test_an_older_study_is_labelled_from_its_attributes(tmp_path):
    study = _study(tmp_path, latency_runtime="torch", latency_batch=1, img_size=64)
    assert tg.recorded(study) is None and tg.label(study) == "torch, batch 1, 64 px"


def test_baselines_are_not_guessed_where_this_machine_cannot_run_the_target(tmp_path):
    import torch

    from hovit_nas.bench import baselines_on_target

    legacy = _study(tmp_path)
    assert baselines_on_target(legacy) == {"rows": [], "note": "not timed: the study records no deployment target "
                                                               "(run it once with this hovit-nas to record it)"}
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    gpu = optuna.create_study(study_name="g", storage=f"sqlite:///{tmp_path / 's.db'}",
                              directions=["maximize", "minimize"])
    tg.ensure(gpu, DeploymentTarget.of("cuda", "torch", 1, 32, 224))
    out = baselines_on_target(gpu)
    assert out["rows"] == [] and out["note"] == ("not timed: the study's target is cuda/torch/fp32, batch 32, 224 px "
                                                 "and this machine has no GPU")
