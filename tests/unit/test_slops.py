"""SLoPS decisions (polynimbus.verify.slops) against synthetic one-way delays of a fluid
single-link model with known available bandwidth."""

from __future__ import annotations

import random

import pytest

from polynimbus.verify.slops import RateSearch, fleet_verdict, pct, pdt, stream_trend

K = 100  # packets per stream (Pathload)


def owds(rate: float, abw: float, capacity: float, rng: random.Random, noise: float = 20e-6):
    """One stream's OWDs, s: 100 packets of 1000 bytes at ``rate``; the tight link's queue
    grows at (rate - abw) / capacity per second of stream when ``rate`` > ``abw``."""
    period = 8000 / rate
    grow = max(0.0, (rate - abw) / capacity)
    return [0.01 + grow * k * period + rng.gauss(0, noise) for k in range(K)]


def test_trend_tests_tell_increasing_from_flat():
    rng = random.Random(1)
    up = owds(80e6, 50e6, 100e6, rng)
    flat = owds(30e6, 50e6, 100e6, rng)
    assert pct(up) > 0.9 and pdt(up) > 0.9
    assert 0.2 < pct(flat) < 0.8 and abs(pdt(flat)) < 0.5
    assert stream_trend(up) == "increasing"
    assert stream_trend(flat) in ("none", "ambiguous")
    assert stream_trend([1.0] * K) == "none"  # delays that never move: no queue builds
    with pytest.raises(ValueError):
        pct([1.0, 2.0])


def test_fleet_verdicts():
    assert fleet_verdict(["increasing"] * 10 + ["none"] * 2) == "above"
    assert fleet_verdict(["none"] * 10 + ["increasing"]) == "below"
    assert fleet_verdict(["none"] * 6 + ["increasing"] * 6) == "grey"
    assert fleet_verdict(["ambiguous"] * 12) == "grey"


@pytest.mark.parametrize("abw", [20e6, 50e6, 80e6])
def test_the_search_converges_on_a_range_holding_the_available_bandwidth(abw):
    rng = random.Random(int(abw))
    search = RateSearch(0, 100e6, resolution=4e6)
    while (rate := search.next_rate()) is not None:
        trends = [stream_trend(owds(rate, abw, 100e6, rng)) for _ in range(12)]
        search.record(rate, fleet_verdict(trends))
        assert search.fleets < 30
    low, high = search.estimate()
    assert low <= abw <= high and high - low <= 4e6 + 1, (low, high)


def test_a_grey_region_is_kept_out_of_the_search():
    search = RateSearch(0, 100e6, resolution=5e6)
    search.record(50e6, "grey")
    assert search.next_rate() == 75e6
    search.record(75e6, "above")
    search.record(62.5e6, "above")
    search.record(56.25e6, "above")
    assert search.next_rate() == 53.125e6  # still between the grey region and Rmax
    search.record(53.125e6, "above")
    assert search.next_rate() == 25e6  # that side is done: now below the grey region
    with pytest.raises(ValueError):
        RateSearch(10, 5, 1)
