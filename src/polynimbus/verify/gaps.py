"""Interruptions of traffic, measured with a fast ping: the longest time between two
answers (failover, changes without disturbance; issue 9).

A ping every 10 ms (``ping -D -O -i 0.01``) prints each answer with its receive time; the
gap is the longest time between two consecutive answers, so a path that never stops
shows gaps of about 10 ms, and one that stops for 300 ms a gap of about 310 ms.
"""

from __future__ import annotations

import re
import signal
import subprocess
from dataclasses import dataclass

from polynimbus.errors import VerifyError

PING_INTERVAL_S = 0.01
"""Time between two echo requests, s (ping's smallest for root without flooding)."""

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)")
_LOST = re.compile(r"^\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)")


@dataclass(frozen=True)
class PingRun:
    """A finished fast ping.

    Attributes:
        sent: echo requests sent.
        answered: answers received.
        gap_ms: the longest time between two consecutive answers, or before the first
            answer or after the last one while requests went unanswered (from ping's
            "no answer yet" notes), ms; ``None`` without answers.
        gaps_ms: every gap (as in ``gap_ms``) above 50 ms, in order, ms.
        redirects: ICMP redirects received (a router on the way sent the sender
            elsewhere).
    """

    sent: int
    answered: int
    gap_ms: float | None
    gaps_ms: tuple[float, ...]
    redirects: int = 0

    @property
    def lost(self) -> int:
        """Requests without an answer."""
        return self.sent - self.answered


def parse_ping(text: str) -> PingRun:
    """Read the output of ``ping -D -O`` (iputils).

    Raises:
        VerifyError: the text has no answers or requests counted.
    """
    times: list[float] = []
    seqs: list[int] = []
    silent: list[float] = []  # when ping noted a request unanswered
    for line in text.splitlines():
        m = _REPLY.match(line)
        if m:
            times.append(float(m.group(1)))
            seqs.append(int(m.group(2)))
        elif m := _LOST.match(line):
            silent.append(float(m.group(1)))
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    if not m:
        raise VerifyError("ping printed no summary", "was it killed with SIGKILL?")
    sent, answered = int(m.group(1)), int(m.group(2))
    deltas = [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]
    if times:  # an outage before the first answer or after the last one counts too
        before = [t for t in silent if t < times[0]]
        after = [t for t in silent if t > times[-1]]
        if before:
            deltas.insert(0, (times[0] - min(before)) * 1000)
        if after:
            deltas.append((max(after) - times[-1]) * 1000)
    return PingRun(
        sent=sent,
        answered=answered,
        gap_ms=max(deltas) if deltas else None,
        gaps_ms=tuple(d for d in deltas if d > 50),
        redirects=sum("Redirect" in line for line in text.splitlines()),
    )


class FastPing:
    """A ping every :data:`PING_INTERVAL_S` from namespace ``ns`` to ``dst``, running in
    the background until :meth:`stop` (or for ``seconds``).

    Raises:
        VerifyError: ping could not start.
    """

    def __init__(self, ns: str, dst: str, seconds: float | None = None) -> None:
        argv = ["ip", "netns", "exec", ns, "ping", "-D", "-O", "-n", "-i", str(PING_INTERVAL_S)]
        if seconds is not None:
            argv += ["-w", str(seconds)]
        try:
            self.proc = subprocess.Popen(
                [*argv, dst], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as exc:
            raise VerifyError(
                f"cannot start ping in {ns}: {exc}", "is iputils-ping installed?"
            ) from None

    def stop(self) -> PingRun:
        """Stop the ping (SIGINT: it prints its summary) and read what it saw."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        return parse_ping(out)
