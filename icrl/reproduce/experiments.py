"""The experiments of ``icrl-reproduce``: each paper figure as sweep points, figures and claims.

An ``Experiment`` is plain data: the points to train (``icrl.sweep.grid.Point``s made by ``point``:
a YAML under ``configs/``, the ``icrl fit`` overrides that make the figure's variant, the name of
its line and its coordinates), the ``Figure``s to draw from their logged scalars, the end values to
tabulate and the ``Check``s: the papers' claims (Bayes risk, docs/science.md §R.6's closed forms,
ridge gaps) as a reference value and a tolerance. ``--quick`` appends the experiment's ``quick``
overrides to the points whose name matches their glob. The experiments themselves are defined in
``icrl.reproduce.recall`` and ``icrl.reproduce.regression``; add one there and to their tuple.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from icrl.sweep.grid import Point, point_name, safe
from icrl.sweep.tables import SLOPE_WINDOW

LOSS_FLOOR = 1e-7  # zero (or negative) losses and gaps are drawn at this value on log axes
PARAM_NAMES = {"alpha": "α", "eta": "η", "n_labelled": "N", "heads": "H", "context_length": "T", "n_samples": "n"}


def point(model: str, config: str, overrides: tuple[str, ...] = (), params: dict | None = None) -> Point:
    """One ``icrl fit`` of an experiment (trained once per seed), named ``<config>/<its overrides>``.

    ``model`` names the line in plots and tables; ``params`` are the figure's coordinates (α, η,
    N, heads, …) used to select points, label them and place them on sweep axes.

    >>> p = point("Reparam-Linear-FA", "recall/fig1/reparam-linear-fa.yaml", ("--data.alpha", "0.5"), {"alpha": 0.5})
    >>> p.name, label(p), matches(p, {"alpha": 0.5})
    ('recall-fig1-reparam-linear-fa/alpha=0.5', 'Reparam-Linear-FA (α=0.5)', True)
    """
    own = {k.removeprefix("--"): v for k, v in zip(overrides[::2], overrides[1::2])}
    name = safe(config.removesuffix(".yaml").replace("/", "-")) + (f"/{point_name(own)}" if own else "")
    return Point(name, config, tuple(overrides), own, model, params or {})


def label(p: Point) -> str:
    """The point's row in tables: its model and parameters."""
    extra = ", ".join(f"{PARAM_NAMES.get(k, k)}={v}" for k, v in p.params.items())
    return f"{p.model} ({extra})" if extra else p.model


def matches(p: Point, where: dict) -> bool:
    return all((p.model if k == "model" else p.params.get(k)) == v for k, v in where.items())


def reading_text(read) -> str:
    """Which value of a curve a ``Check`` or ``Ref`` reads, as shown in tables: ``""`` for the end value,
    else e.g. ``"max"`` or ``"log_slope over 1e-05 … 0.1"``."""
    if read.at == "log_slope":
        return f"log_slope over {read.window[0]:g} … {read.window[1]:g}"
    return "" if read.at == "end" else read.at


@dataclass(frozen=True)
class Ref:
    """A reference read from the points: ``scale`` × the end value of ``metric`` (mean over seeds) of the
    point selected by ``where`` (``None``: the checked point itself); ``at`` as in ``Check``."""

    metric: str
    where: dict | None = None
    scale: float = 1.0
    at: str = "end"
    window: tuple[float, float] = SLOPE_WINDOW  # with at="log_slope": the values the slope is fitted over

    def describe(self) -> str:
        where = self.where or {}
        run = " of " + ", ".join(f"{PARAM_NAMES.get(k, k)}={v}" for k, v in where.items()) if where else ""
        at = f" ({reading_text(self)})" if reading_text(self) else ""
        return f"{'' if self.scale == 1 else f'{self.scale:g} × '}`{self.metric}`{at}{run}"


