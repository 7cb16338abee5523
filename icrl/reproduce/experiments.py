"""The experiments of ``icrl-reproduce`` as plain data (defined in ``icrl.reproduce.recall`` and ``.regression``):
sweep points, ``Figure``s of their logged scalars, end values to tabulate and ``Check``s, the papers' claims.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from icrl.sweep.grid import Point, point_name, safe
from icrl.sweep.tables import SLOPE_WINDOW

LOSS_FLOOR = 1e-7  # zero (or negative) losses and gaps are drawn at this value on log axes
PARAM_NAMES = {"alpha": "α", "eta": "η", "n_labelled": "N", "heads": "H", "context_length": "T", "n_samples": "n"}


def point(model: str, config: str, overrides: tuple[str, ...] = (), params: dict | None = None) -> Point:
    """One ``icrl fit`` of an experiment, named ``<config>/<its overrides>``: ``model`` names its line in plots and
    tables, ``params`` are its figure coordinates (α, η, N, heads, …) that select, label and place it on sweep axes.

    >>> p = point("Reparam-Linear-FA", "recall/fig1/reparam-linear-fa.yaml", ("--data.alpha", "0.5"), {"alpha": 0.5})
    >>> p.name, label(p), matches(p, {"alpha": 0.5})
    ('recall-fig1-reparam-linear-fa/alpha=0.5', 'Reparam-Linear-FA (α=0.5)', True)
    """
    own = {k.removeprefix("--"): v for k, v in zip(overrides[::2], overrides[1::2])}
    name = safe(config.removesuffix(".yaml").replace("/", "-")) + (f"/{point_name(own)}" if own else "")
    return Point(name, config, tuple(overrides), own, model, params or {})


def schedule(steps: int, val_every: int, log_every: int) -> tuple[str, ...]:
    """The ``icrl fit`` overrides of a run's length and its validation and logging cadence."""
    return ("--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(val_every),
            "--trainer.log_every_n_steps", str(log_every))


def params_text(params: dict) -> str:
    return ", ".join(f"{PARAM_NAMES.get(k, k)}={v}" for k, v in params.items())


def label(p: Point) -> str:
    """The point's row in tables: its model and parameters."""
    return f"{p.model} ({params_text(p.params)})" if p.params else p.model


def matches(p: Point, where: dict) -> bool:
    return all((p.model if k == "model" else p.params.get(k)) == v for k, v in where.items())


def reading_text(read) -> str:
    """Which value of a curve a ``Check`` or ``Ref`` reads, after its metric in tables (``""``: the end value)."""
    if read.at == "log_slope":
        return f" (log_slope over {read.window[0]:g} … {read.window[1]:g})"
    return "" if read.at == "end" else f" ({read.at})"


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
        run = f" of {params_text(self.where)}" if self.where else ""
        return f"{'' if self.scale == 1 else f'{self.scale:g} × '}`{self.metric}`{reading_text(self)}{run}"


@dataclass(frozen=True)
class Check:
    """A claim of the paper on one point's end value (mean over seeds) against a reference.

    ``where`` selects the point (``matches``); ``reference`` is a number (theory) or a ``Ref`` (a measured value).
    ``kind``: ``"near"`` (within ``tol`` + ``rtol`` × |reference|), ``"above"`` or ``"below"``. ``at``: the value
    checked, ``"end"`` (last logged), ``"first"``, ``"max"`` or ``"log_slope"`` (of ln value against step, where the
    value lies in ``window``: a linear rate).
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
        ref = self.reference if reference is None else reference  # every comparison with NaN is False: never holds
        if self.kind == "near":
            return abs(value - ref) <= self.tol + self.rtol * abs(ref)
        return value > ref if self.kind == "above" else value < ref

    def expected(self, ref: float) -> str:
        """The reference ``ref`` (``reference`` read from the points) as shown in the table, e.g. ``0.6931 ± 0.01``."""
        text = f"{ref:.4g}" if isinstance(self.reference, float | int) else f"{self.reference.describe()} = {ref:.4g}"
        if self.kind != "near":
            return f"{'>' if self.kind == 'above' else '<'} {text}"
        tol = " ± ".join(filter(None, [f"{self.tol:g}" if self.tol else "", f"{self.rtol:.0%}" if self.rtol else ""]))
        return f"{text} ± {tol}" if tol else text


@dataclass(frozen=True)
class Panel:
    """A panel: ``metric`` of the points ``where`` selects, one line per ``legend`` (or, for a tuple of
    ``(metric, label)``, one line per metric), losses on a log axis, a ``theory`` curve over x dashed beside them."""

    metric: str | tuple[tuple[str, str], ...]
    title: str
    ylabel: str
    where: dict = field(default_factory=dict)
    legend: tuple[str, ...] = ("model",)  # point attributes that name a line
    log: bool = True
    theory: Callable[[float], float] | None = None
    theory_label: str = ""

    @property
    def metrics(self) -> tuple[tuple[str, str | None], ...]:
        return self.metric if isinstance(self.metric, tuple) else ((self.metric, None),)


@dataclass(frozen=True)
class Curves(Panel):
    """A panel over training: mean and min–max over seeds of each selected point."""

    refs: tuple[tuple[float, str], ...] = ()  # horizontal lines: (value, label)
    ref_metrics: tuple[tuple[str, str], ...] = ()  # horizontal lines at a metric's mean end value: (metric, label)
    x: str = "step"  # or "time": wall-clock seconds since the point's logger started; or "epoch" (below)
    epoch_steps: int = 0  # with x="epoch": steps per epoch; a value logged after step s is drawn at (s+1)/epoch_steps

    def __post_init__(self):
        if self.x not in ("step", "time", "epoch") or (self.x == "epoch") != (self.epoch_steps > 0):
            raise ValueError(f"Curves x={self.x!r}, epoch_steps={self.epoch_steps}: x must be 'step', 'time' or "
                             "'epoch', and epoch_steps > 0 exactly when x='epoch'")


@dataclass(frozen=True)
class Sweep(Panel):
    """A panel of end values against the point parameter ``x``; markers only beside a ``theory`` curve,
    which a straight segment between two points could cross."""

    x: str = field(kw_only=True)
    logx: bool = False
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
