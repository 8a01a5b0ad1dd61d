"""The API's own state in the lab's state directory: intent versions and tokens.

- ``api.sqlite`` (0600 from its first byte): table ``intent_versions`` (``version``,
  ``yaml``, ``time``, ``who``), whose first row is the intent file ``serve`` was started
  with, then one row per change (through the API, or found in the lab: a ``snapshot
  restore``, an ``up``); table ``tenant_tokens`` (``tenant``, ``token``, ``time``).
- ``admin.token`` (0600 from its first byte): the admin's bearer token, generated at the
  first start with :func:`secrets.token_urlsafe`; ``serve`` prints its path, never the
  token.

The current intent is not kept here: it is the lab's (``state.saved_intent``), re-read at
each request. Tokens are kept in clear because the admin can read the tenants' tokens
back; the file is readable by its owner only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from polynimbus.errors import StateError
from polynimbus.keys import write_private_file

DB_FILE = "api.sqlite"
"""The API's database, in the lab's state directory."""
ADMIN_TOKEN_FILE = "admin.token"
"""The admin's bearer token, in the lab's state directory."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS intent_versions (
    version INTEGER PRIMARY KEY AUTOINCREMENT,
    yaml TEXT NOT NULL,
    time TEXT NOT NULL,
    who TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenant_tokens (
    tenant TEXT PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    time TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_private(path: Path) -> None:
    """Refuse a file that is a symbolic link, not regular, foreign or readable by others.

    Raises:
        StateError: it is.
    """
    st = os.lstat(path)
    if (
        not stat.S_ISREG(st.st_mode)
        or st.st_uid != os.geteuid()
        or stat.S_IMODE(st.st_mode) & 0o077
    ):
        raise StateError(
            f"refusing to use {path}: it must be a regular file owned by you (uid "
            f"{os.geteuid()}) with mode 0600; it is uid {st.st_uid}, mode "
            f"{stat.filemode(st.st_mode)}",
            f"remove {path}; polynimbus serve creates a new one (new tokens)",
        )


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 before anything is written into it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
    finally:
        os.close(fd)


def ensure_admin_token(state_dir: Path) -> Path:
    """The path of the admin token file, generated (0600 from its first byte) if missing.

    Raises:
        StateError: the file exists but is unsafe (see :func:`_check_private`) or empty.
    """
    path = state_dir / ADMIN_TOKEN_FILE
    if not os.path.lexists(path):
        write_private_file(path, secrets.token_urlsafe(32) + "\n")
    _check_private(path)
    if not read_admin_token(path):
        raise StateError(f"{path} is empty", f"remove {path}; a new admin token is generated")
    return path


def read_admin_token(path: Path) -> str:
    """The token in ``path`` (surrounding white space removed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "r", encoding="utf-8") as f:
        return f.read(4096).strip()


@dataclass(frozen=True)
class Version:
    """One intent version: number, YAML text, UTC time (ISO 8601), who made it."""

    version: int
    yaml: str
    time: str
    who: str


class Store:
    """The SQLite database of one lab's API (thread-safe: one connection, one lock).

    Args:
        path: the database file; created 0600 (before SQLite writes its first byte) if
            missing, refused if unsafe.

    Raises:
        StateError: the file is unsafe (symbolic link, foreign, readable by others) or is
            not a database SQLite can open.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not os.path.lexists(path):
            _create_private(path)
        _check_private(path)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"cannot open the API database {path}: {exc}",
                f"move {path} away; polynimbus serve creates a new one (new tokens)",
            ) from None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    # ------------------------------------------------------------------ versions
    def latest(self) -> Version | None:
        """The newest intent version, or ``None`` for a new database."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT version, yaml, time, who FROM intent_versions ORDER BY version DESC LIMIT 1"
            ).fetchone()
        return Version(*row) if row else None

    def add_version(self, yaml_text: str, who: str) -> int:
        """Record ``yaml_text`` as a new version made by ``who``; its number."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO intent_versions (yaml, time, who) VALUES (?, ?, ?)",
                (yaml_text, _now(), who),
            )
            return int(cur.lastrowid or 0)

    def versions(self) -> list[Version]:
        """Every version, oldest first (texts included)."""
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT version, yaml, time, who FROM intent_versions ORDER BY version"
            ).fetchall()
        return [Version(*r) for r in rows]

    def version(self, number: int) -> Version | None:
        """Version ``number``, or ``None``."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT version, yaml, time, who FROM intent_versions WHERE version = ?",
                (number,),
            ).fetchone()
        return Version(*row) if row else None

    # ------------------------------------------------------------------ tokens
    def ensure_tokens(self, tenants: list[str]) -> None:
        """Generate a token for each tenant of ``tenants`` that has none."""
        with self._tx() as cur:
            have = {r[0] for r in cur.execute("SELECT tenant FROM tenant_tokens")}
            for t in tenants:
                if t not in have:
                    cur.execute(
                        "INSERT INTO tenant_tokens (tenant, token, time) VALUES (?, ?, ?)",
                        (t, secrets.token_urlsafe(32), _now()),
                    )

    def tokens(self) -> dict[str, str]:
        """Tenant name -> its token."""
        with self._tx() as cur:
            return dict(cur.execute("SELECT tenant, token FROM tenant_tokens").fetchall())

    def tenant_of(self, token: str) -> str | None:
        """The tenant whose token is ``token`` (compared in constant time), or ``None``."""
        found = None
        for tenant, known in self.tokens().items():
            if secrets.compare_digest(known.encode(), token.encode()):
                found = tenant
        return found

    def drop_token(self, tenant: str) -> None:
        """Forget ``tenant``'s token (a tenant created again later gets a new one)."""
        with self._tx() as cur:
            cur.execute("DELETE FROM tenant_tokens WHERE tenant = ?", (tenant,))
