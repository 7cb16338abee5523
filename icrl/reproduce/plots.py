"""Figures of ``icrl-reproduce``: one PNG per ``Figure``, mean line and min–max band over seeds, one colour per line
name across all panels. Matplotlib's object API without pyplot: no display needed, a notebook's backend is left alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import figure as mpl_figure
from matplotlib import ticker

from icrl.reproduce.experiments import LOSS_FLOOR, PARAM_NAMES, Curves, Experiment, Figure, Panel, Sweep, matches
from icrl.reproduce.results import Seeds
from icrl.sweep.grid import Point
from icrl.sweep.tables import end_values, nan_mean


def line_name(p: Point, legend: tuple[str, ...]) -> str:
    return ", ".join(p.model if key == "model" else f"{PARAM_NAMES.get(key, key)} = {p.params.get(key)}"
                     for key in legend)


def seed_curves(seeds: Seeds, metric: str, x: str = "step") -> tuple[np.ndarray, np.ndarray] | None:
    """x values and a (seeds, points) array of ``metric``: on the steps every seed logged, or for
    ``x="time"`` interpolated onto 100 times within the span every seed covers."""
    curves = [r["scalars"][metric] for r in seeds.values() if metric in r["scalars"]]
    if not curves:
        return None
    if x == "time":
        lo, hi = max(c[2][0] for c in curves), min(c[2][-1] for c in curves)
        grid = np.linspace(lo, hi, 100) if hi > lo else np.array([hi])
        return grid, np.array([np.interp(grid, c[2], c[1]) for c in curves])
    steps = sorted(set.intersection(*(set(c[0]) for c in curves)))
    values = np.array([[dict(zip(c[0], c[1]))[s] for s in steps] for c in curves], dtype=float)
    return np.array(steps), values


def _floor(values: np.ndarray, log: bool) -> tuple[np.ndarray, bool]:
    if not log:
        return values, False
    clipped = np.nan_to_num(values, nan=np.nan, posinf=np.nan)
    return np.maximum(clipped, LOSS_FLOOR), bool((clipped < LOSS_FLOOR).any())


def _theory(ax, panel: Panel, xs: list[float], logx: bool = False) -> None:
    """The panel's theory curve, dashed, over the x range its runs cover."""
    if panel.theory is None or not xs:
        return
    grid = np.geomspace(min(xs), max(xs), 200) if logx else np.linspace(min(xs), max(xs), 200)
    theory = np.array([panel.theory(x) for x in grid])
    ax.plot(grid, _floor(theory, panel.log)[0], "k--", lw=1, label=panel.theory_label, zorder=4)


def _curves(ax, panel: Curves, data: dict[Point, Seeds], colors: dict[str, str]) -> bool:
    clipped, xs = False, []
    for point, seeds in data.items():
        for (metric, label), style in zip(panel.metrics, ["-", "--", ":"] * 3):  # a metric over another stays visible
            if not matches(point, panel.where) or (found := seed_curves(seeds, metric, panel.x)) is None:
                continue
            steps, values = found
            if panel.x == "epoch":
                steps = (steps + 1) / panel.epoch_steps  # a value logged after step s (counted from 0)
            values, c = _floor(values, panel.log)
            clipped |= c
            xs += [steps[0], steps[-1]]
            name = label or line_name(point, panel.legend)
            color = colors.setdefault(name, f"C{len(colors) % 10}")
            ax.plot(steps, values.mean(0), color=color, ls=style, label=name, lw=1.6, zorder=3)
            if len(values) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.2, lw=0)
    _theory(ax, panel, xs)
    refs = list(panel.refs)
    for metric, label in panel.ref_metrics:
        ends = np.array([nan_mean(end_values(seeds, metric)) for point, seeds in data.items()
                         if matches(point, panel.where)])
        if not np.isnan(ends).all():
            refs.append((nan_mean(ends), label))
    for (value, label), style in zip(refs, ["--", ":", "-."] * 3):
        ax.axhline(max(value, LOSS_FLOOR) if panel.log else value, color="0.35", ls=style, lw=1.2, label=label,
                   zorder=2)  # under the runs: a run at its reference stays visible
    ax.set_xlabel({"time": "wall-clock time (s)", "epoch": "epoch"}.get(panel.x, "training step"))
    return clipped


