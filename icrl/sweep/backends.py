"""Where a sweep's jobs train: ``local`` (a pool of warm worker processes on this machine) or ``ray``.

Both run ``icrl.sweep.job.train_job`` once per job through one loop (``_pool``). ``local``: ``jobs`` slots, a
run taking as many as it starts processes (at most all), so a 2-process DDP run waits for two free slots.
``ray``: at most ``jobs`` Ray tasks, each asking for ``processes × threads`` CPUs and its GPUs.
"""

from __future__ import annotations

import contextlib
import functools
import gc
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
from icrl.sweep.job import members_of, train_job

BACKENDS = ("local", "ray")


class Stopped(Exception):
    """The sweep was stopped by ``signum``; ``results``: the runs that ended (the stopped ones included)."""

    def __init__(self, signum: int, results: list[dict]):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.results = signum, results


class Stop:
    """SIGINT / SIGTERM to the sweep: no run starts after the first, and the runs in flight get it once (``forward``)
    and stop as ``icrl fit`` does, with a checkpoint; a second aborts them (``SIGKILL``). Workers have process groups
    of their own, so a terminal's Ctrl-C reaches the sweep alone."""

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
        self.done = self.failed = self.stopped = 0
        self.walls: list[float] = []
        self.tty = show and stream.isatty()

    def update(self, running: int, result: dict | None = None, stopping: bool = False) -> None:
        """``running`` runs in flight; ``result``: a run that ended (while ``stopping``: a failure is a stop)."""
        runs = members_of(result) if result is not None else []  # an ensemble's runs, one by one
        for run in runs:
            self.walls.append(result["wall_s"] / len(runs))
            if run["exit_code"] == 0:
                self.done += 1
            elif stopping:
                self.stopped += 1
            else:
                self.failed += 1
                why = f" ({run['error']})" if run["exit_code"] < 0 else ""  # its worker died: the log cannot say
                self.note(f"  FAILED {run['dir']}: exit code {run['exit_code']}{why}, see {run['log']}")
        line = f"icrl sweep: {self.done}/{self.total} done, {running} running, {self.failed} failed"
        line += f", {self.stopped} stopped" * bool(self.stopped)
        if self.walls:
            remaining = self.total - self.done - self.failed
            seconds = sum(self.walls) / len(self.walls) * remaining / max(1, min(self.slots, remaining))
            line += f", ~{seconds:.0f} s left"
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
        elif self.show and result is not None:  # a log file: one line per run ended
            self.stream.write(line + "\n")

    def note(self, text: str) -> None:
        if self.show:
            self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")


def _pool(todo: list[dict], jobs: int, progress: Progress, stop: Stop, submit, ended, collect, forward,
          slots=lambda job: 1) -> list[dict]:
    """Start runs in order while their ``slots`` fit in ``jobs`` and no stop came (``submit``: a run's handle), and
    ``collect`` the result of each that ``ended``; ``forward``: a stop's signal to a run in flight."""
    results, waiting, running = [], list(todo), {}  # running: handle -> job
    stop.forward = lambda signum: [forward(handle, signum) for handle in list(running)]
    while running or waiting and stop.signum is None:
        while waiting and stop.signum is None and sum(map(slots, running.values())) + slots(waiting[0]) <= jobs:
            job = waiting.pop(0)
            running[submit(job)] = job
        progress.update(len(running))
        for handle in ended(list(running)):
            results.append(collect(handle, running.pop(handle)))
            progress.update(len(running), results[-1], stop.signum is not None)
    return results


class Worker:
    """A warm worker process (spawned: a fresh interpreter, no forked torch thread pools) training one job at a time."""

    def __init__(self, ctx, threads: int):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, threads))
        self.process.start()
        child.close()  # the worker's end: when it dies, ``conn`` reads end-of-file

    def fileno(self) -> int:  # ``wait`` on workers: ready with a result, or dead
        return self.conn.fileno()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)  # its group: the worker, and a run's subprocesses

    def close(self) -> None:
        self.conn.close()  # an idle worker returns; a busy one is killed
        self.process.join(1)
        if self.process.exitcode is None:
            self.signal(signal.SIGKILL)


def train_local(todo: list[dict], jobs: int, threads: int, progress: Progress, stop: Stop) -> list[dict]:
    """Train ``todo`` on ``jobs`` slots of warm worker processes. A worker that dies (out of memory, killed)
    fails its run alone; the next run gets a new worker."""
    ctx = multiprocessing.get_context("spawn")
    idle, started = [], set()

    def submit(job: dict) -> Worker:
        worker = idle.pop() if idle else Worker(ctx, threads)
        started.add(worker)
        worker.conn.send(job)
        return worker

    def collect(worker: Worker, job: dict) -> dict:
        try:
            result = worker.conn.recv()
        except (EOFError, OSError):
            worker.close()
            return _failed(job, -1, f"worker died (exit code {worker.process.exitcode})")
        idle.append(worker)
        return result

    try:
        return _pool(todo, jobs, progress, stop, submit, wait, collect, Worker.signal,
                     lambda job: min(job["processes"], jobs))
    finally:
        for worker in started:
            worker.close()


