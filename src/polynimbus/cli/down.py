"""``polynimbus down FILE``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from polynimbus.cli.app import StateDir, app, err, handle_errors, out
from polynimbus.errors import IntentError, PolynimbusError
from polynimbus.intent import load_intent
from polynimbus.names import NAME_RE
from polynimbus.orchestrate import lab_down


def lab_name_of(file: Path) -> str:
    """The lab name of an intent file, even when the rest of the intent is invalid
    (``down`` must work after the intent was edited into an invalid state).

    Raises:
        IntentError: the file has no usable ``name:``.
    """
    try:
        return load_intent(file).name
    except IntentError as exc:
        try:
            data = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError):
            raise exc from None
        name = data.get("name") if isinstance(data, dict) else None
        if isinstance(name, str) and NAME_RE.match(name):
            return name
        raise


@app.command()
@handle_errors
def down(
    file: Annotated[
        Path | None, typer.Argument(help="The intent YAML file.", show_default=False)
    ] = None,
    lab: Annotated[
        str | None,
        typer.Option(
            "--lab", help="Remove the lab of this name instead of naming its intent file."
        ),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Remove everything 'up' created for a lab, from any state.

    Includes what a crashed or half-finished 'up' left: processes, namespaces, interfaces,
    WireGuard sockets, and what it wrote in the state directory (keys included). Other labs,
    and files polynimbus did not create, are left alone.
    """
    if (file is None) == (lab is None):
        raise PolynimbusError(
            "give the intent FILE or --lab NAME (one of them)",
            "e.g. polynimbus down examples/prestocloud.yaml",
        )
    if lab is not None and not NAME_RE.match(lab):
        raise typer.BadParameter(
            f"{lab!r} is not a lab name (1-32 lowercase letters, digits, inner hyphens)",
            param_hint="--lab",
        )
    name = lab if lab is not None else lab_name_of(file)  # type: ignore[arg-type]
    removed = lab_down(name, state_dir)
    for w in removed.warnings:
        err.print(f"warning: {w}", markup=False)
    if not removed:
        out.print(f"nothing to remove: lab {name!r} is not up")
        return
    out.print(
        f"lab {name!r} removed: {len(removed.namespaces)} namespaces, "
        f"{len(removed.processes)} processes, {len(removed.sockets)} sockets"
        + (", what it wrote in its state directory" if removed.state else "")
    )
