"""The dataset cache (decode once per node) and the uint8 batches augmented on the device."""
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from conftest import ROOT, make_class_folder
from hovit_nas.data import Augment, Batches, DataSpec, Images, load_data, to_model_input
from hovit_nas.data.cache import PARALLEL_FROM
from hovit_nas.errors import DataError


def _entries(cache):
    return sorted(p.name for p in cache.iterdir() if p.is_dir())


def test_built_once_then_opened_and_rebuilt_when_files_change(tmp_path, class_folder, log_lines):
    cache, logs = tmp_path / "cache", log_lines
    spec = DataSpec(path=str(class_folder), img_size=24, cache_dir=str(cache))
    first = load_data(spec)
    assert "built train+val+test" in logs[-1] and str(cache) in logs[-1]
    assert len(_entries(cache)) == 3
    manifest = json.loads((first.train.cache / "manifest.json").read_text())
    assert manifest["img_size"] == 24 and manifest["split"] == "train" and len(manifest["files"]) == len(first.train)
    assert {tuple(f[:1]) for f in manifest["files"]} <= {(str(p),) for p in class_folder.rglob("*.*")}

    again = load_data(spec)
    assert logs[-1].startswith("dataset cache: opened") and isinstance(again.train.images, np.memmap)
    assert not again.train.images.flags.writeable  # read-only: shared through the page cache
    assert np.array_equal(np.asarray(again.val.images), np.asarray(first.val.images))

    # a modified file: its split is rebuilt in place (same entry name), with the new pixels
    victim = first.test.cache and json.loads((first.test.cache / "manifest.json").read_text())["files"][0][0]
    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(victim)
    third = load_data(spec)
    assert logs[-1].startswith("dataset cache: built test")
    assert _entries(cache) == sorted(_entries(cache)) and len(_entries(cache)) == 3
    assert int(np.asarray(third.test.images).reshape(len(third.test), -1).sum(1).min()) == 0

    # a damaged entry is rebuilt, and a crashed builder's temporary folder is cleared meanwhile
    (third.train.cache / "manifest.json").write_text("{")
    (cache / f"{third.train.cache.name}.tmp-999999").mkdir()
    load_data(spec)
    assert logs[-1].startswith("dataset cache: built train (") and len(_entries(cache)) == 3
    # another resolution is another entry
    load_data(DataSpec(path=str(class_folder), img_size=16, cache_dir=str(cache)))
    assert len(_entries(cache)) == 6


def test_every_unreadable_file_is_named_up_front(tmp_path, class_folder):
    (class_folder / "LYM" / "LYM-998.png").write_bytes(b"\x89PNG garbage")
    (class_folder / "TUM" / "TUM-999.tif").write_bytes(b"II*\x00 nope")
    spec = DataSpec(path=str(class_folder), img_size=16, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"unreadable image .*LYM-998\.png.*\(and 1 more unreadable files\)"):
        load_data(spec)
    assert not [p for p in (tmp_path / "c").iterdir() if ".tmp-" in p.name]  # nothing half-built left


CONCURRENT = """
import logging, sys, time
from hovit_nas.data import DataSpec, load_data
logs = []
class Collect(logging.Handler):
    def emit(self, record):
        logs.append(record.getMessage())
logging.getLogger("hovit_nas").addHandler(Collect())
logging.getLogger("hovit_nas").setLevel(logging.INFO)
t0 = time.time()
s = load_data(DataSpec(path=sys.argv[1], img_size=48, cache_dir=sys.argv[2]))
print(logs[-1].split(" (")[0], len(s.train))
"""


def test_concurrent_processes_build_once(tmp_path):
    per_class = PARALLEL_FROM // 2 + 10  # large enough for the parallel decoder
    folder = make_class_folder(tmp_path / "big", classes=("A", "B", "C"), per_class=per_class, size=64)
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(folder), str(cache)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lines = [o[0].strip() for o in outs]
    built = Counter(split for ln in lines if ln.startswith("dataset cache: built ")
                    for split in ln.split()[3].split("+"))
    assert built == {"train": 1, "val": 1, "test": 1}, lines  # each split once; the others waited and opened
    assert len(_entries(cache)) == 3 and not list(cache.glob("*.tmp-*"))


def _dihedral_index(img: torch.Tensor, ref: torch.Tensor) -> int:
    """Which of the 8 flips/rotations of ``ref`` ``img`` is."""
    views = [torch.rot90(ref, k, (-2, -1)) for k in range(4)] + \
            [torch.rot90(ref.flip(-1), k, (-2, -1)) for k in range(4)]
    return next(i for i, v in enumerate(views) if torch.equal(v, img))


