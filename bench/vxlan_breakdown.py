"""Where VXLAN overlay throughput goes: one change at a time, overlay/underlay ratio per change.

Builds, with plain ``ip`` commands, one copy of the two-site VXLAN lab path per variant
(namespaces ``pnperf-NN-{ha,ga,in,gb,hb}``): host A --veth--> gateway A (bridge lan0,
nftables like ``render_gateway_ruleset``, VXLAN MTU 1450, route onlink) --veth--> internet
router --veth--> gateway B --> host B. Each variant changes one thing (conntrack on tunnel
traffic, GRO on veth, VXLAN UDP checksums, bridge, nftables, MTU, pinning, zero copy...).

Each round runs, for every variant in turn (interleaved, since this machine is noisy), one
TCP flow (iperf3) host A -> host B through the tunnel ("overlay") and one gateway A ->
gateway B over the emulated internet without a tunnel ("underlay", through gateway B's
nftables input chain, as ``verify --throughput`` does). It prints, per variant, the median
and range of overlay/underlay over the rounds, and the overlay and underlay medians relative
to the baseline's medians (so a change that only slows the underlay shows as such).

The "plain" variant routes host A -> host B through the same namespaces without a tunnel:
the fairer underlay for the overlay (same veth, bridge, forwarding and conntrack hops).

Needs root, iproute2, nftables, ethtool and iperf3. Everything it creates is deleted in a
``finally`` block, whatever happens.

    .venv/bin/python bench/vxlan_breakdown.py [--rounds 5] [--seconds 3] [--only a,b]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from dataclasses import dataclass, field

PREFIX = "pnperf"
PORT = 5201
VXLAN_PORT = 4789
GW_A, GW_B = "198.18.0.1", "198.18.0.3"  # internet router side: .0 and .2
HOST_A, HOST_B = "10.1.0.1", "10.2.0.1"


@dataclass(frozen=True)
class Variant:
    """One lab path; ``opts`` says what differs from the product's lab."""

    name: str
    what: str
    opts: dict[str, object] = field(default_factory=dict)


VARIANTS = [
    Variant("baseline", "as `polynimbus up` builds it"),
    Variant("plain", "no tunnel: hosts routed through the same gateways", {"plain": True}),
    Variant("no-nft", "no nftables ruleset on the gateways", {"nft": "none"}),
    Variant("notrack-outer", "raw notrack for UDP 4789 (tunnel packets)", {"notrack": "outer"}),
    Variant("notrack-all", "notrack tunnel UDP and inner 10/8<->10/8", {"notrack": "all"}),
    Variant("noudpcsum", "VXLAN noudpcsum", {"noudpcsum": True}),
    Variant("gro-veth", "ethtool -K gro on, every veth", {"gro": "on"}),
    Variant("gro-fwd", "gro on + rx-udp-gro-forwarding on, every veth", {"gro": "fwd"}),
    Variant("br-nf-off", "sysctl net.bridge.bridge-nf-call-iptables=0", {"brnf": False}),
    Variant("no-bridge", "host veth routed directly, no lan0 bridge", {"bridge": False}),
    Variant("mtu1550", "underlay veth MTU 1550, VXLAN MTU 1500", {"mtu": 1550}),
    Variant("pin", "iperf3 client on CPU 0, server on CPU 1", {"pin": True}),
    Variant("zerocopy", "iperf3 -Z", {"zerocopy": True}),
    Variant("bigbuf", "tcp_rmem/tcp_wmem max 32 MiB", {"bigbuf": True}),
    Variant(
        "rps", "pin + RPS: gw B wan0 rx on CPU 1, gw A wan0 on CPU 0", {"pin": True, "rps": True}
    ),
    Variant(
        "combo-keepfw",
        "notrack-outer + br-nf-off + mtu1550",
        {"notrack": "outer", "brnf": False, "mtu": 1550},
    ),
    Variant(
        "combo",
        "mtu1550 + notrack-all + no-bridge",
        {"mtu": 1550, "notrack": "all", "bridge": False},
    ),
    Variant(
        "combo-rps",
        "combo-keepfw + rps",
        {"notrack": "outer", "brnf": False, "mtu": 1550, "pin": True, "rps": True},
    ),
]

RULESET = """table inet pn {{
    chain input {{
        type filter hook input priority filter; policy drop;
        iif "lo" accept
        ct state established,related accept
        ct state invalid drop
        iifname "lan0" accept
        iifname "vx*" accept
        iifname "wan0" udp dport {vxport} accept
        iifname "wan0" meta l4proto {{ icmp, ipv6-icmp }} accept
        iifname "wan0" ip saddr {peer} tcp dport {port} accept
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        oifname "vx*" tcp flags syn / syn,rst tcp option maxseg size > {mss} \
tcp option maxseg size set {mss}
        iifname "vx*" tcp flags syn / syn,rst tcp option maxseg size > {mss} \
tcp option maxseg size set {mss}
        ct state established,related accept
        ct state invalid drop
        iifname "{lan}" accept
        iifname "vx*" oifname "{lan}" accept
        iifname "vx*" oifname "vx*" accept
        iifname "wan0" ip daddr {block} accept
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" ip saddr {block} ip daddr != 10.0.0.0/8 masquerade
    }}
}}
"""
# The last forward rule only matters for the "plain" variant (no tunnel: hosts reach each
# other over wan0); the product's ruleset has no such rule because it never routes that way.

