"""Recorder.batched: what a block logs reaches MLflow in as few log_batch calls as the limits allow, as it ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from app.core.errors import TrackingError
from app.tracking import ExpManager


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int, int]]]:
    """Every ``MlflowClient.log_batch`` call as (metrics, params, tags) counts; the calls still go through."""
    calls: list[tuple[int, int, int]] = []
    real = MlflowClient.log_batch

    def counting(self: MlflowClient, run_id: str, metrics=(), params=(), tags=(), **kwargs):  # type: ignore[no-untyped-def]
        calls.append((len(metrics), len(params), len(tags)))
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counting)
    yield calls


def test_a_block_logs_in_one_call_at_its_end(manager: ExpManager, batches: list[tuple[int, int, int]]) -> None:
    with manager.start(experiment_name="e") as rec:
        before = len(batches)
        with rec.batched():
            rec.log_params(lr=0.1, depth=3)
            rec.log_metrics(IC=0.05)
            rec.log_series({"train.l2": [3.0, 2.0, 1.0]})
            rec.set_tags(stage="data")
            with rec.batched():  # nested: joins the outer block
                rec.set_tags(stage="done", cache="hit")
            assert len(batches) == before and "IC" not in rec.list_metrics()
        assert batches[before:] == [(4, 2, 2)]
        assert rec.list_metrics()["IC"] == 0.05 and rec.list_params() == {"lr": "0.1", "depth": "3"}
        assert rec.list_tags()["stage"] == "done"  # the later value wins
        assert [p.value for p in rec.get_metric_history("train.l2")] == [3.0, 2.0, 1.0]


def test_large_blocks_are_split_at_mlflows_limits(manager: ExpManager, batches: list[tuple[int, int, int]]) -> None:
    with manager.start(experiment_name="e") as rec:
        before = len(batches)
        with rec.batched():
            rec.log_params({f"p{i}": i for i in range(150)})
            rec.set_tags(**{f"t{i}": i for i in range(120)})
            rec.log_series({"curve": [float(i) for i in range(1500)]})
        sent = batches[before:]
        assert sent == [(800, 100, 100), (700, 50, 20)]
        assert all(sum(call) <= 1000 for call in sent)
        assert len(rec.get_metric_history("curve")) == 1500 and len(rec.list_params()) == 150


def test_a_failing_block_still_logs_and_raises_its_own_error(manager: ExpManager) -> None:
    with manager.start(experiment_name="e") as rec, pytest.raises(ZeroDivisionError), rec.batched():
        rec.log_metrics(time_data_s=1.5)
        _ = 1 / 0
    assert manager.get_recorder(rec.id).list_metrics()["time_data_s"] == 1.5


def test_a_refused_batch_raises_tracking_error_as_the_block_ends(manager: ExpManager) -> None:
    with manager.start(experiment_name="e") as rec:
        rec.log_params(lr=0.1)
        with pytest.raises(TrackingError, match=r"write-once"), rec.batched():
            rec.log_params(lr=0.2)  # MLflow refuses a changed param, at the end of the block
