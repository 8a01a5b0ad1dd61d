"""The stages end to end, as library calls the CLI wraps: ``up`` and ``down`` of a lab.

``up``: load the plan, take the lab's host-wide lock, prepare the state directory and the
keys, render the lab's resources, apply them (observe, diff, change). ``--dry-run`` does
all of it except the writing: it takes no lock file it did not already have, creates no
directory and no key (missing keys are stood in for by placeholders, which show as
changes), and changes nothing.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polynimbus import capabilities, names, state
from polynimbus.apply import ApplyResult, Progress, apply, changed_nodes
from polynimbus.errors import StateError
from polynimbus.intent.models import Intent
from polynimbus.node import Process
from polynimbus.plan import Plan, build_plan
from polynimbus.plan.model import SitePlan
from polynimbus.render.lab import render_lab
from polynimbus.resources import Resource
from polynimbus.targets import get_target
from polynimbus.targets.lab import LabTarget, list_labs, processes
from polynimbus.tunnels import TRANSPORTS, get_transport


def lab_requirements(transport: str, vrrp: bool = False) -> list[str]:
    """Commands ``up`` needs for ``transport`` on this machine (and keepalived with
    ``vrrp``: a site with two gateways, :mod:`polynimbus.render.standby`)."""
    backend = get_transport(transport)
    tools = ["ip", "nft", "unshare", "setsid"]
    tools += list(backend.required_tools(backend.implementation()))
    return tools + (["keepalived"] if vrrp else [])


def _credentials(plan: Plan, sdir: Path, rotate: bool, dry_run: bool) -> Mapping[str, Any]:
    """The transport's credentials (:meth:`TunnelBackend.credentials`); a dry run on a
    directory that is not yet this lab's reads nothing from it."""
    backend = get_transport(plan.transport)
    if dry_run and not rotate and state.peek(sdir, plan.name) != "ours":
        rotate = True  # stand-ins for everything, nothing read
    return backend.credentials(plan, sdir, rotate=rotate, dry_run=dry_run)


def desired_lab(
    plan: Plan, sdir: Path, rotate_keys: bool = False, dry_run: bool = False
) -> tuple[list[Resource], list[str]]:
    """The lab's desired resources for ``plan`` and warnings about what the kernel lacks.

    Creates missing credentials (keys, certificates) in ``sdir`` (all of them anew with
    ``rotate_keys``), unless ``dry_run``.

    Raises:
        KeyFileError: a stored key is unsafe or corrupt.
    """
    creds = _credentials(plan, sdir, rotate_keys, dry_run)
    warnings = []
    has_netem = capabilities.netem()
    delayed = [s.name for s in plan.sites if s.delay_ms is not None]
    if delayed and not has_netem:
        warnings.append(
            "delay emulation is unavailable: this kernel has no netem qdisc (sch_netem), so "
            f"the delay: of {', '.join(delayed)} is not applied; rates are still shaped"
        )
    impl = get_transport(plan.transport).implementation()
    return render_lab(plan, creds, impl=impl, netem=has_netem), warnings


@contextlib.contextmanager
def _locks(lab: str, dry_run: bool) -> Iterator[None]:
    """The lab's lock and its tag's lock; a dry run takes none (it would write the lock
    files) and only refuses while another command holds the lab's."""
    if dry_run:
        if state.is_locked(lab):
            raise StateError(
                f"another polynimbus command is working on lab {lab!r}",
                "wait for it to finish, then run the command again",
            )
        yield
        return
    with state.lab_lock(lab), state.tag_lock(lab):
        yield


def lab_locks(lab: str) -> contextlib.AbstractContextManager[None]:
    """The lab's lock and its tag's lock, held for the block (see :func:`lab_up`'s
    ``locked``).

    Raises:
        StateError: another command holds one of them.
    """
    return _locks(lab, False)


def check_lab_state(lab: str, sdir: Path) -> tuple[list[str], str]:
    """What ``up`` checks before it changes anything: no other lab's tag collides, the
    state directory is polynimbus's (or absent), and a running lab uses this one.

    Returns:
        the labs up, and what :func:`polynimbus.state.peek` found in ``sdir``.

    Raises:
        StateError: any of those does not hold (with a hint naming the right directory).
    """
    present = list_labs()
    state.check_tag_collision(lab, present)
    found = state.peek(sdir, lab)  # refuses a foreign directory, writes nothing
    if lab in present:
        _check_same_state_dir(lab, sdir, found)
    return present, found


def _check_same_state_dir(lab: str, sdir: Path, found: str) -> None:
    """Refuse to touch running lab ``lab`` through another state directory than its own
    (its keys would be replaced, and the other directory would no longer match).

    Raises:
        StateError: the lab was brought up with another state directory, or (not noted)
            ``sdir`` is not the lab's.
    """
    recorded = state.recorded_state_dir(lab)
    if recorded is not None and recorded != sdir:
        raise StateError(
            f"the lab {lab!r} is up with the state directory {recorded}, not {sdir}",
            f"give --state-dir {recorded}",
        )
    if recorded is None and found != "ours":
        raise StateError(
            f"the lab {lab!r} is up, but not with the state directory {sdir}",
            "give --state-dir the directory its 'up' used",
        )


