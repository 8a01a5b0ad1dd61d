"""The failover agent's declaration of moved AllowedIPs and how the lab target honours it
(issue 9: an ``up`` during a failover leaves the detour as it is)."""

from __future__ import annotations

import fcntl
import json
import os
import stat

import pytest

from polynimbus.agent.failover import FailoverAgent, declaration, locked, write_declaration
from polynimbus.plan.failover import DOWN_AFTER, PROBE_INTERVAL_MS, UP_AFTER_MS
from polynimbus.targets.lab.wireguard import (
    _digest,
    as_planned,
    changes,
    kept,
    parse_moves,
)
from polynimbus.tunnels.wireguard import parse_wg_config, wg_digest

KEYS = {n: f"{n.upper() * 43}=" for n in "bcd"}
CONFIG = {
    "site": "a",
    "interfaces": ["wg0"],
    "interval_ms": PROBE_INTERVAL_MS,
    "down_after": DOWN_AFTER,
    "up_after_ms": UP_AFTER_MS,
    "peers": {
        "b": {"allowed": ["10.1.0.0/24"], "keep": ["10.1.0.254/32"], "detours": ["c"]},
        "c": {"allowed": ["10.2.0.0/24"], "keep": ["10.2.0.254/32"], "detours": ["b"]},
        "d": {"allowed": ["10.4.0.0/24"], "keep": ["10.4.0.254/32"], "detours": ["c"]},
    },
}
for _n, _p in CONFIG["peers"].items():  # type: ignore[attr-defined]
    _p["public_key"] = KEYS[_n]


def wg_text(allowed: dict[str, list[str]], port: int = 51820) -> str:
    """A ``wg setconf`` text with these peers' AllowedIPs."""
    out = f"[Interface]\nPrivateKey = {'K' * 43}=\nListenPort = {port}\n"
    for name, ips in allowed.items():
        out += f"\n[Peer]\nPublicKey = {KEYS[name]}\nAllowedIPs = {', '.join(ips)}\n"
        out += f"Endpoint = 192.0.2.{ord(name)}:51820\n"
    return out


PLANNED = {n: p["allowed"] for n, p in CONFIG["peers"].items()}  # type: ignore[attr-defined]


def failed_over() -> dict[str, list[str]]:
    """The AllowedIPs an agent wants once b fell silent (b's prefixes via c)."""
    agent = FailoverAgent(CONFIG, 0.0)
    t = 0.0
    while t < 2.0:
        for peer in ("b", "c", "d") if t < 1.0 else ("c", "d"):
            agent.answered(peer, t)
        agent.evaluate(t + 0.001)
        t += PROBE_INTERVAL_MS / 1000
    assert agent.allowed_ips() != PLANNED
    return agent.allowed_ips()


def test_the_agent_declares_only_the_peers_it_moved() -> None:
    want = failed_over()
    data = declaration(CONFIG, "abc", want)
    assert data["digest"] == "abc" and data["interfaces"] == ["wg0"]
    assert data["peers"] == {
        KEYS["b"]: {"planned": ["10.1.0.0/24"], "now": ["10.1.0.254/32"]},
        KEYS["c"]: {"planned": ["10.2.0.0/24"], "now": ["10.1.0.0/24", "10.2.0.0/24"]},
    }
    # back to the plan: nothing declared
    assert declaration(CONFIG, "abc", PLANNED)["peers"] == {}


def test_the_declaration_is_written_whole_and_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "moved.json"
    path.write_text("old")
    write_declaration(path, {"digest": "x", "interfaces": [], "peers": {}})
    assert json.loads(path.read_text())["digest"] == "x"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved.json"]  # no temporary left


def test_the_lab_reads_a_declaration_only_of_the_running_agent_and_interface() -> None:
    data = declaration(CONFIG, "abc", failed_over())
    assert set(parse_moves(data, "abc", "wg0")) == {KEYS["b"], KEYS["c"]}
    assert parse_moves(data, "other", "wg0") == {}  # another agent's (restarted since)
    assert parse_moves(data, "", "wg0") == {}  # an agent without a digest
    assert parse_moves(data, "abc", "wg1") == {}  # another interface's
    assert (
        parse_moves({"digest": "abc", "interfaces": ["wg0"], "peers": {"k": {}}}, "abc", "wg0")
        == {}
    )
    assert parse_moves([], "abc", "wg0") == {}


def test_moved_allowed_ips_read_as_planned_only_when_they_are_what_was_declared() -> None:
    want = failed_over()
    moves = parse_moves(declaration(CONFIG, "abc", want), "abc", "wg0")
    live = parse_wg_config(wg_text(want))
    assert _digest(as_planned(live, moves)) == wg_digest(wg_text(PLANNED))
    # something else changed them (a drift): reported as it is
    other = dict(want, c=["10.2.0.0/24"])
    live = parse_wg_config(wg_text(other))
    assert _digest(as_planned(live, moves)) == wg_digest(wg_text(other))


def test_the_digest_of_a_parsed_configuration_is_wg_digest() -> None:
    text = wg_text(PLANNED)
    assert _digest(parse_wg_config(text)) == wg_digest(text)


def test_a_change_keeps_the_moved_allowed_ips_unless_the_plan_changed_under_the_agent() -> None:
    want = failed_over()
    moves = parse_moves(declaration(CONFIG, "abc", want), "abc", "wg0")
    live = parse_wg_config(wg_text(want))
    # the plan as the agent knows it, with a new listen port: only the port changes
    assert changes(live, wg_text(PLANNED, port=51821), moves) == (["listen-port", "51821"], None)
    assert kept(moves, parse_wg_config(wg_text(PLANNED))) == {
        KEYS["b"]: ["10.1.0.254/32"],
        KEYS["c"]: ["10.1.0.0/24", "10.2.0.0/24"],
    }
    # without the declaration the plan is put back
    argv, _ = changes(live, wg_text(PLANNED), {}) or ([], None)
    assert ["peer", KEYS["b"]] == argv[:2] and "10.1.0.0/24" in argv
    # b's planned prefixes changed: the agent's moves are stale, the plan is applied
    replanned = dict(PLANNED, b=["10.1.0.0/23"])
    assert kept(moves, parse_wg_config(wg_text(replanned))) == {}
    argv, _ = changes(live, wg_text(replanned), moves) or ([], None)
    assert "10.1.0.0/23" in argv


def test_the_lock_excludes_the_other_party_and_a_missing_directory_is_no_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with locked(tmp_path), pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(fd)
    with locked(tmp_path / "gone"):
        pass


def test_a_declaration_left_by_a_killed_agent_is_not_its_successors() -> None:
    """Review finding: same config, same digest, another process: not trusted."""
    data = declaration(CONFIG, "abc", failed_over()) | {"pid": 4242}
    assert set(parse_moves(data, "abc", "wg0", 4242)) == {KEYS["b"], KEYS["c"]}
    assert parse_moves(data, "abc", "wg0", 4343) == {}


def test_the_lab_waits_for_a_stuck_agents_lock_only_so_long(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an agent stopped inside its lock
        with pytest.raises(TimeoutError), locked(tmp_path, timeout_s=0.1):
            pass
    finally:
        os.close(fd)
    with locked(tmp_path, timeout_s=0.1):  # free again
        pass
