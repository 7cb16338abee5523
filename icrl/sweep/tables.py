"""Reading runs' logged scalars into end values, Markdown tables of them, and a sweep's summary.

A run's ``scalars`` are ``{tag: [steps, values, times]}`` (``icrl.scalars.read_scalars``); a metric's
value over seeds is an array with NaN where a seed did not log it (a failed run). A sweep's ``summary.csv`` has
``<metric> mean`` / ``<metric> std`` columns (population std over the seeds that logged the metric);
``summary.md`` the same table as ``mean ± std``, and the failed runs' exit codes and logs.

>>> seeds = {0: {"scalars": {"val/loss": [[9, 19], [1.0, 0.69]]}}, 1: {"scalars": {}}}
>>> fmt_values(end_values(seeds, "val/loss"))
'0.6900 (1/2 seeds)'
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from icrl.sweep.grid import Point

SLOPE_WINDOW = (1e-5, 0.1)  # at="log_slope": a gap's asymptotic regime, above float32's resolution of the losses


def log_slope(steps, values, window: tuple[float, float] = SLOPE_WINDOW) -> float:
    """Least-squares slope of ``ln(value)`` against step over the points with value in ``window``
    (NaN with fewer than 3 such points): a linear rate ``gap ∝ e^{−ct}`` reads ``−c``.

    >>> round(log_slope([0, 10, 20, 30, 40], [1.0, 0.05, 0.0025, 1.25e-4, 1e-9]), 4)  # 1.0 and 1e-9: outside
    -0.2996
    """
    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    keep = (y >= window[0]) & (y <= window[1])
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(x[keep], np.log(y[keep]), 1)[0])


# the value of a curve a check reads: its last, first or largest value, or its log-slope
READ = {"end": lambda s, v, w: v[-1], "first": lambda s, v, w: v[0], "max": lambda s, v, w: max(v),
        "log_slope": log_slope}


def end_values(seeds: dict[int, dict], metric: str, at: str = "end",
               window: tuple[float, float] = SLOPE_WINDOW) -> np.ndarray:
    """``READ[at]`` of ``metric``'s logged curve per seed (NaN where a seed did not log it)."""
    return np.array([READ[at](*r["scalars"][metric][:2], window) if metric in r["scalars"] else math.nan
                     for r in seeds.values()], dtype=float)


def nan_mean(values: np.ndarray) -> float:
    """The mean of the values that are not NaN (failed runs); NaN if none is."""
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else math.nan


def fmt_number(x: float) -> str:
    if math.isnan(x):
        return "—"
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"
    return f"{x:.2e}"


def fmt_values(values: np.ndarray) -> str:
    """``mean ± std`` over seeds (population std, two digits), or the one value, or ``—``."""
    ok = values[~np.isnan(values)]
    if len(ok) == 0:
        return "—"
    text = fmt_number(float(ok.mean()))
    if len(ok) > 1:
        text += f" ± {float(ok.std()):.2g}"
    if len(ok) < len(values):
        text += f" ({len(ok)}/{len(values)} seeds)"
    return text


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def write_summary(out: Path, points: list[Point], runs: dict[Point, dict[int, dict]], wanted: tuple[str, ...] = ()) -> Path:
    """Write ``summary.csv`` and ``summary.md`` into ``out``; ``runs``: ``{point: {seed: result}}``. Returns the .md.
    The columns: ``wanted``, or every ``val/`` scalar the runs logged (every scalar when none is ``val/``)."""
    tags = sorted({tag for seeds in runs.values() for r in seeds.values() for tag in r["scalars"]})
    metrics = list(wanted) or [t for t in tags if t.startswith("val/")] or tags
    keys = list(dict.fromkeys(k for p in points for k in p.values))
    csv_rows = [["point", *keys, "seeds ok", "seeds failed", *(f"{m} {s}" for m in metrics for s in ("mean", "std"))]]
    md_rows, failed = [], []
    for point in points:
        seeds = runs[point]
        ok = [s for s, r in seeds.items() if r["exit_code"] == 0]
        failed += [(point, s, r) for s, r in seeds.items() if r["exit_code"] != 0]
        ends = {m: end_values({s: seeds[s] for s in ok}, m) for m in metrics}
        stats = [("", "") if np.isnan(v).all() else (nan_mean(v), float(np.nanstd(v))) for v in ends.values()]
        csv_rows.append([point.name, *(point.values.get(k, "") for k in keys), len(ok), len(seeds) - len(ok),
                         *(x for stat in stats for x in stat)])
        md_rows.append([point.name, *(str(point.values.get(k, "")) for k in keys), f"{len(ok)}/{len(seeds)}",
                        *(fmt_values(v) for v in ends.values())])
    with open(out / "summary.csv", "w", newline="") as f:
        csv.writer(f).writerows(csv_rows)
    text = ["# Sweep summary", "", "End values (last logged), mean ± std over the seeds that finished:", "",
            table(["point", *keys, "seeds ok", *(f"`{m}`" for m in metrics)], md_rows), ""]
    if failed:
        text += [f"Failed runs ({len(failed)}):", "",
                 table(["point", "seed", "exit code", "log"],
                       [[p.name, str(s), str(r["exit_code"]), f"`{r['log']}`"] for p, s, r in failed]), ""]
    path = out / "summary.md"
    path.write_text("\n".join(text))
    return path
