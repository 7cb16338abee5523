"""Plan and execute the runs of ``icrl-reproduce``: one job per (run, seed), in process or in parallel.

A job is a plain dict (config, overrides, seed, log directory), so it travels to a worker process
and is saved beside its results. Runs shared by several experiments (the same config, overrides and
seed) are trained once. ``jobs > 1`` trains in that many worker processes of one thread each;
one progress bar counts the runs done, fractions of runs included.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import multiprocessing
import queue as queue_module
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch
from tqdm import tqdm

from icrl.reproduce import worker
from icrl.reproduce.experiments import Experiment, Run


def configs_dir() -> Path:
    """``configs/`` of the repository this package lives in (the package is installed editable)."""
    return Path(__file__).resolve().parents[2] / "configs"


def overrides(exp: Experiment, run: Run, quick: bool, steps: int | None) -> list[str]:
    args = [*run.overrides, *((*exp.quick, *exp.run_quick.get(run.model, ())) if quick else ())]
    if steps is not None:
        every = str(max(1, steps // 10))
        args += ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", every,
                 "--trainer.log_every_n_steps", str(max(1, steps // 50))]
    return args


def run_key(config: str, run: Run, args: list[str]) -> str:
    """A readable, unique directory name: config, the run's own overrides (``alpha0.5``), a hash of all."""
    stem = config.removesuffix(".yaml").replace("/", "-")
    pairs = zip(run.overrides[::2], run.overrides[1::2])
    shown = "_".join(re.sub(r"[^A-Za-z0-9.-]", "", f"{k.rsplit('.', 1)[-1]}{v}") for k, v in pairs)
    digest = hashlib.sha1(json.dumps([config, args]).encode()).hexdigest()[:8]
    return "_".join(filter(None, (stem, shown[:60], digest)))


def plan(exps: list[Experiment], seeds: list[int], runs_dir: Path, quick: bool = False, steps: int | None = None,
         configs: Path | None = None, fit_args: list[tuple[str, list[str]]] = ()) -> dict[tuple[str, str, int], dict]:
    """The jobs of ``exps``: ``{(experiment, run label, seed): job}``; equal jobs are the same dict.

    ``fit_args``: ``(glob, args)`` pairs; ``args`` are appended to the runs whose config (relative
    to the configs directory) matches ``glob``.
    """
    configs = configs or configs_dir()
    jobs, by_id = {}, {}
    for exp in exps:
        for run in exp.runs:
            args = overrides(exp, run, quick, steps)
            args += [a for pattern, extra in fit_args if fnmatch.fnmatch(run.config, pattern) for a in extra]
            key = run_key(run.config, run, args)
            for seed in seeds:
                job_id = f"{key}/seed{seed}"
                job = by_id.setdefault(job_id, {
                    "id": job_id, "config": str(configs / run.config), "overrides": args, "seed": seed,
                    "dir": str(runs_dir / key / f"seed{seed}"), "label": f"{run.label} seed {seed}"})
                jobs[exp.name, run.label, seed] = job
    return jobs


def cached(job: dict) -> dict | None:
    """The saved result of an identical, successful earlier job, if any."""
    path = Path(job["dir"]) / "scalars.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    same = all(saved.get(k) == job[k] for k in ("config", "overrides", "seed"))
    if not same or saved.get("error"):
        return None
    return {**saved, **job, "scalars": worker.read_scalars(job["dir"]), "reused": True}


def execute(jobs: list[dict], n_jobs: int = 1, reuse: bool = False, progress: bool = True,
            threads: int = 1) -> dict[str, dict]:
    """Train every job (each id once), each with ``threads`` torch threads; return ``{job id: result}``."""
    unique = list({j["id"]: j for j in jobs}.values())
    results = {}
    if reuse:
        results = {j["id"]: r for j in unique if (r := cached(j)) is not None}
    todo = [j for j in unique if j["id"] not in results]
    if not todo:
        return results
    bar = tqdm(total=len(todo), unit="run", disable=not progress, dynamic_ncols=True, file=sys.stderr,
               bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}] {postfix}")
    bar.set_description("icrl-reproduce")
    done: dict[str, float] = {}

    def report(job_id: str, fraction: float) -> None:
        if fraction > done.get(job_id, 0.0):  # late queue messages never move the bar back
            done[job_id] = fraction
            bar.n = min(sum(done.values()), bar.total)
            bar.refresh()

    def finish(result: dict) -> None:
        results[result["id"]] = result
        report(result["id"], 1.0)
        status = f"{result['wall_s']:.0f} s"
        if result["error"]:
            status = f"FAILED ({result['error']}; see {result['dir']}/log.txt)"
        bar.write(f"  {result['label']}: {status}", file=sys.stderr)

    start, threads_before = time.perf_counter(), torch.get_num_threads()
    try:
        if n_jobs <= 1:
            worker.SINK = report
            torch.set_num_threads(threads)
            for job in todo:
                bar.set_postfix_str(job["label"])
                finish(worker.fit_one(job))
        else:
            _execute_parallel(todo, n_jobs, threads, report, finish, bar)
    finally:
        worker.SINK = None
        torch.set_num_threads(threads_before)
        bar.close()
    print(f"icrl-reproduce: trained {len(todo)} runs in {time.perf_counter() - start:.0f} s "
          f"({n_jobs} job{'s' if n_jobs > 1 else ''})", file=sys.stderr)
    return results


def _execute_parallel(todo: list[dict], n_jobs: int, threads: int, report, finish, bar) -> None:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    progress = ctx.Queue()
    init = dict(initializer=worker.init_worker, initargs=(progress, threads))
    with ProcessPoolExecutor(n_jobs, mp_context=ctx, **init) as pool:
        pending = {pool.submit(worker.fit_one, job): job for job in todo}
        bar.set_postfix_str(f"{n_jobs} parallel jobs")
        while pending:
            finished, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _drain(progress, report)
            for future in finished:
                job = pending.pop(future)
                try:
                    finish(future.result())
                except Exception as err:  # the worker process died (e.g. out of memory)
                    finish({**job, "scalars": {}, "wall_s": 0.0, "error": f"worker died: {err}"})
        _drain(progress, report)


def _drain(progress, report) -> None:
    while True:
        try:
            job_id, fraction = progress.get_nowait()
        except queue_module.Empty:
            return
        report(job_id, fraction)
