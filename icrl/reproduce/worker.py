"""One ``icrl fit`` of ``icrl-reproduce``, run in this process or in a worker process.

``fit_one`` calls ``icrl.cli.cli_main(["fit", ...])``, the code path of ``icrl fit``, with the run's
logs under its own directory and its console output in ``log.txt`` there; it then reads every
logged scalar back from the TensorBoard event files into ``scalars.json``. ``ReportProgress``,
added with ``--trainer.callbacks+=``, sends the fraction done to ``SINK`` (the runner's progress
bar, through a queue when in a worker process).

``python -m icrl.reproduce.worker JOB.json`` runs one job file by hand (what ``fit_one`` takes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import Timer

SINK: Callable[[str, float], None] | None = None  # (job id, fraction done) -> None
JOB_ID = ""


class ReportProgress(Callback):
    """Reports the fraction of ``max_steps`` (or of ``max_time``) done, at most ~100 times a run."""

    def __init__(self):
        self.last = -1.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = trainer.global_step / trainer.max_steps if trainer.max_steps > 0 else 0.0
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer._duration:
            done = max(done, timer.time_elapsed("train") / timer._duration)
        if SINK is not None and (done - self.last >= 0.01 or done >= 1.0):
            self.last = done
            SINK(JOB_ID, min(done, 1.0))


def read_scalars(root: str | Path) -> dict[str, list[list[float]]]:
    """Every scalar under ``root``'s TensorBoard event files: ``{tag: [steps, values, seconds]}``.

    ``seconds``: wall-clock time since the event file was opened (the logger's creation).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, tuple[float, float]]] = {}
    for events in sorted(Path(root).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        start = acc.FirstEventTimestamp()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, {}).update({e.step: (e.value, e.wall_time - start) for e in acc.Scalars(tag)})
    return {tag: [sorted(points), *map(list, zip(*(points[s] for s in sorted(points))))]
            for tag, points in series.items()}


def cli_args(job: dict) -> list[str]:
    """The ``icrl fit`` arguments of a job: its config and overrides, its seed, its own log directory."""
    seed = str(job["seed"])
    return ["fit", "--config", job["config"], "--trainer.default_root_dir", job["dir"], "--seed_everything", seed,
            "--data.init_args.seed", seed, *job["overrides"],
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.callbacks+=icrl.reproduce.worker.ReportProgress"]


def fit_one(job: dict) -> dict:
    """Train one job (``config``, ``overrides``, ``seed``, ``dir``, ``id``); return and save its scalars.

    Never raises: a failed run (a bad setting, a diverging loss) comes back with ``error`` set and
    whatever it logged before failing.
    """
    from icrl.cli import cli_main

    global JOB_ID
    JOB_ID = job["id"]
    run_dir = Path(job["dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.rglob("events.out.tfevents.*"):  # a rerun must not mix with an earlier one's logs
        old.unlink()
    quiet = logging.getLogger("lightning.pytorch"), logging.getLogger("lightning.fabric")
    levels = [q.level for q in quiet]
    error, start = None, time.perf_counter()
    with open(run_dir / "log.txt", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        for q in quiet:
            q.setLevel(logging.WARNING)
        try:
            cli_main(cli_args(job))
        except (Exception, SystemExit) as err:  # SystemExit: the CLI's config errors (exit 2)
            traceback.print_exc()
            error = f"{type(err).__name__}: {err}"
        finally:
            for q, level in zip(quiet, levels):
                q.setLevel(level)
    result = {**job, "scalars": read_scalars(run_dir), "wall_s": time.perf_counter() - start, "error": error}
    (run_dir / "scalars.json").write_text(json.dumps(result))
    return result


def init_worker(queue, threads: int = 1) -> None:
    """Initializer of a worker process: ``threads`` torch threads, progress through ``queue``."""
    import torch

    global SINK
    torch.set_num_threads(threads)
    SINK = lambda job_id, done: queue.put((job_id, done))  # noqa: E731


if __name__ == "__main__":
    result = fit_one(json.loads(Path(sys.argv[1]).read_text()))
    print(result["error"] or f"done in {result['wall_s']:.1f} s: {result['dir']}")
