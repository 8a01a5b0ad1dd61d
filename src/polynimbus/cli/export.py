"""``polynimbus export``: the current intent of a lab, as YAML."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from polynimbus import state
from polynimbus.cli.app import StateDir, app, choose_lab, handle_errors
from polynimbus.errors import LabNotFoundError
from polynimbus.intent import load_intent_text
from polynimbus.orchestrate import intent_yaml


def exported_intent(lab: str | None, state_dir: Path | None) -> str:
    """The YAML ``export`` prints: the intent kept in the lab's state directory (by its
    last ``up``, or a change through ``serve``), validated, with a header line.

    Raises:
        LabNotFoundError: no lab (or several, without ``lab``) is up, or no intent is kept.
        IntentError: the kept intent is invalid.
    """
    if state_dir is not None:
        sdir = state.resolve(lab or "", state_dir)
    else:
        lab, _ = choose_lab(lab)
        sdir = state.recorded_state_dir(lab) or state.resolve(lab, None)
    text = state.saved_intent(sdir)
    if text is None:
        raise LabNotFoundError(
            f"no intent is kept in {sdir}",
            "'polynimbus up FILE' (or serve) keeps the lab's intent there; give --state-dir "
            "the directory it used",
        )
    intent = load_intent_text(text, str(sdir / state.INTENT_FILE))
    body = intent_yaml(intent).split("\n", 1)[1]
    return f"# the intent of lab {intent.name} (polynimbus export)\n{body}"


@app.command()
@handle_errors
def export(
    lab: Annotated[str | None, typer.Option("--lab", help="The lab, when several are up.")] = None,
    state_dir: StateDir = None,
) -> None:
    """Print the current intent of a running lab as YAML (with the changes made through
    'polynimbus serve').

    The output is an intent file: 'polynimbus export > f.yaml; polynimbus validate f.yaml'
    passes and 'polynimbus up f.yaml' changes nothing. Without --lab, the only lab that is
    up; with --state-dir, the intent kept in that directory.
    """
    sys.stdout.write(exported_intent(lab, state_dir))
