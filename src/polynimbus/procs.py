"""Find and stop processes by command line or by network namespace (via /proc)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    """A process: ``pid``, ``argv`` and the inode of its network namespace (or ``None``)."""

    pid: int
    argv: tuple[str, ...]
    netns_inode: int | None


def processes() -> Iterator[Proc]:
    """Every live (non-zombie) process readable in /proc."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
            if not raw:
                continue  # kernel thread or zombie
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        yield Proc(
            pid, tuple(a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")), ino
        )


def ancestors(pid: int) -> set[int]:
    """``pid`` and every process above it up to init (from ``/proc/PID/stat``)."""
    out: set[int] = set()
    while pid > 0 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def netns_inode(name: str) -> int | None:
    """Inode of the named namespace ``/var/run/netns/NAME``, or ``None`` if absent."""
    try:
        return os.stat(f"/var/run/netns/{name}").st_ino
    except OSError:
        return None


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def stop(pids: list[int], timeout_s: float = 3.0) -> None:
    """SIGTERM ``pids``, then SIGKILL the ones still alive after ``timeout_s`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
