"""The supernet-sweep report (run.sh step 5): both sweeps' figures, side by side, as markdown."""
import json
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

HERE = Path(__file__).resolve().parent


def load(name: str) -> dict:
    return json.loads((HERE / name / "sweep.json").read_text())


def key(s: dict) -> str:
    return json.dumps(s["params"], sort_keys=True)


def tau_ci(x: np.ndarray, y: np.ndarray, boots: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    t = kendalltau(x, y).statistic
    bs = [kendalltau(x[i], y[i]).statistic for i in (rng.integers(0, len(x), len(x)) for _ in range(boots))]
    return float(t), float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))


def main() -> None:
    runs = {name: load(name) for name in ("fast", "default") if (HERE / name / "sweep.json").is_file()}
    print("# supernet sweep: 1,000 subnets of hovit-wide-cpu at 64 px (pcam-subset)\n")
    first = next(iter(runs.values()))
    print(f"Target {first['target']['name']} on {first['cpu']}; supernet {first['supernet']}; latency predictor "
          f"held out: τ {first['predictor']['kendall_tau']:.3f}, bounds ×{first['predictor']['ratio_p05']:.3f} .. "
          f"×{first['predictor']['ratio_p95']:.3f} (n={first['predictor']['n']}).\n")
    print("| run | val images | BN images | subnets | timed (rounds) | front | estimate s | timing s | total s | "
          "timed outside the bounds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in runs.items():
        sec, sc = r["seconds"], r["scale"]
        print(f"| {name} | {r['val_images']} | {r['bn_images']} | {len(r['subnets'])} | "
              f"{sum(r['rounds'])} ({', '.join(map(str, r['rounds']))}) | {sum(s['front'] for s in r['subnets'])} | "
              f"{sec['estimate']:.0f} | {sec['measure']:.0f} | {sec['total']:.0f} ({sec['total'] / 60:.1f} min) | "
              f"{sc['outside']:.0%} of {sc['n']} (median measured / predicted {sc['median_ratio']:.3f}) |")
    if len(runs) == 2:
        fast, full = ({key(s): s for s in runs[n]["subnets"]} for n in ("fast", "default"))
        common = sorted(set(fast) & set(full))
        x = np.array([fast[k]["val_top1"] for k in common])
        y = np.array([full[k]["val_top1"] for k in common])
        t, lo, hi = tau_ci(x, y)
        print(f"\nThe same {len(common)} subnets in both runs. The fast estimates against the default ones: Kendall τ "
              f"{t:.3f} (95 % bootstrap interval {lo:.3f} .. {hi:.3f}); mean |difference| "
              f"{np.abs(x - y).mean() * 100:.2f} points, largest {np.abs(x - y).max() * 100:.2f}.")
        ff = {k for k in common if full[k]["front"]}
        fa = {k for k in common if fast[k]["front"]}
        print(f"\nDefault front: {len(ff)} subnets; fast front: {len(fa)}; on both: {len(ff & fa)}. Default front "
              f"members the fast run timed: {sum(fast[k]['measured_ms'] is not None for k in ff)} of {len(ff)}.")


if __name__ == "__main__":
    main()
