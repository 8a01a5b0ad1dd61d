"""Numbering plan and address management (pure functions, no I/O).

Shared by two stages: intent validation reports its problems (overlaps, addresses outside
a block...) with their YAML paths, and the planner uses its numbers. It depends only on
the intent's models, so neither stage imports a later one.

Default plan, seed 003 §3.2.3.1 (Table 3.1): a site's block is ``10.A.B.0/24`` where
``A`` identifies the provider (:data:`~polynimbus.intent.models.PROVIDER_CODES`), ``B`` is the
site's index among that provider's sites in file order (from 0), hosts take ``.1, .2, ...``
in file order and the gateway takes the last usable address (``.254`` in a /24).

Generalised for overrides: a site may set ``subnet:`` (any block inside ``address_space``);
a host may set ``address:``; hosts without one take the lowest free addresses in file
order, skipping explicit ones and the gateway.

The lab's emulated underlay takes the gateways' public addresses from 198.18.0.0/15
(RFC 2544 benchmarking range): one /31 per site, at index ``(block offset) >> 8`` (one per
/24 of the address space), so a site keeps its public address when other sites come and
go. Blocks smaller than /24 that share a /24 probe the next free index, in file order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from polynimbus.errors import Problem
from polynimbus.intent.models import PROVIDER_CODES, Intent

UNDERLAY_SPACE = IPv4Network("198.18.0.0/15")
"""Public addresses of the emulated internet (RFC 2544 benchmarking range)."""

INTERNET_SERVICE = IPv4Address("192.0.2.1")
"""An address on the emulated internet router itself (TEST-NET-1), for egress checks."""

RESERVED_SPACES = (UNDERLAY_SPACE, IPv4Network("192.0.2.0/24"))
MAX_SITES_PER_PROVIDER = 256


@dataclass(frozen=True, slots=True)
class SiteNumbering:
    """Addresses of one site.

    Attributes:
        block: the site's block.
        gateway: the gateway's address in the block (last usable).
        hosts: the hosts' addresses, in file order.
        site_id: 6 hex digits, the block's offset in ``address_space`` (unique per site).
        auto: True when the block came from the numbering plan, not ``subnet:``.
    """

    block: IPv4Network
    gateway: IPv4Address
    hosts: tuple[IPv4Address, ...]
    site_id: str
    auto: bool


def provider_block(space: IPv4Network, provider: str, index: int) -> IPv4Network:
    """Block ``10.A.B.0/24`` of the ``index``-th site (from 0) of ``provider`` in ``space``.

    ``space`` must be a /8; A = provider code, B = ``index`` (seed 003 §3.2.3.1).

    Raises:
        ValueError: ``space`` is not a /8, or ``index`` is not in 0..255.
    """
    if space.prefixlen != 8:
        raise ValueError("the 10.A.B.0/24 numbering plan needs a /8 address_space")
    if not 0 <= index < MAX_SITES_PER_PROVIDER:
        raise ValueError(f"site index {index} does not fit in one octet")
    base = int(space.network_address) + (PROVIDER_CODES[provider] << 16) + (index << 8)
    return IPv4Network((base, 24))


def gateway_address(block: IPv4Network) -> IPv4Address:
    """The gateway's address: the last usable address of ``block`` (``.254`` in a /24)."""
    return block.broadcast_address - 1


def site_id(block: IPv4Network, space: IPv4Network) -> str:
    """6 hex digits: the offset of ``block`` in ``space`` (``space`` is at least a /8)."""
    return f"{int(block.network_address) - int(space.network_address):06x}"


