"""Sources: what each split of a ``--data`` spec is made of. One code path for all of them:
every source becomes per-split ``SplitSource`` records, and the cache (cache.py) turns those into
uint8 arrays decoded once per node.

- no spec: the built-in default, scikit-learn's bundled ``load_digits`` (1,797 real 8x8
  handwritten digits, 10 classes) resized to the input size, channels replicated: offline and
  small, for smoke runs and the quick start. It is *not* histology.
- a folder of class subfolders (NCT-CRC-HE-100K layout): stratified train/val/test split with a
  fixed seed, or a split-index JSON ``{"train_idx", "val_idx", "test_idx"}`` over the sorted
  file list; optionally an external test folder (CRC-VAL-HE-7K).
- a folder with ``train/``, ``valid/`` or ``val/``, ``test/`` (PatchCamelyon style).
- a MedMNIST ``.npz`` (PathMNIST keys); downloaded only with ``download=True``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..config import DataSpec
from ..errors import DataError
from .cache import SplitSource, Unreadable, _stderr, decode, open_or_build
from .loader import Images

IMG_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PATHMNIST_URL = "https://zenodo.org/records/10519652/files/pathmnist.npz?download=1"
SPLITS = ("train", "val", "test")
Log = Callable[[str], None]


@dataclass
class Splits:
    train: Images
    val: Images
    test: Images
    classes: list[str]
    description: str
    sizes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_image(path: Path, size: int) -> torch.Tensor:
    """One decoded file as a uint8 tensor (3, size, size)."""
    return torch.from_numpy(np.ascontiguousarray(decode(path, size)))


# ------------------------------------------------------------------------------------ folders

def scan_class_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """ImageFolder order: classes sorted, files sorted within each class."""
    if not root.exists():
        raise DataError(f"{root}: no such directory")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class subfolders found")
    files, labels = [], []
    for c, name in enumerate(classes):
        found = [os.path.join(d, f) for d, _, names in os.walk(root / name)
                 for f in names if os.path.splitext(f)[1].lower() in IMG_EXTS]
        if not found:
            raise DataError(f"{root / name}: class folder has no images ({', '.join(IMG_EXTS)})")
        found.sort(key=lambda f: f.split(os.sep))  # pathlib's order (by path parts), at string speed
        files += map(Path, found)
        labels += [c] * len(found)
    return files, labels, classes


def stratified_split(labels: Sequence[int], val_frac: float, test_frac: float, seed: int) -> dict:
    """Per-class shuffle with ``seed``; each class gives round(n*frac) (>=1 when n >= 3)."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"split fractions val={val_frac} test={test_frac} must be in [0,1) and sum < 1")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    out = {"train_idx": [], "val_idx": [], "test_idx": []}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = len(idx)
        n_test = max(1 if n >= 3 and test_frac > 0 else 0, round(n * test_frac))
        n_val = max(1 if n >= 3 and val_frac > 0 else 0, round(n * val_frac))
        out["test_idx"] += idx[:n_test].tolist()
        out["val_idx"] += idx[n_test:n_test + n_val].tolist()
        out["train_idx"] += idx[n_test + n_val:].tolist()
    return {k: sorted(v) for k, v in out.items()}


def load_split_index(path: str | Path, n: int) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: split-index file not found")
    try:
        idx = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: malformed JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(idx, dict):
        raise DataError(f"{p}: expected an object with train_idx, val_idx, test_idx")
    for key in ("train_idx", "val_idx", "test_idx"):
        if key not in idx:
            raise DataError(f"{p}: missing key {key!r}")
        for j, v in enumerate(idx[key]):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                raise DataError(f"{p}: {key}[{j}] = {v!r} is out of range (the folder has {n} images)")
    keys = ("train_idx", "val_idx", "test_idx")
    for i, a in enumerate(keys):  # a sample in two splits is leakage: the reported accuracy would be wrong
        for b in keys[i + 1:]:
            shared = sorted(set(idx[a]) & set(idx[b]))
            if shared:
                raise DataError(f"{p}: {a} and {b} overlap ({len(shared)} samples, e.g. index {shared[0]}); "
                                "splits must be disjoint")
    return {k: list(idx[k]) for k in keys}


