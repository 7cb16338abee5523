"""Shared helpers of the benchmarks: command line, threads, the machine's description, a training
step, interleaved timing and the ratios of two implementations' times.

Timings on a shared machine are noisy, so implementations are compared in one process, timed in
interleaved rounds (each round runs every implementation once, so a burst of load hits all of
them), and summarised by the minimum (the least disturbed run, as ``timeit`` recommends) and the
median over rounds. Each call's process CPU time is kept too: on one thread it is the work done,
without the time spent waiting for a core that other processes hold (a long call is preempted
more often than a short one, which would flatter the ratio of the two).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def parser(doc: str, threads: int | list[int]) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first paragraph, ``--json`` and ``--threads``.

    ``--threads`` takes one count, or several (run in turn) where the default ``threads`` is a list.
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--threads", type=int, nargs="+" if isinstance(threads, list) else None, default=threads,
                   help=f"torch threads to run at (default {threads})")
    return p


def set_threads(n: int) -> None:
    """Intra-op threads of torch (and of the BLAS it calls)."""
    torch.set_num_threads(n)


def machine(device: str = "cpu") -> dict:
    """The machine, in words and numbers, for the tables."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "device": device, "load_average_1min": round(os.getloadavg()[0], 2)}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def machine_end(start: dict, device: str = "cpu") -> dict:
    """``start`` (``machine()`` before the runs) with the load average after them."""
    return {**start, "load_average_1min_end": machine(device)["load_average_1min"]}


def machine_line(m: dict, extra: str = "") -> str:
    """A table's first line: CPU, torch (then ``extra``) and the load average before → after."""
    return (f"{m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}{extra}; "
            f"load {m['load_average_1min']} → {m['load_average_1min_end']}")


def train_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """``zero_grad``, ``backward`` of ``loss``, ``step``."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict[str, tuple[Callable[[], object], int]], rounds: int, device: str = "cpu",
                warmup: int = 2) -> dict[str, list[tuple[float, float]]]:
    """Seconds per call of each ``fn``; each round calls every ``fn`` ``calls`` times, one after the other.

    ``fns`` maps a name to ``(fn, calls per round)``; returns every call's ``(wall, cpu)`` seconds, per name.
    """
    for fn, _ in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, calls) in fns.items():
            for _ in range(calls):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                sync(device)
                times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def summary(times: list[tuple[float, float]]) -> dict:
    """``min_ms``, ``median_ms`` (wall clock) and ``cpu_min_ms`` of a list of ``(wall, cpu)`` seconds."""
    wall = [w for w, _ in times]
    return {"min_ms": 1e3 * min(wall), "median_ms": 1e3 * statistics.median(wall),
            "cpu_min_ms": 1e3 * min(c for _, c in times)}


def ratios(fast: dict, slow: dict, name: str) -> dict:
    """Min and median ms of the package's step (``fast``, a ``summary``) and of the reference ``name``'s
    (``slow``), and the ratios slow / fast: of the minima, the medians and the minimal CPU times."""
    return {"step_ms": fast["min_ms"], "step_ms_median": fast["median_ms"],
            f"{name}_ms": slow["min_ms"], f"{name}_ms_median": slow["median_ms"],
            "ratio": slow["min_ms"] / fast["min_ms"], "ratio_median": slow["median_ms"] / fast["median_ms"],
            "ratio_cpu": slow["cpu_min_ms"] / fast["cpu_min_ms"]}
