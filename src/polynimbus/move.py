"""Moving a tenant's workload between sites, keeping its IP, MAC and connections.

Seed 001 §3 (network migration by cloning, "creating the necessary tunnels not to break
connectivity") and seed 004 §II (live migration of a job that "needs continuous network
access ... during and after live migration"). A tenant host is a namespace; its processes
and their open TCP connections live in it. Moving it to another site of its layer-2
network is make-before-break:

1. the namespace is renamed to the new site's name (a bind mount: the namespace, its
   processes and sockets are untouched);
2. a new link is made from it to the tenant's router on the new site, with the host's MAC
   and MTU, and left down;
3. the switch: the old link goes down and away, the new one takes the name ``eth0``, the
   address and the default route (one ``ip -batch``); its gateway is the same anycast
   address and MAC on every site, so the host's ARP cache stays right;
4. a gratuitous ARP from the host teaches every bridge and VXLAN port of the network where
   its MAC now is;
5. the lab converges to the new intent through the apply engine (the routers' /32 routes
   for the host move to the new site; nothing else changes).

While it runs, another host of the tenant pings the moving one every 10 ms; the downtime
is the longest gap between replies, less one interval.

Everything that can be checked is checked before the first step (tools, the lab's state
directory and locks, the router and bridge on the new site). Each step is skipped when
already done, so a move cut off halfway is completed by running the same move again (not
``up``: until the move ends, the lab's intent still has the host on its old site).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from polynimbus import names
from polynimbus.apply import Change
from polynimbus.errors import IntentError, PolynimbusError, Problem
from polynimbus.intent.models import Intent, TenantHostSpec
from polynimbus.plan.build import build_plan
from polynimbus.plan.model import Plan

PROBE_INTERVAL_MS = 10
"""Gap between the downtime probe's echo requests, in ms."""
NETNS_DIR = Path("/run/netns")

Progress = Callable[[str], None]


class MoveError(PolynimbusError):
    """A move cannot be made (bad target, a site the network does not span...)."""


@dataclass
class MoveResult:
    """What a move did.

    Attributes:
        intent: the lab's intent after the move.
        host: ``TENANT:SITE/HOST`` after the move.
        changes: what the apply engine changed after the switch.
        correspondent: ``TENANT:SITE/HOST`` that pinged the moving host, or ``None``.
        sent, received: its echo requests and replies.
        downtime_ms: longest gap between two replies less one interval, ms (``None``
            without a correspondent or without replies).
        switch_ms: how long steps 2-4 took, ms.
        total_s: the whole move, s.
    """

    intent: Intent
    host: str
    changes: list[Change] = field(default_factory=list)
    correspondent: str | None = None
    sent: int = 0
    received: int = 0
    downtime_ms: float | None = None
    switch_ms: float = 0.0
    total_s: float = 0.0


def parse_target(target: str) -> tuple[str, str, str]:
    """``TENANT:SITE/HOST`` -> ``(tenant, site, host)``.

    Raises:
        MoveError: not of that form.
    """
    m = re.fullmatch(r"([a-z0-9-]+):([a-z0-9-]+)/([a-z0-9-]+)", target)
    if not m:
        raise MoveError(f"bad host {target!r}", "write TENANT:SITE/HOST, e.g. acme:i3s/c1")
    return m.group(1), m.group(2), m.group(3)


