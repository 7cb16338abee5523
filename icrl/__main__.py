"""The ``icrl`` command (``python -m icrl``): ``icrl sweep`` (``icrl.sweep``), else the LightningCLI (``icrl.cli``)."""

import sys

from icrl import cli, sweep


def main() -> None:
    if sys.argv[1:2] == ["sweep"]:
        cli.process_defaults()  # one torch thread, which its runs inherit
        sweep.main(sys.argv[2:])
    else:
        cli.main()


if __name__ == "__main__":
    main()
