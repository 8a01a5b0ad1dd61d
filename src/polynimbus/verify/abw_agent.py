"""The two ends of ``polynimbus abw``'s probing (SLoPS, seed 003 §4.3.3): a sender and a
receiver, each one process run inside a lab namespace, driven over its stdin and stdout
by the controller (:mod:`polynimbus.verify.abw`) with one JSON object per line.

Run as a script (``python -I -S abw_agent.py recv ADDR`` or ``send SRC DST PORT``), not as
a module: it imports only the standard library, so it starts in a few tens of ms.

Probe packet (UDP payload, network byte order): magic ``PNab``, tag (uint32: the train
or fleet), stream (uint16), sequence (uint16), send time (int64 ns, CLOCK_REALTIME,
written just before ``send``), zero padding to the asked size.

Receiver commands: ``{"op": "collect", "tag": T, "wait_s": W, "expect": E}`` -> once E
packets of tag T are in, or after W s (the tight link's queue drains), every packet of
tag T received so far as ``{"pkts": [[stream, seq,
send_ns, recv_ns], ...]}``; ``recv_ns`` is the kernel's receive time (SO_TIMESTAMPNS,
the same CLOCK_REALTIME), so ``recv_ns - send_ns`` is the one-way delay on one host.

Sender commands: ``{"op": "train", "tag": T, "n": N, "size": L}``: N packets of L bytes
back to back; ``{"op": "fleet", "tag": T, "streams": N, "k": K, "size": L, "period_ns":
P, "gap_ns": G, "leads": M, "lead_size": S}``: N streams, each M packets of S bytes back
to back then K packets of L bytes, one every P ns (paced by a busy-wait on
``perf_counter_ns``), G ns idle between streams (and before the first with
``"idle_first": true``). Both answer ``{"sent":
[[send_ns, ...] per stream], "bytes": B}`` with the actual send times and the UDP payload
bytes sent. ``{"op": "quit"}`` ends either end; so does the end of its stdin.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import sys
import time

MAGIC = b"PNab"
HEADER = struct.Struct("!4sIHHq")
"""magic, tag, stream, sequence, send time (ns)."""
SO_TIMESTAMPNS = 35
"""Linux ``SO_TIMESTAMPNS`` (also its control message type); Python's socket lacks it."""
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
"""Linux socket options (root may exceed the sysctl maximum); Python's socket lacks them."""
RT_PRIORITY = 10
"""SCHED_FIFO priority of the sender (low among real-time ones: below the kernel's)."""
RCVBUF = 8 * 1024 * 1024
SNDBUF = 4 * 1024 * 1024