def moved_intent(intent: Intent, tenant: str, site: str, host: str, to_site: str) -> Intent:
    """``intent`` with host ``SITE/HOST`` of ``tenant`` on ``to_site``, keeping its
    address (written out, so that it cannot change with the move).

    Raises:
        MoveError: no such tenant or host, the same site, or ``to_site`` is not a site of
            the host's network (the hint says how to extend it).
        IntentError: the new intent is invalid (e.g. a host of that name is already there).
    """
    plan = build_plan(intent)
    try:
        t = plan.tenant(tenant)
    except KeyError:
        known = ", ".join(x.name for x in plan.tenants) or "none"
        raise MoveError(f"no tenant {tenant!r}", f"tenants: {known}") from None
    try:
        net, h = t.host(f"{site}/{host}")
    except KeyError:
        known = ", ".join(f"{tenant}:{x.key}" for _, x in t.hosts()) or "none"
        raise MoveError(f"no host {tenant}:{site}/{host}", f"hosts: {known}") from None
    if to_site == site:
        raise MoveError(f"{tenant}:{site}/{host} is already on {site}", "name another site")
    if to_site not in net.sites:
        sites = [s.name for s in plan.sites]
        if to_site not in sites:
            raise MoveError(f"no site named {to_site!r}", "sites: " + ", ".join(sites))
        raise MoveError(
            f"network {net.name!r} of tenant {tenant!r} does not span {to_site!r} (it spans "
            f"{', '.join(net.sites)}): a host keeps its address only within its layer-2 "
            "network",
            f"extend the network first: add {to_site} to sites: of network {net.name!r} in "
            f"the intent and run up (or through the API: POST /v1/tenants/{tenant}/networks/"
            f"{net.name}/sites), then move",
        )
    data = intent.model_dump(mode="json", by_alias=True, exclude_none=True)
    ti = next(i for i, x in enumerate(intent.tenants) if x.name == tenant)
    ni = next(i for i, x in enumerate(intent.tenants[ti].networks) if x.name == net.name)
    hosts = data["tenants"][ti]["networks"][ni]["hosts"]
    for k, spec in enumerate(intent.tenants[ti].networks[ni].hosts):
        if spec.name == f"{site}/{host}":
            hosts[k] = TenantHostSpec(
                name=f"{to_site}/{host}", address=IPv4Address(h.address)
            ).model_dump(mode="json", exclude_none=True)
    import yaml

    from polynimbus.intent.load import load_intent_text

    try:
        return load_intent_text(yaml.safe_dump(data, sort_keys=False), "the moved intent")
    except IntentError as exc:
        raise IntentError(
            [
                Problem(p.path, p.message, p.hint or "choose another site or host name")
                for p in exc.problems
            ],
            "the lab's intent after the move",
        ) from None