NOTRACK_OUTER = f"""table inet pnraw {{
    chain pre {{ type filter hook prerouting priority raw; udp dport {VXLAN_PORT} notrack; }}
    chain out {{ type filter hook output priority raw; udp dport {VXLAN_PORT} notrack; }}
}}
"""
NOTRACK_ALL = f"""table inet pnraw {{
    chain pre {{
        type filter hook prerouting priority raw;
        udp dport {VXLAN_PORT} notrack
        ip saddr 10.0.0.0/8 ip daddr 10.0.0.0/8 notrack
    }}
    chain out {{ type filter hook output priority raw; udp dport {VXLAN_PORT} notrack; }}
}}
"""


def run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; raise with its stderr when ``check`` and it fails."""
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res


def nsx(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` inside namespace ``ns``."""
    return run(["ip", "netns", "exec", ns, *cmd], check=check)


def ipn(ns: str, args: str) -> None:
    """``ip -n ns ARGS``."""
    run(["ip", "-n", ns, *args.split()])


class Lab:
    """The namespaces of one variant: ha, ga, in, gb, hb."""

    def __init__(self, index: int, variant: Variant) -> None:
        self.v = variant
        self.o = variant.opts
        p = f"{PREFIX}-{index:02d}"
        self.ha, self.ga, self.inet, self.gb, self.hb = (
            f"{p}-ha",
            f"{p}-ga",
            f"{p}-in",
            f"{p}-gb",
            f"{p}-hb",
        )
        self.servers: list[subprocess.Popen[bytes]] = []

    @property
    def namespaces(self) -> list[str]:
        return [self.ha, self.ga, self.inet, self.gb, self.hb]

    def build(self) -> None:
        mtu = int(self.o.get("mtu", 1500))  # type: ignore[call-overload]
        for ns in self.namespaces:
            run(["ip", "netns", "add", ns])
            ipn(ns, "link set lo up")
        nsx(self.inet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sites = [(self.ha, self.ga, 1, "0", GW_A, GW_B), (self.hb, self.gb, 2, "2", GW_B, GW_A)]
        for host, gw, n, up_last, local, remote in sites:
            self._site(host, gw, n, up_last, local, remote, mtu)
        self._servers()
        for src, dst in ((self.ha, HOST_B), (self.ga, GW_B), (self.hb, HOST_A)):
            nsx(src, "ping", "-c", "1", "-W", "2", dst, check=False)

    def _site(
        self, host: str, gw: str, n: int, up_last: str, local: str, remote: str, mtu: int
    ) -> None:
        o, block, gw_lan = self.o, f"10.{n}.0.0/24", f"10.{n}.0.254"
        for s in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0"):
            nsx(gw, "sysctl", "-qw", s)
        nsx(gw, "sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0")
        if not o.get("brnf", True):
            for fam in ("iptables", "ip6tables", "arptables"):
                nsx(gw, "sysctl", "-qw", f"net.bridge.bridge-nf-call-{fam}=0")
        if o.get("bigbuf"):
            for ns in (host, gw):
                for k in ("rmem", "wmem"):
                    nsx(ns, "sysctl", "-qw", f"net.ipv4.tcp_{k}=4096 131072 33554432")
        # LAN: host eth0 <-> gateway h1, in bridge lan0 (or routed directly).
        ipn(host, f"link add eth0 mtu 1500 type veth peer name h1 netns {gw}")
        lan = "lan0" if o.get("bridge", True) else "h1"
        if lan == "lan0":
            ipn(gw, "link add lan0 mtu 1500 type bridge")
            ipn(gw, "link set h1 master lan0")
            ipn(gw, "link set lan0 up")
        ipn(gw, f"addr add {gw_lan}/24 dev {lan}")
        ipn(gw, "link set h1 up")
        ipn(host, f"addr add 10.{n}.0.1/24 dev eth0")
        ipn(host, "link set eth0 up")
        ipn(host, f"route add default via {gw_lan}")
        # WAN: gateway wan0 <-> internet uN, a /31.
        ipn(gw, f"link add wan0 mtu {mtu} type veth peer name u{n} mtu {mtu} netns {self.inet}")
        ipn(gw, f"addr add {local}/31 dev wan0")
        ipn(gw, "link set wan0 up")
        ipn(self.inet, f"addr add 198.18.0.{up_last}/31 dev u{n}")
        ipn(self.inet, f"link set u{n} up")
        ipn(gw, f"route add default via 198.18.0.{up_last}")
        peer_block, peer_lan = f"10.{3 - n}.0.0/24", f"10.{3 - n}.0.254"
        if o.get("plain"):
            ipn(self.inet, f"route add {block} via {local}")
        else:
            csum = "noudpcsum" if o.get("noudpcsum") else "udpcsum"
            ipn(
                gw,
                f"link add vx{3 - n} mtu {mtu - 50} type vxlan id 100 local {local} "
                f"remote {remote} dstport {VXLAN_PORT} nolearning {csum}",
            )
            ipn(gw, f"link set vx{3 - n} up")
            ipn(gw, f"route add {peer_block} via {peer_lan} dev vx{3 - n} onlink")
        self._nft(gw, lan, block, remote, mtu - 50 - 40)
        if o.get("rps"):
            cpus = "1" if n == 1 else "2"  # hex masks: gw A -> CPU 0 (ACKs), gw B -> CPU 1 (data)
            script = f"for q in /sys/class/net/wan0/queues/rx-*; do echo {cpus} > $q/rps_cpus; done"
            nsx(gw, "sh", "-c", script)
        if o.get("gro"):
            for ns, dev in ((host, "eth0"), (gw, "h1"), (gw, "wan0"), (self.inet, f"u{n}")):
                extra = ["rx-udp-gro-forwarding", "on"] if o["gro"] == "fwd" else []
                nsx(ns, "ethtool", "-K", dev, "gro", "on", *extra)

    def _nft(self, gw: str, lan: str, block: str, peer: str, mss: int) -> None:
        o = self.o
        if o.get("nft") == "none":
            return
        text = RULESET.format(
            vxport=VXLAN_PORT,
            peer=peer,
            port=PORT,
            mss=mss,
            lan=lan,
            block=block,
        )
        if o.get("notrack") == "outer":
            text += NOTRACK_OUTER
        elif o.get("notrack") == "all":
            text += NOTRACK_ALL
        res = subprocess.run(
            ["ip", "netns", "exec", gw, "nft", "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"nft in {gw}: {res.stderr.strip()}")

    def _wrap(self, ns: str, cpu: int, *cmd: str) -> list[str]:
        pin = ["taskset", "-c", str(cpu)] if self.o.get("pin") else []
        return ["ip", "netns", "exec", ns, *pin, *cmd]

    def _servers(self) -> None:
        for ns, addr in ((self.hb, HOST_B), (self.gb, GW_B)):
            self.servers.append(
                subprocess.Popen(
                    self._wrap(ns, 1, "iperf3", "-s", "-B", addr, "-p", str(PORT)),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def iperf(self, client: str, addr: str, seconds: float) -> float:
        """One TCP flow from ``client`` to the server on ``addr``; received bit/s."""
        zc = ["-Z"] if self.o.get("zerocopy") else []
        cmd = self._wrap(client, 0, "iperf3", "-c", addr, "-p", str(PORT), "-t", str(seconds))
        deadline = time.monotonic() + 10
        while True:
            res = run([*cmd, *zc, "-J"], check=False)
            try:
                data = json.loads(res.stdout)
            except json.JSONDecodeError:
                data = {"error": res.stderr.strip() or "no output"}
            if "error" not in data:
                return float(data["end"]["sum_received"]["bits_per_second"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.v.name}: iperf3 to {addr}: {data['error']}")
            time.sleep(0.2)

    def measure(self, seconds: float) -> tuple[float, float]:
        """(overlay, underlay) bit/s, one after the other."""
        return self.iperf(self.ha, HOST_B, seconds), self.iperf(self.ga, GW_B, seconds)

    def destroy(self) -> None:
        for p in self.servers:
            p.kill()
            p.wait()
        for ns in self.namespaces:
            run(["ip", "netns", "del", ns], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    args = ap.parse_args()
    wanted = [v for v in VARIANTS if not args.only or v.name in args.only.split(",")]
    labs = [Lab(i, v) for i, v in enumerate(wanted)]
    results: dict[str, list[tuple[float, float]]] = {v.name: [] for v in wanted}
    try:
        for lab in labs:
            lab.build()
        for r in range(args.rounds):
            for lab in labs:
                results[lab.v.name].append(lab.measure(args.seconds))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        for lab in labs:
            lab.destroy()
    base = results.get("baseline")
    base_ov = statistics.median(o for o, _ in base) if base else None
    base_un = statistics.median(u for _, u in base) if base else None
    print(
        f"\none TCP flow, {args.seconds:g} s, {args.rounds} interleaved rounds; Gbit/s medians\n"
        f"{'variant':14} {'overlay':>8} {'underlay':>9} {'ratio':>6} {'range':>12} "
        f"{'ov/base':>8} {'un/base':>8}  what"
    )
    for v in wanted:
        res = results[v.name]
        ratios = [o / u for o, u in res]
        ov, un = statistics.median(o for o, _ in res), statistics.median(u for _, u in res)
        rel_ov = f"{ov / base_ov:8.2f}" if base_ov else f"{'-':>8}"
        rel_un = f"{un / base_un:8.2f}" if base_un else f"{'-':>8}"
        print(
            f"{v.name:14} {ov / 1e9:8.2f} {un / 1e9:9.2f} {statistics.median(ratios):6.3f} "
            f"{min(ratios):5.3f}-{max(ratios):5.3f} {rel_ov} {rel_un}  {v.what}"
        )


if __name__ == "__main__":
    main()
