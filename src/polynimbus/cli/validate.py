"""``polynimbus validate FILE``."""

from __future__ import annotations

from polynimbus.cli.app import IntentFile, app, handle_errors, out
from polynimbus.errors import IntentError
from polynimbus.intent import load_intent
from polynimbus.plan import build_plan


@app.command()
@handle_errors
def validate(file: IntentFile) -> None:
    """Check an intent: every error at once, each with its YAML path and a hint.

    Exits 0 when valid, 2 when not. Touches nothing.
    """
    intent = load_intent(file)
    try:  # what only the topology shows (rates through a transit site)
        build_plan(intent)
    except IntentError as exc:
        exc.source = str(file)
        raise
    hosts = sum(len(s.hosts) for s in intent.sites)
    tenants = ""
    if intent.tenants:
        nets = sum(len(t.networks) for t in intent.tenants)
        thosts = sum(len(n.hosts) for t in intent.tenants for n in t.networks)
        tenants = f", {len(intent.tenants)} tenants with {nets} networks and {thosts} hosts"
    out.print(
        f"{file}: valid ({len(intent.sites)} sites, {hosts} hosts{tenants}, "
        f"{intent.overlay.topology}, {intent.overlay.transport})"
    )
