"""The kill battery (benchmarks/chaos.py), short: 4 SIGKILLs of a SQLite study's driver, one at
each fault point in turn (created, write, training, latency), then a clean driver; the study must
end whole. The full battery (30 SQLite, 15 PostgreSQL, 5 Ray kills, a PostgreSQL restart) is
``python benchmarks/chaos.py``; its last results are in results/chaos/."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, cli_command

pytestmark = pytest.mark.slow


def test_short_kill_battery(tmp_path):
    out = tmp_path / "chaos"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--sqlite-kills", "4", "--pg-kills", "0",
           "--ray-kills", "0", "--no-pg-restart", "--points", "created,write,training,latency", "--nth", "1",
           "--budget-sqlite", "5", "--seed", "0", "--out", str(out)]
    t0 = time.time()
    # the drivers through this worker's warm interpreter (HOVIT_NAS_CLI): processes of their own,
    # SIGKILLed at each fault point as a fresh `python -m hovit_nas` is, without re-importing torch
    env = dict(os.environ, HOVIT_NAS_CLI=" ".join(cli_command()))
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, f"exit {r.returncode} after {time.time() - t0:.0f} s\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    report = json.loads((out / "chaos.json").read_text())
    assert report["passed"], report["missed"]
    part = report["parts"]["sqlite"]
    assert [k["point"] for k in part["kills"]] == ["created", "write", "training", "latency"]
    assert all(k["returncode"] == -9 for k in part["kills"]), [(k["fault"], k["returncode"]) for k in part["kills"]]
    assert part["kills_done"] == 4
    assert part["running_left"] == 0
    assert part["waiting_left"] == 0
    assert part["fixed_point_completions"] == 1
    assert part["configs_trained_twice"] == 0
    assert part["finished"] == part["budget"]
    assert part["lost_max"] == 0
    assert part["clean_exit"] == 0 and part["pareto_exit"] == 0 and part["pin_exit"] == 0
    assert (out / "chaos.txt").read_text().count("PASS") >= 8
