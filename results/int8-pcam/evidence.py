"""Issue 22, item 5: the OpenVINO-int8 study on pcam-subset at 96 px, against EfficientNet-B0 and
LeViT-128S, on three deployment targets (ONNX Runtime fp32, OpenVINO fp32, OpenVINO int8; CPU,
1 thread, batch 1, 96 px).

1. Every completed trial's exported skeleton, and both baselines, are timed on the three targets
   in this one process, anchored to HoViT-B on each target (each target's own calibration), in
   `ROUNDS` interleaved rounds (median of the rounds).
2. The baselines are trained with the trials' budget (the space's train block: 2+1 epochs of 30
   steps, batch 64, lr 2e-3; AdamW and schedule as for HoViT: train.train_plain), then post-training
   quantized for OpenVINO the way the trials are (128 train images, NNCF): fp32 and int8 val/test.
3. Per target: the Pareto front of (val top-1 of the model that runs there, latency there), each
   baseline, the int8 accuracy drop, whether a front model reaches EfficientNet-B0's val AND test
   top-1 at <= 0.5x its latency there; and Kendall tau of the trials' latencies between targets.

    python results/int8-pcam/evidence.py STUDY STORAGE DATA > results/int8-pcam/evidence.md
"""
import json
import logging
import sys
import time
from pathlib import Path

import optuna
import torch
from scipy.stats import kendalltau

from hovit_nas.config import DataSpec, TrainConfig, run_config_from_dict
from hovit_nas.data import load_data
from hovit_nas.dominance import non_dominated
from hovit_nas.latency import calibrate, measure_latency
from hovit_nas.models import create_baseline, create_hovit, export, hovit_b
from hovit_nas.train import quantize_int8, train_plain

TARGETS = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "int8")]
BASELINES = ("efficientnet_b0", "levit_128s")
ROUNDS, THREADS, IMG = 2, 1, 96
OUT = Path(__file__).parent


