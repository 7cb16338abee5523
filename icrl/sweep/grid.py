"""A sweep: points (a base config and ``icrl fit`` overrides) × seeds, from a YAML file or from code.

The sweep YAML (paths relative to the file)::

    config: ../configs/recall/fig1/reparam-linear-fa.yaml   # the base config of every point
    set:                                  # dotted overrides shared by every point (optional)
      trainer.max_steps: 200
    grid:                                 # every combination is one point
      data.alpha: [0.2, 0.5, 0.8]
      model.init_args.optimizer.init_args.lr: [0.1, 0.5]
    seeds: [0, 1]                         # each point × seed is one icrl fit (default: [0])
    args: ["--trainer.callbacks+=icrl.recall.images.RecallImages"]   # raw icrl fit arguments, last (optional)
    metrics: [val/loss, val/ood_loss]     # the summary's columns (default: every val/ scalar)

>>> points = grid_points("base.yaml", {"data.alpha": [0.2, 0.5], "model.init_args.optimizer.init_args.lr": [0.1]})
>>> [p.name for p in points]
['alpha=0.2,lr=0.1', 'alpha=0.5,lr=0.1']
>>> points[1].args
('--data.alpha', '0.5', '--model.init_args.optimizer.init_args.lr', '0.1')
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

KEYS = {"config", "set", "grid", "seeds", "args", "metrics"}


@dataclass(frozen=True)
class Point:
    """One point of a sweep: ``icrl fit --config config *args``, trained once per seed. ``name`` (``alpha=0.5,lr=0.1``)
    names its run folders, as TensorBoard lists them; ``values``: the overrides as the summary's columns;
    ``model``, ``params``: its line and coordinates in ``icrl-reproduce``'s figures (α, η, N, heads, …)."""

    name: str
    config: str
    args: tuple[str, ...] = ()
    values: dict = field(default_factory=dict, hash=False, compare=False)
    model: str = field(default="", hash=False, compare=False)
    params: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class SweepFile:
    points: tuple[Point, ...]
    seeds: tuple[int, ...] = (0,)
    metrics: tuple[str, ...] = ()  # empty: every val/ scalar


def cli_value(value) -> str:
    """A YAML value as an ``icrl fit`` argument: ``0.5``, ``true``, ``null``, ``[1, 2]``.

    >>> [cli_value(v) for v in (0.5, True, None, "adam", [1, 2])]
    ['0.5', 'true', 'null', 'adam', '[1, 2]']
    """
    return value if isinstance(value, str) else json.dumps(value)


def overrides(values: dict) -> tuple[str, ...]:
    return tuple(a for key, value in values.items() for a in (f"--{key}", cli_value(value)))


def point_name(values: dict) -> str:
    """``key=value`` pairs by the keys' last parts (whole keys where two last parts collide)."""
    short = [key.rsplit(".", 1)[-1] for key in values]
    names = [s if short.count(s) == 1 else key for s, key in zip(short, values)]
    text = ",".join(f"{n}={cli_value(v)}" for n, v in zip(names, values.values()))
    return safe(text) or "base"


def safe(text: str) -> str:
    """A folder name: characters other than letters, digits and ``.,=+-_`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9.,=+_-]", "_", text)


def grid_points(config: str, grid: dict[str, list], shared: dict | None = None,
                args: tuple[str, ...] = ()) -> list[Point]:
    """Every combination of ``grid``'s values: the ``shared`` overrides, the point's, then the raw ``args``."""
    combos = (dict(zip(grid, combo)) for combo in itertools.product(*grid.values()))
    return [Point(point_name(v), config, (*overrides(shared or {}), *overrides(v), *args), v) for v in combos]


def load(path: str | Path) -> SweepFile:
    """Read a sweep YAML; ``ValueError`` naming the setting for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no sweep file at {path}")
    sweep = yaml.safe_load(path.read_text()) or {}
    if not isinstance(sweep, dict):
        raise ValueError(f"{path}: a sweep file is a mapping with keys {sorted(KEYS)}, got {type(sweep).__name__}")
    if unknown := set(sweep) - KEYS:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(KEYS)}")
    if "config" not in sweep:
        raise ValueError(f"{path}: 'config' (the base icrl fit config, relative to the sweep file) is required")
    config = (path.parent / sweep["config"]).resolve()
    if not config.is_file():
        raise ValueError(f"{path}: config: no file at {config}")
    for name in ("set", "grid"):
        if not isinstance(sweep.get(name) or {}, dict):
            raise ValueError(f"{path}: '{name}' must map dotted icrl fit settings to values, got {sweep[name]!r}")
    grid = sweep.get("grid") or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid.{key} must be a non-empty list of values, got {values!r}")
    seeds = sweep.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    args, metrics = (sweep.get(name) or [] for name in ("args", "metrics"))
    for name, value in (("args", args), ("metrics", metrics)):
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            raise ValueError(f"{path}: '{name}' must be a list of strings, got {value!r}")
    return SweepFile(tuple(grid_points(str(config), grid, sweep.get("set"), tuple(args))), tuple(seeds), tuple(metrics))
