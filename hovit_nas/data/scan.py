"""Which files of a class folder are samples: one scanning policy for every folder source.

It follows torchvision's ``ImageFolder`` (``torchvision.datasets.folder.make_dataset``): the
classes are the sorted names of the root's subfolders, a class's samples are the image files
anywhere below its folder (``os.walk`` following links), sorted by path. It differs where
``ImageFolder`` silently counts or repeats files:

- **Counted:** every file whose extension Pillow can open (``PIL.Image.registered_extensions``,
  formats with a decoder; ImageFolder takes a fixed list of nine), case-insensitive.
- **Skipped, and counted in the log by reason:**

  - hidden files and folders (a name starting with ``.``: ``.DS_Store``, AppleDouble ``._x.png``,
    ``.ipynb_checkpoints``); ImageFolder makes a hidden folder a class;
  - metadata folders of NAS boxes, operating systems and archivers, at any depth, as classes
    too: names starting with ``@`` (Synology ``@eaDir`` thumbnails, QNAP ``@Recycle``), ``#``
    (Synology ``#recycle``, ``#snapshot``), ``$`` (``$RECYCLE.BIN``), and ``__MACOSX``,
    ``System Volume Information``, ``lost+found``, ``__pycache__``, ``~snapshot``. Their
    thumbnails are copies of real tiles: counted, they would put one tile in two splits;
  - files that are not images by extension (``Thumbs.db``, ``notes.txt``);
  - files directly in the root (not in a class folder);
  - broken links.
- **Links:** followed, to files and to folders (as ImageFolder). A real file reached twice is
  one sample (the second path is skipped as a repeated link); a real file reached from two
  classes is refused (its label would be both). A link back to a folder above it is not walked
  again (ImageFolder would loop).
- Files in nested folders of a class count; the log says how many.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import DataError

METADATA_PREFIXES = (".", "@", "#", "$")
METADATA_NAMES = frozenset({"__macosx", "system volume information", "lost+found", "__pycache__", "~snapshot"})


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) of the formats Pillow can decode here."""
    from PIL import Image, ImageFile

    Image.init()
    readable = {fmt for fmt, (factory, _) in Image.OPEN.items()
                if not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))}
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in readable and fmt not in ("EPS", "MPEG"))  # vector/video: not tiles


def is_metadata(name: str) -> bool:
    """A hidden or metadata file or folder name (see the module docstring)."""
    return name.startswith(METADATA_PREFIXES) or name.lower() in METADATA_NAMES


@dataclass
class Scan:
    """A class folder's samples in ImageFolder order, and what was left out and why.

    ``files[i]`` has label ``labels[i]``, an index into ``classes`` (sorted names)."""

    root: Path
    files: list[Path]
    labels: list[int]
    classes: list[str]
    nested: int = 0  # samples found below a class folder's own level
    skipped: Counter = field(default_factory=Counter)  # reason -> files
    examples: dict = field(default_factory=dict)  # reason -> one path

    def summary(self) -> str:
        """One log line: samples, classes, nested, and every skip reason with a count."""
        line = (f"scanned {self.root}: {len(self.files)} images in {len(self.classes)} classes "
                f"({self.nested} from nested folders)")
        if self.skipped:
            reasons = ", ".join(f"{n} {why} (e.g. {self.examples[why]})" for why, n in self.skipped.most_common())
            line += f"; skipped {sum(self.skipped.values())}: {reasons}"
        return line

    def _skip(self, why: str, path: str, n: int = 1) -> None:
        self.skipped[why] += n
        self.examples.setdefault(why, os.path.relpath(path, self.root))


def _count_files(path: str) -> int:
    return sum(len(f) for _, _, f in os.walk(path, followlinks=False)) if os.path.isdir(path) else 1


def scan_class_folder(root: Path) -> Scan:
    """Scan ``root`` (one subfolder per class) by the policy in this module's docstring.

    Raises:
        DataError: ``root`` is missing or not a folder, has no class folders, a class folder has
            no images, or one real file is reached from two classes.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such directory")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    exts = image_extensions()
    scan = Scan(root, [], [], [])
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if is_metadata(e.name):
            scan._skip("in hidden or metadata folders" if e.is_dir() else "hidden", e.path,
                       _count_files(e.path) if e.is_dir() else 1)
        elif e.is_dir():
            scan.classes.append(e.name)
        elif os.path.lexists(e.path) and not os.path.exists(e.path):
            scan._skip("broken links", e.path)
        else:
            scan._skip("not in a class folder", e.path)
    if not scan.classes:
        raise DataError(f"{root}: no class subfolders found")
    owner: dict[str, tuple[int, str]] = {}  # real path -> (class, first path)
    for c, name in enumerate(scan.classes):
        found = []
        top = os.path.join(root, name)
        seen_dirs = {os.path.realpath(top)}
        for d, dirs, names in os.walk(top, followlinks=True):
            keep = []
            for sub in sorted(dirs):
                full = os.path.join(d, sub)
                real = os.path.realpath(full)
                if is_metadata(sub):
                    scan._skip("in hidden or metadata folders", full, _count_files(full))
                elif real in seen_dirs:
                    scan._skip("links to a folder already walked", full)
                else:
                    seen_dirs.add(real)
                    keep.append(sub)
            dirs[:] = keep
            for f in names:
                full = os.path.join(d, f)
                if f.startswith("."):
                    scan._skip("hidden", full)
                elif os.path.splitext(f)[1].lower() not in exts:
                    scan._skip("not an image", full)
                elif not os.path.exists(full):
                    scan._skip("broken links", full)
                else:
                    real = os.path.realpath(full)
                    if real in owner:
                        first_class, first = owner[real]
                        if first_class != c:
                            raise DataError(f"{full} and {first} are the same file in two classes "
                                            f"({name}, {scan.classes[first_class]}); its label is ambiguous")
                        scan._skip("repeated links to one file", full)
                        continue
                    owner[real] = (c, full)
                    found.append(full)
                    scan.nested += d != top
        if not found:
            raise DataError(f"{top}: class folder has no images (none of {len(exts)} extensions Pillow reads, "
                            "e.g. .png .jpg .tif)")
        found.sort(key=lambda f: f.split(os.sep))  # pathlib's order (by path parts), at string speed
        scan.files += map(Path, found)
        scan.labels += [c] * len(found)
    return scan
