"""The ``concord`` command: the desktop application, and a subcommand per job.

``concord`` alone opens the application (``--demo``, ``--screenshot``: see
:mod:`app.gui.launch`).  The report-language subcommands come from :mod:`core_model.cli`.  Errors a
user can fix print one line and exit with status 2; an unexpected failure
prints one line too (set ``CONCORD_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from app.storage import cli as storage_cli
from core_model import cli as core_cli
from core_model.text.io import InputError
from training import cli as training_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="concord",
        description="Concord: a reading assistant for chest radiographs.",
    )
    parser.add_argument("--version", action="version", version=f"concord {_version()}")
    from app.gui.launch import add_arguments

    add_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    core_cli.register(sub)
    training_cli.register(sub)
    storage_cli.register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("concord")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        from app.gui.launch import run

        return run(args)  # no COMMAND: the desktop application
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"concord {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"concord {args.command}: interrupted; no output was written", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user, the traceback on request
        if os.environ.get("CONCORD_DEBUG"):
            raise
        print(
            f"concord {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(set CONCORD_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
