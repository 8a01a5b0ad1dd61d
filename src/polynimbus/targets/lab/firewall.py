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
from collections.abc import Iterable
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


BATCH_TABLE_PREFIX = "pncanon"
"""Name prefix of the tables loaded side by side by :func:`canonicalise_all`."""


def canonicalise_all(items: Iterable[NftTable]) -> dict[NftTable, NftTable]:
    """Each of ``items`` with its ``canonical`` field, by item.

    All tables are loaded together into one throw-away namespace, each renamed
    ``pncanonN`` (tables of one name would collide), read back with one
    ``nft -j list ruleset`` and renamed back: two ``nft`` runs in all instead of two per
    table (a plan of 100 tenants has about 110 distinct tables; about 10 ms each). The
    result equals :func:`with_canonical`'s, which remains the fallback for a ruleset that
    does not start with its own ``table`` line, or when the batch is refused (it then
    names the culprit).

    Raises:
        ApplyError: nft rejects a ruleset (a bug in its renderer).
    """
    todo = list(dict.fromkeys(items))
    done: dict[NftTable, NftTable] = {}
    batch: dict[str, NftTable] = {}
    texts = []
    for item in todo:
        header = f"table {item.family} {item.table} {{"
        if item.ruleset.startswith(header):
            alias = f"{BATCH_TABLE_PREFIX}{len(batch)}"
            batch[alias] = item
            texts.append(f"table {item.family} {alias} {{" + item.ruleset[len(header) :])
    if len(batch) > 1:
        script = "nft -f - && nft -j list ruleset"
        res = netns.run(["unshare", "--net", "sh", "-c", script], "\n".join(texts) + "\n")
        if res.returncode == 0:
            tables = _tables_of(res.stdout)
            for alias, item in batch.items():
                entries = tables.get((item.family, alias))
                if entries is not None:
                    done[item] = NftTable(
                        item.family,
                        item.table,
                        item.ruleset,
                        canonical(json.dumps({"nftables": _renamed(entries, item.table)})),
                    )
    for item in todo:
        if item not in done:
            done[item] = with_canonical(item)
    return done


def _renamed(entries: list[Any], table: str) -> list[Any]:
    """``nft -j`` entries of one table, given the table's name ``table`` (the name field
    of its ``table`` entry, the ``table`` field of the others)."""
    out = []
    for entry in entries:
        ((kind, body),) = entry.items()
        key = "name" if kind == "table" else "table"
        out.append({kind: {**body, key: table}})
    return out


def owned(name: str) -> bool:
    """Whether a table called ``name`` is polynimbus's (``polynimbus`` or ``pn-*``)."""
    return name == "polynimbus" or name.startswith("pn-")


def observe_owned(ns: str) -> list[NftTable]:
    """Every table of polynimbus's (:func:`owned`) live in ``ns``, with one ``nft`` run:
    also those the plan no longer has (a table left behind is then deleted by ``up``).

    ``nft`` is started from a thread that entered ``ns`` (a child process inherits its
    creator's namespace), which spares the ``ip netns exec`` process."""
    res = netns.in_netns(ns, lambda: netns.run(["nft", "-j", "list", "ruleset"]))
    if res.returncode != 0:
        return []
    return [
        NftTable(family, table, "", canonical(json.dumps({"nftables": items})))
        for (family, table), items in sorted(_tables_of(res.stdout).items())
        if owned(table)
    ]


def _tables_of(listing: str) -> dict[tuple[str, str], list[Any]]:
    """The entries of ``nft -j list ruleset`` output by table ``(family, name)``, in their
    order (an unreadable listing has none)."""
    try:
        entries = json.loads(listing).get("nftables", [])
    except ValueError:
        return {}
    tables: dict[tuple[str, str], list[Any]] = {}
    for entry in entries:
        if "metainfo" in entry:
            continue
        ((kind, body),) = entry.items()
        name = body.get("name") if kind == "table" else body.get("table")
        if isinstance(name, str):
            tables.setdefault((body.get("family", ""), name), []).append(entry)
    return tables


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
