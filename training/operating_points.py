"""Fit a model's flag modes on the validation split, for what a reader experiences.

A mode is fitted on the reader-facing consistency suite's drafts of the
validation split (:mod:`training.reader_suite`): truthful drafts, and drafts
with one injected error each (a flip, an omission, a false finding). Every
statement and every unmentioned finding of every draft is an *opportunity* for
one rule of :mod:`core_model.flag_rules` on one finding:

``present``      a denial, flagged at or above the point (a contradiction);
``unsupported``  an assertion, flagged below the point (the ``absent`` point is
                 set equal: a contradiction when the alignment also goes against
                 the sentence, or when the mode does not use the alignment);
``omission``     a finding the draft leaves out, flagged at or above the point.

Each (finding, rule) starts switched off. A greedy search then opens, step by
step, the point that buys the most error-catching per truthful draft newly
flagged, while the expected share of truthful drafts carrying any flag stays
within the mode's budget. Catches are weighed per error kind (each kind's
recall counts equally), so the rarer error kinds are not starved. Three
guards keep the points honest on studies validation never saw:

* a point's false-flag share is counted over the group's *studies* (a study's
  drafts share its image) and taken one standard error above its estimate
  (:data:`COST_Z`): a point in the far tail, where validation happened to
  flag nothing, is not free;
* a point must make a flag at least :data:`MIN_LIKELIHOOD_RATIO` times likelier
  on an erroneous statement than on a truthful one: a flag on every
  assertion of a rare finding is cheap on the suite's drafts and says nothing
  about the image;
* points never cross 0.5: no flag may say the image shows a finding it gives
  a probability below 0.5, or lacks one above it.

A finding no point was opened for is not checked in that mode, and the check
says so. Both ways of using the image-sentence alignment are fitted and the
better kept.

Everything is replayed from probabilities computed once per study, so fitting
all modes takes seconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core_model.flag_rules import Points
from core_model.operating_points import MODES, Mode, save_modes
from core_model.text.observations import FINDINGS, Assertion
from training.intervals import wilson
from training.reader_drafts import ERROR_KINDS
from training.reader_suite import Case, score

#: Rules a mode fits, each with the error kind it catches and its direction.
FITTED_RULES = ("present", "unsupported", "omission")
_CATCHES = {"present": "flip", "unsupported": "false_finding", "omission": "omission"}
#: How many candidate points ahead of the current one a greedy step looks at.
LOOKAHEAD = 24
#: A point must make a flag this much likelier on an erroneous statement than on a truthful one
#: (P(flag | error) / P(flag | truthful), the truthful share smoothed by half a statement). A
#: point that fires on a finding's every assertion because the finding is rare says nothing
#: about the image, however cheap it is on the suite's drafts.
MIN_LIKELIHOOD_RATIO = 5.0
#: A point's false-flag share is taken one standard error (Wilson) above its estimate: the
#: greedy search picks points where validation happened to flag few truthful statements, and
#: without the margin a mode flags more drafts on new studies than on validation.
COST_Z = 1.0


@dataclass
class Opportunities:
    """Every (draft, finding, rule) where a flag could be raised, as flat arrays."""

    case: np.ndarray  # index of the draft
    group: np.ndarray  # finding index * len(FITTED_RULES) + rule index
    p: np.ndarray  # the model's probability of the finding
    against: np.ndarray  # the alignment goes against the sentence
    hit: np.ndarray  # a flag here catches the draft's injected error
    truthful: np.ndarray  # per draft: no injected error
    error_kind: np.ndarray  # per draft: index in ERROR_KINDS, -1 when truthful
    study: np.ndarray  # per draft: index of its study (drafts of one study share its image)

    @property
    def drafts(self) -> int:
        return len(self.truthful)


def opportunities(cases: Sequence[Case]) -> Opportunities:
    """The opportunities of the suite's cases (drafts of unreadable studies have none: the
    product shows no flags on them)."""
    rows: list[tuple[int, int, float, bool, bool]] = []
    truthful = np.zeros(len(cases), bool)
    error_kind = np.full(len(cases), -1, int)
    studies: dict[int, int] = {}
    study = np.array([studies.setdefault(id(c.probabilities), len(studies)) for c in cases], int)
    for i, case in enumerate(cases):
        error = case.draft.error
        truthful[i] = error is None
        if error is not None:
            error_kind[i] = ERROR_KINDS.index(error)
        if not case.readable:
            continue
        stated = set()
        for s in case.statements:
            stated.add(s.entity)
            rule = "present" if s.assertion is Assertion.ABSENT else "unsupported"
            rows.append(_row(i, case, s.entity, rule, s.alignment < 0))
        for finding in FINDINGS:
            if finding not in case.mentioned and finding not in stated:
                rows.append(_row(i, case, finding, "omission", True))
    if not rows:
        raise ValueError("no draft could be checked: nothing to fit operating points on")
    case_i, group, p, against, hit = (np.asarray(c) for c in zip(*rows, strict=True))
    return Opportunities(case_i, group, p.astype(float), against.astype(bool), hit.astype(bool),
                         truthful, error_kind, study)


def _row(i: int, case: Case, finding: str, rule: str, against: bool) -> tuple[int, int, float, bool, bool]:
    draft = case.draft
    hit = draft.error is not None and draft.entity == finding and _CATCHES[rule] == draft.error
    group = FINDINGS.index(finding) * len(FITTED_RULES) + FITTED_RULES.index(rule)
    return i, group, case.probabilities[finding], against, bool(hit)


class _Group:
    """One (finding, rule): its candidate points, and at each the errors it catches and the
    share of its truthful statements it flags."""

    def __init__(self, opp: Opportunities, g: int, alignment: bool) -> None:
        idx = np.flatnonzero(opp.group == g)
        self.rule = FITTED_RULES[g % len(FITTED_RULES)]
        p, hit = opp.p[idx], opp.hit[idx]
        # a denial the alignment does not go against never fires in a mode that uses it
        blocked = (~opp.against[idx] if self.rule == "present" and alignment
                   else np.zeros(len(idx), bool))
        self.kind = ERROR_KINDS.index(_CATCHES[self.rule])
        self.hits_p = p[hit & ~blocked]
        self.truthful_p = p[~hit]
        self.truthful_blocked = blocked[~hit]
        # the drafts of one study repeat its probabilities: the evidence is its studies
        self.truthful_studies = len(np.unique(opp.study[opp.case[idx[~hit]]]))
        #: truthful statements of this group per truthful draft
        self.per_draft = float((~hit & opp.truthful[opp.case[idx]]).sum()) / max(int(opp.truthful.sum()), 1)
        hits = self.hits_p
        if self.rule == "unsupported":  # ascending: each admits more low-probability assertions
            self.candidates = sorted({float(np.nextafter(v, 1.0)) for v in hits if v < 0.5})
        else:
            self.candidates = sorted({float(v) for v in hits if v >= 0.5}, reverse=True)

    def informative(self, caught: int, point: float) -> bool:
        """Whether the flag at ``point`` tells errors from truthful statements (see
        :data:`MIN_LIKELIHOOD_RATIO`)."""
        if not len(self.hits_p):
            return False
        if self.rule == "unsupported":
            fired = int((self.truthful_p < point).sum())
        else:
            fired = int(((self.truthful_p >= point) & ~self.truthful_blocked).sum())
        false_share = (fired + 0.5) / (len(self.truthful_p) + 1.0)
        return caught / len(self.hits_p) >= MIN_LIKELIHOOD_RATIO * false_share

    def at(self, point: float | None) -> tuple[int, float]:
        """(errors caught, share of truthful statements flagged) at ``point``; the share is
        the upper end of its Wilson interval at :data:`COST_Z` over the group's studies, so a
        point in the far tail, where validation has seen few or no truthful statements, is
        not taken as free."""
        if point is None:
            return 0, 0.0
        if self.rule == "unsupported":
            caught = int((self.hits_p < point).sum())
            fired = self.truthful_p < point
        else:
            caught = int((self.hits_p >= point).sum())
            fired = (self.truthful_p >= point) & ~self.truthful_blocked
        if not len(fired):
            return caught, 0.0
        n = max(self.truthful_studies, 1)
        bounds = wilson(round(float(fired.mean()) * n), n, z=COST_Z)
        assert bounds is not None
        return caught, bounds[1]


def _false_flag_estimate(log_clear: float) -> float:
    return 1.0 - float(np.exp(log_clear))


def fit_mode(opp: Opportunities, budget: float, alignment: bool,
             findings: frozenset[str] | None = None) -> tuple[dict[int, float], float]:
    """Greedy points for one budget: ({group: point}, macro recall on the drafts).

    The cost of a point is the expected share of truthful drafts it flags, from the share of
    *all* the group's truthful statements it flags (those of erroneous drafts count too) times
    how many such statements a truthful draft has; drafts are assumed to be flagged
    independently across groups, which overstates the rate a little (a study's findings move
    together), so the budget holds with room to spare."""
    errors = np.array([(opp.error_kind == k).sum() for k in range(len(ERROR_KINDS))])
    weights = np.array([1.0 / n if n else 0.0 for n in errors]) / max((errors > 0).sum(), 1)
    groups = {g: _Group(opp, g, alignment) for g in np.unique(opp.group)
              if findings is None or FINDINGS[g // len(FITTED_RULES)] in findings}
    position = {g: -1 for g in groups}  # index of the opened candidate, -1: off
    state = {g: (0, 0.0) for g in groups}  # (caught, truthful share flagged)
    log_clear = 0.0  # log of the expected share of truthful drafts with no flag

    def clear(g: int, share: float) -> float:
        return groups[g].per_draft * float(np.log1p(-min(share, 1.0 - 1e-12)))

    while True:
        best: tuple[float, float, int, int, tuple[int, float]] | None = None
        for g, group in groups.items():
            cands = group.candidates
            for j in range(position[g] + 1, min(len(cands), position[g] + 1 + LOOKAHEAD)):
                caught, share = group.at(cands[j])
                gain = weights[group.kind] * (caught - state[g][0])
                new_log = log_clear - clear(g, state[g][1]) + clear(g, share)
                cost = _false_flag_estimate(new_log) - _false_flag_estimate(log_clear)
                if (gain <= 0 or _false_flag_estimate(new_log) > budget
                        or not group.informative(caught, cands[j])):
                    continue
                ratio = gain / cost if cost > 1e-12 else float("inf")
                if best is None or (ratio, gain) > (best[0], best[1]):
                    best = (ratio, gain, g, j, (caught, share))
        if best is None:
            break
        _, _, g, j, at = best
        log_clear += clear(g, at[1]) - clear(g, state[g][1])
        position[g], state[g] = j, at
    points = {g: groups[g].candidates[position[g]] for g in groups if position[g] >= 0}
    caught = np.zeros(len(ERROR_KINDS))
    for g, (n, _) in state.items():
        caught[groups[g].kind] += n
    return points, float(weights @ caught)


def points_of(fitted: Mapping[int, float]) -> dict[str, Points]:
    """Per-finding points from fitted groups (rules left closed are off)."""
    out = {}
    for i, finding in enumerate(FINDINGS):
        rule = {r: fitted.get(i * len(FITTED_RULES) + k) for k, r in enumerate(FITTED_RULES)}
        out[finding] = Points(rule["present"], rule["unsupported"], rule["unsupported"], rule["omission"])
    return out


def fit_modes(cases: Sequence[Case], budgets: Mapping[str, float] | None = None,
              findings: frozenset[str] | None = None) -> dict[str, Mode]:
    """One mode per budget (default :data:`core_model.operating_points.MODES`), each with its
    validation figures; only ``findings`` (default all) may be checked."""
    opp = opportunities(cases)
    budgets = budgets if budgets is not None else {n: b for n, (_, b) in MODES.items()}
    modes = {}
    for name, budget in budgets.items():
        fits = [(fit_mode(opp, budget, alignment, findings), alignment) for alignment in (False, True)]
        (fitted, _), alignment = max(fits, key=lambda f: (f[0][1], f[1]))
        points = points_of(fitted)
        checked = frozenset(f for f, p in points.items() if p.checks_anything)
        at = score(cases, points, checked, alignment=alignment)
        validation = {k: at[k] for k in ("false_flag_rate", "false_flags_per_draft_mean", "recall",
                                          "recall_by_type", "precision", "truthful_n", "injected_n")}
        modes[name] = Mode(name, budget, alignment, points, validation)
    return modes


def fit_and_save(cases: Sequence[Case], model_dir: str | os.PathLike[str],
                 provenance: Mapping[str, Any], findings: frozenset[str] | None = None) -> dict[str, Mode]:
    """Fit the modes and write them into the model directory."""
    modes = fit_modes(cases, findings=findings)
    save_modes(model_dir, modes, provenance={**provenance, "drafts": len(cases)})
    return modes


__all__ = ["FITTED_RULES", "Opportunities", "fit_and_save", "fit_mode", "fit_modes", "opportunities",
           "points_of"]
