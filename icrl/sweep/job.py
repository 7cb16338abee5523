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
from lightning.pytorch import LightningDataModule, LightningModule, seed_everything
from lightning.pytorch.cli import _InstantiatorFn

import icrl
from icrl.callbacks import NonFiniteLossError
from icrl.checkpoints import EXIT_CODES, flat, load_checkpoint, training_signature
from icrl.cli import QUIET, IcrlCLI, cli_main, one_line
from icrl.ensemble import Member, fit_ensemble
from icrl.scalars import read_scalars, run_loggers

# what members of one ensemble may differ in (icrl.ensemble): values that keep every shape
MEMBER_SETTINGS = ("seed_everything", "data.seed", "data.alpha", "model.optimizer.lr")
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
        try:
            instantiate(parser, cfg)
        except ValueError as err:
            while isinstance(inner := err.__cause__ or err.__context__, ValueError):  # jsonargparse wraps the class's
                err = inner
            raise ValueError(str(err).splitlines()[0]) from None
    return text


def instantiate(parser, cfg):
    """``cfg``'s model and data (links applied) as ``icrl fit`` builds them, without a Trainer."""
    # Lightning's instantiators read the hyper-parameters off the CLI that last added them, by default the last run
    # trained in this process: bind them to this config
    dumped = SimpleNamespace(config_dump=yaml.safe_load(parser.dump(cfg, skip_link_targets=False, skip_none=False)),
                             _dump_config=lambda: None)
    for key, base in (("model", LightningModule), ("data", LightningDataModule)):
        parsers()[0].add_instantiator(_InstantiatorFn(dumped, key), base, subclasses=True)
    return parser.instantiate(cfg)


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
    resolved = yaml.safe_load(text)
    trainer = resolved.get("trainer") or {}
    if int(trainer.get("num_nodes") or 1) > 1:  # its other nodes would wait for ranks nobody starts
        raise ValueError(f"trainer.num_nodes {trainer['num_nodes']}: a sweep trains each run on one machine (allowed: "
                         "1); start multi-node runs with icrl fit under the cluster's launcher")
    n, gpus = processes(trainer)
    # a distributed strategy sets up process groups and environment variables: never in a warm worker
    alone = n > 1 or trainer.get("strategy", "auto") not in ("auto", "single_device")
    shared = {k: v for k, v in flat(resolved).items() if k not in MEMBER_SETTINGS}
    ensemble = None if alone or trainer.get("callbacks") else \
        hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"key": key, "config": config, "args": list(args), "seed": seed,
            "dir": str(folder / f"seed{seed}-{key[:8]}"), "processes": n, "gpus": gpus, "threads": threads, "subprocess": alone,
            "ensemble": ensemble}


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
    """Train one job (resuming from its ``last.ckpt`` if any), or an ensemble's members together (``ensemble_job``);
    return its result and save ``result.json``. Never raises: a failed job has ``exit_code`` 2 (a bad setting) or 1
    (a diverging loss, a crash) and ``error``."""
    if "members" in job:
        return train_ensemble(job)
    args, resume = _prepare(job)
    start = time.perf_counter()
    with open(Path(job["dir"]) / "log.txt", "a") as log:
        log.write(shlex.join(["icrl", *args]) + "\n")
        log.flush()
        if job["subprocess"]:  # its own process tree: Lightning's launcher starts the other ranks from it
            env = {k: v for k, v in os.environ.items() if k not in DIST_VARIABLES}
            env["OMP_NUM_THREADS"] = str(job["threads"])
            code = subprocess.run([sys.executable, "-m", "icrl.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                  env=env).returncode
        else:
            with quiet_into(log):
                code = _fit_here(args)
    return _save_result(job, code, None if code == 0 else f"exit code {code}", resume, time.perf_counter() - start)


def _prepare(job: dict) -> tuple[list[str], Path | None]:
    """A job's folder made, its old result removed; its ``icrl fit`` arguments and the checkpoint it resumes."""
    job_dir = Path(job["dir"])
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "result.json").unlink(missing_ok=True)
    args = [*fit_args(job["config"], job["args"], job["seed"]), "--trainer.default_root_dir", str(job_dir)]
    resume = last_checkpoint(job_dir)
    if resume is None:  # an attempt killed before its first checkpoint: start again in version_0, not beside it
        shutil.rmtree(job_dir / "lightning_logs", ignore_errors=True)
    return args + ["--ckpt_path", str(resume)] * (resume is not None), resume


def _save_result(job: dict, code: int, error: str | None, resume: Path | None, wall_s: float) -> dict:
    job_dir = Path(job["dir"])
    result = {**job, "exit_code": code, "error": error, "log": str(job_dir / "log.txt"),
              "resumed_from": str(resume) if resume else None, "wall_s": wall_s}
    part = job_dir / "result.json.part"  # renamed into place: a killed sweep never leaves half a result.json
    part.write_text(json.dumps(result))
    os.replace(part, job_dir / "result.json")
    return {**result, "scalars": read_scalars(job_dir)}


def ensembles(todo: list[dict], size: int) -> list[dict]:
    """``todo`` as jobs of ensembles of at most ``size`` members, of jobs alike but in ``MEMBER_SETTINGS`` and at one
    step (fresh, or resuming checkpoints of one step); a job that has no such partner trains alone."""
    groups: dict = {}
    for job in todo:
        resume = last_checkpoint(Path(job["dir"]))
        step = load_checkpoint(resume)["global_step"] if resume and job["ensemble"] else 0
        groups.setdefault((job["ensemble"] or job["key"], step), []).append(job)
    units = []
    for jobs in groups.values():
        n = -(-len(jobs) // size)  # ensembles of at most ``size``, as even as can be
        for chunk in (jobs[i::n] for i in range(n)):
            units.append(ensemble_job(chunk) if len(chunk) > 1 else chunk[0])
    return units


def members_of(result: dict) -> list[dict]:
    """The results of a job's runs: itself, or an ensemble's members (all failed alike if the group did)."""
    if "members" not in result:
        return [result]
    return [m if "exit_code" in m else {**m, "scalars": {}, "wall_s": result["wall_s"], "exit_code": result["exit_code"],
                                        "error": result["error"], "log": f"{m['dir']}/log.txt"}
            for m in result["members"]]


def ensemble_job(members: list[dict]) -> dict:
    """One job training ``members`` (jobs alike, ``ensembles``) as an ensemble (``icrl.ensemble``)."""
    first = members[0]
    return {"members": members, "key": "+".join(m["key"] for m in members), "dir": first["dir"], "seed": first["seed"],
            "processes": 1, "gpus": first["gpus"], "threads": first["threads"], "subprocess": False}


def train_ensemble(group: dict) -> dict:
    """``train_job`` of an ensemble: each member's result as its single run's (``members``), and the group's."""
    start, built = time.perf_counter(), []
    with contextlib.ExitStack() as stack:
        for job in group["members"]:
            args, resume = _prepare(job)
            log = stack.enter_context(open(Path(job["dir"]) / "log.txt", "a"))
            log.write(shlex.join(["icrl", *args]) + f"\n(trained in an ensemble of {len(group['members'])})\n")
            built.append((args, resume, log))
        with quiet_into(Tee([log for *_, log in built])), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=QUIET)
            root = Path(group["dir"]).parent / f".ensemble-{group['key'][:8]}"  # the Trainer's own folder
            try:
                members = [_member(args, resume) for args, resume, _ in built]
                signum = fit_ensemble(members, root)
                errors = [m.error for m in members]  # a non-finite loss: its single run's message
                codes = [1 if error else EXIT_CODES.get(signum, 0) for error in errors]
            except Exception:  # noqa: BLE001 - a crashed group fails its members, the sweep goes on
                traceback.print_exc()
                errors, codes = [None] * len(built), [1] * len(built)
            finally:
                shutil.rmtree(root, ignore_errors=True)
        for error, (_, _, log) in zip(errors, built):
            if error:
                print(f"icrl: error: {error}", file=log)
    results = [_save_result(job, code, error or (None if code == 0 else f"exit code {code}"), resume,
                            time.perf_counter() - start)
               for job, code, error, (_, resume, _) in zip(group["members"], codes, errors, built)]
    worst = next((r for r in results if r["exit_code"] != 0), results[0])
    return {**group, **{k: worst[k] for k in ("exit_code", "error", "log")}, "members": results,
            "wall_s": time.perf_counter() - start}


def _member(args: list[str], resume: Path | None) -> Member:
    """An ensemble member built as ``icrl fit`` builds its run: seeded, then the data and model, then its loggers."""
    parser = parsers()[2]["fit"]
    cfg = parser.parse_args(args[1:])
    settings = cfg.as_dict()
    seed_everything(settings["seed_everything"], workers=True, verbose=False)
    init = instantiate(parser, cfg)
    loggers = run_loggers(settings["trainer"]["default_root_dir"], settings["name"], settings.get("ckpt_path"))
    log_dir = Path(loggers[0].log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    parser.save(cfg, str(log_dir / "config.yaml"), skip_none=False, overwrite=True, multifile=False)
    return Member(init.model, init.data, loggers, settings, training_signature(settings), resume)


class Tee:
    """A text stream writing to several."""

    def __init__(self, streams: list):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def quiet_into(log):
    """A fit's output into ``log``, without Lightning's info lines and the sweep's command-line warning; the torch
    threads and log levels as they were after it."""
    levels = {q: q.level for q in map(logging.getLogger, ("lightning.pytorch", "lightning.fabric"))}
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
        # the sweep's own command line is no argument of this run: LightningCLI's warning about it is noise
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        for q in levels:
            q.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for q, level in levels.items():
                q.setLevel(level)
            torch.set_num_threads(threads)


def _fit_here(args: list[str]) -> int:
    """``icrl fit`` in this process; the exit code ``icrl`` would give."""
    try:
        cli_main(args, cli_class=WarmCLI)
    except SystemExit as exit_:  # the CLI's config errors: exit 2
        return exit_.code if isinstance(exit_.code, int) else 1
    except NonFiniteLossError as err:
        print(f"icrl: error: {err}")
        return 1
    except Exception:  # noqa: BLE001 - a crashed run is reported, the sweep goes on
        traceback.print_exc()
        return 1
    return 0
