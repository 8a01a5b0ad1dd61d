"""Faults injected into a running lab, to watch it recover: the internet path between two
gateways cut (both directions dropped by the emulated internet router), and a gateway's
death (:func:`kill_node`).

The cuts live in an nftables table of their own, ``ip polynimbus-faults``, in the lab's
internet namespace, holding a set of ``public address . public address`` pairs. Nothing
else of the lab is touched; ``heal`` empties the set (or deletes the table when the last cut
heals), ``down`` removes it with the namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

from polynimbus import names
from polynimbus.errors import ApplyError
from polynimbus.targets.lab import netns

TABLE = "polynimbus-faults"
SET = "cut"

_RULESET = f"""table ip {TABLE} {{
\tset {SET} {{
\t\ttype ipv4_addr . ipv4_addr
\t}}
\tchain forward {{
\t\ttype filter hook forward priority -10; policy accept;
\t\tip saddr . ip daddr @{SET} counter drop comment "cut by polynimbus cut"
\t}}
}}
"""


def _nft(lab: str, args: list[str], input_text: str | None = None) -> str:
    res = netns.run(["ip", "netns", "exec", names.internet_ns(lab), "nft", *args], input_text)
    if res.returncode != 0:
        raise ApplyError(
            f"nft {' '.join(args[:3])} failed in {names.internet_ns(lab)}: {res.stderr.strip()}",
            "is the lab up? (polynimbus up FILE)",
        )
    return res.stdout


def cuts(lab: str) -> list[tuple[str, str]]:
    """The cut paths of ``lab``: ``(address, address)`` pairs with the lower first.

    Raises:
        ApplyError: nft failed (the lab is not up).
    """
    ns = names.internet_ns(lab)
    res = netns.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "set", "ip", TABLE, SET])
    if res.returncode != 0:
        if "No such file" in res.stderr:
            return []
        raise ApplyError(f"cannot read the cuts of {lab!r}: {res.stderr.strip()}", None)
    out: set[tuple[str, str]] = set()
    for obj in json.loads(res.stdout).get("nftables", []):
        for elem in obj.get("set", {}).get("elem", []):
            a, b = elem["concat"]
            out.add((min(a, b), max(a, b)))
    return sorted(out)


def cut(lab: str, a: str, b: str) -> bool:
    """Drop every packet between public addresses ``a`` and ``b`` in the lab's internet.

    Returns:
        False if that path was already cut.

    Raises:
        ApplyError: nft failed (the lab is not up).
    """
    if (min(a, b), max(a, b)) in cuts(lab):
        return False
    _nft(lab, ["-f", "-"], _RULESET)  # re-declaring an existing table adds nothing
    _nft(lab, ["add", "element", "ip", TABLE, SET, f"{{ {a} . {b}, {b} . {a} }}"])
    return True


def heal(lab: str, a: str | None = None, b: str | None = None) -> list[tuple[str, str]]:
    """Restore the path between ``a`` and ``b``, or every cut path when they are ``None``.

    Returns:
        The paths healed.

    Raises:
        ApplyError: nft failed.
    """
    present = cuts(lab)
    if a is None or b is None:
        healed = present
    else:
        healed = [p for p in present if p == (min(a, b), max(a, b))]
    for x, y in healed:
        _nft(lab, ["delete", "element", "ip", TABLE, SET, f"{{ {x} . {y}, {y} . {x} }}"])
    if healed and len(healed) == len(present):
        _nft(lab, ["delete", "table", "ip", TABLE])
    return healed


def kill_node(ns: str) -> list[int]:
    """The sudden death of a lab node: every process in namespace ``ns`` is stopped, then
    killed (SIGSTOP, SIGKILL: no daemon says goodbye, as when a machine loses power), then
    every interface but ``lo`` goes down (nothing leaves or enters it any more). The
    namespace stays; ``polynimbus up`` brings it back (links up, processes started).

    Returns:
        The processes killed.

    Raises:
        ApplyError: the namespace does not exist, or a link cannot be set down.
    """
    from polynimbus import procs

    res = netns.run(["ip", "-n", ns, "-o", "link", "show"])
    if res.returncode != 0:
        raise ApplyError(f"no node {ns}: {res.stderr.strip()}", "is the lab up?")
    inode = procs.netns_inode(ns)
    pids = [p.pid for p in procs.processes() if inode is not None and p.netns_inode == inode]
    # stopped first, then killed: killed one by one, a child would see its parent die
    # first and shut down cleanly (keepalived's VRRP process then sends a priority-0
    # advertisement, and the standby takes over at once); before the links go down, so
    # that none acts on that either
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    links = [line.split(":")[1].strip().split("@")[0] for line in res.stdout.splitlines()]
    for ifname in links:
        if ifname == "lo":
            continue
        res = netns.run(["ip", "-n", ns, "link", "set", "dev", ifname, "down"])
        gone = ("Cannot find device", "No such device")  # a killed daemon's TUN went
        if res.returncode != 0 and not any(g in res.stderr for g in gone):
            raise ApplyError(f"cannot set {ifname} down in {ns}: {res.stderr.strip()}", None)
    return pids
