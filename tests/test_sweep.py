"""`supernet sweep` (issue 33, item 7): many subnets estimated by a supernet, only those the latency
predictor cannot rule off the front timed; every front member measured."""
import json
import shlex

import numpy as np
import pytest
import torch
import yaml

from conftest import printed_commands, run_cli, run_printed
from hovit_nas.dominance import dominates, non_dominated
from hovit_nas.sweep import Sweep, candidates, scale_check, uncovered, val_subset
from spaces import tiny_space


def test_candidates_drop_only_subnets_dominated_beyond_the_predictors_error():
    acc = np.array([0.90, 0.80, 0.85, 0.90, 0.70])
    lower = np.array([1.0, 2.0, 0.9, 3.0, 0.5])
    upper = np.array([1.5, 3.0, 1.4, 4.0, 0.8])
    # 1: 0 is as accurate and surely faster (1.5 <= 2.0); 3: 0 likewise (1.5 <= 3.0); 2 overlaps 0's bounds
    assert candidates(acc, lower, upper).tolist() == [True, False, True, False, True]
    same = candidates([0.9, 0.9], [1.0, 1.0], [1.0, 1.0])  # identical points: neither dominates
    assert same.tolist() == [True, True]


def test_uncovered_are_the_untimed_that_the_timed_front_does_not_dominate_at_their_lower_bound():
    acc = np.array([0.90, 0.80, 0.95, 0.70])
    lower = np.array([1.0, 1.5, 1.2, 0.5])
    measured = np.array([1.1, np.nan, np.nan, np.nan])
    # 1: dominated by 0 (more accurate, 1.1 <= 1.5); 2: more accurate than anything timed; 3: faster
    assert uncovered(acc, lower, measured).tolist() == [False, False, True, True]


def test_scale_check_counts_timed_subnets_outside_the_predictors_bounds():
    pred = np.array([1.0, 2.0, 4.0, 1.0])
    measured = np.array([1.0, 3.0, np.nan, 0.5])  # ratios 1.0, 1.5, untimed, 0.5
    c = scale_check(pred, measured, 0.8, 1.2)
    assert c == {"median_ratio": 1.0, "outside": pytest.approx(2 / 3), "n": 3}
    assert scale_check(pred, np.full(4, np.nan), 0.8, 1.2)["n"] == 0


def _die(item):
    import os

    os._exit(9)  # as an out-of-memory kill would leave the pool: a worker gone mid-task


def test_val_subset_is_a_fixed_draw_of_distinct_images_in_order():
    from hovit_nas.data import Images

    imgs = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1).repeat(3, 1)
    val = Images(imgs, np.arange(20) % 3, (0.4, 0.5, 0.6), (0.2, 0.2, 0.2), augment=False)
    a, b = val_subset(val, 7, seed=1), val_subset(val, 7, seed=1)
    first = a.images[:, 0, 0, 0].astype(int)
    assert len(a) == 7 and len(set(first)) == 7 and list(first) == sorted(first)  # distinct, in their order
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, first % 3)  # seeded; labels follow
    assert torch.equal(a.mean, val.mean) and torch.equal(a.std, val.std) and not a.augment
    assert val_subset(val, None, 0) is val and val_subset(val, 20, 0) is val


def test_a_dead_estimating_worker_is_one_line_naming_the_workers(monkeypatch):
    from hovit_nas import sweep as sw
    from hovit_nas.errors import HovitError

    monkeypatch.setattr(sw, "_estimate", _die)
    with pytest.raises(HovitError) as dead:
        list(sw._estimates([None, None, None], 2))
    assert str(dead.value) == ("a sweep worker process died (out of memory?); rerun with fewer `workers` than 2")


