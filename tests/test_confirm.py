"""Confirmation before pinning: paired statistics, a one-seed fluke confirmed away, and resume."""
import os
import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from conftest import cli_command, run_cli
from hovit_nas import pareto as pa
from hovit_nas import study as st
from hovit_nas.config import to_dict
from hovit_nas.confirm import confirm_name, confirmed, paired
from hovit_nas.models import hovit_b
from spaces import tiny_space


def test_paired_difference_and_its_interval_by_hand():
    cand = {1: 0.80, 2: 0.78, 3: 0.83}
    ref = {1: 0.77, 2: 0.77, 3: 0.79, 4: 0.5}  # seed 4 has no partner: left out
    p = paired(cand, ref)
    # d = (0.03, 0.01, 0.04): mean 0.02667, sd 0.015275, t(0.975, 2) = 4.302653, half = 4.302653 * 0.015275 / sqrt(3)
    assert p.n == 3 and p.mean == pytest.approx(0.0266667, abs=1e-6)
    assert p.high - p.mean == pytest.approx(4.302653 * 0.0152753 / 3 ** 0.5, rel=1e-4)
    assert p.low == pytest.approx(p.mean - (p.high - p.mean))
    assert paired({1: 0.8}, {1: 0.7}) is None  # one pair has no spread


def _trial(number_params, values, fixed=False, **attrs):
    cfg = to_dict(hovit_b(img_size=32, num_classes=2))
    ua = {"config": cfg, "params": 4_000_000, "val": {"top1": values[0]}, "test": {"top1": attrs.pop("test", 0.5)},
          "latency": {"device_name": "cpu", "threads": 1}, **attrs}
    if fixed:
        ua[st.FIXED_POINT_ATTR] = "hovit_b"
    return create_trial(values=list(values), params=number_params,
                        distributions={k: CategoricalDistribution(list(range(100))) for k in number_params},
                        user_attrs=ua)


def test_a_one_seed_fluke_is_confirmed_away(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    search = optuna.create_study(study_name="s", storage=url, directions=st.DIRECTIONS)
    search.set_user_attr("metric", "top1")
    search.add_trial(_trial({"x": 0}, (0.84, 4.0), fixed=True))  # HoViT-B
    search.add_trial(_trial({"x": 1}, (0.90, 3.0)))  # the lucky one: best val on its one seed
    search.add_trial(_trial({"x": 2}, (0.86, 2.0)))
    out = tmp_path / "best.yaml"
    _, doc = pa.pin(search, url, out, max_latency=5.0)
    assert doc["trial"] == 1 and not doc["confirmed"] and "unconfirmed" in doc["chosen_by"]
    assert "UNCONFIRMED" in out.read_text().splitlines()[0]

    runs = optuna.create_study(study_name=confirm_name("s"), storage=url, directions=st.DIRECTIONS)
    runs.set_user_attr("confirms_study", "s")  # what `confirm` records: the linked study is s's
    per_seed = {0: [0.83, 0.82, 0.84], 1: [0.80, 0.81, 0.79], 2: [0.86, 0.85, 0.87]}
    for n, accs in per_seed.items():
        for seed, acc in zip((1, 2, 3), accs):
            runs.add_trial(_trial({"candidate": n, "seed": seed}, (acc, [4.0, 3.0, 2.0][n]), fixed=n == 0,
                                  test=acc - 0.05, **{st.CONFIRMS_ATTR: n, "seed": seed}))
    figures = confirmed(search)
    assert sorted(figures) == [0, 1, 2] and figures[1].mean("val") == pytest.approx(0.80)
    assert figures[2].vs_fixed_val.mean == pytest.approx(0.03) and figures[2].vs_fixed_val.low > 0
    _, doc = pa.pin(search, url, out, max_latency=5.0)
    assert doc["trial"] == 2 and doc["confirmed"] and "3 confirmation seeds" in doc["chosen_by"]
    c = doc["confirmation"]
    assert c["n"] == 3 and c["val"]["mean"] == pytest.approx(0.86) and c["test"]["mean"] == pytest.approx(0.81)
    assert c["val_minus_fixed_point"]["ci95"][0] > 0
    rep = pa.summarise(search)
    text = pa.format_report(rep)
    assert "confirmed over 3 further seeds" in text and "<- HoViT-B" in text
    assert st.resolve_study(None, url)[0] == "s"  # the linked study does not make the storage ambiguous


@pytest.mark.slow
def test_an_interrupted_confirmation_resumes_to_each_run_exactly_once(tmp_path):
    space = tiny_space(tmp_path, trials=3)
    r = run_cli("search", "--space", str(space), "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    cmd = [*cli_command(), "confirm", "--top-k", "2", "--seeds", "2", "--threads", "1"]
    env = dict(os.environ, HOVIT_NAS_FAULT="training:2:0.3")  # killed inside the second run's training
    k = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert k.returncode == -9, k.stderr[-2000:]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "confirmed over 2 further seeds" in r.stdout and "left RUNNING by a dead driver" in r.stderr
    url = f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}"
    runs = optuna.load_study(study_name="tiny-builtin-confirm", storage=url)
    done = [t for t in runs.trials if t.state == TrialState.COMPLETE]
    pairs = sorted((t.user_attrs["confirms"], t.user_attrs["seed"]) for t in done)
    assert len(pairs) == len(set(pairs)) and {s for _, s in pairs} == {1, 2}
    assert len(pairs) in (4, 6)  # top-2 front + HoViT-B (unless it is on the top-2), x 2 seeds
    assert not [t for t in runs.trials if t.state == TrialState.RUNNING]
    p = run_cli("pin", cwd=tmp_path)
    assert p.returncode == 0 and "confirmed over 2 seeds" in p.stdout, p.stderr
    best = yaml.safe_load((tmp_path / "studies" / "tiny-builtin" / "best.yaml").read_text())
    assert best["confirmed"] and best["confirmation"]["n"] == 2
    q = run_cli("pareto", cwd=tmp_path)
    assert q.returncode == 0 and "confirmed over 2 further seeds" in q.stdout, q.stderr
