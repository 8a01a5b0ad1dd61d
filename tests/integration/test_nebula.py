"""The nebula transport in the lab: its firewall admits only the peers' certificates and
sources, parallel daemons carry flows over each TUN, rotation restarts the daemons."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from polynimbus import names, procs
from polynimbus.orchestrate import lab_up
from polynimbus.plan import build_plan
from polynimbus.targets.lab import list_lab_namespaces
from polynimbus.tunnels.nebula import nebula_address, nebula_networks, tunnel_ifnames
from polynimbus.verify.reachability import ping_all
from tests.integration.conftest import flows_per_tunnel, three_sites

pytestmark = pytest.mark.skipif(shutil.which("nebula") is None, reason="nebula not installed")

PORT = 2323


def sh(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)


@contextlib.contextmanager
def listening(ns: str, port: int) -> Iterator[None]:
    """A TCP listener on every address of namespace ``ns``, for the duration."""
    code = (
        "import socket,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0', {port})); s.listen(8); print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


def connects(ns: str, addr: str, port: int, source: str | None = None) -> bool:
    """Whether a TCP connection from ``ns`` (from ``source`` if given) is accepted in 2 s."""
    src = f", source_address=('{source}', 0)" if source else ""
    code = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(('{addr}', {port}), timeout=2{src}).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    return sh(ns, sys.executable, "-c", code).returncode == 0


def pids(lab_name: str) -> set[int]:
    inodes = {procs.netns_inode(ns) for ns in list_lab_namespaces(lab_name)} - {None}
    return {p.pid for p in procs.processes() if p.netns_inode in inodes and "nebula" in p.argv[0]}


def test_nebula_firewall_admits_only_peer_certificates_and_their_sources(lab) -> None:
    name = "nb-fw"
    intent = lab.intent(three_sites(name, "hub", "nebula"))
    plan = build_plan(intent)
    sdir = lab.state(name)
    lab_up(intent, sdir)
    assert all(p.reachable for p in ping_all(plan))
    hub, aws = plan.site("os"), plan.site("aws")
    gw_hub, gw_aws = names.gateway_ns(name, "os"), names.gateway_ns(name, "aws")
    aws_ip = str(nebula_address(plan, aws).ip)

    with listening(gw_aws, PORT):
        # positive control: the hub's own nebula address (its certificate) gets through
        assert connects(gw_hub, aws_ip, PORT)
        # tenants' way: a gateway's overlay address, in its certificate's subnets
        assert connects(gw_hub, aws.gateway_address, PORT, source=hub.gateway_address)
        # a source outside the hub's certificate (its public address) does not cross
        assert not connects(gw_hub, aws.gateway_address, PORT, source=hub.public_address)

        # a node with a valid certificate of the lab's CA that is not aws's peer, in the
        # hub's place (its address and port, which the firewalls admit: the hub's daemon
        # is stopped for it): its handshake succeeds, but aws's nebula firewall drops
        # what it carries
        inode = procs.netns_inode(gw_hub)
        hub_daemons = [
            p.pid for p in procs.processes() if p.netns_inode == inode and p.argv[0] == "nebula"
        ]
        assert len(hub_daemons) == 1
        procs.stop(hub_daemons)
        with intruder(plan, sdir, gw_hub, aws) as log:
            assert not connects(gw_hub, aws_ip, PORT)
            assert "certName=aws" in log.read_text(), log.read_text()[-2000:]

    # the next up starts the hub's daemon again, and everything is reachable
    assert lab_up(intent, sdir).changed
    assert all(p.reachable for p in ping_all(plan))


@contextlib.contextmanager
def intruder(plan, sdir: Path, ns: str, target) -> Iterator[Path]:
    """A nebula node named ``intruder``, signed by the lab's CA, in namespace ``ns`` on the
    plan's port, that knows ``target``'s gateway; it takes the nebula network's route in
    ``ns``. Yields its log once its TUN is up."""
    net = nebula_networks(plan)[0]
    ip = f"{net.network_address + net.num_addresses - 2}/{net.prefixlen}"
    ca = sdir / "nebula"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [
                *("nebula-cert", "sign", "-name", "intruder", "-ip", ip),
                *("-ca-crt", str(ca / "ca.crt"), "-ca-key", str(ca / "ca.key")),
                *("-out-crt", "i.crt", "-out-key", "i.key"),
            ],
            cwd=work,
            check=True,
            capture_output=True,
        )
        config = {
            "pki": {"ca": str(ca / "ca.crt"), "cert": "i.crt", "key": "i.key"},
            "static_host_map": {
                str(nebula_address(plan, target).ip): [f"{target.public_address}:{plan.port}"]
            },
            "lighthouse": {"am_lighthouse": False, "hosts": []},
            "listen": {"host": "0.0.0.0", "port": plan.port},
            "punchy": {"punch": False},
            "cipher": "aes",
            "tun": {"dev": "nbintruder", "mtu": plan.tunnel_mtu},
            "firewall": {
                "outbound": [{"port": "any", "proto": "any", "host": "any"}],
                "inbound": [{"port": "any", "proto": "any", "host": "any"}],
            },
        }
        (work / "i.yml").write_text(yaml.safe_dump(config))
        log = work / "log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, "nebula", "-config", "i.yml"],
                cwd=work,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 5
            while "nbintruder" not in sh(ns, "ip", "-br", "link").stdout:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            yield log
        finally:
            proc.terminate()
            proc.wait(timeout=5)


TWO_SITES = """name: {name}
overlay: {{topology: full-mesh, transport: nebula, parallel: 2}}
sites:
  - {{name: a, provider: aws, location: {{lat: 50.1, lon: 8.7}}, hosts: [h1]}}
  - {{name: b, provider: azure, location: {{lat: 52.4, lon: 4.9}}, hosts: [h1]}}
"""


def test_two_nebula_daemons_per_gateway_carry_flows_and_rotate(lab) -> None:
    name = "nb-par"
    intent = lab.intent(TWO_SITES.format(name=name))
    plan = build_plan(intent)
    sdir = lab.state(name)
    assert lab_up(intent, sdir).changed
    assert all(p.reachable for p in ping_all(plan))
    second = lab_up(intent, sdir)
    assert not second.changed, [c.describe() for c in second.changes]

    b = plan.site("b")
    devs = tunnel_ifnames(plan, b)
    # 16 TCP connections: the layer-4 hash sends some over each daemon's TUN
    grew = flows_per_tunnel(name, b, devs)
    assert all(g > 50 for g in grew), grew

    # --rotate-keys: a new CA and certificates, so every daemon restarts, and the overlay
    # works again; then it converges
    ca = (sdir / "nebula" / "ca.crt").read_text()
    old = pids(name)
    assert len(old) == 4
    assert lab_up(intent, sdir, rotate_keys=True).changed
    assert (sdir / "nebula" / "ca.crt").read_text() != ca
    assert not pids(name) & old and len(pids(name)) == 4
    assert all(p.reachable for p in ping_all(plan))
    assert not lab_up(intent, sdir).changed
