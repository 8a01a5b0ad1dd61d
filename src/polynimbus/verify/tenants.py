"""The tenant matrices: reachability within each tenant, isolation between tenants.

Seed 001 §2: "isolation between users should be enforced at different degrees". Within a
tenant every host must reach every other, across its networks and sites (over layer 2
inside a stretched network). Between tenants nothing may pass, even to an address both
use: from every host of tenant A, every address of tenant B's hosts is pinged, and B's
hosts must not have received a single echo request (their kernel's ``Icmp: InEchos``
counter, per namespace in ``/proc/net/snmp``, does not move; an A host with the same
address may answer, which is A's own business). A positive control in the same run (B's
router pings each B host) proves the counters count.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from polynimbus import names
from polynimbus.errors import VerifyError
from polynimbus.plan.model import Plan
from polynimbus.plan.tenants import NetworkPlan, TenantHostPlan, TenantPlan
from polynimbus.verify.proc import STUCK_HINT
from polynimbus.verify.reachability import fping as _fping
from polynimbus.verify.reachability import summarise


@dataclass(frozen=True)
class TenantPair:
    """One ordered pair of a tenant's hosts.

    Attributes:
        tenant: the tenant.
        src, dst: ``SITE/HOST``.
        reachable: at least one echo reply came back.
        rtt_ms: mean RTT of the replies in ms, or ``None``.
        loss: fraction of probes lost, 0.0 - 1.0.
        layer2: both on one stretched network, on different sites (the path is VXLAN).
    """

    tenant: str
    src: str
    dst: str
    reachable: bool
    rtt_ms: float | None
    loss: float
    layer2: bool = False


@dataclass
class TenantIsolation:
    """Tenant ``src`` probing every address of tenant ``dst``.

    Attributes:
        probes: echo requests sent (one per source host and destination address).
        received: echo requests each ``dst`` host received meanwhile (must be 0).
        control: echo requests each ``dst`` host received from its own router afterwards
            (must be at least 1: the positive control).
    """

    src: str
    dst: str
    probes: int = 0
    received: dict[str, int] = field(default_factory=dict)
    control: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No echo request crossed, and every control probe was counted."""
        return not any(self.received.values()) and all(v > 0 for v in self.control.values())


def _ns(plan: Plan, tenant: TenantPlan, h: TenantHostPlan) -> str:
    return names.tenant_host_ns(plan.name, h.site, tenant.name, h.name)


def tenant_reachability(plan: Plan, count: int = 3) -> list[TenantPair]:
    """Ping every host of each tenant from every other host of the same tenant.

    Returns:
        one result per ordered pair, tenants and sources in plan order.

    Raises:
        VerifyError: an fping could not run or timed out.
    """
    jobs: list[tuple[TenantPlan, NetworkPlan, TenantHostPlan]] = [
        (t, n, h) for t in plan.tenants for n, h in t.hosts()
    ]

    def from_host(job: tuple[TenantPlan, NetworkPlan, TenantHostPlan]) -> list[TenantPair]:
        t, n, h = job
        others = [(m, o) for m, o in t.hosts() if o is not h]
        if not others:
            return []
        targets = [o.address for _, o in others]
        parsed = _fping(
            _ns(plan, t, h), targets, count, f"fping from {t.name}:{h.key} ({_ns(plan, t, h)})"
        )
        out = []
        for m, o in others:
            reachable, rtt, loss = summarise(parsed[o.address])
            out.append(
                TenantPair(
                    tenant=t.name,
                    src=h.key,
                    dst=o.key,
                    reachable=reachable,
                    rtt_ms=rtt,
                    loss=loss,
                    layer2=m is n and n.layer2 and o.site != h.site,
                )
            )
        return out

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [r for rs in pool.map(from_host, jobs) for r in rs]


