"""wireguard-go's socket buffers: wanted only where this host can set them."""

from __future__ import annotations

from polynimbus import capabilities
from polynimbus.node import WireGuardConfig
from polynimbus.resources import Resource
from polynimbus.targets.lab import LabTarget

GW = "pn.x.a.gateway"


def desired() -> list[Resource]:
    return [Resource(GW, WireGuardConfig("wg0", "d" * 16, "", socket_buffer=4 << 20))]


def test_a_host_that_cannot_take_descriptors_leaves_the_buffers_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(capabilities, "take_fds", lambda: False)
    [r] = LabTarget(tmp_path).canonicalise(desired())
    assert r.item.socket_buffer is None


def test_a_host_that_can_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setattr(capabilities, "take_fds", lambda: True)
    [r] = LabTarget(tmp_path).canonicalise(desired())
    assert r.item.socket_buffer == 4 << 20


def test_take_fds_follows_yama(monkeypatch):
    import os
    from pathlib import Path

    real_read = Path.read_text

    def fake(scope: str, cap_eff: str):
        def read_text(self, *a, **k):
            if str(self) == "/proc/sys/kernel/yama/ptrace_scope":
                return scope
            if str(self) == "/proc/self/status":
                return f"Name:\tx\nCapEff:\t{cap_eff}\n"
            return real_read(self, *a, **k)

        return read_text

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    for scope, cap, want in (
        ("0\n", "0", True),
        ("1\n", "0000000000080000", True),  # CAP_SYS_PTRACE
        ("1\n", "0000000000000000", False),
        ("3\n", "000001ffffffffff", False),
    ):
        capabilities.take_fds.cache_clear()
        monkeypatch.setattr(Path, "read_text", fake(scope, cap))
        assert capabilities.take_fds() is want, (scope, cap)
    capabilities.take_fds.cache_clear()
