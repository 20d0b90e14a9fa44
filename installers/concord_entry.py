"""Entry point of the frozen application: the ``concord`` command (``app.cli:main``).

``concord`` opens the desktop application, ``concord COMMAND`` runs a
subcommand, exactly as the installed console script does.  Two forms that only
the frozen program meets are handled here:

* the admin's Retrain / Evaluate start ``sys.executable -m app.cli ARGS``
  (``app.admin.commands.concord_command``); frozen, ``sys.executable`` is this
  program, so a leading ``-m app.cli`` is dropped;
* worker processes started with the ``spawn`` method (Windows, macOS) re-enter
  here; ``multiprocessing.freeze_support()`` runs them.
"""

from __future__ import annotations

import multiprocessing
import sys


def _arguments(argv: list[str]) -> list[str]:
    if argv[:2] == ["-m", "app.cli"]:
        return argv[2:]
    if argv[:1] == ["-mapp.cli"]:
        return argv[1:]
    return argv


def main() -> int:
    multiprocessing.freeze_support()
    from app.cli import main as concord_main

    return concord_main(_arguments(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
