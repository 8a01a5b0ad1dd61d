"""The emulated multi-cloud lab target: every node a network namespace on this host.

It applies node model items (:mod:`polynimbus.node`) placed on namespaces, and reads
them back in the same shapes. It knows nothing of sites or gateways: the layout is the
scaffold's (:mod:`polynimbus.render.lab`). One module per concern:

- :mod:`.netns`: namespaces, running commands and code inside one;
- :mod:`.netlink`: links, addresses, routes, rules, FDB entries, qdiscs (pyroute2);
- :mod:`.sysctl`: kernel parameters;
- :mod:`.firewall`: nftables tables, compared structurally;
- :mod:`.wireguard`: WireGuard configuration;
- :mod:`.processes`: long-running daemons (``wireguard-go``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pyroute2 import NetlinkError

from polynimbus import capabilities, names, procs
from polynimbus.errors import ApplyError, PolynimbusError
from polynimbus.node import (
    Address,
    FdbEntry,
    Item,
    Link,
    Netns,
    NftTable,
    Process,
    Qdisc,
    Route,
    Rule,
    Sysctl,
    TrafficClass,
    TunnelSource,
    WireGuardConfig,
)
from polynimbus.resources import Key, Resource
from polynimbus.targets.base import TARGETS
from polynimbus.targets.lab import firewall, netlink, netns, processes, srv6, sysctl, wireguard
from polynimbus.targets.lab.netns import list_lab_namespaces, list_labs, ns_exec
from polynimbus.targets.lab.wireguard import WG_SOCKET_DIR

__all__ = ["WG_SOCKET_DIR", "LabTarget", "list_lab_namespaces", "list_labs", "ns_exec"]

RETRY_HINT = "run up again to retry; polynimbus down removes the lab"
WORKERS = 8
"""Threads for reads and commands that mostly wait (subprocesses, the kernel)."""
PROCESS_MIN_NAMESPACES = 48
"""From this many namespaces on, observe parses netlink in worker processes."""
CHUNKS_PER_PROCESS = 4
"""Pieces of work per worker process (balance against per-piece overhead)."""


def _errors_as_apply(what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; netlink and OS errors become :class:`ApplyError` mentioning ``what``."""
    try:
        return fn()
    except PolynimbusError:
        raise
    except NetlinkError as exc:
        text = exc.args[-1] if exc.args else str(exc)
        raise ApplyError(f"{what}: {text} (netlink error {exc.code})", RETRY_HINT) from None
    except OSError as exc:
        raise ApplyError(f"{what}: {exc.strerror or exc}", RETRY_HINT) from None


def _planned_peers(desired: Sequence[Resource]) -> dict[str, list[str]]:
    """The namespaces each namespace's links lead to in ``desired`` (veth peers both ways,
    VXLAN underlays): where observe looks first to name a link's other end."""
    peers: dict[str, list[str]] = {}
    for r in desired:
        item = r.item
        if not isinstance(item, Link):
            continue
        if item.peer is not None:
            peers.setdefault(r.node, []).append(item.peer.node)
            peers.setdefault(item.peer.node, []).append(r.node)
        if item.vxlan is not None and item.vxlan.underlay:
            peers.setdefault(r.node, []).append(item.vxlan.underlay)
    return peers


