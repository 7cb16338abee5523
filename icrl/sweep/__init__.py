"""``icrl sweep SWEEP.yaml``: a grid of ``icrl fit`` overrides × seeds, one job each, and its summary.

    icrl sweep sweeps/recall-alpha.yaml --jobs 2                 # local: a pool of 2 worker processes
    icrl sweep sweeps/recall-alpha.yaml --jobs 2 --reuse         # keep finished jobs, resume the others
    icrl sweep sweeps/recall-alpha.yaml --backend ray --address HEAD:6379   # every job a task on a Ray cluster

The YAML format is in ``icrl.sweep.grid``. A job is one ``icrl fit`` of a point × seed, in its folder
``OUT/runs/<point>/seed<S>-<key>/`` (key: its content hash, ``icrl.sweep.job``); ``OUT/summary.{csv,md}``:
end metrics per point over seeds (``icrl.sweep.tables``). ``icrl-reproduce`` trains through ``run_sweep``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import shlex
import shutil
import sys
from pathlib import Path

from icrl.checkpoints import EXIT_CODES
from icrl.sweep import grid
from icrl.sweep.backends import BACKENDS, Progress, Stopped, execute
from icrl.sweep.grid import Point
from icrl.sweep.job import code_version, ensembles, finished, last_checkpoint, members_of, plan_job
from icrl.sweep.tables import write_summary

__all__ = ["plan_sweep", "run_sweep", "locked", "Stopped", "exit_stopped", "main"]


def plan_sweep(points: list[Point], seeds: list[int], runs_dir: Path, threads: int = 1) -> dict[tuple[Point, int], dict]:
    """Every point × seed's job, its settings checked by building its model and data (``icrl.sweep.job``):
    ``ValueError`` naming the point for any that ``icrl fit`` would refuse, before any run or folder."""
    version, planned = code_version(), {}
    for point in points:
        for seed in seeds:
            try:
                planned[point, seed] = plan_job(point.config, point.args, seed, runs_dir / point.name, version, threads)
            except ValueError as err:
                raise ValueError(f"point {point.name} (config {point.config}): {err}") from None
    return planned


def run_sweep(planned: dict[tuple[Point, int], dict], backend: str = "local", jobs: int = 1, threads: int = 1,
              reuse: bool = False, address: str | None = None, progress: bool = True,
              ensemble: int = 1) -> dict[tuple[Point, int], dict]:
    """Train every planned job (each distinct one once); return ``{(point, seed): result}``. ``reuse``: keep the
    jobs finished with this very key, resume the others from ``last.ckpt`` (else all start afresh). ``ensemble``:
    train up to that many alike jobs together (``icrl.ensemble``). ``Stopped`` after SIGINT / SIGTERM, saying what
    was kept."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: choose from {list(BACKENDS)}")
    by_key = {}
    for job in planned.values():
        by_key.setdefault(job["key"], job)
    results = {key: done for key, job in by_key.items() if reuse and (done := finished(job)) is not None}
    todo = [job for key, job in by_key.items() if key not in results]
    if not reuse:
        for job in todo:
            shutil.rmtree(job["dir"], ignore_errors=True)
    units = ensembles(todo, ensemble) if ensemble > 1 else todo
    show = Progress(len(todo), jobs, progress)
    if results:
        show.note(f"icrl sweep: {len(results)} of {len(by_key)} runs reused (finished earlier with this config)")
    try:
        if todo:
            results.update((r["key"], r) for u in execute(units, backend, jobs, threads, show, address)
                           for r in members_of(u))
    except Stopped as stop:
        ended = [*results.values(), *(r for u in stop.results for r in members_of(u))]
        kept = sum(r["exit_code"] != 0 and last_checkpoint(Path(r["dir"])) is not None for r in ended)
        stop.args = (f"{stop}: {sum(r['exit_code'] == 0 for r in ended)} of {len(by_key)} runs finished, {kept} "
                     "stopped with a checkpoint",)
        raise
    return {ps: results[job["key"]] for ps, job in planned.items()}