def number_sites(intent: Intent) -> tuple[list[SiteNumbering | None], list[Problem]]:
    """Number every site and host of ``intent``.

    Returns:
        one entry per site (``None`` where a problem prevented numbering it), and the
        problems found: an unnumberable site, a block outside ``address_space`` or
        overlapping another, a host address outside its block, reserved or duplicated,
        more hosts than the block holds.
    """
    space = intent.overlay.address_space
    problems: list[Problem] = []
    blocks: list[IPv4Network | None] = []
    per_provider: dict[str, int] = {}

    for i, site in enumerate(intent.sites):
        index = per_provider.get(site.provider, 0)
        per_provider[site.provider] = index + 1
        if site.subnet is not None:
            block = site.subnet
            path = f"sites[{i}].subnet"
            if not (block.subnet_of(space)):
                problems.append(
                    Problem(
                        path,
                        f"{block} is outside address_space {space}",
                        "choose a block inside address_space, or widen it",
                    )
                )
                blocks.append(None)
                continue
            if block.prefixlen > 30:
                problems.append(
                    Problem(
                        path,
                        f"{block} is too small for a gateway and hosts",
                        "use a /30 or larger block (a /24 is usual)",
                    )
                )
                blocks.append(None)
                continue
            blocks.append(block)
            continue
        if space.prefixlen != 8:
            problems.append(
                Problem(
                    f"sites[{i}]",
                    f"site {site.name!r} has no subnet: and the 10.A.B.0/24 numbering plan needs "
                    f"a /8 address_space (this one is {space})",
                    "set subnet: on this site, or use a /8 address_space such as 10.0.0.0/8",
                )
            )
            blocks.append(None)
            continue
        if index >= MAX_SITES_PER_PROVIDER:
            problems.append(
                Problem(
                    f"sites[{i}]",
                    f"site {site.name!r} is {site.provider} site number {index + 1}, but the "
                    f"numbering plan numbers at most {MAX_SITES_PER_PROVIDER} sites per provider "
                    "(B is one octet)",
                    "set subnet: on the extra sites",
                )
            )
            blocks.append(None)
            continue
        blocks.append(provider_block(space, site.provider, index))

    _check_overlaps(intent, blocks, problems)

    result: list[SiteNumbering | None] = []
    for i, (site, maybe) in enumerate(zip(intent.sites, blocks, strict=True)):
        if maybe is None:
            result.append(None)
            continue
        block = maybe
        hosts = _number_hosts(i, site.name, [h.address for h in site.hosts], block, problems)
        result.append(
            SiteNumbering(
                block=block,
                gateway=gateway_address(block),
                hosts=hosts,
                site_id=site_id(block, space),
                auto=site.subnet is None,
            )
        )
    return result, problems


def _check_overlaps(
    intent: Intent, blocks: list[IPv4Network | None], problems: list[Problem]
) -> None:
    order = sorted(
        (int(b.network_address), int(b.broadcast_address), i)
        for i, b in enumerate(blocks)
        if b is not None
    )
    reported: set[int] = set()
    # A sweep: each block against the open one that reaches furthest.
    reach_end, reach_idx = -1, -1
    for start, end, i in order:
        if start <= reach_end:
            j = reach_idx
            first, second = sorted((i, j))
            if second not in reported:
                reported.add(second)
                a, b = blocks[first], blocks[second]
                path = f"sites[{second}]" + (".subnet" if intent.sites[second].subnet else "")
                how = "" if intent.sites[second].subnet else " (from the numbering plan)"
                problems.append(
                    Problem(
                        path,
                        f"block {b}{how} of site {intent.sites[second].name!r} overlaps block {a} "
                        f"of sites[{first}] ({intent.sites[first].name!r})",
                        "give each site its own block: change or remove one subnet:",
                    )
                )
        if end > reach_end:
            reach_end, reach_idx = end, i
    for space in RESERVED_SPACES:
        for i, b in enumerate(blocks):
            if b is not None and b.overlaps(space):
                problems.append(
                    Problem(
                        f"sites[{i}].subnet" if intent.sites[i].subnet else f"sites[{i}]",
                        f"block {b} overlaps {space}, which the lab's emulated internet uses",
                        "use a private block, e.g. inside 10.0.0.0/8",
                    )
                )


