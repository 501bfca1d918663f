import json

from conftest import run_cli
from hovit_nas.latency import measure_latency
from hovit_nas.models import create_hovit, export, hovit_b


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
    r = run_cli("bench", "--device", "cpu", "--img-size", "64", "--runs", "3", "--rounds", "2", "--warmup", "1",
                "--models", "hovit_b,hovit_b:unexported,levit_128s", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = {row["model"]: row for row in report["rows"]}
    assert set(rows) == {"hovit_b", "hovit_b:unexported", "levit_128s", "efficientnet_b0"}
    assert rows["efficientnet_b0"]["ratio_to_effnet_b0"] == 1.0
    assert rows["hovit_b"]["params_m"] < rows["hovit_b:unexported"]["params_m"]
    assert "ratio_to_effnet_b0" in r.stdout and (tmp_path / "bench.csv").read_text().startswith("model,")
