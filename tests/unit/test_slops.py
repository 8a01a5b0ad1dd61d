"""SLoPS decisions (polynimbus.verify.slops) against synthetic one-way delays of a fluid
single-link model with known available bandwidth."""

from __future__ import annotations

import random

import pytest

from polynimbus.verify.slops import (
    IP_UDP_HEADERS,
    K_MAX,
    K_MIN,
    SEND_SLACK_NS,
    STREAM_S,
    RateSearch,
    dispersion_rate,
    fleet_decided,
    fleet_verdict,
    judge_stream,
    pct,
    pdt,
    stream_duration,
    stream_shape,
    stream_trend,
)

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


def test_relative_resolution_stops_the_search_near_the_estimate():
    search = RateSearch(0, 100e6, resolution=1, relative=0.1)
    search.record(50e6, "above")
    search.record(25e6, "below")
    search.record(37.5e6, "below")
    search.record(43.75e6, "above")
    # [37.5, 43.75]: 6.25 wide, more than 10 % of 40.6: one more fleet
    assert search.next_rate() == pytest.approx(40.625e6)
    search.record(40.625e6, "below")
    assert search.width == pytest.approx(0.1 * (40.625e6 + 43.75e6) / 2)
    assert search.converged and search.estimate() == (40.625e6, 43.75e6)
    with pytest.raises(ValueError):
        RateSearch(0, 1, 1, relative=-1)


@pytest.mark.parametrize("capacity", [10e6, 50e6, 100e6, 1e9])
def test_streams_are_long_enough_and_fit_the_mtu(capacity):
    for rate in (0.1 * capacity, 0.5 * capacity, capacity):
        k, payload, period = stream_shape(rate, capacity, 1472)
        assert K_MIN <= k <= K_MAX and 200 <= payload <= 1472
        ip_bytes = k * (payload + IP_UDP_HEADERS)
        # a 10 % excess grows the queue by about 150 µs (fluid model), or more, unless
        # the stream is as big as it may be (K_MAX full packets)
        full = (k, payload) == (K_MAX, 1472)
        assert 0.1 * ip_bytes * 8 / capacity >= 150e-6 * 0.95 or full
        # at least STREAM_S long (rounding of the payload aside), unless as big as may be
        assert k * period >= STREAM_S * 1e9 * 0.95 or full
        # the period gives the asked rate
        assert (payload + IP_UDP_HEADERS) * 8 / (period / 1e9) == pytest.approx(rate, rel=1e-3)
    with pytest.raises(ValueError):
        stream_shape(0, capacity, 1472)


def test_coarse_steps_use_shorter_streams():
    assert stream_duration(50e6, 0, 100e6) == STREAM_S / 2
    assert stream_duration(50e6, 48e6, 52e6) == STREAM_S
    assert STREAM_S / 2 < stream_duration(50e6, 30e6, 70e6) < STREAM_S


def _stream(k=40, period=100_000, leads=2):
    sent = [0, 1_000] + [2_000 + i * period for i in range(k)]
    return sent[: leads + k] if leads == 2 else sent[2:]


def test_a_stream_is_judged_on_its_periodic_packets():
    sent = _stream()
    flat = {s: 50_000 + (s % 3) * 1_000 for s in range(len(sent))}
    rising = {s: 50_000 + s * 5_000 for s in range(len(sent))}
    assert judge_stream(sent, flat, 100_000, 2) == "none"
    assert judge_stream(sent, rising, 100_000, 2) == "increasing"
    # the lead packets' own delays are not judged (they would hide this trend)
    short = _stream(k=10)
    up = {s: 50_000 + s * 5_000 for s in range(12)}
    assert judge_stream(short, {**up, 0: 9_000_000, 1: 9_000_000}, 100_000, 2) == "increasing"
    # heavy loss: the tight link's queue overflowed
    lossy = {s: d for s, d in flat.items() if s % 5}
    assert judge_stream(sent, lossy, 100_000, 2) == "increasing"


def test_a_disturbed_sender_voids_its_stream():
    sent = _stream()
    flat = {s: 50_000 for s in range(len(sent))}
    late = list(sent)
    late[20] += SEND_SLACK_NS + 200_000  # one pause, then the rest on time (a burst)
    assert judge_stream(late, flat, 100_000, 2) is None
    paused = sent[:20] + [t + SEND_SLACK_NS + 200_000 for t in sent[20:]]
    assert judge_stream(paused, flat, 100_000, 2) is None
    slow = sent[:2] + [sent[2] + i * 120_000 for i in range(40)]  # 20 % slower
    assert judge_stream(slow, flat, 100_000, 2) is None
    assert judge_stream(sent[:6], flat, 100_000, 2) is None  # too short to judge


def test_a_fleet_stops_once_the_rest_cannot_change_it():
    assert fleet_decided(["increasing"] * 4, 1) == "above"
    assert fleet_decided(["none"] * 4, 1) == "below"
    assert fleet_decided(["increasing"] * 3, 2) is None
    assert fleet_decided(["increasing", "none"], 3) is None
    assert fleet_decided(["increasing", "none", "none"], 0) == "grey"
    assert fleet_decided(["ambiguous"], 4) is None


def test_dispersion_rate_of_a_train():
    # 11 packets of 1500 bytes, 120 µs apart: 100 Mbit/s
    assert dispersion_rate([i * 120_000 for i in range(11)], 1500) == pytest.approx(100e6)
    assert dispersion_rate([5], 1500) is None
    assert dispersion_rate([5, 5], 1500) is None