def rename_netns(old: str, new: str) -> None:
    """Give namespace ``old`` the name ``new`` (``ip netns`` names are bind mounts of the
    namespace on ``/run/netns/NAME``; the namespace itself, its processes and sockets do
    not change). Nothing happens when ``new`` exists and ``old`` does not.

    Raises:
        MoveError: ``old`` is missing and ``new`` too, or ``new`` exists beside ``old``.
    """
    src, dst = NETNS_DIR / old, NETNS_DIR / new
    if not src.exists():
        if dst.exists():
            return
        raise MoveError(f"namespace {old} does not exist", "is the lab up? run: polynimbus up")
    if dst.exists():
        raise MoveError(f"namespace {new} exists already", "remove it, or move another host")
    fd = os.open(dst, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    try:
        subprocess.run(["mount", "--bind", str(src), str(dst)], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        dst.unlink(missing_ok=True)
        raise MoveError(f"cannot rename namespace {old}: {exc.stderr.decode().strip()}") from None
    subprocess.run(["umount", str(src)], check=False, capture_output=True)
    src.unlink(missing_ok=True)


def gratuitous_arp(ns: str, ifname: str, mac: str, address: str) -> None:
    """Broadcast a gratuitous ARP request (RFC 5227 §3, "ARP Announcement") for
    ``address`` at ``mac`` from ``ifname`` in ``ns``, so that bridges and VXLAN ports
    learn where the MAC now is."""
    from polynimbus.targets.lab.netns import in_netns

    hw = bytes.fromhex(mac.replace(":", ""))
    ip = socket.inet_aton(address)
    frame = (
        b"\xff" * 6
        + hw
        + struct.pack("!H", 0x0806)
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
        + hw
        + ip
        + b"\x00" * 6
        + ip
    )

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            for _ in range(2):
                s.send(frame)

    in_netns(ns, send)


def _correspondent(plan: Plan, tenant: str, key: str, chosen: str | None) -> tuple[str, str] | None:
    """``(TENANT:SITE/HOST, namespace)`` of the host that pings the moving one."""
    t = plan.tenant(tenant)
    if chosen is not None:
        ct, cs, ch = parse_target(chosen)
        if ct != tenant:
            raise MoveError(
                f"{chosen} is not a host of tenant {tenant!r}",
                "the probe must come from the same tenant (tenants cannot reach each other)",
            )
        return chosen, names.tenant_host_ns(plan.name, cs, ct, ch)
    net, _ = t.host(key)
    others = [h for h in net.hosts if h.key != key] + [h for _, h in t.hosts() if h.key != key]
    if not others:
        return None
    h = others[0]
    return f"{tenant}:{h.key}", names.tenant_host_ns(plan.name, h.site, tenant, h.name)


def downtime_from(
    text: str, interval_ms: float = PROBE_INTERVAL_MS, end: float | None = None
) -> tuple[int, float | None]:
    """Replies and downtime from ``ping -D`` output: the longest gap between two replies'
    timestamps, or between the last reply and ``end`` (when the probe stopped, wall-clock
    seconds: a host that never came back has a long last gap), less one interval, in ms
    (0.0 when none was missed); ``None`` without two replies."""
    stamps = [float(m) for m in re.findall(r"^\[(\d+\.\d+)\].*bytes from", text, re.M)]
    received = len(stamps)
    if received < 2:
        return received, None
    if end is not None:
        stamps.append(max(end, stamps[-1]))
    gap = max(b - a for a, b in zip(stamps, stamps[1:], strict=False)) * 1000
    return received, round(max(gap - interval_ms, 0.0), 1)


def move_host(
    intent: Intent,
    target: str,
    to_site: str,
    state_dir: Path | None = None,
    progress: Progress | None = None,
    correspondent: str | None = None,
) -> MoveResult:
    """Move tenant host ``target`` (``TENANT:SITE/HOST``) of the running lab of ``intent``
    to ``to_site``, measuring the downtime (see the module docstring).

    Args:
        intent: the lab's current intent.
        correspondent: ``TENANT:SITE/HOST`` that pings the moving host (default: another
            host of its network, else of its tenant).
        progress: called with a line of text before each step.

    Raises:
        MoveError: the move is impossible (no such host, a site its network does not span).
        IntentError: the moved intent is invalid.
        CapabilityError, StateError, ApplyError: as :func:`polynimbus.orchestrate.lab_up`.
    """
    from pyroute2 import NetlinkError

    from polynimbus import capabilities, state
    from polynimbus.orchestrate import check_lab_state, lab_locks, lab_requirements

    capabilities.require_root("move")
    tenant, site, host = parse_target(target)
    new_intent = moved_intent(intent, tenant, site, host, to_site)
    lab = intent.name
    if state_dir is None:  # where the running lab keeps its state, like up found it
        state_dir = state.recorded_state_dir(lab) or state.resolve(lab, None)
    capabilities.require_tools(lab_requirements(intent.overlay.transport))
    with lab_locks(lab):  # no up, restore or API write between the rename and the end
        check_lab_state(lab, state.resolve(lab, state_dir))  # before anything changes
        old_plan = build_plan(intent)
        _check_destination(old_plan, tenant, f"{site}/{host}", to_site)
        try:
            return _move(old_plan, new_intent, target, to_site, state_dir, progress, correspondent)
        except (OSError, IndexError, NetlinkError) as exc:  # the kernel refused midway
            raise MoveError(
                f"the move of {target} to {to_site} stopped: {exc}",
                "run the same move again to complete it",
            ) from None


def _check_destination(plan: Plan, tenant: str, key: str, to_site: str) -> None:
    """The tenant's router on ``to_site`` and the network's bridge there exist.

    Raises:
        MoveError: they do not (the lab does not match its intent: run up first).
    """
    from polynimbus.targets.lab import netns

    net, _ = plan.tenant(tenant).host(key)
    router = names.tenant_router_ns(plan.name, to_site, tenant)
    bridge = names.tenant_bridge_if(net.index)
    ok = netns.exists(router)
    if ok:
        with netns.ipr(router) as ipr:
            ok = bool(ipr.link_lookup(ifname=bridge))
    if not ok:
        raise MoveError(
            f"tenant {tenant!r} has no router with network {net.name!r} on {to_site} in the "
            "lab (it does not match its intent)",
            "run: polynimbus up with the lab's intent (polynimbus export), then move",
        )


def _move(
    old_plan: Plan,
    new_intent: Intent,
    target: str,
    to_site: str,
    state_dir: Path,
    progress: Progress | None,
    correspondent: str | None,
) -> MoveResult:
    from polynimbus.node import VethPeer
    from polynimbus.orchestrate import lab_up
    from polynimbus.targets.lab import netlink, netns

    say = progress or (lambda _: None)
    start = time.monotonic()
    tenant, site, host = parse_target(target)
    new_plan = build_plan(new_intent)
    lab = old_plan.name
    net, h = old_plan.tenant(tenant).host(f"{site}/{host}")
    old_ns = names.tenant_host_ns(lab, site, tenant, host)
    new_ns = names.tenant_host_ns(lab, to_site, tenant, host)
    if not netns.exists(old_ns) and not netns.exists(new_ns):
        raise MoveError(f"{target} is not running in the lab {lab!r}", "run: polynimbus up")
    result = MoveResult(new_intent, f"{tenant}:{to_site}/{host}")
    probe: subprocess.Popen[str] | None = None
    corr = _correspondent(old_plan, tenant, f"{site}/{host}", correspondent)
    if corr is not None and not netns.exists(corr[1]):
        raise MoveError(
            f"no host {corr[0]} in the lab {lab!r} to ping from",
            "give --from another host of the tenant, TENANT:SITE/HOST",
        )
    if corr is not None and corr[0] != target:
        result.correspondent = corr[0]
        say(f"pinging {h.address} from {corr[0]} every {PROBE_INTERVAL_MS} ms")
        probe = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                corr[1],
                "ping",
                "-D",
                "-n",
                "-i",
                str(PROBE_INTERVAL_MS / 1000),
                "-W",
                "1",
                h.address,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(0.3)  # replies before the move, so a gap can be seen
    try:
        say(f"renaming {old_ns} to {new_ns} (its processes and connections stay)")
        rename_netns(old_ns, new_ns)
        router = names.tenant_router_ns(lab, to_site, tenant)
        port = names.tenant_port_if(net.index, next(i for i, x in enumerate(net.hosts) if x is h))
        t0 = time.monotonic()
        say(f"linking it to {router} (make before break)")
        if not _on_router(new_ns, router, port):
            with netns.ipr(new_ns) as ipr:
                for stale in ("pnmove0",):
                    found = ipr.link_lookup(ifname=stale)
                    if found:
                        ipr.link("del", index=found[0])
            netlink.delete_peer_end(VethPeer(router, port))
            with netns.ipr(new_ns) as ipr:
                fd = os.open(f"/run/netns/{router}", os.O_RDONLY)
                try:
                    ipr.link(
                        "add",
                        ifname="pnmove0",
                        kind="veth",
                        peer={"ifname": port, "net_ns_fd": fd},
                    )
                finally:
                    os.close(fd)
                i = ipr.link_lookup(ifname="pnmove0")[0]
                ipr.link("set", index=i, address=h.mac, mtu=new_plan.tenant_mtu)
            with netns.ipr(router) as ipr:
                j = ipr.link_lookup(ifname=port)[0]
                br = ipr.link_lookup(ifname=names.tenant_bridge_if(net.index))[0]
                ipr.link("set", index=j, mtu=new_plan.tenant_mtu, master=br, state="up")
            say("switching over")
            batch = (
                f"link set dev {names.HOST_IF} down\n"
                f"link del dev {names.HOST_IF}\n"
                f"link set dev pnmove0 name {names.HOST_IF}\n"
                f"addr add {h.address}/{net.prefixlen} dev {names.HOST_IF}\n"
                f"link set dev {names.HOST_IF} up\n"
                f"route replace default via {net.router_address} dev {names.HOST_IF}\n"
            )
            res = subprocess.run(
                ["ip", "-n", new_ns, "-force", "-batch", "-"],
                input=batch,
                capture_output=True,
                text=True,
                check=False,
            )
            if res.returncode != 0:
                raise MoveError(
                    f"the switch-over in {new_ns} failed: {res.stderr.strip()}",
                    "run the same move again to complete it",
                )
        gratuitous_arp(new_ns, names.HOST_IF, h.mac, h.address)
        result.switch_ms = round((time.monotonic() - t0) * 1000, 1)
        say("converging the routers")
        applied = lab_up(new_intent, state_dir=state_dir, only_changes=True, locked=True)
        result.changes = applied.changes
        if probe is not None:
            time.sleep(0.5)  # replies after the move
    finally:
        if probe is not None:
            end = time.time()  # ping -D stamps are wall-clock seconds
            probe.send_signal(signal.SIGINT)
            try:
                text, _ = probe.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                probe.kill()
                text, _ = probe.communicate()
            m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
            if m:
                result.sent = int(m.group(1))
            result.received, result.downtime_ms = downtime_from(text, end=end)
    result.total_s = round(time.monotonic() - start, 2)
    return result


def _on_router(host_ns: str, router: str, port: str) -> bool:
    """Whether ``host_ns``'s ``eth0`` and ``router``'s ``port`` are the two ends of one
    veth pair (the switch is done): each names the other's index as its peer."""
    from polynimbus.targets.lab import netns

    def index_and_peer(ns: str, ifname: str) -> tuple[int, int] | None:
        if not netns.exists(ns):
            return None
        with netns.ipr(ns) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return None
            link = ipr.get_links(found[0])[0]
            return int(link["index"]), int(link.get("IFLA_LINK") or 0)

    a = index_and_peer(host_ns, names.HOST_IF)
    b = index_and_peer(router, port)
    return a is not None and b is not None and a[1] == b[0] and b[1] == a[0]
