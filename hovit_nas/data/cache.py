"""The dataset cache: each (dataset, split, resolution) decoded once per node into a uint8 array
file, then shared by every process on the node through the page cache.

Decoding TIFF/PNG tiles with PIL runs at about a thousand images per second per core; a search
would otherwise repeat it in every epoch of every trial. An entry is a folder::

    <cache root>/<dataset>-<split>-<size>px-<key>/
        images.u8       uint8 (N, 3, size, size), C order: opened as a read-only numpy memmap
        labels.npy      int64 (N,)
        manifest.json   what it was built from: file list with sizes and mtimes, size, split

``key`` hashes what selects the split (path, split rules, seed, caps) and ``VERSION``, the
decoding rules' version (raised whenever a file would decode to other pixels, e.g. when the EXIF
orientation began to be applied), so an entry from older rules is never reused; the manifest decides
whether the entry is still valid: any added, removed or modified file rebuilds it. Building is
locked (``fcntl``) and atomic (a temporary folder, then ``rename``), so concurrent trials and
Ray workers on a node build once and the others open the finished entry; a crashed builder
leaves only a temporary folder, removed by the next one.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import DataError
from .pixels import pil_to_rgb8

_log = logging.getLogger(__name__)
VERSION = 3  # 3: turned upright by the EXIF/TIFF orientation tag (2 stored files as saved, e.g. sideways);
# 2: 16-bit, 32-bit and float sources converted by data/pixels.py (1 clipped them)
CACHE_ENV = "HOVIT_NAS_CACHE_DIR"
PARALLEL_FROM = 256  # below this many files, decode in-process (a pool costs more than it saves)
CHUNK = 64


class Unreadable(DataError):
    """Files that PIL cannot decode: all of them, so a user fixes the dataset in one pass."""

    def __init__(self, lines: list[str]):
        self.lines = sorted(lines)
        more = f" (and {len(lines) - 1} more unreadable files)" if len(lines) > 1 else ""
        super().__init__(f"{self.lines[0]}{more}")


def cache_root(cache_dir: Optional[str] = None) -> Path:
    """``--cache-dir``, else ``$HOVIT_NAS_CACHE_DIR``, else the user's cache directory. Resolved
    where the data is loaded, so each Ray node uses its own local default."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hovit-nas"


@dataclass
class SplitSource:
    """What one split is made of: image files to decode, or a uint8 array (N, C, H, W) already
    in memory (``.npz``, built-in data). ``files`` (path, size, mtime) is what the cache checks."""

    dataset: str  # a readable name for the entry folder
    split: str
    selection: dict  # everything that selects this split's samples: part of the entry's key
    labels: np.ndarray
    paths: Optional[list[Path]] = None
    array: Optional[np.ndarray] = None
    origin: list = field(default_factory=list)  # for arrays: [[source file, size, mtime_ns]]

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> list:
        if self.paths is None:
            return self.origin
        out = []
        for p in map(str, self.paths):
            try:
                s = os.stat(p)
            except OSError as exc:
                raise DataError(f"{p}: cannot read ({exc.strerror})") from None
            out.append([p, s.st_size, s.st_mtime_ns])
        return out


@dataclass
class CacheEntry:
    """An opened entry: read-only images (memmap), labels, where it is and whether we built it."""

    path: Path
    images: np.ndarray
    labels: np.ndarray
    built: bool


