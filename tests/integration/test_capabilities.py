"""Kernel capabilities against the kernel itself: :func:`polynimbus.capabilities.srv6`
agrees with a real SRv6 route in a namespace, and ``up`` of an SRv6 intent on a kernel
without SRv6 is refused before anything is written (whatever this kernel has)."""

from __future__ import annotations

import subprocess

import pytest

from polynimbus import capabilities, state
from polynimbus.errors import CapabilityError
from polynimbus.orchestrate import lab_up
from tests.integration.conftest import leftovers, three_sites
from tests.integration.test_chains import matrix_intent

SETUP = "ip link add v0 type veth peer name v1 && ip link set v0 up"


def _in_fresh_netns(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` (sh) in a new network namespace that vanishes with it."""
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=30
    )


def _probe_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln for ln in out.split() if ln.startswith(capabilities.SRV6_NETNS_PREFIX)]


def test_srv6_agrees_with_the_kernel() -> None:
    """``srv6()`` says what a real ``encap seg6`` and ``seg6local`` route in a namespace
    says (another namespace, another way of making it: ``unshare``), and its own probe
    leaves no namespace behind."""
    capabilities._srv6_cached.cache_clear()
    try:
        detected = capabilities.srv6()
    finally:
        capabilities._srv6_cached.cache_clear()
    assert _probe_namespaces() == []
    encap = _in_fresh_netns(
        f"{SETUP} && ip -6 route add fc00:9::/64 encap seg6 mode encap segs fc00::9 dev v0"
    )
    local = _in_fresh_netns(
        f"{SETUP} && ip -6 route add fc00:9::1/128 encap seg6local action End dev v0"
    )
    assert detected == (encap.returncode == 0) == (local.returncode == 0), (
        encap.stderr,
        local.stderr,
    )
    if not detected:
        assert "not supported" in encap.stderr, encap.stderr
    # positive control of the probe's machinery (namespace, veth, route add): with plain
    # routes for probes it answers yes on any kernel, and cleans up
    plain = (("-6", "route", "add", "fc00:1::/64", "dev", "v0"),)
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(capabilities, "SRV6_PROBES", plain)
        assert capabilities._srv6_probe() is True
    finally:
        mp.undo()
    assert _probe_namespaces() == []


def test_up_of_an_srv6_intent_is_refused_without_srv6(lab, monkeypatch) -> None:
    """On any kernel: with SRv6 reported missing, ``lab_up`` of an SRv6 intent (a dry run
    too) raises the capability error and writes nothing (no namespace, state directory,
    record or lock file); an intent without SRv6 is not refused for it."""
    monkeypatch.setattr(capabilities, "srv6", lambda: False)
    name = "sx-cap"
    intent = lab.intent(matrix_intent(name, "tunnels", small=True))
    sdir = lab.state(name)
    lock = state.lock_path(name)
    had_lock = lock.exists()
    for dry_run in (True, False):
        with pytest.raises(CapabilityError) as exc:
            lab_up(intent, sdir, dry_run=dry_run)
        assert capabilities.SRV6_CONFIG in exc.value.message and "SRv6" in exc.value.message
        assert f"{capabilities.SRV6_CONFIG}=y" in (exc.value.hint or "")
        assert leftovers(name, sdir) == [] and state.recorded_state_dir(name) is None
        assert lock.exists() == had_lock
    plain = lab.intent(three_sites("sx-cap-plain"))
    result = lab_up(plain, lab.state("sx-cap-plain"), dry_run=True)
    assert result.changed  # a dry run of a plain lab: would create, not refused
