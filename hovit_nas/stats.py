"""Decisions under noise (issue 32): intervals, paired comparisons on the same images,
noise-aware dominance, a hypervolume interval, non-inferiority and the one-standard-error rule.

A trial's validation score is one draw: another training seed moves it (seed noise, SD
``sd_seed``), and so would other validation images (sampling noise, SE ``se_images``). Its
latency is one measurement on a shared machine (relative spread ``cv``). Every rule here takes
those three figures, measured by the study itself (the fixed point trained ``noise_seeds`` times:
study/noise in record.py), never assumed.

- **accuracy interval**: ``score ± z·sqrt(se_images² + sd_seed²)``: where the score of this
  architecture would land for another seed and other images of the same kind.
- **latency interval**: ``ms · exp(±z·cv)`` (latencies are compared as ratios).
- **a difference beyond noise**: two trials scored on the *same* images are compared paired:
  the images' part of the noise is the SE of the per-image differences (top-1: the paired
  normal test, asymptotically McNemar's; NLL: the per-image log-loss differences; AUC and the
  macro scores: a paired bootstrap over images, stratified by class), and each trial adds its
  seed noise: ``|d| > z·sqrt(se_paired² + 2·sd_seed²)``. Latency: ``|log(a/b)| > z·sqrt(2)·cv``.
- **noise-aware dominance**: ``a`` dominates ``b`` when it is at least as good on both axes and
  better beyond noise on at least one (Deb's dominance with an indifference band, as in
  epsilon-dominance, Laumanns et al. 2002, with the band set by the measured noise).
- **non-inferiority** (the medical-device frame, e.g. FDA/EMA guidance on non-inferiority
  trials): a candidate is non-inferior to a reference within margin ``M`` when the one-sided 95 %
  lower bound of (candidate − reference) is above ``−M``.
- **one-standard-error rule** (Breiman et al. 1984, *Classification and Regression Trees*; the
  rule ``cv.glmnet`` uses): the fastest model within one SE of the best score.

``z`` is 1.96 (two-sided 95 %) for intervals and "beyond noise", 1.645 (one-sided 95 %) for
non-inferiority. Nothing here imports torch.
"""
from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 %
Z95_ONE_SIDED = 1.6448536269514722  # one-sided 95 %
BOOTSTRAP = 400  # paired bootstrap resamples for the scores without a per-image form
MAXIMIZED = {"top1": True, "f1_macro": True, "balanced": True, "auc": True, "nll": True}  # nll enters as -NLL


@dataclass(frozen=True)
class Interval:
    """An estimate and its 95 % interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


# -------------------------------------------------------------------------- per-image scores
def encode_probs(p: np.ndarray) -> str:
    """Class probabilities (N, K) as float16, zlib-compressed, base64: what a trial stores."""
    return base64.b64encode(zlib.compress(np.asarray(p, dtype=np.float16).tobytes(), 6)).decode()


def decode_probs(text: str, shape: Sequence[int]) -> np.ndarray:
    """The inverse of :func:`encode_probs`: (N, K) float32."""
    raw = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.float16)
    return raw.reshape(tuple(shape)).astype(np.float32)


def encode_labels(y: np.ndarray) -> str:
    """Class indices (N,) as uint16, zlib-compressed, base64: a study's split labels."""
    return base64.b64encode(zlib.compress(np.asarray(y, dtype=np.uint16).tobytes(), 9)).decode()


def decode_labels(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint16).astype(np.int64)


def objective(metrics: dict, metric: str) -> float:
    """The accuracy-axis value of ``metric`` from a metrics dict (metrics.classification_metrics):
    ``top1``, ``f1_macro``, ``balanced`` (balanced accuracy = macro recall), ``auc``, or ``nll``
    entered as ``-nll`` (mean log-likelihood), so that higher is better for every one of them."""
    if metric == "balanced":
        return float(metrics["recall_macro"])
    if metric == "nll":
        return -float(metrics["nll"])
    v = metrics[metric]
    return float("nan") if v is None else float(v)


def per_image(metric: str, y: np.ndarray, p: np.ndarray) -> Optional[np.ndarray]:
    """The per-image terms whose mean is ``metric`` (top-1: correct or not; nll: the log-likelihood
    of the true class), or None for a score with no per-image form (AUC, macro scores)."""
    if metric == "top1":
        return (p.argmax(1) == y).astype(np.float64)
    if metric == "nll":
        return np.log(np.clip(p[np.arange(len(y)), y].astype(np.float64), 1e-15, 1.0))
    return None


def score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """``metric`` of probabilities ``p`` (N, K) against labels ``y`` (metrics.py's definitions)."""
    from .metrics import classification_metrics

    return objective(classification_metrics(y, p.argmax(1), p.shape[1], p), metric)


