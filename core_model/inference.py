"""From model to flags (docs/inference.md): the consistency check of a draft report.

A :class:`Reader` loads a checkpoint once and answers, for one study and one
draft report, which statements the image contradicts, which it does not
support, and which findings it shows that the report leaves out.  Two signals
feed each decision:

* **zero-shot probability** per finding: the image's similarity to a
  positive prompt ("There is a pleural effusion.") against a negated one ("No
  pleural effusion."), softmaxed with the model's temperature and calibrated
  with the checkpoint's ``calibration.json`` (per-label operating points); the
  prompts are the checkpoint's prompt bank (``prompts.json``, sentences of its
  training reports, :mod:`core_model.prompts`) where it has one, else the
  built-in :data:`POSITIVE_PROMPTS` and the CXR-Align negations;
* **sentence-vs-negation alignment**: does the image match the report's
  sentence, or the same sentence with the finding's assertion flipped, better?

Flag kinds:

``contradiction``
    the report denies a finding the image shows (probability at or above the
    operating point, and the image matches the finding better than its denial),
    or asserts one the image confidently lacks (probability below the
    "confidently absent" point, and the image matches the denial better);
``unsupported``
    the report asserts a finding the image does not support (below the
    operating point, not confidently absent);
``omission``
    the image shows a finding (at or above the operating point) that the
    report does not mention at all.

Each flag carries an evidence heatmap: the similarity of every patch token to
the finding's positive prompt minus its negated prompt.  Image embeddings are
cached per study and text embeddings per sentence, so re-checking after an
edit encodes only the sentences that changed.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core_model.check_result import CheckResult, Flag, _dedupe, describe_flag
from core_model.domain.flags import FlagKind
from core_model.finding_head import FindingHeadError, load_head
from core_model.flag_rules import Points, Statement, raise_flags
from core_model.image_check import (
    ImageCheck,
    ImageCheckError,
    colour_problem,
    header_problem,
    load_description,
    picture_problem,
)
from core_model.imaging import ImageReadError, read_image
from core_model.operating_points import DEFAULT_MODE, Mode, OperatingPointsError, load_modes
from core_model.text.edits import NEGATIONS
from core_model.text.labeler import default_labeler
from core_model.text.observations import FINDINGS, Assertion

#: A finding whose zero-shot ROC AUC on the calibration split is below this is not
#: flagged: at an operating point of 0.8 sensitivity such a finding would be flagged on
#: most studies. The check says which findings it left out.
MIN_CHECK_AUC = 0.70

#: Positive prompts per finding (the negated prompts are the CXR-Align negations).
POSITIVE_PROMPTS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("The mediastinum is widened.", "Enlarged cardiomediastinal silhouette."),
    "Cardiomegaly": ("The heart is enlarged.", "Cardiomegaly."),
    "Lung Opacity": ("There is a lung opacity.", "Airspace opacity is seen."),
    "Lung Lesion": ("There is a pulmonary nodule.", "A lung mass is seen."),
    "Edema": ("There is pulmonary edema.", "Mild pulmonary edema."),
    "Consolidation": ("There is a consolidation.", "Focal consolidation is seen."),
    "Pneumonia": ("There is pneumonia.", "Findings consistent with pneumonia."),
    "Atelectasis": ("There is atelectasis.", "Basilar atelectasis."),
    "Pneumothorax": ("There is a pneumothorax.", "A pneumothorax is seen."),
    "Pleural Effusion": ("There is a pleural effusion.", "Pleural effusion is present."),
    "Pleural Other": ("There is pleural thickening.", "Pleural thickening is seen."),
    "Fracture": ("There is a rib fracture.", "A fracture is seen."),
    "Support Devices": ("A support device is present.", "Lines and tubes are in place."),
}
FRONTAL = ("PA", "AP", "")
LATERAL = ("LL", "RL", "LATERAL", "LAT", "LLD", "RLD")


class CheckError(ValueError):
    """A study or report cannot be checked; the message says why in one line."""


@dataclass
class StudyImage:
    """One image of a study: display pixels in [0, 1], its view position, and why its file
    says the model cannot read it (a header or colour problem; None when it can)."""

    pixels: np.ndarray
    view: str = ""
    source: str = ""
    problem: str | None = None


@dataclass
class _ImageEncoding:
    embedding: np.ndarray  # (D,) mean of the frontal images' embeddings, normalised
    tokens: np.ndarray  # (N, D) patch tokens of the first frontal image
    grid: tuple[int, int]
    #: Per backbone stage, (images, C_k) pooled features: what the image check describes.
    features: list[np.ndarray] | None = None
    #: (N, C) backbone features of the first frontal image's patches, before the projection.
    patches: np.ndarray | None = None


class Reader:
    """Loads a checkpoint once; embeds, scores and checks studies against draft reports."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        device: str | None = None,
        threads: int | None = None,
        text_cache_size: int = 20_000,
        image_cache_size: int = 64,
        min_auc: float = MIN_CHECK_AUC,
    ) -> None:
        import torch

        from core_model.checkpoint import CheckpointError, load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.checkpoint = load_checkpoint(model_dir, device=self.device)
        self.model = self.checkpoint.model.eval()
        self.tokenizer = self.checkpoint.tokenizer
        self.variant = self.checkpoint.variant
        self.model_version = self.checkpoint.version
        self.calibration: dict[str, dict[str, float]] = dict(self.checkpoint.calibration or {})
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._image_cache: OrderedDict[str, _ImageEncoding] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._image_cache_size = image_cache_size
        self.text_encodings = 0  # sentences actually run through the text encoder
        self.min_auc = min_auc
        try:
            self.image_description = load_description(model_dir)
            self.modes = load_modes(model_dir)
            #: Per-finding scores from the backbone's features (None: the zero-shot scores).
            self.finding_head = load_head(model_dir)
        except (ImageCheckError, OperatingPointsError, FindingHeadError) as exc:
            raise CheckpointError(f"{Path(model_dir)}: {exc}") from None
        #: The flag mode checks use (None: the calibration's points, for a model without modes).
        self.mode: Mode | None = self.modes.get(DEFAULT_MODE) or next(iter(self.modes.values()), None)
        self._prompts = self._encode_prompts()

    # ----------------------------------------------------------------- embedding

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings (N x D) of ``texts``; cached per sentence."""
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for start in range(0, len(missing), 64):
            batch = missing[start:start + 64]
            ids, mask = self.model.tokenize(batch)
            with torch.inference_mode():
                emb = self.model.encode_text(ids, mask)
            self.text_encodings += len(batch)
            for text, row in zip(batch, emb.float().cpu().numpy(), strict=True):
                self._remember(self._text_cache, text, row, self._text_cache_size)
        out = []
        for t in texts:
            row = self._text_cache[t]
            self._text_cache.move_to_end(t)
            out.append(row)
        return np.stack(out) if out else np.zeros((0, self.model.embed_dim), np.float32)

    def embed_study(self, images: Sequence[StudyImage], key: str | None = None) -> _ImageEncoding:
        """Image embedding of a study (frontal images averaged) and patch tokens; cached by key."""
        import torch

        if key is not None and key in self._image_cache:
            self._image_cache.move_to_end(key)
            return self._image_cache[key]
        frontal = [im for im in images if im.view.upper() not in LATERAL] or list(images)
        try:
            batch = torch.stack([self.model.preprocess(im.pixels) for im in frontal])
        except ValueError as exc:
            raise CheckError(f"image cannot be used: {exc}") from exc
        # The embedding is a function of the preprocessed tensor: hash that (small), not the raw pixels.
        key = key or hashlib.sha256(batch.numpy().tobytes()).hexdigest()
        if key in self._image_cache:
            self._image_cache.move_to_end(key)
            return self._image_cache[key]
        batch = batch.to(self.device)
        with torch.inference_mode():
            glob, tokens, grid, patches, stages = self.model.encode_image_features(batch)
        emb = glob.float().mean(0)
        emb = (emb / emb.norm().clamp_min(1e-12)).cpu().numpy()
        encoding = _ImageEncoding(emb, tokens[0].float().cpu().numpy(), tuple(grid),
                                  [s.float().cpu().numpy() for s in stages],
                                  patches[0].float().cpu().numpy())
        self._remember(self._image_cache, key, encoding, self._image_cache_size)
        return encoding

    @staticmethod
    def _remember(cache: OrderedDict, key: str, value: Any, size: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > size:
            cache.popitem(last=False)

    def prompt_texts(self, finding: str) -> tuple[list[str], list[str]]:
        """(positive, negated) sentences the zero-shot score of ``finding`` compares with."""
        return prompt_texts(self.checkpoint.prompts, finding)

    def _encode_prompts(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        prompts = {}
        for finding in FINDINGS:
            positive, negated = self.prompt_texts(finding)
            pos = self.embed_texts(positive).mean(0)
            neg = self.embed_texts(negated).mean(0)
            prompts[finding] = (pos / np.linalg.norm(pos), neg / np.linalg.norm(neg))
        return prompts

    # ----------------------------------------------------------------- scores

    @property
    def scale(self) -> float:
        """The model's learned inverse temperature (1/tau)."""
        return float(self.model.logit_scale_exp().detach())

    def raw_logits(self, encoding: _ImageEncoding) -> dict[str, float]:
        """Uncalibrated zero-shot logit per finding: scale x (cos to positive - cos to negated prompt)."""
        return {
            finding: self.scale * float(encoding.embedding @ pos - encoding.embedding @ neg)
            for finding, (pos, neg) in self._prompts.items()
        }

    def finding_logits(self, encoding: _ImageEncoding) -> dict[str, float]:
        """The uncalibrated score of each finding the flags rest on: the finding head's
        (core_model.finding_head) where the model has one, else the zero-shot logit."""
        raw = self.raw_logits(encoding)
        if self.finding_head is None or encoding.features is None:
            return raw
        try:
            head = self.finding_head.logits(encoding.features)
        except FindingHeadError as exc:
            raise CheckError(str(exc)) from None
        return {f: head.get(f, raw[f]) for f in raw}

    def probabilities(self, encoding: _ImageEncoding) -> dict[str, float]:
        """Calibrated probability that each finding is present (from :meth:`finding_logits`)."""
        out = {}
        for finding, logit in self.finding_logits(encoding).items():
            cal = self.calibration.get(finding, {})
            logit = cal.get("a", 1.0) * logit + cal.get("b", 0.0)
            out[finding] = float(1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60))))
        return out

    def threshold(self, finding: str) -> float:
        """The operating point for ``finding`` (calibration.json, else 0.5)."""
        return float(self.calibration.get(finding, {}).get("threshold", 0.5))

    def absent_threshold(self, finding: str) -> float:
        """Below this probability the image confidently lacks ``finding``."""
        return float(self.calibration.get(finding, {}).get("absent_threshold", min(0.2, self.threshold(finding) / 2)))

    def evidence(self, encoding: _ImageEncoding, finding: str) -> np.ndarray:
        """Raw evidence per patch (grid h x w): each patch's share of the finding head's score
        where the model has a head for the finding (core_model.finding_head), else its
        similarity to the finding minus its denial."""
        h, w = encoding.grid
        head = self.finding_head
        if head is not None and encoding.patches is not None:
            score = head.evidence(encoding.patches, finding)
            if score is not None:
                return score[: h * w].reshape(h, w).astype(np.float32)
        pos, neg = self._prompts[finding]
        score = encoding.tokens @ pos - encoding.tokens @ neg
        return score[: h * w].reshape(h, w).astype(np.float32)

    def heatmap(self, encoding: _ImageEncoding, finding: str) -> np.ndarray:
        """The evidence worth drawing (grid h x w): only the patches significantly above the
        image's own background, scaled to (0, 1]; every other patch is NaN (transparent).

        The background is the median patch and its spread the median absolute deviation
        (x 1.4826, a standard deviation for normal data); a patch is drawn when it lies
        more than :data:`EVIDENCE_Z` spreads above the background. A map with no such
        patch (evidence spread evenly over the film) draws nothing.
        """
        score = self.evidence(encoding, finding)
        return significant_evidence(score)

    # ----------------------------------------------------------------- the check

    def validation_auc(self, finding: str) -> float | None:
        """The zero-shot ROC AUC of ``finding`` on the calibration split (None: not measured)."""
        value = self.calibration.get(finding, {}).get("auc")
        return None if value is None else float(value)

    def reliable(self, finding: str) -> bool:
        """Whether the model sees ``finding`` well enough to flag it: its validation AUC is at
        least ``min_auc`` (a finding without a measured AUC counts as reliable)."""
        auc = self.validation_auc(finding)
        return auc is None or auc >= self.min_auc

    def check(
        self,
        images: Sequence[StudyImage | np.ndarray | str | os.PathLike[str]],
        report: str,
        *,
        study_key: str | None = None,
        heatmaps: bool = True,
        show_unreliable: bool = False,
    ) -> CheckResult:
        """Flags for one study and one draft report.

        The images the model reads go through the image check first
        (:mod:`core_model.image_check`): an image it refuses gives no flags and a
        warning that says why. ``show_unreliable`` shows the flags anyway when only
        the distribution gate refused (the image is unlike the training images),
        each marked ``unreliable``; a wrong modality, body part or an unreadable
        picture gives no flags in any case.
        """
        study = [as_study_image(im) for im in images]
        if not study:
            raise CheckError("no image given: a check needs at least one image of the study")
        if not isinstance(report, str):
            raise CheckError(f"the report must be text, not {type(report).__name__}")
        warnings = self._view_warnings(study)
        read = [im for im in study if im.view.upper() not in LATERAL] or list(study)
        size = int(self.model.config.image.image_size)
        refused = next((p for p in (im.problem or picture_problem(im.pixels, min_side=size)
                                    for im in read) if p), None)
        if refused is not None:
            return CheckResult([], {}, [*warnings, f"not checked: {refused}"], self.model_version,
                               self.variant, ImageCheck(False, refused))
        encoding = self.embed_study(study, study_key)
        verdict = self.image_verdict(encoding)
        if not verdict.accepted:
            warnings.append(verdict.reason if not show_unreliable else
                            verdict.reason.replace("no flags are shown", "the flags shown are "
                                                   "unreliable"))
        elif verdict.reason:
            warnings.append(verdict.reason)
        probs = self.probabilities(encoding)
        if not verdict.accepted and not show_unreliable:
            return CheckResult([], probs, warnings, self.model_version, self.variant, verdict,
                               self._mode_name())
        flags = self._flags(encoding, probs, report, warnings, heatmaps)
        if not verdict.accepted:
            for flag in flags:
                flag.unreliable = True
                flag.message = "Unreliable (image unlike the training images): " + flag.message
        return CheckResult(flags, probs, warnings, self.model_version, self.variant, verdict,
                           self._mode_name())

    def _mode_name(self) -> str | None:
        return self.mode.name if self.mode is not None else None

    def set_mode(self, name: str | None) -> Mode | None:
        """Check with the model's mode ``name`` (None: its default); unknown names are an error."""
        if not self.modes:
            self.mode = None
            return None
        if name is None:
            name = DEFAULT_MODE if DEFAULT_MODE in self.modes else next(iter(self.modes))
        if name not in self.modes:
            raise CheckError(f"the model has no flag mode {name!r}; it has "
                             f"{', '.join(self.modes)}")
        self.mode = self.modes[name]
        return self.mode

    def image_verdict(self, encoding: _ImageEncoding) -> ImageCheck:
        """The distribution gate on an encoded study (accepted, with a warning, when the
        model has no fitted image check)."""
        if self.image_description is None or encoding.features is None:
            return ImageCheck(True, "no image check was fitted for this model: images unlike "
                                    "its training images are not detected")
        return self.image_description.verdict(encoding.features, model=f"model {self.model_version}")

    def _view_warnings(self, study: Sequence[StudyImage]) -> list[str]:
        warnings = []
        if all(im.view.upper() in LATERAL for im in study):
            warnings.append(
                "only lateral views: the model reads frontal (PA/AP) radiographs, so these "
                "results are unreliable"
            )
        elif any(im.view.upper() in LATERAL for im in study):
            warnings.append("lateral view(s) ignored: the model reads the frontal images")
        if self.variant in ("clip", "clip-dt", "clip-dtc", "clip-g", "clip-g-dtcg", "softclip", "offclip"):
            warnings.append(
                f"model variant {self.variant!r} was trained without negation hard negatives; "
                "contradiction flags are less reliable"
            )
        return warnings

    def _flags(self, encoding: _ImageEncoding, probs: dict[str, float], report: str,
               warnings: list[str], heatmaps: bool) -> list[Flag]:
        labels = default_labeler().label_report(report)
        if not report.strip():
            warnings.append("the report is empty: only omissions can be flagged")
        elif not any(s.mentions for s in labels.sentences):
            warnings.append("the report mentions no finding: only omissions can be flagged")
        mode = self.mode
        if mode is not None:
            checked = mode.checked
            points = {f: mode.points.get(f) or Points.of(self.calibration.get(f)) for f in FINDINGS}
            why = f"in the {mode.label.lower()} mode, the model cannot check them usefully"
        else:
            checked = frozenset(f for f in FINDINGS if self.reliable(f))
            points = {f: Points.of(self.calibration.get(f)) for f in FINDINGS}
            why = f"the model does not see them reliably (validation AUC below {self.min_auc:.2f})"
        left_out = [f for f in FINDINGS if f not in checked]
        if left_out:
            warnings.append(f"not checked, {why}: " + ", ".join(f.lower() for f in left_out))
        mentioned, statements = self.statements(encoding, labels)
        flags = []
        alignment = mode.alignment if mode is not None else True
        for r in raise_flags(statements, mentioned, probs, points, checked, alignment=alignment):
            extra: dict[str, Any] = {}
            if r.statement is not None:
                extra = {"sentence": r.statement.sentence, "span": r.statement.span,
                         "alignment": r.statement.alignment}
            flags.append(self._flag(r.kind, r.entity, r.report_says, r.probability, encoding,
                                    heatmaps, **extra))
        return _dedupe(flags)

    def statements(self, encoding: _ImageEncoding, labels: Any) -> tuple[set[str], list[Statement]]:
        """Every finding a labelled report mentions, and its present / absent statements with
        the image's alignment (the sentence against the same with its assertion flipped)."""
        mentioned: set[str] = set()
        pairs: list[tuple[Any, Any]] = []
        for sentence in labels.sentences:
            for m in sentence.mentions:
                mentioned.add(m.observation)
                if m.assertion in (Assertion.PRESENT, Assertion.ABSENT):
                    pairs.append((sentence, m))
        # One text batch for every sentence and its flipped version (cached per sentence).
        flipped = [_flip(m.observation, m.assertion) for _, m in pairs]
        emb = self.embed_texts([s.text for s, _ in pairs] + flipped)
        n = len(pairs)
        statements = [
            Statement(m.observation, m.assertion, sentence.text, (sentence.start, sentence.end),
                      float(encoding.embedding @ emb[i] - encoding.embedding @ emb[n + i]))
            for i, (sentence, m) in enumerate(pairs)
        ]
        return mentioned, statements

    def _flag(self, kind: str, finding: str, says: str, p: float, encoding: _ImageEncoding, heatmaps: bool,
              **extra: Any) -> Flag:
        # what the image suggests follows from the rule that raised the flag (flag_rules)
        suggests = "present" if kind == "omission" or says == Assertion.ABSENT.value else "absent"
        return Flag(FlagKind(kind), finding, says, p, suggests, heatmap=self.heatmap(encoding, finding) if heatmaps else None,
                    message=describe_flag(kind, finding, says, suggests, p), **extra)


