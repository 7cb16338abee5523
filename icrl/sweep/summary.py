"""A sweep's summary: one row per point (its overrides, end metrics as mean ± std over seeds), and the failed runs.

``summary.csv`` has ``<metric> mean`` / ``<metric> std`` columns (population std over the seeds that logged
the metric); ``summary.md`` the same table as ``mean ± std``, and the failed runs' exit codes and logs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from icrl.sweep.grid import Point
from icrl.sweep.tables import end_values, fmt_values, nan_mean, table


def write(out: Path, points: list[Point], runs: dict[Point, dict[int, dict]], wanted: tuple[str, ...] = ()) -> Path:
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