def intent_yaml(intent: Intent) -> str:
    """``intent`` as YAML that loads back to an equal intent (what ``up`` keeps)."""
    import yaml

    data = intent.model_dump(mode="json", by_alias=True, exclude_none=True)
    return "# the intent of the last polynimbus up of this lab\n" + yaml.safe_dump(
        data, sort_keys=False
    )


def lab_up(
    intent: Intent,
    state_dir: Path | None = None,
    rotate_keys: bool = False,
    progress: Progress | None = None,
    dry_run: bool = False,
    only_changes: bool = False,
    locked: bool = False,
) -> ApplyResult:
    """Build or converge the lab of ``intent``; a second run with no change changes nothing.

    ``locked``: the caller holds the lab's locks already (:func:`lab_locks`), e.g. a move
    between its switch-over and this convergence.

    With ``only_changes`` (the API's writes, ``move``), only the nodes whose desired state
    differs from that of the intent the lab's state directory keeps (the last one
    applied) are observed and changed: the cost follows the change, not the lab's size.
    Drift elsewhere is left for a plain ``up``. Without a kept intent it is a plain up.

    Tunnel daemons it (re)started are given their transport's ``ready_timeout_s`` to carry
    traffic (:func:`wait_for_tunnels`); a gateway still cut off then is a warning.

    Raises:
        CapabilityError: not root, a tool is missing, or ``intent`` uses SRv6 (services,
            chains, ``overlay.srv6``) on a kernel without it (:func:`capabilities.srv6`).
        StateError: the state directory is not polynimbus's, another command holds the
            lab's lock, or another lab's tag collides with this one's.
        KeyFileError: a stored key is unsafe or corrupt.
        ApplyError: a change failed (run again to complete; ``lab_down`` removes it).
    """
    capabilities.require_root("up --dry-run" if dry_run else "up")
    vrrp = any(s.gateways > 1 for s in intent.sites)
    capabilities.require_tools(lab_requirements(intent.overlay.transport, vrrp))
    if intent.uses_srv6:  # refused before anything is written (CONFIG_IPV6_SEG6_LWTUNNEL)
        capabilities.require_srv6()
    plan = build_plan(intent)
    sdir = state.resolve(plan.name, state_dir)
    with contextlib.nullcontext() if locked else _locks(plan.name, dry_run):
        present, found = check_lab_state(plan.name, sdir)
        kept = None
        if only_changes and plan.name in present and found == "ours":
            kept = _kept_desired(plan, sdir, rotate_keys, dry_run)
        text = intent_yaml(intent)
        if not dry_run:
            state.prepare(sdir, plan.name)
            state.record_state_dir(plan.name, sdir)
            state.clear_applied(sdir)  # until this apply has succeeded in full
            state.save_intent(sdir, text)
        desired, warnings = desired_lab(plan, sdir, rotate_keys, dry_run)
        nodes = None
        if kept is not None:
            nodes = scope_closure(changed_nodes(kept, desired), [*kept, *desired])
        target = get_target("lab", state_dir=sdir)
        result = apply(target, plan.name, desired, progress=progress, dry_run=dry_run, nodes=nodes)
        if not dry_run:
            state.mark_applied(sdir, text)
            _prune_secrets(plan, sdir, desired, nodes)
            result.warnings += wait_for_tunnels(plan, result)
    result.warnings = warnings + result.warnings
    return result


def _prune_secrets(plan: Plan, sdir: Path, desired: list[Resource], nodes: set[str] | None) -> None:
    """After an apply: the files of daemons the lab no longer runs, and the credentials of
    transports it no longer uses (a removed tunnel or a switched transport leaves no key
    behind); after a scoped apply, only on its ``nodes``."""
    processes.prune_files(sdir, names.lab_prefix(plan.name), desired, nodes)
    in_use = set(get_transport(plan.transport).credential_dirs)
    for name in TRANSPORTS.names():
        for sub in TRANSPORTS.get(name).credential_dirs:
            if sub not in in_use:
                state.remove_subdir(sdir, sub)


