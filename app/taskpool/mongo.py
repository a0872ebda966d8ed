"""The production task store: one MongoDB collection, shared by clients and workers on any number of hosts.

Every transition is a single-document atomic update: the claim is one ``find_one_and_update`` (sorted by
priority, then age) and every other change of a running task filters on its claim token, so a stale worker's
write matches nothing. No transactions or sessions are needed (mongomock, used by the tests, has neither).
Spec, result and history are plain BSON documents (JSON values only, never pickle); times are UTC datetimes.
Times come from this process's clock: keep the hosts' clocks in sync (NTP) or leases expire early or late.
"""

from __future__ import annotations

import builtins
import logging
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pymongo
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, DuplicateKeyError, InvalidURI, OperationFailure, PyMongoError

from app.core.credentials import has_credentials, mask_url, url_password
from app.core.errors import ConfigError, TaskNotFoundError, TaskStoreError
from app.taskpool import rules
from app.taskpool.base import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    FINAL_STATUSES,
    STATUSES,
    Stage,
    Status,
    TaskRecord,
)
from app.taskpool.urls import is_mongo_url

log = logging.getLogger(__name__)

Document = dict[str, Any]
_CLAIM_ORDER = [("priority", DESCENDING), ("seq", ASCENDING), ("_id", ASCENDING)]
_LIST_ORDER = [("seq", ASCENDING), ("_id", ASCENDING)]
_INDEXES: list[tuple[str, list[tuple[str, int]], bool]] = [
    ("pool_hash", [("pool", ASCENDING), ("hash", ASCENDING)], True),
    ("claim", [("pool", ASCENDING), ("status", ASCENDING), ("priority", DESCENDING), ("seq", ASCENDING)], False),
    ("lease", [("status", ASCENDING), ("lease_expires", ASCENDING)], False),
    ("pool_seq", [("pool", ASCENDING), ("seq", ASCENDING)], False),
]
_FIX = "set QTRAIN_TASK_STORE to a reachable server (mongodb://host:port/database) or start the server"


