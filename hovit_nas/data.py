"""Dataset specs: one ``--data`` string selects the dataset.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .config import DataSpec
from .errors import DataError

__all__ = ["DataSpec", "Splits", "load_data", "check_num_classes", "stratified_split"]

IMG_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PATHMNIST_URL = "https://zenodo.org/records/10519652/files/pathmnist.npz?download=1"
CACHE_LIMIT_BYTES = 2 << 30  # decode once into memory below this size


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    classes: list[str]
    description: str
    sizes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------------- datasets

class TensorImages(Dataset):
    """uint8 images (N, C, H, W) already at the target size, with labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: DataSpec, train: bool):
        self.images, self.labels = images, labels
        self.norm = _normaliser(spec)
        self.augment = train and spec.augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return _finish(self.images[i], self.norm, self.augment), int(self.labels[i])


class FileImages(Dataset):
    """Lazily decoded image files (for datasets too large to cache)."""

    def __init__(self, files: list[Path], labels: list[int], spec: DataSpec, train: bool):
        self.files, self.labels = files, labels
        self.size = spec.img_size
        self.norm = _normaliser(spec)
        self.augment = train and spec.augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return _finish(read_image(self.files[i], self.size), self.norm, self.augment), self.labels[i]


def _normaliser(spec: DataSpec):
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return mean, std


def _finish(img: torch.Tensor, norm, augment: bool) -> torch.Tensor:
    x = img.float().div_(255.0)
    if augment:
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        if torch.rand(()) < 0.5:
            x = x.flip(-2)
        x = torch.rot90(x, int(torch.randint(0, 4, ())), (-2, -1))
    mean, std = norm
    return (x - mean) / std


def read_image(path: Path, size: int) -> torch.Tensor:
    """Decode one file to uint8 (3, size, size); a bad file raises DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"unreadable image {path}: {exc.__class__.__name__}: {exc}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


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
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMG_EXTS and p.is_file())
        if not found:
            raise DataError(f"{root / name}: class folder has no images ({', '.join(IMG_EXTS)})")
        files += found
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


def _materialise(files: list[Path], labels: list[int], spec: DataSpec, train: bool) -> Dataset:
    if len(files) * 3 * spec.img_size ** 2 <= CACHE_LIMIT_BYTES:
        imgs = torch.stack([read_image(f, spec.img_size) for f in files]) if files else \
            torch.zeros(0, 3, spec.img_size, spec.img_size, dtype=torch.uint8)
        return TensorImages(imgs, torch.tensor(labels, dtype=torch.long), spec, train)
    return FileImages(files, labels, spec, train)


def _pick(files, labels, idx):
    return [files[i] for i in idx], [labels[i] for i in idx]


def _from_class_folder(root: Path, spec: DataSpec) -> Splits:
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
    return _splits(parts, classes, spec, f"class folder {root}")


def _split_dirs(root: Path) -> Optional[dict]:
    val = next((root / v for v in ("valid", "val") if (root / v).is_dir()), None)
    if (root / "train").is_dir() and val is not None and (root / "test").is_dir():
        return {"train": root / "train", "val": val, "test": root / "test"}
    return None


def _from_split_folders(dirs: dict, spec: DataSpec) -> Splits:
    parts, classes = {}, None
    for name, d in dirs.items():
        files, labels, cls = scan_class_folder(d)
        if classes is not None and cls != classes:
            raise DataError(f"{d}: classes {cls} do not match train's {classes}")
        classes = cls
        parts[name] = _pick(files, labels, _cap(labels, spec.max_per_split, spec.seed))
    return _splits(parts, classes, spec, f"split folders {dirs['train'].parent}")


def _splits(parts: dict, classes: list[str], spec: DataSpec, description: str) -> Splits:
    for name, (f, _) in parts.items():
        if not f:
            raise DataError(f"{description}: the {name} split is empty")
    ds = {name: _materialise(f, lab, spec, name == "train") for name, (f, lab) in parts.items()}
    return Splits(ds["train"], ds["val"], ds["test"], classes, description,
                  {k: len(v) for k, v in ds.items()})


# --------------------------------------------------------------------------------- npz / digits

def _from_npz(path: Path, spec: DataSpec) -> Splits:
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
        imgs = torch.from_numpy(np.asarray(data[f"{key}_images"], dtype=np.uint8))
        imgs = imgs.unsqueeze(1).expand(-1, 3, -1, -1) if imgs.ndim == 3 else imgs.permute(0, 3, 1, 2)
        labels = torch.from_numpy(np.asarray(data[f"{key}_labels"]).reshape(-1).astype(np.int64))
        keep = _cap(labels.tolist(), spec.max_per_split, spec.seed)
        parts[name] = (imgs[keep], labels[keep])
    n_classes = int(max(int(v[1].max()) for v in parts.values())) + 1
    return _tensor_splits(parts, [str(i) for i in range(n_classes)], spec, f"MedMNIST npz {path}")


def _download(url: str, dest: Path) -> None:
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    try:
        urllib.request.urlretrieve(url, tmp)
    except OSError as exc:
        raise DataError(f"download of {url} failed: {exc}") from None
    tmp.rename(dest)


def _builtin_digits(spec: DataSpec) -> Splits:
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = torch.from_numpy((d.images / 16.0 * 255.0).round().astype(np.uint8)).unsqueeze(1)
    labels = d.target.astype(np.int64)
    split = stratified_split(labels, spec.val_frac, spec.test_frac, spec.seed)
    parts = {}
    for name, key in (("train", "train_idx"), ("val", "val_idx"), ("test", "test_idx")):
        idx = split[key]
        keep = [idx[i] for i in _cap(labels[idx].tolist(), spec.max_per_split, spec.seed)]
        parts[name] = (imgs[keep].expand(-1, 3, -1, -1), torch.from_numpy(labels[keep]))
    return _tensor_splits(parts, [str(i) for i in range(10)], spec, DataSpec().label)


def _tensor_splits(parts: dict, classes: list[str], spec: DataSpec, description: str) -> Splits:
    ds = {n: TensorImages(_resize_uint8(x, spec.img_size), y, spec, n == "train") for n, (x, y) in parts.items()}
    return Splits(ds["train"], ds["val"], ds["test"], classes, description,
                  {k: len(v) for k, v in ds.items()})


def load_data(spec: DataSpec) -> Splits:
    """Resolve a spec to train/val/test datasets (errors name the culprit)."""
    if spec.img_size < 16:
        raise DataError(f"img_size must be >= 16, got {spec.img_size}")
    if spec.path is None or spec.path in ("builtin", "builtin:digits"):
        return _builtin_digits(spec)
    root = Path(spec.path).expanduser()
    if root.suffix == ".npz":
        return _from_npz(root, spec)
    if not root.exists():
        raise DataError(f"{root}: no such file or directory")
    dirs = _split_dirs(root) if root.is_dir() else None
    if dirs is not None:
        if spec.split_index:
            raise DataError(f"{root}: has train/val/test folders; a split index applies only to a class folder")
        return _from_split_folders(dirs, spec)
    return _from_class_folder(root, spec)


def check_num_classes(splits: Splits, expected: int, where: str = "model.num_classes") -> None:
    if splits.num_classes != expected:
        raise DataError(f"class count mismatch: the data ({splits.description}) has {splits.num_classes} "
                        f"classes, {where} is {expected}")
