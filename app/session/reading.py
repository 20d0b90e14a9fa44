"""The reading session: one owner of what the reader sees and decides on one study.

Qt-free. The main window, the report editor and the flags panel observe a
:class:`ReadingSession`; none of them keeps a decision of its own:

* :meth:`open` a study: its report (or a recovered draft) and the flags of its
  latest check with their decisions, as storage holds them;
* :meth:`apply_check`: a check's flags are recorded against the exact report
  version they were raised on (the checked text is saved first); a decision
  carries to a new flag only as :func:`core_model.domain.flags.carries_decision`
  allows: same study, model, finding and sentence;
* :meth:`decide`, :meth:`save` / :meth:`autosave`, :meth:`sign` (final or
  preliminary), :meth:`add_addendum` to a final report, :meth:`signed_report`
  for the exports.

After every change the flags are read back from storage
(:meth:`Storage.review_state`), the same call sign-off uses, so what the panel
shows is what storage holds and what sign-off checks. Listeners get an event
name and a payload: ``opened``, ``closed``, ``flags``, ``saved`` (ReportState,
kind), ``save_failed`` (message), ``conflict`` (ConcurrentEditError),
``signed``, ``addendum``, ``error`` (message).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.session.corrections import Correction, suggest_correction
from app.session.recovery import RecoveryFiles
from app.storage import (
    ConcurrentEditError,
    FlagRecord,
    FlagSuperseded,
    InvalidInput,
    ReportSigned,
    ReportState,
    ReviewState,
    SignOffBlocked,
    Storage,
    StorageError,
)
from core_model.domain.flags import Decision
from core_model.inference import Flag, describe_flag

Listener = Callable[[str, Any], None]


def study_key(study_id: int) -> str:
    """The key a study's checks are requested and cached under."""
    return f"study-{study_id}"


@dataclass
class FlagReview:
    """One flag as the reader reviews it: the flag, its suggested correction, the decision.

    ``record_id`` is the flag's row in storage (None for a panel used on its own);
    in a reading session the decision and reason are always storage's.
    """

    flag: Flag
    correction: Correction | None = None
    decision: str = Decision.NONE.value
    reason: str | None = None
    record_id: int | None = None

    @property
    def reviewed(self) -> bool:
        return self.decision != Decision.NONE


@dataclass(frozen=True)
class SaveOutcome:
    ok: bool
    message: str
    conflict: ConcurrentEditError | None = None


def flag_of_record(record: FlagRecord) -> Flag:
    """The flag a stored record describes (no heatmap: that comes with the next check)."""
    suggests = record.image_suggests or ""
    message = describe_flag(record.kind, record.entity, record.report_says, suggests,
                            record.image_probability)
    if record.unreliable:
        message = "Unreliable (image unlike the training images): " + message
    return Flag(
        record.kind, record.entity, record.report_says, record.image_probability, suggests,
        sentence=record.sentence, span=record.span, repeats=record.repeats, message=message,
        unreliable=record.unreliable,
    )


