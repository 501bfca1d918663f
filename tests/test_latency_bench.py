import json
import time

import pytest

from torch import nn

from conftest import run_cli
from hovit_nas.device import NO_GUARD
from hovit_nas.latency import Anchor, calibrate, measure_latency
from hovit_nas.models import create_hovit, export, hovit_b, hovit_s


class _Machine:
    speed = 1.0  # 2.0 = everything takes twice as long (a noisy neighbour arrived)


class _Sleeper(nn.Module):
    def __init__(self, ms: float):
        super().__init__()
        self.ms = ms

    def forward(self, x):
        time.sleep(self.ms / 1e3 * _Machine.speed)
        return x


def test_anchoring_cancels_a_machine_that_slows_down():
    cand, anchor = _Sleeper(2.0), Anchor("ref", _Sleeper(4.0), ms=4.0)
    kw = dict(img_size=8, device="cpu", warmup=1, runs=20, min_time_s=0.05, guard=NO_GUARD)
    _Machine.speed = 1.0
    raw_fast, anc_fast = measure_latency(cand, **kw), measure_latency(cand, anchor=anchor, **kw)
    _Machine.speed = 2.0
    try:
        raw_slow, anc_slow = measure_latency(cand, **kw), measure_latency(cand, anchor=anchor, **kw)
    finally:
        _Machine.speed = 1.0
    assert raw_slow.median_ms > 1.6 * raw_fast.median_ms  # raw timing follows the machine
    assert abs(anc_slow.median_ms - anc_fast.median_ms) / anc_fast.median_ms < 0.05  # anchored does not
    assert 0.4 < anc_fast.ratio < 0.6 and anc_slow.raw_median_ms > 1.6 * anc_fast.raw_median_ms
    assert raw_fast.anchor is None and raw_fast.ratio is None


def test_anchored_measurement_records_ratio_and_raw():
    ref = export(create_hovit(hovit_b(img_size=64)))
    anchor = calibrate("hovit_b", ref, 64, seconds=0.3, device="cpu", threads=1, warmup=2, runs=5)
    assert anchor.ms > 0 and anchor.name == "hovit_b"
    lat = measure_latency(export(create_hovit(hovit_s(img_size=64))), 64, device="cpu", threads=1, warmup=2,
                          runs=9, min_time_s=0.2, anchor=anchor)
    d = lat.to_dict()
    assert d["anchor"] == "hovit_b" and d["anchor_ms"] == anchor.ms and d["raw_median_ms"] > 0
    assert abs(d["median_ms"] - d["ratio"] * anchor.ms) < 1e-6 * anchor.ms  # median_ms = ratio x calibration
    assert 0.3 < d["ratio"] < 1.5 and len(lat.samples_ms) == d["runs"] >= 9


def test_latency_protocol_records_its_conditions():
    model = export(create_hovit(hovit_b(img_size=64)))
    lat = measure_latency(model, 64, batch=2, device="cpu", warmup=2, runs=7, threads=1, min_time_s=0.5)
    d = lat.to_dict()
    assert d["runs"] >= 7 and d["batch"] == 2 and d["threads"] == 1 and d["device"] == "cpu"
    assert sum(lat.samples_ms) >= 0.5 * 1000 * 0.9  # at least ~min_time_s of timed forwards
    assert 0 < d["p10_ms"] <= d["median_ms"] <= d["p90_ms"] and d["iqr_ms"] >= 0
    assert d["device_name"] and "samples_ms" not in d and len(lat.samples_ms) == d["runs"]
    slow = measure_latency(model, 64, device="cpu", warmup=1, runs=3, threads=1, min_time_s=0.0)
    assert slow.runs == 3
    assert not model.training


def test_bench_cli_writes_table_csv_json(tmp_path):
    r = run_cli("bench", "--device", "cpu", "--img-size", "32", "--runs", "3", "--rounds", "2", "--warmup", "1",
                "--min-time", "0.25", "--models", "hovit_b,hovit_b:unexported,levit_128s", "--runtimes", "torch",
                "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert ">= 0.25 s timed per round, 2 interleaved rounds" in r.stdout
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = {row["model"]: row for row in report["rows"]}
    assert set(rows) == {"hovit_b", "hovit_b:unexported", "levit_128s", "efficientnet_b0"}
    assert rows["efficientnet_b0"]["ratio_to_effnet_b0"] == 1.0
    assert rows["hovit_b"]["params_m"] < rows["hovit_b:unexported"]["params_m"]
    assert "ratio_to_effnet_b0" in r.stdout and (tmp_path / "bench.csv").read_text().startswith("model,")
    assert report["anchor"]["name"] == "hovit_b" and "anchored to HoViT-B" in r.stdout
    raw = run_cli("bench", "--device", "cpu", "--img-size", "32", "--runs", "3", "--rounds", "1", "--warmup", "1",
                  "--min-time", "0.25", "--models", "levit_128s", "--no-anchor", "--out", str(tmp_path / "raw"))
    assert raw.returncode == 0, raw.stderr
    assert json.loads((tmp_path / "raw" / "bench.json").read_text())["anchor"] is None


def test_latency_timing_windows_are_validated():
    from hovit_nas.config import LatencyConfig
    from hovit_nas.errors import ConfigError

    assert LatencyConfig(min_time_s=0.25, anchor_time_s=0.75).validate().min_time_s == 0.25
    for bad in ({"min_time_s": 0}, {"anchor_time_s": -1.0}):
        with pytest.raises(ConfigError, match=f"latency.{next(iter(bad))}: must be > 0 seconds"):
            LatencyConfig(**bad).validate()
