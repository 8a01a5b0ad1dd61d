"""``polynimbus serve FILE``: the controller's REST API over the lab of FILE."""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from polynimbus import state
from polynimbus.cli.app import IntentFile, StateDir, app, err, handle_errors, out
from polynimbus.errors import PolynimbusError
from polynimbus.intent import load_intent_text


class _Stopped(Exception):
    """SIGTERM arrived: stop serving like Ctrl-C."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port).

    Raises:
        PolynimbusError: the address is taken, not local, or not allowed.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PolynimbusError(
            f"cannot listen on {host}:{port}: {exc.strerror}", "give --host an address"
        ) from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = (
            "another program listens there: choose another --port (0 picks a free one)"
            if exc.errno == errno.EADDRINUSE
            else "choose an address of this machine with --host"
        )
        raise PolynimbusError(f"cannot listen on {host}:{port}: {exc.strerror}", hint) from None
    return sock


@app.command()
@handle_errors
def serve(
    file: IntentFile,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on (keep it local: 127.0.0.1; plain HTTP, no TLS: "
            "any other address gets a warning).",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="TCP port; 0 picks a free one.", min=0, max=65535)
    ] = 8080,
    state_dir: StateDir = None,
    target: Annotated[
        str, typer.Option("--target", hidden=True, help="lab, or fake (tests: in memory).")
    ] = "lab",
) -> None:
    """Serve the controller's REST API over the lab of an intent (needs root).

    Builds or converges the lab of FILE first (like 'polynimbus up FILE'), then answers
    on http://HOST:PORT: the admin API under /v1/admin (tenants with their rates and
    tokens, sites, peering) and the tenant API under /v1/tenants/NAME (networks, extend
    to a site, attach, detach and move hosts). OpenAPI: /docs and /openapi.json.

    Every write is validated exactly like an intent file (422 with every problem and its
    YAML path) and applied to the lab at once; the answer lists the changes made.

    Tokens go in 'Authorization: Bearer TOKEN'. The admin token is generated at the first
    start into STATE_DIR/admin.token (0600; its path is printed, never the token): read
    it with 'cat'. Tenants' tokens: GET /v1/admin/tenants. Versions of the intent and the
    tokens are kept in STATE_DIR/api.sqlite (0600). 'polynimbus export' prints the
    current intent. Ctrl-C stops the server and leaves the lab up ('polynimbus down
    FILE' removes it, with the API's files).
    """
    from polynimbus.api import create_app, open_controller
    from polynimbus.api.applier import APPLIERS

    if target not in APPLIERS:
        raise PolynimbusError(f"unknown target {target!r}", "use lab or fake")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolynimbusError(f"cannot read {file}: {exc}", "give an intent YAML file") from None
    intent = load_intent_text(text, str(file))
    sdir = state.resolve(intent.name, state_dir)
    sock = _listen(host, port)  # before the lab: a taken port fails fast
    try:
        applier = APPLIERS[target](sdir)
        if target == "lab":
            from polynimbus.cli.up import run_up

            run_up(intent, sdir)
        else:
            applier.apply(intent)
            out.print(f"lab {intent.name!r} is up on the fake target (in memory)")
        controller = open_controller(intent, text, applier)
        _serve(create_app(controller), sock, sdir / "admin.token")
    finally:
        sock.close()


def _exposure_warning(sock: socket.socket) -> str | None:
    """A warning when ``sock`` listens on anything but a loopback address: tokens travel
    in clear HTTP (``serve`` has no TLS)."""
    address = sock.getsockname()[0]
    try:
        if ipaddress.ip_address(address.split("%")[0]).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"warning: listening on {address}, not a loopback address: the API is plain HTTP "
        "(no TLS), so bearer tokens and answers cross the network in clear. Keep it on "
        "127.0.0.1, or put a TLS proxy in front."
    )


def _serve(application: object, sock: socket.socket, token_file: Path) -> None:
    import uvicorn

    api_log = logging.getLogger("polynimbus.api")
    if not api_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("api: %(message)s"))
        api_log.addHandler(handler)
        api_log.setLevel(logging.INFO)
        api_log.propagate = False
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stopped()

    config = uvicorn.Config(
        application,  # type: ignore[arg-type]
        log_level="info",
        access_log=True,
        timeout_graceful_shutdown=None,
    )
    server = uvicorn.Server(config)
    stopped = False
    # Ctrl-C or SIGTERM from the moment the address is printed is a clean stop (status
    # 0), also before uvicorn has started
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        warning = _exposure_warning(sock)
        if warning:
            err.print(warning, markup=False, soft_wrap=True)
        out.print(f"admin token: {token_file} (send: Authorization: Bearer $(cat {token_file}))")
        out.print(
            f"serving on http://{shown}:{bound[1]} (OpenAPI: /docs); Ctrl-C stops", markup=False
        )
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        stopped = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    err.print("stopped serving; the lab stays up ('polynimbus down FILE' removes it)")
    if not server.started and not stopped:
        raise PolynimbusError("the server did not start", "see the messages above")
