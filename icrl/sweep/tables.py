"""Reading runs' logged scalars into end values, and Markdown tables of them (``summary.md``, ``results.md``).

A run's ``scalars`` are ``{tag: [steps, values, times]}`` (``icrl.scalars.read_scalars``); a metric's
value over seeds is an array with NaN where a seed did not log it (a failed run).

>>> seeds = {0: {"scalars": {"val/loss": [[9, 19], [1.0, 0.69]]}}, 1: {"scalars": {}}}
>>> fmt_values(end_values(seeds, "val/loss"))
'0.6900 (1/2 seeds)'
"""

from __future__ import annotations

import math

import numpy as np

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
