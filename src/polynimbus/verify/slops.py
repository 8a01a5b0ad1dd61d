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
from collections.abc import Sequence
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
    """

    low: float
    high: float
    resolution: float
    rmin: float = field(init=False)
    rmax: float = field(init=False)
    gmin: float | None = field(default=None, init=False)
    gmax: float | None = field(default=None, init=False)
    fleets: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high or self.resolution <= 0:
            raise ValueError("need 0 <= low < high and a positive resolution")
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

    def next_rate(self) -> float | None:
        """The next fleet's rate, bit/s, or ``None`` once converged."""
        if self.rmax - self.rmin <= self.resolution:
            return None
        if self.gmin is None or self.gmax is None:
            return (self.rmin + self.rmax) / 2
        if self.rmax - self.gmax > self.resolution:
            return (self.gmax + self.rmax) / 2
        if self.gmin - self.rmin > self.resolution:
            return (self.rmin + self.gmin) / 2
        return None

    def estimate(self) -> tuple[float, float]:
        """The range that holds the available bandwidth, bit/s: [Rmin, Rmax], the grey
        region included when there is one."""
        return self.rmin, self.rmax