#: How many robust standard deviations above the image's background a patch must lie to be drawn.
EVIDENCE_Z = 2.0


def significant_evidence(score: np.ndarray, z: float = EVIDENCE_Z) -> np.ndarray:
    """``score`` where it stands out of its own background (see :meth:`Reader.heatmap`), scaled
    to (0, 1]; NaN elsewhere."""
    values = np.asarray(score, dtype=np.float32)
    background = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - background)))
    out = np.full(values.shape, np.nan, np.float32)
    if not spread > 0.0:
        return out
    standing = (values - background) / spread
    keep = standing > z
    if keep.any():
        top = float(standing[keep].max())
        out[keep] = np.where(top > z, (standing[keep] - z) / (top - z), 1.0) * 0.75 + 0.25
    return out


def prompt_texts(bank: dict[str, Any] | None, finding: str) -> tuple[list[str], list[str]]:
    """(positive, negated) prompts of ``finding``: the prompt bank's sentences where it has
    them (``prompts.json``, :mod:`core_model.prompts`), else the built-in prompts."""
    bank = bank or {}
    pos = (bank.get("positive") or {}).get(finding) or POSITIVE_PROMPTS[finding]
    neg = (bank.get("negative") or {}).get(finding) or NEGATIONS[finding]
    return list(pos), list(neg)


