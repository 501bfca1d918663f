"""A fake runtime and a fake evaluator, registered through the package's own seams
(``runtimes.register``, ``evaluators.register``), so orchestration tests (admission, the fixed
point, rungs, the trial lifecycle, records) run a real study without training or timing a model.

- ``fake`` runtime: "runs" a model by sleeping in proportion to its parameter count (1 ms per
  million), so latency orders architectures by size, deterministically, in microseconds of CPU.
- ``fake`` evaluator: a config's accuracy is a fixed function of its config (a hash), reached
  linearly over its epochs (each ``HOVIT_NAS_FAKE_EPOCH_S`` seconds long, asleep); each epoch is
  reported to ``on_epoch`` (rungs decide on it), and the final scores are per-image probabilities
  whose top-1 is that accuracy (so intervals, paired comparisons and per-image records work as for
  a trained model).
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np

from hovit_nas import evaluators, runtimes
from hovit_nas.config import to_dict

FAKE = "fake"
EPOCH_S_ENV = "HOVIT_NAS_FAKE_EPOCH_S"  # the fake evaluator's seconds per epoch, asleep (default 0)


def accuracy_of(cfg) -> float:
    """The fake evaluator's final validation top-1 for ``cfg``: in [0.55, 0.95), by its model."""
    digest = hashlib.sha256(json.dumps(to_dict(cfg)["model"], sort_keys=True).encode()).digest()
    return 0.55 + 0.4 * int.from_bytes(digest[:4], "big") / 2**32


class FakeRuntime:
    name = FAKE

    @property
    def caps(self):
        return runtimes.CAPS[FAKE]

    def require(self) -> None:
        pass

    def version(self):
        return "fake-1"

    def supports(self, device) -> bool:
        return True

    def require_int8(self) -> None:
        from hovit_nas.errors import HovitError

        raise HovitError("the fake runtime has no int8")

    def compile(self, model, threads, device):
        return sum(p.numel() for p in model.parameters())

    def run(self, compiled, x):
        return lambda: time.sleep(compiled * 1e-9)

    def module(self, onnx, config, device, threads):
        raise NotImplementedError

    def quantize(self, onnx, batches, workdir):
        raise NotImplementedError


class FakeEvaluator:
    name = FAKE

    @property
    def caps(self):
        return evaluators.CAPS[FAKE]

    def study_attrs(self, study, space, splits, data, recorded):
        return {"evaluator": FAKE}  # how its trials are scored, as the supernet evaluator records it

    def restrict(self, space):
        return space

    def score(self, cfg, splits, device, guard, on_epoch):
        from hovit_nas.train import metrics_of

        acc, epochs = accuracy_of(cfg), cfg.train.epochs_dense + cfg.train.epochs_prune
        history = []
        pause = float(os.environ.get(EPOCH_S_ENV, "0"))
        for e in range(1, epochs + 1):
            time.sleep(pause)  # wall time without CPU: long enough for concurrent drivers to interleave
            rec = {"phase": "dense", "epoch": e, "epochs": epochs, "loss": 1.0 / e, "val_top1": acc * e / epochs}
            history.append(rec)
            stop = on_epoch(dict(rec, global_epoch=e)) if on_epoch is not None else None
            if stop is not None:
                return evaluators.Scored({}, None, {}, history=history, stop=stop)
        k = cfg.model.num_classes
        rng = np.random.default_rng(int(acc * 1e9))
        probs = {}
        for name in ("val", "test"):
            labels = getattr(splits, name).labels
            right = rng.random(len(labels)) < acc
            guess = np.where(right, labels, (labels + 1) % k)
            p = np.full((len(labels), k), 0.1 / max(k - 1, 1), dtype=np.float32)
            p[np.arange(len(labels)), guess] = 0.9
            probs[name] = p
        val, test = (metrics_of(getattr(splits, n), probs[n], k) for n in ("val", "test"))
        return evaluators.Scored(val, test, {n: v.astype(np.float16) for n, v in probs.items()}, history=history)


RUNTIME_CAPS = runtimes.Capabilities(exported=False, devices=("cpu", "cuda"), precisions=("fp32",), suffix=".safetensors")
EVALUATOR_CAPS = evaluators.Capabilities(trains=True, scores_test=True, estimates=False)
PLUGIN = "fake_plugin"  # HOVIT_NAS_PLUGINS=fake_plugin, with tests/ on the path: install() in a hovit-nas process


def install() -> None:
    """Register both fakes in this process for good (a hovit-nas process started with
    ``plugin_env()``: tests/fake_plugin.py calls this at import)."""
    if FAKE not in runtimes.CAPS:
        runtimes.register(FAKE, RUNTIME_CAPS, FakeRuntime)
    if FAKE not in evaluators.CAPS:
        evaluators.register(FAKE, EVALUATOR_CAPS, lambda supernet: FakeEvaluator())


def plugin_env() -> dict:
    """The environment that gives a ``hovit-nas`` process (run_cli) and the workers of a local Ray
    instance it starts both fakes, through the package's plugin hook (hovit_nas/plugins.py)."""
    from pathlib import Path

    tests = str(Path(__file__).resolve().parent)
    path = os.environ.get("PYTHONPATH")
    return {"HOVIT_NAS_PLUGINS": PLUGIN, "PYTHONPATH": f"{tests}{os.pathsep}{path}" if path else tests}


def fake_space(space, **latency):
    """``space`` (a tiny_space YAML path) timed on the fake runtime and scored by the fake
    evaluator (``--evaluator fake``, which a test passes); returns the path."""
    import yaml

    d = yaml.safe_load(space.read_text())
    d["latency"].update(runtime=FAKE, **latency)
    space.write_text(yaml.safe_dump(d, sort_keys=False))
    return space


def register(monkeypatch) -> None:
    """Register both fakes through the public seams, in registries that ``monkeypatch`` restores
    after the test (so no other test in this process sees them)."""
    for module, names in ((runtimes, ("CAPS", "REGISTRY", "_MADE")), (evaluators, ("CAPS", "_MADE_BY"))):
        for name in names:
            monkeypatch.setattr(module, name, dict(getattr(module, name)))
    runtimes.register(FAKE, RUNTIME_CAPS, FakeRuntime)
    evaluators.register(FAKE, EVALUATOR_CAPS, lambda supernet: FakeEvaluator())
