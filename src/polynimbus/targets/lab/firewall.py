"""nftables tables of lab nodes, compared structurally.

The live table is read as JSON (``nft -j list table``); the desired text is loaded into a
throw-away network namespace (``unshare --net``) and read back the same way, so both sides
are in the kernel's own canonical form. Rule handles and the elements of timed sets (which
``verify`` adds for a minute) are left out of the comparison. A table changed by hand, or
flushed, therefore differs and is reloaded by ``up``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from polynimbus.errors import ApplyError
from polynimbus.node import NftTable
from polynimbus.targets.lab import netns


def canonical(listing: str) -> str:
    """The comparable form of ``nft -j list table`` output (a JSON text).

    Raises:
        ValueError: not nft JSON.
    """
    data = json.loads(listing)
    items = []
    for entry in data.get("nftables", []):
        if "metainfo" in entry:
            continue
        ((kind, body),) = entry.items()
        body = {k: v for k, v in body.items() if k != "handle"}
        if kind == "set" and "timeout" in body.get("flags", []):
            body.pop("elem", None)
        items.append({kind: _zero_counters(body)})
    return json.dumps(items, sort_keys=True)


def _zero_counters(value: Any) -> Any:
    """``value`` with every anonymous counter's packets and bytes set to 0 (a counter's
    reading is state, not configuration)."""
    if isinstance(value, dict):
        if set(value) == {"counter"} and isinstance(value["counter"], dict):
            return {"counter": {"packets": 0, "bytes": 0}}
        return {k: _zero_counters(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_zero_counters(v) for v in value]
    return value


@functools.lru_cache(maxsize=64)
def canonical_of_text(family: str, table: str, ruleset: str) -> str:
    """The canonical form of a ruleset text, as the kernel would hold it.

    Raises:
        ApplyError: nft rejects the ruleset (a bug in its renderer).
    """
    script = f"nft -f - && nft -j list table {family} {table}"
    res = netns.run(["unshare", "--net", "sh", "-c", script], ruleset)
    if res.returncode != 0:
        raise ApplyError(f"nft rejects the rendered table {family} {table}: {res.stderr.strip()}")
    return canonical(res.stdout)


def with_canonical(item: NftTable) -> NftTable:
    """``item`` with its ``canonical`` field computed from its ruleset."""
    return NftTable(
        item.family,
        item.table,
        item.ruleset,
        canonical_of_text(item.family, item.table, item.ruleset),
    )


def owned(name: str) -> bool:
    """Whether a table called ``name`` is polynimbus's (``polynimbus`` or ``pn-*``)."""
    return name == "polynimbus" or name.startswith("pn-")


def observe_owned(ns: str) -> list[NftTable]:
    """Every table of polynimbus's (:func:`owned`) live in ``ns``, with one ``nft`` run:
    also those the plan no longer has (a table left behind is then deleted by ``up``)."""
    res = netns.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"])
    if res.returncode != 0:
        return []
    try:
        entries = json.loads(res.stdout).get("nftables", [])
    except ValueError:
        return []
    tables: dict[tuple[str, str], list[Any]] = {}
    for entry in entries:
        if "metainfo" in entry:
            continue
        ((kind, body),) = entry.items()
        name = body.get("name") if kind == "table" else body.get("table")
        if isinstance(name, str) and owned(name):
            tables.setdefault((body.get("family", ""), name), []).append(entry)
    return [
        NftTable(family, table, "", canonical(json.dumps({"nftables": items})))
        for (family, table), items in sorted(tables.items())
    ]


def create(ns: str, item: NftTable) -> None:
    """Load ``item`` whole in one transaction (make sure the table exists, delete it, load).

    Raises:
        ApplyError: nft refused the ruleset.
    """
    text = f"table {item.family} {item.table}\ndelete table {item.family} {item.table}\n"
    netns.ns_exec(ns, ["nft", "-f", "-"], text + item.ruleset, what="loading the nftables table")


def delete(ns: str, item: NftTable) -> None:
    """Remove the table (absent is fine)."""
    netns.run(["ip", "netns", "exec", ns, "nft", "delete", "table", item.family, item.table])
