"""Can this budget tell architectures apart? A check before a long search (issue 32, item 6).

``hovit-nas check-budget --space S --data D`` trains three architectures of the space -- its
smallest, its fixed point (HoViT-B) and its largest, by deployed parameters (supernet.Subnets'
extremes) -- over ``seeds`` seeds each, at the search's own budget and data (the space's base
training, or its ``builtin_data`` budget on the built-in data), and reports:

- the seed SD (pooled over the three, on the same validation images);
- each pair's difference on validation, paired on the same images and averaged over seeds, with
  its noise (images' SE and seed SD) and whether it is beyond noise (|d| > 1.96 SE);
- what would resolve the smallest of those differences: how many validation images, or how many
  seeds per architecture (solved from SE² = SE_images²·N₀/N + 2·SD²/k; none may suffice);
- a verdict in one line and a recommendation: the budget resolves the space's extremes; or a
  longer budget, a bigger validation split, or a latency search under an accuracy floor.

Its cost is 3 x ``seeds`` trainings, against the search's ``trials`` (printed side by side).
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from . import stats

_log = logging.getLogger(__name__)


@dataclass
class Pair:
    a: str
    b: str
    difference: float  # a - b, val, mean over seeds
    se_images: float  # paired over images, the seed-averaged per-image differences
    se_seeds: float  # the study-free seed part: seed SD * sqrt(2 / seeds)
    resolved: bool
    images_needed: Optional[int]  # val images for |d| = z * SE at these seeds (None: no number suffices)
    seeds_needed: Optional[int]  # seeds per architecture for |d| = z * SE at these images (None: none suffice)

    @property
    def z(self) -> float:
        se = math.hypot(self.se_images, self.se_seeds)
        return self.difference / se if se > 0 else math.inf


@dataclass
class BudgetCheck:
    space: str
    data: str
    metric: str
    seeds: list[int]
    budget: str  # the training budget in words
    scores: dict  # architecture -> [val score per seed]
    params: dict  # architecture -> deployed parameters
    seed_sd: float
    seed_df: int
    val_images: int
    pairs: list[Pair]
    resolves: bool
    recommendation: str
    seconds: float
    search_trials: int
    seconds_per_training: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "pairs": [dict(asdict(p), z=p.z) for p in self.pairs]}


def _needed(d: float, se_img: float, sd: float, n0: int, k: int, z: float = stats.Z95) -> tuple[Optional[int], Optional[int]]:
    """(val images, seeds per architecture) at which |d| = z * SE, the other held; None when no
    number of them suffices (the other part alone is too large)."""
    target = (abs(d) / z) ** 2
    seed_part, img_part = 2 * sd ** 2 / k, se_img ** 2
    images = None if target <= seed_part or img_part == 0 else math.ceil(img_part * n0 / (target - seed_part))
    seeds = None if target <= img_part or sd == 0 else math.ceil(2 * sd ** 2 / (target - img_part))
    return images, seeds


def check_budget(space_name: str, data: Optional[str], options, *, seeds: int = 2, metric: str = "top1",
                 device: str = "auto", threads: Optional[int] = None) -> BudgetCheck:
    """Train the space's smallest architecture, its fixed point and its largest over ``seeds``
    seeds at the search's budget on ``data`` (see the module docstring).

    Raises:
        ConfigError, DataError: a bad space, data or option; TrialFailed: a NaN loss."""
    import copy

    import torch

    from .config import DataSpec, with_num_classes
    from .data import load_data
    from .device import resolve_device
    from .errors import ConfigError
    from .models import count_params, create_hovit, export
    from .space import load_space
    from .supernet import Subnets
    from .train import train_and_evaluate

    if seeds < 2:
        raise ConfigError(f"`seeds` must be >= 2 (a spread needs two), got {seeds}")
    t0 = time.time()
    space = load_space(space_name)
    if data is None:
        space = space.with_builtin_budget()
    spec = DataSpec.of(data, space.base.model.img_size, space.base.train.seed, options)
    splits = load_data(spec)
    space.base = with_num_classes(space.base, splits.num_classes)
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    sub = Subnets(space)
    archs = {"smallest": sub.smallest, space.fixed_point: space.fixed_point_config(), "largest": sub.largest_choice}
    t = space.base.train
    budget = (f"{t.epochs_dense} dense + {t.epochs_prune} pruning epochs of "
              f"{t.max_steps_per_epoch or 'all'} steps of {t.batch_size} images")
    _log.info(f"check-budget: {', '.join(archs)} x seeds {list(range(seeds))} at the search's budget ({budget}) on "
              f"{splits.description} {splits.sizes}")
    scores, probs, params, trainings = {}, {}, {}, []
    y = splits.val.labels
    for name, cfg in archs.items():
        cfg = copy.deepcopy(with_num_classes(cfg, splits.num_classes))
        params[name] = count_params(export(create_hovit(cfg)))
        for s in range(seeds):
            cfg.train = copy.deepcopy(space.base.train)
            cfg.train.seed = space.base.train.seed + s
            cfg.name = f"{name}-seed{s}"
            t1 = time.time()
            r = train_and_evaluate(cfg, splits, dev)
            trainings.append(time.time() - t1)
            p = r.scores["val"].astype(np.float32)
            probs.setdefault(name, []).append(p)
            scores.setdefault(name, []).append(stats.score(metric, y, p))
    sd, df = stats.pooled_sd(list(scores.values()))
    sd = sd or 0.0
    pairs = []
    for a, b in itertools.combinations(archs, 2):
        d = float(np.mean(scores[a]) - np.mean(scores[b]))
        ta = [stats.per_image(metric, y, p) for p in probs[a]]
        if ta[0] is not None:
            dd = np.mean(ta, 0) - np.mean([stats.per_image(metric, y, p) for p in probs[b]], 0)
            se_img = float(dd.std(ddof=1) / math.sqrt(len(dd)))
        else:
            se_img = stats.paired(metric, y, np.mean(probs[a], 0), np.mean(probs[b], 0))[1]
        se_seed = sd * math.sqrt(2 / seeds)
        resolved = abs(d) > stats.Z95 * math.hypot(se_img, se_seed)
        imgs, ks = _needed(d, se_img, sd, len(y), seeds)
        pairs.append(Pair(a, b, d, se_img, se_seed, resolved, imgs, ks))
    resolves = any(p.resolved for p in pairs)
    hardest = min(pairs, key=lambda p: abs(p.z))
    if all(p.resolved for p in pairs):
        rec = "the budget resolves the space's extremes and the fixed point from each other: search with it"
    elif resolves:
        rec = (f"the budget resolves some pairs but not {hardest.a} vs {hardest.b}: front members that close will be "
               "within noise; confirm the front (`hovit-nas confirm`) and pin by non-inferiority")
    else:
        rec = ("the budget does NOT tell even the space's smallest and largest architectures apart beyond noise: a "
               "search would rank noise. Use a longer budget (more epochs or steps per epoch), a bigger validation "
               "split, or search latency under an accuracy floor (--max-latency with a floor on a confirmed "
               "reference)")
    spent = time.time() - t0
    per = float(np.mean(trainings)) if trainings else 0.0
    return BudgetCheck(space.name, splits.description, metric, [space.base.train.seed + s for s in range(seeds)],
                       budget, scores, params, sd, df, len(y), pairs, resolves, rec, round(spent, 1), space.trials,
                       round(per, 2))


def format_check(c: BudgetCheck) -> str:
    pts = lambda v: f"{100 * v:+.2f}" if c.metric != "nll" else f"{v:+.4f}"
    lines = [f"check-budget: space {c.space} on {c.data}; val {c.metric} over {c.val_images} images; {c.budget}; "
             f"seeds {c.seeds}",
             "  " + "; ".join(f"{a} ({c.params[a] / 1e6:.2f} M params): " + ", ".join(f"{v:.4f}" for v in s)
                              for a, s in c.scores.items()),
             f"  seed SD {100 * c.seed_sd:.2f} points ({c.seed_df} df, pooled over the three, same images)"
             if c.metric != "nll" else f"  seed SD {c.seed_sd:.4f} ({c.seed_df} df)"]
    for p in c.pairs:
        need = [x for x in (f"{p.images_needed:,} val images" if p.images_needed else "",
                            f"{p.seeds_needed} seeds each" if p.seeds_needed else "") if x]
        how = ("to resolve it: " + " or ".join(need)) if need else "no number of val images or seeds alone resolves it"
        lines.append(f"  {p.a} - {p.b}: {pts(p.difference)} (SE images {pts(p.se_images).lstrip('+')}, seeds "
                     f"{pts(p.se_seeds).lstrip('+')}; z {p.z:+.2f}): "
                     + ("beyond noise" if p.resolved else f"within noise; {how}"))
    verdict = ("RESOLVES" if all(p.resolved for p in c.pairs) else "RESOLVES SOME PAIRS" if c.resolves
               else "DOES NOT RESOLVE")
    lines.append(f"verdict: {verdict}: {c.recommendation}")
    lines.append(f"cost: {len(c.seeds) * 3} trainings in {c.seconds:.0f} s ({c.seconds_per_training:.1f} s each), "
                 f"against the search's {c.search_trials} trials (~{c.search_trials * c.seconds_per_training:.0f} s "
                 f"at that rate): {3 * len(c.seeds) / max(c.search_trials, 1):.2f}x a search")
    return "\n".join(lines)
