"""Regenerate the golden files: for each example intent, its plan and its rendered files.

    tests/golden/<example>/plan.json            polynimbus plan --json
    tests/golden/<example>/<site>.wg.conf       WireGuard config (fixed test keys)
    tests/golden/<example>/<site>.nft           the gateway's nftables ruleset
    tests/golden/<example>/<site>.node.json     the gateway's node model (payloads left out)
    tests/golden/<example>/<site>.<tenant>.router.<family>.nft   a tenant router's tables
    tests/golden/<example>/<site>.gateway-2.*   the same for a site's standby gateway

The cases are the bundled examples and the extra intents in tests/golden/cases/.

Run `make golden` (or this script) after a deliberate change, then review the diff.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from polynimbus.intent import load_intent
from polynimbus.keys import KeyPair, from_private
from polynimbus.node import NftTable
from polynimbus.plan import Plan, build_plan
from polynimbus.render.gateway import render_gateway
from polynimbus.render.standby import gateway_view
from polynimbus.render.tenants import render_tenant_site
from polynimbus.tunnels.wireguard import render_wg_config

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"


def test_keys(plan: Plan) -> dict[str, KeyPair]:
    """Deterministic, public test keys (SHA-256 of the site name). Never use them for real."""
    names = [s.name for s in plan.sites] + [s.standby.key for s in plan.sites if s.standby]
    return {
        name: from_private(
            X25519PrivateKey.from_private_bytes(
                hashlib.sha256(f"polynimbus-test-{name}".encode()).digest()
            )
        )
        for name in names
    }


test_keys.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def render_all(example: Path) -> dict[str, str]:
    """File name -> content of every golden file of one example."""
    plan = build_plan(load_intent(example))
    keys = test_keys(plan)
    files = {"plan.json": plan.to_json()}
    for site in plan.sites:
        if plan.transport == "wireguard":
            files[f"{site.name}.wg.conf"] = render_wg_config(plan, site, keys)
        model = render_gateway(plan, site, keys, impl="userspace", netem=False)
        files[f"{site.name}.node.json"] = json.dumps(model.to_dict(), indent=1) + "\n"
        for table in model.of(NftTable):  # the gateway's table, and pn-srv6 with chains
            suffix = "" if table.table == "polynimbus" else f".{table.table}"
            files[f"{site.name}{suffix}.nft"] = table.ruleset
        if site.standby is not None:  # gateways: 2
            view, vkeys = gateway_view(site, keys, standby=True)
            files[f"{site.name}.gateway-2.wg.conf"] = render_wg_config(plan, view, vkeys)
            sb = render_gateway(plan, site, keys, impl="userspace", standby=True)
            files[f"{site.name}.gateway-2.node.json"] = json.dumps(sb.to_dict(), indent=1) + "\n"
            for table in sb.of(NftTable):
                files[f"{site.name}.gateway-2.nft"] = table.ruleset
    for tenant in plan.tenants:
        for name in tenant.sites:
            for r in render_tenant_site(plan, tenant, plan.site(name)):
                if isinstance(r.item, NftTable):
                    t = r.item
                    files[f"{name}.{tenant.name}.router.{t.family}.nft"] = t.ruleset
    return files


def examples() -> list[Path]:
    """The bundled examples, then the extra golden cases."""
    return sorted(EXAMPLES.glob("*.yaml")) + sorted((HERE / "cases").glob("*.yaml"))


def main() -> None:
    for example in examples():
        out = HERE / example.stem
        out.mkdir(exist_ok=True)
        for old in out.iterdir():
            old.unlink()
        for name, text in render_all(example).items():
            (out / name).write_text(text)
        print(f"wrote {out.relative_to(HERE.parents[1])}")


if __name__ == "__main__":
    main()
