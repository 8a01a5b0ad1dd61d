"""The Typer application, shared options and error handling."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from polynimbus import __version__
from polynimbus.errors import PolynimbusError

app = typer.Typer(
    name="polynimbus",
    help=(
        "Build one private, encrypted network across many clouds.\n\n"
        "Write an intent (sites, hosts, overlay) in YAML, then:\n\n"
        "  polynimbus validate FILE   check it (every error at once)\n\n"
        "  polynimbus plan FILE       see the numbering plan, tunnels and routes\n\n"
        "  polynimbus up FILE         build it in the emulated multi-cloud lab\n\n"
        "  polynimbus verify FILE     prove every host reaches every other, every chain works\n\n"
        "  polynimbus trace FILE CHAIN   the path a chain's probe really took\n\n"
        "  polynimbus down FILE       remove it\n\n"
        "Or just: polynimbus demo"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

out = Console(highlight=False, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where keys and run state live "
        "[default: $XDG_STATE_HOME/polynimbus/NAME or ~/.local/state/polynimbus/NAME]",
        show_default=False,
    ),
]
Seconds = Annotated[
    int,
    typer.Option("--seconds", help="Length of each iperf3 flow, whole seconds.", min=1),
]
IntentFile = Annotated[Path, typer.Argument(help="The intent YAML file.", show_default=False)]

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn polynimbus errors into ``error: ...`` + hint on stderr and their exit code;
    Ctrl-C into a short note and exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PolynimbusError as exc:
            err.print(exc.render(), markup=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print(
                "\ninterrupted. Run the same command again to complete it; "
                "'polynimbus down FILE' removes a half-built lab.",
                markup=False,
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"polynimbus {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # outside a command (e.g. while importing)
        sys.exit(130)


def choose_lab(lab: str | None) -> tuple[str, list[str]]:
    """``lab``, or the only lab up when it is ``None``; and the labs up.

    Raises:
        LabNotFoundError: ``lab`` is ``None`` and no lab, or several, are up.
    """
    from polynimbus.errors import LabNotFoundError
    from polynimbus.targets.lab import list_labs

    labs = list_labs()
    if lab is None:
        if not labs:
            raise LabNotFoundError("no lab is up", "run: polynimbus up FILE")
        if len(labs) > 1:
            raise LabNotFoundError(
                f"several labs are up ({', '.join(labs)})", "choose one with --lab NAME"
            )
        lab = labs[0]
    return lab, labs
