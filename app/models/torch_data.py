"""Batches for the torch training loop: sample sources (tabular rows, time-series windows) and the per-epoch
batch plan, served on the CPU by plain slicing and on CUDA by a DataLoader (workers, pinned memory)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from app.dataset.timeseries import TSSampler

SHUFFLE_STREAM, DROPOUT_STREAM = 1, 2  # independent seed streams per epoch


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A seed for ``stream`` of ``epoch``, independent of the other epochs and streams."""
    return int(np.random.SeedSequence([seed % 2**63, epoch, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


class BatchSource(Protocol):
    """Samples by number: ``take(ids)`` gives float32 ``x`` ``[n, ...]`` and ``y`` ``[n]`` (NaN: no label)."""

    def __len__(self) -> int: ...

    def take(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ArraySource:
    """Rows of a feature matrix (tabular models); ``y`` None for prediction."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None) -> None:
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.y = None if y is None else np.ascontiguousarray(y, dtype=np.float32).reshape(-1)

    def __len__(self) -> int:
        return len(self.x)

    def take(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``ids``."""
        y = self.y[ids] if self.y is not None else np.full(len(ids), np.nan, dtype=np.float32)
        return self.x[ids], y


class WindowSource:
    """Time-series windows ``[n, step_len, features]`` of a :class:`TSSampler`, with its first label."""

    def __init__(self, sampler: TSSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def take(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows and labels of samples ``ids``."""
        batch = self.sampler.take(ids)
        y = batch.y[:, 0] if batch.y.shape[1] else np.full(len(ids), np.nan, dtype=np.float32)
        return batch.x, np.ascontiguousarray(y)


class BatchPlan:
    """The batches (arrays of sample numbers) of one epoch; ``epoch`` picks the shuffle."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int) -> None:
        self.n, self.batch_size, self.shuffle, self.seed, self.epoch = n, batch_size, shuffle, seed, 0
        # Qlib drops the last short batch; with fewer samples than one batch, keep them all as one batch.
        self.stop = n - n % batch_size if drop_last and n >= batch_size else n

    def __len__(self) -> int:
        return -(-self.stop // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, SHUFFLE_STREAM))
            order = torch.randperm(self.n, generator=gen).numpy()
        else:
            order = np.arange(self.n)
        for i in range(0, self.stop, self.batch_size):
            yield order[i : i + self.batch_size]


class _SourceDataset(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """A map-style dataset whose keys are whole batches, so DataLoader workers gather batches in parallel."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source

    def __getitem__(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.source.take(ids)
        return torch.from_numpy(x), torch.from_numpy(y)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker's torch RNG from the loader's generator; numpy's follows it (torch's recipe).
    np.random.seed(torch.initial_seed() % 2**32)


class Batches:
    """Tensors of a source, batch by batch: plain slicing on the CPU; on CUDA a DataLoader with
    ``num_workers`` workers and pinned memory, transferred without blocking."""

    def __init__(self, source: BatchSource, plan: BatchPlan, device: torch.device, num_workers: int, seed: int) -> None:
        self.source, self.plan, self.device = source, plan, device
        self.loader: DataLoader[tuple[torch.Tensor, torch.Tensor]] | None = None
        if device.type == "cuda":
            self.loader = DataLoader(
                _SourceDataset(source),
                sampler=plan,  # any iterable of keys works with batch_size=None
                batch_size=None,
                num_workers=num_workers,
                pin_memory=True,
                worker_init_fn=_seed_worker,
                persistent_workers=num_workers > 0,
                generator=torch.Generator().manual_seed(seed),
            )

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` on the device."""
        self.plan.epoch = epoch
        if self.loader is None:
            for ids in self.plan:
                x, y = self.source.take(ids)
                yield torch.from_numpy(x), torch.from_numpy(y)
            return
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