def _cap(labels: Sequence[int], cap: Optional[int], seed: int) -> list[int]:
    """A stratified subset of at most ``cap`` indices (all when cap is None)."""
    n = len(labels)
    if cap is None or n <= cap:
        return list(range(n))
    return stratified_split(labels, 0.0, cap / n, seed)["test_idx"]


def _pick(files, labels, idx):
    return [files[i] for i in idx], [labels[i] for i in idx]


def _from_class_folder(root: Path, spec: DataSpec) -> tuple[dict, list[str], str]:
    files, labels, classes = scan_class_folder(root)
    split = (load_split_index(spec.split_index, len(files)) if spec.split_index
             else stratified_split(labels, spec.val_frac, spec.test_frac, spec.seed))
    parts = {}
    for name, key in (("train", "train_idx"), ("val", "val_idx"), ("test", "test_idx")):
        f, lab = _pick(files, labels, split[key])
        keep = _cap(lab, spec.max_per_split, spec.seed)
        parts[name] = _pick(f, lab, keep)
    if spec.external_test:
        ext_files, ext_labels, ext_classes = scan_class_folder(Path(spec.external_test))
        if ext_classes != classes:
            raise DataError(f"{spec.external_test}: classes {ext_classes} do not match {root}'s {classes}")
        parts["test"] = _pick(ext_files, ext_labels, _cap(ext_labels, spec.max_per_split, spec.seed))
    return _file_sources(parts, root.name, spec, f"class folder {root}"), classes, f"class folder {root}"


def _split_dirs(root: Path) -> Optional[dict]:
    val = next((root / v for v in ("valid", "val") if (root / v).is_dir()), None)
    if (root / "train").is_dir() and val is not None and (root / "test").is_dir():
        return {"train": root / "train", "val": val, "test": root / "test"}
    return None


def _from_split_folders(dirs: dict, spec: DataSpec) -> tuple[dict, list[str], str]:
    parts, classes = {}, None
    for name, d in dirs.items():
        files, labels, cls = scan_class_folder(d)
        if classes is not None and cls != classes:
            raise DataError(f"{d}: classes {cls} do not match train's {classes}")
        classes = cls
        parts[name] = _pick(files, labels, _cap(labels, spec.max_per_split, spec.seed))
    root = dirs["train"].parent
    return _file_sources(parts, root.name, spec, f"split folders {root}"), classes, f"split folders {root}"


def _selection(spec: DataSpec) -> dict:
    """What selects a split's samples (the cache entry's key; the manifest checks the files)."""
    return {k: getattr(spec, k) for k in ("path", "split_index", "external_test", "val_frac", "test_frac",
                                          "seed", "max_per_split")}


def _file_sources(parts: dict, dataset: str, spec: DataSpec, description: str) -> dict:
    for name, (f, _) in parts.items():
        if not f:
            raise DataError(f"{description}: the {name} split is empty")
    return {name: SplitSource(dataset, name, _selection(spec), np.asarray(lab, dtype=np.int64), paths=f)
            for name, (f, lab) in parts.items()}


# --------------------------------------------------------------------------------- npz / digits

