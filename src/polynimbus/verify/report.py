"""The verify report: reachability pairs, throughput, drift, as a document (``verify --json``).

Shape (``polynimbus.verify/v2``, see ``docs/plan-schema.md``)::

    {"schema": "polynimbus.verify/v2", "lab": NAME, "ok": bool,
     "pairs": [{"src": "SITE/HOST", "dst": "SITE/HOST", "reachable": bool,
                "rtt_ms": float|null, "loss": float}],
     "throughput": [{"src": SITE, "dst": SITE, "overlay_bps": float|null,
                     "underlay_bps": float|null, "ratio": float|null}],
     "chains": [{"chain", "direction", "family", "src", "dst", "ok", "ping", "tcp_bps",
                 "hops": [{"kind", "site", "node", "behaviour", "sid", "segments",
                           "packets"}], "errors": [str]}],
     "isolation": {"ok": bool, "pairs": [[SRC, DST, FAMILY]], "entered": {SERVICE: int},
                   "control": {SERVICE: int}},
     "tenants": {"pairs": [{"tenant", "src", "dst", "reachable", "rtt_ms", "loss",
                            "layer2"}],
                 "isolation": [{"src": TENANT, "dst": TENANT, "probes": int,
                                "received": {HOST: int}, "control": {HOST: int},
                                "ok": bool}]},
     "drift": [str], "warnings": [str]}

``pairs`` has a ``family`` (``ipv4``/``ipv6``) per entry; ``chains`` and ``isolation`` are
empty without SRv6 chains; ``tenants`` is ``null`` without tenants (``(provider)`` names
the sites' own hosts in the isolation matrix).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from polynimbus import capabilities, names
from polynimbus.errors import LabNotFoundError, VerifyError
from polynimbus.plan.model import Plan
from polynimbus.targets.lab import list_lab_namespaces
from polynimbus.verify.chains import ChainResult, IsolationResult, verify_chains
from polynimbus.verify.reachability import PairResult, ping_all, require_host_pairs
from polynimbus.verify.tenants import (
    TenantIsolation,
    TenantPair,
    tenant_isolation,
    tenant_reachability,
)
from polynimbus.verify.throughput import (
    Progress,
    ThroughputResult,
    check_seconds,
    measure_pairs,
    require_site_pairs,
)

VERIFY_SCHEMA = "polynimbus.verify/v2"


@dataclass
class VerifyReport:
    """Results of ``verify``.

    Attributes:
        lab: the lab (plan) name.
        pairs: one per ordered pair of distinct hosts.
        throughput: one per site pair (``--throughput``), else empty.
        drift: differences between the live lab and the plan, one text each.
        warnings: problems that did not fail a check (e.g. a probe port left open).
    """

    lab: str
    pairs: list[PairResult] = field(default_factory=list)
    throughput: list[ThroughputResult] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chains: list[ChainResult] = field(default_factory=list)
    isolation: IsolationResult | None = None
    tenant_pairs: list[TenantPair] = field(default_factory=list)
    tenant_isolation: list[TenantIsolation] = field(default_factory=list)
    has_tenants: bool = False

    @property
    def ok(self) -> bool:
        """True when there is at least one pair, every pair reaches (tenants' pairs too),
        every chain direction passed, no traffic outside a chain entered a function, no
        tenant received another's probe, and there is no drift."""
        return (
            bool(self.pairs or self.tenant_pairs)
            and all(p.reachable for p in self.pairs)
            and all(p.reachable for p in self.tenant_pairs)
            and all(i.ok for i in self.tenant_isolation)
            and not self.drift
            and all(c.ok for c in self.chains)
            and (self.isolation is None or self.isolation.ok)
        )

    @property
    def unreachable(self) -> list[PairResult]:
        return [p for p in self.pairs if not p.reachable]

    def to_dict(self) -> dict[str, Any]:
        """The ``verify --json`` document (shape in the module docstring)."""
        return {
            "schema": VERIFY_SCHEMA,
            "lab": self.lab,
            "ok": self.ok,
            "pairs": [asdict(p) for p in self.pairs],
            "throughput": [{**asdict(t), "ratio": t.ratio} for t in self.throughput],
            "chains": [c.to_dict() for c in self.chains],
            "isolation": {
                "ok": self.isolation.ok,
                "pairs": [list(p) for p in self.isolation.pairs],
                "entered": dict(self.isolation.entered),
                "control": dict(self.isolation.control),
            }
            if self.isolation is not None
            else None,
            "tenants": {
                "pairs": [asdict(p) for p in self.tenant_pairs],
                "isolation": [{**asdict(i), "ok": i.ok} for i in self.tenant_isolation],
            }
            if self.has_tenants
            else None,
            "drift": list(self.drift),
            "warnings": list(self.warnings),
        }


def run_verify(
    plan: Plan,
    throughput: bool = False,
    seconds: int = 2,
    progress: Progress | None = None,
    drift: list[str] | None = None,
) -> VerifyReport:
    """Check the running lab of ``plan``: all-pairs ping (both families on a dual-stack
    overlay), every SRv6 chain (:mod:`polynimbus.verify.chains`), the tenant matrices
    (:mod:`polynimbus.verify.tenants`), and iperf3 when ``throughput``.

    Args:
        seconds: length of each iperf3 flow, in s: a whole number >= 1.
        progress: optional callable ``(text, index, total)``, before each site pair and
            each chain probe (``total`` 0).
        drift: differences between the live lab and the plan, found by the caller; stored
            in the report (a non-empty list makes ``ok`` False).

    Raises:
        VerifyError: ``seconds`` is not a whole number >= 1; the plan has fewer than two
            hosts (or, with ``throughput``, fewer than two sites); a probe could not run
            or timed out; the probe port could not be opened on a gateway.
        CapabilityError: not root, or fping/iperf3/nft missing.
        LabNotFoundError: the lab is not up.
    """
    seconds = check_seconds(seconds)
    require_host_pairs(plan)
    if throughput:
        require_site_pairs(plan)
    capabilities.require_root("verify")
    capabilities.require_tools(["ip", "fping"] + (["iperf3", "nft"] if throughput else []))
    present = set(list_lab_namespaces(plan.name))
    if not present:
        raise LabNotFoundError(f"the lab {plan.name!r} is not up", "run: polynimbus up FILE")
    wanted = {names.host_ns(plan.name, s.name, h.name) for s in plan.sites for h in s.hosts}
    wanted |= {
        names.tenant_host_ns(plan.name, h.site, t.name, h.name)
        for t in plan.tenants
        for _, h in t.hosts()
    }
    missing = sorted(wanted - present)
    if missing:
        raise VerifyError(
            f"the lab {plan.name!r} does not match this intent: no namespace "
            + ", ".join(missing[:5])
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
            "verify the lab's own intent (polynimbus verify --lab "
            f"{plan.name}; a move or an API change updates it), or run: polynimbus up FILE",
        )
    provider_hosts = sum(len(s.hosts) for s in plan.sites)
    report = VerifyReport(
        plan.name,
        pairs=ping_all(plan) if provider_hosts >= 2 else [],
        drift=list(drift or []),
    )
    if plan.tenants:
        if progress is not None:
            progress("pinging within each tenant, and across tenants (isolation)", 0, 0)
        report.has_tenants = True
        report.tenant_pairs = tenant_reachability(plan)
        report.tenant_isolation = tenant_isolation(plan)
    if plan.srv6 is not None and plan.srv6.chains:
        capabilities.require_tools(["nft", "iperf3"])

        def chain_progress(text: str) -> None:
            if progress is not None:
                progress(text, 0, 0)

        report.chains, report.isolation = verify_chains(plan, chain_progress)
    if throughput:
        report.throughput = measure_pairs(plan, seconds, progress, report.warnings)
    return report
