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
within a target. Catches are weighed per error kind (each kind's recall
counts equally), so the rarer error kinds are not starved. The target is
set so that the mode keeps its budget on studies it was not fitted on:
five-fold cross-validation over the validation studies (a study's drafts in
one fold) measures each target's held-out false-flag rate, and the mode takes
the largest target whose held-out rate keeps the budget with one-sided 95%
confidence (:data:`MARGIN_Z`). The mode's figures are those held-out ones.
Two more guards:

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
all modes takes about a minute.
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
#: Folds of the cross-validation that sets how much of its budget the greedy search may
#: spend: a search that picks points where validation happened to flag few truthful
#: statements flags more drafts on new studies, so each mode's target is the largest whose
#: cross-validated false-flag rate stays within the budget.
FOLDS = 5
#: The held-out false-flag rate must keep the budget this many standard errors above its
#: estimate.
MARGIN_Z = 1.6448536269514722  # one-sided 95%
#: Targets tried, as multiples of the budget, largest first.
TARGET_STEPS = tuple(2.0 ** (k / 3) for k in range(6, -13, -1))


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


def _subset(opp: Opportunities, keep: np.ndarray) -> Opportunities:
    """The opportunities of the drafts ``keep`` marks (the others count as neither truthful
    nor erroneous)."""
    rows = keep[opp.case]
    return Opportunities(opp.case[rows], opp.group[rows], opp.p[rows], opp.against[rows],
                         opp.hit[rows], opp.truthful & keep, np.where(keep, opp.error_kind, -2),
                         opp.study)


def _measure(opp: Opportunities, fitted: Mapping[int, float], alignment: bool,
             keep: np.ndarray) -> np.ndarray:
    """Counts on the drafts ``keep`` marks at the fitted points: truthful drafts, those
    flagged, flags, flags that catch an error, then per error kind the drafts and those
    caught."""
    fires = np.zeros(len(opp.p), bool)
    for g, point in fitted.items():
        rows = opp.group == g
        rule = FITTED_RULES[g % len(FITTED_RULES)]
        if rule == "unsupported":
            fires[rows] = opp.p[rows] < point
        else:
            fires[rows] = opp.p[rows] >= point
            if rule == "present" and alignment:
                fires[rows] &= opp.against[rows]
    fires &= keep[opp.case]
    per_draft = np.bincount(opp.case[fires], minlength=opp.drafts)
    caught = np.bincount(opp.case[fires & opp.hit], minlength=opp.drafts) > 0
    truthful = opp.truthful & keep
    counts = [truthful.sum(), (per_draft[truthful] > 0).sum(), fires.sum(), (fires & opp.hit).sum()]
    for k in range(len(ERROR_KINDS)):
        drafts = keep & (opp.error_kind == k)
        counts += [drafts.sum(), (caught & drafts).sum()]
    return np.array(counts, float)


def _figures(counts: np.ndarray) -> dict[str, Any]:
    truthful, flagged, flags, hits = counts[:4]
    errors, caught = counts[4::2], counts[5::2]
    return {
        "false_flag_rate": flagged / truthful if truthful else None,
        "recall": float(caught.sum() / errors.sum()) if errors.sum() else None,
        "recall_by_type": {k: (float(c / n) if n else None)
                           for k, n, c in zip(ERROR_KINDS, errors, caught, strict=True)},
        "precision": hits / flags if flags else None,
        "truthful_n": int(truthful), "injected_n": int(errors.sum()),
    }


