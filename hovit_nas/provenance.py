"""Provenance: what an artefact was made from, written by every producer and checked by every
consumer (issue 29).

An artefact that later code trusts -- a run directory, an exported model (``.safetensors``,
``.onnx``, int8 included), a supernet, a latency profile, a study, a confirmation -- carries one
:class:`Provenance` record:

- **data** (:class:`DataRecord`): where it came from (``source``, the split description), the
  split rule (seed, fractions, split index, caps), the class names in index order, and each
  split's *membership*: its size and a digest of its images' content ids with their labels. A
  content id is the first 8 bytes of BLAKE2b over the image's decoded uint8 pixels at the
  artefact's resolution, so a renamed or copied file is the same image, and a re-split is caught
  even when the folder is the same. A model also keeps a compact sketch of its *training* split
  (``train_ids``) so that ``eval`` can count how many images it is asked to score it was trained on.
- **space**: name and SHA-256 of its definition (``space.Space.to_dict()``, canonical JSON).
- **img_size**: the resolution.
- **target** and **anchor**: the deployment target (target.py) and the anchor calibration
  (latency.Calibration) latency figures were measured against.

Consumers compare only the fields they depend on: a mismatch that would give a wrong result
raises :class:`ProvenanceError` (exit 2) naming both sides; a harmless one is logged as a
warning saying why it is harmless. An artefact written before provenance existed loads with a
warning that it carries none (:func:`legacy`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from .errors import HovitError

if TYPE_CHECKING:
    from .data import Images, Splits
    from .space import Space

VERSION = 1
_log = logging.getLogger(__name__)
STUDY_ATTR = "provenance"  # the study user attr (and a confirmation's): Provenance.to_dict(sketch=False)
IDS_FILE = "ids.npy"  # per-image content ids, kept in the dataset cache entry beside images.u8
_IDS: dict[str, np.ndarray] = {}  # per process: ids of a cache entry (or an in-memory split), by its path


class ProvenanceError(HovitError):
    """An artefact was made from other data, classes, space, resolution or target than the one it
    is used with, in a way that would give a wrong result (CLI exit 2)."""


# ------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class SplitRecord:
    """One split's membership: ``n`` images whose content ids and labels hash to ``digest``."""

    n: int
    digest: str  # hex SHA-256 of the sorted (content id, label) pairs


