"""``icrl sweep SWEEP.yaml``: a grid of ``icrl fit`` overrides × seeds, one job each, and its summary.

    icrl sweep sweeps/recall-alpha.yaml --jobs 2                 # local: a pool of 2 worker processes
    icrl sweep sweeps/recall-alpha.yaml --jobs 2 --reuse         # keep finished jobs, resume the others
    icrl sweep sweeps/recall-alpha.yaml --backend ray --address HEAD:6379   # every job a task on a Ray cluster

The YAML format is in ``icrl.sweep.grid`` (``--out`` defaults to ``runs/<sweep file name>``). A job
is one ``icrl fit`` of a point × seed, in its own folder ``OUT/runs/<point>/seed<S>-<key>/``
(TensorBoard logs, ``scalars.csv``, ``log.txt``, ``result.json``; point: its overrides, key: its
content hash, see ``icrl.sweep.job``), so ``tensorboard --logdir OUT/runs`` compares the points.
``OUT/summary.{csv,md}``: end metrics per point, mean ± std over seeds, and the failed jobs.
``icrl-reproduce`` trains its experiments through the same ``run_sweep``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from icrl.sweep import grid, summary
from icrl.sweep.backends import BACKENDS, Progress, execute
from icrl.sweep.grid import Point
from icrl.sweep.job import code_version, finished, plan_job

__all__ = ["run_sweep", "main"]


def run_sweep(points: list[Point], seeds: list[int], runs_dir: Path, backend: str = "local", jobs: int = 1,
              threads: int = 1, reuse: bool = False, address: str | None = None,
              progress: bool = True) -> dict[tuple[Point, int], dict]:
    """Train every point × seed (each distinct job once); return ``{(point, seed): result}``.

    ``reuse``: keep the jobs that finished with exactly this config, seed and code, and resume the
    unfinished ones from their ``last.ckpt``; without it every job starts afresh.
    """
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: choose from {list(BACKENDS)}")
    version = code_version()
    jobs_of, by_key = {}, {}
    for point in points:
        for seed in seeds:
            try:
                job = plan_job(point.config, point.args, seed, runs_dir / point.name, version, threads)
            except ValueError as err:
                raise ValueError(f"point {point.name} (config {point.config}): {err}") from None
            jobs_of[point, seed] = by_key.setdefault(job["key"], job)
    results, todo = {}, []
    for key, job in by_key.items():
        if reuse and (done := finished(job)) is not None:
            results[key] = done
            continue
        if not reuse:
            shutil.rmtree(job["dir"], ignore_errors=True)
        todo.append(job)
    show = Progress(len(todo), jobs, progress)
    if results:
        show.note(f"icrl sweep: {len(results)} of {len(by_key)} runs reused (finished earlier with this config)")
    if todo:
        results.update((r["key"], r) for r in execute(todo, backend, jobs, threads, show, address))
    return {ps: results[job["key"]] for ps, job in jobs_of.items()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="icrl sweep",
                                description="A grid of icrl fit overrides × seeds: one run each, and a summary.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Sweep file format:\n" + grid.__doc__.split("::", 1)[1].split(">>>", 1)[0])
    p.add_argument("sweep", type=Path, help="the sweep YAML")
    p.add_argument("--out", type=Path, help="output directory: runs/, summary.csv, summary.md "
                                             "(default: runs/<sweep file name>)")
    add_execution_arguments(p)
    return p


def add_execution_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``icrl sweep`` and ``icrl-reproduce`` share: backend, parallelism, reuse."""
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: worker processes on this machine (default); ray: one Ray task per run")
    p.add_argument("--address", help="with --backend ray: the cluster's address (e.g. HEAD:6379; default: a local "
                                     "Ray instance of --jobs × --threads CPUs)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel, one thread each (default: 1); a "
                                                      "run with several processes (DDP) takes that many")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default: 1; more threads than free cores slow training down a "
                        "lot)")
    p.add_argument("--reuse", action="store_true",
                   help="keep runs already finished with exactly this config, seed and code; resume unfinished ones")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line")


def check_execution_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.jobs < 1 or args.threads < 1:
        p.error(f"--jobs and --threads must be >= 1, got --jobs {args.jobs} --threads {args.threads}")
    if args.address and args.backend != "ray":
        p.error(f"--address {args.address} needs --backend ray (got --backend {args.backend})")


def main(argv: list[str] | None = None) -> None:
    """``icrl sweep``: exit 0 when every run finished, 1 when any failed, 2 on a bad sweep file or option."""
    p = parser()
    args = p.parse_args(sys.argv[2:] if argv is None else argv)
    check_execution_arguments(p, args)
    out = args.out or Path("runs") / args.sweep.stem
    try:
        sweep = grid.load(args.sweep)
        done = run_sweep(list(sweep.points), list(sweep.seeds), out / "runs", args.backend, args.jobs, args.threads,
                         args.reuse, args.address, args.progress)
    except ValueError as err:
        p.error(str(err))
    out.mkdir(parents=True, exist_ok=True)
    path = summary.write(out, list(sweep.points), {pt: {s: done[pt, s] for s in sweep.seeds} for pt in sweep.points},
                         sweep.metrics)
    failed = sorted({r["dir"] for r in done.values() if r["exit_code"] != 0})
    print(f"icrl sweep: wrote {path} and {path.with_suffix('.csv')}; TensorBoard: tensorboard --logdir {out / 'runs'}")
    if failed:
        sys.exit(f"icrl sweep: {len(failed)} run(s) failed (see {path}): {', '.join(failed)}")