@pytest.mark.slow
def test_a_sweep_times_every_front_member_and_every_untimed_subnet_is_dominated(tmp_path):
    """`supernet train` and `profile-target` on the tiny space (the built-in data), then `supernet
    sweep` of 24 subnets: every front member is timed, every untimed subnet is dominated by a
    timed one at its lower-bound latency, and the front is the timed subnets' non-dominated set.
    A front member's YAML, extracted as printed, scores what the sweep estimated. A profile of
    another space is refused in one line."""
    space = tiny_space(tmp_path, trials=2)
    d = yaml.safe_load(space.read_text())
    d["base"]["model"]["img_size"] = 32  # the built-in data's: the profile's target is the supernet's resolution
    d["latency"].update(min_time_s=0.05, anchor_time_s=0.2)
    space.write_text(yaml.safe_dump(d, sort_keys=False))
    r = run_cli("supernet", "train", "--space", str(space), "--epochs", "1", "--max-steps", "2", "--sandwich-k", "1",
                "--threads", "1", "--out", "sn", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    p = run_cli("profile-target", "--space", str(space), "--n", "10", "--rounds", "1", "--out", "prof.json",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    s = run_cli("supernet", "sweep", "--supernet", "sn", "--profile", "prof.json", "--subnets", "24", "--out", "sw",
                cwd=tmp_path)
    assert s.returncode == 0, s.stderr[-2000:]
    assert s.stdout.startswith("swept 24 subnets of supernet "), s.stdout
    sw = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert Sweep.from_dict(sw).to_dict() == sw  # the record reads back as written
    subs = sw["subnets"]
    assert len(subs) == 24 and len({json.dumps(x["params"], sort_keys=True) for x in subs}) == 24
    timed = [x for x in subs if x["measured_ms"] is not None]
    front = [x for x in subs if x["front"]]
    assert front and all(x["measured_ms"] is not None for x in front)
    # round 1 timed exactly the subnets no other dominates beyond the recorded bounds; how many
    # that is depends on the 10-point profile's noise (all 24 when its bounds are wide)
    first = candidates([x["val_top1"] for x in subs], [x["lower_ms"] for x in subs], [x["upper_ms"] for x in subs])
    assert sw["rounds"][0] == int(first.sum()) and sum(sw["rounds"]) == len(timed) <= 24
    assert all(x["measured_ms"] is not None for x, c in zip(subs, first) if c)
    for x in subs:
        assert x["lower_ms"] <= x["predicted_ms"] <= x["upper_ms"]
        assert x["val_se"] == pytest.approx(np.sqrt(x["val_top1"] * (1 - x["val_top1"]) / sw["val_images"]))
        if x["measured_ms"] is None:
            assert any(dominates((t["val_top1"], t["measured_ms"]), (x["val_top1"], x["lower_ms"])) for t in timed), x
    want = non_dominated(timed, key=lambda t: (t["val_top1"], t["measured_ms"]))
    assert {x["name"] for x in want} == {x["name"] for x in front}
    assert sorted(f.name for f in (tmp_path / "sw" / "front").iterdir()) == sorted(f"{x['name']}.yaml" for x in front)
    assert "plotly" in (tmp_path / "sw" / "sweep.html").read_text()[:5000].lower()

    [printed] = printed_commands(s.stdout)
    best = max(front, key=lambda x: x["val_top1"])
    words = shlex.split(printed)
    assert words[words.index("--config") + 1].endswith(f"front/{best['name']}.yaml")
    x = run_printed(f"{printed} --out run", tmp_path)  # pasted into a shell as printed
    assert x.returncode == 0, x.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["val"]["top1"] == pytest.approx(best["val_top1"])

    d = json.loads((tmp_path / "prof.json").read_text())
    d["space"] = "another-space"
    (tmp_path / "other.json").write_text(json.dumps(d))
    from hovit_nas.provenance import ProvenanceError
    from hovit_nas.sweep import sweep

    with pytest.raises(ProvenanceError) as other:  # in-process (a ProvenanceError is the CLI's one line and exit 2)
        sweep(tmp_path / "sn", tmp_path / "other.json", None, None, n=5)
    assert str(other.value).startswith(f"latency profile {tmp_path / 'other.json'} was measured over space "
                                       "another-space, not this sweep's space tiny;")
