"""All-pairs reachability and RTT between hosts, with fping from each host's namespace."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from polynimbus import names
from polynimbus.errors import VerifyError
from polynimbus.plan.model import Plan
from polynimbus.verify.proc import STUCK_HINT, run_in_ns

FPING_GAP_MS = 10
"""fping's default gap between packets to different targets (``-i``), in ms."""
MARGIN_S = 10.0
"""Slack added to every fping deadline, in s: namespace entry, a loaded machine."""


@dataclass(frozen=True)
class PairResult:
    """One ordered host pair.

    Attributes:
        src, dst: ``SITE/HOST``.
        reachable: at least one echo reply came back.
        rtt_ms: mean round-trip time of the replies in ms, or ``None``.
        loss: fraction of probes lost, 0.0 - 1.0.
        family: ``ipv4`` or ``ipv6`` (a dual-stack overlay is checked in both).
    """

    src: str
    dst: str
    reachable: bool
    rtt_ms: float | None
    loss: float
    family: str = "ipv4"


_LINE = re.compile(r"^(\S+)\s+:\s+(.*)$")
_VALUE = re.compile(r"^(?:-|\d+(?:\.\d+)?)$")


def parse_fping(text: str) -> dict[str, list[float | None]]:
    """Parse ``fping -C N -q`` output (fping writes it to stderr).

    Each summary line ``ADDR : V1 V2 ...`` (the address padded with spaces, each value an
    RTT in ms or ``-`` for a lost probe) becomes ``{ADDR: [V1, V2, ...]}``, a lost probe as
    ``None``: ``"10.1.0.1 : 0.05 -"`` -> ``{"10.1.0.1": [0.05, None]}``. Any other line (ICMP
    errors, name lookup failures, per-probe lines without ``-q``) is ignored. When an
    address has several summary lines, the last one wins.
    """
    out: dict[str, list[float | None]] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        tokens = m.group(2).split()
        if not tokens or not all(_VALUE.match(t) for t in tokens):
            continue
        out[m.group(1)] = [None if t == "-" else float(t) for t in tokens]
    return out


def fping_timeout_s(count: int, interval_ms: int, timeout_ms: int, targets: int) -> float:
    """Deadline of one ``fping -C count -p interval_ms -t timeout_ms`` run over ``targets``
    addresses, in s: ``count`` rounds (each the longer of the interval and one gap per
    target), the wait for the last reply, and :data:`MARGIN_S`."""
    per_round_ms = max(interval_ms, targets * FPING_GAP_MS)
    return (count * per_round_ms + timeout_ms) / 1000 + MARGIN_S


def fping(
    ns: str,
    targets: list[str],
    count: int,
    what: str,
    interval_ms: int = 20,
    timeout_ms: int = 1000,
) -> dict[str, list[float | None]]:
    """``fping -C count`` from namespace ``ns`` to ``targets``: each target's RTTs in ms
    (``None`` for a lost probe), see :func:`parse_fping`.

    Args:
        what: what the probe is, for error messages (e.g. ``"fping from X"``).
        interval_ms, timeout_ms: fping ``-p`` and ``-t``, in ms.

    Raises:
        VerifyError: it did not finish within :func:`fping_timeout_s`, or gave no result for
            some target (it could not run: a missing namespace, a bad argument).
    """
    argv = ["fping", "-C", str(count), "-q", "-p", str(interval_ms), "-t", str(timeout_ms)]
    res = run_in_ns(
        ns,
        [*argv, "-r", "0", *targets],
        fping_timeout_s(count, interval_ms, timeout_ms, len(targets)),
        what,
    )
    parsed = parse_fping(res.stderr + "\n" + res.stdout)
    missing = [t for t in targets if t not in parsed]
    if missing:
        said = " ".join((res.stderr + res.stdout).split())[:300] or "no output"
        raise VerifyError(
            f"{what} exited {res.returncode} without a result for {', '.join(missing)}: {said}",
            STUCK_HINT,
        )
    return parsed


def summarise(values: list[float | None]) -> tuple[bool, float | None, float]:
    """``(reachable, mean RTT in ms or None, loss 0.0-1.0)`` of one target's fping values."""
    got = [v for v in values if v is not None]
    rtt = round(sum(got) / len(got), 3) if got else None
    return bool(got), rtt, round(1 - len(got) / max(len(values), 1), 3)


def require_host_pairs(plan: Plan) -> None:
    """Raise unless the plan has at least two hosts (at least one pair to ping), the
    tenants' hosts counted.

    Raises:
        VerifyError: fewer than two hosts.
    """
    n = sum(len(s.hosts) for s in plan.sites) + sum(len(t.hosts()) for t in plan.tenants)
    if n < 2:
        raise VerifyError(
            f"nothing to verify: the lab {plan.name!r} has {n} host{'' if n == 1 else 's'}, "
            "so no host pair to ping",
            "add hosts to at least two sites (or two hosts to one site) in the intent, "
            "then run: polynimbus up FILE",
        )


def ping_all(
    plan: Plan, count: int = 3, interval_ms: int = 20, timeout_ms: int = 1000
) -> list[PairResult]:
    """Ping every host from every other host through the lab, one fping per source host
    and family (IPv6 too on a dual-stack overlay).

    Args:
        count: echo requests per pair.
        interval_ms: gap between requests to one target, in ms (fping ``-p``).
        timeout_ms: how long to wait for each reply, in ms (fping ``-t``).

    Returns:
        one result per ordered pair of distinct hosts and family, sources in plan order,
        IPv4 first.

    Raises:
        VerifyError: fewer than two hosts; an fping did not finish within
            :func:`fping_timeout_s`; or an fping did not report on every target (it could
            not run: a missing namespace, a bad argument).
    """
    if sum(len(s.hosts) for s in plan.sites) < 2:
        raise VerifyError(
            f"the lab {plan.name!r} has fewer than two site hosts to ping",
            "add hosts to the sites in the intent, then run: polynimbus up FILE",
        )
    hosts = [(s.name, h.name, h.address, "ipv4") for s in plan.sites for h in s.hosts]
    if plan.ipv6:
        hosts += [
            (s.name, h.name, h.address6, "ipv6") for s in plan.sites for h in s.hosts if h.address6
        ]
    by_addr = {addr: f"{site}/{host}" for site, host, addr, _ in hosts}

    def from_host(src: tuple[str, str, str, str]) -> list[PairResult]:
        site, host, addr, family = src
        targets = [a for _, _, a, f in hosts if a != addr and f == family]
        ns = names.host_ns(plan.name, site, host)
        parsed = fping(
            ns, targets, count, f"fping from {site}/{host} ({ns})", interval_ms, timeout_ms
        )
        out = []
        for t in targets:
            reachable, rtt, loss = summarise(parsed[t])
            out.append(
                PairResult(
                    src=f"{site}/{host}",
                    dst=by_addr[t],
                    reachable=reachable,
                    rtt_ms=rtt,
                    loss=loss,
                    family=family,
                )
            )
        return out

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [r for rs in pool.map(from_host, hosts) for r in rs]
