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
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..config import DataSpec
from ..errors import DataError
from .cache import SplitSource, Unreadable, open_or_build
from .pixels import array_to_uint8
from .scan import Scan, scan_class_folder
from .loader import Images

PATHMNIST_URL = "https://zenodo.org/records/10519652/files/pathmnist.npz?download=1"
SPLITS = ("train", "val", "test")
_log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: Images
    val: Images
    test: Images
    classes: list[str]
    description: str
    sizes: dict = field(default_factory=dict)
    missing: dict = field(default_factory=dict)  # split -> names of classes with no sample in it

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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


def _scanned(root: Path) -> Scan:
    scan = scan_class_folder(root)
    _log.info(scan.summary())
    return scan


def _from_class_folder(root: Path, spec: DataSpec) -> tuple[dict, list[str], str]:
    scan = _scanned(root)
    files, labels, classes = scan.files, scan.labels, scan.classes
    split = (load_split_index(spec.split_index, len(files)) if spec.split_index
             else stratified_split(labels, spec.val_frac, spec.test_frac, spec.seed))
    parts = {}
    for name, key in (("train", "train_idx"), ("val", "val_idx"), ("test", "test_idx")):
        f, lab = _pick(files, labels, split[key])
        keep = _cap(lab, spec.max_per_split, spec.seed)
        parts[name] = _pick(f, lab, keep)
    if spec.external_test:
        ext = _scanned(Path(spec.external_test))
        ext_files, ext_labels, ext_classes = ext.files, ext.labels, ext.classes
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
        scan = _scanned(d)
        files, labels, cls = scan.files, scan.labels, scan.classes
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

NPZ_LAYOUT = ("MedMNIST layout: keys train_images, train_labels, val_images, val_labels, test_images, test_labels; "
              "images (N, H, W), (N, H, W, 1|3) or (N, 1|3, H, W); labels (N,) or (N, 1) integer class indices "
              "(single-label)")


def _npz_images(a: np.ndarray, key: str) -> np.ndarray:
    """(N, 1|3, H, W) uint8 from an accepted image layout (NPZ_LAYOUT); DataError names the key."""
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[3] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    elif not (a.ndim == 4 and a.shape[1] in (1, 3)):
        raise DataError(f"{key}: shape {a.shape} is not an image array; accepted: (N, H, W), (N, H, W, 1|3) "
                        "or (N, 1|3, H, W)")
    if min(a.shape[2:]) < 1 or len(a) == 0:
        raise DataError(f"{key}: shape {a.shape} holds no images")
    return array_to_uint8(a, key)


def _npz_labels(a: np.ndarray, key: str, n: int, images_key: str) -> np.ndarray:
    """(N,) int64 class indices; DataError names the key, its shape or dtype, and what is accepted."""
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        kind = " (multi-label or one-hot)" if a.ndim == 2 else ""
        raise DataError(f"{key}: shape {a.shape}{kind} is not accepted; hovit-nas trains single-label "
                        "classifiers: labels must be (N,) or (N, 1) integer class indices")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise DataError(f"{key}: dtype {a.dtype}; labels must be integer class indices")
    if len(a) != n:
        raise DataError(f"{key} has {len(a)} labels but {images_key} has {n} images")
    if len(a) and int(a.min()) < 0:
        raise DataError(f"{key}: negative class index {int(a.min())}")
    return a.astype(np.int64)


def _from_npz(path: Path, spec: DataSpec) -> tuple[dict, list[str], str]:
    """A MedMNIST-style ``.npz`` (NPZ_LAYOUT), every key's shape, dtype and length checked up
    front; pixel values converted by data/pixels.py's rules."""
    if not path.is_file():
        if not spec.download:
            raise DataError(f"{path}: no such file (pass `download` to fetch PathMNIST)")
        _download(PATHMNIST_URL, path)
    try:
        data = np.load(path)
    except Exception as exc:  # numpy raises many kinds for a damaged file
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    if not hasattr(data, "files"):  # a bare .npy array under an .npz name
        raise DataError(f"{path}: a single array, not an .npz archive; accepted: {NPZ_LAYOUT}")
    with data:  # closed on a refusal too (an NpzFile holds the file open)
        parts = _npz_parts(data, path, spec)
    n_classes = int(max(int(v[1].max()) for v in parts.values())) + 1
    stat = path.stat()
    origin = [[str(path), stat.st_size, stat.st_mtime_ns]]
    return (_array_sources(parts, path.stem, spec, origin), [str(i) for i in range(n_classes)],
            f"MedMNIST npz {path}")


