"""Running verify's commands in lab namespaces, each with a deadline.

Every command verify runs goes through :func:`run_in_ns`: it never hangs (a command that
outlives its timeout is killed) and never leaks a traceback (a timeout or a command that
cannot be started becomes a :class:`~polynimbus.errors.VerifyError`).
"""

from __future__ import annotations

import subprocess

from polynimbus.errors import VerifyError

STUCK_HINT = (
    "the lab may be overloaded or wedged; look at it with polynimbus exec, "
    "or rebuild it: polynimbus down FILE, then polynimbus up FILE"
)


def ns_argv(ns: str, *argv: str) -> list[str]:
    """``ip netns exec NS ARGV...``: ``ip`` execs the command, so killing it kills the command."""
    return ["ip", "netns", "exec", ns, *argv]


def run_in_ns(
    ns: str, argv: list[str], timeout_s: float, what: str
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in namespace ``ns``, capturing stdout and stderr as text.

    Args:
        timeout_s: deadline in s; the command is killed when it passes.
        what: what the command does, for the error message (e.g. ``"fping from X"``).

    Returns:
        the finished command, whatever its exit status (the caller judges it).

    Raises:
        VerifyError: the command did not finish within ``timeout_s``, or could not be started.
    """
    try:
        return subprocess.run(
            ns_argv(ns, *argv), capture_output=True, text=True, check=False, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise VerifyError(
            f"{what} did not finish within {timeout_s:g} s and was stopped", STUCK_HINT
        ) from None
    except OSError as exc:
        raise VerifyError(f"{what} could not be started: {exc}", "run: make deps") from None