def open_or_build(src: SplitSource, img_size: int, cache_dir: Optional[str] = None) -> CacheEntry:
    """The entry for ``src`` at ``img_size``: opened if its manifest matches the files, else
    built (once per node: others wait on the lock, then open it)."""
    root = cache_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cache directory {root}: {exc.strerror}") from None
    key = hashlib.sha1(json.dumps([VERSION, src.split, img_size, src.selection], sort_keys=True)
                       .encode()).hexdigest()[:12]
    entry = root / f"{_slug(src.dataset)}-{src.split}-{img_size}px-{key}"
    manifest = {"version": VERSION, "split": src.split, "img_size": img_size, "count": len(src),
                "selection": src.selection, "files": src.fingerprint()}
    opened = _open(entry, manifest)
    if opened is not None:
        return opened
    try:
        with _locked(root / f"{entry.name}.lock"):
            opened = _open(entry, manifest)  # another process may have built it while we waited
            if opened is not None:  # built by another process meanwhile
                return opened
            _build(entry, src, img_size, manifest)
    except OSError as exc:  # unwritable cache directory, disk full: name the place, not a traceback
        raise DataError(f"dataset cache {root}: {exc.strerror or exc} ({exc.filename or entry}); "
                        "pass `cache_dir` DIR") from None
    opened = _open(entry, manifest)
    if opened is None:
        raise DataError(f"dataset cache {entry}: built but cannot be opened (was it removed meanwhile?)")
    opened.built = True
    return opened


def _open(entry: Path, manifest: dict) -> Optional[CacheEntry]:
    try:
        have = json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if have != manifest:  # both plain JSON types: any changed, added or removed file differs
        return None
    n, s = manifest["count"], manifest["img_size"]
    images_file = entry / "images.u8"
    try:
        if images_file.stat().st_size != n * 3 * s * s:
            return None
        images = np.memmap(images_file, dtype=np.uint8, mode="r", shape=(n, 3, s, s))
        labels = np.load(entry / "labels.npy")
    except (OSError, ValueError):
        return None
    return CacheEntry(entry, images, labels, built=False)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(entry: Path, src: SplitSource, img_size: int, manifest: dict) -> None:
    for stale in entry.parent.glob(f"{entry.name}.tmp-*"):  # a crashed builder's leftovers (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = entry.parent / f"{entry.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    n = len(src)
    size_gib = n * 3 * img_size ** 2 / 2 ** 30
    workers = _workers(n if src.paths is not None else 0)
    loud = src.paths is not None and n >= PARALLEL_FROM  # quick builds: load_data's summary line is enough
    if loud:
        _log.info(f"dataset cache: building {src.split} ({n} images at {img_size} px, {size_gib:.2f} GiB) in {entry} "
                  f"with {workers} process{'es' if workers > 1 else ''}")
    t0 = time.time()
    try:
        out = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=(n, 3, img_size, img_size))
        if src.paths is not None:
            bad, constant = _decode_files(src.paths, tmp / "images.u8", out.shape, workers, src.split)
            if bad:
                raise Unreadable(bad)
        else:
            constant = _resize_into(src.array, out)
        out.flush()
        _check_constant(src, out, constant)
        del out
        np.save(tmp / "labels.npy", np.asarray(src.labels, dtype=np.int64))
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        if entry.exists():  # stale: files changed. Open memmaps of it stay valid (unlinked inodes)
            old = entry.parent / f"{entry.name}.old-{os.getpid()}"
            entry.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(entry)
        with open(entry.parent / "builds.log", "a") as fh:  # who built what, when: one line per build
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {socket.gethostname()} pid {os.getpid()} "
                     f"{entry.name} {n} images\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dt = max(time.time() - t0, 1e-9)
    if loud:
        _log.info(f"dataset cache: built {src.split} in {dt:.1f} s ({n / dt:,.0f} img/s): {entry}")


def _check_constant(src: SplitSource, images: np.ndarray, constant: int) -> None:
    """A split whose every image is one flat colour is never a dataset: it is what a wrong bit
    depth, dtype or value range leaves (e.g. 16-bit tiles clipped to 255). Refuse it, whatever the
    cause; a few flat images (blank background tiles) are only counted in the log."""
    n = len(src)
    if n and constant == n:
        v = images[0, :, 0, 0].tolist()
        raise DataError(f"{src.dataset} {src.split} split: all {n} images are constant (each image one flat "
                        f"colour, e.g. RGB {tuple(v)}); the source's bit depth, dtype or value range is not what "
                        "it seems (accepted inputs: see data/pixels.py)")
    if constant:
        _log.info(f"dataset cache: {constant} of {n} {src.split} images are one flat colour (blank tiles?)")


def _workers(n_files: int) -> int:
    if n_files < PARALLEL_FROM:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), n_files // CHUNK))