def _npz_parts(data, path: Path, spec: DataSpec) -> dict:
    """Each split's (images, labels) from an open ``.npz``, checked (NPZ_LAYOUT)."""
    parts = {}
    for name in SPLITS:
        ik, lk = f"{name}_images", f"{name}_labels"
        missing = [k for k in (ik, lk) if k not in data.files]
        if missing:
            raise DataError(f"{path}: missing key {missing[0]} (has {', '.join(data.files) or 'none'}); "
                            f"accepted: {NPZ_LAYOUT}")
        try:
            raw_images, raw_labels = data[ik], data[lk]
        except ValueError as exc:  # object arrays need pickle: never loaded
            raise DataError(f"{path}: key {ik} or {lk} cannot be read without pickle ({exc})") from None
        imgs = _npz_images(raw_images, f"{path.name}:{ik}")
        labels = _npz_labels(raw_labels, f"{path.name}:{lk}", len(imgs), ik)
        keep = _cap(labels.tolist(), spec.max_per_split, spec.seed)
        parts[name] = (imgs[keep], labels[keep])
    return parts


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


def load_data(spec: DataSpec) -> Splits:
    """Resolve a spec to train/val/test (errors name the culprit), each split read from the
    node's dataset cache: decoded on first use, opened read-only afterwards."""
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
            entry = open_or_build(sources[name], spec.img_size, spec.cache_dir)
        except Unreadable as exc:  # name every bad file of every split, then stop
            bad += exc.lines
            continue
        ds[name] = Images(entry.images, entry.labels, spec.mean, spec.std, spec.augment and name == "train",
                          cache=entry.path, file=entry.path / "images.u8")
        built += [name] if entry.built else []
    if bad:
        raise Unreadable(bad)
    total = sum(int(d.images.nbytes) for d in ds.values())
    _log.info(f"dataset cache: {'built ' + '+'.join(built) if built else 'opened'} "
              f"({'/'.join(str(len(d)) for d in ds.values())} images at {spec.img_size} px, "
              f"{total / 2 ** 20:,.1f} MiB) in {ds['train'].cache.parent}")
    missing = missing_classes({k: d.labels for k, d in ds.items()}, classes)
    if missing:
        _log.warning(describe_missing(missing) + "; macro scores average over the classes present in each split")
    return Splits(ds["train"], ds["val"], ds["test"], classes, description, {k: len(v) for k, v in ds.items()},
                  missing)


def missing_classes(labels: dict, classes: list[str]) -> dict[str, list[str]]:
    """Per split, the names of the classes with no sample in it (splits with all classes left out)."""
    out = {}
    for split, y in labels.items():
        have = set(np.unique(np.asarray(y)).tolist())
        names = [c for i, c in enumerate(classes) if i not in have]
        if names:
            out[split] = names
    return out


def describe_missing(missing: dict[str, list[str]]) -> str:
    """'class BACK has no val or test samples' (every class named, grouped by the splits lacking it)."""
    by_class: dict[str, list[str]] = {}
    for split in SPLITS:
        for c in missing.get(split, []):
            by_class.setdefault(c, []).append(split)
    groups: dict[tuple, list[str]] = {}
    for c, splits in by_class.items():
        groups.setdefault(tuple(splits), []).append(c)
    parts = []
    for splits, names in groups.items():
        who = f"class {names[0]} has" if len(names) == 1 else f"classes {', '.join(names)} have"
        parts.append(f"{who} no {' or '.join(splits)} samples")
    return "; ".join(parts)


def check_num_classes(splits: Splits, expected: int, where: str = "model.num_classes") -> None:
    if splits.num_classes != expected:
        raise DataError(f"class count mismatch: the data ({splits.description}) has {splits.num_classes} "
                        f"classes, {where} is {expected}")