def _old_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The per-sample CPU augmentation this replaced (random h/v flips, random 90-degree turn)."""
    if torch.rand((), generator=g) < 0.5:
        x = x.flip(-1)
    if torch.rand((), generator=g) < 0.5:
        x = x.flip(-2)
    return torch.rot90(x, int(torch.randint(0, 4, (), generator=g)), (-2, -1))


def test_device_augmentation_has_the_old_distribution_independent_per_sample():
    ref = torch.arange(3 * 5 * 5, dtype=torch.uint8).view(3, 5, 5)  # no symmetry: 8 distinct views
    n = 4000
    g = torch.Generator().manual_seed(0)
    x = ref.expand(n, -1, -1, -1).clone()
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1) / 255.0  # identity normalisation
    out = to_model_input(x, mean, std, Augment.draw(n, g)).round().to(torch.uint8)
    new = [_dihedral_index(o, ref) for o in out]
    old = [_dihedral_index(_old_augment(ref, g), ref) for _ in range(n)]
    for counts in (Counter(new), Counter(old)):
        assert len(counts) == 8
        assert chisquare([counts[i] for i in range(8)]).pvalue > 1e-3  # uniform over the 8 views
    # independence: consecutive samples' views are jointly uniform over the 64 pairs
    pairs = Counter(zip(new[0::2], new[1::2]))
    assert chisquare([pairs[(a, b)] for a in range(8) for b in range(8)]).pvalue > 1e-3
    # and the two implementations' distributions agree
    table = np.array([[Counter(new)[i] for i in range(8)], [Counter(old)[i] for i in range(8)]])
    from scipy.stats import chi2_contingency
    assert chi2_contingency(table).pvalue > 1e-3


def test_normalisation_matches_the_old_host_formula():
    x = torch.randint(0, 255, (4, 3, 6, 6), dtype=torch.uint8)
    mean, std = torch.tensor([0.7, 0.5, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(to_model_input(x, mean, std), (x.float() / 255.0 - mean) / std, atol=1e-5)


def test_batched_and_per_sample_orientation_agree():
    from hovit_nas.data.loader import _orient_batched, _orient_per_sample

    x = torch.randint(0, 255, (64, 3, 7, 7), dtype=torch.uint8)
    a = Augment.draw(64, torch.Generator().manual_seed(3))
    batched, looped = _orient_batched(x, a), _orient_per_sample(x, a)
    assert torch.equal(batched, looped) and batched.is_contiguous()
    assert not torch.equal(batched, x)


def test_batches_are_uint8_until_the_device_reproducible_and_cover_the_split(tmp_path, class_folder):
    s = load_data(DataSpec(path=str(class_folder), img_size=16, cache_dir=str(tmp_path / "c")))
    assert s.train.images.dtype == np.uint8

    def epoch(seed):
        return list(Batches(s.train, 4, torch.device("cpu"), shuffle=True,
                            generator=torch.Generator().manual_seed(seed)))

    a, b, c = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert any(not torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(s.train.labels.tolist())
    assert a[0][0].dtype == torch.float32 and a[0][0].shape[1:] == (3, 16, 16)
    ordered = list(Batches(s.val, 512, torch.device("cpu"), shuffle=False))
    assert len(ordered) == 1 and torch.equal(ordered[0][1], torch.from_numpy(s.val.labels))
    x0, y0 = s.val[0]  # one un-augmented image, as the evaluation batches see it
    assert torch.equal(ordered[0][0][0], x0) and y0 == int(s.val.labels[0])


def test_an_abandoned_epoch_stops_its_prefetch_thread(tmp_path):
    imgs = np.zeros((64, 3, 8, 8), np.uint8)
    ds = Images(imgs, np.zeros(64, np.int64), (0.5,) * 3, (0.5,) * 3, augment=True)
    it = iter(Batches(ds, 2, torch.device("cpu"), shuffle=True, prefetch=1))
    next(it)
    it.close()  # what `break` out of a for loop does
    import threading
    assert not [t for t in threading.enumerate() if t.name == "hovit-nas-batches"]


def test_an_unwritable_cache_directory_is_one_line_exit_2(tmp_path):
    from conftest import run_cli
    r = run_cli("train", "--config", "hovit_s", "--img-size", "32", "--epochs-dense", "1", "--epochs-prune", "0",
                "--max-steps", "1", "--cache-dir", "/sys/kernel", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: dataset cache /sys/kernel: ")