def in_echos(ns: str) -> int:
    """Echo requests the namespace's kernel has received (``Icmp: InEchos`` of its
    ``/proc/net/snmp``, read by a thread inside it).

    Raises:
        VerifyError: the counter could not be read.
    """
    from polynimbus.targets.lab.netns import in_netns

    def read() -> str:
        with open("/proc/thread-self/net/snmp", encoding="ascii") as f:
            return f.read()

    try:
        text = in_netns(ns, read)
    except OSError as exc:
        raise VerifyError(f"cannot read ICMP counters in {ns}: {exc}", STUCK_HINT) from None
    lines = [line.split() for line in text.splitlines() if line.startswith("Icmp:")]
    if len(lines) >= 2 and "InEchos" in lines[0]:
        return int(lines[1][lines[0].index("InEchos")])
    raise VerifyError(f"no ICMP counters in {ns}", STUCK_HINT)


PROVIDER = "(provider)"
"""The name the isolation matrix gives the provider overlay's hosts (the sites' hosts)."""


@dataclass(frozen=True)
class _Member:
    key: str
    ns: str
    address: str
    control_ns: str  # a node that reaches it (its router or gateway)


def _groups(plan: Plan) -> dict[str, list[_Member]]:
    groups: dict[str, list[_Member]] = {}
    provider = [
        _Member(
            f"{s.name}/{h.name}",
            names.host_ns(plan.name, s.name, h.name),
            h.address,
            names.gateway_ns(plan.name, s.name),
        )
        for s in plan.sites
        for h in s.hosts
    ]
    if provider:
        groups[PROVIDER] = provider
    for t in plan.tenants:
        groups[t.name] = [
            _Member(
                h.key,
                _ns(plan, t, h),
                h.address,
                names.tenant_router_ns(plan.name, h.site, t.name),
            )
            for _, h in t.hosts()
        ]
    return groups


def _counters(members: list[_Member]) -> dict[str, int]:
    """``InEchos`` of each member, by namespace (host keys repeat across tenants)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(lambda m: in_echos(m.ns), members))
    return {m.ns: n for m, n in zip(members, counts, strict=True)}


def tenant_isolation(plan: Plan) -> list[TenantIsolation]:
    """For each ordered pair ``(a, b)`` of tenants and the provider overlay
    (:data:`PROVIDER`, the sites' hosts), at least one a tenant: every host of ``a`` pings
    every address of ``b``'s hosts; ``b``'s hosts must count no echo request meanwhile.
    One round per ``a`` (its hosts probe every other group at once; counters read before
    and after, in parallel), then one control round (each host pinged by its router or
    gateway must count it).

    Raises:
        VerifyError: a probe could not run.
    """
    groups = _groups(plan)
    everyone = [m for ms in groups.values() for m in ms]
    out: dict[tuple[str, str], TenantIsolation] = {}
    for a, senders in groups.items():
        victims = [m for g, ms in groups.items() if g != a for m in ms]
        if not senders or not victims:
            continue
        targets = sorted({v.address for v in victims})
        before = _counters(victims)

        def probe(m: _Member, a: str = a, targets: list[str] = targets) -> int:
            _fping(m.ns, targets, 1, f"isolation probe from {a}:{m.key}")
            return len(targets)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(probe, senders))
        after = _counters(victims)
        for b, members in groups.items():
            if b == a or not members:
                continue
            res = TenantIsolation(a, b)
            addresses = {m.address for m in members}
            res.probes = len(senders) * len(addresses)
            res.received = {m.key: after[m.ns] - before[m.ns] for m in members}
            out[(a, b)] = res
    if out:  # the positive control: each host counts its router's (or gateway's) ping
        before = _counters(everyone)

        def control(m: _Member) -> None:
            _fping(m.control_ns, [m.address], 1, f"control probe from {m.control_ns}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(control, everyone))
        after = _counters(everyone)
        for (_, b), res in out.items():
            res.control = {m.key: after[m.ns] - before[m.ns] for m in groups[b]}
    return list(out.values())
