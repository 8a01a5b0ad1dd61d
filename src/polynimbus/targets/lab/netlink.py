"""Links, addresses, routes, rules, FDB entries and qdiscs of lab nodes, through netlink
(pyroute2), read back into the node model's shapes so apply can diff them.

Routes and rules the lab creates carry the protocol number :data:`ROUTE_PROTO`, so
observing them never confuses them with kernel or user routes. IPv6 addresses are added
without duplicate address detection (the kernel selftests' habit), so they are usable at
once.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute, NetlinkError

from polynimbus.errors import ApplyError
from polynimbus.node import (
    MANAGED_MAC_PREFIX,
    SEG6LOCAL_ACTIONS,
    Address,
    FdbEntry,
    Link,
    Qdisc,
    Route,
    Rule,
    Seg6Encap,
    Seg6Local,
    TrafficClass,
    VethPeer,
    VxlanParams,
)
from polynimbus.resources import Key, Resource
from polynimbus.targets.lab import netns
from polynimbus.targets.lab.processes import name_of

ROUTE_PROTO = 250
VIP_LABEL_SUFFIX = ":vip"
"""Addresses labelled ``IF:vip`` belong to a VRRP daemon (keepalived,
:mod:`polynimbus.render.standby`), which adds and removes them: the lab neither observes
nor removes them."""
"""rtnetlink protocol number marking polynimbus routes and rules."""
IFF_UP = 0x1
RTNH_F_ONLINK = 0x4
TC_H_ROOT = 0xFFFFFFFF
HTB_HANDLE = 0x10000
"""Handle ``1:`` of the htb root qdiscs polynimbus makes."""
RT_SCOPE_NOWHERE = 255
IFA_F_NODAD = 0x02
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
FAMILY_OF = {v: k for k, v in FAMILIES.items()}
ROUTE_TYPES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
LWTUNNEL_ENCAP_SEG6 = 5
LWTUNNEL_ENCAP_SEG6_LOCAL = 7
ZERO_MAC = "00:00:00:00:00:00"
NUD_PERMANENT = 0x80
"""A static FDB entry (one polynimbus made); learned ones are not the plan's business."""
ACTION_NAMES = {v: k for k, v in SEG6LOCAL_ACTIONS.items()}


@dataclass
class NodeLinks:
    """Raw link facts of one namespace, for pairing veth ends across namespaces."""

    ns: str
    info: dict[str, dict[str, Any]] = field(default_factory=dict)


def idx(ipr: IPRoute, ifname: str) -> int:
    """Index of ``ifname``.

    Raises:
        ApplyError: no such interface.
    """
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise ApplyError(f"interface {ifname} not found")
    return int(found[0])


