"""Snapshot documents and their differences: pure functions, no I/O.

A snapshot is one JSON document (schema :data:`SCHEMA`)::

    {
      "schema": 1, "tool": "polynimbus", "name": "before", "lab": "demo",
      "version": 3,                         # per lab, increasing with every save
      "created": "2025-01-31T12:00:00Z",    # UTC
      "polynimbus": "0.3.0",
      "counts": {"sites": 2, "hosts": 3, "tenants": 0, "networks": 0,
                 "nodes": 6, "resources": 120},
      "intent": "name: demo\\n...",          # YAML text, as `up` keeps it
      "plan": {...},                        # the `plan --json` document
      "live": [                             # what was live, sorted by (node, kind, id)
        {"node": "pn.demo.a.gateway", "kind": "route", "id": [4, 254, "10.2.0.0/24", 0],
         "label": "route 10.2.0.0/24", "spec": {"dev": "wg...", "via": null, ...}},
        ...
      ]
    }

``live`` holds each resource's identity and compared fields (:meth:`polynimbus.node.Item.spec`)
only: payload fields (a WireGuard configuration with its private key, an nftables source
text) are never part of a spec, so never part of a snapshot. A WireGuard configuration is
represented by its digest (16 hex digits of a SHA-256 of its meaning), which identifies it
without revealing any key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from polynimbus.resources import Resource

SCHEMA = 1
"""Version of the snapshot document."""

Entry = dict[str, Any]
"""One live resource as a snapshot holds it: ``{"node", "kind", "id", "label", "spec"}``."""

_LARGE_FIELDS = frozenset({"canonical"})
"""Compared fields too large to print: their difference is shown as digests."""


# ---------------------------------------------------------------------------- serialise
def plain(value: Any) -> Any:
    """``value`` as JSON data: dataclasses become dicts, tuples lists; scalars stay."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def entry_of(r: Resource) -> Entry:
    """One resource as a snapshot entry (identity, label and compared fields; no payload)."""
    return {
        "node": r.node,
        "kind": r.kind,
        "id": plain(r.item.ident()),
        "label": r.describe().removesuffix(f" on {r.node}"),
        "spec": {k: plain(v) for k, v in r.spec},
    }


def entry_key(e: Entry) -> tuple[str, str, str]:
    """``(node, kind, id as JSON)``: unique within one snapshot, and its sort order."""
    return (e["node"], e["kind"], json.dumps(e["id"], sort_keys=True))


def serialise(resources: Iterable[Resource]) -> list[Entry]:
    """``resources`` as snapshot entries in a stable order (node, kind, identity).

    Round-tripped through JSON, so an entry compares equal to what a loaded snapshot holds.
    """
    entries = [entry_of(r) for r in resources]
    entries.sort(key=entry_key)
    out: list[Entry] = json.loads(json.dumps(entries))
    return out


def _mapping(value: Any) -> dict[Any, Any]:
    """``value`` when it is a mapping, else ``{}`` (a hand-edited document's odd shapes)."""
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[Any]:
    """``value`` when it is a list, else ``[]``."""
    return value if isinstance(value, list) else []


def intent_counts(intent_yaml: str) -> dict[str, int]:
    """``{"sites", "hosts", "tenants", "networks"}`` counted in an intent's YAML text
    (sections of another shape than the schema's count as empty)."""
    data = _mapping(yaml.safe_load(intent_yaml))
    sites = _items(data.get("sites"))
    tenants = _items(data.get("tenants"))
    return {
        "sites": len(sites),
        "hosts": sum(len(_items(_mapping(s).get("hosts"))) for s in sites),
        "tenants": len(tenants),
        "networks": sum(len(_items(_mapping(t).get("networks"))) for t in tenants),
    }


def make_document(
    *,
    name: str,
    lab: str,
    version: int,
    created: str,
    tool_version: str,
    intent_yaml: str,
    plan: Mapping[str, Any],
    live: list[Entry],
) -> dict[str, Any]:
    """A snapshot document (module docstring) from its parts; ``live`` already serialised."""
    counts = intent_counts(intent_yaml)
    counts["nodes"] = sum(1 for e in live if e["kind"] == "netns")
    counts["resources"] = len(live)
    return {
        "schema": SCHEMA,
        "tool": "polynimbus",
        "name": name,
        "lab": lab,
        "version": version,
        "created": created,
        "polynimbus": tool_version,
        "counts": counts,
        "intent": intent_yaml,
        "plan": dict(plan),
        "live": live,
    }