@dataclass(frozen=True)
class Check:
    """A claim of the paper on one point's end value (mean over seeds) against a reference.

    ``where`` selects the point (``matches``); ``reference`` is a number (theory) or a ``Ref`` (a
    measured value: the ridge loss, another point).
    ``kind``: ``"near"`` (within ``tol`` + ``rtol`` × |reference|), ``"above"`` or ``"below"``. ``at``: the value
    of the point's curve that is checked, ``"end"`` (last logged), ``"first"``, ``"max"`` (largest) or
    ``"log_slope"`` (the slope of its logarithm against step where it lies in ``window``: a linear rate).
    """

    where: dict
    metric: str
    reference: float | Ref
    claim: str  # the paper's statement, shown next to the reference
    kind: str = "near"
    tol: float = 0.0
    rtol: float = 0.0
    at: str = "end"
    window: tuple[float, float] = SLOPE_WINDOW

    def holds(self, value: float, reference: float | None = None) -> bool:
        ref = self.reference if reference is None else reference
        if math.isnan(value) or math.isnan(ref):
            return False
        if self.kind == "near":
            return abs(value - ref) <= self.tol + self.rtol * abs(ref)
        return value > ref if self.kind == "above" else value < ref

    def expected(self, reference: float | None = None) -> str:
        """The reference as shown in the table, e.g. ``0.6931 ± 0.01`` or ``> 1``."""
        ref = self.reference if reference is None else reference
        text = f"{ref:.4g}" if isinstance(self.reference, float | int) else f"{self.reference.describe()} = {ref:.4g}"
        if self.kind != "near":
            return f"{'>' if self.kind == 'above' else '<'} {text}"
        tol = " ± ".join(filter(None, [f"{self.tol:g}" if self.tol else "", f"{self.rtol:.0%}" if self.rtol else ""]))
        return f"{text} ± {tol}" if tol else text


@dataclass(frozen=True)
class Curves:
    """A panel: ``metric`` against training step, one line per selected point (mean, min–max over seeds).

    ``metric`` may also be a tuple of ``(metric, label)``: one line per metric (``where`` then selects one point).
    """

    metric: str | tuple[tuple[str, str], ...]
    title: str
    ylabel: str
    where: dict = field(default_factory=dict)
    legend: tuple[str, ...] = ("model",)  # point attributes that name a line
    log: bool = True
    refs: tuple[tuple[float, str], ...] = ()  # horizontal lines: (value, label)
    ref_metrics: tuple[tuple[str, str], ...] = ()  # horizontal lines at a metric's mean end value: (metric, label)
    x: str = "step"  # or "time": wall-clock seconds since the point's logger started; or "epoch" (below)
    epoch_steps: int = 0  # with x="epoch": steps per epoch; a value logged after step s is drawn at (s+1)/epoch_steps
    theory: Callable[[float], float] | None = None  # a theory curve over x, drawn dashed beside the points
    theory_label: str = ""

    def __post_init__(self):
        if self.x not in ("step", "time", "epoch") or (self.x == "epoch") != (self.epoch_steps > 0):
            raise ValueError(f"Curves x={self.x!r}, epoch_steps={self.epoch_steps}: x must be 'step', 'time' or "
                             "'epoch', and epoch_steps > 0 exactly when x='epoch'")


@dataclass(frozen=True)
class Sweep:
    """A panel: the end value of ``metric`` against the point parameter ``x``, one line per ``legend``.

    ``metric`` may also be a tuple of ``(metric, label)``: one line per metric, over all selected points.
    """

    metric: str | tuple[tuple[str, str], ...]
    x: str
    title: str
    ylabel: str
    where: dict = field(default_factory=dict)
    legend: tuple[str, ...] = ("model",)
    log: bool = True
    logx: bool = False
    theory: Callable[[float], float] | None = None
    theory_label: str = ""
    vlines: tuple[tuple[float, str], ...] = ()  # vertical reference lines: (x, label)


@dataclass(frozen=True)
class Figure:
    name: str  # PNG file stem
    panels: tuple
    title: str = ""


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    paper: str
    points: tuple[Point, ...]
    figures: tuple[Figure, ...]
    columns: tuple[tuple[str, str], ...]  # end-value table: (metric, header)
    checks: tuple[Check, ...] = ()
    quick: dict[str, tuple[str, ...]] = field(default_factory=dict)  # --quick: {glob over point names: overrides}
    quick_note: str = ""
    references: tuple[tuple[str, Callable[[Point], float]], ...] = ()  # theory columns: (header, value of a point)
    note: str = ""  # how to read the figures and checks, shown under the experiment's title
