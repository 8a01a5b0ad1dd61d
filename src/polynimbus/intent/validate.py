"""Semantic validation of an intent: what types alone cannot say.

Checks: duplicate site names, duplicate or reserved host names (per site), the hub of
``topology: hub``, and the numbering plan (:func:`polynimbus.numbering.number_sites`):
overlapping blocks, addresses outside ``address_space`` or their block, exhaustion; then the
services and chains (:mod:`polynimbus.intent.chains`) and the tenants
(:mod:`polynimbus.intent.tenants`).
"""

from __future__ import annotations

import difflib
import os

from polynimbus.errors import Problem
from polynimbus.intent.models import Intent
from polynimbus.names import RESERVED_HOST_NAMES


def semantic_problems(
    intent: Intent,
    site_indices: list[int] | None,
    item_indices: dict[str, list[int]] | None = None,
) -> list[Problem]:
    """All semantic problems of ``intent``, in a stable order.

    Args:
        intent: a structurally valid intent (possibly a subset of the file's sites).
        site_indices: the file index of each site in ``intent.sites`` when it is a subset,
            so that paths name the right ``sites[i]``; ``None`` when it is the whole file.
        item_indices: likewise for ``services`` and ``chains`` (by key), when subsets.
    """
    from polynimbus.numbering import number_sites

    idx = site_indices if site_indices is not None else list(range(len(intent.sites)))
    problems: list[Problem] = []

    first_seen: dict[str, int] = {}
    for k, site in enumerate(intent.sites):
        i = idx[k]
        if site.name in first_seen:
            problems.append(
                Problem(
                    f"sites[{i}].name",
                    f"duplicate site name {site.name!r} (also sites[{first_seen[site.name]}])",
                    "site names must be unique; rename one",
                )
            )
        else:
            first_seen[site.name] = i
        hosts_seen: dict[str, int] = {}
        for j, host in enumerate(site.hosts):
            path = f"sites[{i}].hosts[{j}]"
            if host.name in RESERVED_HOST_NAMES:
                problems.append(
                    Problem(
                        path,
                        f"host name {host.name!r} is reserved for the site's "
                        + ("NFV node" if host.name == "nfv" else "gateway"),
                        "rename the host",
                    )
                )
            if host.name in hosts_seen:
                problems.append(
                    Problem(
                        path,
                        f"duplicate host name {host.name!r} in site "
                        f"{site.name!r} (also sites[{i}].hosts"
                        f"[{hosts_seen[host.name]}])",
                        "host names must be unique within a site",
                    )
                )
            else:
                hosts_seen[host.name] = j

    ov = intent.overlay
    names = [s.name for s in intent.sites]
    if ov.topology == "hub":
        if ov.hub is None:
            example = names[0] if names else "SITE"
            problems.append(
                Problem(
                    "overlay",
                    "topology 'hub' needs a hub site",
                    f"add hub: <site name> under overlay:, e.g. hub: {example}",
                )
            )
        elif ov.hub not in names and site_indices is None:
            close = difflib.get_close_matches(ov.hub, names, n=1)
            hint = (f"did you mean {close[0]!r}? " if close else "") + "sites: " + ", ".join(names)
            problems.append(Problem("overlay.hub", f"no site named {ov.hub!r}", hint))
    elif ov.hub is not None:
        problems.append(
            Problem(
                "overlay.hub",
                f"hub: is only used with topology: hub (topology is {ov.topology!r})",
                "remove hub:, or set topology: hub",
            )
        )

    problems += _parallel_problems(intent)
    problems += _transport_problems(intent)

    _, numbering_problems = number_sites(intent)
    for p in numbering_problems:
        problems.append(_reindex(p, idx) if site_indices is not None else p)
    if not numbering_problems:
        from polynimbus.intent.chains import chain_problems

        for p in chain_problems(intent):
            problems.append(_reindex_items(p, item_indices) if item_indices else p)
    if site_indices is None or len(site_indices) == len(intent.sites):
        from polynimbus.intent.tenants import tenant_problems

        for p in tenant_problems(intent):
            problems.append(_reindex_items(p, item_indices) if item_indices else p)
    return problems


