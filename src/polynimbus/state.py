"""The lab's state directory (keys, rendered configuration, logs) and the host-wide lab lock.

State directory: default ``$XDG_STATE_HOME/polynimbus/NAME`` (``~/.local/state/polynimbus/NAME``
when ``XDG_STATE_HOME`` is unset), overridable with ``--state-dir``.

polynimbus writes into, changes the mode of and deletes only what it created. A state
directory it owns holds a marker file, ``.polynimbus-state`` (JSON:
``{"schema": 1, "tool": "polynimbus", "lab": NAME, "created_dir": BOOL}``).
``created_dir`` says whether polynimbus created the directory itself (mode 0700) or adopted
an empty directory the user made (whose mode it leaves alone, and which it leaves in place
on removal). A directory without the marker, or with another lab's, is refused with a
``StateError``. What polynimbus owns inside its directory (``OWNED``):

- ``.polynimbus-state``: the marker (0600), written by ``prepare``;
- ``keys/``: ``SITE.key`` (0600) and transient ``.*.tmp``, written by ``keys.KeyStore``;
- ``run/``: ``IF.log`` and ``*.pid``, written by the lab target;
- ``daemons/pn.*/``: the files of a node's tunnel daemons (configuration, certificates,
  keys; 0600 in 0700 directories), written by the lab target, where the daemon runs, and
  the control sockets the daemons make there;
- ``pki/``: the lab's CA and gateway certificates and keys (``*.pem``, ``*.key``, 0600),
  written by :mod:`polynimbus.pki`; ``nebula/``: Nebula's CA and host certificates;
- ``snapshots/``: ``NAME.json`` (0600), ``last-version`` and transient ``.*.tmp``, written
  by :mod:`polynimbus.snapshot.store` (0700; removed by ``down`` like the keys);
- ``intent.yaml``: the intent of the last ``up`` (0600), so that commands given only a
  lab's name (``trace CHAIN``) know its plan;
- ``api.sqlite`` (and its ``-journal``), ``admin.token``: ``serve``'s intent versions
  and tokens (0600, :mod:`polynimbus.api.store`);
- ``monitor.sqlite`` (and its ``-wal``, ``-shm``, ``-journal``): ``monitor``'s series,
  events and estimates (0600, :mod:`polynimbus.verify.monitor`);
- ``lock``: the per-directory lock file of older versions; transient ``.*.tmp``.

Anything else found in it was put there by someone else and is left alone by ``remove``.

Lock: one host-wide lock per lab, whatever ``--state-dir``: an ``flock`` on
``/run/polynimbus/locks/LAB.lock`` (directories 0700, file 0600; ``POLYNIMBUS_LOCK_DIR``
replaces the directory, for tests). The lock dies with its process.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from polynimbus import names
from polynimbus.errors import StateError
from polynimbus.keys import write_private_file

MARKER = ".polynimbus-state"
"""Name of the marker file that makes a directory polynimbus's state directory."""

SCHEMA = 1
"""Version of the marker's JSON document."""

SUBDIRS: dict[str, tuple[str, ...]] = {
    "keys": ("*.key", ".*.tmp"),
    "run": ("*.log", "*.pid"),
    "snapshots": ("*.json", ".*.tmp", "last-version"),
    # a tunnel daemon's files (configuration, certificates, keys), one directory per node
    "daemons/pn.*": ("*",),
    "daemons": (),
    # the lab's certificate authority and gateway certificates (polynimbus.pki)
    "pki": ("*.pem", "*.key", ".*.tmp"),
    # Nebula's own CA and host certificates (polynimbus.tunnels.nebula)
    "nebula": ("*.crt", "*.key", ".*.tmp"),
}
"""Subdirectories polynimbus creates, with the patterns of the regular files it puts in them
(``PARENT/GLOB``: every real directory in ``PARENT`` matching ``GLOB``; listed before
``PARENT``)."""
_TOP_SUBDIRS = frozenset(k.split("/", 1)[0] for k in SUBDIRS)

INTENT_FILE = "intent.yaml"
"""The intent of the lab's last ``up``, in its state directory."""

APPLIED_FILE = "applied"
"""A digest of the kept intent (and polynimbus's version) once an apply of it succeeded: a
later apply may then read only the nodes it changes (see ``lab_up(only_changes=True)``)."""

