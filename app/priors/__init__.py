"""The priors panel: similar prior studies by image or by the draft, and their reports.

* :mod:`~app.priors.search`: :class:`PriorSearch` (no Qt), the search of a
  :class:`~core_model.index.ReportIndex` with a ``Reader``: :class:`PriorHit`,
  :class:`PriorResults`, :func:`default_index_dir`;
* :mod:`~app.priors.worker`: :class:`PriorWorker` and :class:`IndexOpener`, a search and
  the loading of an index off the GUI thread;
* :mod:`~app.priors.hits_model`: :class:`PriorHitsModel`, the hits as a list model;
* :mod:`~app.priors.panel`: :class:`PriorsPanel`, the widget.

See ``docs/priors.md``.
"""

from app.priors.hits_model import PriorHitsModel
from app.priors.panel import HitDelegate, PriorsPanel
from app.priors.search import (
    DEFAULT_K,
    INDEX_DIRNAME,
    PriorHit,
    PriorResults,
    PriorSearch,
    ReportSentence,
    build_command,
    default_index_dir,
    draft_query_text,
    no_index_message,
    report_sentences,
)
from app.priors.worker import IndexOpener, OpenerSignals, PriorSignals, PriorWorker

__all__ = [
    "DEFAULT_K",
    "INDEX_DIRNAME",
    "HitDelegate",
    "IndexOpener",
    "OpenerSignals",
    "PriorHit",
    "PriorHitsModel",
    "PriorResults",
    "PriorSearch",
    "PriorSignals",
    "PriorWorker",
    "PriorsPanel",
    "ReportSentence",
    "build_command",
    "default_index_dir",
    "draft_query_text",
    "no_index_message",
    "report_sentences",
]
