"""Namespaces of the lab: listing them, running code and commands inside one.

Commands run with a timeout and their failures become :class:`ApplyError`; a missing
command becomes :class:`CapabilityError` naming its Debian package.
"""

from __future__ import annotations

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
    """A netlink socket in namespace ``ns`` (never creates a missing namespace)."""
    return IPRoute(netns=ns, flags=0)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a short-lived thread that has entered namespace ``ns``.

    setns(2) with CLONE_NEWNET changes only the calling thread, so the rest of the
    process stays where it was; ``/proc/sys/net`` opened in that thread is the namespace's.

    Raises:
        whatever ``fn`` raises.
    """
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            pr_netns.setns(ns, flags=0)
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


def create(ns: str) -> None:
    """Create namespace ``ns`` unless it exists."""
    if not exists(ns):
        pr_netns.create(ns)


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
