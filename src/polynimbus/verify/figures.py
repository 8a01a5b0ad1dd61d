"""The monitor's report: a summary per path and channel (median, p95, p99 RTT in ms; loss
in %) and figures like seed 003 §4.2's (figures 4.3-4.7), drawn with matplotlib (Agg, no
display needed) from the series :mod:`polynimbus.verify.monitor` stored.

Figures written (PNG):

- ``timeseries.png``: RTT over time of each gateway path, one panel per channel, lost
  probes as red crosses at 0 (figure 4.3: the 24-hour ping series);
- ``cdf-overlay.png``, ``cdf-underlay.png``: CDF of each gateway path's RTT on one
  channel (figure 4.4);
- ``cdf-paths.png``: per gateway path, the CDF of each channel (figures 4.5 and 4.7);
- ``boxplot.png``: a box per path and channel (figure 4.6: median, quartiles, outliers
  as crosses).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from polynimbus.verify.monitor import Sample

MAX_PATH_PANELS = 9
"""``cdf-paths.png`` draws at most this many gateway paths (the first in file order)."""
MAX_LEGEND = 12
"""Legends list at most this many lines."""
CHANNEL_COLOURS = {"overlay": "tab:blue", "underlay": "tab:green"}


@dataclass(frozen=True)
class SummaryRow:
    """One path and channel over the report's window.

    Attributes:
        path, channel, src, dst: as stored.
        probes: probes sent and settled; lost: without a reply.
        loss_pct: ``100 * lost / probes``.
        median_ms, p95_ms, p99_ms: RTT percentiles of the answered probes in ms (linear
            interpolation between order statistics, numpy's default), ``None`` when none
            was answered.
        mean_ms: their mean, ms.
    """

    path: str
    channel: str
    src: str
    dst: str
    probes: int
    lost: int
    loss_pct: float
    median_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None


def group(samples: Sequence[Sample]) -> dict[tuple[str, str], list[Sample]]:
    """Samples by ``(path, channel)``, in first-seen order, each list by time."""
    out: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        out.setdefault((s.path, s.channel), []).append(s)
    for v in out.values():
        v.sort(key=lambda s: s.ts)
    return out


def summarize(samples: Sequence[Sample]) -> list[SummaryRow]:
    """One :class:`SummaryRow` per path and channel of ``samples`` (order: first seen)."""
    rows = []
    for (path, channel), ss in group(samples).items():
        rtts = np.array([s.rtt_ms for s in ss if s.rtt_ms is not None], dtype=float)
        lost = sum(s.rtt_ms is None for s in ss)
        pct: list[float | None] = (
            [float(v) for v in np.percentile(rtts, [50, 95, 99])] if rtts.size else [None] * 3
        )
        rows.append(
            SummaryRow(
                path,
                channel,
                ss[0].src,
                ss[0].dst,
                len(ss),
                lost,
                100.0 * lost / len(ss),
                pct[0],
                pct[1],
                pct[2],
                float(rtts.mean()) if rtts.size else None,
            )
        )
    return rows


def write_summary(rows: Sequence[SummaryRow], out: Path) -> list[Path]:
    """``summary.csv`` and ``summary.json`` in ``out`` (created); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    fields = list(SummaryRow.__dataclass_fields__)
    csv_path, json_path = out / "summary.csv", out / "summary.json"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    json_path.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return [csv_path, json_path]


def _is_gateway_path(path: str) -> bool:
    src, _, dst = path.partition("->")
    return src.endswith("/gateway") and dst.endswith("/gateway")


def _series(ss: Sequence[Sample], t0: float) -> tuple[np.ndarray, np.ndarray]:
    """Times (s from ``t0``) and RTTs (ms) of ``ss``, NaN (a break in the line) for a lost
    probe and in a gap longer than three median steps (the monitor was not running)."""
    if not ss:
        return np.array([]), np.array([])
    ts = np.array([s.ts - t0 for s in ss])
    ys = np.array([np.nan if s.rtt_ms is None else s.rtt_ms for s in ss], dtype=float)
    if ts.size > 2:
        step = float(np.median(np.diff(ts)))
        gaps = np.nonzero(np.diff(ts) > 3 * step)[0]
        ts = np.insert(ts, gaps + 1, ts[gaps] + step)
        ys = np.insert(ys, gaps + 1, np.nan)
    return ts, ys


def _cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.sort(values)
    return x, np.arange(1, x.size + 1) / x.size


def draw(samples: Sequence[Sample], out: Path, title: str = "") -> list[Path]:
    """Draw the figures of the module docstring from ``samples`` into ``out`` (created).

    Returns:
        The PNG files written (a figure with nothing to draw is left out).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    groups = group(samples)
    gw = {k: v for k, v in groups.items() if _is_gateway_path(k[0])}
    channels = [c for c in ("overlay", "underlay") if any(k[1] == c for k in groups)]
    paths = list(dict.fromkeys(k[0] for k in gw))
    t0 = min((s.ts for s in samples), default=0.0)
    written: list[Path] = []

    def save(fig: object, name: str) -> None:
        path = out / name
        fig.savefig(path, dpi=100)  # type: ignore[attr-defined]
        plt.close(fig)  # type: ignore[arg-type]
        written.append(path)

    def rtts(ss: list[Sample]) -> np.ndarray:
        return np.array([s.rtt_ms for s in ss if s.rtt_ms is not None], dtype=float)

    # figure 4.3: time series, a panel per channel
    if gw:
        fig, axes = plt.subplots(
            len(channels), 1, figsize=(10, 3.2 * len(channels)), sharex=True, squeeze=False
        )
        for ax, ch in zip(axes[:, 0], channels, strict=True):
            for p in paths:
                x, y = _series(gw.get((p, ch), []), t0)
                if x.size:
                    ax.plot(x, y, lw=0.8, label=p)
                lost = [s.ts - t0 for s in gw.get((p, ch), []) if s.rtt_ms is None]
                if lost:
                    ax.plot(lost, [0.0] * len(lost), "rx", ms=4)
            ax.set_ylabel(f"{ch} RTT (ms)")
            ax.grid(alpha=0.3)
            if len(paths) <= MAX_LEGEND:
                ax.legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("time (s)")
        fig.suptitle(f"RTT time series, gateway to gateway {title}".strip())
        fig.tight_layout()
        save(fig, "timeseries.png")

    # figure 4.4: CDF per channel, a line per path
    for ch in channels:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        drawn = 0
        for p in paths:
            v = rtts(gw.get((p, ch), []))
            if v.size:
                x, y = _cdf(v)
                ax.step(x, y, where="post", label=p)
                drawn += 1
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("RTT (ms)")
        ax.set_ylabel("CDF")
        ax.set_title(f"CDF of the gateway paths, {ch} {title}".strip())
        ax.grid(alpha=0.3)
        if drawn <= MAX_LEGEND:
            ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        save(fig, f"cdf-{ch}.png")

    # figures 4.5 and 4.7: per path, a CDF per channel
    shown = paths[:MAX_PATH_PANELS]
    if shown:
        cols = min(3, len(shown))
        nrows = (len(shown) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.4 * nrows), squeeze=False)
        for n, ax in enumerate(axes.flat):
            if n >= len(shown):
                ax.set_visible(False)
                continue
            for ch in channels:
                v = rtts(gw.get((shown[n], ch), []))
                if v.size:
                    x, y = _cdf(v)
                    ax.step(x, y, where="post", label=ch, color=CHANNEL_COLOURS.get(ch))
            ax.set_title(shown[n], fontsize=9)
            ax.set_xlabel("RTT (ms)")
            ax.set_ylabel("CDF")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        fig.suptitle(f"CDF per path and channel {title}".strip())
        fig.tight_layout()
        save(fig, "cdf-paths.png")

    # figure 4.6: a box per path and channel
    boxes = [(k, rtts(v)) for k, v in groups.items()]
    boxes = [(k, v) for k, v in boxes if v.size]
    if boxes:
        boxes.sort(key=lambda kv: (kv[0][0], kv[0][1]))
        fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(boxes) + 2), 5))
        bp = ax.boxplot(
            [v for _, v in boxes], flierprops={"marker": "x", "markersize": 4}, patch_artist=True
        )
        for patch, (k, _) in zip(bp["boxes"], boxes, strict=True):
            patch.set_facecolor(CHANNEL_COLOURS.get(k[1], "tab:grey"))
            patch.set_alpha(0.5)
        ax.set_xticks(range(1, len(boxes) + 1))
        ax.set_xticklabels([f"{k[0]}\n{k[1]}" for k, _ in boxes], rotation=60, fontsize=6)
        ax.set_ylabel("RTT (ms)")
        ax.set_title(f"RTT per path and channel {title}".strip())
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        save(fig, "boxplot.png")
    return written