TOP_FILES: tuple[str, ...] = (
    MARKER,
    INTENT_FILE,
    APPLIED_FILE,
    "lock",
    ".*.tmp",
    "api.sqlite",  # serve: intent versions and tenant tokens (polynimbus.api.store)
    "api.sqlite-journal",
    "admin.token",  # serve: the admin's bearer token
    "events.jsonl",  # gateway agents' events: failovers (polynimbus.events)
    "monitor.sqlite",  # monitor: probe series, tunnel counters, events, ABW estimates
    "monitor.sqlite-wal",
    "monitor.sqlite-shm",
    "monitor.sqlite-journal",
)
"""Patterns of the regular files polynimbus creates at the top of its state directory."""

OWNED = {"subdirs": SUBDIRS, "files": TOP_FILES}
"""Everything ``remove`` may delete, in one place (extend it when a new kind of file appears)."""

LOCK_DIR = Path("/run/polynimbus/locks")
"""Host-wide directory of the per-lab lock files."""

LOCK_DIR_ENV = "POLYNIMBUS_LOCK_DIR"
"""Environment variable replacing ``LOCK_DIR`` (unit tests only)."""

Status = Literal["absent", "empty", "ours"]


# ---------------------------------------------------------------------------- paths
def default_state_dir(lab: str) -> Path:
    """Where the state of lab ``lab`` lives by default."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "polynimbus" / lab


def resolve(lab: str, override: Path | None) -> Path:
    """``override`` or the default state directory of ``lab``, made absolute (symbolic
    links are not followed: they are refused later)."""
    chosen = override if override is not None else default_state_dir(lab)
    return Path(os.path.abspath(chosen))


# ---------------------------------------------------------------------------- marker
def _hint_other_dir(lab: str) -> str:
    return (
        "give --state-dir a new or empty directory, or leave --state-dir out to use the "
        f"default ({default_state_dir(lab)})"
    )


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of directory ``path`` as a dict, or ``None`` when it has none. Read-only.

    Raises:
        StateError: the marker is not a regular file, or is not polynimbus's JSON document.
    """
    mpath = path / MARKER
    try:
        st = os.lstat(mpath)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise StateError(
            f"{mpath} is not a regular file; {path} is not a polynimbus state directory",
            _hint_other_dir(path.name),
        )
    try:
        fd = os.open(mpath, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            doc = json.loads(f.read(4096))
    except (OSError, ValueError) as exc:
        raise StateError(
            f"the state marker {mpath} is unreadable or corrupt ({exc})",
            f"if {path} is polynimbus's, delete {mpath} and everything polynimbus wrote there",
        ) from None
    if (
        not isinstance(doc, dict)
        or doc.get("tool") != "polynimbus"
        or not isinstance(doc.get("lab"), str)
        or not isinstance(doc.get("created_dir"), bool)
        or not isinstance(doc.get("created_parents", []), list)
        or not all(isinstance(p, str) for p in doc.get("created_parents", []))
    ):
        raise StateError(
            f"the state marker {mpath} is not polynimbus's",
            f"if {path} is polynimbus's, delete {mpath} and everything polynimbus wrote there",
        )
    return doc


def _write_marker(
    path: Path, lab: str, created_dir: bool, created_parents: list[str] | None = None
) -> None:
    doc = {
        "schema": SCHEMA,
        "tool": "polynimbus",
        "lab": lab,
        "created_dir": created_dir,
        "created_parents": created_parents or [],
    }
    write_private_file(path / MARKER, json.dumps(doc) + "\n")


def _make_parents(path: Path) -> list[str]:
    """Create the missing ancestors of ``path`` (default mode); the ones created, deepest
    first, so that ``remove`` can take them away again when they are empty."""
    missing = []
    p = path.parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    made = []
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d)
            made.append(os.path.abspath(d))
    return list(reversed(made))


