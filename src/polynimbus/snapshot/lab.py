"""Snapshots of a running lab: save, compare with the live lab, restore.

What is live is read with the lab target's ``observe`` (the same read-back ``up`` and
``verify`` diff against), scoped by the desired resources of the lab's current intent (the
one its last ``up`` kept in the state directory), and serialised without payloads
(:mod:`polynimbus.snapshot.model`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polynimbus import __version__, capabilities, state
from polynimbus.apply import ApplyResult, Progress
from polynimbus.errors import LabNotFoundError
from polynimbus.intent import Intent, load_intent_text
from polynimbus.orchestrate import desired_lab, intent_yaml, lab_up
from polynimbus.plan import build_plan
from polynimbus.snapshot import store
from polynimbus.snapshot.model import (
    Entry,
    ResourceChange,
    SnapshotDiff,
    diff_documents,
    diff_resources,
    make_document,
    serialise,
)
from polynimbus.snapshot.store import SnapshotUnusableError
from polynimbus.targets.lab import LabTarget, list_lab_namespaces

Step = Callable[[str], None]
"""Called with a short description before each long step (for a spinner)."""


def _nothing(_: str) -> None:
    pass


def lab_state_dir(lab: str, override: Path | None = None) -> Path:
    """The state directory of lab ``lab``: ``override``, else the one its ``up`` noted,
    else the default."""
    if override is not None:
        return state.resolve(lab, override)
    return state.recorded_state_dir(lab) or state.resolve(lab, None)


def current_intent(lab: str, sdir: Path) -> Intent:
    """The intent of lab ``lab``'s last ``up``, as kept in ``sdir``.

    Raises:
        StateError: ``sdir`` is not the lab's state directory.
        LabNotFoundError: no intent is kept there (the lab was never brought up with it).
        IntentError: the kept intent no longer validates.
    """
    if state.peek(sdir, lab) != "ours":
        raise LabNotFoundError(
            f"no state of lab {lab!r} in {sdir}",
            "bring the lab up first (polynimbus up FILE), or give --state-dir its directory",
        )
    text = state.saved_intent(sdir)
    if text is None:
        raise LabNotFoundError(
            f"the lab {lab!r} kept no intent in {sdir}", "run polynimbus up FILE once more"
        )
    return load_intent_text(text, str(sdir / state.INTENT_FILE))


def observe_live(intent: Intent, sdir: Path) -> list[Entry]:
    """What is live for ``intent``'s lab now, as sorted snapshot entries.

    Raises:
        CapabilityError: not root.
        LabNotFoundError: the lab has no namespace on this host.
        KeyFileError: a stored key is unsafe or corrupt.
        ApplyError: reading the lab failed.
    """
    capabilities.require_root("snapshot")
    if not list_lab_namespaces(intent.name):
        raise LabNotFoundError(f"the lab {intent.name!r} is not up", "run: polynimbus up FILE")
    plan = build_plan(intent)
    desired, _ = desired_lab(plan, sdir, dry_run=True)
    actual = LabTarget(state_dir=sdir).observe(plan.name, desired)
    return serialise(actual.values())


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def live_document(lab: str, sdir: Path, step: Step = _nothing) -> dict[str, Any]:
    """The live lab as a snapshot document (name ``live``, version 0; not stored).

    Raises:
        as :func:`current_intent` and :func:`observe_live`.
    """
    intent = current_intent(lab, sdir)
    step(f"reading the live lab {lab!r}")
    live = observe_live(intent, sdir)
    return make_document(
        name="live",
        lab=lab,
        version=0,
        created=_now(),
        tool_version=__version__,
        intent_yaml=intent_yaml(intent),
        plan=build_plan(intent).to_dict(),
        live=live,
    )


def save(
    lab: str, name: str, sdir: Path, force: bool = False, step: Step = _nothing
) -> tuple[dict[str, Any], Path]:
    """Record lab ``lab``'s network state as snapshot ``name``: its intent, plan and live
    resources, with the next version number of the lab.

    Holds the lab's lock while reading and writing (no ``up`` or ``down`` meanwhile).

    Returns:
        the document and the file it was written to (0600, in ``snapshots/``, 0700).

    Raises:
        SnapshotNameError: invalid name.
        SnapshotError: ``name`` exists and not ``force``.
        StateError: another command holds the lab's lock; ``sdir`` is not the lab's.
        LabNotFoundError, CapabilityError, KeyFileError, ApplyError: as
            :func:`live_document`.
    """
    store.check_name(name)
    capabilities.require_root("snapshot save")
    with state.lab_lock(lab):
        if not force:
            store.refuse_existing(sdir, name)
        doc = live_document(lab, sdir, step)
        doc["name"] = name
        doc["version"] = store.next_version(sdir)
        step(f"writing snapshot {name!r}")
        path = store.write(sdir, doc, force=force)
    return doc, path


def describe(doc: dict[str, Any]) -> str:
    """``snapshot 'NAME' (vN, TIME)`` or ``the live lab 'LAB'``."""
    if doc["name"] == "live" and doc["version"] == 0:
        return f"the live lab {doc['lab']!r}"
    return f"snapshot {doc['name']!r} (v{doc['version']}, {doc['created']})"


def diff(lab: str, a: str, b: str | None, sdir: Path, step: Step = _nothing) -> SnapshotDiff:
    """Differences from snapshot ``a`` to snapshot ``b``, or to the live lab when ``b``
    is ``None``. Reads only.

    Raises:
        SnapshotError: no such snapshot.
        SnapshotUnusableError: a snapshot is unreadable or corrupt, the two are of
            different labs, or one is not of lab ``lab``.
        LabNotFoundError, CapabilityError, KeyFileError, ApplyError: reading the live lab
            (``b`` is ``None``).
    """
    da = store.load(sdir, a)
    db = store.load(sdir, b) if b is not None else None
    if db is not None and db["lab"] != da["lab"]:
        raise SnapshotUnusableError(
            f"snapshots {a!r} and {b!r} are of different labs ({da['lab']!r} and "
            f"{db['lab']!r}): there is nothing to compare",
            "compare snapshots of one lab, or a snapshot with its own live lab",
        )
    _own_lab(da, lab)
    if db is None:
        db = live_document(lab, sdir, step)
    return diff_documents(da, db, describe(da), describe(db))


def _own_lab(doc: dict[str, Any], lab: str) -> None:
    """Refuse snapshot ``doc`` when it is not of lab ``lab``.

    Raises:
        SnapshotUnusableError: it is another lab's (copied into this lab's directory, or
            ``--state-dir`` names another lab's).
    """
    if doc["lab"] != lab:
        raise SnapshotUnusableError(
            f"snapshot {doc['name']!r} is of lab {doc['lab']!r}, not {lab!r}",
            f"use it with its own lab: --lab {doc['lab']}",
        )


@dataclass
class RestoreResult:
    """What ``restore`` did and what still differs from the snapshot afterwards.

    Attributes:
        snapshot: the snapshot document restored.
        applied: the apply's result (its changes; a dry run's would-be changes).
        remaining: live resources that still differ from the snapshot (empty: restored
            exactly; always empty for a dry run, which does not check).
        notes: explanations of ``remaining`` (e.g. a WireGuard key rotated since).
    """

    snapshot: dict[str, Any]
    applied: ApplyResult
    remaining: list[ResourceChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """True when the live lab equals the snapshot after the restore."""
        return not self.remaining


def _explain(remaining: list[ResourceChange]) -> list[str]:
    notes = []
    keys = [r for r in remaining if r.kind == "wgconf"]
    if keys:
        where = ", ".join(sorted({f"{r.label} on {r.node}" for r in keys}))
        notes.append(
            f"cannot restore the WireGuard configuration ({where}): it holds keys that "
            "changed since the snapshot (up --rotate-keys, or the lab was taken down and "
            "rebuilt); a snapshot never holds private keys, so the lab keeps its current "
            "keys, and its tunnels work with them"
        )
    if len(keys) < len(remaining):
        notes.append(
            "other resources differ from the snapshot after the restore: they are not "
            "set by the intent alone (run 'polynimbus verify' to see whether it matters)"
        )
    return notes


def restore(
    lab: str,
    name: str,
    sdir: Path,
    progress: Progress | None = None,
    dry_run: bool = False,
    step: Step = _nothing,
) -> RestoreResult:
    """Converge lab ``lab`` back to snapshot ``name``: apply the snapshot's intent (only
    what differs changes), then compare the live lab with the snapshot's live state.

    Raises:
        SnapshotError: no such snapshot.
        SnapshotUnusableError: it is unreadable or corrupt, or it is another lab's.
        IntentError: the snapshot's intent does not validate any more.
        CapabilityError, StateError, KeyFileError, ApplyError: as
            :func:`polynimbus.orchestrate.lab_up`.
    """
    doc = store.load(sdir, name)
    _own_lab(doc, lab)
    intent = load_intent_text(doc["intent"], f"snapshot {name}")
    if intent.name != lab:
        raise SnapshotUnusableError(f"snapshot {name!r} holds the intent of lab {intent.name!r}")
    step(f"converging lab {lab!r} to snapshot {name!r}")
    applied = lab_up(intent, sdir, progress=progress, dry_run=dry_run)
    result = RestoreResult(snapshot=doc, applied=applied)
    if dry_run:
        return result
    step("comparing the live lab with the snapshot")
    live = observe_live(intent, sdir)
    result.remaining = diff_resources(doc["live"], live)
    result.notes = _explain(result.remaining)
    return result


__all__ = [
    "RestoreResult",
    "current_intent",
    "diff",
    "lab_state_dir",
    "live_document",
    "observe_live",
    "restore",
    "save",
]
