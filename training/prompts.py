"""Build a model's zero-shot prompt bank from a dataset's reports and store it in the model.

``concord prompts --model DIR --data ROOT`` reads the reports of one split
(``train`` by default), rewrites each into single-entity sentences with the
same rewriting backend as preprocessing, keeps per finding the most frequent
sentences that assert it and that negate it (:func:`core_model.prompts.build_prompt_bank`),
and writes them into the model directory as ``prompts.json``. ``concord train``
does the same at the end of a run from its training pairs, so a newly trained
model answers in the phrasing of the reports it learned from.

The weights, and so the ``model_version``, do not change; the calibration was
fitted on the old prompts' logits, so evaluate again (``concord eval
--save-calibration``) after replacing a bank.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core_model.checkpoint import PROMPTS_FILE, CheckpointError, load_checkpoint
from core_model.files import atomic_write_text
from core_model.prompts import DEFAULT_PER_FINDING, build_prompt_bank, check_prompt_bank
from core_model.text.rewrite import RewriteBackend, get_backend
from training.dataset import MimicDataset


def prompt_bank_from_dataset(
    data_root: str | os.PathLike[str],
    *,
    split: str = "train",
    per_finding: int = DEFAULT_PER_FINDING,
    max_studies: int | None = None,
    backend: RewriteBackend | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The prompt bank of ``split``'s reports (one report per study, at most ``max_studies``)."""
    backend = backend or get_backend("rules")
    seen: set[int] = set()

    def texts():
        for sample in MimicDataset(data_root, split=split):
            if sample.study_id in seen:
                continue
            if max_studies is not None and len(seen) >= max_studies:
                return
            seen.add(sample.study_id)
            if progress is not None and len(seen) % 500 == 0:
                progress(len(seen))
            yield " ".join(backend.single_entity(sample.report))

    return build_prompt_bank(texts(), per_finding=per_finding,
                             source=f"{split} split of {Path(data_root).resolve()}")


def save_model_prompts(model_dir: str | os.PathLike[str], bank: dict[str, Any]) -> str:
    """Write ``bank`` as the model's prompts.json (atomically); returns the model version.

    The model directory must hold a loadable checkpoint; the file is written
    beside it and renamed into place, so a failure (a full disk) leaves the
    previous prompts, or none, as they were.
    """
    target = Path(model_dir)
    version = load_checkpoint(target).version
    check_prompt_bank(bank)
    try:
        atomic_write_text(target / PROMPTS_FILE, json.dumps(bank, indent=2) + "\n", mode=0o644)
    except OSError as exc:
        raise CheckpointError(f"could not write {PROMPTS_FILE} into {target}: "
                              f"{exc.strerror or exc} (the model is unchanged)") from exc
    return version


def describe(bank: dict[str, Any]) -> str:
    """One line per polarity: how many findings have corpus prompts."""
    pos, neg = bank.get("positive", {}), bank.get("negative", {})
    return (f"{len(pos)} findings with positive and {len(neg)} with negated sentences "
            f"from {bank.get('studies', 0)} reports (others keep the built-in prompts)")
