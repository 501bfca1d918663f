"""Batches as uint8, augmented and normalised on the model's device.

A training batch is gathered from the cache's uint8 array with one ``np.take`` (into pinned
memory on CUDA) by a background thread, copied ``non_blocking`` to the device, and only there
turned into floats, flipped/rotated per sample and normalised. The host never touches a float
image: at 224 px that float work is what held a CPU loader near a thousand images per second.

Augmentation is the dihedral group of the square (histology tiles have no orientation): each
sample independently gets a random transpose, horizontal flip and vertical flip, which is the
same uniform distribution over the 8 flips/rotations as a random flip pair plus a random
90-degree rotation, without data-dependent indexing (so no host synchronisation on CUDA). The
random draws come from the loader's CPU generator, so a run is reproducible on any device and
a resumed run continues the same sequence.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class Augment:
    """Per-sample draws for one batch: (B,) bools each."""

    transpose: torch.Tensor
    hflip: torch.Tensor
    vflip: torch.Tensor

    @classmethod
    def draw(cls, n: int, generator: Optional[torch.Generator]) -> "Augment":
        r = torch.rand(3, n, generator=generator) < 0.5
        return cls(r[0], r[1], r[2])

    def to(self, device: torch.device) -> "Augment":
        nb = device.type == "cuda"
        return Augment(*(t.to(device, non_blocking=nb) for t in (self.transpose, self.hflip, self.vflip)))


def to_model_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   augment: Optional[Augment] = None) -> torch.Tensor:
    """uint8 (B, C, H, W) on the device -> normalised float32, oriented per sample. Orienting
    happens on the uint8 tensor (a quarter of the bytes) and the float work is one fused pass."""
    if augment is not None:
        x = _orient(x, augment)
    return torch.addcmul(-(mean / std), x.float(), 1.0 / (255.0 * std))


def _orient(x: torch.Tensor, a: Augment) -> torch.Tensor:
    """Transpose / flip each sample as drawn: batched on an accelerator, per sample on the CPU."""
    return _orient_per_sample(x, a) if x.device.type == "cpu" else _orient_batched(x, a)


def _orient_batched(x: torch.Tensor, a: Augment) -> torch.Tensor:
    """Three batched selects: no data-dependent shapes, so no host synchronisation."""
    def pick(mask: torch.Tensor, y: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(-1, 1, 1, 1), y, base)

    x = pick(a.transpose, x.transpose(-1, -2), x)
    x = pick(a.hflip, x.flip(-1), x)
    return pick(a.vflip, x.flip(-2), x).contiguous()  # a transposed layout makes convolutions slow


def _orient_per_sample(x: torch.Tensor, a: Augment) -> torch.Tensor:
    """On the CPU the device *is* the host: copying only each sample's chosen view is several
    times cheaper than computing every view of the batch."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for i, (t, h, v) in enumerate(zip(a.transpose.tolist(), a.hflip.tolist(), a.vflip.tolist())):
        y = x[i].transpose(-1, -2) if t else x[i]
        y = y.flip(-1) if h else y
        out[i].copy_(y.flip(-2) if v else y)
    return out


class Images(Dataset):
    """One split: uint8 images (N, 3, S, S) (the cache's read-only memmap) and int64 labels.
    ``ds[i]`` gives one normalised, un-augmented image for inspection; training and evaluation
    read whole batches through ``Batches``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 augment: bool, cache: Optional[Path] = None, file: Optional[Path] = None):
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.file = file  # the raw uint8 array file behind ``images``: batches read it with pread
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment, self.cache = augment, cache

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Sequence[int] | np.ndarray | slice, augment: bool = False) -> "Images":
        """The images at ``idx`` (indices or a slice), copied into memory: (n, 3, S, S) uint8 with
        their labels and this split's normalisation; ``augment`` as for a new split (default off,
        as for scoring)."""
        idx = idx if isinstance(idx, slice) else np.asarray(idx)
        return Images(np.asarray(self.images[idx]), self.labels[idx], self.mean.flatten().tolist(),
                      self.std.flatten().tolist(), augment=augment)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.images[i]))[None]
        return to_model_input(x, self.mean, self.std)[0], int(self.labels[i])


class Batches:
    """An epoch's batches on ``device``: shuffled (from ``generator``) and augmented for
    training, in order for evaluation. ``len()`` is the number of batches."""

    def __init__(self, data: Images, batch_size: int, device: torch.device, *, shuffle: bool,
                 generator: Optional[torch.Generator] = None, drop_last: bool = False,
                 augment: Optional[bool] = None, channels_last: bool = False, prefetch: int = 2):
        self.data, self.batch_size, self.device = data, batch_size, torch.device(device)
        self.shuffle, self.generator, self.drop_last = shuffle, generator, drop_last
        self.augment = data.augment if augment is None else augment
        self.channels_last, self.prefetch = channels_last, prefetch
        self.mean, self.std = data.mean.to(self.device), data.std.to(self.device)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def plan(self) -> list[tuple[np.ndarray, Optional[Augment]]]:
        """The epoch's index batches and augmentation draws, all drawn up front: the generator's
        state after an epoch does not depend on how far the prefetch thread ran."""
        n = len(self.data)
        order = (torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)).numpy()
        aug = Augment.draw(n, self.generator) if self.augment else None
        out = []
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order[sl]
            a = None if aug is None else Augment(aug.transpose[sl], aug.hflip[sl], aug.vflip[sl])
            out.append((idx, a))
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self.plan()
        pin = self.device.type == "cuda"
        gather = _Reader(self.data)
        q: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()

        def produce() -> None:
            try:
                for idx, a in plan:
                    if stop.is_set():
                        return
                    # sorted indices read the cache file front to back; order within a batch is irrelevant
                    order = np.argsort(idx, kind="stable")
                    idx = idx[order]
                    if a is not None:
                        o = torch.from_numpy(order)
                        a = Augment(a.transpose[o], a.hflip[o], a.vflip[o])
                    x = torch.empty((len(idx), *self.data.images.shape[1:]), dtype=torch.uint8, pin_memory=pin)
                    gather(idx, x.numpy())
                    y = torch.from_numpy(self.data.labels[idx])
                    q.put((x, y.pin_memory() if pin else y, a))
                q.put(None)
            except BaseException as exc:  # re-raised in the consumer
                q.put(exc)

        worker = threading.Thread(target=produce, daemon=True, name="hovit-nas-batches")
        worker.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                x, y, a = item
                x = to_model_input(x.to(self.device, non_blocking=pin), self.mean, self.std,
                                   None if a is None else a.to(self.device))
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, y.to(self.device, non_blocking=pin)
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(0.01)
            gather.close()  # only once the producer is gone: it may be mid-read


class _Reader:
    """Gathers samples into a buffer: ``pread`` from the cache file when there is one (the
    page cache serves it; nothing is mapped, so the process's RSS does not grow with the
    dataset), else a numpy gather from memory. Both release the GIL while copying."""

    def __init__(self, data: Images):
        self.data = data
        self.fd = os.open(data.file, os.O_RDONLY) if data.file is not None else None
        self.item = int(np.prod(data.images.shape[1:]))

    def __call__(self, idx: np.ndarray, out: np.ndarray) -> None:
        if self.fd is None:
            np.take(self.data.images, idx, axis=0, out=out)
            return
        flat = out.reshape(len(idx), -1)
        for j, i in enumerate(idx.tolist()):
            if os.preadv(self.fd, [flat[j]], i * self.item) != self.item:
                raise OSError(f"{self.data.file}: short read at sample {i} (the cache file was truncated)")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