def _strata(y: np.ndarray, rng: np.random.Generator, b: int) -> np.ndarray:
    """``b`` bootstrap resamples of image indices, each class resampled within itself: (b, N)."""
    out = np.empty((b, len(y)), dtype=np.int64)
    pos = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        out[:, pos:pos + len(idx)] = idx[rng.integers(0, len(idx), (b, len(idx)))]
        pos += len(idx)
    return out


def images_se(metric: str, y: np.ndarray, p: np.ndarray, seed: int = 0) -> float:
    """The SE of ``metric`` over images: binomial for top-1, the per-image SD / sqrt(N) for NLL,
    a stratified bootstrap otherwise."""
    terms = per_image(metric, y, p)
    if terms is not None:
        return float(terms.std(ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else 0.0
    rng = np.random.default_rng(seed)
    vals = [score(metric, y[i], p[i]) for i in _strata(y, rng, BOOTSTRAP // 4)]
    return float(np.std(vals, ddof=1))


def paired(metric: str, y: np.ndarray, pa: np.ndarray, pb: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(a − b, the SE of that difference over images) for two models scored on the same images:
    paired, so the images' common difficulty cancels."""
    ta, tb = per_image(metric, y, pa), per_image(metric, y, pb)
    if ta is not None:
        d = ta - tb
        return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    rng = np.random.default_rng(seed)
    diffs = [score(metric, y[i], pa[i]) - score(metric, y[i], pb[i]) for i in _strata(y, rng, BOOTSTRAP)]
    return score(metric, y, pa) - score(metric, y, pb), float(np.std(diffs, ddof=1))


# ------------------------------------------------------------------------------ noise figures
def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[Optional[float], int]:
    """The pooled within-group SD of several groups of repeated measurements (each group one
    architecture over seeds), and its degrees of freedom; (None, 0) with no repeat."""
    ss, df = 0.0, 0
    for g in groups:
        g = [float(x) for x in g if x is not None and math.isfinite(x)]
        if len(g) > 1:
            ss += float(np.sum((np.asarray(g) - np.mean(g)) ** 2))
            df += len(g) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def latency_cv_within(lat: dict) -> float:
    """A latency record's own relative spread: the SE of its median over its runs, from the
    interquartile range (the notch rule, McGill, Tukey & Larsen 1978: 1.57·IQR/sqrt(n)), over the
    median. One window only: the spread between windows (drift) is measured by the replicates."""
    med, iqr, n = lat.get("median_ms") or 0.0, lat.get("iqr_ms") or 0.0, max(int(lat.get("runs") or 1), 1)
    return float(1.57 * iqr / math.sqrt(n) / med / Z95) if med > 0 else 0.0


def accuracy_interval(value: float, se_images: float, sd_seed: Optional[float], z: float = Z95) -> Interval:
    half = z * math.sqrt(se_images ** 2 + (sd_seed or 0.0) ** 2)
    return Interval(value, value - half, value + half)


def latency_interval(ms: float, cv: float, z: float = Z95) -> Interval:
    return Interval(ms, ms * math.exp(-z * cv), ms * math.exp(z * cv))


def accuracy_beyond_noise(d: float, se_paired: float, sd_seed: Optional[float], z: float = Z95,
                          seed_runs: tuple[int, int] = (1, 1)) -> bool:
    """Whether a paired difference ``d`` of two scores is beyond their noise: the images' SE of
    the paired difference and each side's seed noise (``sd_seed``² over its ``seed_runs`` runs)."""
    seed_var = (sd_seed or 0.0) ** 2 * (1 / seed_runs[0] + 1 / seed_runs[1])
    return abs(d) > z * math.sqrt(se_paired ** 2 + seed_var)


def latency_beyond_noise(a_ms: float, b_ms: float, cv_a: float, cv_b: float, z: float = Z95) -> bool:
    """Whether two latencies differ beyond their measurement spread (as a ratio, on a log scale)."""
    return abs(math.log(a_ms / b_ms)) > z * math.sqrt(cv_a ** 2 + cv_b ** 2)


# ----------------------------------------------------------------------------------- dominance
def dominates_beyond_noise(a: dict, b: dict, acc_beyond: Callable[[dict, dict], bool], z: float = Z95) -> bool:
    """``a``, ``b``: rows with ``accuracy``, ``latency_ms`` and ``cv``; ``acc_beyond(a, b)``:
    whether their accuracy difference is beyond noise. ``a`` dominates ``b`` beyond noise when it
    is at least as good on both axes and better beyond noise on at least one."""
    if a["accuracy"] < b["accuracy"] or a["latency_ms"] > b["latency_ms"]:
        return False
    return latency_beyond_noise(a["latency_ms"], b["latency_ms"], a["cv"], b["cv"], z) or acc_beyond(a, b)


def noise_aware_front(rows: list[dict], beats: Callable[[dict, dict], bool]) -> list[dict]:
    """The rows no other row dominates beyond noise (``beats(a, b)``), in input order: every
    point-front member, and any trial whose shortfall is within noise."""
    return [b for b in rows if not any(a is not b and beats(a, b) for a in rows)]


def hypervolume_interval(rows: list[dict], ref: tuple[float, float], hv: Callable, sd_seed: Optional[float],
                         b: int = 500, seed: int = 0) -> Interval:
    """The hypervolume with a parametric bootstrap 95 % interval: each resample draws every
    trial's accuracy from N(accuracy, se_images² + sd_seed²) and its latency from
    latency·exp(N(0, cv²)), independently, then takes the hypervolume of the resampled points.

    The front is a maximum over noisy points, so resampled fronts reach further out than the
    observed one (the winner's curse) and the plain percentile interval lies above the observed
    value. The interval is therefore the basic (reverse-percentile) bootstrap interval,
    [2·HV − q97.5, 2·HV − q2.5] (Davison & Hinkley 1997, ch. 5), which corrects that bias to
    first order. ``rows``: accuracy, latency_ms, se (images), cv; ``hv(points, ref)``:
    pareto.hypervolume_2d."""
    pts = [(r["accuracy"], r["latency_ms"]) for r in rows]
    value = hv(pts, ref)
    if not rows:
        return Interval(value, value, value)
    rng = np.random.default_rng(seed)
    acc = np.array([r["accuracy"] for r in rows])
    lat = np.array([r["latency_ms"] for r in rows])
    sd = np.sqrt(np.array([r.get("se") or 0.0 for r in rows]) ** 2 + (sd_seed or 0.0) ** 2)
    cv = np.array([r.get("cv") or 0.0 for r in rows])
    draws = [hv(list(zip(acc + sd * rng.standard_normal(len(acc)), lat * np.exp(cv * rng.standard_normal(len(lat))))),
                ref) for _ in range(b)]
    q_lo, q_hi = np.percentile(draws, [2.5, 97.5])
    return Interval(value, float(max(0.0, 2 * value - q_hi)), float(2 * value - q_lo))


# ------------------------------------------------------------------------ picking under noise
@dataclass(frozen=True)
class Comparison:
    """Candidate − reference on the same images and seeds: the mean difference, its SE and the
    one-sided 95 % lower bound; ``n_seeds`` seed pairs entered."""

    diff: float
    se: float
    lower: float
    n_seeds: int

    def non_inferior(self, margin: float) -> bool:
        return self.lower > -margin

    def to_dict(self) -> dict:
        return {"difference": self.diff, "se": self.se, "lower_95_one_sided": self.lower, "seeds": self.n_seeds}


def compare_to_reference(per_seed: Sequence[tuple[float, float]], seed_var: float = 0.0,
                         level: float = 0.95) -> Comparison:
    """Candidate − reference, paired on the same images, from matched runs: ``per_seed`` holds
    (the difference on the same images, its SE over images) for each seed both were trained with.

    With two or more seeds the spread of the per-seed differences carries the seed noise: the SE
    of their mean is sqrt(var(d)/n + mean(SE_images²)) -- the images are the same in every seed,
    so their part is not averaged away -- and the bound uses Student's t with n − 1 degrees of
    freedom. With one seed (an unconfirmed search trial), the seed noise must
    come from elsewhere: ``seed_var`` (the study's measured seed variance of the difference, e.g.
    sd² · (1 + 1/k) against a fixed point over k seeds), with the normal quantile. Returns the
    one-sided ``level`` lower bound."""
    from scipy.stats import norm, t as student_t

    d = np.array([x for x, _ in per_seed], dtype=float)
    se_img = np.array([s for _, s in per_seed], dtype=float)
    n = len(d)
    if n >= 2:
        se = math.sqrt(float(d.var(ddof=1)) / n + float(np.mean(se_img ** 2)))
        q = float(student_t.ppf(level, n - 1))
    else:
        se = math.sqrt(float(se_img[0]) ** 2 + seed_var)
        q = float(norm.ppf(level))
    mean = float(d.mean())
    return Comparison(mean, se, mean - q * se, n)


def one_se_rule(rows: list[dict]) -> Optional[dict]:
    """The fastest row whose accuracy is within one SE (its ``se_total``) of the best row's:
    rows with ``accuracy``, ``latency_ms`` and ``se_total``. None for no rows."""
    if not rows:
        return None
    best = max(rows, key=lambda r: r["accuracy"])
    ok = [r for r in rows if r["accuracy"] >= best["accuracy"] - best["se_total"]]
    return min(ok, key=lambda r: (r["latency_ms"], -r["accuracy"]))
