"""One job of a sweep: a point × seed, its resolved config, its content key, its folder, and training it.

A job's ``key`` hashes what ``icrl fit --print_config`` prints for it (without its log folder) and the
code (``code_version``): a changed YAML, override, seed or commit is another job. A job is a plain dict,
so it travels to a worker process or a Ray task. ``train_job`` trains a single-process job in this
process (a warm worker), any other as an ``icrl fit`` subprocess, so that Lightning's launcher starts
its ranks from that command, never from the sweep's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import _InstantiatorFn

import icrl
from icrl.callbacks import NonFiniteLossError
from icrl.cli import IcrlCLI, cli_main, one_line
from icrl.scalars import read_scalars

RUNNER_ARGS = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
# Set by a distributed run for its ranks; inherited, they would make the next run join the old group.
DIST_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


def code_version() -> str:
    """The package version, and in a git checkout its commit and a hash of uncommitted changes to ``icrl/``."""
    root = Path(icrl.__file__).resolve().parent
    try:
        git = dict(cwd=root, capture_output=True, text=True, check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **git).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "."], **git).stdout
    except (OSError, subprocess.CalledProcessError):  # not a checkout: the version is all there is
        return icrl.__version__
    return f"{icrl.__version__} {commit}" + (f" +{hashlib.sha256(diff.encode()).hexdigest()[:12]}" if diff else "")


def fit_args(config: str, args: tuple[str, ...] | list[str], seed: int) -> list[str]:
    s = str(seed)
    return ["fit", "--config", config, "--seed_everything", s, "--data.init_args.seed", s, *args, *RUNNER_ARGS]


@functools.cache
def parsers() -> tuple:
    """``icrl``'s parsers (main, subcommands' method arguments, subcommands'), built once per process: most of the
    cost of ``--print_config`` and of a run's start (docs/performance.md). LightningCLI builds them only in its
    constructor, which goes on to parse and run: its one hook between the two raises them out."""
    class Built(Exception):
        pass

    class ParsersOnly(IcrlCLI):
        def parse_arguments(self, parser, args) -> None:
            raise Built(self.parser, self._subcommand_method_arguments, self._subcommand_parsers)

    try:
        cli_main([], cli_class=ParsersOnly)
    except Built as built:
        return built.args
    raise RuntimeError("LightningCLI no longer parses its arguments in parse_arguments")


class WarmCLI(IcrlCLI):
    """``IcrlCLI`` on the parsers of ``parsers()``: a warm worker's runs do not rebuild them (a parse leaves a
    parser as it was, so one run's arguments never reach the next; ``test_sweep`` checks it)."""

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        self.parser, self._subcommand_method_arguments, self._subcommand_parsers = parsers()


def resolve(config: str, args: tuple[str, ...] | list[str], seed: int, build: bool = False) -> str:
    """What ``icrl fit --print_config`` prints for this job (without its log folder). ``ValueError`` with a one-line
    message when the arguments do not parse or, with ``build``, when the model or data class refuses them."""
    parser = parsers()[2]["fit"]
    parser.exit_on_error = False  # raise the error instead of printing it and exiting
    try:
        cfg = parser.parse_args(fit_args(config, args, seed)[1:])
    except ArgumentError as err:
        raise ValueError(one_line(str(err)) or "icrl fit refused the arguments") from None
    finally:
        parser.exit_on_error = True
    text = parser.dump(cfg, skip_unset=False)
    if build:  # the classes, links applied, without a Trainer: cheap at these sizes (docs/performance.md)
        # Lightning's instantiators read the hyper-parameters off the CLI that last added them, by default the
        # last run trained in this process: bind them to this config
        dumped = SimpleNamespace(config_dump=yaml.safe_load(parser.dump(cfg, skip_link_targets=False, skip_none=False)),
                                 _dump_config=lambda: None)
        for key, base in (("model", LightningModule), ("data", LightningDataModule)):
            parsers()[0].add_instantiator(_InstantiatorFn(dumped, key), base, subclasses=True)
        try:
            parser.instantiate(cfg)
        except ValueError as err:
            while isinstance(inner := err.__cause__ or err.__context__, ValueError):  # jsonargparse wraps the class's
                err = inner
            raise ValueError(str(err).splitlines()[0]) from None
    return text


def processes(trainer: dict) -> tuple[int, int]:
    """``(processes, GPUs)`` a job's trainer settings ask for (over all its nodes).

    >>> processes({"devices": 2, "accelerator": "cpu", "strategy": "ddp"})
    (2, 0)
    >>> processes({"devices": [0, 1, 2], "accelerator": "gpu", "num_nodes": 2})
    (6, 6)
    >>> processes({"devices": 1, "accelerator": "auto"})
    (1, 0)
    """
    accelerator = str(trainer.get("accelerator") or "auto")
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list):
        n = len(devices)
    elif str(devices) in ("auto", "-1"):
        n = max(torch.cuda.device_count(), 1) if gpu else 1
    else:
        n = int(devices)
    n *= int(trainer.get("num_nodes") or 1)
    return n, n if gpu else 0