def _sweep(ax, panel: Sweep, data: dict[Point, Seeds], colors: dict[str, str]) -> bool:
    groups: dict[str, list[tuple[float, np.ndarray]]] = {}
    for point, seeds in data.items():
        if matches(point, panel.where) and panel.x in point.params:
            for metric, label in panel.metrics:
                name = label or line_name(point, panel.legend)
                groups.setdefault(name, []).append((point.params[panel.x], end_values(seeds, metric)))
    clipped, xs = False, []
    for name, points in groups.items():
        points.sort(key=lambda p: p[0])
        x = np.array([p[0] for p in points], dtype=float)
        xs += list(x)
        vals = [_floor(p[1], panel.log) for p in points]
        clipped |= any(c for _, c in vals)
        mean = np.array([nan_mean(v) for v, _ in vals])
        lo, hi = (np.array([extreme(v) if len(v) else np.nan for v, _ in vals]) for extreme in (np.nanmin, np.nanmax))
        color = colors.setdefault(name, f"C{len(colors) % 10}")
        ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], color=color, marker="o", ms=4, capsize=3, label=name, lw=1.4,
                    ls="none" if panel.theory else "-")  # a segment between two points could cross the theory curve
    _theory(ax, panel, xs, panel.logx)
    for x, label in panel.vlines:
        ax.axvline(x, color="0.4", ls=":", lw=1.2, label=label)
    ax.set_xlabel(PARAM_NAMES.get(panel.x, panel.x))
    if panel.logx:
        ax.set_xscale("log")
    return clipped


def _log_ticks(axis, lo: float, hi: float) -> None:
    """Plain numbers on a log axis (``0.5``, ``1e-06``); minor ticks labelled only on short ranges."""
    decades = math.log10(hi / lo)
    keep = set(range(1, 10)) if decades < 0.5 else {2, 3, 5} if decades < 1.5 else set()

    def minor(value, _):
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        return f"{value:g}" if mantissa in keep else ""

    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.FuncFormatter(minor))


def draw(figure: Figure, data: dict[Point, Seeds], path: Path, colors: dict[str, str]) -> Path:
    """Draw ``figure`` from the points' scalars into ``path`` (PNG), a line's colour from ``colors`` (by name)."""
    n = len(figure.panels)
    ncols = 2 if n == 4 else min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = mpl_figure.Figure(figsize=(4.6 * ncols, 3.4 * nrows + 0.8), layout="constrained")  # + the title, the legend
    axes = fig.subplots(nrows, ncols, squeeze=False)
    clipped = False
    for ax, panel in zip(axes.flat, figure.panels):
        clipped |= (_curves if isinstance(panel, Curves) else _sweep)(ax, panel, data, colors)
        if panel.log:
            ax.set_yscale("log")
            _log_ticks(ax.yaxis, *ax.get_ylim())
        if ax.get_xscale() == "log":
            _log_ticks(ax.xaxis, *ax.get_xlim())
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.grid(alpha=0.3, which="major")
        refs = [(h, lab) for h, lab in zip(*ax.get_legend_handles_labels()) if lab not in colors]
        if refs:  # reference lines of this panel; the runs share the figure legend below
            ax.legend(*zip(*refs), fontsize=8, loc="best")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles = {lab: h for ax in axes.flat for h, lab in zip(*ax.get_legend_handles_labels()) if lab in colors}
    for ncol in range(min(len(handles), 5), 0, -1):  # as many columns as fit the figure's width
        legend = fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=ncol, fontsize=9,
                            frameon=False)
        if ncol == 1 or legend.get_window_extent().width <= fig.bbox.width:
            break
        legend.remove()
    note = f"\n(values ≤ {LOSS_FLOOR:g} drawn at {LOSS_FLOOR:g})" if clipped else ""
    fig.suptitle(figure.title + note, fontsize=11)
    fig.savefig(path, dpi=90)
    return path


def draw_experiment(exp: Experiment, data: dict[Point, Seeds], out: Path) -> list[Path]:
    colors: dict[str, str] = {}
    return [draw(f, data, out / f"{f.name}.png", colors) for f in exp.figures]
