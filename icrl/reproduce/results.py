"""``results.md`` of ``icrl-reproduce``: end values over seeds next to the papers' values and claims."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from icrl.reproduce.experiments import SLOPE_WINDOW, Experiment, Ref, Run, reading_text

RunSeeds = dict[int, dict]  # seed -> worker result ({"scalars": {tag: [steps, values]}, "error": ...})



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


def end_values(seeds: RunSeeds, metric: str, at: str = "end",
               window: tuple[float, float] = SLOPE_WINDOW) -> np.ndarray:
    """The last (``at="first"``: first, ``"max"``: largest, ``"log_slope"``: ``log_slope`` over ``window``)
    logged value of ``metric`` per seed (NaN where a seed did not log it)."""
    return np.array([READ[at](*r["scalars"][metric][:2], window) if metric in r["scalars"] else math.nan
                     for r in seeds.values()], dtype=float)


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


def find_run(exp: Experiment, where: dict) -> Run:
    found = [r for r in exp.runs if r.matches(where)]
    if len(found) != 1:
        raise ValueError(f"{exp.name}: check selector {where} matches {len(found)} runs, expected exactly 1")
    return found[0]


def nan_mean(values: np.ndarray) -> float:
    """The mean of the values that are not NaN (failed runs); NaN if none is."""
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else math.nan


def mean_end(seeds: RunSeeds, metric: str, at: str = "end", window: tuple[float, float] = SLOPE_WINDOW) -> float:
    return nan_mean(end_values(seeds, metric, at, window))


def check_rows(exp: Experiment, data: dict[Run, RunSeeds]) -> list[list[str]]:
    """One row per claim: run, metric, measured, paper / theory, claim, ✓ or ✗ (on the mean over seeds)."""
    rows = []
    for check in exp.checks:
        run = find_run(exp, check.run)
        values = end_values(data.get(run, {}), check.metric, check.at, check.window)
        mean = nan_mean(values)
        ref = check.reference
        if isinstance(ref, Ref):
            ref_run = run if ref.where is None else find_run(exp, ref.where)
            ref = ref.scale * mean_end(data.get(ref_run, {}), ref.metric, ref.at, ref.window)
        metric = f"`{check.metric}`" + (f" ({reading_text(check)})" if reading_text(check) else "")
        rows.append([run.label, metric, fmt_values(values), check.expected(ref), check.claim,
                     "✓" if check.holds(mean, ref) else "✗"])
    return rows


def value_rows(exp: Experiment, data: dict[Run, RunSeeds]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "steps", *(h for h, _ in exp.references), *(h for _, h in exp.columns)]
    rows = []
    for run in exp.runs:
        seeds = data.get(run, {})
        steps = {r["scalars"]["val/loss"][0][-1] + 1 for r in seeds.values() if "val/loss" in r["scalars"]}
        failed = [str(s) for s, r in seeds.items() if r.get("error")]
        name = run.label + (f" (failed: seed {', '.join(failed)})" if failed else "")
        rows.append([name, "/".join(map(str, sorted(steps))) or "—",
                     *(fmt_number(ref(run)) for _, ref in exp.references),
                     *(fmt_values(end_values(seeds, metric)) for metric, _ in exp.columns)])
    return header, rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def section(exp: Experiment, data: dict[Run, RunSeeds], pngs: list[Path], quick: bool, seeds: list[int]) -> str:
    parts = [f"## {exp.name}: {exp.description}", "", f"Paper: {exp.paper}."]
    if exp.note:
        parts.append(exp.note)
    if quick and exp.quick_note:
        parts.append(f"`--quick`: {exp.quick_note}.")
    parts += ["", *(f"![{p.stem}]({p.as_posix()})" for p in pngs), ""]
    n = len(seeds)
    results = [r for seeds_ in data.values() for r in seeds_.values()]
    wall = sum(r.get("wall_s", 0) for r in results)
    parts += [f"{len(data)} runs × {n} seed{'s' * (n > 1)}, trained in {wall:.0f} s of wall-clock time in total "
              "(sum over runs).", ""]
    if exp.checks:
        rows = check_rows(exp, data)
        held = sum(r[-1] == "✓" for r in rows)
        parts += [f"Claims ({held}/{len(rows)} hold; measured: mean ± std over {n} seed{'s' * (n > 1)}, "
                  "at the last validation):", "",
                  table(["run", "metric", "measured", "paper / theory", "claim", "matches"], rows), ""]
    parts += ["End values (mean ± std over seeds):", "", table(*value_rows(exp, data)), ""]
    return "\n".join(parts)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, {device}, "
            f"torch {torch.__version__}")


def revision() -> str:
    """The repository's commit (``+ local changes`` when the tree differs), or ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + local changes" if dirty else "")


def write(out: Path, sections: list[str], command: str, seeds: list[int], mode: str, timing: str) -> Path:
    head = ["# icrl-reproduce results", "",
            f"Command: `{command}`  ",
            f"Mode: {mode}; seeds {', '.join(map(str, seeds))}; {timing}.  ",
            f"Machine: {machine()}.  ",
            f"Code: commit {revision()}.", "",
            "Curves: mean over seeds, shaded min–max. On log axes, values at or below 1e-7 (a loss that reached "
            "its Bayes risk to float precision) are drawn at 1e-7. ✓: the mean over seeds satisfies the claim.", ""]
    path = out / "results.md"
    path.write_text("\n".join(head + sections))
    return path
