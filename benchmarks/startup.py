"""Where the start-up of ``icrl`` goes: imports by package, the parser, instantiation, a fit up to its first step.

Each case runs in a fresh interpreter (this script with ``--child``), the cases alternating, ``--repeats``
times; the repeat with the least CPU time counts (the machine is shared). All times are process CPU time
(``time.process_time`` inside, the child's rusage up to its exit outside), which leaves out the waits
for a core that other processes hold:

- ``python``: ``python -c pass``, the interpreter alone;
- ``import``: ``icrl``'s entry point (``icrl.__main__.main``) up to building the CLI: its imports;
- ``print_config``: ``icrl fit --config CONFIG --print_config``;
- ``fit``: ``icrl fit --config CONFIG`` of one step (64 validation prompts, no progress bar) up to its exit.

Phases end at ``IcrlCLI``'s methods and at Lightning's callback hooks: ``parser`` (LightningCLI's parser
construction), ``parse`` (the command line and config), ``instantiate`` (model, data, Trainer), ``fit setup``
(up to the first step, the sanity check's validation apart), ``step``, ``validation``, ``teardown`` (the
end of fit, ``last.ckpt``), ``exit`` (the interpreter's shutdown). Imports are split as
``python -X importtime`` splits them, but in CPU time: a module's own time (less the modules it imports)
goes to the first of PACKAGES on its chain of importers (PIL, imported by Lightning, counts as lightning;
matplotlib, imported by torchmetrics, as matplotlib), whichever phase it falls in.

    python benchmarks/startup.py                 # table
    python benchmarks/startup.py --repeats 5 --json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/recall/fig1/reparam-linear-fa.yaml"
PACKAGES = ("torch", "lightning", "torchmetrics", "jsonargparse", "tensorboard", "matplotlib", "ray", "numpy", "icrl")
ALIASES = {"lightning_fabric": "lightning", "pytorch_lightning": "lightning", "lightning_utilities": "lightning"}
ONE_STEP = ["--trainer.max_steps", "1", "--data.n_val", "64", "--data.val_batch_size", "64",
            "--trainer.enable_progress_bar", "false"]
CASES = ("python", "import", "print_config", "fit")


class ImportTimer:
    """Every import's own CPU time by package, the running total of top-level imports (for the phases), and
    ``on_load[name](module)`` called once the module ``name`` is imported."""

    def __init__(self, on_load: dict):
        self.by_package: collections.Counter[str] = collections.Counter()
        self.total, self.on_load = 0.0, on_load
        self._stack: list[list] = []  # [package, CPU of the imports it made]

    def install(self) -> None:
        # the import statement calls importlib's _find_and_load by name for every module not yet loaded
        # (where -X importtime times it), so wrapping it times every fresh import
        bootstrap = sys.modules["_frozen_importlib"]
        find_and_load = bootstrap._find_and_load

        def timed(name, import_):
            top = name.partition(".")[0]
            top = ALIASES.get(top, top)
            frame = [top if top in PACKAGES else self._stack[-1][0] if self._stack else "other", 0.0]
            self._stack.append(frame)
            start = time.process_time()
            try:
                module = find_and_load(name, import_)
            finally:
                spent = time.process_time() - start
                self._stack.pop()
                self.by_package[frame[0]] += spent - frame[1]
                if self._stack:
                    self._stack[-1][1] += spent
                else:
                    self.total += spent
            if name in self.on_load:
                self.on_load.pop(name)(module)
            return module

        bootstrap._find_and_load = timed


def child(case: str, out: str, root: str) -> None:
    """Runs ``case`` here, writing its phases (label, CPU s, of which imports) and imports by package to ``out``."""
    marks = [("interpreter", time.process_time(), 0.0)]  # since the process started: site, this script's imports

    def mark(label: str) -> None:
        marks.append((label, time.process_time(), imports.total))

    def ends(cls, method: str, label: str) -> None:
        original = getattr(cls, method)

        def wrapped(self, *args, **kwargs):
            try:
                return original(self, *args, **kwargs)
            finally:
                mark(label)
        setattr(cls, method, wrapped)

    def instrument(cli) -> None:  # icrl.cli, as soon as it is imported (by the entry point, at once or in main)
        from lightning.pytorch import Callback

        class Marks(Callback):
            on_sanity_check_start = on_train_batch_start = lambda *_: mark("fit setup")
            on_train_batch_end = lambda *_: mark("step")
            on_validation_start = lambda self, trainer, _: mark("validation" if trainer.sanity_checking else "step")
            on_sanity_check_end = on_validation_end = lambda *_: mark("validation")

        main, trainer = cli.main, cli.IcrlCLI._instantiate_trainer
        cli.main = lambda args=None: (mark("imports"), case != "import" and main(args))  # "import": no CLI
        cli.IcrlCLI._instantiate_trainer = lambda self, config, callbacks: trainer(self, config, [*callbacks, Marks()])
        ends(cli.IcrlCLI, "setup_parser", "parser")
        ends(cli.IcrlCLI, "parse_arguments", "parse")
        ends(cli.IcrlCLI, "instantiate_classes", "instantiate")
        ends(cli.IcrlCLI, "_run_subcommand", "teardown")

    imports = ImportTimer({"icrl.cli": instrument})
    imports.install()
    extra = ["--print_config"] if case == "print_config" else [*ONE_STEP, "--trainer.default_root_dir", root]
    sys.argv = ["icrl", "fit", "--config", str(CONFIG), *extra]
    import icrl.__main__
    try:
        icrl.__main__.main()  # as the console script calls it
    except SystemExit:  # --print_config exits while parsing
        pass
    Path(out).write_text(json.dumps({"marks": marks, "imports": imports.by_package}))


def run_case(case: str, tmp: Path, package_root: Path | None = None) -> dict:
    """``case`` in a fresh interpreter (importing icrl from ``package_root`` if given): its phases and imports in
    CPU ms, ``exit`` from its rusage."""
    out = tmp / "child.json"
    out.unlink(missing_ok=True)
    command = ["-c", "pass"] if case == "python" else [__file__, "--child", case, str(out), str(tmp / "logs")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(package_root)} if package_root else None
    subprocess.run([sys.executable, *command], check=True, capture_output=True, cwd=ROOT, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = 1e3 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if case == "python":
        return {"total_ms": total, "phases": {"interpreter": total}, "import_ms": {}, "phase_imports_ms": {}}
    report = json.loads(out.read_text())
    phases: dict[str, float] = collections.defaultdict(float)
    phase_imports: dict[str, float] = collections.defaultdict(float)
    previous = (0.0, 0.0)
    for label, cpu, imported in report["marks"]:
        phases[label] += 1e3 * (cpu - previous[0])
        phase_imports[label] += 1e3 * (imported - previous[1])
        previous = (cpu, imported)
    phases["exit"] = total - 1e3 * previous[0]
    return {"total_ms": total, "phases": dict(phases), "phase_imports_ms": dict(phase_imports),
            "import_ms": {k: 1e3 * v for k, v in report["imports"].items()}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--repeats", type=int, default=3, help="runs per case (alternating); the least CPU time counts")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--compare", type=Path, metavar="DIR", help="also run each case (but python) with the icrl "
                   "package in DIR/icrl, e.g. a copy of the code before a change, alternating with this one")
    p.add_argument("--child", nargs=3, metavar=("CASE", "OUT", "ROOT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(*args.child)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from timing import machine, machine_end, machine_line  # imports torch: not in the children

    os.environ["OMP_NUM_THREADS"] = "1"  # as icrl sets it where unset
    start = machine()
    variants = [(case, None) for case in args.cases]
    if args.compare:
        variants += [(f"{case} ({args.compare})", args.compare) for case in args.cases if case != "python"]
    runs: dict[str, list[dict]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, package_root in variants:
                runs[name].append(run_case(name.split()[0], Path(tmp), package_root))
    best = {case: min(r, key=lambda x: x["total_ms"]) for case, r in runs.items()}
    for case, r in best.items():
        r["total_ms_range"] = [min(x["total_ms"] for x in runs[case]), max(x["total_ms"] for x in runs[case])]
    report = {"machine": machine_end(start), "config": str(CONFIG.relative_to(ROOT)), "threads": 1,
              "repeats": args.repeats, "results": best}
    if args.json:
        print(json.dumps(report, indent=1))
        return report
    print(machine_line(report["machine"], ", 1 thread"))
    print(f"{report['config']}: CPU ms of the least of {args.repeats} runs per case (range of the totals)")
    for case, r in best.items():
        print(f"\n{case}: {r['total_ms']:.0f} ms ({r['total_ms_range'][0]:.0f}–{r['total_ms_range'][1]:.0f})")
        for label, ms in r["phases"].items():
            imported = r["phase_imports_ms"].get(label, 0.0)
            print(f"  {label:14} {ms:7.0f}" + (f"   of which imports {imported:5.0f}" if imported >= 1 else ""))
        if r["import_ms"]:
            print("  imports by package: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                       sorted(r["import_ms"].items(), key=lambda kv: -kv[1])))
    return report


if __name__ == "__main__":
    main()
