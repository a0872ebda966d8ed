"""Hosts on one machine: Linux network namespaces joined by a bridge, each with its own address and nothing else.

A :class:`Network` makes a private LAN (a bridge in a namespace of its own) and :meth:`Network.host` adds a host:
a namespace with a veth into the bridge, an address on the LAN and its own loopback. Processes started on a host
see only its interfaces, so a service bound to the infra host's address is reached over the LAN, and one bound to
a host's 127.0.0.1 only from that host. Killing a host kills every process in its namespace, as a host that loses
power does. Needs root (CI runs as root); :func:`unavailable` says why not where it cannot work.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.213.0"  # each Network is its own isolated LAN: two tests may use the same addresses at once


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    name = f"qtprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return f"ip netns add failed: {detail.strip()}"
    with contextlib.suppress(Exception):
        _ip("netns", "del", name)
    return None


@dataclass
class Host:
    """One namespace on the LAN: ``address`` is its only address besides loopback."""

    name: str
    netns: str
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path, user: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host (as ``user`` if given), its output appended to ``log``."""
        prefix = ["ip", "netns", "exec", self.netns] + (["runuser", "-u", user, "--"] if user else [])
        with open(log, "ab") as out:
            proc = subprocess.Popen([*prefix, *argv], env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        self.processes.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on this host to its end."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], env=dict(env), cwd=cwd, text=True,
                              capture_output=True, timeout=timeout)  # fmt: skip

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True, timeout=30)
        return [int(pid) for pid in out.stdout.split()]

    def kill(self) -> list[int]:
        """SIGKILL every process in the namespace (the host dies); returns their pids."""
        killed = self.pids()
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        return killed


@dataclass
class Network:
    """A LAN of hosts; :meth:`close` kills their processes and removes every namespace and link it made."""

    tag: str = field(default_factory=lambda: f"qt{secrets.token_hex(2)}")
    hosts: dict[str, Host] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lan = f"{self.tag}lan"
        _ip("netns", "add", self.lan)
        _ip("-n", self.lan, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.lan, "link", "set", "br0", "up")

    def host(self, name: str) -> Host:
        """Add host ``name`` (a short word: it goes into interface names of at most 15 characters)."""
        index = len(self.hosts) + 1
        netns, veth = f"{self.tag}{name}", f"{self.tag}v{index}"
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        _ip("link", "set", veth, "netns", netns)
        _ip("link", "set", f"{veth}p", "netns", self.lan)
        _ip("-n", self.lan, "link", "set", f"{veth}p", "master", "br0")
        _ip("-n", self.lan, "link", "set", f"{veth}p", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", f"{SUBNET}.{index}/24", "dev", veth)
        _ip("-n", netns, "link", "set", veth, "up")
        host = Host(name, netns, f"{SUBNET}.{index}")
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            host.kill()
            with contextlib.suppress(Exception):
                _ip("netns", "del", host.netns)
        with contextlib.suppress(Exception):
            _ip("netns", "del", self.lan)


def wait_port(host: Host, port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until something listens on ``host.address:port`` (checked from inside the host)."""
    probe = f"import socket; socket.create_connection(('{host.address}', {port}), timeout=1).close()"
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["ip", "netns", "exec", host.netns, "python3", "-c", probe], capture_output=True)
        if out.returncode == 0:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {host.address}:{port} on {host.name}:\n{_tail(log)}")
        time.sleep(0.3)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"
