"""Issue 30: the hand-offs between commands. On a small study searched on real data, every command
line that search, pareto, pin and confirm print runs as printed (pasted into bash, in another
folder), and a confirmation's progress lines name the search trial and the seed of each run."""
import re
import subprocess

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import create_trial

from conftest import ROOT, printed_commands, run_cli, run_printed
from hovit_nas import study as st
from hovit_nas.config import DataOptions, DataSpec, to_dict
from hovit_nas.confirm import ConfirmConfig, prepare
from hovit_nas.errors import HovitError
from hovit_nas.executors.common import ProgressReporter, tag
from hovit_nas.models import hovit_b
from spaces import tiny_real_space


def test_printed_commands_carry_the_data_options_the_study_recorded(monkeypatch):
    spec = DataSpec.of("/data/my tiles", 64, options=DataOptions(split_index="/data/idx.json", max_per_split=40,
                                                                  augment=False, cache_dir="/scratch/cache"))
    args = st.data_args(spec)
    assert args == ["--data", "/data/my tiles", "--split-index", "/data/idx.json", "--max-per-split", "40",
                    "--no-augment"]  # the cache folder is the machine's, not the data's
    monkeypatch.delenv(st.STORAGE_ENV, raising=False)
    line = st.command("hovit-nas", "confirm", "--study", "s", storage="postgresql://u:s3cret@db/h",
                      data={st.DATA_ARGS_ATTR: args})
    assert line.startswith("hovit-nas confirm --study s --data '/data/my tiles' --split-index /data/idx.json "
                           "--max-per-split 40 --no-augment --storage \"$HOVIT_NAS_STORAGE\"   (first: export ")
    assert "s3cret" not in line
    assert st.command("hovit-nas", "pin", data={"data": DataSpec().label}) == "hovit-nas pin"  # built-in data
    old = st.command("hovit-nas", "train", "--config", "b.yaml", data={"data": "split folders /data/pcam"})
    assert old == ("hovit-nas train --config b.yaml --data DATA   (DATA: the --data and split options the search "
                   "used; this study does not record them)")


def test_confirm_refuses_split_options_other_than_the_search_s(tmp_path, class_folder):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = optuna.create_study(study_name="s", storage=url, directions=st.DIRECTIONS)
    spec = DataSpec.of(str(class_folder), 32, options=DataOptions(max_per_split=4))
    for k, v in {"space": "tiny", "img_size": 32, "data": f"class folder {spec.path}",
                 st.DATA_ARGS_ATTR: st.data_args(spec)}.items():
        study.set_user_attr(k, v)
    study.add_trial(create_trial(values=[0.5, 1.0], params={"x": 0}, distributions={"x": CategoricalDistribution([0])},
                                 user_attrs={"config": to_dict(hovit_b(img_size=32, num_classes=3))}))
    with pytest.raises(HovitError, match=re.escape(f"was searched with --data {spec.path} --max-per-split 4, not "
                                                   f"--data {spec.path}; pass the same data and split options")):
        prepare(ConfirmConfig(study="s", storage=url, data=str(class_folder)))


def test_confirmation_runs_are_labelled_with_the_search_trial_and_seed(log_lines):
    study = optuna.create_study(directions=st.DIRECTIONS)
    report = ProgressReporter(4)
    dist = {"candidate": CategoricalDistribution([0, 12]), "seed": CategoricalDistribution([1, 2])}
    for seed, acc in ((1, 0.80), (2, 0.82)):
        attrs = {st.CONFIRMS_ATTR: 12, "seed": seed, "metric": "top1", "params": 2e6, "wall_s": 3}
        study.add_trial(create_trial(values=[acc, 2.0], params={"candidate": 12, "seed": seed}, distributions=dist,
                                     user_attrs=attrs))
        report(study, study.trials[-1])
    assert tag(study.trials[-1]) == "    t12 seed 2"
    assert log_lines[0].startswith("confirm run 1/4: trial 12, seed 1: top1 0.8000  latency 2.00 ms")
    assert "| trial 12 so far: top1 0.8100 ± 0.0141 over seeds 1, 2  [" in log_lines[1]
    assert not any("front" in x or "#" in x for x in log_lines)
    search = optuna.create_study(directions=st.DIRECTIONS)
    search.add_trial(create_trial(values=[0.7, 3.0], params={}, distributions={}, user_attrs={"metric": "top1"}))
    ProgressReporter(2)(search, search.trials[0])
    assert log_lines[-1].startswith("[1/2] trial #0: top1 0.7000") and "| front 1: best 0.7000" in log_lines[-1]
    assert tag(search.trials[0]) == "    #0"


