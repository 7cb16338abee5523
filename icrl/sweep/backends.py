"""Where a sweep's jobs train: ``local`` (a pool of warm worker processes on this machine) or ``ray``.

Both call ``icrl.sweep.job.train_job`` once per job and differ only in who decides where and when.
``local``: ``jobs`` slots; a run takes as many slots as it starts processes (at most all of them),
so a 2-process DDP run waits for two free slots. ``ray``: each run a Ray task asking for
``processes × threads`` CPUs and its GPUs; Ray places it on a node with those free, on a local Ray
instance of ``jobs × threads`` CPUs when no ``address`` is given.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import wait

import torch

from icrl.checkpoints import EXIT_CODES
from icrl.sweep.job import train_job

BACKENDS = ("local", "ray")


class Stopped(Exception):
    """The sweep was stopped by ``signum``; ``results``: the runs that ended (the stopped ones included)."""

    def __init__(self, signum: int, results: list[dict]):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.results = signum, results


class Stop:
    """SIGINT / SIGTERM to the sweep: no run starts after the first, and the runs in flight get it once
    (``forward``) and stop as ``icrl fit`` does, with a checkpoint; a second one aborts them (``SIGKILL``).
    The worker processes have process groups of their own, so a terminal's Ctrl-C reaches the sweep alone.
    """

    def __init__(self):
        self.signum: int | None = None
        self.forward = lambda signum: None
        self._previous: dict = {}

    def install(self) -> None:  # again after ray.init, which sets handlers of its own
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._record) for s in EXIT_CODES} | self._previous

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _record(self, signum: int, frame) -> None:
        self.forward(signum if self.signum is None else signal.SIGKILL)
        self.signum = self.signum or signum


class Progress:
    """One line for the sweep: done / running / failed (/ stopped), and the time left (from the runs done so far)."""

    def __init__(self, total: int, slots: int, show: bool = True, stream=sys.stderr):
        self.total, self.slots, self.show, self.stream = total, slots, show, stream
        self.done = self.failed = self.stopped = self.running = 0
        self.walls: list[float] = []
        self.tty = show and stream.isatty()

    def line(self) -> str:
        left = ""
        if self.walls:
            remaining = self.total - self.done - self.failed
            seconds = sum(self.walls) / len(self.walls) * remaining / max(1, min(self.slots, remaining))
            left = f", ~{seconds:.0f} s left"
        return (f"icrl sweep: {self.done}/{self.total} done, {self.running} running, {self.failed} failed"
                f"{f', {self.stopped} stopped' * bool(self.stopped)}{left}")

    def update(self, running: int, result: dict | None = None, stopping: bool = False) -> None:
        """``running`` runs in flight; ``result``: a run that ended (while ``stopping``: a failure is a stop)."""
        self.running = running
        if result is not None:
            self.walls.append(result["wall_s"])
            if result["exit_code"] == 0:
                self.done += 1
            elif stopping:
                self.stopped += 1
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


def train_here(todo: list[dict], threads: int, progress: Progress, stop: Stop) -> list[dict]:
    before, results = torch.get_num_threads(), []
    torch.set_num_threads(threads)
    try:
        for job in todo:
            if stop.signum is not None:
                break
            progress.update(1)
            results.append(_train(job, stop))
            progress.update(0, results[-1], stop.signum is not None)
    finally:
        torch.set_num_threads(before)
    return results


class Worker:
    """A warm worker process (spawned: a fresh interpreter, no forked torch thread pools) training one job at a time."""

    def __init__(self, ctx, threads: int):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, threads))
        self.process.start()
        child.close()  # the worker's end: when it dies, ``conn`` reads end-of-file

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)  # its group: the worker, and a run's subprocesses
        except ProcessLookupError:
            pass

    def close(self) -> None:
        self.conn.close()  # an idle worker returns; a busy one is killed
        self.process.join(1)
        if self.process.exitcode is None:
            self.signal(signal.SIGKILL)


def train_local(todo: list[dict], jobs: int, threads: int, progress: Progress, stop: Stop) -> list[dict]:
    """Train ``todo`` on ``jobs`` slots of warm worker processes. A worker that dies (out of memory, killed)
    fails its run alone; the next run gets a new worker."""
    ctx = multiprocessing.get_context("spawn")
    results, waiting, used, idle, busy = [], list(todo), 0, [], {}
    stop.forward = lambda signum: [worker.signal(signum) for worker, _, _ in list(busy.values())]
    try:
        while busy or waiting and stop.signum is None:
            while waiting and stop.signum is None and used + (need := min(waiting[0]["processes"], jobs)) <= jobs:
                worker = idle.pop() if idle else Worker(ctx, threads)
                worker.conn.send(waiting[0])
                busy[worker.conn] = (worker, waiting.pop(0), need)
                used += need
            progress.update(len(busy))
            for conn in wait(list(busy)):
                worker, job, need = busy.pop(conn)
                used -= need
                try:
                    result = conn.recv()
                    idle.append(worker)
                except (EOFError, OSError):
                    worker.close()
                    result = _failed(job, -1, f"worker died (exit code {worker.process.exitcode})")
                results.append(result)
                progress.update(len(busy), result, stop.signum is not None)
    finally:
        for worker in [*idle, *(w for w, _, _ in busy.values())]:
            worker.close()
    return results


def _serve(conn, threads: int) -> None:
    """A worker: trains the jobs it receives until the sweep closes the pipe; dies with the sweep."""
    os.setpgrp()
    torch.set_num_threads(threads)
    stop = Stop()  # the sweep knows the signal: it forwarded it
    for s in EXIT_CODES:
        signal.signal(s, lambda signum, frame: None)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        conn.send(_train(job, stop))


def _exit_with_parent(parent: int) -> None:
    """A worker of a killed sweep stops too, with its run's subprocesses (it resumes from ``last.ckpt`` on a rerun)."""
    while os.getppid() == parent:
        time.sleep(1)
    os.killpg(0, signal.SIGKILL)