class _NetlinkReads:
    """The netlink reads of observe (:func:`netlink.observe_nodes`), in worker processes
    when there are many namespaces, else in threads; a context manager.

    Parsing netlink messages is pure Python, so threads share one core (the GIL): from
    :data:`PROCESS_MIN_NAMESPACES` namespaces on, the reads are split over one forked
    worker per core (about 7 ms of parsing per namespace; forking a worker costs about
    10 ms). The workers are forked on entry, before the caller starts threads of its own;
    they only read netlink and hand back plain data (frozen dataclasses).
    """

    def __init__(self, jobs: list[netlink.NodeRead], spaces: list[str]) -> None:
        self.jobs = jobs
        self.spaces = spaces
        cores = os.cpu_count() or 1
        self.processes = cores if cores > 1 and len(jobs) >= PROCESS_MIN_NAMESPACES else 0
        self.pool: ProcessPoolExecutor | ThreadPoolExecutor | None = None
        self.futures: list[Future[list[tuple[netlink.NodeLinks, dict[Key, Resource]]]]] = []

    def __enter__(self) -> _NetlinkReads:
        if self.processes:
            self.pool = ProcessPoolExecutor(self.processes, mp_context=get_context("fork"))
            size = -(-len(self.jobs) // (self.processes * CHUNKS_PER_PROCESS))
        else:
            self.pool = ThreadPoolExecutor(max_workers=WORKERS)
            size = 1
        for i in range(0, len(self.jobs), size):
            chunk = self.jobs[i : i + size]
            self.futures.append(self.pool.submit(netlink.observe_nodes, chunk, self.spaces))
        return self

    def results(self) -> Iterator[tuple[netlink.NodeLinks, dict[Key, Resource]]]:
        """Each namespace's links and what else was found there, in the jobs' order."""
        for f in self.futures:
            yield from f.result()

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@TARGETS.register("lab")
class LabTarget:
    """Namespaces, veth, bridges, tunnels, firewalls and daemons on this host.

    Args:
        state_dir: the lab's state directory (daemon logs go to ``run/`` in it).
    """

    def __init__(self, state_dir: Path, **_: Any) -> None:
        self.state_dir = state_dir

    # ------------------------------------------------------------------ observe
    def canonicalise(self, desired: Sequence[Resource]) -> list[Resource]:
        """``desired`` with the fields only the target can compute filled in (the
        kernel's form of each nftables table), and without what this host cannot do
        (``wireguard-go``'s socket buffers without :func:`capabilities.take_fds`)."""
        done = firewall.canonicalise_all(r.item for r in desired if isinstance(r.item, NftTable))
        sizable = capabilities.take_fds()
        out = []
        for r in desired:
            if isinstance(r.item, NftTable):
                r = Resource(r.node, done[r.item])
            elif isinstance(r.item, WireGuardConfig) and r.item.socket_buffer and not sizable:
                # wireguard-go's sockets cannot be reached here: they keep their size
                r = Resource(r.node, dataclasses.replace(r.item, socket_buffer=None))
            out.append(r)
        return out

    def observe(
        self, lab: str, desired: Sequence[Resource], nodes: set[str] | None = None
    ) -> dict[Key, Resource]:
        """What exists for ``lab``: namespaces, links, addresses, routes and rules of
        polynimbus (any table, IPv4 and IPv6), FDB entries, root qdiscs, daemons, and for
        the nodes where ``desired`` has them, sysctls, WireGuard configurations, SRv6
        tunnel sources and every nftables table of polynimbus's (``polynimbus``, ``pn-*``:
        also one the plan no longer has, so that ``up`` removes it). Only the namespaces
        in ``nodes``, when given (veth peers are named whatever namespace they are in).

        Raises:
            ApplyError: netlink or a command failed while reading.
        """
        return _errors_as_apply(
            f"cannot read the lab {lab!r}", lambda: self._observe(lab, desired, nodes)
        )

    def _observe(
        self, lab: str, desired: Sequence[Resource], nodes: set[str] | None = None
    ) -> dict[Key, Resource]:
        every = list_lab_namespaces(lab)
        spaces = every if nodes is None else [ns for ns in every if ns in nodes]
        out: dict[Key, Resource] = {}
        for ns in spaces:
            r = Resource(ns, Netns())
            out[r.key] = r
        argvs = frozenset(tuple(r.item.argv) for r in desired if isinstance(r.item, Process))
        running = processes.observe(spaces, out, argvs)

        peers = _planned_peers(desired)
        jobs = [
            (ns, {p.argv[-1]: p.argv for p in running.get(ns, [])}, peers.get(ns, []))
            for ns in spaces
        ]
        # netlink first: with worker processes it runs while this one reads the rest
        with _NetlinkReads(jobs, every) as netlink_reads:
            others = self._observe_others(spaces, desired)
            read: dict[str, netlink.NodeLinks] = {}
            for links, found in netlink_reads.results():
                read[links.ns] = links
                out.update(found)
        if nodes is not None:
            netlink.fetch_missing_peers(read)
        netlink.add_links(read, out)
        out.update(others)
        if nodes is not None:  # a pair reported from an end outside the scope is not ours
            out = {k: r for k, r in out.items() if r.node in nodes}
        return out

    @staticmethod
    def _observe_others(spaces: list[str], desired: Sequence[Resource]) -> dict[Key, Resource]:
        """Sysctls, nftables tables, WireGuard configurations and SRv6 tunnel sources of
        the namespaces where ``desired`` has them."""
        out: dict[Key, Resource] = {}
        present = set(spaces)
        per_node: dict[str, list[Item]] = {}
        for r in desired:
            if r.node in present and isinstance(
                r.item, Sysctl | NftTable | WireGuardConfig | TunnelSource
            ):
                per_node.setdefault(r.node, []).append(r.item)

        def read(ns: str) -> dict[Key, Resource]:
            found: dict[Key, Resource] = {}
            items = per_node[ns]
            sysctl.observe(ns, [i for i in items if isinstance(i, Sysctl)], found)
            if any(isinstance(i, NftTable) for i in items):
                # all of polynimbus's tables, also one the plan no longer has
                for table in firewall.observe_owned(ns):
                    res = Resource(ns, table)
                    found[res.key] = res
            for i in items:
                got: Item | None = None
                if isinstance(i, WireGuardConfig):
                    got = wireguard.observe(ns, i.ifname)
                elif isinstance(i, TunnelSource):
                    got = srv6.observe(ns)
                if got is not None:
                    res = Resource(ns, got)
                    found[res.key] = res
            return found

        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for found in pool.map(read, sorted(per_node)):
                out.update(found)
        return out

    # ------------------------------------------------------------------ change
    def create(self, r: Resource) -> None:
        """Create ``r``, replacing what has its key.

        Raises:
            ApplyError: the kernel or a command refused.
        """
        _errors_as_apply(f"cannot create {r.describe()}", lambda: self._create(r.node, r.item))

    def update(self, r: Resource, current: Resource) -> None:
        """Make ``current`` match ``r``: links are recreated (except those a process made,
        which are set up in place), processes restarted, the rest replaced.

        Raises:
            ApplyError: the kernel or a command refused.
        """
        link = r.item
        # a link its process made is set up in place: deleting it would end the process
        if (
            isinstance(link, Link)
            and link.type not in ("loopback", "external")
            and not link.process
        ):
            self.delete(current)
        self.create(r)

    def delete(self, r: Resource) -> None:
        """Remove ``r``; absent is fine.

        Raises:
            ApplyError: the kernel or a command refused.
        """

        def run() -> None:
            try:
                self._delete(r.node, r.item)
            except NetlinkError as exc:
                if exc.code not in (2, 3, 19):  # ENOENT, ESRCH, ENODEV: already gone
                    raise

        _errors_as_apply(f"cannot delete {r.describe()}", run)

    def _create(self, ns: str, item: Item) -> None:
        if isinstance(item, Netns):
            netns.create(ns)
        elif isinstance(item, Sysctl):
            sysctl.create(ns, item)
        elif isinstance(item, Process):
            processes.start(ns, item, self.state_dir)
        elif isinstance(item, Link):
            netlink.create_link(ns, item, wait_process=self._wait_link)
        elif isinstance(item, Address):
            netlink.create_addr(ns, item)
        elif isinstance(item, Route):
            netlink.create_route(ns, item)
        elif isinstance(item, Rule):
            netlink.create_rule(ns, item)
        elif isinstance(item, FdbEntry):
            netlink.create_fdb(ns, item)
        elif isinstance(item, Qdisc):
            netlink.create_qdisc(ns, item)
        elif isinstance(item, TrafficClass):
            netlink.create_class(ns, item)
        elif isinstance(item, NftTable):
            firewall.create(ns, item)
        elif isinstance(item, WireGuardConfig):
            wireguard.create(ns, item, userspace=self._is_tun(ns, item.ifname))
        elif isinstance(item, TunnelSource):
            srv6.create(ns, item)
        else:  # pragma: no cover - every kind is handled above
            raise ApplyError(f"the lab cannot create a {item.kind}")

    def _delete(self, ns: str, item: Item) -> None:
        if isinstance(item, Netns):
            processes.stop_all_in([ns])
            netns.remove(ns)
            return
        if not netns.exists(ns):
            return
        if isinstance(item, Process):
            processes.stop(ns, item)
        elif isinstance(item, Link):
            netlink.delete_link(ns, item)
        elif isinstance(item, Address):
            netlink.delete_addr(ns, item)
        elif isinstance(item, Route):
            netlink.delete_route(ns, item)
        elif isinstance(item, Rule):
            netlink.delete_rule(ns, item)
        elif isinstance(item, FdbEntry):
            netlink.delete_fdb(ns, item)
        elif isinstance(item, Qdisc):
            netlink.delete_qdisc(ns, item)
        elif isinstance(item, TrafficClass):
            netlink.delete_class(ns, item)
        elif isinstance(item, NftTable):
            firewall.delete(ns, item)
        elif isinstance(item, TunnelSource):
            srv6.delete(ns)
        # sysctls go with their namespace; a WireGuard configuration with its interface

    @staticmethod
    def _wait_link(ns: str, ifname: str) -> bool:
        deadline = time.monotonic() + processes.START_TIMEOUT_S
        while time.monotonic() < deadline:
            with netns.ipr(ns) as ipr:
                if ipr.link_lookup(ifname=ifname):
                    return True
            time.sleep(0.02)
        return False

    @staticmethod
    def _is_tun(ns: str, ifname: str) -> bool:
        with netns.ipr(ns) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return False
            link = ipr.get_links(found[0])[0]
            li = link.get_attr("IFLA_LINKINFO")
            return bool(li and li.get_attr("IFLA_INFO_KIND") == "tun")

    # ------------------------------------------------------------------ down
    def destroy(self, lab: str) -> dict[str, list[str]]:
        """Remove everything of ``lab`` on this host: processes in its namespaces (and
        orphans outside them: ``wireguard-go`` of its interfaces, tunnel daemons running
        in its nodes' file directories; never this process or its ancestors), WireGuard
        sockets, namespaces.

        Works from any half-finished state; removing nothing is not an error. The state
        directory is not touched (see :func:`polynimbus.state.remove`).

        Returns:
            ``{"processes": [...], "sockets": [...], "namespaces": [...]}``.

        Raises:
            ApplyError: a namespace could not be removed.
        """
        spaces = list_lab_namespaces(lab)
        removed: dict[str, list[str]] = {"processes": [], "sockets": [], "namespaces": []}
        victims = processes.stop_all_in(spaces)
        wg_prefix = names.wireguard_if_prefix(lab)
        named = {procs.netns_inode(n) for n in netns.pr_netns.listnetns()}
        ours = names.lab_prefix(lab)
        mine = procs.ancestors(os.getpid())  # never this command nor the shell it runs in
        orphans = [
            p
            for p in procs.processes()
            if p.argv
            and p.pid not in mine
            and p.netns_inode not in named
            and (
                (p.argv[0].endswith("wireguard-go") and p.argv[-1].startswith(wg_prefix))
                or (
                    processes.is_daemon(p.argv)
                    and (processes.cwd_node(p.pid) or "").startswith(ours)
                )
            )
        ]
        procs.stop([p.pid for p in orphans])
        removed["processes"] = [f"{p.pid} {' '.join(p.argv)}" for p in victims + orphans]
        if WG_SOCKET_DIR.is_dir():
            live = {p.argv[-1] for p in procs.processes() if p.argv[0].endswith("wireguard-go")}
            for sock in sorted(WG_SOCKET_DIR.glob(f"{wg_prefix}*.sock")):
                if sock.stem not in live:
                    sock.unlink(missing_ok=True)
                    removed["sockets"].append(str(sock))
        for ns in spaces:
            netns.remove(ns)
            removed["namespaces"].append(ns)
        return removed