# ---------------------------------------------------------------------------- observe
def observe_node(
    ns: str,
    spaces: list[str],
    processes: dict[str, tuple[str, ...]],
    out: dict[Key, Resource],
    likely_peers: Sequence[str] = (),
) -> NodeLinks:
    """Read everything netlink knows about namespace ``ns`` into ``out``.

    Args:
        spaces: the lab's namespaces (to name veth peers and VXLAN underlays).
        processes: for this namespace, process command lines by the last argument (the
            interface a TUN daemon serves).
        likely_peers: namespaces to ask about first when naming peers (those the plan
            connects ``ns`` to); only an order: every namespace of ``spaces`` is asked
            if need be, so a peer the plan does not expect is still named.

    Returns:
        the namespace's raw link facts (links are added to ``out`` by :func:`add_links`).
    """
    node = NodeLinks(ns)
    with netns.ipr(ns) as ipr:
        by_index: dict[int, str] = {}
        raw = ipr.get_links()
        for link in raw:
            by_index[link["index"]] = link.get("ifname")
        wanted = {
            int(link.get("IFLA_LINK_NETNSID"))
            for link in raw
            if link.get("IFLA_LINK_NETNSID") is not None
        }
        nsids = _nsid_map(ipr, ns, spaces, wanted, likely_peers) if wanted else {}
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
                "mac": _managed_mac(link.get_attr("IFLA_ADDRESS")),
            }
            if kind == "veth":
                nsid = link.get("IFLA_LINK_NETNSID")
                d["peer_index"] = link.get("IFLA_LINK")
                if nsid is not None:
                    d["peer_ns"] = nsids.get(nsid)
                else:
                    d["peer_ns"] = ns
            elif kind == "vxlan":
                data = li.get_attr("IFLA_INFO_DATA")
                nsid = link.get("IFLA_LINK_NETNSID")
                d["vxlan"] = VxlanParams(
                    vni=data.get_attr("IFLA_VXLAN_ID"),
                    port=data.get_attr("IFLA_VXLAN_PORT"),
                    local=data.get_attr("IFLA_VXLAN_LOCAL"),
                    remote=data.get_attr("IFLA_VXLAN_GROUP"),
                    learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                    underlay=nsids.get(nsid, f"nsid {nsid}") if nsid is not None else None,
                )
            elif kind == "tun" and name in processes:
                d["process"] = name_of(processes[name])
            node.info[name] = d
        _observe_addresses(ipr, ns, by_index, out)
        _observe_routes(ipr, ns, by_index, out)
        _observe_rules(ipr, ns, out)
        _observe_fdb(ipr, ns, by_index, node.info, out)
        _observe_qdiscs(ipr, ns, by_index, out)
    return node


NodeRead = tuple[str, dict[str, tuple[str, ...]], list[str]]
"""What :func:`observe_nodes` needs per namespace: its name, its processes' command lines
by interface, its likely peers (see :func:`observe_node`)."""


def observe_nodes(
    jobs: Sequence[NodeRead], spaces: list[str]
) -> list[tuple[NodeLinks, dict[Key, Resource]]]:
    """:func:`observe_node` for each of ``jobs``, in order, with what each found (a
    module-level function, so that a worker process can run it)."""
    done = []
    for ns, processes, likely in jobs:
        found: dict[Key, Resource] = {}
        done.append((observe_node(ns, spaces, processes, found, likely), found))
    return done


def _nsid_map(
    ipr: IPRoute, ns: str, spaces: list[str], wanted: set[int], likely: Sequence[str] = ()
) -> dict[int, str]:
    """Names of the namespaces behind the ids ``wanted`` (as ``ns`` numbers its peers).

    Asks the kernel one namespace at a time (about 0.3 ms each): ``likely`` first, then
    the others by likelihood (the longest shared dotted prefix: a host's gateway, a
    gateway's hosts), and stops when all are named.
    """
    out: dict[int, str] = {}

    def closeness(other: str) -> int:
        a, b = ns.split("."), other.split(".")
        return -next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), 0)

    def candidates() -> Iterator[str]:
        first = [o for o in dict.fromkeys(likely) if o != ns]
        yield from first
        asked = set(first)
        yield from sorted((o for o in spaces if o != ns and o not in asked), key=closeness)

    for other in candidates():
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
        if wanted <= out.keys():
            break
    return out


def _observe_addresses(
    ipr: IPRoute, ns: str, by_index: dict[int, str], out: dict[Key, Resource]
) -> None:
    for a in ipr.get_addr():  # every family in one dump
        if a["family"] not in FAMILY_OF:
            continue
        ifname = by_index.get(a["index"])
        addr = a.get("IFA_ADDRESS")
        if ifname is None or addr is None:
            continue
        if addr in ("127.0.0.1", "::1") or addr.lower().startswith("fe80:"):
            continue  # the kernel's own
        if str(a.get("IFA_LABEL") or "").endswith(VIP_LABEL_SUFFIX):
            continue  # a VRRP daemon's (render.standby): it comes and goes with mastership
        r = Resource(ns, Address(ifname, f"{addr}/{a['prefixlen']}"))
        out[r.key] = r


