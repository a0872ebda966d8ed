"""``qtrain pool status|list|reset|requeue|purge|reconcile|work``: operating the task pool from the shell.

The commands that send messages (reset, requeue, reconcile) first check the broker, the result backend and the
task store (:func:`app.distributed.infra_check.check_services`, within 5 s), so a broken setting changes nothing in
the store.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from typing import Any

from app.core.errors import ConfigError
from app.core.settings import Settings
from app.taskpool.base import FINAL_STATUSES, STATUSES


def add_pool_commands(commands: Any) -> None:
    """Register ``qtrain pool ...`` on the top-level subparsers."""
    pool = commands.add_parser(
        "pool", help="the task pool: status, list, watch, cancel, reset, requeue, purge, reconcile, work"
    )
    sub = pool.add_subparsers(title="pool commands", metavar="COMMAND")

    status = sub.add_parser("status", help="tasks per status, for one pool or every pool")
    status.add_argument("pool", nargs="?", help="pool name (default: all pools)")
    status.set_defaults(func=_status)

    lst = sub.add_parser("list", help="the tasks of a pool")
    lst.add_argument("pool")
    lst.add_argument("--status", action="append", choices=STATUSES, help="only these statuses (repeatable)")
    lst.set_defaults(func=_list)

    reset = sub.add_parser("reset", help="running/failed tasks back to waiting (attempts 0), then dispatch them")
    reset.add_argument("pool")
    reset.add_argument("--status", action="append", choices=STATUSES, help="default: running and failed")
    reset.set_defaults(func=_reset)

    watch = sub.add_parser("watch", help="a live table of a pool's tasks with each running one's progress")
    watch.add_argument("pool")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    watch.add_argument("--once", action="store_true", help="print the table once and exit")
    watch.set_defaults(func=_watch)

    cancel = sub.add_parser(
        "cancel", help="cancel tasks: waiting ones are never run, running ones stop at their next round or epoch"
    )
    cancel.add_argument("task_ids", nargs="*", metavar="TASK_ID")
    cancel.add_argument("--pool", help="every task of this pool in --status (default: waiting, part_done, running)")
    cancel.add_argument("--status", action="append", choices=STATUSES, help="with --pool: only these statuses")
    cancel.set_defaults(func=_cancel)

    requeue = sub.add_parser("requeue", help="these tasks (cancelled ones too) back to waiting, then dispatch them")
    requeue.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    requeue.set_defaults(func=_requeue)

    purge = sub.add_parser("purge", help="delete every task of a pool (MLflow runs are kept)")
    purge.add_argument("pool")
    purge.add_argument("--yes", action="store_true", help="required: confirms the deletion")
    purge.set_defaults(func=_purge)

    rec = sub.add_parser("reconcile", help="expire dead leases and re-send messages the broker lost")
    rec.add_argument("pool")
    rec.set_defaults(func=_reconcile)

    work = sub.add_parser("work", help="be a worker without Celery: claim and train tasks of a pool until none")
    work.add_argument("pool")
    work.add_argument("--stage", choices=["train", "end"], default="train", help="end: fit begun (part_done) tasks")
    work.add_argument("--wait", type=float, default=0.0, help="keep polling this many seconds when idle")
    work.set_defaults(func=_work)


def _open(settings: Settings) -> Any:
    from app.runtime import get_runtime

    return get_runtime(settings).pool


def _checked(settings: Settings) -> Any:
    """The task store, once the services a command that sends messages needs have answered."""
    from app.distributed.infra_check import check_services

    check_services(settings)
    return _open(settings)


def _broker() -> Any:
    from app.runtime import get_runtime

    return get_runtime().broker


def _table(title: str, columns: list[str], rows: list[list[str]]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console

    Console(width=200).print(_table(title, columns, rows))


def _status(args: argparse.Namespace, settings: Settings) -> None:
    store = _open(settings)
    pools = [args.pool] if args.pool else store.pools()
    rows = []
    for name in pools:
        stats = store.stats(name)
        rows.append([name, *(str(stats[s]) for s in STATUSES), str(sum(stats.values()))])
    _print_table(f"task pools at {_masked(settings.task_store)}", ["pool", *STATUSES, "total"], rows)


def _list(args: argparse.Namespace, settings: Settings) -> None:
    _print_table(*_task_table(_open(settings), args.pool, args.status))


def _task_table(store: Any, pool: str, statuses: list[str] | None) -> tuple[str, list[str], list[list[str]]]:
    tasks = store.list(pool, statuses)
    rows = [
        [
            t.id, t.label, t.status, t.queue, str(t.priority), f"{t.attempts}/{t.max_attempts}", t.worker or "",
            t.run_id or "", _ago(t.updated_at), progress_text(t.progress) if t.status == "running" else "",
            (t.error or "")[:60],
        ]
        for t in tasks
    ]  # fmt: skip
    columns = ["task", "job", "status", "queue", "prio", "attempts", "worker", "run", "updated", "progress", "error"]
    return f"pool {pool}: {len(tasks)} tasks", columns, rows


def progress_text(progress: dict[str, Any]) -> str:
    """A running attempt's last report in one cell: ``fit LightGBMModel 120/1000 rounds train l2 0.98``."""
    if not progress:
        return ""
    parts = [str(progress.get("stage") or ""), str(progress.get("step") or "")]
    if progress.get("total"):
        parts.append(f"{progress.get('done', 0)}/{progress['total']} {progress.get('unit') or ''}".strip())
    parts.append(str(progress.get("note") or ""))
    return " ".join(p for p in parts if p)


