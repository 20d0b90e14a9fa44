"""The main window and the application's start: ``concord``, ``concord --demo``.

* :mod:`~app.gui.window`: :class:`MainWindow`, worklist + viewer + report editor + flags + priors;
* :mod:`~app.gui.keeper`: :class:`ReportKeeper`, autosave, save, recovery file;
* :mod:`~app.gui.worklist`: :class:`WorklistPanel`;
* :mod:`~app.gui.launch`: the command-line start, ``--demo`` and ``--screenshot``.

See ``docs/app.md``.
"""

from app.gui.keeper import ReportKeeper, SaveOutcome
from app.gui.worklist import WorklistPanel, WorklistRow

__all__ = ["ReportKeeper", "SaveOutcome", "WorklistPanel", "WorklistRow"]
