"""Semantic checks of services, chains and the dual-stack numbering (issue 6).

Rules (seed 002 §II-C; RFC 8986):

- a service runs on a known site, under a name no host of that site uses;
- a ``firewall`` has nftables ``rules`` and is ``sr-unaware`` (nftables cannot see the inner
  header of an SRv6 packet); ``rules`` belong to firewalls only; a ``command`` function has
  a ``command``; an ``sr-unaware`` function must forward (``forward: true``), since the
  connector only gets packets back through the kernel's routing;
- a chain joins two endpoints (``SITE/HOST`` or ``SITE``) of different sites (traffic within
  a site never reaches the gateway that classifies it), through known services, each at
  most once, that can all carry its family; a port needs ``protocol: tcp`` or ``udp``;
- with IPv6 on, no two sites may share an IPv6 /64 or an SID /48 (both take the block's
  digits, see :func:`polynimbus.numbering.ipv6_prefix`).
"""

from __future__ import annotations

import difflib
from ipaddress import IPv4Network

from polynimbus.errors import Problem
from polynimbus.intent.models import ChainSpec, Intent
from polynimbus.names import RESERVED_HOST_NAMES


def did_you_mean(word: str, choices: list[str]) -> str:
    """``"did you mean 'X'? "`` for the closest of ``choices`` to ``word``, or ``""``."""
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {match[0]!r}? " if match else ""


def chain_problems(intent: Intent) -> list[Problem]:
    """All problems of ``intent``'s services and chains and of its IPv6 numbering.

    Expects the sites to be numbered without problems.
    """
    out: list[Problem] = []
    sites = {s.name: s for s in intent.sites}
    site_names = list(sites)
    seen: dict[str, int] = {}
    for i, svc in enumerate(intent.services):
        path = f"services[{i}]"
        if svc.name in seen:
            out.append(
                Problem(
                    f"{path}.name",
                    f"duplicate service name {svc.name!r} (also services[{seen[svc.name]}])",
                    "service names must be unique; rename one",
                )
            )
        else:
            seen[svc.name] = i
        site = sites.get(svc.site)
        if site is None:
            out.append(
                Problem(
                    f"{path}.site",
                    f"no site named {svc.site!r}",
                    did_you_mean(svc.site, site_names) + "sites: " + ", ".join(site_names),
                )
            )
        elif svc.name in {h.name for h in site.hosts} | RESERVED_HOST_NAMES:
            out.append(
                Problem(
                    f"{path}.name",
                    f"service {svc.name!r} has the name of a host or node of site {svc.site!r}",
                    f"services and hosts share the exec targets {svc.site}/NAME; rename one",
                )
            )
        if svc.function == "firewall":
            if not svc.rules:
                out.append(
                    Problem(
                        path,
                        f"firewall {svc.name!r} has no rules",
                        'add rules: ["tcp dport 5201 drop"], or use function: forward',
                    )
                )
            if svc.mode == "sr-aware":
                out.append(
                    Problem(
                        f"{path}.mode",
                        f"firewall {svc.name!r} cannot be sr-aware: an SR-aware function sees "
                        "SRv6 packets, whose inner header nftables rules do not match",
                        "use mode: sr-unaware (the connector's proxy hands it the inner packets)",
                    )
                )
        elif svc.rules:
            out.append(
                Problem(
                    f"{path}.rules",
                    f"rules are only for function: firewall (this is {svc.function!r})",
                    "remove rules:, or set function: firewall",
                )
            )
        if svc.function == "command" and not svc.command:
            out.append(
                Problem(
                    path,
                    f"command function {svc.name!r} has no command",
                    'add command: "PROGRAM ARGS" (it runs in the function\'s namespace)',
                )
            )
        elif svc.function != "command" and svc.command:
            out.append(
                Problem(
                    f"{path}.command",
                    f"command is only for function: command (this is {svc.function!r})",
                    "remove command:, or set function: command",
                )
            )
        if svc.mode == "sr-unaware" and not svc.forward:
            out.append(
                Problem(
                    f"{path}.forward",
                    f"sr-unaware function {svc.name!r} has no way to route packets back to the "
                    "SR/VNF connector (forward: false)",
                    "set forward: true (the kernel routes each chain's packets back by "
                    "policy), or make it sr-aware and let the program handle SRv6 itself",
                )
            )
        elif svc.mode == "sr-aware" and not svc.forward and svc.function != "command":
            out.append(
                Problem(
                    f"{path}.forward",
                    f"forward: false means a program handles SRv6 itself; {svc.name!r} is a "
                    f"{svc.function!r} function",
                    "remove forward:, or use function: command",
                )
            )
        if len(set(svc.families)) != len(svc.families):
            out.append(Problem(f"{path}.families", "a family is listed twice", "list each once"))

    services = {s.name: s for s in intent.services}
    seen = {}
    for i, chain in enumerate(intent.chains):
        path = f"chains[{i}]"
        if chain.name in seen:
            out.append(
                Problem(
                    f"{path}.name",
                    f"duplicate chain name {chain.name!r} (also chains[{seen[chain.name]}])",
                    "chain names must be unique; rename one",
                )
            )
        else:
            seen[chain.name] = i
        ends: list[str | None] = []
        for key, value in (("from", chain.source), ("to", chain.to)):
            ends.append(_endpoint_problems(intent, f"{path}.{key}", value, out))
        if ends[0] is not None and ends[0] == ends[1]:
            out.append(
                Problem(
                    path,
                    f"from and to are both in site {ends[0]!r}: traffic within a site never "
                    "reaches the gateway that steers it",
                    "chain endpoints must be in different sites",
                )
            )
        listed: dict[str, int] = {}
        for j, name in enumerate(chain.through):
            tpath = f"{path}.through[{j}]"
            target = services.get(name)
            if name in listed:
                out.append(
                    Problem(
                        tpath,
                        f"service {name!r} is listed twice in chain {chain.name!r} (also "
                        f"through[{listed[name]}])",
                        "a function appears at most once in a chain (seed 002 §II-C); "
                        "declare a second service to pass a function twice",
                    )
                )
                continue
            listed[name] = j
            if target is None:
                known = list(services)
                out.append(
                    Problem(
                        tpath,
                        f"no service named {name!r}",
                        did_you_mean(name, known)
                        + (
                            "services: " + ", ".join(known)
                            if known
                            else "declare it under services:"
                        ),
                    )
                )
            elif chain.family not in target.families:
                out.append(
                    Problem(
                        tpath,
                        f"service {name!r} carries {', '.join(target.families)} only, and chain "
                        f"{chain.name!r} is {chain.family}",
                        f"add {chain.family} to the service's families:, or set the chain's "
                        "family: to one it carries",
                    )
                )
        m = chain.match
        if m is not None and m.port is not None and m.protocol not in ("tcp", "udp"):
            out.append(
                Problem(
                    f"{path}.match.port",
                    "a port needs protocol: tcp or udp",
                    "add protocol: tcp (or udp) to match:",
                )
            )
    out += _id_collisions(intent)
    out += _overlaps(intent)
    if intent.uses_srv6 and intent.overlay.ipv6 is False:
        out.append(
            Problem(
                "overlay.ipv6",
                "SRv6 (srv6, services or chains) needs IPv6 in the overlay, and overlay.ipv6 "
                "is false",
                "remove overlay.ipv6: false",
            )
        )
    out += _ipv6_collisions(intent)
    return out