def _watch(args: argparse.Namespace, settings: Settings) -> None:
    import time

    from rich.console import Console
    from rich.live import Live

    store = _open(settings)

    def render() -> Any:
        title, columns, rows = _task_table(store, args.pool, None)
        return _table(f"{title} (every {args.interval:g} s; Ctrl-C to stop)", columns, rows)

    if args.once:
        Console(width=200).print(render())
        return
    try:
        with Live(render(), console=Console(width=200), auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(render(), refresh=True)
                if all(s in FINAL_STATUSES for s in (t.status for t in store.list(args.pool))):
                    return
    except KeyboardInterrupt:
        return


def _reset(args: argparse.Namespace, settings: Settings) -> None:
    store = _checked(settings)
    count = store.reset(args.pool, args.status or ("running", "failed"))
    sent = _dispatch_pool(store, args.pool)
    print(f"reset {count} task(s) of pool {args.pool}; sent {sent} message(s)")


def _requeue(args: argparse.Namespace, settings: Settings) -> None:
    store = _checked(settings)
    pools = {store.get(task_id).pool for task_id in args.task_ids}
    count = store.requeue(args.task_ids)
    sent = sum(_dispatch_pool(store, name) for name in pools)
    print(f"requeued {count} task(s); sent {sent} message(s)")


def _cancel(args: argparse.Namespace, settings: Settings) -> None:
    if bool(args.task_ids) == bool(args.pool):
        raise ConfigError("qtrain pool cancel: give TASK_ID... or --pool POOL (not both)")
    if args.status and not args.pool:
        raise ConfigError("qtrain pool cancel: --status goes with --pool")
    store = _open(settings)
    ids = list(args.task_ids)
    if args.pool:
        ids = [t.id for t in store.list(args.pool, args.status or ["waiting", "part_done", "running"])]
    count = store.cancel(ids)
    print(f"cancelled {count} of {len(ids)} task(s); running ones stop at their next round or epoch (their runs end "
          "KILLED); bring them back with: qtrain pool requeue TASK_ID...")  # fmt: skip


def _purge(args: argparse.Namespace, settings: Settings) -> None:
    if not args.yes:
        raise ConfigError(f"purge deletes every task of pool {args.pool!r}; add --yes to confirm")
    print(f"deleted {_open(settings).purge(args.pool)} task(s) of pool {args.pool}")


def _reconcile(args: argparse.Namespace, settings: Settings) -> None:
    from app.workflow.trainer_rm import reconcile

    report = reconcile(_checked(settings), args.pool, _broker(), ends=True)
    print(f"pool {args.pool}: {report.expired} expired lease(s) returned, {report.dispatched} message(s) sent")


def _work(args: argparse.Namespace, settings: Settings) -> None:
    from app.runtime import get_runtime

    worker = get_runtime(settings).pool_worker(f"{socket.gethostname()}:{os.getpid()}")
    idle_since, done = time.monotonic(), 0
    while True:
        outcome = worker.run(args.pool, stage=args.stage)
        if outcome.action != "skipped":
            print(f"task {outcome.task_id}: {outcome.action} ({outcome.status}) run {outcome.run_id or '-'}")
            done, idle_since = done + 1, time.monotonic()
        elif time.monotonic() - idle_since >= args.wait:
            break
        else:
            time.sleep(1.0)
    print(f"no claimable task left in pool {args.pool}; handled {done}")


def _dispatch_pool(store: Any, pool: str) -> int:
    """Send messages for the pool's waiting tasks that have none (Celery on Redis)."""
    from app.workflow.trainer_rm import reconcile

    return reconcile(store, pool, _broker(), grace_s=0.0).dispatched


def _masked(url: str) -> str:
    from app.core.credentials import mask_url

    return mask_url(url)


def _ago(when: Any) -> str:
    if when is None:
        return ""
    from datetime import UTC, datetime

    seconds = (datetime.now(UTC) - when).total_seconds()
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"