def _decode_files(paths: list[Path], out_path: Path, shape: tuple, workers: int,
                  label: str) -> tuple[list[str], int]:
    """Decode into the array file; returns the error lines of unreadable files (all of them, so a
    user fixes the dataset in one pass) and how many decoded images are one flat colour."""
    chunks = [(i, paths[i:i + CHUNK]) for i in range(0, len(paths), CHUNK)]
    bad: list[str] = []
    constant = 0
    progress = _Progress(f"caching {label}", len(paths))
    if workers == 1:
        out = np.memmap(out_path, dtype=np.uint8, mode="r+", shape=shape)
        for start, chunk in chunks:
            b, c = _decode_chunk_into(out, start, chunk, shape[-1])
            bad, constant = bad + b, constant + c
            progress.advance(len(chunk))
        out.flush()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # fork: workers need only PIL and numpy, and start in milliseconds
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            futures = {pool.submit(_decode_chunk, str(out_path), shape, start, chunk): len(chunk)
                       for start, chunk in chunks}
            for f in as_completed(futures):
                b, c = f.result()
                bad, constant = bad + b, constant + c
                progress.advance(futures[f])
    progress.close()
    return sorted(bad), constant


def _decode_chunk(out_path: str, shape: tuple, start: int, paths: list[Path]) -> tuple[list[str], int]:
    out = np.memmap(out_path, dtype=np.uint8, mode="r+", shape=shape)
    res = _decode_chunk_into(out, start, paths, shape[-1])
    out.flush()
    return res


def _decode_chunk_into(out: np.ndarray, start: int, paths: list[Path], size: int) -> tuple[list[str], int]:
    bad, constant = [], 0
    for j, p in enumerate(paths):
        try:
            img = out[start + j] = decode(p, size)
        except DataError as exc:
            bad.append(str(exc))
            continue
        constant += int(img.min() == img.max())
    return bad, constant


def decode(path: Path, size: int) -> np.ndarray:
    """Decode one file to uint8 (3, size, size), converting its mode by data/pixels.py's rules,
    resized bilinearly when it is not ``size`` square.

    Raises:
        DataError: the file cannot be decoded, or its mode or value range has no faithful 8-bit
            reading; the message names the file. PIL and numpy only: it runs in the decoding
            processes.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = pil_to_rgb8(im, str(path))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"unreadable image {path}: {exc.__class__.__name__}: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"unreadable image {path}: {exc.__class__.__name__}: {exc}") from None
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return rgb.transpose(2, 0, 1)


def _resize_into(array: np.ndarray, out: np.ndarray) -> int:
    """In-memory uint8 images (N, C, H, W), C 1 or 3, resized bilinearly to the entry's size in
    chunks; returns how many are one flat colour."""
    import torch
    import torch.nn.functional as F

    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] not in (1, 3):
        raise DataError(f"in-memory images must be uint8 (N, 1|3, H, W), got {array.dtype} {array.shape}")
    size, constant = out.shape[-1], 0
    for i in range(0, len(array), 1024):
        x = torch.from_numpy(np.ascontiguousarray(array[i:i + 1024]))
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        flat = x.reshape(len(x), -1)
        constant += int((flat.amin(1) == flat.amax(1)).sum())
        out[i:i + len(x)] = x.numpy()
    return constant


class _Progress:
    """A progress bar on a terminal (progress.Bar); otherwise a log line about every 10 seconds."""

    def __init__(self, label: str, total: int):
        from ..progress import Bar

        self.label, self.total, self.done = label, total, 0
        self.t0 = self.last = time.time()
        self.bar = Bar(label, total, enabled=sys.stderr.isatty() and total >= PARALLEL_FROM)

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar.active:
            self.bar.update(advance=n)
        elif time.time() - self.last >= 10:
            self.last = time.time()
            rate = self.done / max(self.last - self.t0, 1e-9)
            _log.info(f"dataset cache: {self.label} {self.done}/{self.total} ({rate:,.0f} img/s)")

    def close(self) -> None:
        self.bar.close()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:40] or "data"
