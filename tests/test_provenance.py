"""Issue 29, kind 1: every artefact knows what it was made from, and every consumer checks it.
The handed case (numeric class folders) and others of its kind: classes matched by name, a
re-split that would score a model on its own training images, a supernet of other splits, a
latency profile of another space, and artefacts from before provenance."""
import json
import shutil

import numpy as np
import pytest

from conftest import SHARED, make_class_folder, run_cli
from hovit_nas import provenance as pv
from hovit_nas.config import DataOptions, DataSpec
from hovit_nas.data import load_data

TRAIN = ["train", "--config", "hovit_s", "--img-size", "32", "--epochs-dense", "1", "--epochs-prune", "1",
         "--max-steps", "2", "--threads", "1"]


def _train(tmp_path, data, out, *extra):
    r = run_cli(*TRAIN, "--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *extra,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.mark.slow
def test_numeric_class_folders_in_another_sort_order_are_refused_by_name(tmp_path):
    """The handed case: trained on folders 0..10, evaluated on the same tiles in 00..10. The
    class names travel in result.json, the safetensors and the ONNX metadata; eval names them,
    and refuses the zero-padded names in one line (exit 2) instead of scoring 9 of 11 classes as
    others."""
    case = SHARED.parent / "cases" / "numeric-class-order" / "data"
    if not case.is_dir():
        pytest.skip(f"shared case absent: {case}")
    run = _train(tmp_path, case, tmp_path / "r-num")
    order = ["0", "1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert json.loads((run / "result.json").read_text())["classes"] == order
    r = run_cli("export", str(run), "--format", "onnx", cwd=tmp_path)
    assert r.returncode == 0 and "classes (output order): 0, 1, 10, 2" in r.stdout, r.stderr[-2000:]
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert json.loads(meta["classes"]) == order
    prov = pv.Provenance.from_json(meta["provenance"])
    assert prov.data.classes == tuple(order) and prov.img_size == 32 and prov.data.rule["seed"] == 0
    padded = tmp_path / "num-padded"
    for k in range(11):
        shutil.copytree(case / str(k), padded / f"{k:02d}")
    for model in (run, run / "model.onnx"):
        r = run_cli("eval", str(model), "--data", str(padded), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
        assert r.returncode == 2, r.stdout
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith("error: model ") and "trained on classes [0, 1, 10, 2, 3" in line
        assert "the data has [00, 01, 02" in line and "zero-padded" in line
    r = run_cli("eval", str(run), "--data", str(case), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("classes: 0, 1, 10, 2, 3"), r.stderr[-2000:]


def test_the_same_names_in_another_order_are_mapped_by_name(tmp_path):
    """A model whose outputs are [TUM, ADI, LYM] scored on folders ADI, LYM, TUM: each output is
    read as the class it names, and eval says so."""
    import torch

    from hovit_nas.deploy import evaluate_exported
    from dataclasses import replace

    from hovit_nas.models import create_hovit, export, save_exported

    data = make_class_folder(tmp_path / "crc", per_class=8)
    from hovit_nas.models import hovit_s

    cfg = hovit_s(img_size=32, num_classes=3)
    torch.manual_seed(0)
    model = export(create_hovit(cfg))
    splits = load_data(DataSpec.of(str(data), 32, 0, DataOptions(augment=False, cache_dir=str(tmp_path / "c"))))
    made = pv.data_record(splits, 32, pv.data_rule(DataSpec.of(str(data), 32, 0)))
    theirs = replace(made, classes=("TUM", "ADI", "LYM"))
    save_exported(model, tmp_path / "m.safetensors", provenance=pv.Provenance("model", theirs, img_size=32))
    ev = evaluate_exported(tmp_path / "m.safetensors", str(data), DataOptions(cache_dir=str(tmp_path / "c")), "cpu")
    assert ev.mapped == [1, 2, 0] and ev.classes == ["ADI", "LYM", "TUM"]
    with torch.no_grad():
        x = torch.stack([splits.val[i][0] for i in range(len(splits.val))])
        ref = model(x)[:, [1, 2, 0]].argmax(1).numpy()
    assert ev.metrics["val"]["top1"] == pytest.approx(float(np.mean(ref == splits.val.labels)))


@pytest.mark.slow
def test_a_model_is_scored_on_its_own_split_and_never_on_its_training_images(tmp_path):
    """Trained with split seed 3: eval re-splits the data with seed 3 (scores on its own held-out
    images, as the run reported). The same tiles with more of them (another split) put the model's
    training images in val and test: refused in one line naming both."""
    data = make_class_folder(tmp_path / "crc", per_class=12)
    run = _train(tmp_path, data, tmp_path / "run", "--seed", "3")
    rep = json.loads((run / "result.json").read_text())
    r = run_cli("eval", str(run), "--data", str(data), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    scores = json.loads(r.stdout.strip().splitlines()[-1])
    assert scores["test"]["top1"] == pytest.approx(rep["test"]["top1"])  # its own test split, as reported
    more = tmp_path / "crc-more"  # the same 12 per class, and 18 more: another split of mostly the same images
    shutil.copytree(data, more)
    extra = make_class_folder(tmp_path / "extra", per_class=18, seed=5)
    for f in extra.rglob("*.*"):
        shutil.copy(f, more / f.parent.name / ("x" + f.name))
    r = run_cli("eval", str(run), "--data", str(more), "--cache-dir", str(tmp_path / "cache2"), cwd=tmp_path)
    assert r.returncode == 2 and "images model" in r.stderr and "was trained on" in r.stderr, r.stderr[-1500:]


def test_a_legacy_model_loads_with_a_warning(tmp_path, caplog):
    import torch

    from hovit_nas.deploy import evaluate_exported
    from hovit_nas.models import create_hovit, export, hovit_s, save_exported

    data = make_class_folder(tmp_path / "crc")
    torch.manual_seed(0)
    save_exported(export(create_hovit(hovit_s(img_size=32, num_classes=3))), tmp_path / "old.safetensors")
    with caplog.at_level("WARNING"):
        ev = evaluate_exported(tmp_path / "old.safetensors", str(data), DataOptions(cache_dir=str(tmp_path / "c")),
                               "cpu")
    assert ev.provenance is None and "carries no provenance" in caplog.text


def test_a_latency_profile_of_another_space_is_refused(tmp_path):
    """search --predictor: a profile measured over hovit-wide-cpu screening a hovit-cpu study."""
    import optuna

    from hovit_nas import study as st
    from hovit_nas.predictor import make_screen
    from hovit_nas.target import DeploymentTarget

    from conftest import ROOT

    src = ROOT / "results" / "latency-predictor" / "hovit-wide-cpu-onnxruntime-fp32.json"
    study = optuna.create_study(directions=st.DIRECTIONS)
    study.set_user_attr("space", "hovit-cpu")
    d = json.loads(src.read_text())
    target = DeploymentTarget.from_dict(d["target"])
    from hovit_nas.latency import device_name

    d["cpu"] = device_name(torch_device())
    p = tmp_path / "p.json"
    p.write_text(json.dumps(d))
    with pytest.raises(pv.ProvenanceError, match="was measured over space hovit-wide-cpu, not this study's space "
                                                 "hovit-cpu"):
        make_screen(p, study, target, 1.0)


def torch_device():
    import torch

    return torch.device("cpu")


def test_a_supernet_of_other_splits_is_refused_even_with_the_same_description(tmp_path):
    """The supernet was trained on the folder capped at 4 images per split; the search's split
    caps at 6: the same description ("class folder PATH"), other images. Refused by membership."""
    from hovit_nas.supernet import Loaded, check_data

    data = make_class_folder(tmp_path / "crc", per_class=12)
    opts = lambda n: DataOptions(max_per_split=n, cache_dir=str(tmp_path / "c"))
    spec4, spec6 = DataSpec.of(str(data), 32, 0, opts(4)), DataSpec.of(str(data), 32, 0, opts(6))
    s4, s6 = load_data(spec4), load_data(spec6)
    assert s4.description == s6.description
    made = pv.Provenance("supernet", pv.data_record(s4, 32, pv.data_rule(spec4)), img_size=32)
    sn = Loaded(None, None, {"data": s4.description, "provenance": made.to_dict()}, tmp_path)
    check_data(sn, "sn", s4, spec4, "scoring")  # its own splits
    with pytest.raises(pv.ProvenanceError, match=r"supernet sn was made from class folder .* \(3/3/3, split seed 0, "
                                                 r"data [0-9a-f]{12}\), not class folder .* \(6/6/6"):
        check_data(sn, "sn", s6, spec6, "scoring")


def test_a_resume_on_other_splits_is_refused(tmp_path):
    d1 = make_class_folder(tmp_path / "a", per_class=6)
    s1 = load_data(DataSpec.of(str(d1), 32, 0, DataOptions(cache_dir=str(tmp_path / "c"))))
    s2 = load_data(DataSpec.of(str(d1), 32, 1, DataOptions(cache_dir=str(tmp_path / "c"))))  # another split seed
    a, b = pv.data_record(s1, 32, keep_train_ids=False), pv.data_record(s2, 32, keep_train_ids=False)
    assert a.fingerprint != b.fingerprint and a.splits["train"].n == b.splits["train"].n
    with pytest.raises(pv.ProvenanceError, match="splits that differ: train, val, test"):
        pv.check_same_data(a, b, "study 's'", "a resume")
    pv.check_same_data(a, a, "study 's'", "a resume")


def test_content_ids_follow_the_pixels_not_the_file_names(tmp_path):
    d1 = make_class_folder(tmp_path / "a", per_class=6)
    d2 = tmp_path / "b"
    shutil.copytree(d1, d2)
    for f in sorted(d2.rglob("*.*")):  # every file: the sorted order, so the split, stays
        f.rename(f.with_name("renamed-" + f.name))
    r1 = pv.data_record(load_data(DataSpec.of(str(d1), 32, 0, DataOptions(cache_dir=str(tmp_path / "c")))), 32)
    r2 = pv.data_record(load_data(DataSpec.of(str(d2), 32, 0, DataOptions(cache_dir=str(tmp_path / "c")))), 32)
    assert r1.fingerprint == r2.fingerprint and r1.train_ids == r2.train_ids
    back = pv.Provenance.from_json(pv.Provenance("model", r1, img_size=32).to_json())
    assert back.data == r1 and len(back.data.train_sketch()) == r1.splits["train"].n
