"""``icrl-reproduce``: the papers' figures and claims from one command.

    icrl-reproduce --list
    icrl-reproduce recall-fig1 --out results/ [--quick] [--jobs 2] [--seeds 0 1 2]
    icrl-reproduce all --quick --out results/
    icrl-reproduce recall-fig1 --out results/ --backend ray [--address HEAD:6379]

The experiments (``icrl.reproduce.recall``, ``.regression``) train their points once per seed as one
sweep (``icrl.reproduce.plan``, ``icrl.sweep``: backends, reuse and resume as ``icrl sweep``), then write
``results.md`` (end values next to the papers', which claims hold), ``figures/*.png`` and the sweep's
``summary.md`` / ``summary.csv`` into ``--out``; the runs' logs stay under ``--out/runs/`` (or ``--runs-dir``).
"""

from __future__ import annotations

import argparse
import fnmatch
import shlex
import sys
import time
from pathlib import Path

from icrl.reproduce import plots, results
from icrl.reproduce.experiments import Experiment, label
from icrl.reproduce.plan import configs_dir, parse_fit_args, plan
from icrl.reproduce.recall import RECALL_EXPERIMENTS
from icrl.reproduce.regression import REGRESSION_EXPERIMENTS
from icrl.sweep import (Stopped, add_execution_arguments, check_execution_arguments, exit_stopped, locked,
                        plan_sweep, run_sweep)
from icrl.sweep.tables import write_summary

__all__ = ["main", "reproduce", "experiments"]


def experiments() -> dict[str, Experiment]:
    """Every experiment, by name, in the order ``--list`` shows them."""
    return {e.name: e for e in (make() for make in (*RECALL_EXPERIMENTS, *REGRESSION_EXPERIMENTS))}


def reproduce(names: list[str], args: argparse.Namespace, command: str) -> tuple[Path, list[str]]:
    """Run the experiments ``names`` with ``icrl-reproduce``'s options ``args`` and write their outputs; return the
    path of ``results.md`` and the failed runs' folders. ``ValueError`` for options that cannot run, before any run;
    ``Stopped`` by SIGINT / SIGTERM (nothing written but the runs)."""
    registry, out, seeds = experiments(), args.out, list(args.seeds)
    if unknown := [n for n in names if n not in registry]:
        raise ValueError(f"unknown experiment(s) {unknown}; choose from {list(registry)} (icrl-reproduce --list)")
    exps = [registry[n] for n in names]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct, got {seeds}")
    if not (configs := args.configs or configs_dir()).is_dir():  # the default is found only in an editable install
        raise ValueError(f"no configs directory at {configs}: pass --configs DIR, the "
                         "repository's configs/ (found without it when icrl is installed with pip install -e .)")
    scoped = [parse_fit_args(a) for a in args.fit_args]
    used = sorted({p.config for exp in exps for p in exp.points})
    for pattern, _ in scoped:  # a pattern that matches nothing would silently run the configs at full size
        if not fnmatch.filter(used, pattern):
            raise ValueError(f"--fit-args pattern {pattern!r} matches none of the configs of these experiments: {used}")
    start = time.perf_counter()
    if args.images:
        scoped.append(("recall/*", ["--trainer.callbacks+=icrl.recall.images.RecallImages"]))
    points_of = plan(exps, args.quick, args.steps, args.configs, scoped)
    points = list(dict.fromkeys(points_of.values()))
    runs_dir = args.runs_dir or out / "runs"
    planned = plan_sweep(points, seeds, runs_dir, args.threads)
    with locked(out, runs_dir):
        done = run_sweep(planned, args.backend, args.jobs, args.threads, args.reuse, args.address, args.progress,
                         args.ensemble)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        sections = []
        for exp in exps:
            data = {p: {s: done[points_of[exp.name, label(p)], s] for s in seeds} for p in exp.points}
            pngs = plots.draw_experiment(exp, data, out / "figures")
            sections.append(results.section(exp, data, [p.relative_to(out) for p in pngs], args.quick, seeds))
        write_summary(out, points, {p: {s: done[p, s] for s in seeds} for p in points})
        mode = ("quick (reduced sizes, see each experiment)" if args.quick else "full (the configs as they are)") \
            + ", with the command's overrides" * bool(args.fit_args or args.steps)
        unique = {r["key"]: r for r in done.values()}
        reused = sum(bool(r.get("reused")) for r in unique.values())
        timing = f"this invocation took {time.perf_counter() - start:.0f} s, {len(unique)} runs"
        timing += f" ({reused} reused from earlier invocations)" if reused else ""
        path = results.write(out, sections, command, seeds, mode, timing)
    return path, sorted({r["dir"] for r in unique.values() if r["exit_code"] != 0})


def describe(registry: dict[str, Experiment]) -> str:
    width = max(map(len, registry))
    return "\n".join(f"{name:<{width}}  {exp.description}  [{len(exp.points)} runs × seeds; {exp.paper}]"
                     for name, exp in registry.items())


def main(argv: list[str] | None = None) -> None:
    """Console script ``icrl-reproduce``."""
    argv = sys.argv[1:] if argv is None else argv
    registry = experiments()
    p = argparse.ArgumentParser(
        prog="icrl-reproduce", description="Reproduce the papers' figures and claims: train, plot, tabulate.",
        epilog="Experiments:\n" + describe(registry), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="experiments to run ('all' for every one)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--out", type=Path, help="output directory: PNGs, results.md, runs/ (TensorBoard logs)")
    p.add_argument("--quick", action="store_true", help="shrink steps and sizes: every experiment in minutes on a CPU")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every run (default: 0 1 2)")
    p.add_argument("--steps", type=int, help="override every run's max_steps (and validate 10 times)")
    add_execution_arguments(p)
    p.add_argument("--images", action="store_true",
                   help="also log attention and margin images to TensorBoard (icrl.recall.images.RecallImages)")
    p.add_argument("--fit-args", action="append", default=[], metavar="[GLOB:]ARGS",
                   help="extra icrl fit arguments for every run, or for the runs whose config matches GLOB, e.g. "
                        "'regression/fig2-4layer*:--data.batch_size 32' (repeatable; write --fit-args=ARGS when ARGS "
                        "is a single option)")
    p.add_argument("--runs-dir", type=Path, help="where the runs' logs go (default: OUT/runs)")
    p.add_argument("--configs", type=Path, help="configs directory (default: the repository's configs/)")
    args = p.parse_args(argv)
    if args.list:
        print(describe(registry))
        return
    names = list(registry) if args.names == ["all"] else args.names
    if not names:
        p.error("name at least one experiment (or 'all'); see --list")
    if args.out is None:
        p.error("--out DIR is required to run experiments")
    check_execution_arguments(p, args)
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    try:
        path, failed = reproduce(names, args, shlex.join(["icrl-reproduce", *argv]))
    except ValueError as err:
        p.error(str(err))
    except Stopped as stop:
        exit_stopped("icrl-reproduce", argv, stop)
    figures = path.parent / "figures"
    print(f"icrl-reproduce: wrote {path} and {len(list(figures.glob('*.png')))} figures in {figures}")
    if failed:  # the figures and tables are written all the same, the failed runs marked in results.md
        sys.exit(f"icrl-reproduce: {len(failed)} run(s) failed: {', '.join(failed)} (see their log.txt, and "
                 f"{path.parent / 'summary.md'})")
