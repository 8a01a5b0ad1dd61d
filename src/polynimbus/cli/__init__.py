"""The ``polynimbus`` command: one module per verb, each registering itself on :data:`app`."""

from __future__ import annotations

from polynimbus.cli import (  # noqa: F401
    abw,
    demo,
    down,
    exec_,
    export,
    fault,
    monitor,
    move,
    plan,
    report,
    serve,
    snapshot,
    trace,
    up,
    validate,
    verify,
)
from polynimbus.cli.app import app, main

__all__ = ["app", "main"]