def _reply(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def receiver(addr: str) -> None:
    """Bind UDP ``addr`` on a free port, say ``{"port": P}``, then serve collects."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((addr, 0))
    sock.setblocking(False)
    got: dict[int, list[list[int]]] = {}
    cmsg_space = socket.CMSG_SPACE(16)

    def drain() -> None:
        while True:
            try:
                data, anc, _, _ = sock.recvmsg(2048, cmsg_space)
            except BlockingIOError:
                return
            if len(data) < HEADER.size:
                continue
            magic, tag, stream, seq, sent = HEADER.unpack_from(data)
            if magic != MAGIC:
                continue
            recv = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    recv = sec * 1_000_000_000 + nsec
            if not recv:
                recv = time.clock_gettime_ns(time.CLOCK_REALTIME)
            got.setdefault(tag, []).append([stream, seq, sent, recv])

    _reply({"port": sock.getsockname()[1]})
    stdin = sys.stdin.buffer
    line = b""
    while True:
        ready, _, _ = select.select([sock, stdin], [], [])
        if sock in ready:
            drain()
        if stdin in ready:
            chunk = stdin.readline()
            if not chunk:
                return
            line += chunk
            if not line.endswith(b"\n"):
                continue
            cmd, line = json.loads(line), b""
            if cmd.get("op") == "quit":
                return
            if cmd.get("op") == "collect":
                tag = int(cmd["tag"])
                expect = int(cmd.get("expect", 0))
                end = time.monotonic() + float(cmd.get("wait_s", 0))
                drain()
                while (left := end - time.monotonic()) > 0:
                    if expect and len(got.get(tag, ())) >= expect:
                        break
                    select.select([sock], [], [], left)
                    drain()
                _reply({"pkts": got.pop(tag, [])})


def _send_stream(
    sock: socket.socket,
    buf: bytearray,
    tag: int,
    stream: int,
    k: int,
    period_ns: int,
    lead: bytearray | None = None,
    leads: int = 0,
) -> list[int]:
    """``leads`` packets ``lead`` back to back (sequence 0..), then K packets ``buf``, one
    every ``period_ns`` (0: back to back); their actual send times."""
    sent = []
    pack, now, clock = HEADER.pack_into, time.perf_counter_ns, time.clock_gettime_ns
    real = time.CLOCK_REALTIME
    send = sock.send
    for seq in range(leads):
        assert lead is not None
        t = clock(real)
        pack(lead, 0, MAGIC, tag, stream, seq, t)
        send(lead)
        sent.append(t)
    start = now()
    for i in range(k):
        due = start + i * period_ns
        while now() < due:
            pass
        t = clock(real)
        pack(buf, 0, MAGIC, tag, stream, leads + i, t)
        send(buf)
        sent.append(t)
    return sent


def _realtime() -> None:
    """Pace from a real-time (SCHED_FIFO) thread when allowed, so that other processes
    preempt the busy-wait less often (fewer streams are discarded); the kernel's real-time
    throttling still leaves others 5 % of each second, and the sender sleeps between
    streams."""
    import os

    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))


def _idle(ns: int) -> None:
    """Wait ``ns`` ns: sleep all but the last ms, busy-wait that ms (a sleep may overrun)."""
    due = time.perf_counter_ns() + ns
    if ns > 1_000_000:
        time.sleep((ns - 1_000_000) / 1e9)
    while time.perf_counter_ns() < due:
        pass


def sender(src: str, dst: str, port: int) -> None:
    """Bind UDP ``src``, aim at ``dst:port``, say ``{"ready": true}``, then serve trains
    and fleets."""
    _realtime()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SNDBUF)
    sock.bind((src, 0))
    sock.connect((dst, port))
    _reply({"ready": True})
    for raw in sys.stdin:
        cmd = json.loads(raw)
        op = cmd.get("op")
        if op == "quit":
            return
        size = int(cmd["size"])
        buf = bytearray(max(size, HEADER.size))
        tag = int(cmd["tag"])
        if op == "train":
            sent = [_send_stream(sock, buf, tag, 0, int(cmd["n"]), 0)]
            nbytes = len(buf) * len(sent[0])
        elif op == "fleet":
            sent = []
            gap = int(cmd["gap_ns"])
            leads = int(cmd.get("leads", 0))
            lead = bytearray(max(int(cmd.get("lead_size", size)), HEADER.size))
            for s in range(int(cmd["streams"])):
                if s or cmd.get("idle_first"):
                    _idle(gap)
                sent.append(
                    _send_stream(
                        sock, buf, tag, s, int(cmd["k"]), int(cmd["period_ns"]), lead, leads
                    )
                )
            nbytes = len(buf) * int(cmd["k"]) * len(sent) + len(lead) * leads * len(sent)
        else:
            _reply({"error": f"unknown op {op!r}"})
            continue
        _reply({"sent": sent, "bytes": nbytes})


def main(argv: list[str]) -> int:
    """``recv ADDR`` or ``send SRC DST PORT``."""
    try:
        if argv[:1] == ["recv"] and len(argv) == 2:
            receiver(argv[1])
        elif argv[:1] == ["send"] and len(argv) == 4:
            sender(argv[1], argv[2], int(argv[3]))
        else:
            sys.stderr.write("usage: abw_agent.py recv ADDR | send SRC DST PORT\n")
            return 2
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"abw agent: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
