"""The ``icrl`` command (``python -m icrl``): ``icrl sweep`` (``icrl.sweep``), else the LightningCLI (``icrl.cli``)."""

import gc
import sys


def main() -> None:
    # torch, Lightning and jsonargparse leave hundreds of thousands of objects that live as long as the process, and
    # every full collection walked them all, while importing and again at exit: the largest share of a start-up's
    # CPU after torch's own import (docs/performance.md, "Start-up of a run"). So no collection while importing; then
    # what the imports made is frozen out of the collector's reach. The sweep is imported only for `icrl sweep`.
    gc.disable()
    from icrl import cli
    if sweep_command := sys.argv[1:2] == ["sweep"]:
        from icrl import sweep
    gc.freeze()
    gc.enable()
    if sweep_command:
        cli.process_defaults()  # one torch thread, which its runs inherit
        sweep.main(sys.argv[2:])
    else:
        cli.main()


if __name__ == "__main__":
    main()