def _number_hosts(
    site_index: int,
    site_name: str,
    wanted: list[IPv4Address | None],
    block: IPv4Network,
    problems: list[Problem],
) -> tuple[IPv4Address, ...]:
    gw = gateway_address(block)
    first, last = int(block.network_address) + 1, int(gw) - 1
    taken: dict[int, int] = {}
    for k, addr in enumerate(wanted):
        if addr is None:
            continue
        path = f"sites[{site_index}].hosts[{k}].address"
        if addr not in block:
            problems.append(
                Problem(
                    path,
                    f"{addr} is outside the block {block} of site {site_name!r}",
                    f"use an address in {block}",
                )
            )
        elif addr == gw:
            problems.append(
                Problem(
                    path,
                    f"{addr} is the gateway's address",
                    f"the gateway takes the last usable address; use "
                    f"{IPv4Address(first)} to {IPv4Address(last)}",
                )
            )
        elif int(addr) < first or int(addr) > last:
            problems.append(
                Problem(
                    path,
                    f"{addr} is the network or broadcast address of {block}",
                    f"use {IPv4Address(first)} to {IPv4Address(last)}",
                )
            )
        elif int(addr) in taken:
            problems.append(
                Problem(
                    path,
                    f"{addr} is already taken by sites[{site_index}].hosts[{taken[int(addr)]}]",
                    "give each host its own address",
                )
            )
        else:
            taken[int(addr)] = k
    out: list[IPv4Address] = []
    nxt = first
    for k, addr in enumerate(wanted):
        if addr is not None:
            out.append(addr)
            continue
        while nxt in taken:
            nxt += 1
        if nxt > last:
            problems.append(
                Problem(
                    f"sites[{site_index}].hosts[{k}]",
                    f"site {site_name!r} has more hosts than its block {block} can number "
                    f"({last - first + 1} address{'es' if last != first else ''} "
                    "besides the gateway)",
                    "use a larger subnet: or fewer hosts",
                )
            )
            return tuple(out)
        taken[nxt] = k
        out.append(IPv4Address(nxt))
        nxt += 1
    return tuple(out)


def underlay_indices(numbering: list[SiteNumbering], space: IPv4Network) -> list[int]:
    """Index of each site's /31 in :data:`UNDERLAY_SPACE` (stable, see module docstring)."""
    used: set[int] = set()
    out: list[int] = []
    size = UNDERLAY_SPACE.num_addresses // 2
    for n in numbering:
        idx = ((int(n.block.network_address) - int(space.network_address)) >> 8) % size
        while idx in used:
            idx = (idx + 1) % size
        used.add(idx)
        out.append(idx)
    return out


def underlay_pair(index: int) -> tuple[IPv4Address, IPv4Address]:
    """(internet-side address, gateway public address) of the /31 at ``index``."""
    base = int(UNDERLAY_SPACE.network_address) + 2 * index
    return IPv4Address(base), IPv4Address(base + 1)


# --- IPv6 beside IPv4 and SRv6 SID blocks (issue 6) ------------------------------------

SID_SPACE = "5f00::/16"
"""The SRv6 SID block (RFC 9602); each site owns ``5f00:A:B::/48`` inside it."""

UNDERLAY6_SPACE = "2001:db8::/32"
"""IPv6 of the emulated internet, for ``srv6.carrier: underlay`` (RFC 3849)."""


def _digits(value: int) -> str:
    """An octet's decimal digits read as one hex group: 12 -> ``12`` (0x12)."""
    return str(value)


def ipv6_prefix(block: IPv4Network) -> str:
    """The site's IPv6 /64 with the same digits as its IPv4 block.

    ``10.A.B.0/24`` -> ``fd00:A:B::/64`` (a block smaller than /24 keeps its last octet,
    ``10.1.0.128/25`` -> ``fd00:1:0:128::/64``). Digits, not values: ``10.12.0.0/24`` is
    ``fd00:12:0::/64``, so a person reads one address from the other.
    """
    o = block.network_address.packed
    fourth = f":{_digits(o[3])}" if block.prefixlen > 24 and o[3] else ""
    return str(IPv6Network(f"fd00:{_digits(o[1])}:{_digits(o[2])}{fourth}::/64"))


def ipv6_address(addr: IPv4Address, block: IPv4Network) -> str:
    """The IPv6 twin of ``addr`` in ``block``: ``10.3.0.2`` -> ``fd00:3:0::2``.

    The host part keeps its digits: the last octet for blocks of /24 or smaller, the last
    two (``::C:D``) for larger blocks.
    """
    net = IPv6Network(ipv6_prefix(block))
    o = addr.packed
    host = f"{_digits(o[2])}:{_digits(o[3])}" if block.prefixlen < 24 else _digits(o[3])
    return str(IPv6Address(int(net.network_address) + int(IPv6Address("::" + host))))