def _train(job: dict, stop: Stop) -> dict:
    """``train_job``, SIGINT and SIGTERM stopping it. In training, the fit's own handler stops it at a step boundary
    with a checkpoint (``icrl.checkpoints.StopCleanly``); before (nothing to keep) or after that, they abort an
    in-process fit. A subprocess gets them itself, from its process group."""
    def abort(signum: int, frame) -> None:
        stop.signum = stop.signum or signum
        if not job["subprocess"]:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, abort) for s in EXIT_CODES} if threading.current_thread() is \
        threading.main_thread() else {}
    try:
        return train_job(job)
    except KeyboardInterrupt:
        return _failed(job, EXIT_CODES.get(stop.signum, 130), "stopped before its first step: nothing kept")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def train_ray(todo: list[dict], jobs: int, threads: int, progress: Progress, stop: Stop,
              address: str | None = None) -> list[dict]:
    """Train ``todo`` as Ray tasks, at most ``jobs`` at a time, on the cluster at ``address`` or on a local Ray
    instance."""
    try:
        import ray  # optional: pip install -e ".[ray]"
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
    started = not ray.is_initialized()
    # a local instance's notice, on every sweep: "Token authentication is enabled for this Ray cluster. Set ..."
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: "Token authentication is enabled for this" not in record.getMessage())
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=jobs * threads, include_dashboard=False, log_to_driver=False)
        stop.install()
    try:
        cpus = ray.cluster_resources().get("CPU", 1)
        task = ray.remote(_ray_train)
        results, waiting, running = [], list(todo), {}
        stop.forward = lambda signum: [ray.cancel(ref, force=signum == signal.SIGKILL) for ref in list(running)]
        while running or waiting and stop.signum is None:
            while waiting and stop.signum is None and len(running) < jobs:
                job = waiting.pop(0)  # a run never asks for more CPUs than the cluster has: it would wait forever
                running[task.options(num_cpus=min(job["processes"] * threads, cpus), num_gpus=job["gpus"]).remote(job)] = job
            progress.update(len(running))
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                job = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - a dead worker, a cancelled task
                    result = _failed(job, -1, f"worker died: {err}")
                results.append(result)
                progress.update(len(running), result, stop.signum is not None)
        return results
    finally:
        if started:
            ray.shutdown()


def _ray_train(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    return _train(job, Stop())  # ray.cancel: a SIGINT for the task's fit (a Ray task runs in the main thread)


def _failed(job: dict, code: int, error: str) -> dict:
    """The result of a run that ended without one (its worker died, or it stopped before its first step)."""
    return {**job, "scalars": {}, "wall_s": 0.0, "exit_code": code, "error": error, "log": f"{job['dir']}/log.txt"}


def execute(todo: list[dict], backend: str = "local", jobs: int = 1, threads: int = 1, progress: Progress | None = None,
            address: str | None = None) -> list[dict]:
    """Train ``todo`` on ``backend``; the results in the order the runs ended. ``Stopped`` after SIGINT / SIGTERM,
    when the runs in flight have stopped."""
    progress = progress or Progress(len(todo), jobs, show=False)
    start, stop = time.perf_counter(), Stop()
    stop.install()
    try:
        if backend == "ray":
            results = train_ray(todo, jobs, threads, progress, stop, address)
        elif jobs == 1 and not any(job["subprocess"] for job in todo):  # in this process: no worker to start
            results = train_here(todo, threads, progress, stop)
        else:
            results = train_local(todo, jobs, threads, progress, stop)
    finally:
        stop.restore()
        progress.close()
    if stop.signum is not None:
        raise Stopped(stop.signum, results)
    progress.note(f"icrl sweep: trained {len(todo)} runs in {time.perf_counter() - start:.0f} s "
                  f"({backend}, {jobs} slot{'s' * (jobs > 1)})")
    return results
