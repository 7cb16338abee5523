"""The experiments of ``icrl-reproduce`` as one sweep: a point per (config, overrides), shared by experiments.

Each ``Run`` of an experiment becomes a ``Point`` (its config, its overrides, the ``--quick`` and
``--steps`` ones, the command's ``--fit-args``); runs shared by several experiments (the same
config and overrides) are one point, and ``icrl.sweep.run_sweep`` trains each point × seed once.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from icrl.reproduce.experiments import Experiment, Run
from icrl.sweep.spec import Point, point_name, safe


def configs_dir() -> Path:
    """``configs/`` of the repository this package lives in (the package is installed editable)."""
    return Path(__file__).resolve().parents[2] / "configs"


def overrides(exp: Experiment, run: Run, quick: bool, steps: int | None) -> list[str]:
    args = [*run.overrides, *((*exp.quick, *exp.run_quick.get(run.model, ())) if quick else ())]
    if steps is not None:
        every = str(max(1, steps // 10))
        args += ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", every,
                 "--trainer.log_every_n_steps", str(max(1, steps // 50))]
    return args


def point_of(run: Run, config: Path, args: list[str]) -> Point:
    """The run as a sweep point named ``<config>/<its own overrides>`` (``recall-fig1-reparam-linear-fa/alpha=0.5``)."""
    own = {k.removeprefix("--"): v for k, v in zip(run.overrides[::2], run.overrides[1::2])}
    name = safe(run.config.removesuffix(".yaml").replace("/", "-")) + (f"/{point_name(own)}" if own else "")
    return Point(name, str(config / run.config), tuple(args), own)


def plan(exps: list[Experiment], quick: bool = False, steps: int | None = None, configs: Path | None = None,
         fit_args: list[tuple[str, list[str]]] = ()) -> dict[tuple[str, str], Point]:
    """The points of ``exps``: ``{(experiment, run label): point}``; equal runs are the same point.

    ``fit_args``: ``(glob, args)`` pairs; ``args`` are appended to the runs whose config (relative
    to the configs directory) matches ``glob``.
    """
    configs = configs or configs_dir()
    points = {}
    for exp in exps:
        for run in exp.runs:
            args = overrides(exp, run, quick, steps)
            args += [a for pattern, extra in fit_args if fnmatch.fnmatch(run.config, pattern) for a in extra]
            points[exp.name, run.label] = point_of(run, configs, args)
    return points