def wait_for_tunnels(plan: Plan, result: ApplyResult) -> list[str]:
    """Wait until each gateway whose tunnel daemons ``result`` (re)started reaches its
    peers' overlay addresses through the tunnels (one ping each, repeated), for at most the
    transport's ``ready_timeout_s``: so ``up`` returns a lab that carries traffic.

    Returns:
        a warning per gateway still without some peer at the deadline.
    """
    backend = get_transport(plan.transport)
    if backend.ready_timeout_s <= 0:
        return []
    started = {
        c.resource.node
        for c in result.changes
        if c.action != "delete"
        and isinstance(c.resource.item, Process)
        and c.resource.item.name.split(":", 1)[0] in backend.daemons
    }
    deadline = time.monotonic() + backend.ready_timeout_s

    def wait(site: SitePlan) -> str | None:
        ns = names.gateway_ns(plan.name, site.name)
        todo = [plan.sites[p.site].gateway_address for p in site.peers]
        while todo and time.monotonic() < deadline:
            todo = [a for a in todo if not _pings(ns, site.gateway_address, a)]
        if not todo:
            return None
        return f"{site.name}: no answer yet through the tunnels from {', '.join(todo)}"

    sites = [s for s in plan.sites if names.gateway_ns(plan.name, s.name) in started]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return [w for w in pool.map(wait, sites) if w]


def _pings(ns: str, source: str, address: str) -> bool:
    """Whether one ping from ``source`` in namespace ``ns`` to ``address`` is answered
    within 0.2 s."""
    argv = ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "0.2"]
    argv += ["-I", source, address]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _kept_desired(
    plan: Plan, sdir: Path, rotate_keys: bool, dry_run: bool
) -> list[Resource] | None:
    """The desired resources of the intent kept in ``sdir`` (the last applied), or
    ``None`` when there is none that still loads (then everything is observed)."""
    from polynimbus.errors import PolynimbusError
    from polynimbus.intent.load import load_intent_text

    text = state.kept_intent_applied(sdir)  # None unless its apply succeeded in full
    if text is None or rotate_keys:
        return None
    try:
        kept = build_plan(load_intent_text(text))
    except PolynimbusError:
        return None
    if kept.name != plan.name:
        return None
    return desired_lab(kept, sdir, False, dry_run)[0]


def scope_closure(nodes: set[str], resources: list[Resource]) -> set[str]:
    """``nodes`` with the nodes that changing them may disturb: the far end of every veth
    pair with an end among them (recreating a pair drops the far end's addresses and
    routes), and every node whose VXLAN devices ride one of them (a tenant router on its
    gateway). One step, not transitive: the far ends' other links are only read."""
    out = set(nodes)
    for r in resources:
        item = r.item
        peer = getattr(item, "peer", None)
        if peer is not None and (r.node in nodes or peer.node in nodes):
            out |= {r.node, peer.node}
        vx = getattr(item, "vxlan", None)
        if vx is not None and vx.underlay in nodes:
            out.add(r.node)
    return out


def lab_drift(intent: Intent, state_dir: Path | None = None) -> list[str]:
    """How the running lab differs from the plan: one line per change ``up`` would make,
    e.g. ``create nftables table inet polynimbus on pn.x.a.gateway: missing``.

    Writes nothing. Uses the stored keys to compare WireGuard configurations; without them
    (no state directory) the configurations are left out of the comparison.

    Raises:
        CapabilityError: not root.
        StateError: the state directory is not polynimbus's.
        KeyFileError: a stored key is unsafe or corrupt.
    """
    capabilities.require_root("verify")
    plan = build_plan(intent)
    sdir = state.resolve(plan.name, state_dir)
    have_keys = state.peek(sdir, plan.name) == "ours"
    desired, _ = desired_lab(plan, sdir, dry_run=True)
    if not have_keys:
        desired = [r for r in desired if r.kind != "wgconf"]
    target = get_target("lab", state_dir=sdir)
    result = apply(target, plan.name, desired, dry_run=True)
    return [c.describe() for c in result.changes]


@dataclass
class DownResult:
    """What ``down`` removed: processes, sockets, namespaces (as text), state paths, and
    warnings (what it left because it did not create it)."""

    processes: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    state: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.sockets or self.namespaces or self.state)


def lab_down(lab: str, state_dir: Path | None = None) -> DownResult:
    """Remove everything ``up`` created for lab ``lab``, from any state; nothing else.

    Raises:
        CapabilityError: not root.
        StateError: another command holds the lab's lock, or the state directory is not
            polynimbus's (nothing is removed then).
    """
    capabilities.require_root("down")
    sdir = state.resolve(lab, state_dir)
    with state.lab_lock(lab), state.tag_lock(lab):
        state.peek(sdir, lab)  # a foreign directory: refuse before removing anything
        recorded = state.recorded_state_dir(lab)
        if recorded is not None and recorded != sdir:
            raise StateError(
                f"the lab {lab!r} was brought up with the state directory {recorded}, "
                f"not {sdir}; nothing was removed",
                f"give --state-dir {recorded}",
            )
        gone = LabTarget(state_dir=sdir).destroy(lab)
        removal = state.remove(sdir, lab)
        state.forget_state_dir(lab)
    warning = removal.warning()
    return DownResult(
        processes=gone["processes"],
        sockets=gone["sockets"],
        namespaces=gone["namespaces"],
        state=removal.removed,
        warnings=[warning] if warning else [],
    )