def _encap_of(r: Any) -> Seg6Encap | Seg6Local | None:
    etype = r.get("RTA_ENCAP_TYPE")
    enc = r.get("RTA_ENCAP")
    if etype is None or enc is None:
        return None
    if etype == LWTUNNEL_ENCAP_SEG6:
        srh = enc.get_attr("SEG6_IPTUNNEL_SRH")
        # pyroute2 gives the SRH in wire order (last segment first): reverse to travel order
        return Seg6Encap(srh.get("mode", "encap"), tuple(reversed(srh["segs"])))
    if etype == LWTUNNEL_ENCAP_SEG6_LOCAL:
        action = ACTION_NAMES.get(enc.get_attr("SEG6_LOCAL_ACTION"), "unknown")
        if action == "unknown":
            return None
        table = enc.get_attr("SEG6_LOCAL_TABLE")
        return Seg6Local(
            action,
            nh4=enc.get_attr("SEG6_LOCAL_NH4"),
            nh6=enc.get_attr("SEG6_LOCAL_NH6"),
            table=int(table) if table is not None else None,
        )
    return None


def _observe_routes(
    ipr: IPRoute, ns: str, by_index: dict[int, str], out: dict[Key, Resource]
) -> None:
    for r in ipr.get_routes():  # every family and table in one dump
        fam = FAMILY_OF.get(r["family"])
        if fam is None or r["proto"] != ROUTE_PROTO:
            continue
        dst = r.get("RTA_DST")
        if r["dst_len"] == 0:
            dst = "default" if fam == 4 else "default6"
        else:
            dst = f"{dst}/{r['dst_len']}"
        table = r.get("RTA_TABLE") or r["table"]
        rtype = ROUTE_TYPES.get(r["type"], "unicast")
        hops = r.get("RTA_MULTIPATH")
        multipath = tuple(by_index.get(h["oif"], f"#{h['oif']}") for h in hops or ())
        item = Route(
            dst,
            table=int(table),
            metric=int(r.get("RTA_PRIORITY") or 0),
            type=rtype,  # type: ignore[arg-type]
            dev=by_index.get(r.get("RTA_OIF") or -1) if rtype == "unicast" else None,
            multipath=multipath if len(multipath) > 1 else (),
            via=r.get("RTA_GATEWAY"),
            onlink=bool(r["flags"] & RTNH_F_ONLINK),
            encap=_encap_of(r),
            mtu=_mtu_of(r),
        )
        res = Resource(ns, item)
        out[res.key] = res


def _mtu_of(r: Any) -> int | None:
    metrics = r.get("RTA_METRICS")
    mtu = metrics.get("RTAX_MTU") if metrics is not None else None
    return int(mtu) if mtu else None


def _observe_rules(ipr: IPRoute, ns: str, out: dict[Key, Resource]) -> None:
    for r in ipr.get_rules():  # every family in one dump
        fam = FAMILY_OF.get(r["family"])
        if fam is None or r.get("FRA_PROTOCOL") != ROUTE_PROTO:
            continue
        src = f"{r.get('FRA_SRC')}/{r['src_len']}" if r.get("FRA_SRC") else None
        dst = f"{r.get('FRA_DST')}/{r['dst_len']}" if r.get("FRA_DST") else None
        item = Rule(
            family=fam,  # type: ignore[arg-type]
            priority=int(r.get("FRA_PRIORITY") or 0),
            table=int(r.get("FRA_TABLE") or r["table"]),
            iif=r.get("FRA_IIFNAME"),
            oif=r.get("FRA_OIFNAME"),
            src=src,
            dst=dst,
            fwmark=r.get("FRA_FWMARK"),
            ipproto=r.get("FRA_IP_PROTO"),
            sport=_port_of(r.get("FRA_SPORT_RANGE")),
            dport=_port_of(r.get("FRA_DPORT_RANGE")),
        )
        res = Resource(ns, item)
        out[res.key] = res


def _port_of(value: str | None) -> int | None:
    """The port of a one-port range ``"P:P"`` as pyroute2 decodes it (a wider range, which
    polynimbus never makes, reads as its start)."""
    return int(value.split(":")[0]) if value else None


