"""Where a sweep's jobs train: ``local`` (a pool of warm worker processes on this machine) or ``ray``.

Both call ``icrl.sweep.job.train_job`` once per job and differ only in who decides where and when.
``local``: ``jobs`` slots; a run takes as many slots as it starts processes (at most all of them),
so a 2-process DDP run waits for two free slots. ``ray``: each run a Ray task asking for
``processes × threads`` CPUs and its GPUs; Ray places it on a node with those free, on a local Ray
instance of ``jobs × threads`` CPUs when no ``address`` is given.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import torch

from icrl.sweep.job import train_job

BACKENDS = ("local", "ray")


class Progress:
    """One line for the sweep: done / running / failed, and the time left (from the runs done so far)."""

    def __init__(self, total: int, slots: int, show: bool = True, stream=sys.stderr):
        self.total, self.slots, self.show, self.stream = total, slots, show, stream
        self.done = self.failed = self.running = 0
        self.walls: list[float] = []
        self.tty = show and stream.isatty()

    def line(self) -> str:
        left = ""
        if self.walls:
            remaining = self.total - self.done - self.failed
            seconds = sum(self.walls) / len(self.walls) * remaining / max(1, min(self.slots, remaining))
            left = f", ~{seconds:.0f} s left"
        return (f"icrl sweep: {self.done}/{self.total} done, {self.running} running, {self.failed} failed"
                f"{left}")

    def update(self, running: int, result: dict | None = None) -> None:
        self.running = running
        if result is not None:
            self.walls.append(result["wall_s"])
            if result["exit_code"] == 0:
                self.done += 1
            else:
                self.failed += 1
                self.note(f"  FAILED {result['dir']}: exit code {result['exit_code']}, see {result['log']}")
        if self.tty:
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()
        elif self.show and result is not None:  # a log file: one line per run ended
            self.stream.write(self.line() + "\n")

    def note(self, text: str) -> None:
        if self.show:
            self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def train_local(todo: list[dict], jobs: int, threads: int, progress: Progress) -> list[dict]:
    """Train ``todo`` in ``jobs`` spawned worker processes (warm: each imports torch once)."""
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    results, waiting, used = [], list(todo), 0
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        running = {}
        while waiting or running:
            while waiting and used + (need := min(waiting[0]["processes"], jobs)) <= jobs:
                job = waiting.pop(0)
                running[pool.submit(train_job, job)] = (job, need)
                used += need
            progress.update(len(running))
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job, need = running.pop(future)
                used -= need
                result = _result(future.result, job)
                results.append(result)
                progress.update(len(running), result)
    return results


def train_here(todo: list[dict], threads: int, progress: Progress) -> list[dict]:
    before, results = torch.get_num_threads(), []
    torch.set_num_threads(threads)
    try:
        for job in todo:
            progress.update(1)
            results.append(train_job(job))
            progress.update(0, results[-1])
    finally:
        torch.set_num_threads(before)
    return results


def train_ray(todo: list[dict], jobs: int, threads: int, progress: Progress, address: str | None = None) -> list[dict]:
    """Train ``todo`` as Ray tasks, on the cluster at ``address`` or on a local Ray instance."""
    try:
        import ray  # optional: pip install -e ".[ray]"
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=jobs * threads, include_dashboard=False, log_to_driver=False)
    try:
        cpus = ray.cluster_resources().get("CPU", 1)
        task = ray.remote(_ray_train)
        running = {}
        for job in todo:  # a run never asks for more CPUs than the cluster has: it would wait forever
            ref = task.options(num_cpus=min(job["processes"] * threads, cpus), num_gpus=job["gpus"]).remote(job)
            running[ref] = job
        results = []
        progress.update(len(running))
        while running:
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                result = _result(lambda: ray.get(ref), running.pop(ref))
                results.append(result)
                progress.update(len(running), result)
        return results
    finally:
        if started:
            ray.shutdown()


def _ray_train(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    return train_job(job)


def _result(get: Callable[[], dict], job: dict) -> dict:
    """The job's result, or a failure when its worker died (out of memory, killed)."""
    try:
        return get()
    except Exception as err:  # noqa: BLE001
        return {**job, "scalars": {}, "wall_s": 0.0, "exit_code": -1, "error": f"worker died: {err}",
                "log": f"{job['dir']}/log.txt"}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker of a killed sweep stops too (its run resumes from ``last.ckpt`` when the sweep is rerun)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def execute(todo: list[dict], backend: str = "local", jobs: int = 1, threads: int = 1, progress: Progress | None = None,
            address: str | None = None) -> list[dict]:
    """Train ``todo`` on ``backend``; the results in the order the runs ended."""
    progress = progress or Progress(len(todo), jobs, show=False)
    start = time.perf_counter()
    try:
        if backend == "ray":
            results = train_ray(todo, jobs, threads, progress, address)
        elif jobs == 1:  # in this process: no worker to start
            results = train_here(todo, threads, progress)
        else:
            results = train_local(todo, jobs, threads, progress)
    finally:
        progress.close()
    progress.note(f"icrl sweep: trained {len(todo)} runs in {time.perf_counter() - start:.0f} s "
                  f"({backend}, {jobs} slot{'s' * (jobs > 1)})")
    return results