def sid_block(block: IPv4Network) -> str:
    """The site's SRv6 SID block ``5f00:A:B::/48`` (RFC 9602), same digits as its block."""
    o = block.network_address.packed
    return str(IPv6Network(f"5f00:{_digits(o[1])}:{_digits(o[2])}::/48"))


def underlay6_pair(index: int) -> tuple[str, str]:
    """(internet-side, gateway) IPv6 of the underlay /64 at ``index`` (2001:db8:I::/64)."""
    net = int(IPv6Network(UNDERLAY6_SPACE).network_address) + (index << 64)
    return str(IPv6Address(net + 1)), str(IPv6Address(net + 2))


# --- SRv6 ids (issue 6) -------------------------------------------------------------

CHAIN_ID_BITS = 13
"""Bits of a chain's id: its SIDs' 6th group, its rules' priorities and tables."""
SERVICE_ID_BITS = 16
"""Bits of a service's id: its SIDs' 5th group."""
LINK_ID_BITS = 12
"""Bits of a connector link's id (per NFV node): its interface names and addresses."""


def stable_id(name: str, bits: int, salt: str) -> int:
    """A name's id in 1..2^bits-1: SHA-256 of ``salt + name``. It depends on nothing else,
    so adding or removing other names never moves it; two names with one id are a
    validation error (:func:`id_collisions`)."""
    digest = hashlib.sha256((salt + name).encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (2**bits - 1)


def chain_id(name: str) -> int:
    """A chain's id (:data:`CHAIN_ID_BITS`)."""
    return stable_id(name, CHAIN_ID_BITS, "chain|")


def service_id(name: str) -> int:
    """A service's id (:data:`SERVICE_ID_BITS`)."""
    return stable_id(name, SERVICE_ID_BITS, "service|")


def link_id(service: str, chain: str) -> int:
    """The id of the connector link of ``service`` for ``chain`` (:data:`LINK_ID_BITS`)."""
    return stable_id(f"{service}|{chain}", LINK_ID_BITS, "link|")


def id_collisions(keys: list[tuple[str, int]]) -> list[tuple[str, str]]:
    """Pairs ``(first, later)`` of distinct keys with the same id, in the given order (a
    key given twice is a duplicate, reported as such elsewhere, not a collision)."""
    seen: dict[int, str] = {}
    out: list[tuple[str, str]] = []
    for key, value in keys:
        if value in seen and seen[value] != key:
            out.append((seen[value], key))
        else:
            seen[value] = key
    return out


# --- Tenants (issue 7) ----------------------------------------------------------------

TENANT_ID_BITS = 15
"""Bits of a tenant's id: the minor of its traffic classes (``1:ID``, below 0x8000)."""
TENANT_VNI_BASE = 1 << 23
"""Tenant VNIs lie in ``2^23 .. 2^24-2`` (RFC 7348: 24 bits), apart from tunnel VNIs' hashes
only by chance: tenant VXLAN uses its own UDP port, so the two never share a socket."""


def tenant_id(name: str) -> int:
    """A tenant's id (:data:`TENANT_ID_BITS`), hashed from its name."""
    return stable_id(name, TENANT_ID_BITS, "tenant|")


def vni_of(key: str) -> int:
    """The VNI of a tenant network ``TENANT/NETWORK`` (``TENANT/`` is the tenant's transit
    network between its routers), hashed from the key into the tenant VNI range."""
    return TENANT_VNI_BASE + stable_id(key, 23, "vni|") - 1


def tenant_mac(*parts: str) -> str:
    """A locally administered unicast MAC ``02:70:6e:xx:xx:xx`` (the prefix polynimbus
    reads back, :data:`polynimbus.node.MANAGED_MAC_PREFIX`) with 24 bits hashed from
    ``parts``: the same parts give the same MAC wherever the node runs (a host keeps its
    MAC when it moves). Two equal MACs in one network are a validation error."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return "02:70:6e:" + ":".join(f"{b:02x}" for b in digest[:3])
