import json
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import make_class_folder, run_cli, write_image
from hovit_nas.data import DataSpec, check_num_classes, load_data, stratified_split
from hovit_nas.errors import DataError


def _labels(ds):
    return [int(ds[i][1]) for i in range(len(ds))]


def test_split_is_deterministic_and_stratified():
    labels = [0] * 100 + [1] * 40 + [2] * 20
    a = stratified_split(labels, 0.15, 0.15, seed=3)
    b = stratified_split(labels, 0.15, 0.15, seed=3)
    c = stratified_split(labels, 0.15, 0.15, seed=4)
    assert a == b and a != c
    all_idx = a["train_idx"] + a["val_idx"] + a["test_idx"]
    assert sorted(all_idx) == list(range(160))  # a partition
    for key in ("val_idx", "test_idx"):
        counts = Counter(labels[i] for i in a[key])
        assert counts == {0: 15, 1: 6, 2: 3}


def test_class_folder_png_and_tiff(class_folder):
    s = load_data(DataSpec(path=str(class_folder), img_size=24, seed=0))
    assert s.classes == ["ADI", "LYM", "TUM"]
    assert sum(s.sizes.values()) == 18
    x, y = s.train[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    for ds in (s.train, s.val, s.test):
        assert set(_labels(ds)) == {0, 1, 2}  # stratified: every class in every split
    again = load_data(DataSpec(path=str(class_folder), img_size=24, seed=0, augment=False))
    assert _labels(again.test) == _labels(s.test)


def test_split_index_json_and_external_test(tmp_path, class_folder):
    idx = {"train_idx": list(range(0, 18, 2)), "val_idx": [1, 3, 5], "test_idx": [7, 9]}
    p = tmp_path / "split.json"
    p.write_text(json.dumps(idx))
    s = load_data(DataSpec(path=str(class_folder), img_size=16, split_index=str(p)))
    assert s.sizes == {"train": 9, "val": 3, "test": 2}
    ext = make_class_folder(tmp_path / "val7k", per_class=2, seed=9)
    s = load_data(DataSpec(path=str(class_folder), img_size=16, split_index=str(p), external_test=str(ext)))
    assert s.sizes["test"] == 6


def test_split_folders_pcam_style(tmp_path):
    for split, n in (("train", 4), ("valid", 2), ("test", 2)):
        make_class_folder(tmp_path / "pcam" / split, classes=("0", "1"), per_class=n, seed=n)
    s = load_data(DataSpec(path=str(tmp_path / "pcam"), img_size=16))
    assert s.sizes == {"train": 8, "val": 4, "test": 4} and s.classes == ["0", "1"]


def test_medmnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 9).reshape(-1, 1)
    np.savez(tmp_path / "pathmnist.npz", **arrays)
    s = load_data(DataSpec(path=str(tmp_path / "pathmnist.npz"), img_size=32))
    assert s.num_classes == 9 and s.sizes == {"train": 20, "val": 6, "test": 6}
    assert s.train[0][0].shape == (3, 32, 32)
    with pytest.raises(DataError, match="pass `download`"):
        load_data(DataSpec(path=str(tmp_path / "missing.npz")))


def test_builtin_digits():
    s = load_data(DataSpec(img_size=32))
    assert s.num_classes == 10 and sum(s.sizes.values()) == 1797
    assert "load_digits" in s.description
    x, _ = s.val[0]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1])  # channels replicated


@pytest.mark.parametrize("case", ["missing", "no_classes", "empty_class", "corrupt", "index_range", "mismatch"])
def test_bad_input_errors_name_the_culprit(tmp_path, class_folder, case):
    if case == "missing":
        spec, match = DataSpec(path=str(tmp_path / "nope")), "nope: no such file or directory"
    elif case == "no_classes":
        (tmp_path / "flat").mkdir()
        write_image(tmp_path / "flat" / "a.png", np.random.default_rng(0))
        spec, match = DataSpec(path=str(tmp_path / "flat")), "no class subfolders"
    elif case == "empty_class":
        (class_folder / "EMPTY").mkdir()
        spec, match = DataSpec(path=str(class_folder)), "EMPTY: class folder has no images"
    elif case == "corrupt":
        (class_folder / "LYM" / "LYM-999.png").write_bytes(b"\x89PNG garbage")
        spec, match = DataSpec(path=str(class_folder), img_size=16), r"unreadable image .*LYM-999\.png"
    elif case == "index_range":
        p = tmp_path / "idx.json"
        p.write_text(json.dumps({"train_idx": [0, 1], "val_idx": [2], "test_idx": [99]}))
        spec, match = DataSpec(path=str(class_folder), split_index=str(p)), r"test_idx\[0\] = 99 is out of range"
    else:
        s = load_data(DataSpec(path=str(class_folder), img_size=16))
        with pytest.raises(DataError, match="class count mismatch: .* 3 classes, model.num_classes is 9"):
            check_num_classes(s, 9)
        return
    with pytest.raises(DataError, match=match):
        load_data(spec)


def test_cli_bad_data_is_one_line_exit_2(tmp_path, class_folder):
    (class_folder / "TUM" / "TUM-bad.tif").write_bytes(b"II*\x00 not a tiff")
    r = run_cli("train", "--config", "hovit_s", "--data", str(class_folder), "--img-size", "32",
                "--out", str(tmp_path / "run"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: unreadable image")
    assert "TUM-bad.tif" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "--config", "hovit_s", "--data", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'missing'}: no such file or directory"
    (class_folder / "TUM" / "TUM-bad.tif").unlink()
    cfg = tmp_path / "nine.yaml"
    cfg.write_text(_studies("hovit_s.yaml").read_text())
    r = run_cli("train", "--config", str(cfg), "--data", str(class_folder), "--img-size", "32",
                "--out", str(tmp_path / "run"))  # a 9-class config file vs 3 classes on disk
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()  # the scan line, the cache line, the data line, the error
    assert len(lines) == 4 and lines[0].startswith("scanned ") and lines[1].startswith("dataset cache: ")
    assert "class count mismatch" in lines[-1]


def _studies(name):
    from conftest import ROOT
    return ROOT / "studies" / name


def test_real_pcam_split_folders(pcam_subset):
    """The real PatchCamelyon layout (train/valid/test, JPEG, classes 0/1), capped per split."""
    s = load_data(DataSpec(path=str(pcam_subset), img_size=32, max_per_split=20))
    assert s.classes == ["0", "1"] and s.sizes == {"train": 20, "val": 20, "test": 20}
    assert sorted(Counter(_labels(s.test)).values()) == [10, 10]  # the cap is stratified


def test_overlapping_split_indices_are_refused_naming_the_pair_and_an_index(tmp_path, class_folder):
    p = tmp_path / "idx.json"
    p.write_text(json.dumps({"train_idx": [0, 1, 2, 7], "val_idx": [3, 4], "test_idx": [5, 7, 8]}))
    with pytest.raises(DataError, match=r"train_idx and test_idx overlap \(1 samples, e\.g\. index 7\); "
                                        r"splits must be disjoint"):
        load_data(DataSpec(path=str(class_folder), split_index=str(p)))
    r = run_cli("train", "--config", "hovit_s", "--data", str(class_folder), "--split-index", str(p), cwd=tmp_path)
    lines = r.stderr.strip().splitlines()  # the scan's log line, then the one error line
    assert r.returncode == 2 and len(lines) == 2 and lines[0].startswith("scanned ") and "overlap" in lines[1]
