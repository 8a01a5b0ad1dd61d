"""Errors raised by polynimbus, one subclass per stage.

Every error carries a human message and, where it helps, a ``hint`` saying what to do.
The CLI prints ``error: <message>`` then ``  hint: <hint>`` and exits with ``exit_code``.
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
