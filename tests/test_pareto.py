import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from hovit_nas import pareto as pa
from hovit_nas import study as st
from hovit_nas.config import load_run_config
from hovit_nas.models import hovit_b
from hovit_nas.config import to_dict


def _study(points, fixed_index=0):
    study = optuna.create_study(directions=st.DIRECTIONS, study_name="hand")
    cfg = to_dict(hovit_b(img_size=32, num_classes=3))
    for i, (acc, lat) in enumerate(points):
        attrs = {"config": cfg, "params": 1000 * (i + 1), "latency": {"device_name": "cpu"}}
        if i == fixed_index:
            attrs[st.FIXED_POINT_ATTR] = "hovit_b"
        study.add_trial(create_trial(values=[acc, lat], params={"x": i},
                                     distributions={"x": CategoricalDistribution(list(range(len(points))))},
                                     user_attrs=attrs))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={}, distributions={}))
    return study


def test_hypervolume_by_hand():
    # points (acc, latency); reference (0, 10): union of rectangles [lat, 10] x [0, acc]
    pts = [(0.9, 6.0), (0.6, 2.0), (0.5, 4.0)]  # (0.5, 4) is dominated by (0.6, 2)
    expected = (6 - 2) * 0.6 + (10 - 6) * 0.9
    assert pa.hypervolume_2d(pts, (0.0, 10.0)) == pytest.approx(expected)
    assert pa.hypervolume_2d([], (0.0, 10.0)) == 0.0
    assert pa.hypervolume_2d([(0.9, 12.0)], (0.0, 10.0)) == 0.0  # beyond the reference


def test_hypervolume_agrees_with_optuna():
    from optuna._hypervolume import compute_hypervolume
    import numpy as np
    pts = [(0.9, 6.0), (0.6, 2.0), (0.7, 3.5), (0.2, 1.0)]
    ours = pa.hypervolume_2d(pts, (0.0, 10.0))
    loss = np.array([[-a, l] for a, l in pts])
    assert ours == pytest.approx(compute_hypervolume(loss, np.array([0.0, 10.0])))


def test_summary_front_and_fixed_point_domination():
    study = _study([(0.80, 5.0), (0.85, 4.0), (0.70, 2.0), (0.60, 6.0)])
    rep = pa.summarise(study)
    assert [r["trial"] for r in rep["front"]] == [2, 1]  # sorted by latency
    assert rep["fixed_point"] == {"trial": 0, "accuracy": 0.80, "latency_ms": 5.0, "on_front": False,
                                  "dominated_by": [1]}
    assert rep["reference_point"]["latency_ms"] == 10.0  # 2x HoViT-B
    assert rep["hypervolume"] == pytest.approx((4 - 2) * 0.70 + (10 - 4) * 0.85)
    assert rep["counts"]["PRUNED"] == 1
    text = pa.format_report(rep)
    assert "dominated by trials [1]" in text


def test_pick_and_pin_yaml_is_a_train_config(tmp_path):
    study = _study([(0.80, 5.0), (0.85, 4.0), (0.70, 2.0), (0.86, 9.0)])
    rep = pa.summarise(study)
    assert pa.pick(rep, max_latency=4.5)["trial"] == 1
    assert pa.pick(rep, max_latency=100)["trial"] == 3
    with pytest.raises(Exception, match="no front trial has latency <= 1.0"):
        pa.pick(rep, max_latency=1.0)
    assert pa.pick(rep)["trial"] == 1  # knee
    path, doc = pa.pin(study, "sqlite:///x.db", tmp_path / "best.yaml")
    assert doc["trial"] == 1 and doc["objectives"]["latency_ms"] == 4.0
    cfg = load_run_config(path)
    assert cfg.model.img_size == 32 and cfg.model.stages[0].keep == 2


def test_plot_html_is_self_contained(tmp_path):
    rep = pa.summarise(_study([(0.8, 5.0), (0.85, 4.0), (0.7, 2.0)]))
    bench = {"rows": [{"model": "efficientnet_b0", "kind": "baseline", "latency_ms": 3.0, "top1": None},
                      {"model": "resnet50", "kind": "baseline", "latency_ms": 6.0, "top1": 0.9}]}
    html = pa.plot(rep, tmp_path / "p.html", bench).read_text()
    assert "Pareto front" in html and "HoViT-B" in html and "efficientnet_b0" in html and "resnet50" in html
    assert "<script src=\"http" not in html and len(html) > 1_000_000  # plotly.js embedded: opens offline
