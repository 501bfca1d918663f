"""The GPU check script's CPU dry run: every step it runs on a GPU also runs here, tiny, so the
script cannot rot between the rare sessions that have a GPU."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, cli_command, shared_data


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    shared_data("crc-tiles")  # the NCT-shaped tiles are cut from the real ones
    out = tmp_path / "gpu-check"
    # the interpreter running the tests, not whatever python3 or .venv the script would find
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--device", "cpu", "--tiny"],
                       capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PYTHON=sys.executable, HOVIT_NAS_CLI=" ".join(cli_command())))
    summary = (out / "summary.txt").read_text().splitlines()
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [line.split()[0] for line in summary]
    assert steps == ["env", "bench-eager-b8", "make-tiles", "train-bf16", "input-pipeline", "ray-search",
                     "kill-and-resume", "supernet"], summary
    assert all(line.split()[1] == "ok" for line in summary), summary
    bench = json.loads((out / "bench-eager-b8" / "bench.json").read_text())
    assert {row["model"] for row in bench["rows"]} >= {"hovit_b", "efficientnet_b0"}
    pipe = json.loads((out / "input-pipeline" / "input_pipeline.json").read_text())
    assert pipe["build"]["images"] == 270 and pipe["train_steps"]["ratio"] > 0
    assert json.loads((out / "train-hovit_b" / "result.json").read_text())["history"]
    assert "trials after resume: ['COMPLETE', 'FAIL', 'COMPLETE']" in (out / "kill-and-resume.log").read_text()
    assert "supernet trials complete with an estimate: 2" in (out / "supernet.log").read_text()
