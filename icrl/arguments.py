"""The icrl parser: a bad option, value or ``--config`` file reported in one line, not 60 of usage, naming the file
and line (jsonargparse says ``"<unicode string>"``) and the closest setting; ``icrl sweep`` uses ``one_line`` too."""

from __future__ import annotations

import difflib
import inspect
import pydoc
import re
import sys
from pathlib import Path

import yaml
from lightning.pytorch.cli import LightningArgumentParser


def one_line(message: str) -> str:
    """jsonargparse's nested message of a bad option, as one line naming the option and the closest accepted one.

    >>> one_line('Parser key "data":\\n  Problem with given class_path \\'icrl.recall.RecallDataModule\\':\\n'
    ...          "    Option 'alpah' is not accepted\\n  Given value: x")
    "Option 'alpah' is not accepted by icrl.recall.RecallDataModule (--data.alpah); did you mean alpha?"
    >>> one_line("Parser key \\"alpha\\":\\n  Expected a <class 'float'>. Got value: abc\\n  Given value type: str")
    'Parser key "alpha": Expected a <class \\'float\\'>. Got value: abc'
    """
    option = re.search(r"Option '(\w+)' is not accepted", message)
    cls = re.search(r"class_path '([\w.]+)'", message)
    key = re.search(r'Parser key "([\w.]+)"', message)
    if option and cls:
        line = f"Option '{option[1]}' is not accepted by {cls[1]}" + (f" (--{key[1]}.{option[1]})" if key else "")
        accepted = list(inspect.signature(target).parameters) if callable(target := pydoc.locate(cls[1])) else []
        close = difflib.get_close_matches(option[1], accepted, n=1)
        return line + (f"; did you mean {close[0]}?" if close else f"; accepted: {', '.join(accepted)}")
    if re.search(r"--(optimizer|lr_scheduler)\b", message):
        return (f"{message.strip().splitlines()[0]}: the optimizer is the model's setting, e.g. "
                "--model.optimizer torch.optim.Adam --model.optimizer.lr 1e-3")
    return " ".join(message.partition("Given value type")[0].split())  # the type's repr only repeats the value


def config_files(argv: list[str]) -> list[str]:
    """The ``--config`` files of a command line, in order.

    >>> config_files(["fit", "--config", "a.yaml", "--config=b.yaml", "--data.alpha", "0.5"])
    ['a.yaml', 'b.yaml']
    """
    return [a.partition("=")[2] if a.startswith("--config=") else argv[i + 1]
            for i, a in enumerate(argv) if a.startswith("--config=") or a == "--config" and i + 1 < len(argv)]


def key_line(path: str, key: str) -> int | None:
    """The line of the dotted ``key`` (``trainer.max_steps``) in the YAML file ``path``, if it is there."""
    node = yaml.compose(Path(path).read_text())
    line, parts = None, key.split(".")
    while parts and isinstance(node, yaml.MappingNode):
        # a key is nested (trainer: {max_steps: …}) or dotted (trainer.max_steps: …)
        found = next(((k, v, n) for n in range(len(parts), 0, -1) for k, v in node.value
                      if k.value == ".".join(parts[:n])), None)
        if found is None:
            return None
        node, line, parts = found[1], found[0].start_mark.line + 1, parts[found[2]:]
    return None if parts else line


class IcrlArgumentParser(LightningArgumentParser):
    """Reports a bad option in one line: the closest accepted name and, for a key in a ``--config`` file, its line."""

    argv: list[str] = []  # the command line being parsed, set by IcrlCLI

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            super().error(message, ex)
        print(f"icrl: error: {self.unknown_key(message) or one_line(message)}", file=sys.stderr)
        self.exit(2)

    def check_yaml(self) -> None:
        """Reports a YAML syntax error in a ``--config`` file, naming its file, line and column."""
        for path in config_files(self.argv):
            try:
                yaml.safe_load(Path(path).read_text())
            except OSError:
                continue  # jsonargparse reports a missing file itself
            except yaml.MarkedYAMLError as err:
                mark = err.problem_mark or err.context_mark
                self.error(f"--config {path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: "
                           f"{err.problem or err.context}")

    def unknown_key(self, message: str) -> str | None:
        """A key no setting has, as ``--config FILE, line N: 'key' ...; did you mean ...?``."""
        commands = self._subcommands_action._name_parser_map if self._subcommands_action else {}
        if found := re.search(r"Subcommand '(\w+)' does not accept option '([\w.]+)'", message):
            command, key = found.groups()
        elif found := re.search(r"unrecognized arguments: --([\w.]+)", message):  # on the command line
            command, key = next((a for a in self.argv if a in ("fit", "validate", "test")), "fit"), found[1]
        else:
            return None
        if key.split(".")[0] in ("optimizer", "lr_scheduler"):
            return None  # one_line says where the optimizer is set
        close = difflib.get_close_matches(key, [a.dest for a in commands.get(command, self)._actions], n=1)
        where = next((f"--config {path}, line {line}: " for path in config_files(self.argv)
                      if (line := key_line(path, key)) is not None), "")
        return f"{where}'{key}' is not a setting of icrl {command}" + (f"; did you mean {close[0]}?" if close else "")