def _flip(finding: str, assertion: Assertion) -> str:
    """The statement with the finding's assertion flipped (for the alignment signal)."""
    return NEGATIONS[finding][0] if assertion is Assertion.PRESENT else POSITIVE_PROMPTS[finding][0]


def as_study_image(item: StudyImage | np.ndarray | str | os.PathLike[str]) -> StudyImage:
    """A study image from an array of display values, a file path, or a StudyImage.

    A DICOM file whose header says the model cannot read it (another modality or body
    part, a secondary capture, several frames) or a colour picture is not decoded: the
    image carries the reason (``problem``) and no pixels.
    """
    if isinstance(item, StudyImage):
        return item
    if isinstance(item, np.ndarray):
        if item.ndim != 2:
            raise CheckError(f"an image array must be 2-D grayscale, got shape {item.shape}")
        return StudyImage(item)  # preprocessing clips to [0, 1] after reducing the image
    path = Path(item)
    view, problem = _header_facts(path)
    if problem is not None:
        return StudyImage(np.zeros((0, 0), np.float32), view, str(path), problem)
    try:
        pixels = read_image(path)
    except ImageReadError as exc:
        raise CheckError(str(exc)) from exc
    return StudyImage(pixels, view, str(path))


def _header_facts(path: Path) -> tuple[str, str | None]:
    """(ViewPosition, why the file is not an image the model reads) without decoding pixels;
    ('', None) for a picture the model may read or a file the pixel reader will explain."""
    import pydicom

    if path.suffix.lower() not in (".dcm", ".dicom", ""):
        return "", colour_problem(path) if path.is_file() else None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        view = str(ds.get("ViewPosition", "") or "").strip().upper()
    except Exception:  # a corrupt file or element: the pixel reader gives the one-line reason
        return "", None
    return view, header_problem(ds)


__all__ = [
    "CheckError",
    "CheckResult",
    "Flag",
    "MIN_CHECK_AUC",
    "describe_flag",
    "POSITIVE_PROMPTS",
    "prompt_texts",
    "Reader",
    "StudyImage",
    "as_study_image",
]