class MongoTaskPool:
    """The :class:`app.taskpool.base.TaskPool` in the collection ``database.collection`` of a MongoDB server.

    ``client_or_url`` is a ``mongodb://`` / ``mongodb+srv://`` URL (this pool then owns a ``tz_aware`` client that
    gives up after ``server_timeout_s`` without a server, and closes it in :meth:`close`) or a client the caller
    owns. Indexes are created on first use. ``clock`` gives seconds since the epoch.

    Raises:
        ConfigError: ``client_or_url`` is a string but not a MongoDB URL.
    """

    def __init__(
        self,
        client_or_url: pymongo.MongoClient[Document] | str,
        database: str = "qtrain",
        collection: str = "tasks",
        *,
        server_timeout_s: float = 5.0,
        clock: rules.Clock = time.time,
    ) -> None:
        self._secrets: list[str] = []
        if isinstance(client_or_url, str):
            url = client_or_url
            if not is_mongo_url(url):
                raise ConfigError(
                    f"{mask_url(url)!r} is not a MongoDB URL; write mongodb://[user:password@]host[:port][/database]"
                )
            self.where = mask_url(url) + (" (credentials masked)" if has_credentials(url) else "")
            password = url_password(url)
            if password:
                self._secrets = [password, urllib.parse.unquote(password)]
            self._client: pymongo.MongoClient[Document] = self._connect(url, server_timeout_s)
            self._owns_client = True
        else:
            self._client = client_or_url
            self._owns_client = False
            self.where = _describe(client_or_url)
        self.where += f" (database {database!r}, collection {collection!r})"
        self._coll: Collection[Document] = self._client[database][collection]
        self._clock = clock
        self._seq = rules.Sequencer(clock)
        self._indexed = False

    def __repr__(self) -> str:
        return f"MongoTaskPool({self.where})"

    def _connect(self, url: str, server_timeout_s: float) -> pymongo.MongoClient[Document]:
        timeout_ms = max(1, int(server_timeout_s * 1000))
        try:
            # timeouts as client options: given in the URI they were scaled wrongly (Celery's Mongo backend)
            return pymongo.MongoClient(
                url, tz_aware=True, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
            )
        except (InvalidURI, ValueError) as exc:  # pymongo raises ValueError for e.g. a port that is not a number
            raise ConfigError(
                f"QTRAIN_TASK_STORE={self.where.removesuffix(' (credentials masked)')!r} is not a valid MongoDB "
                f"URL: {self._scrub(exc)}; write mongodb://[user:password@]host[:port][/database], with the "
                "user and password percent-encoded"
            ) from exc
        except PyMongoError as exc:  # e.g. the DNS lookup of a mongodb+srv:// host failed
            raise TaskStoreError(f"cannot use MongoDB at {self.where}: {self._scrub(exc)}; {_FIX}") from exc

    # -- plumbing ----------------------------------------------------------------------------------------------

    @contextmanager
    def _guard(self, doing: str) -> Iterator[Collection[Document]]:
        """The collection (indexed), with pymongo's errors turned into :class:`TaskStoreError`."""
        try:
            if not self._indexed:
                for name, keys, unique in _INDEXES:
                    self._coll.create_index(keys, name=name, unique=unique)
                self._indexed = True
            yield self._coll
        except ConnectionFailure as exc:
            raise TaskStoreError(f"cannot reach MongoDB at {self.where}: {self._scrub(exc)}; {_FIX}") from exc
        except OperationFailure as exc:
            raise TaskStoreError(
                f"MongoDB at {self.where} refused to {doing}: {self._scrub(exc)}; check the user, password and "
                "database in QTRAIN_TASK_STORE and the user's roles (readWrite on the database)"
            ) from exc
        except PyMongoError as exc:
            raise TaskStoreError(f"cannot {doing} in MongoDB at {self.where}: {self._scrub(exc)}") from exc

    def _scrub(self, exc: Exception) -> str:
        # pymongo appends a long topology dump to server-selection errors; the first part says what went wrong
        text = str(exc).split(", Topology Description:")[0]
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _now(self) -> datetime:
        # BSON keeps milliseconds: cut there, so a record read back equals the one handed out
        at = datetime.fromtimestamp(self._clock(), UTC)
        return at.replace(microsecond=at.microsecond // 1000 * 1000)

    def _record(self, doc: Document) -> TaskRecord:
        return TaskRecord(
            id=doc["_id"],
            pool=doc["pool"],
            hash=doc["hash"],
            spec=doc["spec"],
            status=doc["status"],
            queue=doc["queue"],
            experiment=doc["experiment"],
            priority=doc["priority"],
            attempts=doc["attempts"],
            max_attempts=doc["max_attempts"],
            delayed=doc["delayed"],
            limits=dict(doc.get("limits") or {}),
            progress=dict(doc.get("progress") or {}),
            label=str(doc.get("label") or ""),
            stage=doc["stage"],
            worker=doc.get("worker"),
            token=doc.get("token"),
            lease_expires=rules.aware(doc.get("lease_expires")),
            run_id=doc.get("run_id"),
            result=doc.get("result"),
            error=doc.get("error"),
            dispatches=doc.get("dispatches", 0),
            dispatched_at=rules.aware(doc.get("dispatched_at")),
            created_at=rules.aware(doc["created_at"]),
            updated_at=rules.aware(doc["updated_at"]),
            started_at=rules.aware(doc.get("started_at")),
            finished_at=rules.aware(doc.get("finished_at")),
            history=list(doc.get("history", [])),
        )

    def _end_attempt(
        self,
        coll: Collection[Document],
        doc: Document,
        status: Status,
        outcome: rules.AttemptEnd,
        error: str | None = None,
        *,
        when: Mapping[str, Any] | None = None,
        **sets: Any,
    ) -> Document | None:
        """Move the running task ``doc`` to ``status`` (also setting ``sets``) and append its attempt to history,
        unless it is no longer running under the same token (or no longer matches ``when``); the task after."""
        now = self._now()
        entry = rules.history_entry(
            attempt=doc["attempts"],
            stage=doc["stage"],
            worker=doc.get("worker"),
            run_id=sets.get("run_id", doc.get("run_id")),
            started_at=doc.get("started_at"),
            ended_at=now.timestamp(),
            outcome=outcome,
            status=status,
            error=error,
        )
        if status in FINAL_STATUSES:
            sets["finished_at"] = now
        sets.update(status=status, error=error, token=None, lease_expires=None, updated_at=now)
        found: Document | None = coll.find_one_and_update(
            {"_id": doc["_id"], "status": "running", "token": doc["token"], **(when or {})},
            {"$set": sets, "$push": {"history": entry}},
            return_document=ReturnDocument.AFTER,
        )
        return found

    def _running(self, coll: Collection[Document], task_id: str, token: str) -> Document | None:
        found: Document | None = coll.find_one({"_id": task_id, "status": "running", "token": token})
        return found

    def _back_to_start(self, coll: Collection[Document], doc: Document) -> bool:
        """``doc`` → waiting (part_done past the train stage), attempts 0, unless it changed meanwhile."""
        target = rules.after_end(doc["stage"])
        sets: Document = {"attempts": 0, "result": None, "finished_at": None}
        if doc["status"] == "running":
            return self._end_attempt(coll, doc, target, "reset", None, **sets) is not None
        now = self._now()
        sets.update(status=target, error=None, token=None, lease_expires=None, updated_at=now)
        return coll.update_one({"_id": doc["_id"], "status": doc["status"]}, {"$set": sets}).matched_count == 1

    # -- the contract ------------------------------------------------------------------------------------------

    def submit(
        self,
        pool: str,
        spec: Mapping[str, Any],
        spec_hash: str,
        *,
        queue: str = "cpu",
        experiment: str = "qtrain",
        priority: int = 0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        delayed: bool = False,
        limits: Mapping[str, float] | None = None,
        label: str = "",
    ) -> tuple[TaskRecord, bool]:
        """Add a waiting task, or return the pool's task with that hash; ``(task, created)``.

        Raises:
            ConfigError: a bad pool/queue name, hash, priority, max_attempts or label, or a spec that is not JSON.
            TaskStoreError: the server cannot be reached or refuses the write.
        """
        fields = rules.check_submission(
            pool,
            spec,
            spec_hash,
            queue=queue,
            experiment=experiment,
            priority=priority,
            max_attempts=max_attempts,
            delayed=delayed,
            limits=limits,
            label=label,
        )
        with self._guard("submit a task") as coll:
            existing = coll.find_one({"pool": pool, "hash": spec_hash})
            if existing is not None:
                return self._record(existing), False
            now = self._now()
            doc: Document = {
                "_id": rules.new_id(),
                **fields,
                "status": "waiting",
                "stage": "train",
                "attempts": 0,
                "dispatches": 0,
                "seq": self._seq.next(),
                "created_at": now,
                "updated_at": now,
                "history": [],
            }
            try:
                coll.insert_one(doc)
            except DuplicateKeyError:  # another client submitted the same hash since the find above
                existing = coll.find_one({"pool": pool, "hash": spec_hash})
                if existing is None:
                    raise TaskStoreError(
                        f"task with hash {spec_hash!r} in pool {pool!r} was submitted and deleted at the same time "
                        f"in {self.where}; submit it again"
                    ) from None
                return self._record(existing), False
        return self._record(doc), True

    def get(self, task_id: str) -> TaskRecord:
        """The task with ``task_id``.

        Raises:
            TaskNotFoundError: no such task in this collection.
        """
        with self._guard("read a task") as coll:
            doc = coll.find_one({"_id": task_id})
        if doc is None:
            raise TaskNotFoundError(f"no task {task_id!r} in {self.where}; list them with pool.list(POOL)")
        return self._record(doc)

    def find(self, pool: str, spec_hash: str) -> TaskRecord | None:
        """The pool's task with that hash, None when there is none.

        Raises:
            ConfigError: a bad pool name.
        """
        rules.check_name(pool)
        with self._guard("read a task") as coll:
            doc = coll.find_one({"pool": pool, "hash": spec_hash})
        return None if doc is None else self._record(doc)

    def claim(
        self, pool: str, worker: str, *, lease_s: float = DEFAULT_LEASE_S, task_id: str | None = None,
        stage: Stage = "train",
    ) -> TaskRecord | None:  # fmt: skip
        """Atomically take the best waiting task (stage "end": part_done task), or exactly ``task_id``.

        Raises:
            ConfigError: a bad pool name, worker, lease or stage.
        """
        rules.check_name(pool)
        rules.check_text(worker, "worker")
        lease = rules.check_lease(lease_s)
        stage = rules.check_stage(stage)
        query: Document = {"pool": pool, "status": "part_done" if stage == "end" else "waiting"}
        if task_id is not None:
            query["_id"] = task_id
        now = self._now()
        lease_end = datetime.fromtimestamp(now.timestamp() + lease, UTC)
        update = {
            "$set": {
                "status": "running",
                "stage": stage,
                "worker": worker,
                "token": rules.new_token(),
                "lease_expires": lease_end.replace(microsecond=lease_end.microsecond // 1000 * 1000),
                "started_at": now,
                "updated_at": now,
                "finished_at": None,
                "progress": {},
            },
            "$inc": {"attempts": 1},
        }
        with self._guard("claim a task") as coll:
            doc = coll.find_one_and_update(query, update, sort=_CLAIM_ORDER, return_document=ReturnDocument.AFTER)
        return None if doc is None else self._record(doc)

    def _update_running(self, task_id: str, token: str, sets: Document, doing: str) -> bool:
        with self._guard(doing) as coll:
            res = coll.update_one({"_id": task_id, "status": "running", "token": token}, {"$set": sets})
        return res.matched_count == 1

    def heartbeat(
        self, task_id: str, token: str, *, lease_s: float = DEFAULT_LEASE_S, progress: Mapping[str, Any] | None = None
    ) -> bool:
        """Extend the lease to now + ``lease_s`` (and store ``progress``); False when the task is no longer running
        under ``token``.

        Raises:
            ConfigError: ``lease_s`` is not a positive number, or ``progress`` is not JSON.
        """
        lease = rules.check_lease(lease_s)
        now = self._now()
        sets: Document = {"lease_expires": datetime.fromtimestamp(now.timestamp() + lease, UTC), "updated_at": now}
        if progress is not None:
            sets["progress"] = rules.progress_document(progress, task_id)
        return self._update_running(task_id, token, sets, "extend a lease")

    def set_run(self, task_id: str, token: str, run_id: str) -> bool:
        """Record the attempt's MLflow run id; False when the token is stale.

        Raises:
            ConfigError: ``run_id`` is empty.
        """
        rules.check_text(run_id, "run_id")
        return self._update_running(task_id, token, {"run_id": run_id, "updated_at": self._now()}, "record a run")

    def finish(self, task_id: str, token: str, result: Mapping[str, Any]) -> bool:
        """running under ``token`` → done with ``result``; False (nothing changes) when the token is stale.

        Raises:
            ConfigError: ``result`` is not JSON.
        """
        doc_result = rules.json_document(result, f"the result of task {task_id!r}")
        with self._guard("finish a task") as coll:
            doc = self._running(coll, task_id, token)
            return doc is not None and self._end_attempt(coll, doc, "done", "done", result=doc_result) is not None

    def part_done(self, task_id: str, token: str, run_id: str) -> bool:
        """running under ``token`` (stage "train" of a delayed task) → part_done with ``run_id``.

        Raises:
            ConfigError: ``run_id`` is empty.
            TaskPoolError: the task is not delayed, or its "end" stage is running.
        """
        rules.check_text(run_id, "run_id")
        with self._guard("end a task's train stage") as coll:
            doc = self._running(coll, task_id, token)
            if doc is None:
                return False
            rules.check_part_done(task_id, doc["delayed"], doc["stage"])
            ended = self._end_attempt(coll, doc, "part_done", "part_done", stage="end", run_id=run_id, attempts=0)
        return ended is not None

    def fail(self, task_id: str, token: str, error: str, *, retry: bool = True) -> Status | None:
        """running under ``token`` → waiting/part_done while attempts are left and ``retry``, else failed.

        Returns the new status, None when the token is stale.
        """
        with self._guard("fail a task") as coll:
            doc = self._running(coll, task_id, token)
            if doc is None:
                return None
            status = rules.after_failure(doc["attempts"], doc["max_attempts"], doc["stage"], retry)
            ended = self._end_attempt(coll, doc, status, "error", str(error))
        return None if ended is None else status

    def expire_leases(self, pool: str | None = None) -> builtins.list[TaskRecord]:
        """Running tasks whose lease has passed → waiting/part_done, or failed when out of attempts.

        Raises:
            ConfigError: a bad pool name.
        """
        now = self._now()
        query: Document = {"status": "running", "lease_expires": {"$lt": now}}
        if pool is not None:
            query["pool"] = rules.check_name(pool)
        out: builtins.list[TaskRecord] = []
        with self._guard("expire leases") as coll:
            for doc in builtins.list(coll.find(query).sort(_LIST_ORDER)):  # read all first, then change
                status = rules.after_failure(doc["attempts"], doc["max_attempts"], doc["stage"], True)
                error = rules.lease_error(
                    doc.get("worker"), doc.get("lease_expires"), doc["attempts"], doc["max_attempts"], doc["stage"]
                )
                # a heartbeat that lands first wins: the update then matches nothing
                ended = self._end_attempt(
                    coll, doc, status, "lease_expired", error, when={"lease_expires": {"$lt": now}}
                )
                if ended is not None:
                    log.warning("task %s of pool %s: %s -> %s", doc["_id"], doc["pool"], error, status)
                    out.append(self._record(ended))
        return out

    def mark_dispatched(self, task_id: str) -> None:
        """``dispatches`` + 1 and ``dispatched_at`` = now.

        Raises:
            TaskNotFoundError: no such task.
        """
        now = self._now()
        with self._guard("mark a task dispatched") as coll:
            res = coll.update_one(
                {"_id": task_id}, {"$inc": {"dispatches": 1}, "$set": {"dispatched_at": now, "updated_at": now}}
            )
        if res.matched_count != 1:
            raise TaskNotFoundError(f"cannot mark task {task_id!r} dispatched: it is not in {self.where}")

    def list(self, pool: str, statuses: Sequence[Status] | None = None) -> builtins.list[TaskRecord]:
        """Tasks of ``pool`` (optionally only those in ``statuses``), oldest first.

        Raises:
            ConfigError: a bad pool name or an unknown status.
        """
        query: Document = {"pool": rules.check_name(pool)}
        if statuses is not None:
            query["status"] = {"$in": rules.check_statuses(statuses)}
        with self._guard("list tasks") as coll:
            return [self._record(doc) for doc in coll.find(query).sort(_LIST_ORDER)]

    def stats(self, pool: str) -> dict[Status, int]:
        """Count per status, every status present.

        Raises:
            ConfigError: a bad pool name.
        """
        counts: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        pipeline: builtins.list[Document] = [
            {"$match": {"pool": rules.check_name(pool)}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ]
        with self._guard("count tasks") as coll:
            for row in coll.aggregate(pipeline):
                counts[row["_id"]] = row["n"]
        return counts

    def reset(self, pool: str, statuses: Sequence[Status] = ("running", "failed")) -> int:
        """Tasks of ``pool`` in ``statuses`` → waiting (part_done for a delayed task past its train stage).

        Raises:
            ConfigError: a bad pool name or an unknown status.
        """
        query = {"pool": rules.check_name(pool), "status": {"$in": rules.check_statuses(statuses)}}
        with self._guard("reset tasks") as coll:
            docs = builtins.list(coll.find(query).sort(_LIST_ORDER))  # read all first, then change
            return sum(self._back_to_start(coll, doc) for doc in docs)

    def _docs_of(self, coll: Collection[Document], task_ids: Sequence[str], doing: str) -> builtins.list[Document]:
        """The documents of ``task_ids``.

        Raises:
            TaskNotFoundError: an id is not in the store.
        """
        ids = list(dict.fromkeys(task_ids))
        docs = builtins.list(coll.find({"_id": {"$in": ids}}))
        rules.check_found(ids, (doc["_id"] for doc in docs), doing, self.where)
        return docs

    def cancel(self, task_ids: Sequence[str]) -> int:
        """These tasks → cancelled unless they ended already; a running attempt ends (its token dropped).

        Raises:
            TaskNotFoundError: an id is not in the store (nothing changes).
        """
        with self._guard("cancel tasks") as coll:
            docs = self._docs_of(coll, task_ids, "cancel")
            changed = 0
            for doc in docs:
                if doc["status"] in FINAL_STATUSES:
                    continue
                if doc["status"] == "running":
                    changed += self._end_attempt(coll, doc, "cancelled", "cancelled", rules.CANCELLED_ERROR) is not None
                    continue
                now = self._now()
                sets = {"status": "cancelled", "error": rules.CANCELLED_ERROR, "finished_at": now, "updated_at": now,
                        "token": None, "lease_expires": None}  # fmt: skip
                changed += coll.update_one({"_id": doc["_id"], "status": doc["status"]}, {"$set": sets}).matched_count
            return changed

    def requeue(self, task_ids: Sequence[str]) -> int:
        """These tasks (any status but running under a live lease) → waiting/part_done as in :meth:`reset`.

        Raises:
            TaskNotFoundError: an id is not in the store (nothing changes).
        """
        with self._guard("requeue tasks") as coll:
            docs = self._docs_of(coll, task_ids, "requeue")
            now = self._now()
            return sum(self._back_to_start(coll, doc) for doc in docs if not _live(doc, now))

    def purge(self, pool: str) -> int:
        """Delete every task of ``pool``; returns how many.

        Raises:
            ConfigError: a bad pool name.
        """
        with self._guard("delete tasks") as coll:
            return coll.delete_many({"pool": rules.check_name(pool)}).deleted_count

    def pools(self) -> builtins.list[str]:
        """Names of the pools that hold tasks, sorted."""
        with self._guard("list pools") as coll:
            return sorted(coll.distinct("pool"))

    def close(self) -> None:
        """Close the client this pool built from a URL (a client passed in stays open)."""
        if self._owns_client:
            self._client.close()


def _live(doc: Document, now: datetime) -> bool:
    lease = rules.aware(doc.get("lease_expires"))
    return bool(doc["status"] == "running" and lease is not None and lease >= now)


def _describe(client: object) -> str:
    """Where a caller's client points, without credentials and without waiting for a server."""
    if isinstance(client, pymongo.MongoClient):
        hosts = ",".join(f"{host}:{port}" for host, port in client.topology_description.server_descriptions())
        return f"mongodb://{hosts}"
    return f"the client {type(client).__module__}.{type(client).__name__}"
