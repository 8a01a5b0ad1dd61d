"""The verify report: reachability pairs and throughput, as a document (``verify --json``).

Shape (``polynimbus.verify/v1``)::

    {"schema": "polynimbus.verify/v1", "lab": NAME, "ok": bool,
     "pairs": [{"src": "SITE/HOST", "dst": "SITE/HOST", "reachable": bool,
                "rtt_ms": float|null, "loss": float}],
     "throughput": [{"src": SITE, "dst": SITE, "overlay_bps": float|null,
                     "underlay_bps": float|null, "ratio": float|null}]}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from polynimbus import capabilities
from polynimbus.errors import LabNotFoundError
from polynimbus.plan.model import Plan
from polynimbus.targets.lab import list_lab_namespaces
from polynimbus.verify.reachability import PairResult, ping_all
from polynimbus.verify.throughput import ThroughputResult, measure_pairs

VERIFY_SCHEMA = "polynimbus.verify/v1"


@dataclass
class VerifyReport:
    """Results of ``verify``; ``ok`` is False when any pair that should reach does not."""

    lab: str
    pairs: list[PairResult] = field(default_factory=list)
    throughput: list[ThroughputResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.reachable for p in self.pairs)

    @property
    def unreachable(self) -> list[PairResult]:
        return [p for p in self.pairs if not p.reachable]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": VERIFY_SCHEMA,
            "lab": self.lab,
            "ok": self.ok,
            "pairs": [asdict(p) for p in self.pairs],
            "throughput": [{**asdict(t), "ratio": t.ratio} for t in self.throughput],
        }


def run_verify(
    plan: Plan, throughput: bool = False, seconds: float = 2.0, progress: object = None
) -> VerifyReport:
    """Check the running lab of ``plan``.

    Raises:
        CapabilityError: not root, or fping/iperf3 missing.
        LabNotFoundError: the lab is not up.
    """
    capabilities.require_root("verify")
    capabilities.require_tools(["fping"] + (["iperf3", "nft"] if throughput else []))
    if not list_lab_namespaces(plan.name):
        raise LabNotFoundError(f"the lab {plan.name!r} is not up", "run: polynimbus up FILE")
    report = VerifyReport(plan.name, pairs=ping_all(plan))
    if throughput:
        report.throughput = measure_pairs(plan, seconds, progress)
    return report
