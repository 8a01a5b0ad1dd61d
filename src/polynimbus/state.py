"""The lab's state directory: keys, rendered configuration, process ids, logs, a lock.

Default ``$XDG_STATE_HOME/polynimbus/NAME`` (``~/.local/state/polynimbus/NAME`` when
``XDG_STATE_HOME`` is unset), overridable with ``--state-dir``. Mode 0700.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from polynimbus.errors import PolynimbusError


def default_state_dir(lab: str) -> Path:
    """Where the state of lab ``lab`` lives by default."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "polynimbus" / lab


def resolve(lab: str, override: Path | None) -> Path:
    """``override`` or the default state directory of ``lab``."""
    return override if override is not None else default_state_dir(lab)


def ensure(path: Path) -> Path:
    """Create ``path`` (mode 0700) with its ``run`` and ``wg`` subdirectories."""
    for p in (path, path / "run", path / "wg"):
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, 0o700)
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lab's lock for the duration (one ``up``/``down`` at a time per lab).

    Raises:
        PolynimbusError: another polynimbus process holds it.
    """
    ensure(path)
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PolynimbusError(
                f"another polynimbus command is working on this lab (lock {path / 'lock'})",
                "wait for it to finish",
            ) from None
        yield
    finally:
        os.close(fd)