def _observe_fdb(
    ipr: IPRoute,
    ns: str,
    by_index: dict[int, str],
    info: dict[str, dict[str, Any]],
    out: dict[Key, Resource],
) -> None:
    vxlans = {n for n, d in info.items() if d["kind"] == "vxlan"}
    if not vxlans:
        return
    for f in ipr.fdb("dump"):
        dev = by_index.get(f["ifindex"])
        dst = f.get("NDA_DST")
        if dev in vxlans and dst is not None and f["state"] & NUD_PERMANENT:
            mac = str(f.get("NDA_LLADDR")).lower()
            if mac == ZERO_MAC and dst == info[dev]["vxlan"].remote:
                continue  # the kernel's own entry for a device with a single remote
            res = Resource(ns, FdbEntry(dev, mac, dst))
            out[res.key] = res


def _observe_qdiscs(
    ipr: IPRoute, ns: str, by_index: dict[int, str], out: dict[Key, Resource]
) -> None:
    htb: list[int] = []
    for q in ipr.get_qdiscs():
        if q.get("parent") != TC_H_ROOT:
            continue
        kind = q.get_attr("TCA_KIND")
        ifname = by_index.get(q["index"])
        if ifname is None:
            continue
        item: Qdisc | None = None
        if kind == "tbf":
            parms = q.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
            item = Qdisc(
                ifname, "tbf", rate_bps=int(parms["rate"]) * 8, limit_bytes=int(parms["limit"])
            )
        elif kind == "netem":
            opts = q.get_attr("TCA_OPTIONS")
            delay = opts.get("delay") if opts is not None else None
            item = Qdisc(ifname, "netem", delay_ms=(delay / 1000.0) if delay else None)
        elif kind == "htb" and q["handle"] == HTB_HANDLE:
            init = q.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_INIT")
            item = Qdisc(ifname, "htb", default_class=int(init["defcls"]))
            htb.append(q["index"])
        if item is not None:
            res = Resource(ns, item)
            out[res.key] = res
    for index in htb:
        for c in ipr.get_classes(index):
            opts = c.get_attr("TCA_OPTIONS")
            parms = opts.get_attr("TCA_HTB_PARMS") if opts is not None else None
            if parms is None or (c["handle"] >> 16) != 1:
                continue
            rate64 = opts.get_attr("TCA_HTB_RATE64")
            ceil64 = opts.get_attr("TCA_HTB_CEIL64")
            parent = c["parent"]
            tc_item = TrafficClass(
                by_index[index],
                c["handle"] & 0xFFFF,
                0 if parent == TC_H_ROOT or (parent & 0xFFFF) == 0 else parent & 0xFFFF,
                int(rate64 or parms["rate"]) * 8,
                int(ceil64 or parms["ceil"]) * 8,
            )
            res = Resource(ns, tc_item)
            out[res.key] = res


def fetch_missing_peers(nodes: dict[str, NodeLinks]) -> None:
    """Complete ``nodes`` (namespaces read in full) with the far ends of their veth pairs
    that lie in namespaces not read, one link each, so that every pair with an end in a
    read namespace is seen whole (an apply scoped to some nodes reads only those)."""
    wanted: dict[str, set[int]] = {}
    for node in nodes.values():
        for d in node.info.values():
            peer_ns = d.get("peer_ns")
            if d["kind"] == "veth" and peer_ns and peer_ns not in nodes:
                wanted.setdefault(peer_ns, set()).add(int(d["peer_index"]))
    for ns, indices in wanted.items():
        if not netns.exists(ns):
            continue
        partial = NodeLinks(ns)
        with netns.ipr(ns) as ipr:
            for index in indices:
                try:
                    link = ipr.get_links(index)[0]
                except NetlinkError:
                    continue  # gone meanwhile
                master = link.get("IFLA_MASTER")
                partial.info[link.get("ifname")] = {
                    "index": index,
                    "kind": "veth",
                    "mtu": link.get("mtu"),
                    "up": bool(link["flags"] & IFF_UP),
                    "master": ipr.get_links(master)[0].get("ifname") if master else None,
                    "mac": _managed_mac(link.get_attr("IFLA_ADDRESS")),
                    "peer_index": link.get("IFLA_LINK"),
                    "peer_ns": None,  # partial: only read to pair with a read end
                }
        nodes[ns] = partial