# ---------------------------------------------------------------------------- inspect
def _inspect(path: Path, lab: str) -> tuple[Status, dict[str, Any] | None]:
    """What ``prepare`` would find at ``path``; raises what ``prepare`` would refuse."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent", None
    if stat.S_ISLNK(st.st_mode):
        raise StateError(
            f"the state directory {path} is a symbolic link; polynimbus does not follow it",
            f"give --state-dir the real directory ({os.path.realpath(path)})",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(
            f"the state directory {path} exists and is not a directory",
            f"give --state-dir a new or empty directory, or leave it out for the default "
            f"({default_state_dir(lab)})",
        )
    marker = read_marker(path)
    if marker is not None:
        if marker["lab"] != lab:
            raise StateError(
                f"{path} holds the state of lab {marker['lab']!r}, not of lab {lab!r}",
                f"give lab {lab!r} its own --state-dir; "
                f"'polynimbus down --lab {marker['lab']} --state-dir {path}' removes the other",
            )
        if st.st_uid != os.geteuid():
            raise StateError(
                f"the state directory {path} belongs to uid {st.st_uid}, not to you "
                f"(uid {os.geteuid()})",
                "run polynimbus as the user that created it, or use another --state-dir",
            )
        return "ours", marker
    with os.scandir(path) as it:
        empty = next(it, None) is None
    if not empty:
        raise StateError(
            f"{path} exists and was not created by polynimbus (it has no {MARKER} marker); "
            "polynimbus will not write into it, change its mode or delete anything in it",
            _hint_other_dir(lab),
        )
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise StateError(
            f"the empty directory {path} cannot hold keys: it belongs to uid {st.st_uid} "
            f"with mode {stat.S_IMODE(st.st_mode):04o}, so others could replace what "
            "polynimbus writes there (polynimbus does not chmod directories it did not create)",
            _hint_other_dir(lab),
        )
    return "empty", None


def peek(path: Path, lab: str) -> Status:
    """What ``prepare(path, lab)`` would find, without writing anything anywhere.

    Returns:
        ``"absent"`` (prepare would create it), ``"empty"`` (prepare would adopt this empty
        directory, leaving its mode alone) or ``"ours"`` (lab ``lab``'s state directory).

    Raises:
        StateError: ``prepare`` would refuse ``path`` (same message).
    """
    return _inspect(path, lab)[0]


# ---------------------------------------------------------------------------- prepare
def _mkdir_private(path: Path) -> bool:
    """Create directory ``path`` with mode 0700; ``False`` when it already existed."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)  # we just made it: undo whatever the umask took away
    finally:
        os.close(fd)
    return True


def prepare(path: Path, lab: str) -> Path:
    """Make ``path`` lab ``lab``'s state directory, refusing any directory polynimbus does
    not own.

    - absent: created with mode 0700 from the start (missing parents are created with the
      default mode and never chmodded), with the marker (``created_dir: true``);
    - an existing empty directory owned by the current user and not writable by group or
      others: adopted as is (mode unchanged), marker ``created_dir: false``;
    - lab ``lab``'s state directory (marker present): kept, nothing changed;
    then its ``run/`` subdirectory is created (0700) when missing. Missing parents are
    created too and listed in the marker (``created_parents``), so that ``remove`` takes
    them away again when they are empty.
    ``keys/`` is left to ``keys.KeyStore``.

    Returns:
        ``path``.

    Raises:
        StateError: ``path`` is a symbolic link or not a directory; has no marker and is not
            empty; holds another lab's marker or a corrupt one; is owned by another user; or
            (adopting) is writable by group or others. Nothing has been written.
    """
    status, _ = _inspect(path, lab)
    if status == "absent":
        parents = _make_parents(path)
        if not _mkdir_private(path):  # appeared meanwhile: judge it again
            return prepare(path, lab)
        _write_marker(path, lab, created_dir=True, created_parents=parents)
    elif status == "empty":
        _write_marker(path, lab, created_dir=False)
    for sub in ("run",):
        sp = path / sub
        if not _mkdir_private(sp) and not stat.S_ISDIR(os.lstat(sp).st_mode):
            raise StateError(
                f"{sp} is not a directory (a symbolic link or a file)",
                f"remove {sp}; polynimbus recreates it",
            )
    return path


# ---------------------------------------------------------------------------- remove
@dataclass
class Removal:
    """What ``remove`` did.

    Attributes:
        removed: paths deleted (files, then subdirectories, then the directory itself).
        kept: paths found inside the state directory that polynimbus did not create, and
            so left in place (the state directory then stays, with its marker if polynimbus
            created it).
    """

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def warning(self) -> str | None:
        """A sentence about ``kept`` for the user, or ``None`` when nothing was kept."""
        if not self.kept:
            return None
        return (
            "left in place what polynimbus did not create: "
            + ", ".join(self.kept)
            + " (and so the state directory that holds them)"
        )


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _unlink_owned_files(
    directory: Path, patterns: tuple[str, ...], out: Removal, top: bool = False
) -> None:
    """Unlink the regular files of ``directory`` matching ``patterns``; note the rest as kept.

    At the top of the state directory (``top``), the marker and the owned subdirectories
    are skipped (``remove`` handles them).
    """
    nested = [k.split("/", 1)[1] for k in SUBDIRS if k.startswith(f"{directory.name}/")]
    nested_in_daemons = directory.parent.name == "daemons"
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if top and (e.name == MARKER or e.name in _TOP_SUBDIRS):
            continue
        if (
            not top
            and e.is_dir(follow_symlinks=False)
            and any(fnmatch.fnmatchcase(e.name, g) for g in nested)
        ):
            continue  # handled as a subdirectory of its own
        p = directory / e.name
        # a daemon's control socket is left behind when it is killed
        kind_ok = e.is_file(follow_symlinks=False) or (
            nested_in_daemons and stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode)
        )
        if kind_ok and _matches(e.name, patterns):
            os.unlink(p)
            out.removed.append(str(p))
        else:
            out.kept.append(str(p))


