"""``polynimbus report FILE [--since 1h] [--out DIR]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from polynimbus.cli.app import StateDir, app, handle_errors, out
from polynimbus.cli.monitor import lab_intent, state_dir_of
from polynimbus.errors import PolynimbusError


def _since(value: str | None) -> str | None:
    from polynimbus.verify.monitor import parse_duration

    if value is not None:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


REPORT_MARKER = ".polynimbus-report"
"""Marks a directory that ``report`` made: it writes only into a new or empty directory,
or one with this file."""
OUTPUTS = (
    "summary.csv",
    "summary.json",
    "timeseries.png",
    "cdf-overlay.png",
    "cdf-underlay.png",
    "cdf-paths.png",
    "boxplot.png",
)
"""Every file ``report`` may write (an earlier report's are removed first, so a figure
not drawn this time is not left behind looking current)."""


def prepare_out(dest: Path) -> None:
    """Make ``dest`` ready for a report: created if missing; an earlier report's files
    removed; anything else refused.

    Raises:
        PolynimbusError: ``dest`` is a file, cannot be created, or holds files that
            ``report`` did not write.
    """
    try:
        if dest.exists() and not dest.is_dir():
            raise PolynimbusError(f"--out {dest} is a file", "give a directory (new or empty)")
        ours = {REPORT_MARKER, *OUTPUTS}
        # an earlier report's directory (a marker, or only report files: before markers)
        if (
            dest.is_dir()
            and not (dest / REPORT_MARKER).exists()
            and any(e.name not in ours for e in dest.iterdir())
        ):
            raise PolynimbusError(
                f"--out {dest} holds files that polynimbus report did not write",
                "give a new or empty directory, or one an earlier report wrote",
            )
        dest.mkdir(parents=True, exist_ok=True)
        (dest / REPORT_MARKER).touch()
        for name in OUTPUTS:
            (dest / name).unlink(missing_ok=True)
    except OSError as exc:
        raise PolynimbusError(
            f"cannot write the report into {dest}: {exc.strerror or exc}",
            "choose another --out",
        ) from None


@app.command()
@handle_errors
def report(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="The intent YAML file (default: the running lab's own intent).",
            show_default=False,
        ),
    ] = None,
    lab: Annotated[
        str | None, typer.Option("--lab", help="Without FILE: the lab, when several are up.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only the last 90s, 30m, 1h, 2d... (default: everything stored).",
            callback=_since,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the figures and tables [default: ./report-LAB]"),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Summarise and draw what 'polynimbus monitor' stored for a lab.

    Prints, per path and channel (overlay: through the tunnels; underlay: the plain
    internet), the probes, the loss in % and the median, p95 and p99 RTT in ms of the
    answered probes; writes them to summary.csv and summary.json, and draws PNG figures
    like seed 003's 4.3-4.7: timeseries.png (RTT over time, a panel per channel),
    cdf-overlay.png and cdf-underlay.png (a CDF per path), cdf-paths.png (per path, a
    CDF per channel) and boxplot.png (a box per path and channel).

    Reads the lab's state directory only: the lab need not be up, nor the monitor
    running. Example:

      polynimbus report examples/prestocloud.yaml --since 1h

    Exit status: 0 written; 1 nothing stored (run polynimbus monitor first) or no
    probe in the window; 2 a bad option (e.g. --since 5x).
    """
    from polynimbus.verify.figures import draw, summarize, write_summary
    from polynimbus.verify.monitor import parse_duration, read_samples

    intent = lab_intent(file, lab, "polynimbus report FILE")
    sdir = state_dir_of(intent.name, state_dir)
    samples = read_samples(sdir, parse_duration(since) if since else None)
    if not samples:
        raise PolynimbusError(
            f"no probe of lab {intent.name!r} stored" + (f" in the last {since}" if since else ""),
            "run polynimbus monitor FILE for a while, or widen --since",
        )
    dest = out_dir if out_dir is not None else Path(f"report-{intent.name}")
    prepare_out(dest)
    rows = summarize(samples)
    files = write_summary(rows, dest)
    span = max(s.ts for s in samples) - min(s.ts for s in samples)
    files += draw(samples, dest, title=f"({intent.name}, {span:.0f} s)")
    t = Table(
        title=f"RTT per path and channel, lab {intent.name}: {len(samples)} probes over "
        f"{span:.0f} s",
        title_justify="left",
    )
    for col in ("path", "channel", "probes", "loss %", "median ms", "p95 ms", "p99 ms"):
        t.add_column(
            col,
            justify="left" if col in ("path", "channel") else "right",
            overflow="fold",
        )
    for r in rows:
        t.add_row(
            r.path,
            r.channel,
            str(r.probes),
            f"{r.loss_pct:.1f}",
            _ms(r.median_ms),
            _ms(r.p95_ms),
            _ms(r.p99_ms),
        )
    out.print(t)
    for f in files:
        out.print(f"wrote {f}", soft_wrap=True)
