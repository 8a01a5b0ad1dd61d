"""The emulated multi-cloud lab: every node a network namespace on this host.

Netlink work (namespaces, links, addresses, routes, qdiscs) goes through pyroute2; nftables,
sysctl and ``wg`` through their commands inside the namespace (``ip netns exec``);
``wireguard-go`` runs as a detached process per gateway when the kernel has no WireGuard.

Routes the lab creates carry the protocol number :data:`ROUTE_PROTO`, so observing them
never confuses them with kernel or user routes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetlinkError
from pyroute2 import netns as pr_netns

from polynimbus import names, procs
from polynimbus.errors import ApplyError
from polynimbus.render.nftables import FAMILY, TABLE, ruleset_digest
from polynimbus.render.wireguard import wg_digest
from polynimbus.resources import Key, Resource, netns
from polynimbus.targets.base import TARGETS

ROUTE_PROTO = 250
"""rtnetlink protocol number marking polynimbus routes."""
IFF_UP = 0x1
RTNH_F_ONLINK = 0x4
TC_H_ROOT = 0xFFFFFFFF
WG_SOCKET_DIR = Path("/var/run/wireguard")
WG_START_TIMEOUT_S = 5.0


def _run(argv: list[str], input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=input_text, capture_output=True, text=True, check=False)


def ns_exec(
    ns: str, argv: list[str], input_text: str | None = None, what: str | None = None
) -> str:
    """Run ``argv`` in namespace ``ns`` and return its stdout.

    Raises:
        ApplyError: the command failed (its stderr is in the message).
    """
    res = _run(["ip", "netns", "exec", ns, *argv], input_text)
    if res.returncode != 0:
        raise ApplyError(
            f"{what or ' '.join(argv)} failed in {ns}: {(res.stderr or res.stdout).strip()}"
        )
    return res.stdout


def _ipr(ns: str) -> IPRoute:
    return IPRoute(netns=ns, flags=0)  # flags=0: never create a missing namespace


def _idx(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise ApplyError(f"interface {ifname} not found")
    return int(found[0])


def list_lab_namespaces(lab: str) -> list[str]:
    """Namespaces of ``lab`` that exist now (by prefix ``pn.LAB.``)."""
    prefix = names.lab_prefix(lab)
    return sorted(n for n in pr_netns.listnetns() if n.startswith(prefix))


def list_labs() -> list[str]:
    """Names of the labs with at least one namespace on this host."""
    labs = set()
    for n in pr_netns.listnetns():
        parts = n.split(".")
        if len(parts) >= 3 and parts[0] == names.NS_PREFIX:
            labs.add(parts[1])
    return sorted(labs)


@TARGETS.register("lab")
class LabTarget:
    """Namespaces, veth, bridges, tunnels and firewalls on this host.

    Args:
        state_dir: the lab's state directory (wireguard-go logs, rendered configs).
    """

    def __init__(self, state_dir: Path, **_: Any) -> None:
        self.state_dir = state_dir

    # ------------------------------------------------------------------ observe
    def observe(self, lab: str, desired: Sequence[Resource]) -> dict[Key, Resource]:
        """What exists for ``lab``: namespaces, links, addresses, polynimbus routes, root
        qdiscs, and (for the nodes where ``desired`` has them) sysctls, nftables tables and
        WireGuard configurations."""
        spaces = list_lab_namespaces(lab)
        out: dict[Key, Resource] = {}
        links: dict[str, dict[str, dict[str, Any]]] = {}
        for ns in spaces:
            out[netns(ns).key] = netns(ns)
            links[ns] = self._observe_netlink(ns, spaces, out)
        self._observe_links(links, out)
        self._observe_commands(spaces, desired, out)
        return out

    def _observe_netlink(
        self, ns: str, spaces: list[str], out: dict[Key, Resource]
    ) -> dict[str, dict[str, Any]]:
        info: dict[str, dict[str, Any]] = {}
        with _ipr(ns) as ipr:
            by_index: dict[int, str] = {}
            raw = ipr.get_links()
            for link in raw:
                by_index[link["index"]] = link.get("ifname")
            nsids: dict[int, str] | None = None
            for link in raw:
                name = link.get("ifname")
                li = link.get_attr("IFLA_LINKINFO")
                kind = li.get_attr("IFLA_INFO_KIND") if li else None
                d: dict[str, Any] = {
                    "index": link["index"],
                    "kind": kind,
                    "mtu": link.get("mtu"),
                    "up": bool(link["flags"] & IFF_UP),
                    "master": by_index.get(link.get("IFLA_MASTER") or -1),
                }
                if kind == "veth":
                    nsid = link.get("IFLA_LINK_NETNSID")
                    d["peer_index"] = link.get("IFLA_LINK")
                    if nsid is not None:
                        if nsids is None:
                            nsids = self._nsid_map(ipr, spaces)
                        d["peer_ns"] = nsids.get(nsid)
                    else:
                        d["peer_ns"] = ns
                elif kind == "vxlan":
                    data = li.get_attr("IFLA_INFO_DATA")
                    d.update(
                        vni=data.get_attr("IFLA_VXLAN_ID"),
                        remote=data.get_attr("IFLA_VXLAN_GROUP"),
                        local=data.get_attr("IFLA_VXLAN_LOCAL"),
                        port=data.get_attr("IFLA_VXLAN_PORT"),
                    )
                info[name] = d
            for a in ipr.get_addr(family=socket.AF_INET):
                ifname = by_index.get(a["index"])
                addr = a.get("IFA_ADDRESS")
                if ifname == "lo" and addr == "127.0.0.1":
                    continue
                out[("addr", ns, f"{ifname} {addr}/{a['prefixlen']}")] = Resource.make(
                    "addr", ns, f"{ifname} {addr}/{a['prefixlen']}"
                )
            for r in ipr.get_routes(family=socket.AF_INET):
                if r["proto"] != ROUTE_PROTO or r.get("RTA_TABLE", 254) != 254:
                    continue
                dst = "default" if r["dst_len"] == 0 else f"{r.get('RTA_DST')}/{r['dst_len']}"
                out[("route", ns, dst)] = Resource.make(
                    "route",
                    ns,
                    dst,
                    dev=by_index.get(r.get("RTA_OIF") or -1),
                    via=r.get("RTA_GATEWAY"),
                    onlink=True if r["flags"] & RTNH_F_ONLINK else None,
                )
            for q in ipr.get_qdiscs():
                if q.get("parent") != TC_H_ROOT:
                    continue
                kind = q.get_attr("TCA_KIND")
                ifname = by_index.get(q["index"])
                if ifname is None:
                    continue
                if kind == "tbf":
                    parms = q.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
                    out[("qdisc", ns, ifname)] = Resource.make(
                        "qdisc", ns, ifname, type="tbf", rate_bps=int(parms["rate"]) * 8
                    )
                elif kind == "netem":
                    out[("qdisc", ns, ifname)] = Resource.make("qdisc", ns, ifname, type="netem")
        return info

    @staticmethod
    def _nsid_map(ipr: IPRoute, spaces: list[str]) -> dict[int, str]:
        out: dict[int, str] = {}
        for other in spaces:
            try:
                fd = os.open(f"/var/run/netns/{other}", os.O_RDONLY)
            except OSError:
                continue
            try:
                res = ipr.get_netnsid(fd=fd)
                nsid = res.get("nsid") if isinstance(res, dict) else None
                if nsid is not None and nsid != 0xFFFFFFFF:
                    out[int(nsid)] = other
            finally:
                os.close(fd)
        return out

    @staticmethod
    def _observe_links(
        links: dict[str, dict[str, dict[str, Any]]], out: dict[Key, Resource]
    ) -> None:
        for ns, ifs in links.items():
            for name, d in ifs.items():
                kind = d["kind"]
                if name == "lo":
                    out[("link", ns, "lo")] = Resource.make(
                        "link", ns, "lo", type="loopback", up=d["up"]
                    )
                elif kind == "bridge":
                    out[("link", ns, name)] = Resource.make(
                        "link", ns, name, type="bridge", mtu=d["mtu"], up=d["up"]
                    )
                elif kind == "vxlan":
                    out[("link", ns, name)] = Resource.make(
                        "link",
                        ns,
                        name,
                        type="vxlan",
                        vni=d["vni"],
                        local=d["local"],
                        remote=d["remote"],
                        port=d["port"],
                        mtu=d["mtu"],
                        up=d["up"],
                    )
                elif kind == "wireguard" or (kind == "tun" and name.startswith("wg")):
                    out[("link", ns, name)] = Resource.make(
                        "link",
                        ns,
                        name,
                        type="wireguard",
                        impl="kernel" if kind == "wireguard" else "userspace",
                        mtu=d["mtu"],
                        up=d["up"],
                    )
                elif kind == "veth":
                    peer_ns = d.get("peer_ns")
                    peer = None
                    if peer_ns in links:
                        peer = next(
                            (
                                (pn, pd)
                                for pn, pd in links[peer_ns].items()
                                if pd["index"] == d["peer_index"]
                                and pd.get("peer_index") == d["index"]
                            ),
                            None,
                        )
                    if peer is None:
                        out[("link", ns, name)] = Resource.make(
                            "link", ns, name, type="veth", mtu=d["mtu"], up=d["up"]
                        )
                        continue
                    peer_name, pd = peer
                    if (peer_ns, peer_name) < (ns, name):
                        continue  # the pair is reported from its smaller end
                    out[("link", ns, name)] = Resource.make(
                        "link",
                        ns,
                        name,
                        type="veth",
                        mtu=d["mtu"],
                        up=d["up"] and pd["up"],
                        master=d["master"],
                        peer_node=peer_ns,
                        peer_name=peer_name,
                        peer_master=pd["master"],
                    )
                else:
                    out[("link", ns, name)] = Resource.make(
                        "link", ns, name, type=kind or "unknown"
                    )

    def _observe_commands(
        self, spaces: list[str], desired: Sequence[Resource], out: dict[Key, Resource]
    ) -> None:
        present = set(spaces)
        scripts: dict[str, list[str]] = {}
        for r in desired:
            if r.node not in present:
                continue
            lines = scripts.setdefault(r.node, [])
            if r.kind == "sysctl":
                path = "/proc/sys/" + r.name.replace(".", "/")
                lines.append(f"echo '@sysctl {r.name}'; cat {path} 2>/dev/null")
            elif r.kind == "nft":
                lines.append(f"echo '@nft'; nft list table {FAMILY} {TABLE} 2>/dev/null")
            elif r.kind == "wgconf":
                lines.append(f"echo '@wg {r.name}'; wg showconf {r.name} 2>/dev/null")
        if not scripts:
            return

        def run(ns: str) -> tuple[str, str]:
            res = _run(["ip", "netns", "exec", ns, "sh", "-c", "; ".join(scripts[ns])])
            return ns, res.stdout

        with ThreadPoolExecutor(max_workers=8) as pool:
            for ns, text in pool.map(run, sorted(scripts)):
                for section in text.split("@")[1:]:
                    head, _, body = section.partition("\n")
                    kind, _, name = head.partition(" ")
                    if kind == "sysctl" and body.strip():
                        out[("sysctl", ns, name)] = Resource.make(
                            "sysctl", ns, name, value=body.strip()
                        )
                    elif kind == "nft" and body.strip():
                        out[("nft", ns, TABLE)] = Resource.make(
                            "nft", ns, TABLE, digest=ruleset_digest(body)
                        )
                    elif kind == "wg" and body.strip():
                        out[("wgconf", ns, name)] = Resource.make(
                            "wgconf", ns, name, digest=wg_digest(body)
                        )

    # ------------------------------------------------------------------ change
    def create(self, r: Resource) -> None:
        """Create ``r``, replacing what has its key."""
        try:
            getattr(self, f"_create_{r.kind}")(r)
        except NetlinkError as exc:
            raise ApplyError(
                f"cannot create {r.describe()}: {exc.args[-1] if exc.args else exc}",
                "run up again to retry; down removes the lab",
            ) from None

    def update(self, r: Resource, current: Resource) -> None:
        """Make ``current`` match ``r`` (links are recreated; the rest is replaced)."""
        if r.kind == "link" and r.get("type") != "loopback":
            self.delete(current)
        self.create(r)

    def delete(self, r: Resource) -> None:
        """Remove ``r`` (absent is fine)."""
        try:
            getattr(self, f"_delete_{r.kind}")(r)
        except NetlinkError as exc:
            if exc.code in (2, 3, 19):  # ENOENT, ESRCH, ENODEV: already gone
                return
            raise ApplyError(f"cannot delete {r.describe()}: {exc}") from None

    # netns
    def _create_netns(self, r: Resource) -> None:
        if r.node not in pr_netns.listnetns():
            pr_netns.create(r.node)

    def _delete_netns(self, r: Resource) -> None:
        self._stop_processes_in([r.node])
        if r.node in pr_netns.listnetns():
            pr_netns.remove(r.node)

    # sysctl
    def _create_sysctl(self, r: Resource) -> None:
        ns_exec(r.node, ["sysctl", "-qw", f"{r.name}={r.get('value')}"])

    def _delete_sysctl(self, r: Resource) -> None:
        return None  # a namespace's sysctls go with it

    # links
    def _create_link(self, r: Resource) -> None:
        t = r.get("type")
        with _ipr(r.node) as ipr:
            if t == "loopback":
                ipr.link("set", index=_idx(ipr, "lo"), state="up")
                return
            existing = ipr.link_lookup(ifname=r.name)
            if t == "wireguard" and r.get("impl") == "userspace":
                if existing:
                    ipr.link("del", index=existing[0])
                self._start_wireguard_go(r.node, r.name)
            else:
                if existing:
                    ipr.link("del", index=existing[0])
                if t == "veth":
                    self._delete_peer_end(r)
                    ipr.link(
                        "add",
                        ifname=r.name,
                        kind="veth",
                        peer={"ifname": r.get("peer_name"), "net_ns_fd": r.get("peer_node")},
                    )
                elif t == "bridge":
                    ipr.link("add", ifname=r.name, kind="bridge")
                elif t == "vxlan":
                    ipr.link(
                        "add",
                        ifname=r.name,
                        kind="vxlan",
                        vxlan_id=r.get("vni"),
                        vxlan_local=r.get("local"),
                        vxlan_group=r.get("remote"),
                        vxlan_port=r.get("port"),
                        vxlan_learning=0,
                    )
                elif t == "wireguard":
                    ipr.link("add", ifname=r.name, kind="wireguard")
                else:
                    raise ApplyError(f"cannot create a link of type {t!r}")
            idx = _idx(ipr, r.name)
            if r.get("mtu"):
                ipr.link("set", index=idx, mtu=r.get("mtu"))
            if r.get("master"):
                ipr.link("set", index=idx, master=_idx(ipr, r.get("master")))
            ipr.link("set", index=idx, state="up")
        if t == "veth":
            with _ipr(r.get("peer_node")) as peer:
                pidx = _idx(peer, r.get("peer_name"))
                if r.get("mtu"):
                    peer.link("set", index=pidx, mtu=r.get("mtu"))
                if r.get("peer_master"):
                    peer.link("set", index=pidx, master=_idx(peer, r.get("peer_master")))
                peer.link("set", index=pidx, state="up")

    def _delete_peer_end(self, r: Resource) -> None:
        if r.get("peer_node") not in pr_netns.listnetns():
            return
        with _ipr(r.get("peer_node")) as peer:
            found = peer.link_lookup(ifname=r.get("peer_name"))
            if found:
                peer.link("del", index=found[0])

    def _delete_link(self, r: Resource) -> None:
        if r.get("type") == "loopback":
            return
        if r.get("type") == "wireguard" and r.get("impl") == "userspace":
            self._stop_wireguard_go(r.name)
        if r.node not in pr_netns.listnetns():
            return
        with _ipr(r.node) as ipr:
            found = ipr.link_lookup(ifname=r.name)
            if found:
                ipr.link("del", index=found[0])

    # addresses
    @staticmethod
    def _addr_parts(r: Resource) -> tuple[str, str, int]:
        ifname, cidr = r.name.split(" ")
        addr, plen = cidr.split("/")
        return ifname, addr, int(plen)

    def _create_addr(self, r: Resource) -> None:
        ifname, addr, plen = self._addr_parts(r)
        with _ipr(r.node) as ipr:
            ipr.addr("replace", index=_idx(ipr, ifname), address=addr, prefixlen=plen)

    def _delete_addr(self, r: Resource) -> None:
        ifname, addr, plen = self._addr_parts(r)
        with _ipr(r.node) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if found:
                ipr.addr("del", index=found[0], address=addr, prefixlen=plen)

    # routes
    def _route_args(self, ipr: IPRoute, r: Resource) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dst": "0.0.0.0/0" if r.name == "default" else r.name,
            "oif": _idx(ipr, r.get("dev")),
            "proto": ROUTE_PROTO,
        }
        if r.get("via"):
            args["gateway"] = r.get("via")
        if r.get("onlink"):
            args["flags"] = RTNH_F_ONLINK
        return args

    def _create_route(self, r: Resource) -> None:
        with _ipr(r.node) as ipr:
            ipr.route("replace", **self._route_args(ipr, r))

    def _delete_route(self, r: Resource) -> None:
        with _ipr(r.node) as ipr:
            ipr.route("del", dst="0.0.0.0/0" if r.name == "default" else r.name, proto=ROUTE_PROTO)

    # qdiscs
    def _create_qdisc(self, r: Resource) -> None:
        with _ipr(r.node) as ipr:
            idx = _idx(ipr, r.name)
            rate = r.get("rate_bps")
            if r.get("type") == "tbf":
                burst = max(32 * 1024, rate // 8 // 100)  # 10 ms at rate, at least 32 KiB
                ipr.tc(
                    "replace",
                    "tbf",
                    idx,
                    rate=f"{rate}bit",
                    burst=burst,
                    latency=f"{r.get('latency_ms', 50)}ms",
                )
            else:
                kw: dict[str, Any] = {"delay": int(r.get("delay_ms") * 1000)}
                if rate:
                    kw["rate"] = f"{rate}bit"
                ipr.tc("replace", "netem", idx, **kw)

    def _delete_qdisc(self, r: Resource) -> None:
        with _ipr(r.node) as ipr:
            found = ipr.link_lookup(ifname=r.name)
            if found:
                ipr.tc("del", index=found[0])

    # nftables
    def _create_nft(self, r: Resource) -> None:
        # One transaction: make sure the table exists, drop it, load the new ruleset.
        text = f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{r.payload}"
        ns_exec(r.node, ["nft", "-f", "-"], text, what="loading the nftables ruleset")

    def _delete_nft(self, r: Resource) -> None:
        _run(["ip", "netns", "exec", r.node, "nft", "delete", "table", FAMILY, TABLE])

    # WireGuard configuration
    def _create_wgconf(self, r: Resource) -> None:
        wg_dir = self.state_dir / "wg"
        wg_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(wg_dir, 0o700)
        path = wg_dir / f"{r.name}.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(r.payload)
        ns_exec(r.node, ["wg", "syncconf", r.name, str(path)], what=f"wg syncconf {r.name}")

    def _delete_wgconf(self, r: Resource) -> None:
        (self.state_dir / "wg" / f"{r.name}.conf").unlink(missing_ok=True)

    # ------------------------------------------------------------------ processes
    def _start_wireguard_go(self, ns: str, ifname: str) -> None:
        self._stop_wireguard_go(ifname)
        run_dir = self.state_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / f"{ifname}.log"
        with open(log, "ab") as out:
            # setsid -f: detach so the process outlives us and init reaps it.
            subprocess.run(
                ["setsid", "-f", "ip", "netns", "exec", ns, "wireguard-go", "-f", ifname],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                check=True,
            )
        sock = WG_SOCKET_DIR / f"{ifname}.sock"
        deadline = time.monotonic() + WG_START_TIMEOUT_S
        while time.monotonic() < deadline:
            with _ipr(ns) as ipr:
                if ipr.link_lookup(ifname=ifname) and sock.exists():
                    return
            time.sleep(0.02)
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        raise ApplyError(
            f"wireguard-go did not bring up {ifname} in {ns} within "
            f"{WG_START_TIMEOUT_S:.0f} s: {tail.strip()}",
            f"see {log}",
        )

    @staticmethod
    def _wireguard_go() -> list[procs.Proc]:
        """Live ``wireguard-go`` processes (their interface is the last argument)."""
        return [
            p for p in procs.processes() if p.argv and os.path.basename(p.argv[0]) == "wireguard-go"
        ]

    def _wireguard_go_pids(self, ifname: str) -> list[int]:
        return [p.pid for p in self._wireguard_go() if p.argv[-1] == ifname]

    def _stop_wireguard_go(self, ifname: str) -> None:
        procs.stop(self._wireguard_go_pids(ifname))
        (WG_SOCKET_DIR / f"{ifname}.sock").unlink(missing_ok=True)

    @staticmethod
    def _stop_processes_in(spaces: list[str]) -> list[procs.Proc]:
        inodes = {i for i in (procs.netns_inode(n) for n in spaces) if i is not None}
        victims = [p for p in procs.processes() if p.netns_inode in inodes]
        procs.stop([p.pid for p in victims])
        return victims

    # ------------------------------------------------------------------ down
    def destroy(self, lab: str) -> dict[str, list[str]]:
        """Remove everything of ``lab``: processes in its namespaces (and orphaned
        ``wireguard-go`` of its interfaces), WireGuard sockets, namespaces, state directory.

        Works from any half-finished state; removing nothing is not an error.

        Returns:
            what was removed: ``{"processes": [...], "sockets": [...], "namespaces": [...],
            "state": [...]}``.
        """
        spaces = list_lab_namespaces(lab)
        removed: dict[str, list[str]] = {
            "processes": [],
            "sockets": [],
            "namespaces": [],
            "state": [],
        }
        victims = self._stop_processes_in(spaces)
        wg_prefix = names.wireguard_if_prefix(lab)
        named = {procs.netns_inode(n) for n in pr_netns.listnetns()}
        orphans = [
            p
            for p in self._wireguard_go()
            if p.argv[-1].startswith(wg_prefix) and p.netns_inode not in named
        ]
        procs.stop([p.pid for p in orphans])
        removed["processes"] = [f"{p.pid} {' '.join(p.argv)}" for p in victims + orphans]
        if WG_SOCKET_DIR.is_dir():
            live = {p.argv[-1] for p in self._wireguard_go()}
            for sock in sorted(WG_SOCKET_DIR.glob(f"{wg_prefix}*.sock")):
                if sock.stem not in live:
                    sock.unlink(missing_ok=True)
                    removed["sockets"].append(str(sock))
        for ns in spaces:
            try:
                pr_netns.remove(ns)
                removed["namespaces"].append(ns)
            except OSError as exc:
                raise ApplyError(f"cannot remove namespace {ns}: {exc}") from None
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
            removed["state"].append(str(self.state_dir))
        return removed