def _endpoint_problems(intent: Intent, path: str, value: str, out: list[Problem]) -> str | None:
    """Check one chain endpoint; return its site's name when it names a known site."""
    site_name, _, host = value.partition("/")
    sites = {s.name: s for s in intent.sites}
    site = sites.get(site_name)
    if site is None:
        out.append(
            Problem(
                path,
                f"no site named {site_name!r}",
                did_you_mean(site_name, list(sites))
                + "write SITE/HOST or SITE; sites: "
                + ", ".join(sites),
            )
        )
        return None
    hosts = [h.name for h in site.hosts]
    if "/" in value:
        if host not in hosts:
            out.append(
                Problem(
                    path,
                    f"site {site_name!r} has no host {host!r}",
                    did_you_mean(host, hosts)
                    + (f"hosts of {site_name}: " + ", ".join(hosts) if hosts else "no hosts"),
                )
            )
            return site_name
    elif not hosts:
        out.append(
            Problem(path, f"site {site_name!r} has no hosts", "add hosts to the site, or name one")
        )
    return site_name


def _ipv6_collisions(intent: Intent) -> list[Problem]:
    from polynimbus.numbering import ipv6_prefix, number_sites, sid_block

    numbering, _ = number_sites(intent)
    out: list[Problem] = []
    checks = [("IPv6 prefix", ipv6_prefix)] if intent.dual_stack else []
    if intent.uses_srv6:
        checks.append(("SID block", sid_block))
    for what, fn in checks:
        seen: dict[str, int] = {}
        for i, n in enumerate(numbering):
            if n is None:
                continue
            key = fn(IPv4Network(n.block))
            if key in seen:
                out.append(
                    Problem(
                        f"sites[{i}]",
                        f"site {intent.sites[i].name!r} would share the {what} {key} with "
                        f"sites[{seen[key]}] ({intent.sites[seen[key]].name!r}): both take "
                        "the digits of their IPv4 blocks' second and third octets",
                        "give each site a block that differs in its second or third octet "
                        "(or set overlay.ipv6: false and use no SRv6)",
                    )
                )
            else:
                seen[key] = i
    return out


