"""The stages end to end, as library calls the CLI wraps: ``up`` and ``down`` of a lab."""

from __future__ import annotations

from pathlib import Path

from polynimbus import capabilities, state
from polynimbus.apply import ApplyResult, Progress, apply
from polynimbus.intent.models import Intent
from polynimbus.keys import KeyStore
from polynimbus.plan import Plan, build_plan
from polynimbus.render.lab import render_lab
from polynimbus.resources import Resource
from polynimbus.targets import get_target
from polynimbus.targets.lab import LabTarget
from polynimbus.tunnels import get_transport


def desired_lab(
    plan: Plan, state_dir: Path, rotate_keys: bool = False
) -> tuple[list[Resource], list[str]]:
    """The lab's desired resources for ``plan`` and warnings about what the kernel lacks.

    Creates missing keys in ``state_dir`` (all of them with ``rotate_keys``).
    """
    backend = get_transport(plan.transport)
    keys = {}
    if backend.needs_keys:
        keys = KeyStore(state_dir).ensure([s.name for s in plan.sites], rotate=rotate_keys)
    warnings = []
    has_netem = capabilities.netem()
    delayed = [s.name for s in plan.sites if s.delay_ms is not None]
    if delayed and not has_netem:
        warnings.append(
            "delay emulation is unavailable: this kernel has no netem qdisc (sch_netem), so "
            f"the delay: of {', '.join(delayed)} is not applied; rates are still shaped"
        )
    impl = capabilities.wireguard_impl()
    return render_lab(plan, keys, wireguard_impl=impl, netem=has_netem), warnings


def lab_up(
    intent: Intent,
    state_dir: Path | None = None,
    rotate_keys: bool = False,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> ApplyResult:
    """Build or converge the lab of ``intent``; a second run with no change changes nothing.

    Raises:
        CapabilityError: not root, or a tool is missing.
        ApplyError: a change failed (run again to complete; ``lab_down`` removes it).
    """
    capabilities.require_root("up")
    capabilities.require_tools(capabilities.lab_tools(intent.overlay.transport))
    plan = build_plan(intent)
    sdir = state.resolve(plan.name, state_dir)
    with state.locked(sdir):
        desired, warnings = desired_lab(plan, sdir, rotate_keys)
        target = get_target("lab", state_dir=sdir)
        result = apply(target, plan.name, desired, progress=progress, dry_run=dry_run)
    result.warnings = warnings + result.warnings
    return result


def lab_down(lab: str, state_dir: Path | None = None) -> dict[str, list[str]]:
    """Remove everything ``up`` created for lab ``lab``, from any state.

    Raises:
        CapabilityError: not root.
    """
    capabilities.require_root("down")
    sdir = state.resolve(lab, state_dir)
    target = LabTarget(state_dir=sdir)
    if sdir.exists():
        with state.locked(sdir):
            return target.destroy(lab)
    return target.destroy(lab)