def _serve(conn, threads: int) -> None:
    """A worker: trains the jobs it receives until the sweep closes the pipe; dies with the sweep."""
    os.setpgrp()
    gc.freeze()  # what its imports made lives as long as it does: no collection walks it again (icrl/__main__.py)
    torch.set_num_threads(threads)
    for s in EXIT_CODES:  # the sweep knows the signal: it forwarded it
        signal.signal(s, lambda signum, frame: None)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    with contextlib.suppress(EOFError):  # the sweep closed the pipe
        while True:
            conn.send(_train(conn.recv(), Stop()))


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
        result = train_job(job)
    except KeyboardInterrupt:
        return _failed(job, EXIT_CODES.get(stop.signum, 130), "stopped before its first step: nothing kept")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    # a fit in this process took the signal with its own handler (StopCleanly): the sweep stops too
    stop.signum = stop.signum or next((s for s, code in EXIT_CODES.items() if code == result["exit_code"]), None)
    return result


def train_ray(todo: list[dict], jobs: int, threads: int, progress: Progress, stop: Stop,
              address: str | None = None) -> list[dict]:
    """Train ``todo`` as Ray tasks on the cluster at ``address`` or on a local Ray instance."""
    try:
        import ray  # optional: pip install -e ".[ray]"
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
    started = not ray.is_initialized()
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_no_token_notice)
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=jobs * threads, include_dashboard=False, log_to_driver=False)
        stop.install()
    try:
        cpus = ray.cluster_resources().get("CPU", 1)
        task = ray.remote(max_retries=0)(_ray_train)  # a run whose worker died fails alone, as on local

        def submit(job: dict):  # a run never asks for more CPUs than the cluster has: it would wait forever
            return task.options(num_cpus=min(job["processes"] * threads, cpus), num_gpus=job["gpus"]).remote(job)

        def collect(ref, job: dict) -> dict:
            try:
                return ray.get(ref)
            except Exception as err:  # noqa: BLE001 - a dead worker, a cancelled task
                return _failed(job, -1, f"worker died: {err}")

        return _pool(todo, jobs, progress, stop, submit, lambda refs: ray.wait(refs, num_returns=1)[0], collect,
                     lambda ref, signum: ray.cancel(ref, force=signum == signal.SIGKILL))
    finally:
        if started:
            ray.shutdown()


def _no_token_notice(record: logging.LogRecord) -> bool:
    """Drops a local Ray instance's notice on every sweep, "Token authentication is enabled for this Ray cluster"
    (one function, so that ``addFilter`` adds it once however many sweeps a process runs)."""
    return "Token authentication is enabled for this" not in record.getMessage()


def _ray_train(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    _exit_with_raylet()
    return _train(job, Stop())  # ray.cancel: a SIGINT for the task's fit (a Ray task runs in the main thread)


@functools.cache  # once per Ray worker, which trains one task after another
def _exit_with_raylet() -> None:
    """A Ray worker (its own process group) dies within a second of its raylet, with a run's subprocesses: a
    killed sweep takes its local Ray instance along (Ray's workers would take seconds, without the subprocesses)."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _failed(job: dict, code: int, error: str) -> dict:  # a worker died, or a run stopped before its first step
    return {**job, "scalars": {}, "wall_s": 0.0, "exit_code": code, "error": error, "log": f"{job['dir']}/log.txt"}


def execute(todo: list[dict], backend: str, jobs: int, threads: int, progress: Progress,
            address: str | None = None) -> list[dict]:
    """Train ``todo`` on ``backend``; the results in the order the runs ended. ``Stopped`` after SIGINT / SIGTERM,
    when the runs in flight have stopped."""
    before, start, stop = torch.get_num_threads(), time.perf_counter(), Stop()
    torch.set_num_threads(threads)  # for the runs trained in this process
    stop.install()
    try:
        if backend == "ray":
            results = train_ray(todo, jobs, threads, progress, stop, address)
        elif jobs == 1 and not any(job["subprocess"] for job in todo):  # in this process: no worker to start
            results = _pool(todo, 1, progress, stop, id, list, lambda handle, job: _train(job, stop),
                            lambda handle, signum: None)
        else:
            results = train_local(todo, jobs, threads, progress, stop)
    finally:
        stop.restore()
        torch.set_num_threads(before)
        if progress.tty:
            progress.stream.write("\n")
    if stop.signum is not None:
        raise Stopped(stop.signum, results)
    progress.note(f"icrl sweep: trained {len(todo)} runs in {time.perf_counter() - start:.0f} s "
                  f"({backend}, {jobs} slot{'s' * (jobs > 1)})")
    return results
