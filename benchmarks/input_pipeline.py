"""Does the input pipeline keep the model fed at NCT-CRC-HE-100K shape (224 px TIFF tiles)?

    python benchmarks/input_pipeline.py --tiles 20000 --out results/input-pipeline
    python benchmarks/input_pipeline.py --device cuda --out results/gpu-check/input-pipeline

Makes (or takes, ``--folder``) an NCT-shaped class folder: 9 classes of 224 px TIFF tiles cut
from the real crc-tiles by crops, flips and 90-degree turns. Then, in one run:

1. cache build rate: a fresh process runs ``load_data`` on an empty cache (all cores decode);
2. open time: a second fresh process opens the finished cache (timed inside, after imports);
3. delivery: img/s the loader hands to the device per core (torch at 1 thread): the host side
   alone (uint8 batches gathered from the cache) and with flips/turns/normalise on the device;
4. the model's own train-step img/s on synthetic on-device input (the limit) against the same
   loop (``train.fit_epochs``) fed from the cache, alternated ABAB, and their ratio;
5. the memory of 2 concurrent trials reading the whole train split: RSS, PSS and private
   (anonymous) memory, against the cache's size.

Targets (issue 12), 2-core CPU: >= 20,000 img/s delivered as uint8; trial steps within 5 % of
the synthetic rate; a second process opens a 20k-tile cache in <= 1 s; 2 concurrent trials do
not hold two copies. On a GPU: the loader delivers >= 1.5x the model's train-step rate, and a
trial runs within 10 % of the synthetic rate.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("HOVIT_NAS_SHARED", ROOT.parent / "shared")) / "data" / "crc-tiles"


def make_folder(folder: Path, tiles: int, seed: int = 0) -> None:
    """NCT-shaped tiles from the real ones: random crop (160-224 px) resized to 224, flip, turn."""
    from PIL import Image

    classes = sorted(d.name for d in SHARED.iterdir() if d.is_dir())
    rng = np.random.default_rng(seed)
    t0 = time.time()
    for c, name in enumerate(classes):
        sources = sorted(p for p in (SHARED / name).iterdir() if p.suffix.lower() in (".tif", ".tiff", ".png"))
        imgs = [np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in sources]
        (folder / name).mkdir(parents=True, exist_ok=True)
        n = tiles // len(classes) + (c < tiles % len(classes))
        for i in range(n):
            a = imgs[rng.integers(len(imgs))]
            s = int(rng.integers(160, 225))
            y, x = rng.integers(0, 225 - s, 2)
            tile = np.rot90(a[y:y + s, x:x + s], int(rng.integers(4)))
            if rng.random() < 0.5:
                tile = tile[:, ::-1]
            Image.fromarray(np.ascontiguousarray(tile)).resize((224, 224), Image.BILINEAR).save(
                folder / name / f"{name}-{i:06d}.tif")
    print(f"made {tiles} tiles in {folder} ({time.time() - t0:.0f} s)", flush=True)


def _child(code: str, *args: str, threads: int | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


LOAD = """
import json, sys, time
from hovit_nas.data import DataSpec, load_data
t0 = time.time()
s = load_data(DataSpec(path=sys.argv[1], img_size=int(sys.argv[2]), cache_dir=sys.argv[3]))
print(json.dumps({"s": time.time() - t0, "n": sum(s.sizes.values()), "sizes": s.sizes,
                  "bytes": sum(int(d.images.nbytes) for d in (s.train, s.val, s.test))}))
"""

TRIAL = """
import json, sys, time, torch
from dataclasses import replace
from pathlib import Path
from hovit_nas.config import load_run_config, with_num_classes
from hovit_nas.data import Batches, DataSpec, load_data
from hovit_nas.models import create_hovit

def mem():
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        k, v = line.split(":")
        out[k.strip()] = int(v.split()[0]) * 1024
    return {"rss": out["Rss"], "pss": out["Pss"], "anonymous": out["Anonymous"]}

torch.set_num_threads(1)
stages = {"start": mem()}
s = load_data(DataSpec(path=sys.argv[1], img_size=int(sys.argv[2]), cache_dir=sys.argv[3]))
stages["opened"] = mem()
dev = torch.device(sys.argv[4])
n = 0
for x, y in Batches(s.train, 256, dev, shuffle=True, generator=torch.Generator().manual_seed(0)):
    n += len(y)  # one pass over the whole split: every byte of the train cache is read