class ReadingSession:
    """The open study's report, flags and decisions (see the module docstring)."""

    def __init__(self, storage: Storage, *, recovery: RecoveryFiles | None = None) -> None:
        self.storage = storage
        self.recovery = recovery or RecoveryFiles(storage)
        self.study_id: int | None = None
        self.state: ReportState | None = None
        #: Whether a check is expected before sign-off (a model is loaded and the study has
        #: an image it reads); the window says so.
        self.checking = False
        #: The model whose flags the reader reviews (the window sets it when a model loads).
        self.model_version: str | None = None
        self._review: ReviewState | None = None
        self._reviews: list[FlagReview] = []
        self._flags_of_check: dict[int, Flag] = {}  # record id -> the check's flag (heatmap)
        self._checked_version: int | None = None
        self._in_conflict = False
        self._listeners: list[Listener] = []

    # ----------------------------------------------------------------- observers

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, event: str, payload: Any = None) -> None:
        for listener in list(self._listeners):
            listener(event, payload)

    # ----------------------------------------------------------------- the study

    def open(self, study_id: int) -> str | None:
        """Start reading ``study_id``; returns recovered text newer than storage's, if any."""
        self.study_id = study_id
        self._in_conflict = False
        self._flags_of_check = {}
        self._checked_version = None
        self._reload()
        assert self.state is not None
        recovered = self.recovery.read(study_id)
        if recovered is not None and (recovered == self.state.text or self.state.signed):
            self.recovery.drop(study_id)  # nothing newer (or too late: the report is final)
            recovered = None
        self._emit("opened", study_id)
        return recovered

    def close(self, text: str | None = None) -> SaveOutcome | None:
        """Autosave ``text`` (the last words) and stop reading the study."""
        outcome = self.autosave(text) if text is not None and self.study_id is not None else None
        self.study_id = None
        self.state = None
        self._review = None
        self._reviews = []
        self._flags_of_check = {}
        self._emit("closed")
        return outcome

    @property
    def signed(self) -> bool:
        return self.state is not None and self.state.signed

    def reviews(self) -> list[FlagReview]:
        """The current flags with their decisions, as storage holds them, in check order."""
        return list(self._reviews)

    def review_state(self) -> ReviewState | None:
        """Storage's answer for the open study: what the panel shows and sign-off checks."""
        return self._review

    def _reload(self) -> None:
        assert self.study_id is not None
        review = self.storage.review_state(self.study_id)
        self._review = review
        self.state = review.report
        text = review.report.text
        reviews = []
        for record in review.flags:
            flag = self._flags_of_check.get(record.id) or flag_of_record(record)
            correction = suggest_correction(flag, text) if text and not review.report.signed else None
            reviews.append(FlagReview(flag, correction, str(record.decision),
                                      record.dismiss_reason, record.id))
        self._reviews = reviews

    # ----------------------------------------------------------------- the text

    def dirty(self, text: str) -> bool:
        return self.state is not None and not self.state.signed and text != self.state.text

    def autosave(self, text: str) -> SaveOutcome | None:
        """``text`` as an ``autosave`` version when it changed; None when there is nothing to do."""
        if self.study_id is None or self.state is None or not self.dirty(text):
            return None
        if self._in_conflict:
            self.recovery.write(self.study_id, text)
            return None  # the reader decides how to resolve it; their words are kept meanwhile
        return self._save(text, "autosave")

    def save(self, text: str) -> SaveOutcome:
        """``text`` as a ``save`` version (a deliberate save is a version even when unchanged)."""
        if self.study_id is None or self.state is None:
            return SaveOutcome(False, "no study is open")
        if self.state.signed:
            return SaveOutcome(False, "the report is signed; it can no longer be edited "
                                      "(add an addendum instead)")
        return self._save(text, "save")

    def overwrite_after_conflict(self, text: str) -> SaveOutcome:
        """Save the reader's text on top of the version that won the race (a new version)."""
        if self.study_id is None:
            return SaveOutcome(False, "no study is open")
        self._in_conflict = False
        self._reload()
        return self._save(text, "save")

    def take_theirs(self, text: str) -> str:
        """Give up the reader's text for the stored one (theirs stays in the recovery file)."""
        assert self.study_id is not None
        self.recovery.write(self.study_id, text)
        self._in_conflict = False
        self._reload()
        assert self.state is not None
        self._emit("flags")
        return self.state.text

    def _save(self, text: str, kind: str) -> SaveOutcome:
        assert self.study_id is not None and self.state is not None
        study_id = self.study_id
        try:
            if kind == "autosave":
                state = self.storage.autosave(study_id, text, expected_version=self.state.version)
            else:
                state = self.storage.save_report(study_id, text, kind=kind,
                                                 expected_version=self.state.version)
        except ConcurrentEditError as exc:
            self._in_conflict = True
            self.recovery.write(study_id, text)
            self._emit("conflict", exc)
            return SaveOutcome(False, str(exc), conflict=exc)
        except StorageError as exc:
            where = self.recovery.write(study_id, text)
            message = f"not saved: {exc}" + (f" (your text is kept in {where})" if where else "")
            self._emit("save_failed", message)
            return SaveOutcome(False, message)
        self.state = state
        self.recovery.drop(study_id)
        self._emit("saved", (state, kind))
        return SaveOutcome(True, f"saved version {state.version}")

    # ----------------------------------------------------------------- flags

    def apply_check(self, key: str | None, text: str, result: Any) -> bool:
        """Take a check's result for the study under ``key`` of ``text``.

        Returns False (and changes nothing) when the result is not the open
        study's, or could not be recorded (the reason goes to listeners as
        ``error`` or ``save_failed``). On a final report the flags never change:
        the check only lends its heatmaps to the stored flags that match it.
        """
        if self.study_id is None or self.state is None or key != study_key(self.study_id):
            return False
        flags: Sequence[Flag] = list(result.flags)
        if self.state.signed:
            self._lend_heatmaps(flags)
            self._emit("flags")
            return True
        if self.dirty(text):
            outcome = self.autosave(text)
            if outcome is None or not outcome.ok:
                self._emit("error", "flags not recorded: the checked text could not be saved")
                return False
        model_version = str(getattr(result, "model_version", "") or "unknown")
        try:
            records = self.storage.record_flags(self.study_id, flags, model_version,
                                                report_version=self.state.version or None)
        except StorageError as exc:
            self._emit("error", f"flags not recorded: {exc}")
            return False
        self._flags_of_check = {r.id: f for r, f in zip(records, flags, strict=True)}
        self._checked_version = self.state.version
        self._reload()
        self._emit("flags")
        return True

    def _lend_heatmaps(self, flags: Sequence[Flag]) -> None:
        by_identity = {(str(f.kind), f.entity, f.report_says, f.sentence): f for f in flags}
        for review in self._reviews:
            f = review.flag
            match = by_identity.get((str(f.kind), f.entity, f.report_says, f.sentence))
            if match is not None and match.heatmap is not None and review.record_id is not None:
                review.flag = dataclasses.replace(f, heatmap=match.heatmap)
                self._flags_of_check[review.record_id] = review.flag

    def decide(self, record_id: int, decision: str, reason: str | None = None) -> FlagReview:
        """Record the reader's decision on a current flag of the open study."""
        if self.study_id is None or self.state is None:
            raise InvalidInput("no study is open")
        if self.state.signed:
            raise ReportSigned("the report is signed; its flags and decisions are final")
        if record_id not in {r.record_id for r in self._reviews}:
            raise FlagSuperseded(f"flag {record_id} is not a current flag of study {self.study_id}")
        try:
            self.storage.decide_flag(record_id, decision, reason)
        finally:
            self._reload()
            self._emit("flags")
        return next(r for r in self._reviews if r.record_id == record_id)

    # ----------------------------------------------------------------- sign-off

    def sign(self, text: str, *, preliminary: bool = False) -> ReportState:
        """Sign the report final (or issue it preliminary). ``text`` is the editor's: it is
        saved first; a report whose current text was not checked is refused while
        checking is on."""
        if self.study_id is None or self.state is None:
            raise InvalidInput("no study is open")
        if self.dirty(text) or self.state.version == 0:
            outcome = self.save(text)
            if not outcome.ok:
                raise SignOffBlocked(f"not signed: {outcome.message}")
        if self.checking and self._checked_version != self.state.version:
            raise SignOffBlocked("not signed: the report changed since it was last checked; "
                                 "wait for the check to finish")
        reviewed = self._review.flags if self._review is not None else ()
        model_version = reviewed[0].model_version if reviewed else self.model_version
        try:
            state = self.storage.sign(self.study_id, model_version,
                                      expected_version=self.state.version, preliminary=preliminary)
        finally:
            self._reload()
        self.recovery.drop(self.study_id)
        self._emit("signed", state)
        return state

    def changed_since_issued(self) -> bool:
        """A preliminary report whose text changed after it was issued."""
        if self.study_id is None or self.state is None or not self.state.preliminary:
            return False
        issued = [v for v in self.storage.report_history(self.study_id) if v.kind == "preliminary"]
        return bool(issued) and issued[-1].text != self.state.text

    def add_addendum(self, text: str) -> ReportState:
        """A signed addendum under the final report (its own author and time)."""
        if self.study_id is None:
            raise InvalidInput("no study is open")
        state = self.storage.add_addendum(self.study_id, text)
        self._reload()
        self._emit("addendum", state)
        return state

    def signed_report(self) -> Any:
        """The final report as the exports take it (:class:`app.export.SignedReport`):
        always storage's signed text with its addenda, never the editor's."""
        from app.export.text import SignedReport

        if self.study_id is None:
            raise InvalidInput("no study is open")
        study = self.storage.study(self.study_id)
        state = self.storage.report(self.study_id)
        if state.preliminary:  # what was issued, not what was typed since
            issued = [v for v in self.storage.report_history(self.study_id)
                      if v.kind == "preliminary"]
            if issued:
                state = dataclasses.replace(state, text=issued[-1].text)
        user = self.storage.user(state.signed_by) if state.signed_by else None
        return SignedReport.from_records(
            study, state, signer_name=(user.display_name or None) if user else None)