def add_links(nodes: dict[str, NodeLinks], out: dict[Key, Resource]) -> None:
    """Add every observed link to ``out``; a veth pair is reported once, from its
    lexicographically smaller ``(namespace, name)`` end, as the lab renders it."""
    for ns, node in nodes.items():
        for name, d in node.info.items():
            item = _link_item(nodes, ns, name, d)
            if item is not None:
                res = Resource(ns, item)
                out[res.key] = res


def _managed_mac(mac: str | None) -> str | None:
    """``mac`` if polynimbus set it (:data:`~polynimbus.node.MANAGED_MAC_PREFIX`), else ``None``."""
    if mac and mac.lower().startswith(MANAGED_MAC_PREFIX):
        return mac.lower()
    return None


def _link_item(nodes: dict[str, NodeLinks], ns: str, name: str, d: dict[str, Any]) -> Link | None:
    kind = d["kind"]
    common = {"mtu": d["mtu"], "up": d["up"], "master": d["master"], "mac": d["mac"]}
    if name == "lo":
        return Link("lo", "loopback", up=d["up"])
    if kind == "bridge":
        return Link(name, "bridge", **common)
    if kind == "vxlan":
        return Link(name, "vxlan", vxlan=d["vxlan"], **common)
    if kind == "wireguard":
        return Link(name, "wireguard", impl="kernel", **common)
    if kind == "tun":
        proc = d.get("process")
        if proc and proc.startswith("wireguard-go:"):
            return Link(name, "wireguard", impl="userspace", process=proc, **common)
        return Link(name, "tun", process=proc, **common)
    if kind == "veth":
        peer_ns = d.get("peer_ns")
        peer = None
        if peer_ns in nodes:
            peer = next(
                (
                    (pn, pd)
                    for pn, pd in nodes[peer_ns].info.items()
                    if pd["index"] == d["peer_index"] and pd.get("peer_index") == d["index"]
                ),
                None,
            )
        if peer is None:
            return Link(name, "veth", **common)
        peer_name, pd = peer
        if (peer_ns, peer_name) < (ns, name):
            return None  # the pair is reported from its smaller end
        assert peer_ns is not None
        return Link(
            name,
            "veth",
            mtu=d["mtu"],
            up=d["up"] and pd["up"],
            master=d["master"],
            mac=d["mac"],
            peer=VethPeer(peer_ns, peer_name, pd["master"], pd["mac"]),
        )
    return Link(name, "external", **common)