def _subdirs(path: Path, sub: str) -> list[Path]:
    """The directories ``SUBDIRS`` key ``sub`` names in ``path`` (``PARENT/GLOB``: each real
    directory in ``PARENT`` matching ``GLOB``, symbolic links left out)."""
    if "/" not in sub:
        return [path / sub]
    parent, glob = sub.split("/", 1)
    try:
        with os.scandir(path / parent) as it:
            names = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [path / parent / n for n in names if fnmatch.fnmatchcase(n, glob)]


def _remove_subdir(sp: Path, patterns: tuple[str, ...], out: Removal) -> None:
    """Unlink the owned files of subdirectory ``sp``, then ``sp`` if it became empty."""
    try:
        sst = os.lstat(sp)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(sst.st_mode):
        out.kept.append(str(sp))
        return
    _unlink_owned_files(sp, patterns, out)
    with contextlib.suppress(OSError):  # not empty: something foreign, already in kept
        os.rmdir(sp)
        out.removed.append(str(sp))


def remove_subdir(path: Path, sub: str) -> Removal:
    """Delete polynimbus's files in subdirectory ``sub`` of state directory ``path`` (see
    ``SUBDIRS``), then the subdirectory if it became empty; absent is fine."""
    out = Removal()
    _remove_subdir(path / sub, SUBDIRS[sub], out)
    return out


def remove(path: Path, lab: str) -> Removal:
    """Delete what polynimbus created in lab ``lab``'s state directory ``path``.

    Deletes the regular files of ``OWNED`` (never following symbolic links), then the
    owned subdirectories that became empty, then the marker and the directory itself, but
    only if polynimbus created the directory and nothing foreign remains in it. A directory
    polynimbus adopted (``created_dir: false``) is emptied of polynimbus's files and left.
    Call it while holding ``lab_lock(lab)``.

    Returns:
        a ``Removal``; an absent ``path`` gives an empty one.

    Raises:
        StateError: ``path`` is not lab ``lab``'s state directory (a symbolic link, not a
            directory, no marker, another lab's or a corrupt marker). Nothing was deleted.
    """
    out = Removal()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return out
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise StateError(
            f"refusing to delete {path}: it is not a directory polynimbus created "
            "(a symbolic link or a file); nothing was deleted",
            "give --state-dir the directory 'up' used",
        )
    marker = read_marker(path)
    if marker is None:
        raise StateError(
            f"refusing to delete {path}: polynimbus did not create it (no {MARKER} marker); "
            "nothing was deleted",
            "give --state-dir the directory 'up' used, or leave it out for the default "
            f"({default_state_dir(lab)})",
        )
    if marker["lab"] != lab:
        raise StateError(
            f"refusing to delete {path}: it holds the state of lab {marker['lab']!r}, "
            f"not of lab {lab!r}; nothing was deleted",
            f"'polynimbus down --lab {marker['lab']} --state-dir {path}' removes that lab",
        )
    for sub, patterns in SUBDIRS.items():
        for sp in _subdirs(path, sub):
            _remove_subdir(sp, patterns, out)
    _unlink_owned_files(path, TOP_FILES, out, top=True)
    if marker["created_dir"] and not out.kept:
        os.unlink(path / MARKER)
        try:
            os.rmdir(path)
        except OSError:  # something appeared meanwhile
            out.removed.append(str(path / MARKER))
            out.kept.append(str(path))
        else:
            out.removed.append(str(path / MARKER))
            out.removed.append(str(path))
            ancestors = {os.path.abspath(a) for a in Path(os.path.abspath(path)).parents}
            for parent in marker.get("created_parents", []):
                if not isinstance(parent, str) or parent not in ancestors:
                    break  # only ever the ancestors prepare() made
                try:
                    os.rmdir(parent)  # only if empty: it may hold other things by now
                except OSError:
                    break
                out.removed.append(parent)
    elif not marker["created_dir"]:
        os.unlink(path / MARKER)
        out.removed.append(str(path / MARKER))
    return out


