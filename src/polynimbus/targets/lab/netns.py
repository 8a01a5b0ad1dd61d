"""Namespaces of the lab: listing them, running code and commands inside one.

Commands run with a timeout and their failures become :class:`ApplyError`; a missing
command becomes :class:`CapabilityError` naming its Debian package.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from polynimbus import names
from polynimbus.capabilities import TOOL_PACKAGES
from polynimbus.errors import ApplyError, CapabilityError

COMMAND_TIMEOUT_S = 20.0
"""Longest any one command run by the lab target may take, in s."""
NETNS_DIR = "/run/netns"
"""Where ``ip netns`` (and pyroute2) keep the named namespaces' bind mounts."""
CLONE_NEWNET = 0x40000000
NETLINK_SOCKET_BUFFER_B = 1 << 20
"""Send and receive buffer of the lab's netlink sockets, in bytes (pyroute2's default)."""

_libc = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


def run(
    argv: list[str], input_text: str | None = None, timeout_s: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and return the completed process (not checked).

    Raises:
        CapabilityError: the command is not installed.
        ApplyError: it ran longer than ``timeout_s`` seconds.
    """
    try:
        return subprocess.run(
            argv, input=input_text, capture_output=True, text=True, check=False, timeout=timeout_s
        )
    except FileNotFoundError:
        tool = argv[0]
        pkg = TOOL_PACKAGES.get(tool, tool)
        raise CapabilityError(
            f"missing tool: {tool} (Debian package {pkg})", f"apt-get install {pkg}"
        ) from None
    except subprocess.TimeoutExpired:
        raise ApplyError(
            f"{' '.join(argv[:6])} did not finish within {timeout_s:.0f} s",
            "the machine may be overloaded; run the command again",
        ) from None


def ns_exec(
    ns: str, argv: list[str], input_text: str | None = None, what: str | None = None
) -> str:
    """Run ``argv`` in namespace ``ns`` and return its stdout.

    Raises:
        ApplyError: the command failed (its stderr is in the message) or timed out.
        CapabilityError: ``ip`` or the command is missing.
    """
    res = run(["ip", "netns", "exec", ns, *argv], input_text)
    if res.returncode != 0:
        text = (res.stderr or res.stdout).strip()
        if "No such file or directory" in text and "exec of" in text:
            tool = argv[0]
            pkg = TOOL_PACKAGES.get(tool, tool)
            raise CapabilityError(
                f"missing tool: {tool} (Debian package {pkg})", f"apt-get install {pkg}"
            )
        raise ApplyError(f"{what or ' '.join(argv)} failed in {ns}: {text}")
    return res.stdout


def ipr(ns: str) -> IPRoute:
    """An rtnetlink connection to namespace ``ns``, usable from any thread (never creates
    a missing namespace).

    A socket belongs to the namespace it was created in, whichever thread later uses it:
    the socket is made by a short-lived thread that entered ``ns``
    (:func:`netlink_socket`, about 0.2 ms) and handed to pyroute2 (``use_socket``),
    instead of ``IPRoute(netns=ns)``, which forks a helper process per socket (about
    10 ms). The socket is closed with the returned object.

    Raises:
        FileNotFoundError: no namespace ``ns``.
    """
    return IPRoute(use_socket=netlink_socket(ns))


def netlink_socket(ns: str, proto: int = 0) -> socket.socket:
    """A netlink socket (protocol ``proto``, 0: rtnetlink) in namespace ``ns``.

    Raises:
        FileNotFoundError: no namespace ``ns``.
    """

    def make() -> socket.socket:
        # in_netns has proven this thread is in ns: never a socket in another namespace
        # (the host's, if entering it went wrong), whose reads would be taken for ns's
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, NETLINK_SOCKET_BUFFER_B)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NETLINK_SOCKET_BUFFER_B)
        return sock

    return in_netns(ns, make)


def _setns(ns: str) -> None:
    """Move the calling thread into namespace ``ns`` (never creates it).

    Raises:
        FileNotFoundError: no namespace ``ns``.
        OSError: the kernel refused.
    """
    fd = os.open(f"{NETNS_DIR}/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot enter namespace {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a short-lived thread that has entered namespace ``ns``.

    setns(2) with CLONE_NEWNET changes only the calling thread, so the rest of the
    process stays where it was; ``/proc/sys/net`` opened, and sockets created, in that
    thread are the namespace's (a socket stays in its namespace when used elsewhere).
    The thread ends with ``fn``, so no thread is ever left in the wrong namespace.

    Raises:
        FileNotFoundError: no namespace ``ns``.
        whatever ``fn`` raises.
    """
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            _setns(ns)
            # proven, not assumed: what fn reads or makes here is taken for ns's own
            here = os.stat("/proc/thread-self/ns/net")
            want = os.stat(f"{NETNS_DIR}/{ns}")
            if (here.st_dev, here.st_ino) != (want.st_dev, want.st_ino):
                raise OSError(errno.EINVAL, f"this thread is not in namespace {ns}")
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    t = threading.Thread(target=body, name=f"netns:{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    value: T = result["value"]
    return value


def list_lab_namespaces(lab: str) -> list[str]:
    """Namespaces of ``lab`` that exist now (by prefix ``pn.LAB.``)."""
    prefix = names.lab_prefix(lab)
    return sorted(n for n in pr_netns.listnetns() if n.startswith(prefix))


def list_labs() -> list[str]:
    """Names of the labs with at least one namespace on this host."""
    labs = set()
    for n in pr_netns.listnetns():
        parts = n.split(".")
        if len(parts) >= 3 and parts[0] == names.NS_PREFIX:
            labs.add(parts[1])
    return sorted(labs)


def exists(ns: str) -> bool:
    """Whether namespace ``ns`` exists."""
    return ns in pr_netns.listnetns()


LAB_NS_SYSCTLS = {
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv6/conf/all/accept_dad": "0",
}
"""Set in every namespace the lab makes, before its links: the lab's links are veth
pairs and bridges of its own, where duplicate address detection finds nothing and only
holds each IPv6 address (link-local ones too: neighbour discovery) tentative for a second
or more after ``up``, so that the first packets of an SRv6 chain were lost. An
environment choice of the lab, not of the node model: a real gateway keeps DAD."""


def create(ns: str) -> None:
    """Create namespace ``ns`` unless it exists, with :data:`LAB_NS_SYSCTLS`."""
    if not exists(ns):
        pr_netns.create(ns)

        def tune() -> None:
            for key, value in LAB_NS_SYSCTLS.items():
                try:
                    with open(f"/proc/sys/{key}", "w", encoding="ascii") as f:
                        f.write(value)
                except OSError:
                    pass  # a kernel without IPv6: nothing to hold tentative

        in_netns(ns, tune)


def remove(ns: str) -> None:
    """Remove namespace ``ns`` if it exists.

    Raises:
        ApplyError: the kernel refused.
    """
    if exists(ns):
        try:
            pr_netns.remove(ns)
        except OSError as exc:
            raise ApplyError(f"cannot remove namespace {ns}: {exc}") from None
