"""``polynimbus demo``: the bundled three-site PrEstoCloud deployment, end to end, then the
bundled SRv6 service chains (seeds 000 and 002)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from polynimbus import capabilities
from polynimbus.cli.app import Seconds, StateDir, app, err, handle_errors, out
from polynimbus.cli.plan import print_plan, print_srv6, print_tenants_plan
from polynimbus.cli.trace import print_trace
from polynimbus.cli.up import run_up
from polynimbus.cli.verify import run_and_print
from polynimbus.intent import load_intent
from polynimbus.orchestrate import lab_down
from polynimbus.plan import Plan, build_plan

SRV6_LEFT_OUT = (
    "the service-chain part of the demo is left out: this kernel has no SRv6 "
    f"({capabilities.SRV6_CONFIG}), so service chains cannot be built here"
)
"""What the demo says instead of its service-chain part on a kernel without SRv6."""


def bundled_example(name: str = "prestocloud.yaml") -> Path:
    """Path of a bundled example intent."""
    return Path(str(resources.files("polynimbus") / "examples" / name))


@app.command()
@handle_errors
def demo(
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Leave the lab up at the end (remove it later with polynimbus down)."
        ),
    ] = False,
    seconds: Seconds = 2,
    state_dir: StateDir = None,
) -> None:
    """Run the three-site PrEstoCloud lab end to end (up, verify --throughput, down), then
    the service-chain lab (up, verify, trace, down), then the tenants lab (up, verify,
    move, verify, down).

    The bundled examples/prestocloud.yaml: a private OpenStack, AWS Frankfurt and Azure
    West Europe joined by WireGuard in a full mesh (seed 003, chapter 3). Then
    examples/service-chain.yaml: a client in one AWS region reaching a server in another
    through an SR-unaware firewall and an SR-aware function in a third, steered with SRv6
    in both directions, IPv4 inside IPv6 and all-IPv6 (seeds 000 and 002). Then
    examples/tenants.yaml: two tenants with the same address ranges over the three sites,
    one network stretched at layer 2 over two of them, a host moved live (seeds 001 and
    004). Needs root. On a kernel without SRv6 (CONFIG_IPV6_SEG6_LWTUNNEL) the
    service-chain part is left out, and the demo says so.
    """
    path = bundled_example()
    intent = load_intent(path)
    plan = build_plan(intent)
    out.rule(f"polynimbus demo: {path.name}")
    print_plan(plan)
    ok = False
    try:
        out.rule("up")
        run_up(intent, state_dir)
        out.rule("verify --throughput")
        report = run_and_print(plan, throughput=True, seconds=seconds, as_json=False)
        ok = report.ok
        out.rule("summary")
        hosts = sum(len(s.hosts) for s in plan.sites)
        out.print(
            f"{len(plan.sites)} sites, {hosts} hosts, {len(plan.tunnels)} "
            f"{plan.transport} tunnels ({plan.topology}); "
            f"{sum(p.reachable for p in report.pairs)}/{len(report.pairs)} host pairs "
            "reachable" + ("" if ok else " [red](FAILED)[/]")
        )
        ratios = [t.ratio for t in report.throughput if t.ratio]
        if ratios:
            out.print(
                f"overlay/underlay throughput: {min(ratios):.3f} to {max(ratios):.3f} "
                "(user-space WireGuard over TUN is far slower than the kernel path)"
            )
    finally:
        if keep:
            out.print(
                f"the lab is still up: polynimbus exec i3s/app-1 -- ping 10.1.0.1; "
                f"remove it with: polynimbus down {path}"
            )
        else:
            out.rule("down")
            err.print("taking the lab down...")
            lab_down(plan.name, state_dir)
            out.print(f"lab {plan.name!r} removed")
    chains_dir = None if state_dir is None else state_dir.with_name(state_dir.name + "-chains")
    if not capabilities.srv6():
        out.rule("service chains with SRv6: left out")
        out.print(SRV6_LEFT_OUT)
    elif not chains_demo(keep, chains_dir):
        ok = False
    tenants_dir = None if state_dir is None else state_dir.with_name(state_dir.name + "-tenants")
    if not tenants_demo(keep, tenants_dir):
        ok = False
    if not ok:
        raise typer.Exit(1)


def chains_demo(keep: bool, state_dir: Path | None) -> bool:
    """The service-chain part of the demo; returns whether every check passed."""
    from polynimbus.verify.chains import probe_chain

    path = bundled_example("service-chain.yaml")
    intent = load_intent(path)
    plan = build_plan(intent)
    out.rule(f"service chains with SRv6: {path.name}")
    print_srv6(plan)
    ok = False
    try:
        out.rule("up")
        run_up(intent, state_dir)
        out.rule("verify (IPv4 and IPv6 pairs, every chain in both directions)")
        report = run_and_print(plan, throughput=False, seconds=1, as_json=False)
        out.rule("trace web-v4")
        traced = probe_chain(plan, "web-v4")
        print_trace(traced)
        ok = report.ok and all(r.ok for r in traced)
        out.rule("summary")
        n = len(report.chains)
        good = sum(c.ok for c in report.chains)
        out.print(
            f"{good}/{n} chain directions proved (each hop counted the probe)"
            + ("" if ok else " [red](FAILED)[/]")
        )
    finally:
        if keep:
            out.print(
                f"the lab is still up: polynimbus trace {path} web-v4; "
                f"remove it with: polynimbus down {path}"
            )
        else:
            out.rule("down")
            lab_down(plan.name, state_dir)
            out.print(f"lab {plan.name!r} removed")
    return ok


def tenants_demo(keep: bool, state_dir: Path | None) -> bool:
    """The tenants part of the demo; returns whether every check passed."""
    from polynimbus.move import move_host

    path = bundled_example("tenants.yaml")
    intent = load_intent(path)
    plan = build_plan(intent)
    out.rule(f"tenants: {path.name}")
    print_tenants_plan(plan)
    ok = False
    try:
        out.rule("up")
        run_up(intent, state_dir)
        out.rule("verify (each tenant's matrix; isolation between tenants)")
        report = run_and_print(plan, throughput=False, seconds=1, as_json=False)
        out.rule("move acme:i3s/c1 aws-fra (live: its TCP connections stay)")
        flow = _TcpFlow(plan, "acme", "i3s/web-1", "i3s/c1")
        try:
            moved = move_host(intent, "acme:i3s/c1", "aws-fra", state_dir)
        finally:  # its iperf3 processes end whatever happens
            carried = flow.finish()
        out.print(
            f"moved to aws-fra in {moved.total_s:.1f} s; downtime "
            f"{moved.downtime_ms if moved.downtime_ms is not None else '?'} ms seen from "
            f"{moved.correspondent} (ping every 10 ms)"
        )
        if carried is None:
            out.print("[red]the TCP connection from acme:i3s/web-1 did not survive the move[/]")
        else:
            out.print(
                "one TCP connection from acme:i3s/web-1, open across the move, carried "
                + ", ".join(f"{mb:.1f}" for mb in carried)
                + " MB in its seconds: the same connection, before and after"
            )
        out.rule("verify after the move")
        after = run_and_print(build_plan(moved.intent), throughput=False, seconds=1, as_json=False)
        ok = report.ok and after.ok and moved.downtime_ms is not None and carried is not None
        out.rule("summary")
        pairs = after.tenant_pairs
        out.print(
            f"{len(plan.tenants)} tenants; {sum(p.reachable for p in pairs)}/{len(pairs)} "
            "tenant host pairs reachable; isolation "
            + ("held" if all(i.ok for i in after.tenant_isolation) else "[red]FAILED[/]")
            + ("" if ok else " [red](FAILED)[/]")
        )
    finally:
        if keep:
            out.print(
                "the lab is still up: polynimbus exec acme:aws-fra/c1 -- ping 192.168.1.1; "
                f"remove it with: polynimbus down --lab {plan.name}"
            )
        else:
            out.rule("down")
            lab_down(plan.name, state_dir)
            out.print(f"lab {plan.name!r} removed")
    return ok


class _TcpFlow:
    """An iperf3 TCP flow (10 Mbit/s, 5 s) from one tenant host to another, started now:
    :meth:`finish` gives the MB carried in each second, or ``None`` if it broke."""

    def __init__(self, plan: Plan, tenant: str, src: str, dst: str) -> None:
        import subprocess
        import time

        from polynimbus import names

        _, to = plan.tenant(tenant).host(dst)
        _, frm = plan.tenant(tenant).host(src)
        dst_ns = names.tenant_host_ns(plan.name, to.site, tenant, to.name)
        src_ns = names.tenant_host_ns(plan.name, frm.site, tenant, frm.name)
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", dst_ns, "iperf3", "-s", "-1", "-p", "5490"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        self.client = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                src_ns,
                "iperf3",
                "-c",
                to.address,
                "-p",
                "5490",
                "-t",
                "5",
                "-b",
                "10M",
                "-J",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        time.sleep(1.0)

    def finish(self) -> list[float] | None:
        import json
        import subprocess

        try:
            text, _ = self.client.communicate(timeout=30)
            doc = json.loads(text)
            if self.client.returncode != 0 or "error" in doc:
                return None
            return [i["sum"]["bytes"] / 1e6 for i in doc["intervals"]]
        except (subprocess.TimeoutExpired, ValueError, KeyError):
            return None
        finally:
            for p in (self.client, self.server):
                if p.poll() is None:
                    p.kill()
                    p.wait()
