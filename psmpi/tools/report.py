"""Pictures of a survey (``psmpi report``): progress over time, which worker ran which pset
when, and the distribution of pset runtimes, drawn from the bookkeeping columns every row
carries (``_time_utc``, ``_pset_runtime``, ``_rank``, ``_host``, ``_pid``).

matplotlib is imported only here, and only when a report is drawn, with its Agg backend and
without pyplot (no global state, no display needed), so ``import psmpi`` stays light.

Reading the timeline: one lane per worker (``_rank``: an MPI rank, or a multiprocessing
worker's number, which a replacement process takes over); in files whose rows all have
rank 0 (the serial backend, or an older psmpi's multiprocessing), one lane per process, and
processes that ran one after the other (after a pool restart, in a resumed run) share one. Idle gaps
longer than a minute (say, between a killed run and its resumption) are cut out and marked,
so a resumed survey stays readable.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import layout
from ..errors import PsmpiError
from ..store.bookkeeping import posix_seconds

if TYPE_CHECKING:
    import pandas as pd

FAILED_COLOUR = "#d62728"
CRASHED_COLOUR = "#000000"
# tab10 without its red, which marks failures.
MAP_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
MIN_GAP_SECONDS = 60.0
MAX_LABELLED_LANES = 48


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PsmpiError("psmpi report needs matplotlib, which is not installed: "
                         "pip install 'psmpi[report]'") from None
    return matplotlib


# ---------------------------------------------------------------------- data
def events(frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """One row per attempt with a known start: map, status, start, end, runtime, worker."""
    import pandas as pd
    parts = []
    for order, (name, (results, failures)) in enumerate(frames.items()):
        for df, status in ((results, None), (failures, "failed")):
            if not len(df):
                continue
            part = pd.DataFrame({
                "map": name, "map_order": order,
                "status": "done" if status is None else np.where(
                    df[layout.KIND].astype(str) == "crashed", "crashed", "failed"),
                "start": posix_seconds(df[layout.TIME_UTC]),
                "runtime": df[layout.PSET_RUNTIME].astype(float),
                "host": df[layout.HOST].astype(str), "rank": df[layout.RANK].astype(np.int64),
                "pid": df[layout.PID].astype(np.int64)})
            parts.append(part)
    columns = ["map", "map_order", "status", "start", "runtime", "host", "rank", "pid", "end"]
    if not parts:
        return pd.DataFrame(columns=columns)
    ev = pd.concat(parts, ignore_index=True)
    ev = ev[np.isfinite(ev["start"])].reset_index(drop=True)
    ev["end"] = ev["start"] + ev["runtime"].fillna(0.0).clip(lower=0.0)
    return ev


def busy_share(ev: pd.DataFrame, axis: TimeAxis) -> float:
    """The share of the workers' time spent computing psets, over the time the survey ran.

    The stretches between the idle gaps that ``axis`` cuts out (a killed run and its
    resume, say) count apart, each with the worker processes active in it: a gap between
    runs is not idle time of the workers, who did not exist then.
    """
    stretch = np.searchsorted(np.asarray(axis.cut_at), ev["start"].to_numpy(), side="right")
    capacity = 0.0
    for _, part in ev.groupby(stretch):
        workers = part[["host", "pid"]].drop_duplicates().shape[0]
        capacity += float(part["end"].max() - part["start"].min()) * workers
    return float(ev["runtime"].fillna(0.0).sum()) / capacity if capacity > 0 else float("nan")


class TimeAxis:
    """Seconds since the first start, with long idle gaps cut out.

    ``gaps`` holds (plotted position, idle seconds removed) of each cut.
    """

    def __init__(self, starts: np.ndarray, ends: np.ndarray):
        self.t0 = float(starts.min()) if starts.size else 0.0
        self.cut_at: list[float] = []      # absolute time where a cut ends (next activity)
        self.removed: list[float] = []     # seconds removed by cuts up to and including it
        self.gaps: list[tuple[float, float]] = []
        if not starts.size:
            return
        order = np.argsort(starts, kind="stable")
        s, e = starts[order], np.maximum.accumulate(ends[order])
        threshold = max(MIN_GAP_SECONDS, 20 * float(np.median(ends - starts)))
        idle = s[1:] - e[:-1]
        cuts = np.flatnonzero(idle > threshold)
        spacer = max(0.02 * float(e[-1] - s[0] - idle[cuts].sum()), 1e-3)
        cuts = cuts[idle[cuts] > 2 * spacer]  # a cut must make the picture shorter
        removed = 0.0
        for i in cuts:
            removed += float(idle[i]) - spacer
            self.cut_at.append(float(s[i + 1]))
            self.removed.append(removed)
        for i, at in zip(cuts, self.cut_at):
            self.gaps.append((float(self(at)) - spacer / 2, float(idle[i])))

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        if not self.cut_at:
            return t - self.t0
        k = np.searchsorted(np.asarray(self.cut_at), t, side="right")
        shift = np.concatenate(([0.0], self.removed))[k]
        return t - self.t0 - shift


def lanes(ev: pd.DataFrame) -> tuple[np.ndarray, list[str], int]:
    """The timeline lane of each event, the lanes' labels, and how many processes ran.

    Where rows carry a worker number (some ``_rank`` > 0: MPI ranks, multiprocessing
    workers) a lane is a worker. Otherwise it is a process, and processes that ran one
    after the other (on one host) share a lane. A pset whose process
    is unknown (one that crashed it, recorded with pid -1) goes to a last lane of its own.
    """
    hosts = ev["host"].nunique() > 1
    known = (ev["pid"] >= 0).to_numpy()
    lane = np.full(len(ev), -1, dtype=int)
    ran = ev[known]
    if (ran["rank"] > 0).any():
        keys = sorted(set(zip(ran["host"], ran["rank"])), key=lambda k: (k[1], k[0]))
        index = {k: i for i, k in enumerate(keys)}
        labels = [f"{h} worker {r}" if hosts else f"worker {r}" for h, r in keys]
        lane[known] = [index[k] for k in zip(ran["host"], ran["rank"])]
        processes = ran[["host", "pid"]].drop_duplicates().shape[0]
    else:
        lane_of, lane_host = _pack_processes(ran)
        # A lane of one process is named by its pid (to find it in logs); if some lane
        # held several processes, lanes are numbered instead.
        shared = len(lane_of) > len(lane_host)
        pid_of = {i: pid for (_, pid), i in lane_of.items()}
        names = [f"worker {i + 1}" if shared else f"pid {pid_of[i]}" for i in range(len(lane_host))]
        labels = [f"{host} {name}" if hosts else name for host, name in zip(lane_host, names)]
        lane[known] = [lane_of[k] for k in zip(ran["host"], ran["pid"])]
        processes = len(lane_of)
    if not known.all():
        lane[~known] = len(labels)
        labels.append("process unknown")
    return lane, labels, processes


def _pack_processes(ran: pd.DataFrame) -> tuple[dict[tuple, int], list[str]]:
    """Lane of each (host, pid): a process takes the first lane of its host free by then."""
    procs = ran.groupby(["host", "pid"]).agg(first=("start", "min"), last=("end", "max"))
    lane_of: dict[tuple, int] = {}
    lane_end: list[float] = []
    lane_host: list[str] = []
    for (host, pid), row in procs.sort_values("first").iterrows():
        free = [i for i, (end, h) in enumerate(zip(lane_end, lane_host))
                if h == host and end <= row["first"]]
        if free:
            i = free[0]
        else:
            i = len(lane_end)
            lane_end.append(0.0)
            lane_host.append(host)
        lane_end[i] = row["last"]
        lane_of[host, pid] = i
    return lane_of, lane_host


def _unit(span: float) -> tuple[str, float]:
    if span < 180:
        return "s", 1.0
    if span < 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def _duration(seconds: float) -> str:
    unit, size = _unit(seconds)
    return f"{seconds / size:.3g} {unit}"


def _colours(ev: pd.DataFrame, n_maps: int) -> list:
    if n_maps <= len(MAP_COLOURS):
        base = [MAP_COLOURS[i] for i in ev["map_order"]]
    else:
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
        base = [cmap(i / max(1, n_maps - 1)) for i in ev["map_order"]]
    status = ev["status"].to_numpy()
    return [FAILED_COLOUR if s == "failed" else CRASHED_COLOUR if s == "crashed" else c
            for c, s in zip(base, status)]


# ---------------------------------------------------------------------- drawing
def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _mark_gaps(ax: Any, axis: TimeAxis, size: float, label: bool) -> None:
    for x, idle in axis.gaps:
        ax.axvline(x / size, color="0.3", lw=0.8, ls=(0, (4, 3)))
        if label:
            ax.annotate(f"{_duration(idle)} idle", (x / size, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -3), textcoords="offset points", ha="left", va="top",
                        fontsize=8, color="0.2",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})


def draw_progress(ax: Any, ev: pd.DataFrame, axis: TimeAxis, size: float, unit: str,
                  totals: dict[str, int | None], names: list[str]) -> None:
    ax.set_title("Progress: psets finished over time", loc="left", fontsize=11)
    done = ev[ev["status"] == "done"]
    per_map = len(names) <= len(MAP_COLOURS) and len(names) > 1
    groups = [(n, done[done["map"] == n], MAP_COLOURS[i]) for i, n in enumerate(names)] if per_map \
        else [("done" if len(names) == 1 else "done (all maps)", done, MAP_COLOURS[0])]
    for label, part, colour in groups:
        x = np.sort(axis(part["end"].to_numpy())) / size
        if not len(x):
            continue
        first = float(axis(part["start"].min())) / size  # the curve starts when the map did
        ax.step(np.concatenate(([first], x)), np.arange(len(x) + 1), where="post", color=colour,
                lw=1.8, label=f"{label}: {len(x)}")
    failed = ev[ev["status"] != "done"]
    if len(failed):  # a rug along the time axis: when the failures happened
        x = axis(failed["end"].to_numpy()) / size
        ax.plot(x, np.zeros_like(x), "|", color=FAILED_COLOUR, ms=14, mew=1.5, clip_on=False,
                label=f"failed attempts: {len(x)}")
    known = [t for n, t in totals.items() if n in names and t is not None]
    if len(known) == len(names) and known and not per_map:
        ax.axhline(sum(known), color="0.3", ls="--", lw=1)
        ax.annotate(f"total {sum(known)}", (1.0, sum(known)), xycoords=("axes fraction", "data"),
                    xytext=(-3, 3), textcoords="offset points", ha="right", fontsize=8, color="0.3")
        ax.set_ylim(top=1.08 * sum(known))
    _mark_gaps(ax, axis, size, label=False)
    ax.set_xlabel(f"time since the first pset started [{unit}]")
    ax.set_ylabel("psets")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best" if len(ev) < 5000 else "lower right", fontsize=8, framealpha=0.9,
              edgecolor="none")


def draw_runtimes(ax: Any, ev: pd.DataFrame) -> None:
    ax.set_title("Pset runtimes", loc="left", fontsize=11)
    done = ev.loc[ev["status"] == "done", "runtime"].dropna().to_numpy()
    failed = ev.loc[ev["status"] != "done", "runtime"].dropna().to_numpy()
    every = np.concatenate([done, failed])
    if not every.size:
        _no_data(ax, "no runtimes recorded")
        return
    positive = every[every > 0]
    log = positive.size > 1 and positive.max() / positive.min() > 30
    n_bins = int(np.clip(1.5 * np.sqrt(every.size), 8, 60))
    if log:
        bins = np.geomspace(positive.min(), positive.max(), n_bins + 1)
        ax.set_xscale("log")
        done, failed = done[done > 0], failed[failed > 0]
    else:
        high = every.max() if every.max() > every.min() else every.min() + 1
        bins = np.linspace(every.min(), high, n_bins + 1)
    names = list(dict.fromkeys(ev["map"]))
    if 1 < len(names) <= len(MAP_COLOURS):
        ok = ev[(ev["status"] == "done") & ev["runtime"].notna()]
        parts = [ok.loc[ok["map"] == n, "runtime"].to_numpy() for n in names]
        colours = MAP_COLOURS[:len(names)]
        labels = [f"{n} ({p.size})" for n, p in zip(names, parts)]
    else:
        parts, colours, labels = [done], [MAP_COLOURS[0]], [f"done ({done.size})"]
    if log:
        parts = [p[p > 0] for p in parts]
    if failed.size:
        parts, colours = parts + [failed], colours + [FAILED_COLOUR]
        labels = labels + [f"failed attempts ({failed.size})"]
    ax.hist(parts, bins=bins, stacked=True, color=colours, label=labels)
    for q, style, name in ((50, "-", "median"), (90, "--", "90th percentile")):
        value = float(np.percentile(every, q))
        ax.axvline(value, color="0.2", lw=1, ls=style, label=f"{name}: {value:.3g} s")
    ax.axvline(every.max(), color="0.2", lw=1, ls=":", label=f"max: {every.max():.3g} s")
    ax.set_xlabel("seconds in the worker function" + (" (log scale)" if log else ""))
    ax.set_ylabel("psets")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if lab and not lab.startswith("_")]
    # Head room above the tallest bar, so the legend covers no bar.
    ax.set_ylim(0, ax.get_ylim()[1] * (1.2 + 0.09 * len(keep)))
    ax.legend(*zip(*keep), fontsize=8, framealpha=0.9, edgecolor="none", loc="upper right",
              ncols=2 if len(keep) > 4 else 1)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _timeline_title(lane: np.ndarray, x1: np.ndarray, n_workers: int, processes: int,
                    size: float) -> str:
    """Lanes, psets per lane, and how long the first idle worker waited for the last."""
    import pandas as pd
    mine = lane < n_workers
    counts = np.bincount(lane[mine], minlength=n_workers)
    each = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    text = _plural(n_workers, "lane")
    if processes > n_workers:
        text += f" for {processes} processes that ran one after another"
    text += f", {each} psets each"
    if n_workers > 1:
        ends = pd.Series(x1[mine]).groupby(lane[mine]).max()
        text += (f"; the first worker ran out of work {_duration((ends.max() - ends.min()) * size)} "
                 f"before the last finished")
    return f"Timeline: which worker ran which pset when ({text})"


def draw_timeline(ax: Any, ev: pd.DataFrame, lane: np.ndarray, labels: list[str], axis: TimeAxis,
                  size: float, unit: str, n_maps: int, processes: int) -> None:
    from matplotlib.collections import PolyCollection

    x0, x1 = axis(ev["start"].to_numpy()) / size, axis(ev["end"].to_numpy()) / size
    span = float(x1.max()) if len(x1) else 1.0
    x1 = np.maximum(x1, x0 + span * 4e-3)  # an instant pset stays visible
    y = lane.astype(float)
    verts = np.stack([np.stack([x0, y - 0.38], 1), np.stack([x1, y - 0.38], 1),
                      np.stack([x1, y + 0.38], 1), np.stack([x0, y + 0.38], 1)], 1)
    edges = "white" if len(ev) <= 3000 else "none"
    ax.add_collection(PolyCollection(verts, facecolors=_colours(ev, n_maps), edgecolors=edges,
                                     linewidths=0.4))
    n_lanes = len(labels)
    n_workers = n_lanes - (labels[-1:] == ["process unknown"])
    ax.set_xlim(0, span * 1.01)
    ax.set_ylim(n_lanes - 0.5, -0.5)
    step = max(1, int(np.ceil(n_lanes / MAX_LABELLED_LANES)))
    fontsize = 8 if n_lanes <= 24 else 6
    ax.set_yticks(range(0, n_lanes, step))
    ax.set_yticklabels(labels[::step], fontsize=fontsize)
    busy = np.bincount(lane, weights=ev["runtime"].fillna(0.0).to_numpy(), minlength=n_lanes)
    if n_lanes <= MAX_LABELLED_LANES and span > 0:
        right = ax.secondary_yaxis("right")
        right.set_yticks(range(n_lanes))
        right.set_yticklabels([f"{b / (span * size):.0%}" if i < n_workers else ""
                               for i, b in enumerate(busy)], fontsize=fontsize)
        right.set_ylabel("busy", fontsize=9)
    _mark_gaps(ax, axis, size, label=True)
    ax.set_title(_timeline_title(lane, x1, n_workers, processes, size), loc="left", fontsize=11)
    ax.set_xlabel(f"time since the first pset started [{unit}]")
    ax.grid(axis="x", alpha=0.3)


def _legend_for_maps(fig: Any, names: list[str], ev: pd.DataFrame) -> None:
    from matplotlib.patches import Patch

    handles = []
    if 1 < len(names) <= len(MAP_COLOURS):
        handles += [Patch(color=MAP_COLOURS[i], label=n) for i, n in enumerate(names)]
    elif len(names) > len(MAP_COLOURS):
        handles.append(Patch(color="#3b528b", label=f"{len(names)} maps, coloured by order (viridis)"))
    else:
        handles.append(Patch(color=MAP_COLOURS[0], label="pset done"))
    if (ev["status"] == "failed").any():
        handles.append(Patch(color=FAILED_COLOUR, label="failed"))
    if (ev["status"] == "crashed").any():
        handles.append(Patch(color=CRASHED_COLOUR, label="crashed"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
               fontsize=9, frameon=False)


def draw(path: str, frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
         summaries: Sequence[dict]) -> Any:
    """The report figure (a matplotlib Figure, not attached to pyplot)."""
    _matplotlib()
    from matplotlib.figure import Figure

    names = list(frames)
    ev = events(frames)
    totals = {s["name"]: s["total"] for s in summaries}
    lane, labels, processes = lanes(ev) if len(ev) else (np.empty(0, int), [], 0)
    lane_inches = min(9.0, max(2.2, 0.28 * len(labels) + 1.0))
    fig = Figure(figsize=(13, 4.6 + lane_inches + 0.9), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[3.4, lane_inches], width_ratios=[1.5, 1])
    ax_progress, ax_runtimes = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_timeline = fig.add_subplot(grid[1, :])
    done = sum(s["done"] for s in summaries)
    failed = sum(s["failed"] + s["crashed"] for s in summaries)
    if len(ev):
        axis = TimeAxis(ev["start"].to_numpy(), ev["end"].to_numpy())
        span = float(axis(ev["end"].max()))
        unit, size = _unit(span)
        busy = busy_share(ev, axis)
        workers = len(labels) - (labels[-1:] == ["process unknown"])
        draw_progress(ax_progress, ev, axis, size, unit, totals, names)
        draw_runtimes(ax_runtimes, ev)
        draw_timeline(ax_timeline, ev, lane, labels, axis, size, unit, len(names), processes)
        _legend_for_maps(fig, names, ev)
        when = datetime.datetime.fromtimestamp(axis.t0).isoformat(sep=" ", timespec="seconds")
        n_gaps = len(axis.gaps)
        cut = f" ({n_gaps} idle gap{'s' * (n_gaps > 1)} cut out)" if n_gaps else ""
        detail = (f"from {when}, {_duration(span)} of activity{cut} on "
                  f"{_plural(workers, 'worker')} ({_plural(processes, 'process', 'processes')}), "
                  f"{busy:.0%} busy")
    else:
        for ax in (ax_progress, ax_runtimes, ax_timeline):
            _no_data(ax, "no pset has finished yet")
        detail = "nothing finished yet"
    map_text = f"map {names[0]!r}" if len(names) == 1 else f"{len(names)} maps"
    fig.suptitle(f"psmpi report of {os.path.basename(path)}: {map_text}, {done} psets done, "
                 f"{failed} failed; {detail}", fontsize=12, x=0.01, ha="left")
    return fig


def _html_page(path: str, png_bytes: bytes, summaries: Sequence[dict]) -> str:
    def cell(v: Any) -> str:
        return "?" if v is None else html.escape(str(v))

    rows = "\n".join(
        "<tr>" + "".join(f"<td>{cell(s[k])}</td>" for k in ("name", "total", "done", "failed",
                                                              "crashed", "remaining")) + "</tr>"
        for s in summaries)
    title = html.escape(f"psmpi report: {os.path.basename(path)}")
    image = base64.b64encode(png_bytes).decode("ascii")
    made = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>{title}</h1>
<p>{html.escape(os.path.abspath(path))}, drawn {made} from its committed rows.
Total and remaining are "?" when the file does not record how many psets a map was given.</p>
<table>
<tr><th>map</th><th>total</th><th>done</th><th>failed</th><th>crashed</th><th>remaining</th></tr>
{rows}
</table>
<img alt="{title}: progress, per-worker timeline and runtime distribution"
 src="data:image/png;base64,{image}">
</body></html>
"""


def write_report(path: str, frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
                 summaries: Sequence[dict], png: str, html_path: str | None = None) -> None:
    """Draw the report of a results file to ``png`` and, if given, an HTML page embedding it.

    Parameters
    ----------
    path : str
        The results file (for titles).
    frames : dict
        ``{map name: (results, failures)}``: DataFrames with the columns ``_time_utc`` (POSIX
        seconds, or datetimes as :func:`psmpi.read` gives them), ``_pset_runtime``, ``_host``,
        ``_rank``, ``_pid`` (and ``_kind`` for failures).
    summaries : sequence of dict
        Per map: ``name``, ``total``, ``done``, ``failed``, ``crashed``, ``remaining``.
    png, html_path : str
        Where to write the picture and the page.
    """
    fig = draw(path, frames, summaries)
    fig.savefig(png, format="png")
    if html_path is not None:
        with open(png, "rb") as fh:
            page = _html_page(path, fh.read(), summaries)
        with open(html_path, "w", encoding="utf-8") as fh:
            fh.write(page)
