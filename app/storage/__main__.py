"""``python -m app.storage [--url URL] COMMAND``: Alembic's commands on Concord's database.

The same commands as the ``alembic`` tool (``upgrade head``, ``downgrade -1``,
``current``, ``history``, ``revision --autogenerate -m "..." --rev-id 0002``,
``upgrade head --sql``), configured in code: there is no ``alembic.ini``.
``--url`` defaults to ``$CONCORD_DATABASE_URL``, else the per-user SQLite file.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from alembic.config import CommandLine

from app.storage.engine import alembic_config


def main(argv: Sequence[str] | None = None) -> int:
    cli = CommandLine(prog="python -m app.storage")
    cli.parser.add_argument("--url", help="database URL (sqlite:///PATH, postgresql+psycopg://...)")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("give a command, e.g. upgrade head")
    config = alembic_config(options.url)
    config.cmd_opts = options
    cli.run_cmd(config, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
