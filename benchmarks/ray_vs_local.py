"""The same search three ways: local executor, Ray with 1 and with 2 concurrent trials.

Built-in data, a fixed budget (by default trials of a minute or more of training: 64 px,
14 + 7 epochs of the whole built-in train split), 1 thread per trial, random sampler with a fixed seed, each run a
fresh SQLite study driven by the real CLI (Ray start-up included). Prints wall time,
trials/hour, per-trial overhead of Ray vs local, each trial's training time, and the ratios, all
from one run of this script (target: 2 at a time take <= 0.625x the wall time of 1 at a time);
then re-measures every completed trial of the 2-concurrent Ray study in isolation and compares
with the latency recorded under concurrency (target: within 10 %).

    python benchmarks/ray_vs_local.py [--trials 6] [--img-size 64] [--epochs 14,7] [--steps N]
                                      [--executors local,ray_1,ray_2] [--out results/ray] [--raw]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
ap = argparse.ArgumentParser()
ap.add_argument("--trials", type=int, default=6)
ap.add_argument("--img-size", type=int, default=64)
ap.add_argument("--epochs", default="14,7", help="dense,prune epochs per trial")
ap.add_argument("--steps", type=int, default=None, help="cap steps per epoch (default: the whole train split)")
ap.add_argument("--tag", default="", help="suffix of the result files")
ap.add_argument("--executors", default="local,ray_1,ray_2", help="which of local, ray_1, ray_2 to run")
ap.add_argument("--out", default=str(ROOT / "results" / "ray"))
ap.add_argument("--raw", action="store_true", help="time trials without the latency anchor (for comparison)")
a = ap.parse_args()
optuna.logging.set_verbosity(optuna.logging.WARNING)

work = Path(tempfile.mkdtemp(prefix="hovit-ray-bench-"))
d = yaml.safe_load((ROOT / "search_spaces" / "hovit-cpu.yaml").read_text())
d.update(name="bench", trials=a.trials, latency={"batch": 1, "runs": 20, "warmup": 5, "threads": 1})
dense, prune = (int(v) for v in a.epochs.split(","))
d["builtin_data"] = {"img_size": a.img_size, "epochs_dense": dense, "epochs_prune": prune, "batch_size": 64,
                     "trials": a.trials, **({"max_steps_per_epoch": a.steps} if a.steps else {})}
space = work / "bench.yaml"
space.write_text(yaml.safe_dump(d))

RUNS = {"local": ["--executor", "local"],
        "ray_1": ["--executor", "ray", "--max-concurrent", "1", "--cpus-per-trial", "1"],
        "ray_2": ["--executor", "ray", "--max-concurrent", "2", "--cpus-per-trial", "1"]}
rows = {}
for name, extra in [(k, v) for k, v in RUNS.items() if k in a.executors.split(",")]:
    url = f"sqlite:///{work / (name + '.db')}"
    cmd = [sys.executable, "-m", "hovit_nas", "search", "--space", str(space), "--study", name, "--storage", url,
           "--threads", "1", "--sampler", "random", "--seed", "0", *extra,
           *(["--no-latency-anchor"] if a.raw else [])]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"{name} failed:\n{r.stderr[-3000:]}")
    study = optuna.load_study(study_name=name, storage=url)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    busy = sum(t.user_attrs["wall_s"] for t in done)
    train_s = [sum(h["s"] for h in t.user_attrs["history"]) for t in done]  # epochs incl. their val pass
    rows[name] = {"min_train_s": round(min(train_s), 1), "mean_train_s": round(sum(train_s) / len(train_s), 1),"wall_s": round(wall, 1), "trials": len(done), "trials_per_hour": round(3600 * len(done) / wall, 1),
                  "sum_trial_s": round(busy, 1), "mean_trial_s": round(busy / len(done), 2),
                  "overhead_per_trial_s": round((wall - busy / (2 if name == "ray_2" else 1)) / len(done), 2)}
    print(f"{name:>6}: wall {wall:6.1f} s  {rows[name]['trials_per_hour']:7.1f} trials/h  "
          f"mean trial {rows[name]['mean_trial_s']:.2f} s  overhead/trial {rows[name]['overhead_per_trial_s']:.2f} s  "
          f"training per trial {rows[name]['min_train_s']:.0f}-{max(train_s):.0f} s",
          flush=True)

ratios = {"ray_2_vs_ray_1_wall": round(rows["ray_2"]["wall_s"] / rows["ray_1"]["wall_s"], 3)}
if "local" in rows:
    ratios.update({"ray_1_vs_local_wall": round(rows["ray_1"]["wall_s"] / rows["local"]["wall_s"], 3),
                   "ray_2_vs_local_wall": round(rows["ray_2"]["wall_s"] / rows["local"]["wall_s"], 3),
                   "ray_overhead_per_trial_s": round((rows["ray_1"]["wall_s"] - rows["local"]["wall_s"]) / a.trials,
                                                     2)})
print("ratios:", json.dumps(ratios))
r2 = ratios["ray_2_vs_ray_1_wall"]
print(f"2 concurrent trials (1 thread each) vs 1 at a time: {r2:.3f}x the wall time, {1 / r2:.2f}x the throughput "
      f"(target <= 0.625x): {'PASS' if r2 <= 0.625 else 'MISS'}; shortest training in a trial "
      f"{min(r['min_train_s'] for r in rows.values()):.0f} s (wanted >= 60 s)")

# latency under concurrency vs isolation, with the study's own protocol (and anchor)
from hovit_nas.study import ANCHOR_ATTR  # noqa: E402
from hovit_nas.trial import remeasure  # noqa: E402

# wait until Ray's processes from the last run are gone, then let the machine settle
for _ in range(60):
    if subprocess.run(["pgrep", "-f", "raylet|gcs_server|ray::"], capture_output=True).returncode != 0:
        break
    time.sleep(1)
time.sleep(5)
study = optuna.load_study(study_name="ray_2", storage=f"sqlite:///{work / 'ray_2.db'}")
trials = study.get_trials(states=(TrialState.COMPLETE,))
anchor = study.user_attrs.get(ANCHOR_ATTR)
# two independent isolated measurements per trial (rounds 0,2 and 1,3), interleaved over trials
iso = remeasure({t.number: t.user_attrs for t in trials}, anchor, rounds=4)
lat_rows = []
for t in trials:
    a_ = iso[t.number][0].merged(iso[t.number][2]).median_ms
    b_ = iso[t.number][1].merged(iso[t.number][3]).median_ms
    conc = t.values[1]
    lat_rows.append({"trial": t.number, "concurrent_ms": round(conc, 3), "isolated_ms": round(a_, 3),
                     "isolated_again_ms": round(b_, 3), "ratio": round(conc / a_, 3), "isolated_ratio": round(b_ / a_, 3),
                     "concurrent_raw_ms": round(t.user_attrs["latency"].get("raw_median_ms") or conc, 3)})
    print(f"trial {t.number}: under concurrency {conc:.3f} ms, isolated {a_:.3f} ms (again {b_:.3f}), "
          f"ratio {conc / a_:.3f}  [raw in-search median {lat_rows[-1]['concurrent_raw_ms']:.3f} ms]")
worst = max(abs(r["ratio"] - 1) for r in lat_rows)
floor = max(abs(r["isolated_ratio"] - 1) for r in lat_rows)
print("latency under 2 concurrent Ray trials vs isolated ("
      + (f"anchored to {anchor['name']} at {anchor['ms']:.3f} ms" if anchor else "raw timing")
      + f"): worst deviation {100 * worst:.1f} % (target <= 10 %): {'PASS' if worst <= 0.10 else 'MISS'}; "
      f"isolated vs isolated (noise floor): {100 * floor:.1f} %")
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
(out / f"ray_vs_local{'_raw' if a.raw else ''}{a.tag}.json").write_text(json.dumps({
    "command": " ".join(["python", "benchmarks/ray_vs_local.py", *sys.argv[1:]]), "trials": a.trials,
    "budget": d["builtin_data"], "runs": rows, "ratios": ratios,
                                                   "latency_concurrent_vs_isolated": lat_rows,
                                                   "worst_latency_deviation": worst,
                                                   "noise_floor": floor, "anchor": anchor and
                                                   {k: anchor[k] for k in ("name", "ms", "threads")}},
                                                  indent=2))