del x, y
stages["after_full_pass"] = mem()
cfg = with_num_classes(load_run_config(sys.argv[5]), s.num_classes)
model = create_hovit(replace(cfg, model=replace(cfg.model, img_size=int(sys.argv[2])))).to(dev)
opt = torch.optim.AdamW(model.parameters())
for i, (x, y) in enumerate(Batches(s.train, 32, dev, shuffle=True)):
    torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step(); opt.zero_grad()
    if i == 3:
        break
stages["after_train_steps"] = mem()
print(json.dumps({"seen": n, "stages": stages}))
"""


def concurrent_memory(folder: Path, size: int, cache: str, device: str, config: str) -> dict:
    """Two trial processes at once, each reading the whole train split, then a few train steps;
    each reports its own memory (RSS, PSS, anonymous) after every stage. A private copy of the
    data would show up as anonymous memory growing by the split's size after the full pass."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", TRIAL, str(folder), str(size), cache, device, config],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    out = []
    for p in procs:
        stdout, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"trial failed:\n{err[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return {"trials": out}


def delivery(ds, dev, batch: int, seconds: float = 4.0) -> dict:
    """img/s of uint8 batches gathered from the cache (the host side), and of finished batches on
    the device (gather, copy, flips/turns, normalise), at torch's current thread count."""
    import torch

    from hovit_nas.data import Batches
    from hovit_nas.data.loader import _Reader

    n, t0 = 0, time.time()
    order = np.random.default_rng(0).permutation(len(ds))
    buf = np.empty((batch, *ds.images.shape[1:]), np.uint8)
    read = _Reader(ds)  # what the loader's thread does per batch: sorted shuffled indices, pread
    while time.time() - t0 < seconds:
        for b in range(0, len(order) - batch + 1, batch):
            read(np.sort(order[b:b + batch]), buf)
            n += batch
            if time.time() - t0 >= seconds:
                break
    read.close()
    host = n / (time.time() - t0)
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        for x, y in Batches(ds, batch, dev, shuffle=True, generator=torch.Generator().manual_seed(n)):
            n += len(y)
            if time.time() - t0 >= seconds:
                break
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return {"uint8_host": host, "on_device_augmented": n / (time.time() - t0)}


