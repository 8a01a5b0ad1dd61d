"""Self-loading periodic streams (SLoPS): the decisions of an available-bandwidth
estimate, without the probing (issue 9 builds the sender and receiver on top).

Seed 003 §4.3.3 measures the available bandwidth of its overlay with Pathload, which
implements SLoPS (Jain and Dovrolis, "End-to-end available bandwidth: measurement
methodology, dynamics, and relation with TCP throughput", IEEE/ACM ToN 11(4), 2003;
"Pathload: a measurement tool for end-to-end available bandwidth", PAM 2002): a stream of
K packets sent at rate R loads the tight link; when R exceeds the available bandwidth A,
the one-way delays (OWD) of the stream's packets increase, otherwise they show no trend.
A fleet of N streams at one rate is judged by the share of its streams with an increasing
trend, and a binary search on R narrows a range [Rmin, Rmax] that holds A.

This module is pure: OWDs in, verdicts and the next rate out. Rates are in bit/s, delays
in any one unit (only their order and differences count).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Trend = Literal["increasing", "none", "ambiguous"]
Verdict = Literal["above", "below", "grey"]

PCT_INCREASING = 0.66
"""Pairwise comparison test above this: increasing (Pathload)."""
PCT_NONE = 0.54
"""Pairwise comparison test below this: no trend (Pathload)."""
PDT_INCREASING = 0.55
"""Pairwise difference test above this: increasing (Pathload)."""
PDT_NONE = 0.45
"""Pairwise difference test below this: no trend (Pathload)."""
FLEET_FRACTION = 0.7
"""Share of a fleet's usable streams that decides it (Pathload's ``f``)."""


def _group_medians(owds: Sequence[float]) -> list[float]:
    """The medians of ``owds`` split into about sqrt(K) consecutive groups (Pathload's
    robust smoothing against single outliers)."""
    k = len(owds)
    groups = max(2, math.isqrt(k))
    size = k // groups
    return [statistics.median(owds[i * size : (i + 1) * size]) for i in range(groups)]


def pct(owds: Sequence[float]) -> float:
    """Pairwise comparison test: the share of consecutive group medians that increase
    (0..1; about 0.5 for no trend, 1 for a strictly increasing one).

    Raises:
        ValueError: fewer than 4 delays.
    """
    if len(owds) < 4:
        raise ValueError("a stream needs at least 4 one-way delays")
    m = _group_medians(owds)
    return sum(b > a for a, b in zip(m, m[1:], strict=False)) / (len(m) - 1)


def pdt(owds: Sequence[float]) -> float:
    """Pairwise difference test: the start-to-end change of the group medians over the sum
    of their absolute changes (-1..1; near 0 for no trend, 1 for a strictly increasing
    one; 0 when the medians do not move).

    Raises:
        ValueError: fewer than 4 delays.
    """
    if len(owds) < 4:
        raise ValueError("a stream needs at least 4 one-way delays")
    m = _group_medians(owds)
    total = sum(abs(b - a) for a, b in zip(m, m[1:], strict=False))
    return (m[-1] - m[0]) / total if total else 0.0


def stream_trend(owds: Sequence[float]) -> Trend:
    """The trend of one stream's one-way delays, from PCT and PDT together: increasing (or
    none) when both say so or one says so and the other is undecided; ambiguous when they
    disagree or both are undecided (such a stream is not counted).

    Raises:
        ValueError: fewer than 4 delays.
    """

    def vote(value: float, up: float, flat: float) -> int:
        return 1 if value > up else -1 if value < flat else 0

    a = vote(pct(owds), PCT_INCREASING, PCT_NONE)
    b = vote(pdt(owds), PDT_INCREASING, PDT_NONE)
    if a == -b and a != 0 or a == b == 0:
        return "ambiguous"
    return "increasing" if a + b > 0 else "none"


def fleet_verdict(trends: Sequence[Trend]) -> Verdict:
    """A fleet's rate against the available bandwidth: ``above`` when more than
    :data:`FLEET_FRACTION` of its usable streams increase, ``below`` when more than that
    share show no trend, else ``grey`` (the rate is about the available bandwidth, which
    moved during the fleet)."""
    usable = [t for t in trends if t != "ambiguous"]
    if not usable:
        return "grey"
    up = sum(t == "increasing" for t in usable) / len(usable)
    if up > FLEET_FRACTION:
        return "above"
    if 1 - up > FLEET_FRACTION:
        return "below"
    return "grey"


def stream_duration(rate_bps: float, rmin_bps: float, rmax_bps: float) -> float:
    """How long the streams of a fleet at ``rate_bps`` last, s: :data:`STREAM_S` when the
    search is fine (the range [``rmin_bps``, ``rmax_bps``] narrow around the rate), down
    to half of it while the range is wide: a coarse step needs to tell only a large
    excess, which a shorter stream shows too (fewer bytes at the highest rates)."""
    width = max(rmax_bps - rmin_bps, 1.0)
    return STREAM_S * min(1.0, max(0.5, 0.5 * rate_bps / width))


def fleet_decided(trends: Sequence[Trend], remaining: int) -> Verdict | None:
    """The fleet's verdict once its streams still to come can no longer change it (they
    are not sent then: fewer bytes), else ``None``.

    Args:
        trends: the trends of the streams judged so far (disturbed ones left out).
        remaining: streams of the fleet not sent yet.
    """
    if remaining <= 0:
        return fleet_verdict(trends)
    none: list[Trend] = ["none"] * remaining
    up: list[Trend] = ["increasing"] * remaining
    low = fleet_verdict([*trends, *none])
    high = fleet_verdict([*trends, *up])
    return low if low == high and any(t != "ambiguous" for t in trends) else None


@dataclass
class RateSearch:
    """Pathload's binary search on the probing rate (seed 003 §4.3.3).

    ``Rmin`` is the highest rate seen below the available bandwidth, ``Rmax`` the lowest
    above it; ``grey`` rates widen a grey region [Gmin, Gmax] that the search then avoids.
    It ends when ``Rmax - Rmin`` is at most ``resolution``, or when both sides of the grey
    region are that close to it.

    Args:
        low, high: the range to search, bit/s (e.g. 0 and the path's capacity or ADR).
        resolution: the width at which the range is good enough, bit/s.
        relative: or that share of the range's middle, when it is wider (e.g. 0.1:
            within 10 % of the estimate).
    """

    low: float
    high: float
    resolution: float
    relative: float = 0.0
    rmin: float = field(init=False)
    rmax: float = field(init=False)
    gmin: float | None = field(default=None, init=False)
    gmax: float | None = field(default=None, init=False)
    fleets: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high or self.resolution <= 0 or self.relative < 0:
            raise ValueError("need 0 <= low < high, a positive resolution, relative >= 0")
        self.rmin, self.rmax = self.low, self.high

    def record(self, rate: float, verdict: Verdict) -> None:
        """Take a fleet's verdict at ``rate`` (bit/s)."""
        self.fleets += 1
        if verdict == "above":
            self.rmax = min(self.rmax, rate)
        elif verdict == "below":
            self.rmin = max(self.rmin, rate)
        else:
            self.gmin = rate if self.gmin is None else min(self.gmin, rate)
            self.gmax = rate if self.gmax is None else max(self.gmax, rate)

    @property
    def converged(self) -> bool:
        """Whether the range is as narrow as asked."""
        return self.next_rate() is None

    @property
    def width(self) -> float:
        """The width at which the search stops now, bit/s: ``resolution``, or ``relative``
        times the middle of [Rmin, Rmax] when that is more."""
        return max(self.resolution, self.relative * (self.rmin + self.rmax) / 2)

    def next_rate(self) -> float | None:
        """The next fleet's rate, bit/s, or ``None`` once converged."""
        res = self.width
        if self.rmax - self.rmin <= res:
            return None
        if self.gmin is None or self.gmax is None:
            return (self.rmin + self.rmax) / 2
        if self.rmax - self.gmax > res:
            return (self.gmax + self.rmax) / 2
        if self.gmin - self.rmin > res:
            return (self.rmin + self.gmin) / 2
        return None

    def estimate(self) -> tuple[float, float]:
        """The range that holds the available bandwidth, bit/s: [Rmin, Rmax], the grey
        region included when there is one."""
        return self.rmin, self.rmax


