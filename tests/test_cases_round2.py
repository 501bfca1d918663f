"""Issue 29's handed cases and their kinds: EXIF-rotated tiles, a read-only study, names that
become paths or URLs, the latency service's addresses and a search whose trials all fail."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

CASES = Path(os.environ.get("HOVIT_NAS_SHARED", ROOT.parent / "shared")) / "cases"


def case(name: str) -> Path:
    p = CASES / name
    if not p.exists():
        pytest.skip(f"shared case absent: {p}")
    return p


# ------------------------------------------------------------------------------ EXIF orientation

def _truth(folder: Path) -> dict:
    with np.load(folder / "truth.npz") as z:
        return {k: z[k] for k in z.files}


def _resized(a: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR), dtype=np.int16)


def test_exif_rotated_jpegs_decode_upright_as_exif_transpose_does():
    """JPEGs stored sideways with EXIF orientation 6 decode to their upright pixels (JPEG
    compression leaves a few grey levels: read as stored, the mean error is 13..57)."""
    from PIL import Image

    from hovit_nas.data.cache import decode
    from hovit_nas.data.pixels import pil_to_rgb8

    folder = case("exif-rotated")
    truth = _truth(folder)
    assert len(truth) == 15
    for rel, want in truth.items():
        with Image.open(folder / rel) as im:
            assert im.getexif().get(0x0112) == 6  # the case is what it says
            got = pil_to_rgb8(im, rel)
        assert got.shape == want.shape, rel
        assert np.abs(got.astype(np.int16) - want).mean() < 8, rel
        cached = decode(folder / rel, 32).transpose(1, 2, 0)  # what the cache stores, resized square
        assert np.abs(cached.astype(np.int16) - _resized(want, 32)).mean() < 8, rel


def test_a_cache_entry_of_the_old_decoding_rules_is_rebuilt_upright(tmp_path, monkeypatch):
    """The cache key carries the decoding rules' version: an entry built before the orientation
    was applied (sideways pixels) is not reused for the same files."""
    from hovit_nas.data import cache

    folder = case("exif-rotated")
    truth = _truth(folder)
    rels = sorted(truth)
    src = cache.SplitSource("exif", "train", {"root": str(folder)}, np.zeros(len(rels), dtype=np.int64),
                            paths=[folder / r for r in rels])
    new_version = cache.VERSION
    monkeypatch.setattr(cache, "VERSION", 2)  # as the last version that stored files as saved
    monkeypatch.setattr(cache, "pil_to_rgb8", lambda im, what: np.asarray(im.convert("RGB")))
    old = cache.open_or_build(src, 32, str(tmp_path))
    monkeypatch.undo()
    assert new_version > 2
    entry = cache.open_or_build(src, 32, str(tmp_path))
    assert entry.built and entry.path != old.path
    for i, rel in enumerate(rels):
        got = np.asarray(entry.images[i]).transpose(1, 2, 0).astype(np.int16)
        assert np.abs(got - _resized(truth[rel], 32)).mean() < 8, rel
