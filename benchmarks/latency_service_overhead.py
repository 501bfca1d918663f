"""What a trial pays for timing its latency on a latency service instead of locally (issue 23).

The same architectures (drawn from a space by a fixed seed), the same protocol (1 thread, batch 1,
anchored to HoViT-B, the space's runs and windows), in one process, alternating per model:

- local: trial.skeleton_latency as a local search runs it (build, export, anchored measurement);
- service: the same call with ``latency_at`` -- build, export to ONNX, upload to a
  ``hovit-nas latency-serve`` process on this machine (loopback), its anchored measurement, reply.

Both sides run on this one 2-core machine, so the figure is the protocol's and the transport's
overhead, not a remote network's. Prints per-model wall seconds and the medians.

    python benchmarks/latency_service_overhead.py [--space hovit-cpu] [--n 8] > results/latency-service/overhead.txt
    (from a checkout: PYTHONPATH=. so the service and this script import the same hovit_nas)
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import requests
import torch

from hovit_nas.device import NO_GUARD
from hovit_nas.latency import device_name
from hovit_nas.remote import LatencyService
from hovit_nas.space import load_space
from hovit_nas.trial import TrialSpec, calibrate_anchor, skeleton_latency

ROOT = Path(__file__).resolve().parents[1]

TOKEN = "overhead-benchmark"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="hovit-cpu")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--port", type=int, default=18777)
    a = ap.parse_args()
    torch.set_num_threads(1)
    space = load_space(a.space)
    lat = space.latency
    lat.threads, lat.runtime = 1, "onnxruntime"
    env = dict(os.environ, HOVIT_NAS_LATENCY_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "hovit_nas", "latency-serve", "--port", str(a.port)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{a.port}"
    try:
        for _ in range(300):
            try:
                requests.get(f"{url}/v1/identity", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        svc = LatencyService(url, token=TOKEN)
        local = TrialSpec(space.base, device="cpu", threads=1, latency=lat)
        local.anchor = calibrate_anchor(space.fixed_point, space.fixed_point_config(), local)
        remote = TrialSpec(space.base, device="cpu", threads=1, latency=lat, latency_at=svc)
        sampler = optuna.samplers.RandomSampler(seed=0)
        study = optuna.create_study(sampler=sampler, directions=["maximize", "minimize"])
        cfgs = [space.suggest(study.ask()) for _ in range(a.n)]
        skeleton_latency(cfgs[0], remote, torch.device("cpu"), NO_GUARD)  # the service calibrates its anchor once
        print(f"space {a.space}, {a.n} architectures, 1 thread, batch 1, {space.base.model.img_size} px, onnxruntime, "
              f"anchored; CPU {device_name(torch.device('cpu'))}; service on loopback")
        print("model  local_s  service_s  overhead_s  local_ms  service_ms")
        rows = []
        for i, cfg in enumerate(cfgs):
            t0 = time.perf_counter()
            here, _ = skeleton_latency(cfg, local, torch.device("cpu"), NO_GUARD)
            t1 = time.perf_counter()
            there, _ = skeleton_latency(cfg, remote, torch.device("cpu"), NO_GUARD)
            t2 = time.perf_counter()
            rows.append((t1 - t0, t2 - t1))
            print(f"{i:>5}  {t1 - t0:7.2f}  {t2 - t1:9.2f}  {t2 - t1 - (t1 - t0):+10.2f}  {here['median_ms']:8.3f}  "
                  f"{there['median_ms']:10.3f}")
        lo, re_ = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        over = sorted(r[1] - r[0] for r in rows)
        print(f"median wall per trial's latency step: local {lo:.2f} s, service {re_:.2f} s; overhead per model: "
              f"median {statistics.median(over):+.2f} s, range {over[0]:+.2f} .. {over[-1]:+.2f} s")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