IP_UDP_HEADERS = 28
"""Bytes an IPv4 and a UDP header add to a probe's payload; rates here are IP-layer."""
STREAM_S = 0.012
"""Shortest stream, s (Pathload's streams last at least K = 100 periods of 100 µs)."""
K_MIN = 32
"""Fewest packets in a stream (enough for the trend tests' sqrt(K) group medians)."""
K_MAX = 100
"""Most packets in a stream (Pathload's K)."""
SEND_SLACK_NS = 500_000
"""A stream whose sender paused longer than this beyond one period is discarded, ns
(Pathload discards the streams a context switch disturbed)."""
RATE_SLACK = 0.1
"""A stream whose actual sending rate is off the asked one by more than this share is
discarded."""
LOSS_ABOVE = 0.1
"""A stream that lost more than this share of its packets overflowed the tight link's
queue: its rate is above the available bandwidth (Pathload: heavy loss)."""


def stream_shape(
    rate_bps: float,
    capacity_bps: float,
    max_payload: int,
    growth_s: float = 150e-6,
    excess: float = 0.1,
    duration_s: float = STREAM_S,
) -> tuple[int, int, int]:
    """The size of the streams probing ``rate_bps`` on a path of about ``capacity_bps``:
    each must carry enough bytes that, sent ``excess`` above the available bandwidth, it
    grows the tight link's queue by ``growth_s`` (``excess · bytes · 8 / capacity``, a
    fluid model), and last at least ``duration_s`` (cross traffic is made of packets, not
    a fluid: a shorter stream meets too few of them and sees the link emptier than it is);
    and no more (seed 003 §4.3.4.4: intrusiveness).

    Args:
        rate_bps, capacity_bps: bit/s (IP layer); max_payload: UDP payload that fits the
            path MTU, bytes; growth_s, duration_s: s.

    Returns:
        ``(k, payload, period_ns)``: K packets (:data:`K_MIN`..:data:`K_MAX`) of
        ``payload`` bytes (200 up to ``max_payload``), one every ``period_ns`` ns.

    Raises:
        ValueError: a rate, capacity or payload that is not positive.
    """
    if rate_bps <= 0 or capacity_bps <= 0 or max_payload <= 0:
        raise ValueError("rate, capacity and payload must be positive")
    want = max(growth_s * capacity_bps / 8 / excess, rate_bps * duration_s / 8)  # IP bytes
    k = max(K_MIN, min(K_MAX, math.ceil(want / (max_payload + IP_UDP_HEADERS))))
    payload = max(200, min(max_payload, round(want / k) - IP_UDP_HEADERS))
    period = round((payload + IP_UDP_HEADERS) * 8 / rate_bps * 1e9)
    return k, payload, max(1, period)