# ---------------------------------------------------------------------------- links
def create_link(ns: str, item: Link, wait_process: Any = None) -> None:
    """Create ``item`` in ``ns`` (replacing one of the same name), set MTU, bridge, up.

    A link made by a process (``item.process``) is not created here: it is waited for.

    Raises:
        ApplyError: the link did not appear, or an unknown type.
    """
    with netns.ipr(ns) as ipr:
        if item.type == "loopback":
            ipr.link("set", index=idx(ipr, "lo"), state="up")
            return
        existing = ipr.link_lookup(ifname=item.name)
        if item.process:
            if not (wait_process and wait_process(ns, item.name)):
                raise ApplyError(
                    f"{item.process} did not create {item.name} in {ns}",
                    "see its log in the state directory's run/",
                )
        elif item.type == "external":
            if not existing:
                raise ApplyError(f"interface {item.name} should exist in {ns} and does not")
        else:
            if existing:
                ipr.link("del", index=existing[0])
            if item.type == "veth":
                assert item.peer is not None
                delete_peer_end(item.peer)
                ipr.link(
                    "add",
                    ifname=item.name,
                    kind="veth",
                    peer={"ifname": item.peer.name, "net_ns_fd": item.peer.node},
                )
            elif item.type == "bridge":
                ipr.link("add", ifname=item.name, kind="bridge")
            elif item.type == "vxlan":
                v = item.vxlan
                assert v is not None
                kw: dict[str, Any] = {
                    "vxlan_id": v.vni,
                    "vxlan_port": v.port,
                    "vxlan_learning": int(v.learning),
                }
                if v.local:
                    kw["vxlan_local"] = v.local
                if v.remote:
                    kw["vxlan_group"] = v.remote
                if v.underlay and v.underlay != ns:
                    _vxlan_from(v.underlay, ns, item.name, kw)
                else:
                    ipr.link("add", ifname=item.name, kind="vxlan", **kw)
            elif item.type == "wireguard":
                ipr.link("add", ifname=item.name, kind="wireguard")
            else:
                raise ApplyError(f"cannot create a link of type {item.type!r}")
        i = idx(ipr, item.name)
        if item.mac:
            ipr.link("set", index=i, address=item.mac)
        if item.mtu:
            ipr.link("set", index=i, mtu=item.mtu)
        if item.master:
            ipr.link("set", index=i, master=idx(ipr, item.master))
        ipr.link("set", index=i, state="up" if item.up else "down")
    if item.type == "veth" and item.peer is not None:
        with netns.ipr(item.peer.node) as peer:
            pidx = idx(peer, item.peer.name)
            if item.peer.mac:
                peer.link("set", index=pidx, address=item.peer.mac)
            if item.mtu:
                peer.link("set", index=pidx, mtu=item.mtu)
            if item.peer.master:
                peer.link("set", index=pidx, master=idx(peer, item.peer.master))
            peer.link("set", index=pidx, state="up" if item.up else "down")


def _vxlan_from(underlay: str, ns: str, name: str, kw: dict[str, Any]) -> None:
    """Make a VXLAN device in ``underlay`` (where its UDP socket lives and stays) and move
    it into ``ns`` as ``name`` (the device then belongs to ``ns``, its packets to
    ``underlay``'s network: how a tenant router's ports ride its gateway's tunnels)."""
    tmp = f"pnvx{os.getpid() % 10000:04d}{threading.get_ident() % 1000:03d}"
    with netns.ipr(underlay) as u:
        old = u.link_lookup(ifname=tmp)
        if old:
            u.link("del", index=old[0])
        u.link("add", ifname=tmp, kind="vxlan", **kw)
        i = idx(u, tmp)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            u.link("set", index=i, net_ns_fd=fd, ifname=name)
        finally:
            os.close(fd)


def delete_peer_end(peer: VethPeer) -> None:
    """Remove the named peer end of a veth pair if it exists (it may be left over)."""
    if not netns.exists(peer.node):
        return
    with netns.ipr(peer.node) as ipr:
        found = ipr.link_lookup(ifname=peer.name)
        if found:
            ipr.link("del", index=found[0])


def delete_link(ns: str, item: Link) -> None:
    """Remove link ``item`` from ``ns`` (absent is fine; loopback and external stay)."""
    if item.type in ("loopback", "external") or not netns.exists(ns):
        return
    with netns.ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=item.name)
        if found:
            ipr.link("del", index=found[0])


# ---------------------------------------------------------------------------- addresses
def _addr_parts(item: Address) -> tuple[str, int, int]:
    addr, plen = item.prefix.split("/")
    return addr, int(plen), FAMILIES[item.family]


def create_addr(ns: str, item: Address) -> None:
    """Add (or replace) ``item``; IPv6 without DAD."""
    addr, plen, fam = _addr_parts(item)
    with netns.ipr(ns) as ipr:
        kw: dict[str, Any] = {}
        if fam == socket.AF_INET6:
            kw["flags"] = IFA_F_NODAD
        ipr.addr(
            "replace", index=idx(ipr, item.ifname), address=addr, prefixlen=plen, family=fam, **kw
        )


def delete_addr(ns: str, item: Address) -> None:
    """Remove ``item`` (absent is fine)."""
    addr, plen, fam = _addr_parts(item)
    with netns.ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=item.ifname)
        if found:
            ipr.addr("del", index=found[0], address=addr, prefixlen=plen, family=fam)


