"""Where a run ran: the host name and the git commit of the code, set as run tags."""

from __future__ import annotations

import functools
import logging
import shutil
import socket
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
GIT_TIMEOUT_S = 2.0


def hostname() -> str:
    """This machine's host name."""
    return socket.gethostname()


@functools.lru_cache(maxsize=16)
def git_commit(directory: Path) -> str:
    """``git rev-parse HEAD`` of ``directory``, or ``"unknown"`` outside a git checkout / without git.

    Cached per directory: a long-lived worker keeps reporting the commit of the code it loaded.
    """
    git = shutil.which("git")
    if git is None:
        return UNKNOWN
    try:
        out = subprocess.run(
            [git, "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("git rev-parse HEAD in <%s> failed: %s", directory, exc)
        return UNKNOWN
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else UNKNOWN


def run_tags(source_dir: Path | None, task_hash: str | None) -> dict[str, str]:
    """Tags every started run gets: ``hostname``, ``git_commit`` (of ``source_dir``, default the working
    directory) and ``task_hash`` when given."""
    directory = (source_dir if source_dir is not None else Path.cwd()).absolute()
    tags = {"hostname": hostname(), "git_commit": git_commit(directory)}
    if task_hash is not None:
        tags["task_hash"] = task_hash
    return tags
