"""``results.md`` of ``icrl-reproduce``: end values over seeds next to the papers' values and claims."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from icrl.reproduce.experiments import Experiment, Ref, label, matches, reading_text
from icrl.sweep.grid import Point
from icrl.sweep.job import code_version
from icrl.sweep.tables import end_values, fmt_number, fmt_values, nan_mean, table

Seeds = dict[int, dict]  # seed -> the job's result ({"scalars": {tag: [steps, values]}, "error": ...})


def find_point(exp: Experiment, where: dict) -> Point:
    found = [p for p in exp.points if matches(p, where)]
    if len(found) != 1:
        raise ValueError(f"{exp.name}: check selector {where} matches {len(found)} runs, expected exactly 1")
    return found[0]


def check_rows(exp: Experiment, data: dict[Point, Seeds]) -> list[list[str]]:
    """One row per claim: point, metric, measured, paper / theory, claim, ✓ or ✗ (on the mean over seeds)."""
    rows = []
    for check in exp.checks:
        point = find_point(exp, check.where)
        values = end_values(data.get(point, {}), check.metric, check.at, check.window)
        ref = check.reference
        if isinstance(ref, Ref):
            ref_point = point if ref.where is None else find_point(exp, ref.where)
            ref = ref.scale * nan_mean(end_values(data.get(ref_point, {}), ref.metric, ref.at, ref.window))
        rows.append([label(point), f"`{check.metric}`{reading_text(check)}", fmt_values(values), check.expected(ref),
                     check.claim, "✓" if check.holds(nan_mean(values), ref) else "✗"])
    return rows


def value_rows(exp: Experiment, data: dict[Point, Seeds]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "steps", *(h for h, _ in exp.references), *(h for _, h in exp.columns)]
    rows = []
    for point in exp.points:
        seeds = data.get(point, {})
        steps = {r["scalars"]["val/loss"][0][-1] + 1 for r in seeds.values() if "val/loss" in r["scalars"]}
        failed = [str(s) for s, r in seeds.items() if r.get("error")]
        name = label(point) + (f" (failed: seed {', '.join(failed)})" if failed else "")
        rows.append([name, "/".join(map(str, sorted(steps))) or "—",
                     *(fmt_number(ref(point)) for _, ref in exp.references),
                     *(fmt_values(end_values(seeds, metric)) for metric, _ in exp.columns)])
    return header, rows


def section(exp: Experiment, data: dict[Point, Seeds], pngs: list[Path], quick: bool, seeds: list[int]) -> str:
    parts = [f"## {exp.name}: {exp.description}", "", f"Paper: {exp.paper}."]
    if exp.note:
        parts.append(exp.note)
    if quick and exp.quick_note:
        parts.append(f"`--quick`: {exp.quick_note}.")
    parts += ["", *(f"![{p.stem}]({p.as_posix()})" for p in pngs), ""]
    over = f"{len(seeds)} seed{'s' * (len(seeds) > 1)}"
    wall = sum(r.get("wall_s", 0) for runs in data.values() for r in runs.values())
    parts += [f"{len(data)} runs × {over}, trained in {wall:.0f} s of wall-clock time in total (sum over runs).", ""]
    if exp.checks:
        rows = check_rows(exp, data)
        held = sum(r[-1] == "✓" for r in rows)
        parts += [f"Claims ({held}/{len(rows)} hold; measured: mean ± std over {over}, at the last validation):", "",
                  table(["run", "metric", "measured", "paper / theory", "claim", "matches"], rows), ""]
    parts += ["End values (mean ± std over seeds):", "", table(*value_rows(exp, data)), ""]
    return "\n".join(parts)


def write(out: Path, sections: list[str], command: str, seeds: list[int], mode: str, timing: str) -> Path:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):  # no /proc (macOS, Windows), or no model name in it
        cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    head = ["# icrl-reproduce results", "", f"Command: `{command}`  ",
            f"Mode: {mode}; seeds {', '.join(map(str, seeds))}; {timing}.  ",
            f"Machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, {device}, "
            f"torch {torch.__version__}.  ",
            f"Code: icrl {code_version()}.", "",
            "Curves: mean over seeds, shaded min–max. On log axes, values at or below 1e-7 (a loss that reached "
            "its Bayes risk to float precision) are drawn at 1e-7. ✓: the mean over seeds satisfies the claim.", ""]
    path = out / "results.md"
    path.write_text("\n".join(head + sections))
    return path