def _from_npz(path: Path, spec: DataSpec) -> tuple[dict, list[str], str]:
    if not path.is_file():
        if not spec.download:
            raise DataError(f"{path}: no such file (pass --download to fetch PathMNIST)")
        _download(PATHMNIST_URL, path)
    try:
        data = np.load(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    parts = {}
    for name, key in (("train", "train"), ("val", "val"), ("test", "test")):
        if f"{key}_images" not in data or f"{key}_labels" not in data:
            raise DataError(f"{path}: missing {key}_images / {key}_labels (MedMNIST layout)")
        imgs = np.asarray(data[f"{key}_images"], dtype=np.uint8)
        imgs = imgs[:, None] if imgs.ndim == 3 else imgs.transpose(0, 3, 1, 2)
        labels = np.asarray(data[f"{key}_labels"]).reshape(-1).astype(np.int64)
        keep = _cap(labels.tolist(), spec.max_per_split, spec.seed)
        parts[name] = (imgs[keep], labels[keep])
    n_classes = int(max(int(v[1].max()) for v in parts.values())) + 1
    stat = path.stat()
    origin = [[str(path), stat.st_size, stat.st_mtime_ns]]
    return (_array_sources(parts, path.stem, spec, origin), [str(i) for i in range(n_classes)],
            f"MedMNIST npz {path}")


def _download(url: str, dest: Path) -> None:
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    try:
        urllib.request.urlretrieve(url, tmp)
    except OSError as exc:
        raise DataError(f"download of {url} failed: {exc}") from None
    tmp.rename(dest)


def _builtin_digits(spec: DataSpec) -> tuple[dict, list[str], str]:
    import sklearn
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images / 16.0 * 255.0).round().astype(np.uint8)[:, None]
    labels = d.target.astype(np.int64)
    split = stratified_split(labels, spec.val_frac, spec.test_frac, spec.seed)
    parts = {}
    for name, key in (("train", "train_idx"), ("val", "val_idx"), ("test", "test_idx")):
        idx = split[key]
        keep = [idx[i] for i in _cap(labels[idx].tolist(), spec.max_per_split, spec.seed)]
        parts[name] = (imgs[keep], labels[keep])
    origin = [["sklearn.datasets.load_digits", sklearn.__version__, 0]]
    return _array_sources(parts, "builtin-digits", spec, origin), [str(i) for i in range(10)], DataSpec().label


def _array_sources(parts: dict, dataset: str, spec: DataSpec, origin: list) -> dict:
    return {name: SplitSource(dataset, name, _selection(spec), y, array=x, origin=origin)
            for name, (x, y) in parts.items()}


def load_data(spec: DataSpec, log: Optional[Log] = None) -> Splits:
    """Resolve a spec to train/val/test (errors name the culprit), each split read from the
    node's dataset cache: decoded on first use, opened read-only afterwards."""
    log = log or _stderr
    if spec.img_size < 16:
        raise DataError(f"img_size must be >= 16, got {spec.img_size}")
    if spec.path is None or spec.path in ("builtin", "builtin:digits"):
        sources, classes, description = _builtin_digits(spec)
    else:
        root = Path(spec.path).expanduser()
        if root.suffix == ".npz":
            sources, classes, description = _from_npz(root, spec)
        elif not root.exists():
            raise DataError(f"{root}: no such file or directory")
        elif (dirs := _split_dirs(root) if root.is_dir() else None) is not None:
            if spec.split_index:
                raise DataError(f"{root}: has train/val/test folders; a split index applies only to a class folder")
            sources, classes, description = _from_split_folders(dirs, spec)
        else:
            sources, classes, description = _from_class_folder(root, spec)
    ds, built, bad = {}, [], []
    for name in SPLITS:
        try:
            entry = open_or_build(sources[name], spec.img_size, spec.cache_dir, log)
        except Unreadable as exc:  # name every bad file of every split, then stop
            bad += exc.lines
            continue
        ds[name] = Images(entry.images, entry.labels, spec.mean, spec.std, spec.augment and name == "train",
                          cache=entry.path, file=entry.path / "images.u8")
        built += [name] if entry.built else []
    if bad:
        raise Unreadable(bad)
    total = sum(int(d.images.nbytes) for d in ds.values())
    log(f"dataset cache: {'built ' + '+'.join(built) if built else 'opened'} "
        f"({'/'.join(str(len(d)) for d in ds.values())} images at {spec.img_size} px, "
        f"{total / 2 ** 20:,.1f} MiB) in {ds['train'].cache.parent}")
    return Splits(ds["train"], ds["val"], ds["test"], classes, description, {k: len(v) for k, v in ds.items()})


def check_num_classes(splits: Splits, expected: int, where: str = "model.num_classes") -> None:
    if splits.num_classes != expected:
        raise DataError(f"class count mismatch: the data ({splits.description}) has {splits.num_classes} "
                        f"classes, {where} is {expected}")