def check_document(doc: Any) -> str | None:
    """What is wrong with a loaded snapshot document, or ``None`` when it is usable.

    Checks the shape every reader relies on, so that a corrupt or hand-edited file is
    refused with a reason instead of failing half-way: the top-level fields and their
    types; ``intent`` is YAML text of a mapping whose ``name`` (when given) is the
    snapshot's lab; ``plan`` is a mapping; every ``live`` entry is an object with a string
    ``node`` and ``kind``, a list ``id``, a mapping ``spec`` (and a string ``label`` when
    present), and no entry occurs twice.
    """
    if not isinstance(doc, dict) or doc.get("tool") != "polynimbus":
        return "not a polynimbus snapshot"
    if doc.get("schema") != SCHEMA:
        return f"snapshot schema {doc.get('schema')!r}, this polynimbus reads {SCHEMA}"
    for k, t in (
        ("name", str),
        ("lab", str),
        ("version", int),
        ("created", str),
        ("intent", str),
        ("plan", dict),
        ("live", list),
        ("counts", dict),
    ):
        if not isinstance(doc.get(k), t) or isinstance(doc.get(k), bool):
            return f"field {k!r} is missing or not a {t.__name__}"
    problem = _check_intent(doc["intent"], doc["lab"])
    if problem is not None:
        return problem
    seen: set[tuple[str, str, str]] = set()
    for i, e in enumerate(doc["live"]):
        problem = _check_entry(e)
        if problem is not None:
            where = f"live[{i}]"
            if isinstance(e, dict) and isinstance(e.get("kind"), str):
                where += f" ({e['kind']} on {e.get('node')})"
            return f"{where} {problem}"
        key = entry_key(e)
        if key in seen:
            return f"live[{i}] ({e['kind']} {e['id']} on {e['node']}) occurs twice"
        seen.add(key)
    return None


def _check_intent(text: str, lab: str) -> str | None:
    """What is wrong with a snapshot's ``intent`` text, or ``None``.

    Whatever the YAML loader raises is a problem, never an exception: a YAML error, a
    ``RecursionError`` (nesting too deep: ``"[" * 20000``) and the ``ValueError`` of a
    value it cannot construct (``2020-99-99``, ``!!int 0x``).
    """
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        return "field 'intent' is not YAML: it is nested too deeply"
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        return f"field 'intent' is not YAML{where}: {first}"
    if data is None:
        return None
    if not isinstance(data, dict):
        return f"field 'intent' is not a YAML mapping (it is a {type(data).__name__})"
    name = data.get("name")
    if name is not None and name != lab:
        return f"field 'intent' is the intent of lab {name!r}, the snapshot says lab {lab!r}"
    return None


def _check_entry(e: Any) -> str | None:
    """What is wrong with one ``live`` entry (its index is added by the caller)."""
    if not isinstance(e, dict):
        return f"is not a resource object (it is a {type(e).__name__})"
    for k, t in (("node", str), ("kind", str), ("id", list), ("spec", dict)):
        if not isinstance(e.get(k), t):
            what = "missing" if k not in e else f"a {type(e[k]).__name__}"
            return f"field {k!r} is {what}, not a {t.__name__}"
    if "label" in e and not isinstance(e["label"], str):
        return f"field 'label' is a {type(e['label']).__name__}, not a str"
    try:
        entry_key(e)
    except (TypeError, ValueError) as exc:  # pragma: no cover - JSON data always dumps
        return f"field 'id' cannot be compared: {exc}"
    return None


# ---------------------------------------------------------------------------- differences
@dataclass
class FieldChange:
    """One compared field that differs: its value in A and in B (``None``: absent)."""

    field: str
    a: Any
    b: Any

    def text(self) -> str:
        """E.g. ``mtu 1420 -> 1400``; large fields as ``content differs``."""
        if self.field in _LARGE_FIELDS:
            return f"{self.field} differs ({_short(self.a)} -> {_short(self.b)})"
        return f"{self.field} {self.a!r} -> {self.b!r}"

    def to_dict(self) -> dict[str, Any]:
        """``{"field", "a", "b"}`` (large fields as short digests)."""
        if self.field in _LARGE_FIELDS:
            return {"field": self.field, "a": _short(self.a), "b": _short(self.b)}
        return {"field": self.field, "a": self.a, "b": self.b}


