"""``icrl-reproduce``: the papers' figures and claims from one command.

    icrl-reproduce --list
    icrl-reproduce recall-fig1 --out results/ [--quick] [--jobs 2] [--seeds 0 1 2]
    icrl-reproduce all --quick --out results/
    icrl-reproduce recall-fig1 --out results/ --backend ray [--address HEAD:6379]

Each experiment (``icrl.reproduce.recall``, ``icrl.reproduce.regression``) trains its configs
through ``icrl fit``, once per seed, as one sweep (``icrl.sweep``: the same backends, content-keyed
reuse and resume as ``icrl sweep``), then writes ``results.md`` (end values next to the papers'
values, and which claims hold), a PNG per figure (``figures/``) and the sweep's ``summary.md`` /
``summary.csv`` into ``--out``. The runs' logs stay under ``--out/runs/`` (or ``--runs-dir``).
"""

from __future__ import annotations

import argparse
import fnmatch
import shlex
import sys
import time
from pathlib import Path

from icrl.reproduce.experiments import Experiment, Run, experiments
from icrl.reproduce.results import RunSeeds
from icrl.sweep import add_execution_arguments, check_execution_arguments

__all__ = ["main", "reproduce", "experiments"]


def reproduce(names: list[str], out: Path, quick: bool = False, seeds: tuple[int, ...] = (0, 1, 2), jobs: int = 1,
              steps: int | None = None, reuse: bool = False, images: bool = False, configs: Path | None = None,
              progress: bool = True, command: str = "", threads: int = 1, fit_args: tuple[str, ...] = (),
              runs_dir: Path | None = None, backend: str = "local",
              address: str | None = None) -> tuple[Path, list[str]]:
    """Run the experiments ``names``, write their figures, ``results.md`` and the sweep's summary into
    ``out``; return the path of ``results.md`` and the folders of the runs that failed.

    ``fit_args``: extra ``icrl fit`` arguments, ``"ARGS"`` for every run or ``"GLOB:ARGS"`` for the
    runs whose config matches ``GLOB`` (e.g. ``"regression/fig2-4layer*:--data.batch_size 32"``).
    ``backend``, ``address``, ``jobs``, ``threads``, ``reuse``: as ``icrl.sweep.run_sweep``'s.
    """
    from icrl.reproduce import plots, results
    from icrl.reproduce.run import configs_dir, plan
    from icrl.sweep import run_sweep, summary

    registry = experiments()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; choose from {list(registry)} (icrl-reproduce --list)")
    exps = [registry[n] for n in names]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct, got {list(seeds)}")
    if not (configs or configs_dir()).is_dir():  # the default is found only in an editable install
        raise ValueError(f"no configs directory at {configs or configs_dir()}: pass --configs DIR, the repository's "
                         "configs/ (found without it when icrl is installed with pip install -e .)")
    scoped = [parse_fit_args(a) for a in fit_args]
    run_configs = sorted({run.config for exp in exps for run in exp.runs})
    for pattern, _ in scoped:  # a pattern that matches nothing would silently run the configs at full size
        if not any(fnmatch.fnmatch(config, pattern) for config in run_configs):
            raise ValueError(f"--fit-args pattern {pattern!r} matches none of the configs of these experiments: "
                             f"{run_configs}")
    start = time.perf_counter()
    if images:
        scoped.append(("recall/*", ["--trainer.callbacks+=icrl.recall.images.RecallImages"]))
    points_of = plan(exps, quick, steps, configs, scoped)
    points = list(dict.fromkeys(points_of.values()))
    done = run_sweep(points, list(seeds), runs_dir or out / "runs", backend, jobs, threads, reuse, address, progress)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    sections = []
    for exp in exps:
        data: dict[Run, RunSeeds] = {run: {s: done[points_of[exp.name, run.label], s] for s in seeds}
                                     for run in exp.runs}
        pngs = plots.draw_experiment(exp, data, out / "figures")
        sections.append(results.section(exp, data, [p.relative_to(out) for p in pngs], quick, list(seeds)))
    summary.write(out, points, {p: {s: done[p, s] for s in seeds} for p in points})
    mode = "quick (reduced sizes, see each experiment)" if quick else "full (the configs as they are)"
    if fit_args or steps:
        mode += ", with the command's overrides"
    unique = {r["key"]: r for r in done.values()}
    reused = sum(bool(r.get("reused")) for r in unique.values())
    timing = f"this invocation took {time.perf_counter() - start:.0f} s, {len(unique)} runs"
    timing += f" ({reused} reused from earlier invocations)" if reused else ""
    path = results.write(out, sections, command or "icrl-reproduce " + " ".join(names), list(seeds), mode, timing)
    failed = sorted({r["dir"] for r in unique.values() if r["exit_code"] != 0})
    return path, failed


def parse_fit_args(text: str) -> tuple[str, list[str]]:
    """``"GLOB:ARGS"`` or ``"ARGS"`` into ``(GLOB or "*", the arguments split as a shell would)``.

    >>> parse_fit_args("regression/fig2-4layer*:--data.batch_size 32")
    ('regression/fig2-4layer*', ['--data.batch_size', '32'])
    >>> parse_fit_args("--trainer.max_steps 10")
    ('*', ['--trainer.max_steps', '10'])
    """
    head, sep, rest = text.partition(":")
    if sep and not head.lstrip().startswith("-"):
        return head.strip(), shlex.split(rest)
    return "*", shlex.split(text)


def describe(registry: dict[str, Experiment]) -> str:
    width = max(map(len, registry))
    return "\n".join(f"{name:<{width}}  {exp.description}  [{len(exp.runs)} runs × seeds; {exp.paper}]"
                     for name, exp in registry.items())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="icrl-reproduce", description="Reproduce the papers' figures and claims: train, plot, tabulate.",
        epilog="Experiments:\n" + describe(experiments()), formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return p


def main(argv: list[str] | None = None) -> None:
    """Console script ``icrl-reproduce``."""
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    registry = experiments()
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
        path, failed = reproduce(
            names, args.out, args.quick, tuple(args.seeds), args.jobs, args.steps, args.reuse, args.images,
            args.configs, args.progress, command=shlex.join(["icrl-reproduce", *argv]), threads=args.threads,
            fit_args=tuple(args.fit_args), runs_dir=args.runs_dir, backend=args.backend, address=args.address)
    except ValueError as err:
        p.error(str(err))
    figures = path.parent / "figures"
    print(f"icrl-reproduce: wrote {path} and {len(list(figures.glob('*.png')))} figures in {figures}")
    if failed:  # the figures and tables are written all the same, the failed runs marked in results.md
        sys.exit(f"icrl-reproduce: {len(failed)} run(s) failed: {', '.join(failed)} (see their log.txt, and "
                 f"{path.parent / 'summary.md'})")