@pytest.mark.slow
def test_every_printed_command_runs_as_printed(tmp_path, pcam_subset):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    r = run_cli("search", "--space", str(tiny_real_space(tmp_path)), "--data", str(pcam_subset), "--max-per-split",
                "16", "--threads", "1", cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    ran: dict[str, str] = {}  # command line -> its output
    printed: list[str] = []

    def paste(line: str) -> str:
        p = run_printed(line, elsewhere)
        assert p.returncode == 0, f"{line}\n{p.stderr[-3000:]}"
        ran[line] = p.stdout + p.stderr
        printed.extend(printed_commands(ran[line]))
        return ran[line]

    [pareto] = printed_commands(r.stderr)
    out = paste(pareto)
    assert re.search(r"^next: hovit-nas confirm .*^then: hovit-nas pin ", out, re.M | re.S)
    confirm, pin = printed_commands(out)
    data = f"--data {pcam_subset.resolve()} --max-per-split 16"  # the data's real path: it pastes anywhere
    assert data in confirm and "--data" not in pin and "sqlite:////" in pin  # absolute: pasted anywhere

    out = paste(pin)  # before confirming, as the user did
    assert "UNCONFIRMED" in out
    [again, reproduce, deploy, step1, export, evaluate] = printed_commands(out)
    assert again == confirm and reproduce.startswith("hovit-nas train --config ") and data in reproduce
    best = reproduce.split("--config ")[1].split()[0]
    assert f"Reproduce: {reproduce}\n" in open(best).readline() + "\n"  # best.yaml's header is the same line
    assert step1 == reproduce and export.endswith("--format onnx") and "model.onnx --runtime onnxruntime" in evaluate
    paste(reproduce)
    for line in (export, evaluate):  # the manual path to the study's target, pasted as printed
        out = paste(line)
    assert re.search(r"^latency [\d.]+ ms on cpu/onnxruntime/fp32, \d+ threads?, batch 1, 32 px", out, re.M), out
    out = paste(deploy)  # the one command: retrain, export, eval, time, check against the study
    assert re.search(r"^check val top1: .*: within noise$", out, re.M), out
    assert re.search(r"^wrote .*model\.onnx \(deployable\)", out, re.M), out

    out = paste(confirm)
    runs = [line for line in out.splitlines() if line.startswith("confirm run ")]
    assert len(runs) == 3 and all(re.match(r"confirm run \d/3: trial 0 \[HoViT-B fixed point\], seed [123]: ", x)
                                  for x in runs), out
    assert "so far: top1" in runs[-1] and "front" not in out and "trial #" not in out
    assert "    t0 seed 1 dense epoch 1/1" in out  # its training lines: the search trial and the seed
    assert printed_commands(out) == [pin]

    out = paste(pin)  # confirmed now
    assert "confirmed over 3 seeds" in out and printed_commands(out) == [reproduce, deploy, step1, export, evaluate]
    assert set(printed) <= set(ran), set(printed) - set(ran)


@pytest.mark.slow
def test_default_outputs_never_touch_committed_files(tmp_path):
    """In a fresh clone, commands run with their default outputs leave `git status` clean: bench
    writes a new runs/bench-*, pin and pareto next to a committed study write into runs/ instead of
    over its tracked best.yaml or pareto.html, pareto keeps no baseline cache in a committed
    study.db, and train/export stay in the ignored runs/."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=300)
    commands = [
        "hovit-nas bench --models hovit_s,efficientnet_b0 --runtimes torch --img-size 32 --num-classes 2 --runs 2 "
        "--rounds 1 --warmup 1 --min-time 0.05 --no-anchor",
        "hovit-nas pin --study pcam-cpu",
        "hovit-nas pareto --study pcam-cpu",
        "hovit-nas pareto --storage sqlite:///results/int8-pcam/study.db",
        "hovit-nas train --config hovit_s --img-size 32 --epochs 1 --max-steps 1 --max-per-split 16",
        "hovit-nas export runs/hovit_s --format onnx",
    ]
    for line in commands:
        p = run_printed(line, clone)
        assert p.returncode == 0, f"{line}\n{p.stderr[-3000:]}"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert status == "", status
    made = sorted(str(p.relative_to(clone)) for p in (clone / "runs").rglob("*.*"))
    assert any(re.fullmatch(r"runs/bench-\d{8}-\d{6}/bench\.json", m) for m in made), made
    assert any(re.fullmatch(r"runs/pin-pcam-cpu-\d{8}-\d{6}/best\.yaml", m) for m in made), made
    assert any(re.fullmatch(r"runs/pareto-pcam-ov-int8-\d{8}-\d{6}/pareto\.html", m) for m in made), made
    assert "runs/hovit_s/model.onnx" in made