def _short(v: Any) -> str | None:
    if v is None:
        return None
    return "sha256:" + hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class ResourceChange:
    """A resource present on one side only (``added``: only in B; ``removed``: only in A)
    or on both with other compared fields (``changed``, with ``fields``)."""

    change: str
    node: str
    kind: str
    id: Any
    label: str
    fields: list[FieldChange] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"change", "node", "kind", "id", "label", "fields"}``."""
        return {
            "change": self.change,
            "node": self.node,
            "kind": self.kind,
            "id": self.id,
            "label": self.label,
            "fields": [f.to_dict() for f in self.fields],
        }


@dataclass
class IntentChange:
    """An intent object added, removed or changed between A and B.

    Attributes:
        what: ``overlay``, ``site``, ``host``, ``service``, ``chain``, ``tenant``,
            ``network`` or ``field`` (a top-level field of the intent).
        name: ``SITE``, ``SITE/HOST``, ``TENANT/NETWORK``...
        change: ``added``, ``removed`` or ``changed``.
        fields: for ``changed``, the fields that differ.
    """

    what: str
    name: str
    change: str
    fields: list[FieldChange] = field(default_factory=list)

    def text(self) -> str:
        """E.g. ``+ host b/h2`` or ``~ site a: region 'x' -> 'y'``."""
        sign = {"added": "+", "removed": "-", "changed": "~"}[self.change]
        detail = ": " + ", ".join(f.text() for f in self.fields) if self.fields else ""
        return f"{sign} {self.what} {self.name}{detail}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"what", "name", "change", "fields"}``."""
        return {
            "what": self.what,
            "name": self.name,
            "change": self.change,
            "fields": [f.to_dict() for f in self.fields],
        }


@dataclass
class SnapshotDiff:
    """The differences from A to B (B the newer side, e.g. the live lab).

    Attributes:
        a, b: short descriptions of both sides (e.g. ``snapshot 'before' (v1)``).
        intent: intent objects added, removed or changed.
        intent_unified: unified diff of the two intents' YAML texts (lines).
        resources: live resources added, removed or changed, sorted by node.
    """

    a: str
    b: str
    intent: list[IntentChange] = field(default_factory=list)
    intent_unified: list[str] = field(default_factory=list)
    resources: list[ResourceChange] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """True when neither the intents nor the live resources differ."""
        return not (self.intent or self.intent_unified or self.resources)

    def counts(self) -> dict[str, int]:
        """Resources ``added``, ``removed`` and ``changed``."""
        out = {"added": 0, "removed": 0, "changed": 0}
        for r in self.resources:
            out[r.change] += 1
        return out

    def by_node(self) -> dict[str, list[ResourceChange]]:
        """``resources`` grouped by node, nodes sorted."""
        out: dict[str, list[ResourceChange]] = {}
        for r in self.resources:
            out.setdefault(r.node, []).append(r)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        """``{"a", "b", "identical", "intent": {"changes", "unified"}, "resources":
        {"counts", "changes"}}``."""
        return {
            "a": self.a,
            "b": self.b,
            "identical": self.identical,
            "intent": {
                "changes": [c.to_dict() for c in self.intent],
                "unified": self.intent_unified,
            },
            "resources": {
                "counts": self.counts(),
                "changes": [r.to_dict() for r in self.resources],
            },
        }


def _field_changes(
    a: Mapping[str, Any], b: Mapping[str, Any], skip: Iterable[str] = ()
) -> list[FieldChange]:
    left = set(skip)
    return [
        FieldChange(k, a.get(k), b.get(k))
        for k in sorted((set(a) | set(b)) - left, key=str)
        if a.get(k) != b.get(k)
    ]


def diff_resources(a: list[Entry], b: list[Entry]) -> list[ResourceChange]:
    """Resources only in ``a`` (``removed``), only in ``b`` (``added``), or in both with
    other compared fields (``changed``), sorted by (node, kind, identity).

    Raises:
        KeyError: an entry lacks ``node``, ``kind``, ``id`` or ``spec``.
    """
    left = {entry_key(e): e for e in a}
    right = {entry_key(e): e for e in b}
    out: list[ResourceChange] = []
    for k in sorted(set(left) | set(right)):
        ea, eb = left.get(k), right.get(k)
        e = eb if eb is not None else ea
        assert e is not None
        label = e.get("label") or f"{e['kind']} {e['id']}"
        if ea is None:
            out.append(ResourceChange("added", e["node"], e["kind"], e["id"], label))
        elif eb is None:
            out.append(ResourceChange("removed", e["node"], e["kind"], e["id"], label))
        elif ea["spec"] != eb["spec"]:
            fields = _field_changes(ea["spec"], eb["spec"])
            out.append(ResourceChange("changed", e["node"], e["kind"], e["id"], label, fields))
    return out