# ---------------------------------------------------------------------------- lock
def lock_dir() -> Path:
    """The directory of the per-lab lock files (``LOCK_DIR`` unless ``POLYNIMBUS_LOCK_DIR``)."""
    override = os.environ.get(LOCK_DIR_ENV)
    return Path(override) if override else LOCK_DIR


def lock_path(lab: str) -> Path:
    """The lock file of lab ``lab``.

    Raises:
        StateError: ``lab`` is not a valid lab name (it would escape the lock directory).
    """
    if not names.NAME_RE.match(lab):
        raise StateError(f"invalid lab name {lab!r}", "lab names are DNS-like labels")
    return lock_dir() / f"{lab}.lock"


def _check_private_dir(path: Path, what: str) -> None:
    st = os.lstat(path)
    if (
        stat.S_ISLNK(st.st_mode)
        or not stat.S_ISDIR(st.st_mode)
        or st.st_uid != os.geteuid()
        or st.st_mode & 0o022
    ):
        raise StateError(
            f"refusing to use the {what} {path}: it must be a real directory owned by you "
            f"(uid {os.geteuid()}) and writable by nobody else; it is uid {st.st_uid}, "
            f"mode {stat.filemode(st.st_mode)}",
            f"remove {path}; polynimbus recreates it",
        )


def _ensure_lock_dir() -> Path:
    base = lock_dir()
    chain = [base.parent, base] if base == LOCK_DIR else [base]
    if base != LOCK_DIR:
        base.parent.mkdir(parents=True, exist_ok=True)
    for d in chain:
        try:
            _mkdir_private(d)
        except PermissionError:
            raise StateError(
                f"cannot create the lock directory {d}: permission denied",
                "polynimbus up and down run as root (sudo)",
            ) from None
        _check_private_dir(d, "lock directory")
    return base


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f" (pid {pid})"
    return ""


@contextlib.contextmanager
def lab_lock(lab: str) -> Iterator[Path]:
    """Hold lab ``lab``'s host-wide lock for the duration; never waits.

    One lock per lab name on the host, whatever the state directory: the lock file is
    ``lock_dir()/LAB.lock`` (created 0600 in 0700 directories). The holder's pid is
    written into it for the message of the next one. The file is removed when the block
    exits (while still locked), so no lock file outlives its command; the lock is also
    released if the process dies.

    Yields:
        the lock file's path.

    Raises:
        StateError: another process (or another open in this one) holds the lock; the lock
            directory cannot be created (not root) or is unsafe (symbolic link, foreign
            owner, writable by others); the lock file is not a regular file of ours.
    """
    with _file_lock(lock_path(lab), f"lab {lab!r}") as path:
        yield path


@contextlib.contextmanager
def tag_lock(lab: str) -> Iterator[Path]:
    """Hold the lock of lab ``lab``'s tag (:func:`names.lab_tag`) for the duration, so two
    labs whose tags collide cannot be brought up at the same moment (each would pass
    :func:`check_tag_collision` before the other's namespaces exist). The file is
    ``lock_dir()/tag.TAG.lock`` (no lab name has a dot, so it is never a lab's).

    Raises:
        StateError: as :func:`lab_lock`.
    """
    tag = names.lab_tag(lab)
    with _file_lock(lock_dir() / f"tag.{tag}.lock", f"a lab with the tag {tag}") as path:
        yield path


