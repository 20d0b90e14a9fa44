"""Labeler throughput: reports per second on one core.

Builds a corpus of distinct MIMIC-style reports (headings, 6-16 sentences,
negations, hedges, temporal words, de-identification spans) from templates with
random fills, pins the process to one CPU, and times the full path a training
run takes per report: section parsing, sentence splitting and labelling.
Budget (issue): at least 1,000 reports/s.

    python bench/label_throughput.py [--reports 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

SIDES = ["left", "right", "bilateral", ""]
SIZES = ["small", "moderate", "large", "trace", "tiny", "mild"]
LOBES = ["right upper lobe", "right lower lobe", "left lower lobe", "lingula", "left upper lobe", "right middle lobe"]
TEMPLATES = [
    "There is a {size} {side} pleural effusion.",
    "No pleural effusion or pneumothorax.",
    "No focal consolidation, pleural effusion, or pneumothorax is seen.",
    "The heart size is normal.",
    "The heart is {size}ly enlarged.",
    "Mediastinal and hilar contours are unremarkable.",
    "The cardiomediastinal silhouette is within normal limits.",
    "{Size} cardiomegaly is unchanged from ___.",
    "Opacity in the {lobe} may reflect atelectasis, though infection cannot be excluded.",
    "{Side} basilar atelectasis versus consolidation.",
    "Compared to the prior study of ___, the {side} effusion has increased in size.",
    "Interval increase in the {size} {side} pleural effusion.",
    "There is no evidence of pulmonary edema.",
    "Mild pulmonary vascular congestion without frank edema.",
    "A {n}.{m} cm nodule is seen in the {lobe}.",
    "No pulmonary nodules or masses are identified.",
    "Endotracheal tube terminates {n}.{m} cm above the carina.",
    "Right IJ central venous catheter ends in the mid SVC.",
    "The nasogastric tube has been removed.",
    "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
    "Old healed {side} rib fractures are again seen.",
    "No acute osseous abnormality.",
    "No acute fracture is identified.",
    "{Size} {side} apical pneumothorax.",
    "The lungs are clear.",
    "Lungs are hyperinflated, consistent with COPD.",
    "Patchy airspace disease in the {lobe} concerning for pneumonia.",
    "There is no change in the {size} {side} effusion.",
    "Findings were discussed with Dr. ___ at ___ on ___.",
    "Degenerative changes of the thoracic spine.",
    "Stable {side} pleural thickening.",
    "Possible small {side} effusion.",
    "Resolved {side} pneumothorax.",
    "No new consolidation to suggest pneumonia.",
]
IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "{Size} {side} pleural effusion with adjacent atelectasis.",
    "1. {Side} lower lobe pneumonia. 2. No pneumothorax.",
    "Mild pulmonary edema.",
    "Lines and tubes in standard position.",
    "Findings concerning for {lobe} pneumonia.",
]


def _fill(template: str, rng: random.Random) -> str:
    side, size = rng.choice(SIDES), rng.choice(SIZES)
    text = template.format(
        side=side, Side=side.capitalize() or "Right", size=size, Size=size.capitalize(),
        lobe=rng.choice(LOBES), n=rng.randint(1, 6), m=rng.randint(0, 9),
    )
    return " ".join(text.split())


def make_corpus(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    corpus = []
    for i in range(count):
        findings = " ".join(_fill(rng.choice(TEMPLATES), rng) for _ in range(rng.randint(5, 14)))
        impression = _fill(rng.choice(IMPRESSIONS), rng)
        corpus.append(
            f"                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
            f" INDICATION:  ___ year old with case {i}, evaluate.\n\n COMPARISON:  ___\n\n"
            f" FINDINGS:\n \n {findings}\n \n IMPRESSION:\n \n {impression}\n"
        )
    return corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from core_model.text.labeler import default_labeler

    labeler = default_labeler()
    corpus = make_corpus(args.reports, args.seed)
    assert len(set(corpus)) == len(corpus)
    sentences = sum(len(labeler.label_report(r).sentences) for r in corpus[:200]) / 200
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for report in corpus:
            labeler.label_report(report)
        rates.append(len(corpus) / (time.perf_counter() - start))
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else "n/a"
    print(f"label_throughput: {len(corpus)} distinct reports, {sentences:.1f} clinical sentences each, cpus={sorted(cpus) if cpus != 'n/a' else cpus}")
    print(f"  reports/s  median {statistics.median(rates):,.0f}  (runs: {', '.join(f'{r:,.0f}' for r in rates)})")
    print(f"  ms/report  {1000 / statistics.median(rates):.3f}")
    print(f"  sentences/s {statistics.median(rates) * sentences:,.0f}")
    print("  budget: >= 1,000 reports/s on one core ->", "MET" if statistics.median(rates) >= 1000 else "NOT MET")


if __name__ == "__main__":
    main()