def step_rates(splits, cfg, dev, steps: int, rounds: int) -> dict:
    """The same training loop fed (A) one synthetic batch already on the device, (B) the cache;
    ABAB so drift hits both. Timed between step hooks, evaluation excluded."""
    import torch

    from hovit_nas.models import create_hovit
    from hovit_nas.train import Loop, _optimizer, fit_epochs, train_loader

    t = cfg.train
    bs = t.batch_size
    tiny_val = splits.val.subset(slice(0, bs))

    class Synthetic:
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(bs, 3, cfg.model.img_size, cfg.model.img_size, generator=g).to(dev)
            self.y = torch.randint(0, cfg.model.num_classes, (bs,), generator=g).to(dev)

        def __len__(self):
            return 10 ** 6

        def __iter__(self):
            while True:
                yield self.x, self.y

    model = create_hovit(cfg).to(dev)
    model.set_dense(True)
    out = {"synthetic": [], "cache": []}
    for r in range(rounds):
        for kind in ("synthetic", "cache"):
            loader = Synthetic() if kind == "synthetic" else train_loader(splits.train, t, dev,
                                                                          torch.Generator().manual_seed(r))
            loop = Loop(model, loader, tiny_val, cfg.model.num_classes, None, None, t, dev)
            loop.opt, loop.sched = _optimizer(model, cfg, "dense", steps)
            stamps = []

            def hook(_g, _tot):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())

            fit_epochs(loop, "dense", 1, step_hook=hook)
            skip = 2  # warm-up steps
            rate = (len(stamps) - 1 - skip) * bs / (stamps[-1] - stamps[skip])
            out[kind].append(rate)
            print(f"  round {r + 1} {kind:9s} {rate:8.1f} img/s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=20000)
    ap.add_argument("--folder", type=Path, default=None, help="an NCT-shaped class folder (made if absent)")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--config", default=str(ROOT / "studies" / "hovit_b.yaml"))
    ap.add_argument("--steps", type=int, default=10, help="train steps per timed block")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--opens", type=int, default=3, help="fresh processes that open the built cache, each timed")
    ap.add_argument("--delivery-s", type=float, default=4.0, help="seconds each delivery rate is timed over")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "input-pipeline")
    a = ap.parse_args()

    import torch

    from hovit_nas.config import load_run_config, with_num_classes
    from hovit_nas.data import DataSpec, load_data

    a.out.mkdir(parents=True, exist_ok=True)
    folder = a.folder or Path(tempfile.gettempdir()) / f"nct-shaped-{a.tiles}"
    if not (folder.is_dir() and any(folder.iterdir())):
        if not SHARED.is_dir():
            raise SystemExit(f"no --folder and no shared crc tiles at {SHARED}")
        make_folder(folder, a.tiles)
    cache = tempfile.mkdtemp(prefix="hovit-nas-bench-cache-")
    cores = len(os.sched_getaffinity(0))
    report = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "folder": str(folder),
              "device": a.device, "cores": cores, "torch": torch.__version__, "img_size": a.img_size}

    print("1. cache build (fresh process, empty cache)", flush=True)
    build = _child(LOAD, str(folder), str(a.img_size), cache)
    report["build"] = {"images": build["n"], "sizes": build["sizes"], "s": build["s"],
                       "img_per_s": build["n"] / build["s"], "cache_mib": build["bytes"] / 2 ** 20}
    print(f"   {build['n']} images in {build['s']:.1f} s = {build['n'] / build['s']:,.0f} img/s "
          f"({cores} cores); cache {build['bytes'] / 2 ** 30:.2f} GiB", flush=True)

    print("2. open by a second process", flush=True)
    opens = [_child(LOAD, str(folder), str(a.img_size), cache)["s"] for _ in range(a.opens)]
    report["open_s"] = opens
    print(f"   {', '.join(f'{s:.3f}' for s in opens)} s", flush=True)

    dev = torch.device(a.device)
    splits = load_data(DataSpec(path=str(folder), img_size=a.img_size, cache_dir=cache))
    print("3. delivery per core (torch 1 thread)", flush=True)
    torch.set_num_threads(1)
    d = delivery(splits.train, dev, a.batch, a.delivery_s)
    report["delivery_1_core"] = d
    print(f"   uint8 from the cache: {d['uint8_host']:,.0f} img/s; augmented + normalised on {dev.type}: "
          f"{d['on_device_augmented']:,.0f} img/s", flush=True)
    torch.set_num_threads(cores)

    print(f"4. train steps ({Path(a.config).stem}, batch {a.batch}, {a.steps} steps x {a.rounds} rounds, "
          f"{torch.get_num_threads()} threads)", flush=True)
    from dataclasses import replace
    cfg = with_num_classes(load_run_config(a.config), splits.num_classes)
    cfg = replace(cfg, model=replace(cfg.model, img_size=a.img_size),
                  train=replace(cfg.train, batch_size=a.batch, max_steps_per_epoch=a.steps + 3))
    rates = step_rates(splits, cfg, dev, a.steps + 3, a.rounds)
    syn, real = float(np.median(rates["synthetic"])), float(np.median(rates["cache"]))
    report["train_steps"] = {**rates, "synthetic_median": syn, "cache_median": real, "ratio": real / syn}
    print(f"   synthetic {syn:.1f} img/s, from the cache {real:.1f} img/s: ratio {real / syn:.3f}", flush=True)
    report["delivery_over_train_step"] = d["on_device_augmented"] / syn

    print("5. two concurrent trials reading the whole train split", flush=True)
    mem = concurrent_memory(folder, a.img_size, cache, a.device, a.config)
    report["memory"] = {**mem, "train_cache_mib": splits.train.images.nbytes / 2 ** 20}
    mib = 2 ** 20
    for i, t in enumerate(mem["trials"]):
        st = t["stages"]
        print(f"   trial {i + 1}: " + ", ".join(
            f"{k} RSS {v['rss'] / mib:,.0f} / PSS {v['pss'] / mib:,.0f} / anonymous {v['anonymous'] / mib:,.0f} MiB"
            for k, v in st.items()), flush=True)
        grew = (st["after_full_pass"]["anonymous"] - st["opened"]["anonymous"]) / mib
        print(f"     anonymous memory grew {grew:,.0f} MiB over a full pass of the {splits.train.images.nbytes / mib:,.0f} "
              f"MiB train split", flush=True)

    (a.out / "input_pipeline.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {a.out / 'input_pipeline.json'}")
    import shutil
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