def _id_collisions(intent: Intent) -> list[Problem]:
    """Two chains, two services, or two connector links of one NFV node whose names hash
    to the same id (ids depend only on their own name, so they never move; a collision
    is the user's to break, by renaming)."""
    from polynimbus.numbering import chain_id, id_collisions, link_id, service_id

    out: list[Problem] = []
    chains = {c.name: i for i, c in enumerate(intent.chains)}
    for a, b in id_collisions([(c.name, chain_id(c.name)) for c in intent.chains]):
        out.append(
            Problem(
                f"chains[{chains[b]}].name",
                f"chains {a!r} and {b!r} hash to the same chain id, which numbers their "
                "SIDs, rules and tables",
                f"rename one of them (e.g. {b}-2)",
            )
        )
    services = {s.name: i for i, s in enumerate(intent.services)}
    for a, b in id_collisions([(s.name, service_id(s.name)) for s in intent.services]):
        out.append(
            Problem(
                f"services[{services[b]}].name",
                f"services {a!r} and {b!r} hash to the same service id, which numbers their SIDs",
                f"rename one of them (e.g. {b}-2)",
            )
        )
    specs = {s.name: s for s in intent.services}
    by_site: dict[str, list[tuple[str, int]]] = {}
    where: dict[str, str] = {}
    for i, c in enumerate(intent.chains):
        for j, name in enumerate(c.through):
            svc = specs.get(name)
            if svc is None or svc.mode != "sr-unaware":
                continue
            key = f"{name} for chain {c.name!r}"
            by_site.setdefault(svc.site, []).append((key, link_id(name, c.name)))
            where[key] = f"chains[{i}].through[{j}]"
    for site, keys in by_site.items():
        for a, b in id_collisions(keys):
            out.append(
                Problem(
                    where[b],
                    f"the connector links of {a} and of {b} on the NFV node of site "
                    f"{site!r} hash to the same id, which names their interfaces",
                    "rename the chain",
                )
            )
    return out


def _endpoint_overlap(a: str, b: str) -> bool:
    """Whether chain endpoints ``a`` and ``b`` (``SITE`` or ``SITE/HOST``) share a host."""
    sa, _, ha = a.partition("/")
    sb, _, hb = b.partition("/")
    return sa == sb and (not ha or not hb or ha == hb)


def _overlaps(intent: Intent) -> list[Problem]:
    """Two chain directions that could both claim one packet: same family, overlapping
    sources and destinations, protocols and ports that do not tell them apart. A packet
    can follow one segment list only; which rule wins would be an accident of ids."""
    out: list[Problem] = []
    dirs: list[tuple[int, ChainSpec, str, str, str, str | None, int | None, int | None]] = []
    for i, c in enumerate(intent.chains):
        proto = c.match.protocol if c.match else None
        port = c.match.port if c.match else None
        dirs.append((i, c, "forward", c.source, c.to, proto, port, None))
        if c.symmetric:
            dirs.append((i, c, "reverse", c.to, c.source, proto, None, port))
    reported: set[tuple[int, int]] = set()
    for x in range(len(dirs)):
        for y in range(x + 1, len(dirs)):
            i, c, d1, s1, t1, p1, dp1, sp1 = dirs[x]
            j, e, d2, s2, t2, p2, dp2, sp2 = dirs[y]
            if i == j or (i, j) in reported or c.family != e.family:
                continue
            if not (_endpoint_overlap(s1, s2) and _endpoint_overlap(t1, t2)):
                continue
            if p1 is not None and p2 is not None and p1 != p2:
                continue
            if dp1 is not None and dp2 is not None and dp1 != dp2:
                continue
            if sp1 is not None and sp2 is not None and sp1 != sp2:
                continue
            reported.add((i, j))
            what = " ".join(
                x
                for x in (
                    p2 or p1 or "",
                    f"sport {sp1 or sp2}" if sp1 or sp2 else "",
                    f"dport {dp1 or dp2}" if dp1 or dp2 else "",
                )
                if x
            )
            out.append(
                Problem(
                    f"chains[{j}]",
                    f"chain {e.name!r} ({d2}) and chain {c.name!r} ({d1}) both steer "
                    f"{e.family} traffic from {s2} to {t2}" + (f" ({what})" if what else ""),
                    "a packet follows one chain: give them different endpoints, or a "
                    "match: (protocol, port) that tells them apart",
                )
            )
    return out
