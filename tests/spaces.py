"""A tiny search space for tests: the hovit-cpu space on the built-in data at 32 px, 2 steps/epoch."""
from pathlib import Path

import yaml

from conftest import ROOT


def tiny_space(tmp_path: Path, trials: int = 4, name: str = "tiny", noise_seeds: int = 1, **builtin) -> Path:
    d = yaml.safe_load((ROOT / "search_spaces" / "hovit-cpu.yaml").read_text())
    d["name"] = name
    d["trials"] = trials
    # short timing windows: the tests check the protocol, not the figures (a user's space keeps 1 s / 3 s)
    d["latency"] = {"batch": 1, "runs": 5, "warmup": 1, "threads": 1, "min_time_s": 0.25, "anchor_time_s": 0.75}
    d["builtin_data"] = {"img_size": 32, "epochs_dense": 1, "epochs_prune": 1, "max_steps_per_epoch": 2,
                         "batch_size": 32, "trials": trials, **builtin}
    d["noise"] = {"seeds": noise_seeds}  # 1: the fixed point once (the replicates have tests of their own)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def tiny_real_space(tmp_path: Path, trials: int = 1, name: str = "tiny-real") -> Path:
    """The tiny space with its built-in budget as the base budget too, for a search on real data
    (``--data``): 32 px, one dense and one pruning epoch of 2 steps."""
    p = tiny_space(tmp_path, trials, name)
    d = yaml.safe_load(p.read_text())
    b = d["builtin_data"]
    d["base"]["model"]["img_size"] = b["img_size"]
    d["base"]["train"].update(epochs_dense=b["epochs_dense"], epochs_prune=b["epochs_prune"],
                              max_steps_per_epoch=b["max_steps_per_epoch"], batch_size=b["batch_size"])
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p
