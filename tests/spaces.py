"""A tiny search space for tests: the hovit-cpu space on the built-in data at 32 px, 2 steps/epoch."""
from pathlib import Path

import yaml

from conftest import ROOT


def tiny_space(tmp_path: Path, trials: int = 4, name: str = "tiny", **builtin) -> Path:
    d = yaml.safe_load((ROOT / "search_spaces" / "hovit-cpu.yaml").read_text())
    d["name"] = name
    d["trials"] = trials
    # short timing windows: the tests check the protocol, not the figures (a user's space keeps 1 s / 3 s)
    d["latency"] = {"batch": 1, "runs": 5, "warmup": 1, "threads": 1, "min_time_s": 0.25, "anchor_time_s": 0.75}
    d["builtin_data"] = {"img_size": 32, "epochs_dense": 1, "epochs_prune": 1, "max_steps_per_epoch": 2,
                         "batch_size": 32, "trials": trials, **builtin}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p
