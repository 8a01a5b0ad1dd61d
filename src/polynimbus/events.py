"""The lab's event log: failovers and other things that happen to a running lab on their
own, one JSON object per line in ``STATE_DIR/events.jsonl``.

Writers are gateway agents (:mod:`polynimbus.agent.failover`), each appending whole lines
with one ``write`` on a file opened ``O_APPEND``, so concurrent writers never interleave;
readers are ``polynimbus monitor`` (metrics) and tests.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
STATE_DIR_ENV = "POLYNIMBUS_STATE_DIR"
"""Environment variable the lab sets for the processes it starts: its state directory."""


def append_event(state_dir: Path, kind: str, **detail: Any) -> dict[str, Any]:
    """Append one event ``{"ts": UNIX seconds, "kind": kind, **detail}`` to the log.

    Returns:
        The event written.

    Raises:
        OSError: the file cannot be written.
    """
    event = {"ts": round(time.time(), 3), "kind": kind, **detail}
    line = (json.dumps(event, sort_keys=True) + "\n").encode()
    fd = os.open(state_dir / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def read_events(state_dir: Path, since: float | None = None) -> Iterator[dict[str, Any]]:
    """The events of the log, oldest first (none if there is no log); ``since``: UNIX
    seconds, older events left out. A torn last line (a writer killed mid-write) is
    skipped."""
    path = state_dir / EVENTS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and (since is None or event.get("ts", 0) >= since):
            yield event
