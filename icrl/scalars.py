"""Every logged scalar in a plain CSV file, beside TensorBoard's event files, and read back.

``ScalarFile``, beside the TensorBoard logger of ``icrl fit`` / ``validate`` / ``test``, appends ``tag,step,value,time``
rows (Unix seconds) to ``<dir>/scalars.csv``, flushed at every call so a killed run keeps them. ``read_scalars`` reads
every such file under a directory as one series per tag (a resumed run's later value wins). Neither logger keeps
Lightning's ``epoch``, 0 on icrl's endless streams (modules log ``train/epoch`` where the data module has epochs).

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> log = ScalarFile(root)
>>> log.log_metrics({"val/loss": 0.5, "train/loss": 0.7, "epoch": 0}, step=9)
>>> log.log_metrics({"val/loss": 0.25}, step=19)
>>> scalars = read_scalars(root)
>>> sorted(scalars), scalars["val/loss"][:2], scalars["val/loss"][2][0]
(['train/loss', 'val/loss'], [[9, 19], [0.5, 0.25]], 0.0)
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from icrl.checkpoints import log_folder_of

FILE = "scalars.csv"
HIDDEN = "epoch"  # Lightning's count of passes over the training loader


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoard logger without its ``epoch`` scalar."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != HIDDEN}, step)


class ScalarFile(Logger):
    """Appends ``tag,step,value,time`` rows to ``<dir>/scalars.csv`` (rank 0 only)."""

    name = "scalars"  # Logger's abstract properties, as constants
    version = 0

    def __init__(self, dir: str | Path):
        super().__init__()
        self._dir = Path(dir)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        with open(self._dir / FILE, "a", newline="") as f:
            csv.writer(f).writerows([tag, step, float(value), now] for tag, value in metrics.items() if tag != HIDDEN)

    def log_hyperparams(self, params, *args, **kwargs) -> None:  # TensorBoard keeps those
        pass


def run_loggers(default_root_dir: str | Path | None, name: str, ckpt_path: str | None = None) -> list[Logger]:
    """A run's loggers: TensorBoard in ``<default_root_dir>/lightning_logs/<name>/version_N`` and the scalar file
    beside it; a run of a checkpoint logs into the checkpoint's folder, so a resumed run's curves stay in one place."""
    if folder := log_folder_of(ckpt_path):  # version_N as N, so the bar's v_num reads N
        version = int(folder.name[8:]) if re.fullmatch(r"version_\d+", folder.name) else folder.name
        tensorboard = TensorBoard(folder.parent, "", version, default_hp_metric=False)
    else:
        tensorboard = TensorBoard(Path(default_root_dir or ".") / "lightning_logs", name, default_hp_metric=False)
    return [tensorboard, ScalarFile(tensorboard.log_dir)]


def read_scalars(root: str | Path) -> dict[str, list[list[float]]]:
    """``{tag: [steps, values, seconds]}`` of the ``scalars.csv`` files under ``root``; seconds from the first row.
    ``ValueError`` naming the file and row for a malformed row (a file damaged by hand or a full disk)."""
    rows = []
    for path in sorted(Path(root).rglob(FILE)):
        with open(path, newline="") as f:
            reader = csv.reader(f)
            try:
                rows += [(float(t), tag, int(step), float(value)) for tag, step, value, t in reader]
            except (ValueError, csv.Error) as err:
                raise ValueError(f"{path} is damaged (a malformed row, line {reader.line_num}: {err})") from None
    rows.sort()  # by time: a resumed run's rows after the earlier ones, so its values win
    start = rows[0][0] if rows else 0.0
    series: dict[str, dict[int, tuple[float, float]]] = {}
    for t, tag, step, value in rows:
        series.setdefault(tag, {})[step] = (value, t - start)
    return {tag: [sorted(points), *map(list, zip(*(points[s] for s in sorted(points))))]
            for tag, points in series.items()}
