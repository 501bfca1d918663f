"""Issue 19: trust what goes in. Each kind of failing input from ../shared/cases, run as a user
would, plus another case of the same kind: pixels that are not 8-bit RGB, .npz layouts, the
class-folder scanning policy, classes missing from a split, study identity, and storage
failures. (A Ray worker killed mid-trial: test_trust_ray.py.)"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from PIL import Image

from conftest import ROOT, case, run_cli, write_image
from spaces import tiny_space
from hovit_nas import study as st
from hovit_nas.config import DataSpec
from hovit_nas.data import load_data, scan_class_folder
from hovit_nas.data.cache import decode
from hovit_nas.data.pixels import array_to_uint8
from hovit_nas.errors import DataError, HovitError, StorageError
from hovit_nas.metrics import classification_metrics



def one_line_exit_2(r, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    for n in needles:
        assert n in last, (n, last)
    return last


def _load(path, size=32, **kw):
    import logging

    logs: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            logs.append(record.getMessage())

    logger, h = logging.getLogger("hovit_nas"), Collect()
    old = logger.level
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    try:
        splits = load_data(DataSpec(path=str(path), img_size=size, **kw))
    finally:
        logger.removeHandler(h)
        logger.setLevel(old)
    return splits, "\n".join(logs)


# ------------------------------------------------------------------ 1. pixels that are not 8-bit

def test_tiff16_case_trains_on_real_pixels_scaled_from_16_bits(tmp_path):
    src = case("tiff16")
    f = sorted(src.rglob("*.tif"))[0]
    raw = np.asarray(Image.open(f))
    assert Image.open(f).mode == "I;16" and raw.max() > 255
    expect = np.rint(raw.astype(np.float64) * 255 / 65535).astype(np.uint8)
    got = decode(f, raw.shape[0])
    assert (got == expect[None]).all()  # the documented rule, grey replicated to 3 channels
    splits, log = _load(src, size=32, cache_dir=str(tmp_path / "cache"))
    for ds in (splits.train, splits.val, splits.test):
        imgs = np.asarray(ds.images)
        assert imgs.max() < 255 and imgs.std() > 5, "the cache holds real pixels, not a blank 255"
        flat = imgs.reshape(len(imgs), -1)
        assert (flat.max(1) > flat.min(1)).all()


@pytest.mark.parametrize("mode", ["I;16-png", "F", "I", "1", "LA", "RGBA"])
def test_other_modes_convert_by_the_documented_rule(tmp_path, mode):
    rng = np.random.default_rng(0)
    p = tmp_path / "x.png"
    if mode == "I;16-png":
        a = rng.integers(1000, 60000, (16, 16)).astype(np.uint16)
        Image.fromarray(a).save(p)
        want = np.rint(a.astype(np.float64) * 255 / 65535)
    elif mode == "F":
        p = tmp_path / "x.tif"
        a = rng.random((16, 16)).astype(np.float32)
        Image.fromarray(a).save(p)
        want = np.rint(a * 255)
    elif mode == "I":
        p = tmp_path / "x.tif"
        a = rng.integers(300, 65535, (16, 16)).astype(np.int32)
        Image.fromarray(a).save(p)
        want = np.rint(a.astype(np.float64) * 255 / 65535)
    else:
        im = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).convert(mode)
        im.save(p)
        want = np.asarray(Image.open(p).convert("RGB"))[..., 0]
    got = decode(p, 16)
    assert got.dtype == np.uint8 and got.shape == (3, 16, 16)
    assert np.abs(got[0].astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize("make,needles", [
    (lambda: Image.fromarray((np.random.default_rng(0).random((8, 8)) * 200).astype(np.float32)),
     ["mode F", "values 0", "accepted: floats in [0, 1]"]),
    (lambda: Image.fromarray(np.full((8, 8), 100_000, np.int32)), ["mode I", "values 100000..100000"]),
    (lambda: Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8)), ["I;16", "values 0..63", "8-bit"]),
])
def test_a_mode_without_a_faithful_8_bit_reading_is_refused_naming_file_mode_and_range(tmp_path, make, needles):
    p = tmp_path / "bad.tif"
    make().save(p)
    with pytest.raises(DataError) as e:
        decode(p, 8)
    assert str(p) in str(e.value)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_a_multi_frame_file_is_refused(tmp_path):
    p = tmp_path / "stack.tif"
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match="2 frames"):
        decode(p, 8)


@pytest.mark.parametrize("arr,want_max", [
    (np.full((2, 4, 4), 65535, np.uint16), 255), (np.ones((2, 4, 4), bool), 255),
    (np.full((2, 4, 4), 0.5, np.float64), 128), (np.full((2, 4, 4), 200, np.int64), 200),
])
def test_array_dtypes_convert_by_rule(arr, want_max):
    out = array_to_uint8(arr, "k")
    assert out.dtype == np.uint8 and int(out.max()) == want_max


@pytest.mark.parametrize("arr,needles", [
    (np.full((2, 4, 4), 3.0, np.float32), ["k (dtype float32)", "values 3..3", "[0, 1]"]),
    (np.full((2, 4, 4), np.nan, np.float32), ["NaN"]),
    (np.full((2, 4, 4), -1, np.int16), ["dtype int16", "values -1..-1"]),
    (np.full((2, 4, 4), 300, np.int32), ["dtype int32", "values 300..300"]),
    (np.full((2, 4, 4), 1 + 1j), ["complex128"]),
])
def test_array_dtypes_without_a_faithful_reading_are_refused(arr, needles):
    with pytest.raises(DataError) as e:
        array_to_uint8(arr, "k")
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_a_cache_of_all_constant_images_is_an_error_whatever_the_cause(tmp_path):
    for c in ("A", "B"):
        for i in range(4):
            write_image(tmp_path / "white" / c / f"{i}.png", np.random.default_rng(i), 16)
            Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(tmp_path / "white" / c / f"{i}.png")
    with pytest.raises(DataError, match="all .* images are constant"):
        _load(tmp_path / "white", cache_dir=str(tmp_path / "cache"))
    npz = tmp_path / "zeros.npz"
    z = {f"{s}_images": np.zeros((4, 8, 8), np.uint8) for s in ("train", "val", "test")}
    z.update({f"{s}_labels": np.array([0, 1, 0, 1]) for s in ("train", "val", "test")})
    np.savez(npz, **z)
    with pytest.raises(DataError, match="all 4 images are constant"):
        _load(npz, cache_dir=str(tmp_path / "cache"))


# -------------------------------------------------------------------------------- 2. .npz layout

def test_chestmnist_multilabel_case_is_exit_2_naming_key_and_shape(tmp_path):
    npz = case("chestmnist-multilabel") / "chestmnist_tiny.npz"
    r = run_cli("train", "--config", "hovit_s", "--img-size", "32", "--data", str(npz), "--epochs", "1",
                "--out", str(tmp_path / "run"), env={"HOVIT_NAS_CACHE_DIR": str(tmp_path / "cache")})
    one_line_exit_2(r, "train_labels", "(24, 14)", "(N,) or (N, 1)")


def _npz(path, **over):
    rng = np.random.default_rng(0)
    d = {}
    for s, n in (("train", 12), ("val", 6), ("test", 6)):
        d[f"{s}_images"] = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
        d[f"{s}_labels"] = (np.arange(n) % 3).reshape(n, 1)
    d.update(over)
    np.savez(path, **d)
    return path


@pytest.mark.parametrize("over,needles", [
    ({"val_labels": np.zeros((5, 1), np.int64)}, ["val_labels has 5 labels", "val_images has 6"]),
    ({"train_labels": np.eye(3, dtype=np.uint8)[np.arange(12) % 3]}, ["train_labels", "(12, 3)", "one-hot"]),
    ({"test_labels": np.zeros(6, np.float32)}, ["test_labels", "float32", "integer"]),
    ({"train_images": np.zeros((12, 2, 8, 8, 3), np.uint8)}, ["train_images", "(12, 2, 8, 8, 3)", "accepted"]),
    ({"val_images": np.zeros((6, 8, 8, 3), np.float64) + 7}, ["val_images", "float64", "values 7..7"]),
    ({"test_labels": -np.ones(6, np.int64)}, ["test_labels", "negative"]),
])
def test_npz_keys_are_checked_up_front(tmp_path, over, needles):
    with pytest.raises(DataError) as e:
        _load(_npz(tmp_path / "d.npz", **over), cache_dir=str(tmp_path / "c"))
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_a_refused_npz_is_closed_and_a_bare_array_is_named(tmp_path):
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match="val_labels has 5 labels"):
            _load(_npz(tmp_path / "d.npz", val_labels=np.zeros((5, 1), np.int64)), cache_dir=str(tmp_path / "c"))
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]  # the archive was closed
    bare = tmp_path / "bare.npz"
    with bare.open("wb") as f:
        np.save(f, np.zeros((4, 8, 8), np.uint8))  # an .npy under an .npz name
    with pytest.raises(DataError, match="bare.npz: a single array, not an .npz archive; accepted: "):
        _load(bare, cache_dir=str(tmp_path / "c"))


def test_npz_channels_first_uint16_and_grey_layouts_are_accepted(tmp_path):
    rng = np.random.default_rng(1)
    over = {"train_images": rng.integers(0, 65535, (12, 3, 8, 8)).astype(np.uint16),
            "val_images": rng.integers(0, 255, (6, 8, 8, 1)).astype(np.uint8),
            "test_images": rng.random((6, 8, 8))}
    splits, _ = _load(_npz(tmp_path / "d.npz", **over), size=16, cache_dir=str(tmp_path / "c"))
    assert splits.sizes == {"train": 12, "val": 6, "test": 6} and splits.num_classes == 3


# ------------------------------------------------------------------------- 3. the folder scanner

def test_eadir_case_counts_no_thumbnails_and_says_what_it_skipped(tmp_path):
    src = case("eadir")
    scan = scan_class_folder(src)
    assert len(scan.files) == 15 and not any("@eaDir" in str(f) for f in scan.files)
    assert scan.skipped["in hidden or metadata folders"] == 30
    splits, log = _load(src, cache_dir=str(tmp_path / "c"))
    assert sum(splits.sizes.values()) == 15
    assert "15 images in 3 classes" in log and "skipped 30: 30 in hidden or metadata folders" in log


def test_scanning_policy_on_other_clutter_links_and_nesting(tmp_path):
    root, rng = tmp_path / "data", np.random.default_rng(0)
    for c in ("ADI", "TUM"):
        for i in range(4):
            write_image(root / c / f"{c}-{i}.png", rng, 16)
    write_image(root / "ADI" / "batch2" / "ADI-9.PNG", rng, 16)  # nested, upper-case extension: counted
    write_image(root / "TUM" / "TUM-w.webp", rng, 16, fmt="WEBP")  # any format Pillow reads
    write_image(root / "__MACOSX" / "ADI" / "._ADI-0.png", rng, 16)  # macOS zip metadata, as a "class"
    write_image(root / "ADI" / "._ADI-1.png", rng, 16)  # AppleDouble
    write_image(root / "TUM" / "@Recycle" / "old.png", rng, 16)  # QNAP recycle bin
    write_image(root / "TUM" / ".ipynb_checkpoints" / "x.png", rng, 16)
    (root / "TUM" / "notes.txt").write_text("x")
    (root / "README.md").write_text("x")
    os.symlink(root / "ADI" / "ADI-0.png", root / "ADI" / "again.png")  # same file twice: once
    os.symlink(root / "ADI", root / "ADI" / "loop")  # a cycle: walked once
    os.symlink(tmp_path / "missing.png", root / "TUM" / "gone.png")
    extra = tmp_path / "elsewhere"
    write_image(extra / "TUM-x.png", rng, 16)
    os.symlink(extra, root / "TUM" / "linked")  # a linked folder: followed
    scan = scan_class_folder(root)
    assert scan.classes == ["ADI", "TUM"]
    names = sorted(f.name for f in scan.files)
    assert names == sorted(["ADI-0.png", "ADI-1.png", "ADI-2.png", "ADI-3.png", "ADI-9.PNG", "TUM-0.png",
                            "TUM-1.png", "TUM-2.png", "TUM-3.png", "TUM-w.webp", "TUM-x.png"])
    assert scan.nested == 2
    s = scan.skipped
    assert s["in hidden or metadata folders"] == 3 and s["hidden"] == 1 and s["not an image"] == 1
    assert s["repeated links to one file"] == 1 and s["links to a folder already walked"] == 1
    assert s["broken links"] == 1 and s["not in a class folder"] == 1
    line = scan.summary()
    assert "11 images in 2 classes (2 from nested folders)" in line and "broken links" in line
    os.symlink(root / "ADI" / "ADI-2.png", root / "TUM" / "stolen.png")
    with pytest.raises(DataError, match="same file in two classes"):
        scan_class_folder(root)


# ------------------------------------------------------------------ 4. classes missing from a split

def test_tiny_class_case_names_the_class_and_scores_macro_over_present_classes(tmp_path):
    splits, log = _load(case("tiny-class"), cache_dir=str(tmp_path / "c"))
    assert splits.missing == {"val": ["BACK"], "test": ["BACK"]}
    assert "class BACK has no val or test samples" in log
    y = np.asarray(splits.val.labels)
    perfect = classification_metrics(y, y, 9)
    assert perfect["recall_macro"] == 1.0 and perfect["f1_macro"] == 1.0 and perfect["precision_macro"] == 1.0
    assert perfect["classes_scored"] == 8 and perfect["classes_absent"] == [splits.classes.index("BACK")]
    first = classification_metrics(y, np.full_like(y, y[0]), 9)
    assert first["recall_macro"] == pytest.approx(1 / 8)  # not 1/9: BACK has no support here


def test_a_class_left_out_of_train_by_a_split_index_is_named(tmp_path, class_folder):
    import json

    idx = {"train_idx": list(range(0, 12)), "val_idx": [12, 13, 14], "test_idx": [15, 16, 17]}
    (tmp_path / "idx.json").write_text(json.dumps(idx))
    splits, log = _load(class_folder, split_index=str(tmp_path / "idx.json"), cache_dir=str(tmp_path / "c"))
    assert splits.missing["train"] == ["TUM"] and "class TUM has no train samples" in log
    assert "classes ADI, LYM have no val or test samples" in log


def test_cli_prints_that_macro_scores_skip_an_absent_class(tmp_path):
    r = run_cli("train", "--config", "hovit_s", "--img-size", "32", "--data", str(case("tiny-class")), "--epochs",
                "1", "--max-steps", "1", "--out", str(tmp_path / "run"),
                env={"HOVIT_NAS_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(macro over 8 of 9 classes; no samples of BACK)" in r.stdout
    assert "warning: class BACK has no val or test samples" in r.stderr


# ----------------------------------------------------------------------------- 5. study identity

@pytest.mark.parametrize("command", [["pareto"], ["pin"], ["confirm", "--seeds", "2"]])
def test_foreign_study_case_is_refused_by_every_command(tmp_path, command):
    db = tmp_path / "study.db"
    shutil.copy(case("foreign-study") / "study.db", db)
    r = run_cli(*command, "--storage", f"sqlite:///{db}", "--study", "crc-search", cwd=tmp_path)
    one_line_exit_2(r, "'crc-search'", "is not a hovit-nas study", "1 objective(s) (minimize)")


def test_another_foreign_study_two_objectives_but_not_ours(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    s = optuna.create_study(study_name="theirs", storage=url, directions=["maximize", "minimize"])
    s.add_trial(optuna.trial.create_trial(values=[0.9, 3.0], params={}, distributions={}))
    for cmd in (["pareto"], ["pin"], ["search", "--trials", "1"]):
        r = run_cli(*cmd, "--storage", url, "--study", "theirs", cwd=tmp_path)
        one_line_exit_2(r, "'theirs'", "records no search space")


@pytest.mark.parametrize("name", ["../../escaped", "a/b", ".hidden", ".."])
def test_a_study_name_that_would_leave_studies_is_refused(tmp_path, name):
    work = tmp_path / "x" / "y"
    work.mkdir(parents=True)
    for cmd in (["search", "--trials", "1"], ["pareto"]):
        r = run_cli(*cmd, "--study", name, cwd=work)
        one_line_exit_2(r, repr(name), "not a single folder name")
    assert not any(p.name == "study.db" for p in tmp_path.rglob("*"))


def test_a_linked_confirmation_belongs_to_its_parent_by_identity(tmp_path, caplog):
    from hovit_nas.confirm import confirmed

    url = f"sqlite:///{tmp_path / 'study.db'}"
    parent, _ = st.create_or_load("s", url, optuna.samplers.RandomSampler(), {"space": "x"}, [])
    runs, _ = st.create_or_load("s-confirm", url, optuna.samplers.RandomSampler(),
                                {"space": "x-confirm", "confirms_study": "s",
                                 st.CONFIRMS_UID_ATTR: st.identity(parent)}, [])
    for seed in (1, 2):
        runs.add_trial(optuna.trial.create_trial(values=[0.8, 2.0], user_attrs={st.CONFIRMS_ATTR: 0, "seed": seed}))
    assert set(confirmed(parent)) == {0}
    old_uid = st.identity(parent)
    optuna.delete_study(study_name="s", storage=url)  # a new study under the old name
    parent2, _ = st.create_or_load("s", url, optuna.samplers.RandomSampler(), {"space": "x"}, [])
    assert st.identity(parent2) != old_uid
    assert confirmed(parent2) == {}
    assert "confirms another study once named 's'" in caplog.text
    with pytest.raises(HovitError, match="confirms another study"):
        st.check_compatible(runs, {st.CONFIRMS_UID_ATTR: st.identity(parent2)})


# ------------------------------------------------------------------- 7. one spelling, unique rows

def test_bench_takes_runtime_and_names_config_rows_by_study_and_trial(tmp_path):
    from hovit_nas.bench import row_labels

    base = yaml.safe_load((ROOT / "studies" / "hovit_s.yaml").read_text())
    paths = []
    for study, trial in (("pcam-a", 3), ("pcam-b", 7)):
        p = tmp_path / study / "best.yaml"
        p.parent.mkdir()
        p.write_text(yaml.safe_dump({"study": study, "trial": trial, "config": base}))
        paths.append(str(p))
    assert row_labels(paths + ["hovit_b"]) == {paths[0]: "pcam-a#3", paths[1]: "pcam-b#7", "hovit_b": "hovit_b"}
    twin = tmp_path / "copy.yaml"
    shutil.copy(paths[0], twin)
    labels = row_labels([paths[0], str(twin)])
    assert len(set(labels.values())) == 2 and all(v.startswith("pcam-a#3 (") for v in labels.values())
    r = run_cli("bench", "--runtime", "torch", "--models", ",".join(paths), "--img-size", "32", "--runs", "2",
                "--rounds", "1", "--warmup", "1", "--min-time", "0.25", "--no-anchor", "--out", str(tmp_path / "bench"),
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pcam-a#3" in r.stdout and "pcam-b#7" in r.stdout


# ----------------------------------------------------------------------------- 8. storage faults

@pytest.fixture
def small_disk(tmp_path):
    """A real, small filesystem (tmpfs) to fill up; skipped where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave_bytes: int) -> Path:
    filler = mnt / "filler"
    free = shutil.disk_usage(mnt).free
    with open(filler, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * 2**20
        left = max(0, free - leave_bytes)
        while left > 0:
            n = f.write(chunk[:min(len(chunk), left)])
            left -= n
    return filler


def test_full_disk_is_one_line_before_training_and_the_resume_completes(tmp_path, small_disk):
    space = tiny_space(tmp_path, trials=1)
    url = f"sqlite:///{small_disk / 'study.db'}"
    args = ["search", "--space", str(space), "--storage", url, "--study", "tiny"]
    assert run_cli(*args, "--trials", "1", cwd=tmp_path).returncode == 0
    filler = _fill(small_disk, 2 * 2**20)
    r = run_cli(*args, "--trials", "2", cwd=tmp_path)
    one_line_exit_2(r, f"storage {url}", "disk full", "MiB free", "re-run the same command")
    assert "dense epoch" not in r.stderr  # no training was spent on a result that could not be saved
    filler.unlink()
    r = run_cli(*args, "--trials", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    s = optuna.load_study(study_name="tiny", storage=url)
    states = [t.state for t in s.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2 and optuna.trial.TrialState.RUNNING not in states


def test_a_write_that_hits_a_full_disk_names_the_storage_and_the_cause(small_disk):
    url = f"sqlite:///{small_disk / 'study.db'}"
    study, _ = st.create_or_load("s", url, optuna.samplers.RandomSampler(), {"space": "x"}, [])
    _fill(small_disk, 0)
    with pytest.raises(StorageError) as e:
        with st.storage_errors(url):
            for i in range(200):
                study.set_user_attr(f"k{i}", "x" * 200_000)
    msg = str(e.value)
    assert msg.startswith(f"storage {url}: disk full (") and "free space on its disk" in msg
    assert "invalid data" not in msg


def test_a_read_only_storage_is_named_before_training(tmp_path, small_disk):
    space = tiny_space(tmp_path, trials=1)
    url = f"sqlite:///{small_disk / 'study.db'}"
    args = ["search", "--space", str(space), "--storage", url, "--study", "tiny"]
    assert run_cli(*args, "--trials", "1", cwd=tmp_path).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    r = run_cli(*args, "--trials", "2", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"storage {url}: read-only" in r.stderr.strip().splitlines()[-1]


def test_a_hint_with_a_password_pastes_without_printing_it(monkeypatch):
    url = "postgresql://user:s3cret@db.example/hovit"
    monkeypatch.delenv(st.STORAGE_ENV, raising=False)
    hint = st.command("hovit-nas", "pareto", "--study", "my study", storage=url)
    assert "s3cret" not in hint and "***" not in hint.split("(first")[0]
    assert hint.startswith("hovit-nas pareto --study 'my study' --storage \"$HOVIT_NAS_STORAGE\"")
    assert "export HOVIT_NAS_STORAGE='postgresql://user:PASSWORD@db.example/hovit'" in hint
    monkeypatch.setenv(st.STORAGE_ENV, url)
    assert st.command("hovit-nas", "pin", storage=url) == 'hovit-nas pin --storage "$HOVIT_NAS_STORAGE"'
    assert st.command("hovit-nas", "pin", storage="sqlite:///a b.db") == "hovit-nas pin --storage 'sqlite:///a b.db'"


@pytest.mark.slow
def test_the_printed_hint_works_when_pasted_against_postgresql(tmp_path):
    pg = os.environ.get("HOVIT_NAS_TEST_POSTGRES")
    if not pg:
        pytest.skip("no PostgreSQL server (HOVIT_NAS_TEST_POSTGRES)")
    from sqlalchemy.engine import make_url

    url = make_url(pg).set(password="s3cret").render_as_string(hide_password=False)  # trust auth ignores it
    name = f"hint-{os.getpid()}"
    r = run_cli("search", "--space", str(tiny_space(tmp_path, trials=1)), "--storage", url, "--study", name,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "s3cret" not in r.stderr + r.stdout
    hint = r.stderr.split("see `", 1)[1].split("`", 1)[0]
    assert '--storage "$HOVIT_NAS_STORAGE"' in hint
    pasted = subprocess.run(["bash", "-c", hint.split("   (first")[0].replace("hovit-nas", f"{sys.executable} -m hovit_nas", 1)],
                            cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, HOVIT_NAS_STORAGE=url),
                            timeout=300)
    assert pasted.returncode == 0, pasted.stderr[-2000:]
    assert "Pareto front" in pasted.stdout