def _reindex_items(p: Problem, idx: dict[str, list[int]]) -> Problem:
    """Rewrite ``services[k]``/``chains[k]`` of a subset to the file's indices."""
    import re

    def sub(m: re.Match[str]) -> str:
        key, k = m.group(1), int(m.group(2))
        return f"{key}[{idx[key][k]}]" if k < len(idx.get(key, [])) else m.group(0)

    pat = r"(services|chains|tenants)\[(\d+)\]"
    return Problem(re.sub(pat, sub, p.path), re.sub(pat, sub, p.message), p.hint, p.line)


def _reindex(p: Problem, idx: list[int]) -> Problem:
    """Rewrite ``sites[k]`` in a problem found on a subset to the file's ``sites[idx[k]]``."""
    import re

    def sub(m: re.Match[str]) -> str:
        return f"sites[{idx[int(m.group(1))]}]"

    return Problem(
        re.sub(r"sites\[(\d+)\]", sub, p.path),
        re.sub(r"sites\[(\d+)\]", sub, p.message),
        p.hint,
        p.line,
    )


def _transport_problems(intent: Intent) -> list[Problem]:
    """A dual-stack overlay (``overlay.ipv6``, or SRv6) on a transport that carries IPv4
    only (``TunnelBackend.carries_ipv6``)."""
    from polynimbus.tunnels import TRANSPORTS

    ov = intent.overlay
    if not intent.dual_stack or TRANSPORTS.get(ov.transport).carries_ipv6:
        return []
    why = "overlay.ipv6 is on" if ov.ipv6 else "SRv6 (srv6, services or chains) needs IPv6"
    able = [n for n in TRANSPORTS.names() if TRANSPORTS.get(n).carries_ipv6]
    return [
        Problem(
            "overlay.transport",
            f"transport {ov.transport!r} carries IPv4 only, but the overlay is dual-stack ({why})",
            f"choose a transport that carries IPv6 ({', '.join(able)})"
            + (", or set overlay.ipv6: false" if ov.ipv6 else ""),
        )
    ]


def _parallel_problems(intent: Intent) -> list[Problem]:
    """``overlay.parallel`` against what the transport can run, and the UDP ports the
    tunnels take (:meth:`~polynimbus.tunnels.base.TunnelBackend.port_range`: ``port`` ..
    ``port + parallel - 1``, OpenVPN one per tunnel) against 65535 and the tenants' VXLAN
    port."""
    from polynimbus.intent.tenants import TENANT_VXLAN_PORT
    from polynimbus.tunnels import TRANSPORTS

    ov = intent.overlay
    if ov.transport not in TRANSPORTS.names():
        return []  # reported where the transport is
    backend = TRANSPORTS.get(ov.transport)()
    out: list[Problem] = []
    most = backend.max_parallel
    if ov.parallel is not None and ov.parallel > most:
        out.append(
            Problem(
                "overlay.parallel",
                f"transport {ov.transport!r} runs at most {most} tunnel"
                f"{'s' if most > 1 else ''} per peer pair, not {ov.parallel}",
                f"set parallel: {most} or less"
                if most > 1
                else "remove parallel:, or choose a transport that runs several: "
                + ", ".join(n for n in TRANSPORTS.names() if TRANSPORTS.get(n).max_parallel > 1),
            )
        )
        return out
    parallel = ov.parallel or backend.default_parallel(os.cpu_count() or 1)
    low, high = backend.port_range(ov.effective_port, parallel, len(intent.sites))
    where = "overlay.parallel" if ov.parallel is not None else "overlay.port"
    taken = f"the tunnels take UDP ports {low}-{high}" if high > low else f"UDP {low}"
    if high > 65535:
        out.append(Problem(where, f"{taken}, past 65535", "choose a lower overlay.port"))
    if intent.tenants and low <= TENANT_VXLAN_PORT <= high and high > low:
        out.append(
            Problem(
                where,
                f"{taken}, which include the tenants' VXLAN port {TENANT_VXLAN_PORT}",
                "choose another overlay.port",
            )
        )
    return out
