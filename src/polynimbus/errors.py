"""Errors raised by polynimbus, one subclass per stage.

Every error carries a human message and, where it helps, a ``hint`` saying what to do.
The CLI prints ``error: <message>`` then ``  hint: <hint>`` and exits with ``exit_code``
(never a traceback).

Exit codes of the CLI:

=====  ======================================================================================
code   meaning
=====  ======================================================================================
0      success (``verify``: every check passed)
1      a runtime failure: ``PolynimbusError`` itself and ``PlanError``, ``CapabilityError``,
       ``ApplyError``, ``VerifyError``, ``LabNotFoundError``, ``StateError``, ``KeyFileError``;
       also ``verify`` when a check ran and failed
2      invalid input: ``IntentError`` (the intent is invalid; nothing was touched), and
       command-line usage errors reported by the argument parser
130    interrupted (Ctrl-C)
=====  ======================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass


class PolynimbusError(Exception):
    """Base class of every error polynimbus raises on purpose.

    Attributes:
        hint: what the user can do about it, or ``None``.
        exit_code: the process exit status the CLI uses (1 unless a subclass says otherwise).
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """The error as the CLI prints it: ``error: ...`` and an optional ``  hint: ...`` line."""
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


@dataclass(frozen=True)
class Problem:
    """One problem found in an intent.

    Attributes:
        path: YAML path of the offending value, e.g. ``sites[1].subnet`` (``""`` for the root).
        message: what is wrong.
        hint: how to fix it, or ``None``.
        line: 1-based line of the value in the YAML file, when known.
    """

    path: str
    message: str
    hint: str | None = None
    line: int | None = None

    def render(self, source: str | None = None) -> str:
        """``FILE:LINE: PATH: MESSAGE`` followed by ``  hint: HINT`` when there is one."""
        where = ""
        if source is not None:
            where = f"{source}:{self.line}: " if self.line else f"{source}: "
        path = f"{self.path}: " if self.path else ""
        text = f"{where}{path}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class IntentError(PolynimbusError):
    """An intent is invalid. Holds *all* the problems found, in file order.

    The CLI exits with status 2 for it, and nothing has been touched.
    """

    exit_code = 2

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        n = len(problems)
        super().__init__(f"the intent has {n} error{'s' if n != 1 else ''}")

    def render(self) -> str:
        lines = [p.render(self.source) for p in self.problems]
        n = len(self.problems)
        lines.append(f"{n} error{'s' if n != 1 else ''}; nothing was changed.")
        return "\n".join(lines)


class PlanError(PolynimbusError):
    """The planner cannot produce a plan for a valid-looking intent (e.g. address exhaustion)."""


class CapabilityError(PolynimbusError):
    """The machine lacks something the operation needs: root, a tool, a kernel feature."""


class ApplyError(PolynimbusError):
    """Changing a target failed. Re-running ``up`` completes it; ``down`` removes it."""


class VerifyError(PolynimbusError):
    """A verification or measurement could not be run (not: a check that ran and failed)."""


class LabNotFoundError(PolynimbusError):
    """No running lab matches what was asked for."""


class StateError(PolynimbusError):
    """polynimbus refuses to touch a place it does not own, or another command holds it.

    Raised for: a state directory without polynimbus's marker (or with another lab's), a
    state directory or lock directory that is a symbolic link, foreign-owned or writable by
    others, the lab's host-wide lock held by another command, and a lab whose tag collides
    with a lab already up on the host. Nothing has been changed when it is raised.
    """


class KeyFileError(PolynimbusError):
    """A stored WireGuard key (or the keys directory) is unsafe, unreadable or unwritable.

    A key file that is a symbolic link, has a mode other than 0600, is not owned by the
    current user, or is corrupt; a keys directory that is a symbolic link, is not mode 0700
    or is foreign-owned. The key is not used and nothing is rewritten.

    Attributes:
        path: the offending file or directory.
    """

    def __init__(self, message: str, hint: str | None = None, path: str | None = None) -> None:
        super().__init__(message, hint)
        self.path = path