def main(study_name: str, storage: str, data: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    space = study.user_attrs["space_def"]
    t = space["base"]["train"]
    budget = TrainConfig(epochs_dense=t["epochs_dense"], epochs_prune=t["epochs_prune"], batch_size=t["batch_size"],
                         lr=t["lr"], max_steps_per_epoch=t["max_steps_per_epoch"], seed=0)
    torch.set_num_threads(2)
    splits = load_data(DataSpec.of(data, IMG, 0))

    base_models, base_scores = {}, {}
    for name in BASELINES:  # trained with the trials' budget, then quantized as the trials are
        t0 = time.time()
        model = create_baseline(name, num_classes=splits.num_classes, img_size=IMG)
        fp32 = train_plain(model, splits, budget, "cpu", name=name)
        q8 = quantize_int8(model.eval(), splits, "openvino", threads=THREADS)
        base_models[name] = model.eval()
        base_scores[name] = {"fp32": {"val": fp32["val_top1"], "test": fp32["top1"]},
                             "int8": {"val": q8.val["top1"], "test": q8.test["top1"]}, "train_s": round(time.time() - t0)}
        logging.info(f"{name}: {base_scores[name]}")

    models = {f"trial {tr.number}": export(create_hovit(run_config_from_dict(tr.user_attrs["config"], "trial")))
              for tr in trials}
    models.update(base_models)
    lat = {tgt: {k: [] for k in models} for tgt in TARGETS}
    anchors = {}
    torch.set_num_threads(THREADS)
    ref = export(create_hovit(hovit_b(IMG, splits.num_classes)))
    for rt, prec in TARGETS:
        anchors[(rt, prec)] = calibrate("hovit_b", ref, IMG, seconds=3.0, threads=THREADS, runtime=rt, precision=prec)
    for r in range(ROUNDS):
        for tgt in TARGETS:
            for k, m in models.items():
                lat[tgt][k].append(measure_latency(m, IMG, threads=THREADS, runtime=tgt[0], precision=tgt[1],
                                                   anchor=anchors[tgt], min_time_s=0.5).median_ms)
        logging.info(f"round {r + 1}/{ROUNDS} timed")
    med = {tgt: {k: float(torch.tensor(v).median()) for k, v in d.items()} for tgt, d in lat.items()}

    scores = {}
    for tr in trials:
        a = tr.user_attrs
        scores[f"trial {tr.number}"] = {"fp32": {"val": a["val_fp32"]["top1"], "test": a["test_fp32"]["top1"]},
                                        "int8": {"val": a["val"]["top1"], "test": a["test"]["top1"]},
                                        "arch": a["config"]["model"], "fixed_point": "fixed_point" in a}
    scores.update(base_scores)
    report(study, trials, scores, med, anchors)


def report(study, trials, scores, med, anchors) -> None:
    cpu = next(t.user_attrs["latency"]["device_name"] for t in trials)
    print(f"# OpenVINO int8 search on pcam-subset at 96 px: three deployment targets\n")
    print(f"Study `{study.study_name}`: {len(trials)} completed trials (HoViT-B fixed point included), space "
          f"`{study.user_attrs['space']}`, target `{study.user_attrs['deployment_target']['name']}`. "
          f"CPU: {cpu}; {THREADS} thread, batch 1, {IMG} px. Latencies: median of {ROUNDS} interleaved rounds in one "
          f"process, each anchored to HoViT-B on its own target (anchor ms: "
          + ", ".join(f"{rt} {p} {a.ms:.3f}" for (rt, p), a in anchors.items()) + ").\n")
    keys = [f"trial {t.number}" for t in trials]
    out = {"targets": {}, "tau": {}, "scores": scores, "latency_ms": {f"{rt}/{p}": d for (rt, p), d in med.items()}}
    for rt, prec in TARGETS:
        d = med[(rt, prec)]
        front = sorted(non_dominated(keys, key=lambda k: (scores[k][prec]["val"], d[k])), key=lambda k: d[k])
        eff = scores["efficientnet_b0"][prec]
        ok = [k for k in front if scores[k][prec]["val"] >= eff["val"] and scores[k][prec]["test"] >= eff["test"]
              and d[k] <= 0.5 * d["efficientnet_b0"]]
        print(f"## {rt} {prec}\n")
        print("| model | val top-1 | test top-1 | int8 val change | latency ms | x EfficientNet-B0 |")
        print("|---|---|---|---|---|---|")
        for k in front + list(BASELINES):
            s = scores[k]
            drop = s["int8"]["val"] - s["fp32"]["val"]
            name = k + (" (HoViT-B)" if s.get("fixed_point") else "") + (" (front)" if k in front else " (baseline)")
            print(f"| {name} | {s[prec]['val']:.4f} | {s[prec]['test']:.4f} | {drop:+.4f} | {d[k]:.3f} | "
                  f"{d[k] / d['efficientnet_b0']:.2f} |")
        verdict = (f"yes: {', '.join(ok)}" if ok else "no front model does")
        print(f"\nA front model with at least EfficientNet-B0's val ({eff['val']:.4f}) and test ({eff['test']:.4f}) "
              f"top-1 at <= 0.5x its latency ({0.5 * d['efficientnet_b0']:.3f} ms): **{verdict}**.\n")
        out["targets"][f"{rt}/{prec}"] = {"front": front, "meets_half_latency_of_efficientnet_b0": ok}
    print("## Do the targets rank the trials' latencies alike?\n")
    print("| targets | Kendall tau | p |")
    print("|---|---|---|")
    for i, a in enumerate(TARGETS):
        for b in TARGETS[i + 1:]:
            res = kendalltau([med[a][k] for k in keys], [med[b][k] for k in keys])
            out["tau"][f"{a[0]}/{a[1]} vs {b[0]}/{b[1]}"] = [res.statistic, res.pvalue]
            print(f"| {a[0]} {a[1]} vs {b[0]} {b[1]} | {res.statistic:.3f} | {res.pvalue:.2g} |")
    drops = [scores[k]["int8"]["val"] - scores[k]["fp32"]["val"] for k in keys]
    print(f"\nint8 val top-1 change over the {len(keys)} trials: mean {sum(drops) / len(drops):+.4f}, "
          f"min {min(drops):+.4f}, max {max(drops):+.4f}.")
    (OUT / "evidence.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