@contextlib.contextmanager
def locked(*folders: Path):
    """Holds ``<folder>/.lock`` of each folder (created) while the block runs: ``ValueError`` when another sweep
    holds one. The OS releases a lock when its process ends, killed or not."""
    with contextlib.ExitStack() as held:
        for folder in dict.fromkeys(folders):
            folder.mkdir(parents=True, exist_ok=True)
            lock = held.enter_context(open(folder / ".lock", "w"))
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"{folder} is in use by another sweep (it holds {folder / '.lock'}); wait for it to "
                                 "end or choose another folder") from None
        yield


def exit_stopped(prog: str, argv: list[str], stop: Stopped) -> None:
    """The one line of a stopped sweep (what was kept, the command that continues it); exit 130 / 143."""
    again = shlex.join([*prog.split(), *argv, *["--reuse"] * ("--reuse" not in argv)])
    print(f"{prog}: stopped by {stop}; continue with: {again}", file=sys.stderr)
    sys.exit(EXIT_CODES[stop.signum])


def add_execution_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``icrl sweep`` and ``icrl-reproduce`` share: backend, parallelism, reuse."""
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: worker processes on this machine (default); ray: one Ray task per run")
    p.add_argument("--address", help="with --backend ray: the cluster's address (e.g. HEAD:6379; default: a local "
                                     "Ray instance of --jobs × --threads CPUs)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel, one thread each (default: 1); a "
                                                      "run with several processes (DDP) takes that many")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default: 1; more threads than free cores slow training a lot)")
    p.add_argument("--ensemble", type=int, default=1, metavar="K",
                   help="train up to K runs that differ only in seed, data.alpha or the optimizer's lr together, in one "
                        "process (icrl.ensemble): recall Figure 1 1.3x faster on two CPU cores, docs/performance.md §7 "
                        "(default: 1, each alone)")
    p.add_argument("--reuse", action="store_true",
                   help="keep runs already finished with exactly this config, seed and code; resume unfinished ones")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line")


def check_execution_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if min(args.jobs, args.threads, args.ensemble) < 1:
        p.error(f"--jobs, --threads and --ensemble must be >= 1, got --jobs {args.jobs} --threads {args.threads} "
                f"--ensemble {args.ensemble}")
    if args.address and args.backend != "ray":
        p.error(f"--address {args.address} needs --backend ray (got --backend {args.backend})")


def main(argv: list[str] | None = None) -> None:
    """``icrl sweep``: exit 0 when every run finished, 1 when any failed, 2 on a bad sweep file or option, 130 / 143
    when stopped by SIGINT / SIGTERM."""
    argv = sys.argv[2:] if argv is None else argv
    p = argparse.ArgumentParser(prog="icrl sweep",
                                description="A grid of icrl fit overrides × seeds: one run each, and a summary.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Sweep file format:\n" + grid.__doc__.split("::", 1)[1].split(">>>", 1)[0])
    p.add_argument("sweep", type=Path, help="the sweep YAML")
    p.add_argument("--out", type=Path, help="output directory: runs/, summary.csv, summary.md "
                                             "(default: runs/<sweep file name>)")
    add_execution_arguments(p)
    args = p.parse_args(argv)
    check_execution_arguments(p, args)
    out = args.out or Path("runs") / args.sweep.stem
    try:
        sweep = grid.load(args.sweep)
        planned = plan_sweep(list(sweep.points), list(sweep.seeds), out / "runs", args.threads)
        with locked(out):
            done = run_sweep(planned, args.backend, args.jobs, args.threads, args.reuse, args.address, args.progress,
                             args.ensemble)
            path = write_summary(out, list(sweep.points),
                                 {pt: {s: done[pt, s] for s in sweep.seeds} for pt in sweep.points}, sweep.metrics)
    except ValueError as err:
        p.error(str(err))
    except Stopped as stop:
        exit_stopped("icrl sweep", argv, stop)
    failed = sorted({r["dir"] for r in done.values() if r["exit_code"] != 0})
    print(f"icrl sweep: wrote {path} and {path.with_suffix('.csv')}; TensorBoard: tensorboard --logdir {out / 'runs'}")
    if failed:
        sys.exit(f"icrl sweep: {len(failed)} run(s) failed (see {path}): {', '.join(failed)}")
