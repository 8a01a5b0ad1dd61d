"""The lab target reads each namespace's own kernel state, whichever thread (or worker
process) does the reading: never the host's, never another namespace's (needs root).

Each namespace gets a bridge, an address and a polynimbus route that only it has;
neighbours are joined by veth pairs, so peers are named through namespace ids too.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from polynimbus.node import Address, Link, Route
from polynimbus.targets import lab
from polynimbus.targets.lab import LabTarget, netlink, netns

LAB = f"nsread{os.getpid() % 100000}"
COUNT = 12


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


@pytest.fixture
def spaces() -> Iterator[list[str]]:
    made = [f"pn.{LAB}.s{i:02d}.n" for i in range(COUNT)]
    try:
        for i, ns in enumerate(made):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "add", f"d{i}", "type", "bridge")
            ip("-n", ns, "link", "set", f"d{i}", "up")
            ip("-n", ns, "addr", "add", f"10.{i}.0.1/24", "dev", f"d{i}")
            ip("-n", ns, "route", "add", f"10.200.{i}.0/24", "dev", f"d{i}", "proto", "250")
        for i in range(0, COUNT - 1, 2):  # s00-s01, s02-s03, ...: veth pairs
            ip("-n", made[i], "link", "add", f"p{i}", "type", "veth", "peer", "name", f"q{i}")
            ip("-n", made[i], "link", "set", f"q{i}", "netns", made[i + 1])
        yield made
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_ipr_reads_its_namespace_from_any_thread(spaces: list[str]) -> None:
    """A connection made for a namespace from any thread reads that namespace, not the
    thread's own (its socket is made by a short-lived thread that entered it)."""

    def names(ns: str) -> set[str]:
        with netns.ipr(ns) as conn:
            return {link.get("ifname") for link in conn.get_links()}

    for _ in range(3):
        with ThreadPoolExecutor(max_workers=4) as pool:
            seen = dict(zip(spaces, pool.map(names, spaces), strict=True))
        for i, ns in enumerate(spaces):
            assert f"d{i}" in seen[ns]
            assert not any(f"d{j}" in seen[ns] for j in range(COUNT) if j != i)


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_observe_reads_each_namespace(
    spaces: list[str], tmp_path: Path, processes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target's observe (threads or worker processes alike) puts every namespace's
    links, addresses and routes on that namespace, and names veth peers correctly."""
    monkeypatch.setattr(lab, "PROCESS_MIN_NAMESPACES", 2 if processes else 10**6)
    found = LabTarget(state_dir=tmp_path).observe(LAB, [])
    by_node: dict[str, set[object]] = {ns: set() for ns in spaces}
    for r in found.values():
        assert r.node in by_node, f"{r.describe()} is on a namespace of no lab of the test"
        by_node[r.node].add(r.item)
    for i, ns in enumerate(spaces):
        items = by_node[ns]
        links = {it.name for it in items if isinstance(it, Link)}
        assert f"d{i}" in links
        assert not {f"d{j}" for j in range(COUNT) if j != i} & links, (ns, links)
        assert Address(f"d{i}", f"10.{i}.0.1/24") in items
        routes = {it.dst for it in items if isinstance(it, Route)}
        assert routes == {f"10.200.{i}.0/24"}, (ns, routes)
    for i in range(0, COUNT - 1, 2):
        veths = [
            it
            for it in by_node[spaces[i]] | by_node[spaces[i + 1]]
            if isinstance(it, Link) and it.type == "veth"
        ]
        assert len(veths) == 1, veths  # a pair is reported once
        assert veths[0].peer is not None
        assert {veths[0].name, veths[0].peer.name} == {f"p{i}", f"q{i}"}
        assert veths[0].peer.node in (spaces[i], spaces[i + 1])


def test_observe_node_in_parallel_threads(spaces: list[str]) -> None:
    """Reading many namespaces at once from a thread pool mixes nothing up."""

    def read(ns: str) -> set[str]:
        out: dict[object, object] = {}
        node = netlink.observe_node(ns, spaces, {}, out)  # type: ignore[arg-type]
        return set(node.info)

    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = list(pool.map(read, spaces * 3))
    for k, names in enumerate(seen):
        i = k % COUNT
        assert f"d{i}" in names
        assert not {f"d{j}" for j in range(COUNT) if j != i} & names