def plan_job(config: str, args: tuple[str, ...], seed: int, folder: Path, version: str, threads: int = 1) -> dict:
    """A job: arguments, content key, folder ``folder/seed<S>-<key>``, the processes it asks for."""
    text = resolve(config, args, seed, build=True)
    key = hashlib.sha256(f"{text}\n{version}".encode()).hexdigest()[:16]
    trainer = yaml.safe_load(text).get("trainer") or {}
    if int(trainer.get("num_nodes") or 1) > 1:  # its other nodes would wait for ranks nobody starts
        raise ValueError(f"trainer.num_nodes {trainer['num_nodes']}: a sweep trains each run on one machine (allowed: "
                         "1); start multi-node runs with icrl fit under the cluster's launcher")
    n, gpus = processes(trainer)
    # a distributed strategy sets up process groups and environment variables: never in a warm worker
    alone = n > 1 or trainer.get("strategy", "auto") not in ("auto", "single_device")
    return {"key": key, "config": config, "args": list(args), "seed": seed,
            "dir": str(folder / f"seed{seed}-{key[:8]}"), "processes": n, "gpus": gpus, "threads": threads, "subprocess": alone}


def finished(job: dict) -> dict | None:
    """The result of this very job (same key) if it finished successfully earlier. A damaged ``result.json`` (it
    resumes from its ``last.ckpt``) or ``scalars.csv`` (it trains afresh) makes it unfinished, said in one line."""
    path = Path(job["dir"]) / "result.json"
    try:
        saved = json.loads(path.read_text()) if path.exists() else {}
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        print(f"icrl sweep: {path} is damaged ({err}); the run goes on from its last.ckpt", file=sys.stderr)
        return None
    if saved.get("key") != job["key"] or saved.get("exit_code") != 0:
        return None
    try:
        return {**saved, **job, "scalars": read_scalars(job["dir"]), "reused": True}
    except ValueError as err:
        print(f"icrl sweep: {err}; the run is trained again from step 0", file=sys.stderr)
        shutil.rmtree(job["dir"])
        return None


def last_checkpoint(job_dir: Path) -> Path | None:
    """The newest ``lightning_logs/<name>/version_N/checkpoints/last.ckpt`` of a job."""
    found = list(job_dir.glob("lightning_logs/**/checkpoints/last.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def train_job(job: dict) -> dict:
    """Train one job (resuming from its ``last.ckpt`` if any); return its result and save ``result.json``. Never
    raises: a failed job has ``exit_code`` 2 (a bad setting) or 1 (a diverging loss, a crash) and ``error``."""
    job_dir = Path(job["dir"])
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "result.json").unlink(missing_ok=True)
    args = [*fit_args(job["config"], job["args"], job["seed"]), "--trainer.default_root_dir", str(job_dir)]
    resume = last_checkpoint(job_dir)
    if resume is not None:
        args += ["--ckpt_path", str(resume)]
    start = time.perf_counter()
    with open(job_dir / "log.txt", "a") as log:
        log.write(shlex.join(["icrl", *args]) + "\n")
        log.flush()
        if job["subprocess"]:  # its own process tree: Lightning's launcher starts the other ranks from it
            env = {k: v for k, v in os.environ.items() if k not in DIST_VARIABLES}
            env["OMP_NUM_THREADS"] = str(job["threads"])
            code = subprocess.run([sys.executable, "-m", "icrl.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                  env=env).returncode
        else:
            code = _fit_here(args, log)
    result = {**job, "exit_code": code, "error": None if code == 0 else f"exit code {code}",
              "log": str(job_dir / "log.txt"), "resumed_from": str(resume) if resume else None,
              "wall_s": time.perf_counter() - start}
    part = job_dir / "result.json.part"  # renamed into place: a killed sweep never leaves half a result.json
    part.write_text(json.dumps(result))
    os.replace(part, job_dir / "result.json")
    return {**result, "scalars": read_scalars(job_dir)}


def _fit_here(args: list[str], log) -> int:
    """``icrl fit`` in this process, its output into ``log``; the exit code ``icrl`` would give."""
    levels = {q: q.level for q in map(logging.getLogger, ("lightning.pytorch", "lightning.fabric"))}
    threads = torch.get_num_threads()
    code = 0
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
        # the sweep's own command line is no argument of this run: LightningCLI's warning about it is noise
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        for q in levels:
            q.setLevel(logging.WARNING)
        try:
            cli_main(args, cli_class=WarmCLI)
        except SystemExit as exit_:  # the CLI's config errors: exit 2
            code = exit_.code if isinstance(exit_.code, int) else 1
        except NonFiniteLossError as err:
            print(f"icrl: error: {err}")
            code = 1
        except Exception:  # noqa: BLE001 - a crashed run is reported, the sweep goes on
            traceback.print_exc()
            code = 1
        finally:
            for q, level in levels.items():
                q.setLevel(level)
            torch.set_num_threads(threads)
    return code
