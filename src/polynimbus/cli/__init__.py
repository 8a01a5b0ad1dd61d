"""The ``polynimbus`` command: one module per verb, each registering itself on :data:`app`."""

from __future__ import annotations

from polynimbus.cli import demo, down, exec_, plan, trace, up, validate, verify  # noqa: F401
from polynimbus.cli.app import app, main

__all__ = ["app", "main"]