@contextlib.contextmanager
def _file_lock(path: Path, what: str) -> Iterator[Path]:
    _ensure_lock_dir()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot open the lock file {path}: {exc.strerror}", f"remove {path}"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise StateError(
                    f"refusing to use the lock file {path}: not a regular file owned by you",
                    f"remove {path}",
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(
                    f"another polynimbus command{_holder(fd)} is working on {what}",
                    f"wait for it to finish, then run the command again (lock {path})",
                ) from None
            try:
                current = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is None or current.st_ino != st.st_ino:
                continue  # the previous holder removed the file before we locked it: retry
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield path
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # still locked: a newcomer locks a fresh file
            return
        finally:
            os.close(fd)
    raise StateError(f"could not take the lock {path}", "run the command again")


def _registry(lab: str) -> Path:
    return lock_dir().parent / "labs" / lab if lock_dir() == LOCK_DIR else lock_dir() / f"{lab}.lab"


def record_state_dir(lab: str, path: Path) -> None:
    """Note, host-wide, that lab ``lab`` runs with state directory ``path`` (a 0600 file
    under ``/run/polynimbus/labs``; call it holding ``lab_lock(lab)``)."""
    reg = _registry(lab)
    if reg.parent != lock_dir():
        _mkdir_private(reg.parent)
        _check_private_dir(reg.parent, "lab registry")
    write_private_file(reg, os.path.abspath(path) + "\n")


def save_intent(path: Path, text: str) -> None:
    """Keep the intent of an ``up`` (YAML text) in state directory ``path`` (0600 from its
    first byte, replaced atomically).

    Raises:
        OSError: the directory is not writable.
    """
    write_private_file(path / INTENT_FILE, text)


def applied_digest(text: str) -> str:
    """What :func:`mark_applied` records for an intent text: SHA-256 of polynimbus's
    version and the text (a new version renders differently: nothing is taken as applied)."""
    from polynimbus import __version__

    return hashlib.sha256(f"{__version__}\n{text}".encode()).hexdigest()


def mark_applied(path: Path, text: str) -> None:
    """Record that the lab in ``path`` was brought to intent ``text`` in full."""
    write_private_file(path / APPLIED_FILE, applied_digest(text) + "\n")


def clear_applied(path: Path) -> None:
    """Forget :func:`mark_applied` (before an apply that may fail halfway)."""
    (path / APPLIED_FILE).unlink(missing_ok=True)


def kept_intent_applied(path: Path) -> str | None:
    """The kept intent text when the last apply of it succeeded in full, else ``None``."""
    text = saved_intent(path)
    try:
        mark = (path / APPLIED_FILE).read_text(encoding="ascii").strip()
    except OSError:
        return None
    return text if text is not None and mark == applied_digest(text) else None


def saved_intent(path: Path) -> str | None:
    """The intent text :func:`save_intent` kept in ``path``, or ``None``. Read-only."""
    try:
        return (path / INTENT_FILE).read_text(encoding="utf-8")
    except OSError:
        return None


def recorded_state_dir(lab: str) -> Path | None:
    """The state directory lab ``lab`` was brought up with, if noted. Read-only."""
    try:
        return Path(_registry(lab).read_text().strip())
    except (OSError, ValueError):
        return None


def forget_state_dir(lab: str) -> None:
    """Drop the note of :func:`record_state_dir` (absent is fine)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_registry(lab))


def is_locked(lab: str) -> bool:
    """Whether another command holds lab ``lab``'s lock. Read-only: creates nothing."""
    try:
        fd = os.open(lock_path(lab), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock
    return False


def check_tag_collision(lab: str, present_labs: list[str]) -> None:
    """Refuse lab ``lab`` when a lab already on the host has the same ``names.lab_tag``.

    The tag (4 hex digits) prefixes every WireGuard interface of a lab (``wgTAG...``) and
    ``down`` finds a lab's leftover interfaces and ``wireguard-go`` processes by it, so two
    labs with one tag could take each other's names and leftovers.

    Args:
        lab: the lab about to be brought up.
        present_labs: names of the labs present on the host (``lab`` itself may be among
            them).

    Raises:
        StateError: naming both labs and the tag.
    """
    tag = names.lab_tag(lab)
    for other in sorted(set(present_labs)):
        if other != lab and names.lab_tag(other) == tag:
            raise StateError(
                f"lab {lab!r} cannot be up next to lab {other!r}: both have the tag {tag} "
                f"that names their WireGuard interfaces (wg{tag}...)",
                f"rename lab {lab!r} (the intent's name:), or take lab {other!r} down first",
            )
