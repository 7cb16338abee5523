"""The experiments of ``icrl-reproduce`` as one sweep: their points, with this invocation's overrides. Points shared
by several experiments (the same config and overrides) are one point, which ``icrl.sweep.run_sweep`` trains once.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from icrl.reproduce.experiments import Experiment, label, schedule
from icrl.sweep.grid import Point


def configs_dir() -> Path:
    """``configs/`` of the repository this package lives in (the package is installed editable)."""
    return Path(__file__).resolve().parents[2] / "configs"


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


def scoped(target: str, globs: Iterable[tuple[str, Sequence[str]]]) -> list[str]:
    """The arguments of every ``(glob, args)`` whose glob matches ``target``, in their order.

    >>> scoped("recall/fig1/a.yaml", [("recall/*", ["--x", "1"]), ("regression/*", ["--y", "2"]), ("*", ["--z"])])
    ['--x', '1', '--z']
    """
    return [a for glob, args in globs if fnmatch.fnmatch(target, glob) for a in args]


def plan(exps: list[Experiment], quick: bool = False, steps: int | None = None, configs: Path | None = None,
         fit_args: list[tuple[str, list[str]]] = ()) -> dict[tuple[str, str], Point]:
    """The sweep points of ``exps``, ``{(experiment, point label): point}``, with the arguments: the point's own, with
    ``quick`` the experiment's ``--quick`` overrides (globs over point names), with ``steps`` every run's max_steps
    (validated 10 times), then the ``fit_args`` ``(glob, args)`` whose glob matches its config (under ``configs``).
    """
    configs = configs or configs_dir()
    length = schedule(steps, max(1, steps // 10), max(1, steps // 50)) if steps is not None else ()
    points = {}
    for exp in exps:
        for p in exp.points:
            quick_args = scoped(p.name, exp.quick.items()) if quick else ()
            args = (*p.args, *quick_args, *length, *scoped(p.config, fit_args))
            points[exp.name, label(p)] = replace(p, config=str(configs / p.config), args=args)
    return points
