"""Where the API's changes go: the lab (through ``lab_up``, the one apply engine), or the
in-memory fake target (tests: no root, no namespaces).

Either way the intent is kept in the lab's state directory (``intent.yaml``, as ``up``
keeps it), which is the source of truth the API reads at each request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from polynimbus import state
from polynimbus.apply import ApplyResult, Progress, apply
from polynimbus.intent.models import Intent
from polynimbus.keys import KeyPair, generate
from polynimbus.orchestrate import intent_yaml, lab_up
from polynimbus.plan import build_plan
from polynimbus.render.lab import render_lab
from polynimbus.targets import get_target


class Applier(Protocol):
    """Converges a place to an intent and keeps that intent in ``state_dir``."""

    state_dir: Path
    target: str

    def apply(self, intent: Intent, progress: Progress | None = None) -> ApplyResult:
        """Converge to ``intent``; the changes made.

        Raises:
            PolynimbusError: as :func:`polynimbus.orchestrate.lab_up`.
        """
        ...


class LabApplier:
    """The emulated lab, through :func:`polynimbus.orchestrate.lab_up` (needs root)."""

    target = "lab"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def apply(self, intent: Intent, progress: Progress | None = None) -> ApplyResult:
        # only the nodes the change touches: a write costs what it changes, not the lab's
        # size (drift elsewhere is for polynimbus up)
        return lab_up(intent, self.state_dir, progress=progress, only_changes=True)


class FakeApplier:
    """The in-memory ``fake`` target (:mod:`polynimbus.targets.fake`): the same plan and
    render as the lab, applied to records in memory. For tests; needs no root."""

    target = "fake"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._target = get_target("fake")
        self._keys: dict[str, KeyPair] = {}

    def apply(self, intent: Intent, progress: Progress | None = None) -> ApplyResult:
        plan = build_plan(intent)
        state.prepare(self.state_dir, plan.name)
        state.save_intent(self.state_dir, intent_yaml(intent))
        for s in plan.sites:
            self._keys.setdefault(s.name, generate())
        desired = render_lab(plan, self._keys, impl="kernel", netem=False)
        return apply(self._target, plan.name, desired, progress=progress)


APPLIERS: dict[str, type[LabApplier] | type[FakeApplier]] = {
    "lab": LabApplier,
    "fake": FakeApplier,
}
"""``serve --target`` choices."""
