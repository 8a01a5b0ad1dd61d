"""Where snapshots are kept: ``snapshots/NAME.json`` in the lab's state directory.

The ``snapshots/`` directory is created 0700 inside a state directory polynimbus owns
(:func:`polynimbus.state.prepare`); each snapshot is one JSON document (see
:mod:`polynimbus.snapshot.model`) written 0600 from its first byte and replaced atomically
(:func:`polynimbus.keys.write_private_file`). ``snapshots/last-version`` holds the highest
version given so far, so versions keep increasing even when a snapshot is replaced.
``polynimbus down`` removes all of it with the rest of the lab's state
(:data:`polynimbus.state.SUBDIRS`).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from polynimbus import names
from polynimbus.errors import StateError
from polynimbus.keys import write_private_file
from polynimbus.snapshot.model import check_document

DIR = "snapshots"
"""Subdirectory of the state directory that holds the snapshots."""

COUNTER = "last-version"
"""File in :data:`DIR` holding the highest version given so far."""

SUFFIX = ".json"
MAX_BYTES = 64 * 1024 * 1024
"""Largest snapshot file read (a lab of thousands of resources is a few MB)."""


class SnapshotError(StateError):
    """A snapshot is missing, exists already, is unreadable, or its name is invalid."""


class SnapshotNameError(SnapshotError):
    """A snapshot name that is not a DNS-like label: a bad command line (exit 2)."""

    exit_code = 2


class SnapshotUnusableError(SnapshotError):
    """A snapshot file that is not a usable polynimbus snapshot (corrupt, hand-edited,
    another schema, another lab's): like an invalid intent, exit 2."""

    exit_code = 2


def check_name(name: str) -> str:
    """``name`` when it is a valid snapshot name (a DNS-like label, like lab names).

    Raises:
        SnapshotNameError: it is not.
    """
    if not names.NAME_RE.match(name):
        raise SnapshotNameError(
            f"{name!r} is not a snapshot name",
            "use 1-32 lowercase letters, digits and inner hyphens, e.g. before-upgrade",
        )
    return name


def snapshot_dir(sdir: Path) -> Path:
    """The snapshots directory of state directory ``sdir`` (may not exist)."""
    return sdir / DIR


def _check_dir(path: Path) -> bool:
    """Whether ``path`` exists; refuses a symbolic link, a non-directory, or a directory
    others could write into."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if (
        not stat.S_ISDIR(st.st_mode)
        or st.st_uid != os.geteuid()
        or stat.S_IMODE(st.st_mode) & 0o077
    ):
        raise SnapshotError(
            f"refusing to use {path}: it must be a directory of yours with mode 0700 "
            f"(it is {stat.filemode(st.st_mode)}, uid {st.st_uid})",
            f"remove {path}; polynimbus recreates it at the next snapshot save",
        )
    return True


def ensure_dir(sdir: Path) -> Path:
    """Create ``sdir/snapshots`` (0700) when missing; return it.

    Raises:
        SnapshotError: it exists but is not a private directory of ours.
    """
    path = snapshot_dir(sdir)
    if not _check_dir(path):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
            os.chmod(path, 0o700, follow_symlinks=False)  # whatever the umask
        _check_dir(path)
    return path


def path_of(sdir: Path, name: str) -> Path:
    """The file of snapshot ``name`` (validated) in state directory ``sdir``."""
    return snapshot_dir(sdir) / f"{check_name(name)}{SUFFIX}"


def _read(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        return f.read(MAX_BYTES).decode("utf-8")


def load(sdir: Path, name: str) -> dict[str, Any]:
    """Snapshot ``name`` of state directory ``sdir``.

    Raises:
        SnapshotNameError: ``name`` is not a snapshot name.
        SnapshotError: no such snapshot (the hint lists the ones there are).
        SnapshotUnusableError: it is not a readable, well-formed polynimbus snapshot (the
            message names the file and what is wrong: :func:`check_document`).
    """
    path = path_of(sdir, name)
    if not _check_dir(snapshot_dir(sdir)) or not os.path.lexists(path):
        have = list_names(sdir)
        raise SnapshotError(
            f"no snapshot named {name!r} in {snapshot_dir(sdir)}",
            ("snapshots: " + ", ".join(have))
            if have
            else "save one first: polynimbus snapshot save NAME",
        )
    try:
        doc: dict[str, Any] = json.loads(_read(path))
    except (OSError, ValueError, RecursionError) as exc:
        raise SnapshotUnusableError(
            f"snapshot {name!r} ({path}) is unreadable: {exc}",
            f"save it again with --force, or delete {path}",
        ) from None
    problem = check_document(doc)
    if problem is not None:
        raise SnapshotUnusableError(
            f"snapshot {name!r} ({path}) cannot be used: {problem}",
            f"save it again with --force, or delete {path}",
        )
    return doc


def list_names(sdir: Path) -> list[str]:
    """Names of the snapshots in state directory ``sdir``, sorted (none: ``[]``)."""
    path = snapshot_dir(sdir)
    if not _check_dir(path):
        return []
    out = []
    with os.scandir(path) as it:
        for e in it:
            stem = e.name.removesuffix(SUFFIX)
            if e.name.endswith(SUFFIX) and names.NAME_RE.match(stem):
                out.append(stem)
    return sorted(out)


def load_all(sdir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every usable snapshot of ``sdir`` (sorted by version) and one problem text per
    snapshot that could not be read."""
    docs, problems = [], []
    for name in list_names(sdir):
        try:
            docs.append(load(sdir, name))
        except SnapshotError as exc:
            problems.append(exc.message)
    docs.sort(key=lambda d: (d["version"], d["name"]))
    return docs, problems


def next_version(sdir: Path) -> int:
    """One more than the highest version given so far in ``sdir`` (1 for the first)."""
    highest = 0
    path = snapshot_dir(sdir)
    if _check_dir(path):
        with contextlib.suppress(OSError, ValueError):
            highest = int(_read(path / COUNTER).strip())
        for name in list_names(sdir):
            with contextlib.suppress(SnapshotError):
                highest = max(highest, int(load(sdir, name)["version"]))
    return highest + 1


def refuse_existing(sdir: Path, name: str) -> None:
    """Refuse to replace snapshot ``name`` of ``sdir``.

    Raises:
        SnapshotError: it exists (the hint says ``--force``).
    """
    if os.path.lexists(path_of(sdir, name)):
        raise SnapshotError(
            f"a snapshot named {name!r} exists already",
            f"choose another name, or replace it: polynimbus snapshot save {name} --force",
        )


def write(sdir: Path, doc: dict[str, Any], force: bool = False) -> Path:
    """Write snapshot document ``doc`` (its ``name``) into ``sdir``; return its path.

    Raises:
        SnapshotError: a snapshot of that name exists and ``force`` is false, or the
            snapshots directory is unsafe.
        OSError: the directory is not writable.
    """
    path = path_of(sdir, doc["name"])
    ensure_dir(sdir)
    if not force:
        refuse_existing(sdir, doc["name"])
    write_private_file(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    write_private_file(path.parent / COUNTER, f"{doc['version']}\n")
    return path
