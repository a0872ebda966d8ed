"""Fixtures of the distributed tests: a small market and clusters of real Celery workers on real Redis DBs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.data.synth import SynthSpec, write_synth_market
from tests.integration.celery_harness import Cluster, RedisServer, make_cluster


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("market")
    write_synth_market(root, SynthSpec(instruments=25, days=360, seed=8))
    return root


@pytest.fixture
def cluster_factory(market: Path, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Clusters on a redis-server of the test's own (free port, no persistence): tests that run at the same time
    on pytest-xdist's processes never share a broker, a result backend or a queue."""
    made: list[Cluster] = []
    servers: list[RedisServer] = []

    def make(broker_db: int, *, lease_s: float = 6.0) -> Cluster:
        server = RedisServer(tmp_path / f"redis{broker_db}")
        server.start()
        servers.append(server)
        cluster = make_cluster(tmp_path / f"c{broker_db}", market, broker_db, lease_s=lease_s, redis_url=server.url)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop_all()
    for server in servers:
        server.kill()
