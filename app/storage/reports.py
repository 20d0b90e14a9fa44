"""Reports, their versions, flags and sign-off.

Optimistic locking: every report row carries ``version_id`` and every UPDATE
is conditional on the version that was read, so a save based on a stale
version never overwrites another writer (:class:`ConcurrentEditError`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from app.storage import models as m
from app.storage.core import StorageCore, report_row, study_row
from app.storage.errors import (
    ConcurrentEditError,
    FlagSuperseded,
    InvalidInput,
    NotFound,
    ReportSigned,
    SignOffBlocked,
    StorageError,
)
from app.storage.inputs import enum_value, flag_columns
from app.storage.records import AddendumRecord, FlagRecord, ReportState, ReportVersionRecord
from core_model.domain.flags import FlagIdentity, carries_decision, resolves_by_edit, same_flag

_MAX_LISTED_FLAGS = 5


class Reports(StorageCore):
    """Report text, history, flags and sign-off (part of :class:`Storage`)."""

    def report(self, study_id: int) -> ReportState:
        """The study's current report (with its addenda); version 0 and empty text when none
        was saved."""
        with self._transaction() as s:
            study_row(s, study_id)
            return _state(s, report_row(s, study_id), study_id)

    def save_report(
        self,
        study_id: int,
        text: str,
        *,
        kind: str | m.VersionKind = m.VersionKind.SAVE,
        expected_version: int | None,
    ) -> ReportState:
        """Store ``text`` as the new current report and append it to the history.

        ``expected_version`` is the version the caller's text is based on (0 or
        None: no report yet). If the stored report has moved on, nothing is
        written and :class:`ConcurrentEditError` carries both texts.
        """
        kind = enum_value(m.VersionKind, kind, "kind")
        if kind == m.VersionKind.SIGN:
            raise InvalidInput("use sign() to sign a report")
        return self._save(study_id, text, kind, expected_version, skip_unchanged=False)

    def autosave(self, study_id: int, text: str, *, expected_version: int | None) -> ReportState:
        """Like :meth:`save_report` with kind ``autosave``; a no-op when the text is unchanged."""
        return self._save(
            study_id, text, m.VersionKind.AUTOSAVE, expected_version, skip_unchanged=True
        )

    def _save(
        self,
        study_id: int,
        text: str,
        kind: m.VersionKind,
        expected_version: int | None,
        *,
        skip_unchanged: bool,
    ) -> ReportState:
        if not isinstance(text, str):
            raise InvalidInput("report text must be a string")
        expected = expected_version or 0
        try:
            with self._transaction(write=True, unsaved_text=text) as s:
                actor = self._actor(s, "saving a report")
                study_row(s, study_id)
                row = report_row(s, study_id, for_update=True)
                current = row.version_id if row is not None else 0
                if row is not None and row.status == m.ReportStatus.FINAL:
                    raise ReportSigned(
                        f"the report of study {study_id} was signed by {row.signed_by}; "
                        "it can no longer be edited (add an addendum instead)"
                    )
                if current != expected:
                    raise self._conflict(s, study_id, text, expected)
                if row is None:
                    row = m.Report(study_id=study_id, text=text, status=m.ReportStatus.DRAFT.value)
                    s.add(row)
                elif skip_unchanged and row.text == text:
                    return _state(s, row, study_id)
                else:
                    row.text = text
                    row.updated_at = m.utcnow()  # a save of unchanged text is a version too
                s.flush()  # assigns the new version_id, or raises StaleDataError
                s.add(
                    m.ReportVersion(
                        report_id=row.id,
                        version=row.version_id,
                        text=text,
                        author=actor.username,
                        kind=kind.value,
                    )
                )
                self._audit(
                    s,
                    f"report.{kind.value}",
                    "study",
                    study_id,
                    {"version": row.version_id, "chars": len(text)},
                )
                return _state(s, row, study_id)
        except (StaleDataError, sa.exc.IntegrityError) as exc:
            # Another writer got in between our read and our write: a newer
            # version_id, or the study's first report inserted at the same time.
            with self._transaction() as s:
                conflict = self._conflict(s, study_id, text, expected)
            if isinstance(exc, sa.exc.IntegrityError) and conflict.their_version == expected:
                raise  # not a concurrent edit
            raise conflict from None

    def _conflict(
        self, s: Session, study_id: int, text: str | None, expected: int
    ) -> ConcurrentEditError:
        row = report_row(s, study_id)
        their_version = row.version_id if row is not None else 0
        their_author = None
        if row is not None:
            their_author = s.scalar(
                sa.select(m.ReportVersion.author)
                .where(m.ReportVersion.report_id == row.id)
                .order_by(m.ReportVersion.version.desc())
                .limit(1)
            )
        by = f" by {their_author}" if their_author else ""
        outcome = "your text was not saved and is kept" if text is not None else "not signed"
        return ConcurrentEditError(
            f"the report of study {study_id} was changed{by} (now version {their_version}, "
            f"yours was based on {expected}); {outcome}",
            unsaved_text=text,
            their_text=row.text if row is not None else "",
            their_version=their_version,
            their_author=their_author,
        )

    def report_history(self, study_id: int) -> list[ReportVersionRecord]:
        """Every saved version of the study's report, oldest first."""
        with self._transaction() as s:
            study_row(s, study_id)
            rows = s.scalars(
                sa.select(m.ReportVersion)
                .join(m.Report, m.Report.id == m.ReportVersion.report_id)
                .where(m.Report.study_id == study_id)
                .order_by(m.ReportVersion.version)
            )
            return [ReportVersionRecord.of(r) for r in rows]

    # -- flags and sign-off ------------------------------------------------------------

    def record_flags(
        self,
        study_id: int,
        flags: Iterable[Mapping[str, Any] | Any],
        model_version: str,
        *,
        report_version: int | None = None,
    ) -> list[FlagRecord]:
        """Store the flags of a new check of the study; they replace the previous check's.

        ``flags`` are ``core_model`` ``Flag`` objects or their ``to_json()``
        dictionaries; ``report_version`` is the version of the text that was
        checked (default: the current one). Older flags are kept, marked
        superseded. A decision already taken on one of them carries over to a
        new flag only when :func:`core_model.domain.flags.carries_decision`
        says it is the same finding in the same sentence of this study, by the
        same model, and the decision was a dismissal (an acceptance or an edit
        asked for the text to change: a flag still raised is reviewed afresh).
        """
        if not model_version:
            raise InvalidInput("record_flags needs the model_version that produced the flags")
        parsed = [flag_columns(f) for f in flags]
        with self._transaction(write=True) as s:
            self._actor(s, "recording flags")
            study_row(s, study_id)
            report = report_row(s, study_id, for_update=True)
            if report is not None and report.status == m.ReportStatus.FINAL:
                raise ReportSigned(f"the report of study {study_id} is signed; flags are final")
            now = m.utcnow()
            previous = list(
                s.scalars(
                    sa.select(m.Flag)
                    .where(m.Flag.study_id == study_id, m.Flag.superseded_at.is_(None))
                    .order_by(m.Flag.id)
                )
            )
            decided = [(_identity(f), f) for f in previous if f.decision != m.Decision.NONE]
            for f in previous:
                f.superseded_at = now
            if report_version is None and report is not None:
                report_version = report.version_id
            rows = []
            carried = 0
            for fields in parsed:
                row = m.Flag(
                    study_id=study_id,
                    report_id=report.id if report is not None else None,
                    report_version=report_version,
                    model_version=model_version,
                    **fields,
                )
                identity = _identity(row)
                old = next((f for i, f in decided if carries_decision(i, f.decision, identity)),
                           None)
                if old is not None:
                    carried += 1
                    row.decision = old.decision
                    row.dismiss_reason = old.dismiss_reason
                    row.decided_by = old.decided_by
                    row.decided_at = old.decided_at
                rows.append(row)
            s.add_all(rows)
            s.flush()
            self._audit(
                s,
                "flags.record",
                "study",
                study_id,
                {
                    "model_version": model_version,
                    "report_version": report_version,
                    "flags": len(rows),
                    "superseded": len(previous),
                    "decisions_kept": carried,
                },
            )
            return [FlagRecord.of(r) for r in rows]

    def flags(self, study_id: int, *, include_superseded: bool = False) -> list[FlagRecord]:
        """The flags of the study's latest check (and older ones on request), by id."""
        with self._transaction() as s:
            query = sa.select(m.Flag).where(m.Flag.study_id == study_id).order_by(m.Flag.id)
            if not include_superseded:
                query = query.where(m.Flag.superseded_at.is_(None))
            return [FlagRecord.of(r) for r in s.scalars(query)]

    def unreviewed_flags(self, study_id: int) -> list[FlagRecord]:
        return [f for f in self.flags(study_id) if not f.reviewed]

    def decide_flag(
        self, flag_id: int, decision: str | m.Decision, reason: str | None = None
    ) -> FlagRecord:
        """Record the reviewer's decision on a flag (``none`` takes a decision back)."""
        decision = enum_value(m.Decision, decision, "decision")
        if reason is not None:
            reason = reason.strip() or None
        with self._transaction(write=True) as s:
            actor = self._actor(s, "reviewing a flag")
            study_id = s.scalar(sa.select(m.Flag.study_id).where(m.Flag.id == flag_id))
            if study_id is None:
                raise NotFound(f"no flag {flag_id}")
            report = report_row(s, study_id, for_update=True)
            row = s.get_one(m.Flag, flag_id)  # read after the lock: a re-check may just have run
            if row.superseded_at is not None:
                raise FlagSuperseded(
                    f"flag {flag_id} belongs to an older check of study {row.study_id}"
                )
            if report is not None and report.status == m.ReportStatus.FINAL:
                raise ReportSigned(f"the report of study {row.study_id} is signed; flags are final")
            before = row.decision
            row.decision = decision.value
            if decision == m.Decision.NONE:
                row.dismiss_reason = row.decided_by = row.decided_at = None
            else:
                row.dismiss_reason = reason if decision == m.Decision.DISMISSED else None
                row.decided_by = actor.username
                row.decided_at = m.utcnow()
            s.flush()
            self._audit(
                s,
                "flag.decide",
                "flag",
                flag_id,
                {
                    "study_id": row.study_id,
                    "entity": row.entity,
                    "kind": row.kind,
                    "from": before,
                    "to": decision.value,
                    "reason": row.dismiss_reason,
                },
            )
            return FlagRecord.of(row)

    def review_state(self, study_id: int) -> ReviewState:
        """The study's report and the flags of its latest check, with their decisions.

        What the flags panel shows and what sign-off checks are both this one
        answer: the report can be signed exactly when
        :attr:`ReviewState.sign_obstacle` is None.
        """
        with self._transaction() as s:
            return _review_state(s, study_id)

    def can_sign(self, study_id: int) -> bool:
        """True when the report is a non-empty draft (or preliminary) and every current flag
        is decided."""
        return self.review_state(study_id).sign_obstacle is None

    def sign(
        self,
        study_id: int,
        model_version: str | None,
        *,
        expected_version: int | None = None,
        preliminary: bool = False,
    ) -> ReportState:
        """Sign the report final (or issue it as ``preliminary``): refused while any current
        flag has no decision.

        ``model_version`` is the model whose flags were reviewed (recorded with
        the signature). With ``expected_version``, signing is also refused if
        the report changed since the caller last read it. A final report never
        changes again (the database refuses it too); a preliminary one stays
        editable until it is signed final.
        """
        what = "issuing a preliminary report" if preliminary else "signing a report"
        with self._transaction(write=True) as s:
            actor = self._actor(s, what)
            row = report_row(s, study_id, for_update=True)  # before the checks: see report_row
            obstacle = _review_state(s, study_id).obstacle(preliminary=preliminary)
            if obstacle is not None:
                raise obstacle
            assert row is not None
            if expected_version is not None and row.version_id != expected_version:
                raise self._conflict(s, study_id, None, expected_version)
            status = m.ReportStatus.PRELIMINARY if preliminary else m.ReportStatus.FINAL
            kind = m.VersionKind.PRELIMINARY if preliminary else m.VersionKind.SIGN
            row.status = status.value
            row.signed_by = actor.username
            row.signed_at = m.utcnow()
            row.model_version = model_version
            s.flush()
            s.add(
                m.ReportVersion(
                    report_id=row.id,
                    version=row.version_id,
                    text=row.text,
                    author=actor.username,
                    kind=kind.value,
                )
            )
            self._audit(
                s,
                "report.preliminary" if preliminary else "report.sign",
                "study",
                study_id,
                {"version": row.version_id, "model_version": model_version},
            )
            return _state(s, row, study_id)

    def add_addendum(self, study_id: int, text: str) -> ReportState:
        """Add a signed addendum to a final report: its own author and time, shown under
        the original, which does not change."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("an addendum needs text")
        with self._transaction(write=True, unsaved_text=text) as s:
            actor = self._actor(s, "adding an addendum")
            row = report_row(s, study_id, for_update=True)
            if row is None or row.status != m.ReportStatus.FINAL:
                raise InvalidInput(
                    f"the report of study {study_id} is not signed final; edit it instead "
                    "of adding an addendum"
                )
            addendum = m.ReportAddendum(report_id=row.id, text=text.strip(), author=actor.username)
            s.add(addendum)
            s.flush()
            self._audit(
                s,
                "report.addendum",
                "study",
                study_id,
                {"addendum": addendum.id, "chars": len(addendum.text), "version": row.version_id},
            )
            return _state(s, row, study_id)


@dataclass(frozen=True)
class ReviewState:
    """A study's report and the flags of its latest check (:meth:`Reports.review_state`).

    ``resolved`` are flags of earlier checks the reader accepted or chose to edit
    and that the changed text no longer raises (the latest of each); ``study``
    names the study as the worklist does (its accession number).
    """

    report: ReportState
    flags: tuple[FlagRecord, ...]
    resolved: tuple[FlagRecord, ...] = ()
    study: str = ""

    @property
    def unreviewed(self) -> list[FlagRecord]:
        return [f for f in self.flags if not f.reviewed]

    @property
    def reviewed_count(self) -> int:
        return sum(f.reviewed for f in self.flags)

    @property
    def unresolved(self) -> list[FlagRecord]:
        """Current flags accepted or marked for an edit that the text does not show yet."""
        return [f for f in self.flags if resolves_by_edit(f.decision)]

    def extras(self) -> list[str]:
        """What the count of reviewed flags does not say: flags awaiting the edit they were
        accepted or marked for, and flags an edit resolved."""
        out = []
        if self.unresolved:
            out.append(f"{len(self.unresolved)} awaiting an edit")
        if self.resolved:
            out.append(f"{len(self.resolved)} resolved by an edit")
        return out

    def summary(self) -> str:
        """``4 flags, 3 reviewed`` and :meth:`extras` (what the flags panel says)."""
        n = len(self.flags)
        return "; ".join([f"{n} flag{'s' if n != 1 else ''}, {self.reviewed_count} reviewed",
                          *self.extras()])

    @property
    def sign_obstacle(self) -> StorageError | None:
        """Why the report cannot be signed now, or None when it can."""
        return self.obstacle(preliminary=False)

    def obstacle(self, *, preliminary: bool) -> StorageError | None:
        """Why the report cannot be signed (or issued preliminary) now, or None when it can."""
        report = self.report
        study = self.study or f"study {report.study_id}"
        verb = "issue" if preliminary else "sign"
        if report.version == 0 or not report.text.strip():
            return SignOffBlocked(f"The report of {study} is empty: nothing to {verb}.")
        if report.signed:
            return ReportSigned(f"The report of {study} is already signed by {report.signed_by}.")
        blocked = [(self.unreviewed, "not reviewed"),
                   (self.unresolved, "accepted or marked for an edit, but the report still says it")]
        for flags, why in blocked:
            if flags:
                listed = "; ".join(f.describe() for f in flags[:_MAX_LISTED_FLAGS])
                more = len(flags) - _MAX_LISTED_FLAGS
                tail = f"; and {more} more" if more > 0 else ""
                return SignOffBlocked(
                    f"Cannot {verb} {study}: {len(flags)} flag(s) {why}: {listed}{tail}",
                    unreviewed=flags,
                )
        return None


def _state(s: Session, row: m.Report | None, study_id: int) -> ReportState:
    if row is None:
        return ReportState.empty(study_id)
    addenda = s.scalars(
        sa.select(m.ReportAddendum)
        .where(m.ReportAddendum.report_id == row.id)
        .order_by(m.ReportAddendum.id)
    )
    return ReportState.of(row, tuple(AddendumRecord.of(a) for a in addenda))


def _review_state(s: Session, study_id: int) -> ReviewState:
    study = study_row(s, study_id)
    report = _state(s, report_row(s, study_id), study_id)
    rows = list(s.scalars(
        sa.select(m.Flag)
        .where(
            m.Flag.study_id == study_id,
            m.Flag.superseded_at.is_(None)
            | m.Flag.decision.in_([m.Decision.ACCEPTED.value, m.Decision.EDITED.value]),
        )
        .order_by(m.Flag.id)
    ))
    current = [f for f in rows if f.superseded_at is None]
    shown = [_identity(f) for f in current]
    resolved: dict[tuple[Any, ...], m.Flag] = {}
    for f in rows:  # oldest first: the latest decision on a flag wins
        if f.superseded_at is not None and resolves_by_edit(f.decision):
            identity = _identity(f)
            if not any(same_flag(identity, now) for now in shown):
                resolved[(identity.finding_key(), identity.sentences)] = f
    label = f"accession {study.accession_number}" if study.accession_number else f"study {study_id}"
    return ReviewState(report, tuple(FlagRecord.of(f) for f in current),
                       tuple(FlagRecord.of(f) for f in resolved.values()), label)


def _identity(row: m.Flag) -> FlagIdentity:
    sentences = [row.sentence] + [r["sentence"] for r in (row.repeats or [])]
    return FlagIdentity.of(
        study=row.study_id, report_version=row.report_version, model_version=row.model_version,
        kind=row.kind, entity=row.entity, report_says=row.report_says, sentences=sentences,
    )