@dataclass(frozen=True)
class DataRecord:
    """The data an artefact was made from (see the module docstring)."""

    source: str  # Splits.description: "class folder /path", "split folders /path", "MedMNIST npz /path", builtin
    classes: tuple[str, ...]  # class names in index order (output k of the model is classes[k])
    img_size: int
    splits: dict  # "train" | "val" | "test" -> SplitRecord
    rule: dict = field(default_factory=dict)  # the split rule: seed, val_frac, test_frac, split_index, ...
    fingerprint: str = ""  # hex SHA-256 over the classes and every split's digest: the data as a whole
    train_ids: Optional[str] = None  # sorted 32-bit prefixes of the train split's ids, delta-coded, zlib, base64
    names_are_indices: bool = False  # .npz and built-in data name classes by index only

    def split(self, name: str) -> SplitRecord:
        return self.splits[name]

    def short(self) -> str:
        """One phrase naming it: source, sizes and fingerprint."""
        sizes = "/".join(str(self.splits[s].n) for s in ("train", "val", "test") if s in self.splits)
        seed = self.rule.get("seed")
        return f"{self.source} ({sizes}{'' if seed is None else f', split seed {seed}'}, data {self.fingerprint[:12]})"

    def train_sketch(self) -> Optional[np.ndarray]:
        """The training split's 32-bit id prefixes, sorted (None when not kept)."""
        if not self.train_ids:
            return None
        deltas = np.frombuffer(zlib.decompress(base64.b64decode(self.train_ids)), dtype=np.uint32)
        return np.cumsum(deltas, dtype=np.uint64).astype(np.uint32)

    def to_dict(self, sketch: bool = True) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        if not sketch:
            d["train_ids"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataRecord":
        splits = {k: SplitRecord(**v) for k, v in (d.get("splits") or {}).items()}
        return cls(d["source"], tuple(d["classes"]), int(d["img_size"]), splits, dict(d.get("rule") or {}),
                   d.get("fingerprint", ""), d.get("train_ids"), bool(d.get("names_are_indices", False)))


@dataclass(frozen=True)
class SpaceRecord:
    name: str
    sha256: str

    def short(self) -> str:
        return f"space {self.name} ({self.sha256[:12]})"


@dataclass(frozen=True)
class Provenance:
    """What one artefact was made from; any field may be None where it does not apply."""

    kind: str  # run | model | supernet | profile | study | confirmation
    data: Optional[DataRecord] = None
    space: Optional[SpaceRecord] = None
    img_size: Optional[int] = None
    target: Optional[dict] = None  # target.DeploymentTarget.to_dict()
    anchor: Optional[dict] = None  # latency.Calibration.to_dict() (its config left out)
    version: int = VERSION
    made_by: str = ""

    def to_dict(self, sketch: bool = True) -> dict:
        return {"version": self.version, "made_by": self.made_by or _made_by(), "kind": self.kind,
                "data": None if self.data is None else self.data.to_dict(sketch),
                "space": None if self.space is None else asdict(self.space), "img_size": self.img_size,
                "target": self.target, "anchor": self.anchor}

    def to_json(self, sketch: bool = True) -> str:
        return json.dumps(self.to_dict(sketch), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> Optional["Provenance"]:
        """The record, or None for ``None`` / an empty dict (an artefact from before provenance).

        Raises:
            ProvenanceError: a record of a newer version, or one that cannot be read."""
        if not d:
            return None
        try:
            if int(d.get("version", 1)) > VERSION:
                raise ProvenanceError(f"provenance version {d['version']} is newer than this hovit-nas reads "
                                      f"({VERSION}); upgrade hovit-nas")
            return cls(d["kind"], DataRecord.from_dict(d["data"]) if d.get("data") else None,
                       SpaceRecord(**d["space"]) if d.get("space") else None, d.get("img_size"), d.get("target"),
                       d.get("anchor"), int(d.get("version", 1)), d.get("made_by", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProvenanceError(f"unreadable provenance record ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_json(cls, text: Optional[str]) -> Optional["Provenance"]:
        if not text:
            return None
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ProvenanceError(f"unreadable provenance record (not JSON: {exc.msg})") from None

    def with_(self, **changes: Any) -> "Provenance":
        from dataclasses import replace

        return replace(self, **changes)


def _made_by() -> str:
    try:
        from importlib.metadata import version

        return f"hovit-nas {version('hovit-nas')}"
    except Exception:  # not installed (a source checkout on PYTHONPATH)
        return "hovit-nas"


# ------------------------------------------------------------------------------ the producers
def image_ids(images: "Images") -> np.ndarray:
    """Content ids of a split's images, (N,) uint64: the first 8 bytes of BLAKE2b over each
    image's uint8 pixels (C, H, W) as cached. Kept in the dataset cache entry (``ids.npy``) when
    it is writable, and per process, so each split is hashed once."""
    key = str(images.cache) if images.cache is not None else f"mem:{id(images.images)}"
    if key in _IDS and len(_IDS[key]) == len(images):
        return _IDS[key]
    f = Path(images.cache) / IDS_FILE if images.cache is not None else None
    ids = None
    if f is not None and f.is_file():
        try:
            ids = np.load(f)
            if ids.shape != (len(images),) or ids.dtype != np.uint64:
                ids = None
        except (OSError, ValueError):
            ids = None
    if ids is None:
        arr = images.images
        ids = np.empty(len(arr), dtype=np.uint64)
        for i in range(len(arr)):
            ids[i] = int.from_bytes(hashlib.blake2b(np.ascontiguousarray(arr[i]).data, digest_size=8).digest(),
                                    "little")
        if f is not None:
            tmp = f.with_name(f"{IDS_FILE}.{id(ids)}.tmp.npy")
            try:
                np.save(tmp, ids)
                tmp.replace(f)
            except OSError:  # a read-only cache: computed again next time
                tmp.unlink(missing_ok=True)
    _IDS[key] = ids
    return ids


def _digest(ids: np.ndarray, labels: np.ndarray) -> str:
    pairs = np.stack([ids.astype(np.uint64), np.asarray(labels, dtype=np.uint64)], 1)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return hashlib.sha256(np.ascontiguousarray(pairs[order]).tobytes()).hexdigest()


def split_digest(images: "Images") -> str:
    """The membership digest of one split (its SplitRecord's): content ids with labels."""
    return _digest(image_ids(images), images.labels)


def sketch(ids: np.ndarray) -> str:
    """Sorted 32-bit prefixes of ``ids``, delta-coded, zlib-compressed, base64 (about 2.5 bytes an
    image): what an artefact keeps of its training split, for :func:`overlap`."""
    top = np.unique((ids >> np.uint64(32)).astype(np.uint32))
    deltas = np.diff(top, prepend=np.uint32(0)).astype(np.uint32)
    return base64.b64encode(zlib.compress(deltas.tobytes(), 9)).decode()


def data_record(splits: "Splits", img_size: int, rule: Optional[dict] = None, keep_train_ids: bool = True) -> DataRecord:
    """The provenance of ``splits`` (loaded at ``img_size``); ``rule``: the DataSpec fields that
    selected them (``data_rule``). ``keep_train_ids``: keep the training split's sketch (models
    and supernets do; a study does not need it)."""
    recs, parts = {}, []
    for name in ("train", "val", "test"):
        ds = getattr(splits, name)
        d = _digest(image_ids(ds), ds.labels)
        recs[name] = SplitRecord(len(ds), d)
        parts.append(d)
    fp = hashlib.sha256(json.dumps([list(splits.classes), parts]).encode()).hexdigest()
    indices = splits.description.startswith(("MedMNIST npz", "builtin:"))
    return DataRecord(splits.description, tuple(splits.classes), img_size, recs, dict(rule or {}), fp,
                      sketch(image_ids(splits.train)) if keep_train_ids else None, indices)


def data_rule(spec) -> dict:
    """The split rule of a ``config.DataSpec``: what a consumer needs to select the same splits."""
    return {k: getattr(spec, k) for k in ("path", "seed", "val_frac", "test_frac", "split_index", "external_test",
                                          "max_per_split")}


def space_record(space: "Space") -> SpaceRecord:
    """Name and SHA-256 of the space's definition (canonical JSON of ``Space.to_dict()``)."""
    text = json.dumps(space.to_dict(), sort_keys=True, default=str)
    return SpaceRecord(space.name, hashlib.sha256(text.encode()).hexdigest())


def anchor_record(calibration) -> Optional[dict]:
    """An anchor calibration (latency.Calibration or its dict) without its config: name, ms,
    device, threads."""
    if calibration is None:
        return None
    d = calibration if isinstance(calibration, dict) else calibration.to_dict()
    return {k: v for k, v in d.items() if k != "config"}


# ------------------------------------------------------------------------------ the consumers
def legacy(what: str) -> None:
    """The warning for an artefact written before provenance was recorded."""
    _log.warning(f"{what} carries no provenance (written before hovit-nas recorded it): its data, class order, "
                 "split and space cannot be checked")


def check_same_data(have: Optional[DataRecord], now: DataRecord, what: str, use: str) -> None:
    """``what`` (an artefact made from ``have``) is used with ``now`` for ``use``, which needs the
    very same splits (a resume, a confirmation, calibration, a supernet's estimates).

    Raises:
        ProvenanceError: the classes or any split's membership differ; names both sides."""
    if have is None:
        legacy(what)
        return
    check_class_names(have, now, what, allow_reorder=False)
    if have.fingerprint != now.fingerprint:
        which = [s for s in ("train", "val", "test") if s in have.splits and s in now.splits
                 and have.splits[s] != now.splits[s]]
        raise ProvenanceError(f"{what} was made from {have.short()}, not {now.short()} (splits that differ: "
                              f"{', '.join(which) or 'classes'}); {use} needs the same splits: pass the same data and "
                              "split options")


def check_class_names(have: DataRecord, now: DataRecord, what: str, allow_reorder: bool = True) -> Optional[list[int]]:
    """The model output index for each class of ``now`` (``perm[j]`` = the output that means
    ``now.classes[j]``), or None when the order is the same. Same names in another order map by
    name (logged) when ``allow_reorder``; data that names classes by index only is compared by
    count (a warning says the names cannot be checked).

    Raises:
        ProvenanceError: the names differ, or are reordered where ``allow_reorder`` is False."""
    a, b = list(have.classes), list(now.classes)
    if a == b:
        return None
    if have.names_are_indices or now.names_are_indices:
        if len(a) == len(b):
            _log.warning(f"{what}: class names cannot be compared ({'its data' if have.names_are_indices else 'this data'}"
                         f" names classes by index only); assuming class k is class k")
            return None
    if sorted(a) == sorted(b):
        if not allow_reorder:
            raise ProvenanceError(f"{what} has classes {_names(a)} in another order than this data's {_names(b)}")
        perm = [a.index(c) for c in b]
        _log.warning(f"{what}: the data orders the classes {_names(b)}, the model {_names(a)}; mapped by name")
        return perm
    hint = ""
    if len(a) == len(b) and all(x.isdigit() for x in a + b) and sorted(map(int, a)) == sorted(map(int, b)):
        hint = " (the same numbers written differently, e.g. zero-padded: rename the folders to the model's names)"
    raise ProvenanceError(f"{what} was trained on classes {_names(a)}, but the data has {_names(b)}{hint}; "
                          "its outputs would be read as the wrong classes")


def _names(names: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")
    return f"[{shown}]"


OVERLAP_REFUSE = 0.01  # a scored split with more than this share of the model's training images is refused


def overlap(have: DataRecord, split: "Images") -> tuple[int, int]:
    """(images of ``split`` whose id is in the training split ``have`` records, len(split));
    (0, n) when ``have`` kept no sketch. 32-bit prefixes: a false match is about 1 in 200,000
    per scored image for a 20,000-image training split."""
    top = have.train_sketch()
    ids = image_ids(split)
    if top is None:
        return 0, len(ids)
    return int(np.isin((ids >> np.uint64(32)).astype(np.uint32), top).sum()), len(ids)


def check_scored_on(have: Optional[DataRecord], now: DataRecord, splits: "Splits", what: str) -> None:
    """A model made from ``have`` is scored on the val and test splits of ``now``.

    The same splits: fine. Other data: fine when it holds (almost) none of the model's training
    images, with a line saying it is new data; refused when more than ``OVERLAP_REFUSE`` of a
    scored split was trained on (a re-split of the training data scores on its own training images).

    Raises:
        ProvenanceError: naming the split, the count and both data records."""
    if have is None:
        legacy(what)
        return
    if have.fingerprint == now.fingerprint or (have.splits.get("train") == now.splits.get("train")
                                              and have.splits.get("val") == now.splits.get("val")):
        return
    for name in ("val", "test"):
        k, n = overlap(have, getattr(splits, name))
        if n and k / n > OVERLAP_REFUSE:
            raise ProvenanceError(f"{k} of the {n} {name} images of {now.short()} are images {what} was trained on "
                                  f"(its data: {have.short()}); the scores would be optimistic: score it on its own "
                                  f"splits (split seed {have.rule.get('seed')}) or on data it never saw")
        if k:
            _log.warning(f"{k} of the {n} {name} images of this data are in {what}'s training split (duplicates "
                         "across splits?); scored anyway")
    _log.info(f"{what} was made from {have.short()}; scoring it on other data, {now.short()}, which holds none of "
              "its training images")


def check_space(have: Optional[SpaceRecord], now: SpaceRecord, what: str, use: str) -> None:
    """``what`` was made over space ``have``; it is used for ``use`` over ``now``.

    Raises:
        ProvenanceError: another space (by name). The same name with another definition warns."""
    if have is None:
        _log.warning(f"{what} records no space: it cannot be checked against {now.short()}")
        return
    if have.name != now.name:
        raise ProvenanceError(f"{what} was made over {have.short()}, not {now.short()}; {use} needs the same space")
    if have.sha256 != now.sha256:
        _log.warning(f"{what} was made over {have.short()}, whose definition has changed since ({now.short()}); "
                     f"{use} goes on: the name is the same, check that the change is harmless")


def check_img_size(have: Optional[int], now: int, what: str) -> None:
    if have is not None and int(have) != int(now):
        raise ProvenanceError(f"{what} was made at {have} px, not {now} px")


def of_study(attrs: dict) -> Optional[Provenance]:
    """A study's provenance from its user attrs: the record it wrote when created, with the
    deployment target and anchor calibration it recorded since (``deployment_target``,
    ``latency_anchor``); None for a study from before provenance."""
    made = Provenance.from_dict(attrs.get(STUDY_ATTR))
    if made is None:
        return None
    return made.with_(target=attrs.get("deployment_target") or made.target,
                      anchor=anchor_record(attrs.get("latency_anchor")) or made.anchor)


# --------------------------------------------------------------------------------- file I/O
SIDE_FILE = "provenance.json"  # in a run directory and a supernet directory


def write(folder: str | Path, prov: Provenance) -> Path:
    p = Path(folder) / SIDE_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(prov.to_dict(), indent=1, sort_keys=True))
    return p


def read(folder: str | Path) -> Optional[Provenance]:
    p = Path(folder) / SIDE_FILE
    if not p.is_file():
        return None
    try:
        return Provenance.from_dict(json.loads(p.read_text()))
    except json.JSONDecodeError as exc:
        raise ProvenanceError(f"{p}: not JSON ({exc.msg})") from None