def _hosts(site: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for h in _items(site.get("hosts")):
        h = {"name": h} if isinstance(h, str) else h
        if isinstance(h, dict):
            out[f"{site.get('name')}/{h.get('name')}"] = h
    return out


def _named(items: Any) -> dict[str, Any]:
    return {str(i.get("name")): i for i in _items(items) if isinstance(i, dict)}


def _compare(
    what: str, a: Mapping[str, Any], b: Mapping[str, Any], skip: Iterable[str] = ()
) -> list[IntentChange]:
    out = []
    for name in sorted(set(a) | set(b), key=str):
        if name not in a:
            out.append(IntentChange(what, str(name), "added"))
        elif name not in b:
            out.append(IntentChange(what, str(name), "removed"))
        else:
            fields = _field_changes(_mapping(a[name]), _mapping(b[name]), skip)
            if fields:
                out.append(IntentChange(what, str(name), "changed", fields))
    return out


def diff_intents(a_yaml: str, b_yaml: str) -> list[IntentChange]:
    """Structured differences between two intents' YAML texts: top-level fields, the
    overlay, sites, hosts (``SITE/HOST``), services, chains, tenants and networks
    (``TENANT/NETWORK``). A site's or tenant's changed hosts or networks are listed as
    their own objects, not as a changed field of the site or tenant. A text or section of
    another shape than the schema's counts as empty here (the unified diff still shows it).

    Raises:
        yaml.YAMLError: a text is not YAML.
    """
    a = _mapping(yaml.safe_load(a_yaml))
    b = _mapping(yaml.safe_load(b_yaml))
    out: list[IntentChange] = []
    collections = ("overlay", "sites", "services", "chains", "tenants")
    top = _field_changes(a, b, skip=collections)
    out += [IntentChange("field", f.field, "changed", [f]) for f in top]
    ov = _field_changes(_mapping(a.get("overlay")), _mapping(b.get("overlay")))
    if ov:
        out.append(IntentChange("overlay", "", "changed", ov))
    sa, sb = _named(a.get("sites")), _named(b.get("sites"))
    out += _compare("site", sa, sb, skip=("hosts",))
    ha = {k: v for s in sa.values() for k, v in _hosts(s).items()}
    hb = {k: v for s in sb.values() for k, v in _hosts(s).items()}
    out += _compare("host", ha, hb)
    out += _compare("service", _named(a.get("services")), _named(b.get("services")))
    out += _compare("chain", _named(a.get("chains")), _named(b.get("chains")))
    ta, tb = _named(a.get("tenants")), _named(b.get("tenants"))
    out += _compare("tenant", ta, tb, skip=("networks",))
    na = {f"{t}/{n}": v for t, td in ta.items() for n, v in _named(td.get("networks")).items()}
    nb = {f"{t}/{n}": v for t, td in tb.items() for n, v in _named(td.get("networks")).items()}
    out += _compare("network", na, nb)
    return out


def unified(a_yaml: str, b_yaml: str, a_name: str, b_name: str) -> list[str]:
    """Unified diff lines (no trailing newlines) of two YAML texts; empty when equal."""
    return [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            a_yaml.splitlines(keepends=True),
            b_yaml.splitlines(keepends=True),
            fromfile=a_name,
            tofile=b_name,
        )
    ]


def _without_comments(text: str) -> str:
    """``text`` without its comment lines, unless that changes its meaning (a ``#`` line
    inside a block scalar): then ``text`` as it is."""
    stripped = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    try:
        if yaml.safe_load(stripped) == yaml.safe_load(text):
            return stripped
    except yaml.YAMLError:
        pass
    return text


def diff_documents(
    a: Mapping[str, Any], b: Mapping[str, Any], a_name: str, b_name: str
) -> SnapshotDiff:
    """The differences from snapshot document ``a`` to ``b`` (either may describe the
    live lab: same shape, see :func:`make_document`).

    Comment lines of the intents' YAML are ignored; their data is compared. Both
    documents are expected to pass :func:`check_document`.

    Raises:
        KeyError: a document lacks ``intent`` or ``live``.
        yaml.YAMLError: an intent is not YAML.
    """
    ia, ib = _without_comments(a["intent"]), _without_comments(b["intent"])
    same_data = (yaml.safe_load(ia) or {}) == (yaml.safe_load(ib) or {})
    return SnapshotDiff(
        a=a_name,
        b=b_name,
        intent=diff_intents(ia, ib),
        intent_unified=[] if same_data else unified(ia, ib, a_name, b_name),
        resources=diff_resources(a["live"], b["live"]),
    )