# ---------------------------------------------------------------------------- routes
def _dst_args(item: Route) -> dict[str, Any]:
    if item.dst in ("default", "default6"):
        net, plen = ("0.0.0.0", 0) if item.family == 4 else ("::", 0)
    else:
        net, p = item.dst.split("/")
        plen = int(p)
    return {
        "dst": net,
        "dst_len": plen,
        "family": FAMILIES[item.family],
        "table": item.table,
        "priority": item.metric,
        "proto": ROUTE_PROTO,
    }


def route_args(ipr: IPRoute, item: Route) -> dict[str, Any]:
    """pyroute2 arguments for ``item`` (segment lists converted to wire order)."""
    args = _dst_args(item)
    args["type"] = item.type
    if item.multipath:
        args["multipath"] = [{"oif": idx(ipr, d), "hops": 0} for d in item.multipath]
    elif item.dev:
        args["oif"] = idx(ipr, item.dev)
    if item.via:
        args["gateway"] = item.via
    if item.onlink:
        args["flags"] = RTNH_F_ONLINK
    if item.mtu is not None:
        args["metrics"] = {"mtu": item.mtu}
    enc = item.encap
    if isinstance(enc, Seg6Encap):
        # pyroute2 takes the SRH in wire order (last segment first); pass a fresh list,
        # since inline mode inserts "::" into the list it is given
        args["encap"] = {"type": "seg6", "mode": enc.mode, "segs": list(reversed(enc.segs))}
    elif isinstance(enc, Seg6Local):
        e: dict[str, Any] = {"type": "seg6local", "action": enc.action}
        if enc.nh4:
            e["nh4"] = enc.nh4
        if enc.nh6:
            e["nh6"] = enc.nh6
        if enc.table is not None:
            e["table"] = int(enc.table)
        args["encap"] = e
    return args


def create_route(ns: str, item: Route) -> None:
    """Add or replace ``item``."""
    with netns.ipr(ns) as ipr:
        ipr.route("replace", **route_args(ipr, item))


def delete_route(ns: str, item: Route) -> None:
    """Remove ``item`` (absent is fine), whatever its scope (like ``ip route del``, which
    asks for scope "nowhere": a link-scope route is not matched by scope "universe")."""
    with netns.ipr(ns) as ipr:
        args = _dst_args(item)
        args["type"] = item.type
        args["scope"] = RT_SCOPE_NOWHERE
        if item.dev and not item.multipath:
            found = ipr.link_lookup(ifname=item.dev)
            if found:
                args["oif"] = found[0]
        ipr.route("del", **args)


# ---------------------------------------------------------------------------- rules
def _rule_args(item: Rule) -> dict[str, Any]:
    args: dict[str, Any] = {
        "family": FAMILIES[item.family],
        "priority": item.priority,
        "table": item.table,
        "protocol": ROUTE_PROTO,
    }
    if item.iif:
        args["iifname"] = item.iif
    if item.oif:
        args["oifname"] = item.oif
    for name in ("src", "dst"):
        v = getattr(item, name)
        if v is not None:
            net, plen = v.split("/")
            args[name] = net
            args[f"{name}_len"] = int(plen)
    if item.fwmark is not None:
        args["fwmark"] = item.fwmark
    if item.ipproto is not None:
        args["ip_proto"] = item.ipproto
    if item.sport is not None:
        args["sport_range"] = f"{item.sport}:{item.sport}"
    if item.dport is not None:
        args["dport_range"] = f"{item.dport}:{item.dport}"
    return args


def create_rule(ns: str, item: Rule) -> None:
    """Add ``item``, replacing a rule of the same family and priority."""
    delete_rule(ns, item)
    with netns.ipr(ns) as ipr:
        ipr.rule("add", **_rule_args(item))


