"""Integration fixtures: real labs in namespaces, always removed, even when a test fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polynimbus import capabilities, names, procs, state
from polynimbus.intent import Intent, load_intent_text
from polynimbus.orchestrate import lab_down
from polynimbus.plan.model import SitePlan
from polynimbus.targets.lab import WG_SOCKET_DIR, list_lab_namespaces, processes

TOOLS = ["ip", "nft", "wg", "wireguard-go", "fping", "iperf3", "tcpdump", "keepalived"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the lab tests ``integration``. They are never skipped: without root or a tool,
    every one of them fails (CI runs as root with everything ``make deps`` installs, so a
    missing tool there is a bug in the Makefile, not a reason to pass with no lab coverage).
    ``make test-unit`` (``-m "not integration"``) is the way to run without them."""
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _lab_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "integration tests need root (network namespaces); "
            "run make test-unit to leave them out",
            pytrace=False,
        )
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)} (run: make deps)", pytrace=False)


def three_sites(
    name: str, topology: str = "full-mesh", transport: str = "wireguard", extra: str = ""
) -> str:
    """A small three-provider intent for the lab."""
    hub = "  hub: os\n" if topology == "hub" else ""
    return f"""name: {name}
overlay:
  topology: {topology}
  transport: {transport}
{hub}sites:
  - name: os
    provider: openstack
    location: {{lat: 43.6, lon: 7.0}}
    hosts: [app-1, app-2]
  - name: aws
    provider: aws
    location: {{lat: 50.1, lon: 8.7}}
    hosts: [w-1]
  - name: az
    provider: azure
    location: {{lat: 52.4, lon: 4.9}}
    hosts: [w-2]
{extra}"""


def leftovers(lab: str, state_dir: Path) -> list[str]:
    """Everything of ``lab`` still on the host (should be empty after down)."""
    left = list(list_lab_namespaces(lab))
    prefix = names.wireguard_if_prefix(lab)
    ours = names.lab_prefix(lab)
    left += [
        f"process {p.pid} {' '.join(p.argv)}"
        for p in procs.processes()
        if any(a.startswith(prefix) for a in p.argv[1:])
        or (processes.cwd_node(p.pid) or "").startswith(ours)
    ]
    if WG_SOCKET_DIR.is_dir():
        left += [str(s) for s in WG_SOCKET_DIR.glob(f"{prefix}*.sock")]
    if state_dir.exists():
        left.append(str(state_dir))
    return left


class Lab:
    """A lab under test: its intent, state directory and a cleanup that always runs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.names: set[str] = set()

    def intent(self, text: str) -> Intent:
        intent = load_intent_text(text)
        self.names.add(intent.name)
        return intent

    def state(self, name: str) -> Path:
        return self.tmp / "state" / name

    def write(self, text: str, filename: str = "intent.yaml") -> Path:
        path = self.tmp / filename
        path.write_text(text)
        self.names.add(load_intent_text(text).name)
        return path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    handle = Lab(tmp_path)
    try:
        yield handle
    finally:
        # take every lab down before checking any: two labs of one test may share a tag,
        # and leftovers() finds WireGuard processes and sockets by tag
        used = {n: state.recorded_state_dir(n) or handle.state(n) for n in handle.names}
        for name in sorted(handle.names):
            lab_down(name, used[name])
        for name in sorted(handle.names):
            assert not leftovers(name, used[name])


def flows_per_tunnel(lab: str, site: SitePlan, devs: list[str]) -> list[int]:
    """Packets each of ``devs`` (tunnel interfaces of ``site``'s gateway) received while
    16 TCP connections ran from host ``a/h1`` to ``site``'s first host (``SITE/h1``): with
    a layer-4 hash, every tunnel carries some (all 16 on one of two: probability 2**-15)."""

    def rx(ifname: str) -> int:
        path = f"/sys/class/net/{ifname}/statistics/rx_packets"
        out = subprocess.run(["ip", "netns", "exec", gw, "cat", path], capture_output=True)
        return int(out.stdout)

    gw = names.gateway_ns(lab, site.name)
    before = [rx(d) for d in devs]
    server = subprocess.Popen(
        ["ip", "netns", "exec", names.host_ns(lab, site.name, "h1"), "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        client = ("iperf3", "-c", site.hosts[0].address, "-P", "16", "-t", "1", "-l", "16k")
        res = subprocess.run(
            ["ip", "netns", "exec", names.host_ns(lab, "a", "h1"), *client],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        server.kill()
        server.wait()
    return [rx(d) - x for d, x in zip(devs, before, strict=True)]


SRV6_REFUSAL = (
    f"error: this kernel has no SRv6 ({capabilities.SRV6_CONFIG}): service chains and SRv6 "
    "cannot be built here"
)
"""The first line ``polynimbus up`` prints for an SRv6 intent on a kernel without SRv6."""


def assert_srv6_refused(res: subprocess.CompletedProcess[str]) -> None:
    """``res`` (a ``polynimbus up``) is the SRv6 refusal: exit 1, the error line and its hint
    naming the kernel option, nothing else (no traceback, no progress)."""
    text = f"rc {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert res.returncode == 1, text
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [SRV6_REFUSAL, lines[-1]] and lines[-1].startswith("  hint: "), text
    assert f"{capabilities.SRV6_CONFIG}=y" in lines[-1], text
    assert res.stdout.strip() == "", text


def srv6_or_refusal(lab: Lab, intent: str | Path, state_dir: Path | None = None) -> None:
    """Where the kernel has SRv6 (:func:`polynimbus.capabilities.srv6`): return at once, and
    the test goes on to build its chains. Where it has none: ``polynimbus up`` of ``intent``
    (YAML text, or a file) must be refused with the SRv6 capability error
    (:func:`assert_srv6_refused`) and change nothing: no namespace of the lab, no state
    directory (``state_dir``, else the lab fixture's), no host-wide record of the lab, no
    lock file; then the test ends with ``pytest.skip``, saying the refusal was checked.
    A lab test of SRv6 therefore never passes on such a kernel without checking this."""
    if capabilities.srv6():
        return
    path = intent if isinstance(intent, Path) else lab.write(intent, "srv6-intent.yaml")
    name = load_intent_text(path.read_text()).name
    lab.names.add(name)
    sdir = state_dir or lab.state(name)
    lock = state.lock_path(name)
    lock_before = lock.exists()
    assert not list_lab_namespaces(name) and not sdir.exists(), f"{name}: not a clean start"
    cli = [sys.executable, "-c", "from polynimbus.cli import main; main()"]
    res = subprocess.run(
        [*cli, "up", str(path), "--state-dir", str(sdir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert_srv6_refused(res)
    assert leftovers(name, sdir) == [], "the refused up left something"
    assert state.recorded_state_dir(name) is None
    assert lock.exists() == lock_before, "the refused up took the lab's lock"
    pytest.skip(
        f"this kernel has no SRv6 ({capabilities.SRV6_CONFIG}): checked instead that "
        f"polynimbus up of {name!r} is refused with the capability error and changes nothing"
    )