def judge_stream(
    sent_ns: Sequence[int], received: Mapping[int, int], period_ns: int, leads: int = 0
) -> Trend | None:
    """One stream's trend from what was sent and received.

    Args:
        sent_ns: the actual send time of each packet, by sequence number, ns.
        received: one-way delay by sequence number for the packets that arrived, ns.
        period_ns: the asked spacing, ns.
        leads: the stream's first packets, sent back to back before the periodic ones
            (they empty a token bucket on the tight link); not judged.

    Returns:
        ``None`` when the sender was disturbed (a pause of more than
        :data:`SEND_SLACK_NS` beyond a period, or a rate off by more than
        :data:`RATE_SLACK`); ``"increasing"`` when more than :data:`LOSS_ABOVE` of the
        periodic packets were lost; else :func:`stream_trend` of their delays.
    """
    periodic = sent_ns[leads:]
    k = len(periodic)
    if k < 5:
        return None
    gaps = [b - a for a, b in zip(periodic, periodic[1:], strict=False)]
    if max(gaps) > period_ns + SEND_SLACK_NS:
        return None
    actual = (periodic[-1] - periodic[0]) / (k - 1)
    if abs(actual - period_ns) > RATE_SLACK * period_ns:
        return None
    owds = [received[s] for s in sorted(received) if s >= leads]
    if k - len(owds) > LOSS_ABOVE * k:
        return "increasing"
    if len(owds) < 4:
        return "ambiguous"
    return stream_trend(owds)


def dispersion_rate(recv_ns: Sequence[int], packet_bytes: int) -> float | None:
    """The rate at which a back-to-back train left the path (its dispersion), bit/s:
    ``(n - 1) · packet_bytes · 8 / (last - first)`` over the receive times ``recv_ns`` (ns);
    Pathload's ADR, which lies between the available bandwidth and the capacity.
    ``None`` with fewer than 2 packets or no spread."""
    if len(recv_ns) < 2:
        return None
    spread = max(recv_ns) - min(recv_ns)
    return (len(recv_ns) - 1) * packet_bytes * 8 / spread * 1e9 if spread > 0 else None