def cross_validated(opp: Opportunities, target: float, alignment: bool,
                    findings: frozenset[str] | None, folds: int = FOLDS, seed: int = 0) -> dict[str, Any]:
    """The figures of points fitted for ``target`` on all folds but one, measured on that
    one, summed over the folds (a study's drafts stay in one fold)."""
    studies = np.unique(opp.study)
    order = np.random.default_rng(seed).permutation(studies)
    fold_of = np.empty(studies.max() + 1, int)
    fold_of[order] = np.arange(len(order)) % folds
    draft_fold = fold_of[opp.study]
    counts = np.zeros(4 + 2 * len(ERROR_KINDS))
    for k in range(folds):
        held = draft_fold == k
        fitted, _ = fit_mode(_subset(opp, ~held), target, alignment, findings)
        counts += _measure(opp, fitted, alignment, held)
    return _figures(counts)


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

        # Per candidate, computed once: errors caught, the share of truthful statements
        # flagged (over the group's studies, with half a flag added, so a point in the far
        # tail where validation saw no truthful statement flagged is not taken as free), and
        # whether the flag there is informative (MIN_LIKELIHOOD_RATIO).
        points = np.asarray(self.candidates, float)
        hits_sorted = np.sort(self.hits_p)
        fires_on = np.sort(self.truthful_p[~self.truthful_blocked])
        if self.rule == "unsupported":  # p < point
            caught = np.searchsorted(hits_sorted, points, "left")
            fired = np.searchsorted(fires_on, points, "left")
        else:  # p >= point
            caught = len(hits_sorted) - np.searchsorted(hits_sorted, points, "left")
            fired = len(fires_on) - np.searchsorted(fires_on, points, "left")
        total = max(len(self.truthful_p), 1)
        n = max(self.truthful_studies, 1)
        self.caught = caught.astype(int)
        self.share = (fired / total * n + 0.5) / (n + 1.0) if len(self.truthful_p) else np.zeros(len(points))
        false_share = (fired + 0.5) / (len(self.truthful_p) + 1.0)
        self.informative = (self.caught / max(len(self.hits_p), 1)
                            >= MIN_LIKELIHOOD_RATIO * false_share) & (len(self.hits_p) > 0)


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
        best: tuple[float, float, int, int] | None = None  # (ratio, gain, group, candidate)
        now = _false_flag_estimate(log_clear)
        for g, group in groups.items():
            lo = position[g] + 1
            hi = min(len(group.candidates), lo + LOOKAHEAD)
            if lo >= hi:
                continue
            caught_before, share_before = state[g]
            gain = weights[group.kind] * (group.caught[lo:hi] - caught_before)
            new_log = (log_clear - clear(g, share_before)
                       + group.per_draft * np.log1p(-np.minimum(group.share[lo:hi], 1.0 - 1e-12)))
            estimate = 1.0 - np.exp(new_log)
            cost = estimate - now
            ok = (gain > 0) & (estimate <= budget) & group.informative[lo:hi]
            for j in np.flatnonzero(ok):
                ratio = gain[j] / cost[j] if cost[j] > 1e-12 else float("inf")
                if best is None or (ratio, gain[j]) > (best[0], best[1]):
                    best = (ratio, float(gain[j]), g, lo + int(j))
        if best is None:
            break
        _, _, g, j = best
        at = (int(groups[g].caught[j]), float(groups[g].share[j]))
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
        best: tuple[float, bool, float, dict[str, Any]] | None = None  # (recall, alignment, ...)
        for alignment in (False, True):
            for step in TARGET_STEPS:  # the largest target whose held-out rate keeps the budget
                figures = cross_validated(opp, budget * step, alignment, findings)
                if _within(figures, budget):
                    break
            else:
                continue
            recall = _macro(figures)
            if best is None or recall > best[0]:
                best = (recall, alignment, budget * step, figures)
        if best is None:  # not even the smallest target shows it keeps the budget: check nothing
            truthful, injected = int(opp.truthful.sum()), int((opp.error_kind >= 0).sum())
            modes[name] = Mode(name, budget, False, points_of({}), {
                "false_flag_rate": 0.0, "recall": 0.0,
                "recall_by_type": dict.fromkeys(ERROR_KINDS, 0.0), "precision": None,
                "truthful_n": truthful, "injected_n": injected,
                "note": f"too few validation drafts ({truthful} truthful) to show it keeps "
                        f"{budget:.0%}; checks nothing"})
            continue
        _, alignment, target, figures = best
        fitted, _ = fit_mode(opp, target, alignment, findings)
        points = points_of(fitted)
        checked = frozenset(f for f, p in points.items() if p.checks_anything)
        in_sample = score(cases, points, checked, alignment=alignment)
        modes[name] = Mode(name, budget, alignment, points, {
            **figures, "cross_validated": FOLDS, "target": target,
            "in_sample_false_flag_rate": in_sample["false_flag_rate"]})
    return modes


def _within(figures: Mapping[str, Any], budget: float) -> bool:
    """Whether the held-out false-flag rate keeps the budget, one standard error above its
    estimate (Wilson, :data:`MARGIN_Z`): validation is not the studies a mode will meet."""
    rate, n = figures["false_flag_rate"], figures["truthful_n"]
    if rate is None or not n:
        return False
    bounds = wilson(round(rate * n), n, z=MARGIN_Z)
    return bounds is not None and bounds[1] <= budget


def _macro(figures: Mapping[str, Any]) -> float:
    values = [v for v in figures["recall_by_type"].values() if v is not None]
    return float(np.mean(values)) if values else 0.0


def fit_and_save(cases: Sequence[Case], model_dir: str | os.PathLike[str],
                 provenance: Mapping[str, Any], findings: frozenset[str] | None = None) -> dict[str, Mode]:
    """Fit the modes and write them into the model directory."""
    modes = fit_modes(cases, findings=findings)
    save_modes(model_dir, modes, provenance={**provenance, "drafts": len(cases)})
    return modes


__all__ = ["FITTED_RULES", "FOLDS", "Opportunities", "cross_validated", "fit_and_save", "fit_mode", "fit_modes", "opportunities",
           "points_of"]
