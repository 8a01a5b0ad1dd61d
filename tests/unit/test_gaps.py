"""The fast-ping gap: between answers, and an outage still open when the ping stopped."""

from __future__ import annotations

from polynimbus.verify.gaps import parse_ping


def ping_text(answered: list[int], silent: list[int], sent: int) -> str:
    """ping -D -O output: an answer or a 'no answer yet' note every 10 ms."""
    lines = ["PING 10.1.0.1 (10.1.0.1) 56(84) bytes of data."]
    for seq in sorted(answered + silent):
        t = 1000 + seq * 0.01
        if seq in answered:
            lines.append(f"[{t:.6f}] 64 bytes from 10.1.0.1: icmp_seq={seq} ttl=61 time=1.0 ms")
        else:
            lines.append(f"[{t:.6f}] no answer yet for icmp_seq={seq}")
    lines += [
        "",
        "--- 10.1.0.1 ping statistics ---",
        f"{sent} packets transmitted, {len(answered)} received, 1% packet loss, time 1000ms",
    ]
    return "\n".join(lines) + "\n"


def test_a_gap_between_answers() -> None:
    run = parse_ping(ping_text(list(range(1, 20)) + list(range(50, 60)), list(range(20, 50)), 59))
    assert run.sent == 59 and run.answered == 29 and run.lost == 30
    assert abs(run.gap_ms - 310) < 1e-6  # from answer 19 to answer 50
    assert len(run.gaps_ms) == 1


def test_an_outage_still_open_at_the_end_counts() -> None:
    run = parse_ping(ping_text(list(range(1, 20)), list(range(20, 60)), 59))
    assert abs(run.gap_ms - 400) < 1e-6  # from answer 19 to the last note, at 59


def test_no_gap_when_every_request_is_answered() -> None:
    run = parse_ping(ping_text(list(range(1, 60)), [], 59))
    assert abs(run.gap_ms - 10) < 1e-6 and run.gaps_ms == () and run.redirects == 0