def delete_rule(ns: str, item: Rule) -> None:
    """Remove our rules of ``item``'s family and priority (absent is fine)."""
    with netns.ipr(ns) as ipr:
        for r in ipr.get_rules(family=FAMILIES[item.family]):
            if (
                r.get("FRA_PROTOCOL") == ROUTE_PROTO
                and int(r.get("FRA_PRIORITY") or 0) == item.priority
            ):
                ipr.rule(
                    "del",
                    family=FAMILIES[item.family],
                    priority=item.priority,
                    table=int(r.get("FRA_TABLE") or r["table"]),
                )


# ---------------------------------------------------------------------------- FDB
def create_fdb(ns: str, item: FdbEntry) -> None:
    """Append ``item`` to its VXLAN device's forwarding table."""
    with netns.ipr(ns) as ipr:
        ipr.fdb("append", ifindex=idx(ipr, item.dev), lladdr=item.mac, dst=item.dst)


def delete_fdb(ns: str, item: FdbEntry) -> None:
    """Remove ``item`` (absent is fine)."""
    with netns.ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=item.dev)
        if found:
            ipr.fdb("del", ifindex=found[0], lladdr=item.mac, dst=item.dst)


# ---------------------------------------------------------------------------- qdiscs
def create_qdisc(ns: str, item: Qdisc) -> None:
    """Replace the root qdisc of ``item.dev``."""
    with netns.ipr(ns) as ipr:
        i = idx(ipr, item.dev)
        if item.type == "tbf":
            assert item.rate_bps and item.limit_bytes and item.burst_bytes
            ipr.tc(
                "replace",
                "tbf",
                i,
                rate=f"{item.rate_bps}bit",
                burst=item.burst_bytes,
                limit=item.limit_bytes,
            )
        elif item.type == "htb":
            old = [q for q in ipr.get_qdiscs(i) if q["parent"] == TC_H_ROOT]
            if old and old[0]["handle"] not in (0, HTB_HANDLE):  # e.g. a tbf: start afresh
                ipr.tc("del", index=i)
            ipr.tc("replace", "htb", i, handle="1:", default=item.default_class or 0)
        else:
            kw: dict[str, Any] = {"delay": int((item.delay_ms or 0) * 1000)}
            if item.rate_bps:
                kw["rate"] = f"{item.rate_bps}bit"
            ipr.tc("replace", "netem", i, **kw)


def delete_qdisc(ns: str, item: Qdisc) -> None:
    """Remove the root qdisc of ``item.dev`` (absent is fine)."""
    with netns.ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=item.dev)
        if found:
            ipr.tc("del", index=found[0])


# ---------------------------------------------------------------------------- classes
def _class_args(item: TrafficClass) -> dict[str, Any]:
    rate, ceil = item.rate_bps // 8, item.ceil_bps // 8
    return {
        "handle": f"1:{item.minor:x}",
        "parent": f"1:{item.parent:x}" if item.parent else "1:",
        "rate": f"{item.rate_bps}bit",
        "ceil": f"{item.ceil_bps}bit",
        # 10 ms at the rate (at least two full frames): shallower buckets starve a TCP
        # flow on a virtual link whose timers are coarse (tc-htb(8), "burst").
        "burst": max(rate // 100, 2 * 1600),
        "cburst": max(ceil // 100, 2 * 1600),
    }


def create_class(ns: str, item: TrafficClass) -> None:
    """Add or change class ``1:minor`` of the htb root qdisc of ``item.dev``."""
    with netns.ipr(ns) as ipr:
        i = idx(ipr, item.dev)
        handle = (1 << 16) | item.minor
        exists = any(c["handle"] == handle for c in ipr.get_classes(i))
        ipr.tc("change-class" if exists else "add-class", "htb", i, **_class_args(item))


def delete_class(ns: str, item: TrafficClass) -> None:
    """Remove class ``1:minor`` (absent is fine)."""
    with netns.ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=item.dev)
        if found:
            handle = (1 << 16) | item.minor
            if any(c["handle"] == handle for c in ipr.get_classes(found[0])):
                ipr.tc("del-class", "htb", found[0], handle=f"1:{item.minor:x}")
