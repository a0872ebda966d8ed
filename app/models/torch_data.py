"""Batches for the torch training loop: sample sources (tabular rows, time-series windows) and the per-epoch
batch plan, served on the CPU by plain slicing and on CUDA by a DataLoader (workers, pinned memory).

Plans: :class:`BatchPlan` (qtrain's own: each epoch's shuffle seeded from ``(seed, epoch)``) and the three
that replay Qlib's random streams from the same seed (``batching: qlib``): :class:`NumpyShufflePlan`
(``pytorch_gru.py``), :class:`TorchLoaderPlan` (``pytorch_gru_ts.py``'s DataLoader) and
:class:`NumpyDrawPlan` (``pytorch_nn.py``'s random steps).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import pandas as pd
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
    """Time-series windows ``[n, step_len, features]`` of a :class:`TSSampler`, with its first label.

    Samples are numbered as the sampler orders them, ``(datetime, instrument)``; with ``qlib_order`` as Qlib's
    ``TSDataSampler`` does, ``(instrument, datetime)``, so that a shuffle of sample numbers (and the short last
    batch that is dropped) picks the same windows as Qlib's.
    """

    def __init__(self, sampler: TSSampler, *, qlib_order: bool = False) -> None:
        self.sampler = sampler
        self.order: np.ndarray | None = None
        if qlib_order:
            codes = pd.factorize(sampler.index.get_level_values("instrument"), sort=True)[0]
            self.order = np.argsort(codes, kind="stable")  # within an instrument the dates stay ascending

    def __len__(self) -> int:
        return len(self.sampler)

    def take(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows and labels of samples ``ids``."""
        batch = self.sampler.take(ids if self.order is None else self.order[ids])
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

    def state(self) -> dict[str, Any] | None:
        """What a checkpoint must keep to replay the next epochs (nothing: each epoch is seeded on its own)."""
        return None

    def restore(self, state: dict[str, Any] | None, epochs_done: int) -> None:
        """Continue after ``epochs_done`` epochs from :meth:`state`'s record."""


class _StreamPlan:
    """A plan whose epochs are consecutive draws of one random stream (Qlib's); epoch ``e`` must follow
    ``e - 1``. Iterating an epoch again gives the same batches."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.n, self.batch_size, self.epoch = n, batch_size, 0
        self._drawn = 0  # epochs drawn so far
        self._last: list[np.ndarray] = []

    def _draw(self) -> list[np.ndarray]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._count()

    def _count(self) -> int:
        return self.n // self.batch_size if self.n >= self.batch_size else int(self.n > 0)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.epoch == self._drawn:
            self._last, self._drawn = self._draw(), self._drawn + 1
        elif self.epoch != self._drawn - 1:
            raise RuntimeError(f"{type(self).__name__}: epoch {self.epoch} requested after {self._drawn} drawn")
        yield from self._last

    def _batches(self, order: np.ndarray) -> list[np.ndarray]:
        # Qlib drops the last short batch; with fewer samples than one batch it would train on nothing, here on
        # all of them as one batch (as BatchPlan does).
        stop = self.n - self.n % self.batch_size if self.n >= self.batch_size else self.n
        return [order[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def state(self) -> dict[str, Any] | None:
        """The stream's state after the epochs drawn (JSON)."""
        return {"drawn": self._drawn}

    def restore(self, state: dict[str, Any] | None, epochs_done: int) -> None:
        """Continue after ``epochs_done`` epochs from :meth:`state`'s record."""
        self._drawn, self._last = epochs_done, []


class _NumpyStreamPlan(_StreamPlan):
    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        super().__init__(n, batch_size)
        # np.random.seed(seed) + the np.random functions are this legacy generator's stream
        self.rng = np.random.RandomState(seed)

    def state(self) -> dict[str, Any] | None:
        """The generator's state after the epochs drawn (JSON)."""
        rng = self.rng.get_state(legacy=False)
        rng["state"] = {"key": rng["state"]["key"].tolist(), "pos": int(rng["state"]["pos"])}
        return {"drawn": self._drawn, "rng": rng}

    def restore(self, state: dict[str, Any] | None, epochs_done: int) -> None:
        """Continue after ``epochs_done`` epochs from :meth:`state`'s record."""
        if state is None or int(state["drawn"]) != epochs_done:
            raise ValueError(f"the checkpoint holds no {type(self).__name__} state after epoch {epochs_done}")
        rng = dict(state["rng"])
        rng["state"] = {"key": np.asarray(rng["state"]["key"], dtype=np.uint32), "pos": int(rng["state"]["pos"])}
        self.rng.set_state(rng)
        super().restore(state, epochs_done)


class NumpyShufflePlan(_NumpyStreamPlan):
    """Qlib's ``pytorch_gru.py``: ``np.random.seed(seed)``, then every epoch ``np.random.shuffle`` of all
    sample numbers, cut into batches without the last short one."""

    def _draw(self) -> list[np.ndarray]:
        order = np.arange(self.n)
        self.rng.shuffle(order)
        return self._batches(order)


class NumpyDrawPlan(_NumpyStreamPlan):
    """Qlib's ``pytorch_nn.py``: ``np.random.seed(seed)``, then every training step a batch of
    ``np.random.choice(n, batch_size)`` (with replacement); an epoch is ``steps`` such batches."""

    def __init__(self, n: int, batch_size: int, seed: int, steps: int) -> None:
        super().__init__(n, batch_size, seed)
        self.steps = steps

    def _draw(self) -> list[np.ndarray]:
        return [self.rng.choice(self.n, self.batch_size) for _ in range(self.steps)]

    def _count(self) -> int:
        return self.steps


def _torch_draw() -> int:
    return int(torch.empty((), dtype=torch.int64).random_().item())


class TorchLoaderPlan(_StreamPlan):
    """Qlib's ``pytorch_gru_ts.py``: ``DataLoader(shuffle=True, drop_last=True)`` on torch's global RNG.

    Each epoch Qlib iterates the training loader twice (training, then re-scoring the training data) and the
    validation loader once. Every loader iteration draws one int64 from the global RNG (the iterator's base
    seed), and a shuffling one a second (the ``RandomSampler``'s seed, which seeds a private generator for the
    ``randperm``). This plan makes the same draws in the same order: before epoch ``e > 0`` the ``burn`` draws of
    epoch ``e - 1``'s re-scoring and validation (3 with a validation segment, else 2), then the two of the
    epoch's training iteration. Between them the network's dropout draws from the same RNG, as in Qlib.
    """

    def __init__(self, n: int, batch_size: int, burn: int) -> None:
        super().__init__(n, batch_size)
        self.burn = burn

    def _draw(self) -> list[np.ndarray]:
        for _ in range(self.burn if self.epoch > 0 else 0):
            _torch_draw()
        _torch_draw()  # the iterator's base seed
        gen = torch.Generator().manual_seed(_torch_draw())
        return self._batches(torch.randperm(self.n, generator=gen).numpy())


Plan = BatchPlan | NumpyShufflePlan | NumpyDrawPlan | TorchLoaderPlan


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

    def __init__(self, source: BatchSource, plan: Plan, device: torch.device, num_workers: int, seed: int) -> None:
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
