"""All-pairs reachability and RTT between hosts, with fping from each host's namespace."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from polynimbus import names
from polynimbus.plan.model import Plan


@dataclass(frozen=True)
class PairResult:
    """One ordered host pair.

    Attributes:
        src, dst: ``SITE/HOST``.
        reachable: at least one echo reply came back.
        rtt_ms: mean round-trip time of the replies in ms, or ``None``.
        loss: fraction of probes lost, 0.0 - 1.0.
    """

    src: str
    dst: str
    reachable: bool
    rtt_ms: float | None
    loss: float


_LINE = re.compile(r"^(\S+)\s+:\s+(.*)$")


def parse_fping(text: str) -> dict[str, list[float | None]]:
    """Parse ``fping -C N -q`` output: ``addr : 0.05 0.04 -`` -> ``{addr: [0.05, 0.04, None]}``."""
    out: dict[str, list[float | None]] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        vals: list[float | None] = []
        for tok in m.group(2).split():
            try:
                vals.append(float(tok))
            except ValueError:
                vals.append(None)
        out[m.group(1)] = vals
    return out


def ping_all(
    plan: Plan, count: int = 3, interval_ms: int = 20, timeout_ms: int = 1000
) -> list[PairResult]:
    """Ping every host from every other host through the lab.

    Args:
        count: echo requests per pair.
        interval_ms: gap between requests to one target, in ms (fping ``-p``).
        timeout_ms: how long to wait for each reply, in ms.

    Returns:
        one result per ordered pair of distinct hosts, sources in plan order.
    """
    hosts = [(s.name, h.name, h.address) for s in plan.sites for h in s.hosts]
    by_addr = {addr: f"{site}/{host}" for site, host, addr in hosts}

    def from_host(src: tuple[str, str, str]) -> list[PairResult]:
        site, host, addr = src
        targets = [a for _, _, a in hosts if a != addr]
        if not targets:
            return []
        ns = names.host_ns(plan.name, site, host)
        res = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "fping",
                "-C",
                str(count),
                "-q",
                "-p",
                str(interval_ms),
                "-t",
                str(timeout_ms),
                "-r",
                "0",
                *targets,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        parsed = parse_fping(res.stderr + res.stdout)
        out = []
        for t in targets:
            vals = parsed.get(t, [None] * count)
            got = [v for v in vals if v is not None]
            out.append(
                PairResult(
                    src=f"{site}/{host}",
                    dst=by_addr[t],
                    reachable=bool(got),
                    rtt_ms=round(sum(got) / len(got), 3) if got else None,
                    loss=round(1 - len(got) / max(len(vals), 1), 3),
                )
            )
        return out

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [r for rs in pool.map(from_host, hosts) for r in rs]
