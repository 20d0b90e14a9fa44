"""Robustness: nothing is lost - mutated imports, killed processes, full disks, the audit log.

    python bench/robustness.py [--files 1000] [--kills 5] [--seed 0] [--json OUT]

Runs every scenario of tests/robustness at full size against one database and
prints: files tried, crashed, imported, rejected (per reason and per mutation
kind), peak child memory, text lost per killed window (characters and
seconds), checkpoints corrupted by killed training runs, full-disk outcomes,
audit entries missing, total time.  Exits with status 1 if anything was lost,
crashed or left unexplained.  See docs/robustness.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _name, _value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                      ("QT_QPA_PLATFORM", "offscreen")):
    os.environ.setdefault(_name, _value)

import warnings  # noqa: E402

warnings.simplefilter("ignore")  # pydicom warns loudly about damaged files

from app.settings.values import DEFAULT_AUTOSAVE_SECONDS  # noqa: E402
from tests.robustness import harness as H  # noqa: E402
from tests.robustness.mutations import KINDS, generate, write_manifest  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="mutated files to import (default 1000)")
    parser.add_argument("--kills", type=int, default=5,
                        help="SIGKILLs of the typing window and of the training run (default 5 each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write every figure to this JSON file")
    parser.add_argument("--interval", type=float, default=float(DEFAULT_AUTOSAVE_SECONDS),
                        help="autosave interval of the typing window in seconds (default: the "
                        f"application's, {DEFAULT_AUTOSAVE_SECONDS})")
    parser.add_argument("--cps", type=float, default=10.0, help="typing speed, characters per second")
    parser.add_argument("--workdir", help="keep the database and files here (default: a temporary folder)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the uninterrupted training run the resumed one is compared with")
    args = parser.parse_args(argv)

    started = time.monotonic()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="concord-robustness-"))
    if work.exists() and any(work.iterdir()):
        shutil.rmtree(work)
    rng = random.Random(args.seed)
    suite = H.Suite(work, seed=args.seed)
    times: dict[str, float] = {}
    problems: list[str] = []

    def section(name: str, t0: float) -> None:
        times[name] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    folder = work / "incoming"
    mutants = generate(folder, args.files, args.seed)
    write_manifest(mutants, work / "incoming.manifest.json")
    section("generate", t0)

    t0 = time.monotonic()
    imported = H.import_mutants(suite, folder, mutants)
    problems += imported.problems
    section("import", t0)

    t0 = time.monotonic()
    opened = H.open_imported(suite, imported, mutants)
    problems += opened.problems
    section("open", t0)

    t0 = time.monotonic()
    typing = []
    window = (1.0, max(4.0, 4 * args.interval))
    for k in range(args.kills):
        study = H.pick_study(suite, imported, opened, rng)
        kill = H.kill_while_typing(suite, study, rng=rng, interval_s=args.interval, cps=args.cps,
                                   kill_window=window, name=f"typing-{k}")
        typing.append(kill)
        problems += [f"typing kill {k + 1}: {p}" for p in kill.problems]
    section("kill while typing", t0)

    t0 = time.monotonic()
    study = typing[0].study_id if typing else H.pick_study(suite, imported, opened, rng)
    disk_saves = H.full_disk_on_report_save(suite, study)
    problems += [p for d in disk_saves for p in d.problems]
    section("full disk on save", t0)

    t0 = time.monotonic()
    world = H.build_world(work / "world")
    disk_checkpoints = H.full_disk_on_checkpoint(suite, world)
    problems += [p for d in disk_checkpoints for p in d.problems]
    section("full disk on checkpoint", t0)

    t0 = time.monotonic()
    checkpoints = H.kill_while_checkpointing(suite, world, rng=rng, kills=args.kills,
                                             reference=not args.no_reference)
    problems += [f"checkpoint kills: {p}" for p in checkpoints.problems]
    problems += [f"corrupted checkpoint: {c}" for c in checkpoints.corrupted]
    section("kill while checkpointing", t0)

    t0 = time.monotonic()
    audit = H.audit_check(suite)
    problems += [f"audit entry missing: {m}" for m in audit.missing]
    problems += [f"audit entry without its action: {u}" for u in audit.unexpected]
    section("audit", t0)
    total = time.monotonic() - started

    figures = report(args, imported, opened, mutants, typing, disk_saves, disk_checkpoints,
                     checkpoints, audit, times, total, problems)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    suite.close()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


def report(args, imported, opened, mutants, typing, disk_saves, disk_checkpoints, checkpoints,  # noqa: ANN001, PLR0913
           audit, times, total, problems) -> dict:
    kind_of = {m.path: m.kind for m in mutants}
    opened_by_kind: dict[str, Counter] = {}
    for row in opened.rows:
        opened_by_kind.setdefault(kind_of.get(row["path"], "?"), Counter())[row["viewer"]] += 1
    crashed = int(imported.child.crashed) + len(opened.crashes)
    print(f"Concord robustness: seed {args.seed}, {args.files} mutated files, {args.kills} kills each")
    print()
    print("Import (import_dicom_folder in a child process, fresh SQLite database)")
    print(f"  files tried          {len(imported.files)}")
    print(f"  crashed              {crashed} (import child: {imported.child.describe()}; "
          f"decoding children crashed {len(opened.crashes)} time(s))")
    print(f"  imported             {len(imported.imported)} images in {len(imported.report.get('studies', []))} studies")
    print(f"  rejected             {len(imported.rejected)}, each with a one-line reason")
    print(f"  peak child memory    import {H.memory_mib(imported.child.maxrss)}, opening "
          f"{H.memory_mib(opened.maxrss)} (limit {H.memory_mib(H.MEMORY_LIMIT)})")
    print(f"  import time          {imported.report.get('seconds', 0):.1f} s in the child")
    print()
    print(f"  {'mutation kind':<20} {'files':>5} {'imported':>8} {'rejected':>8} {'opens':>6} {'refused at open':>15}")
    for kind in KINDS:
        c, o = imported.by_kind.get(kind, Counter()), opened_by_kind.get(kind, Counter())
        print(f"  {kind:<20} {sum(c.values()):>5} {c['imported']:>8} {c['rejected']:>8} {o['ok']:>6} "
              f"{o['error'] + o['unclear']:>15}")
    print()
    print("  rejection reasons (numbers and values elided)")
    for reason, count in imported.reasons.most_common():
        kinds = sorted(k for k, c in imported.reasons_by_kind.items() if c[reason])
        print(f"  {count:>5}  {reason}  [{', '.join(kinds)}]")
    print()
    print("Opening what was imported (the viewer's ImageLoader and the check's reader, child process)")
    both = opened.outcomes
    print(f"  opened               {len(opened.rows)}: both ok {both[('ok', 'ok')]}, both refused with "
          f"a one-line reason {both[('error', 'error')]}, mixed "
          f"{len(opened.rows) - both[('ok', 'ok')] - both[('error', 'error')]}")
    print(f"  unclear errors       {sum(1 for p in opened.problems if 'without a clear error' in p)}")
    print(f"  slowest file         {opened.slowest:.3f} s")
    refused = Counter(H.reason_class(r["viewer_detail"].split(": ", 1)[-1]) for r in opened.rows
                      if r["viewer"] == "error")
    for reason, count in refused.most_common(8):
        print(f"  {count:>5}  {reason[:110]}")
    print()
    print(f"Kill while typing (main window, autosave every {args.interval:g} s, {args.cps:g} characters/s, "
          "SIGKILL at a random moment)")
    print(f"  {'kill':>4} {'study':>5} {'after s':>7} {'typed':>6} {'saved':>6} {'lost chars':>10} "
          f"{'lost s':>7} {'bound chars':>11} {'bound s':>7} {'versions':>8}")
    for i, k in enumerate(typing, 1):
        print(f"  {i:>4} {k.study_id:>5} {k.killed_after_s:>7.2f} {k.typed:>6} {k.saved:>6} "
              f"{k.lost_chars:>10} {k.lost_s:>7.2f} {k.allowed_chars:>11} {k.allowed_s:>7.2f} {k.versions:>8}")
    if typing:
        print(f"  max lost             {max(k.lost_chars for k in typing)} characters, "
              f"{max(k.lost_s for k in typing):.2f} s of typing (bound: one interval + 0.5 s)")
        print(f"  peak child memory    {H.memory_mib(max(k.child.maxrss for k in typing if k.child))}")
    print()
    phases = checkpoints.phases()
    print("Kill while checkpointing (Admin > Retrain runs concord train, a checkpoint every step)")
    print(f"  kills                {len(checkpoints.kills)}, {len(checkpoints.inside)} inside a checkpoint write: "
          + ", ".join(f"{n} {p}" for p, n in phases.items()))
    print(f"  checkpoint write     median {sorted(checkpoints.write_s)[len(checkpoints.write_s) // 2] if checkpoints.write_s else 0:.3f} s")
    print(f"  checkpoints checked  {checkpoints.checkpoints_checked}, corrupted {len(checkpoints.corrupted)}")
    print(f"  resumed where killed {sum(1 for k in checkpoints.kills if k.latest_after is not None and k.resumed_at == k.latest_after + 1)}/{len(checkpoints.kills)} "
          f"(first step after resume = last checkpoint + 1)")
    print(f"  finished             step {checkpoints.final_step}, registered {checkpoints.registered} (not active)")
    if checkpoints.resumed_identical is not None:
        print(f"  same model as an uninterrupted run: {'yes' if checkpoints.resumed_identical else 'NO'} "
              f"({checkpoints.final_version} / {checkpoints.reference_version})")
    print(f"  active model         {checkpoints.active_after} "
          f"({'unchanged' if checkpoints.active_after == checkpoints.active_before else 'CHANGED'}, "
          f"files {'intact' if checkpoints.baseline_intact else 'CHANGED'})")
    print(f"  partial files left   {checkpoints.leftovers_at_end or 'none'}")
    print()
    print("Full disk (ENOSPC faked at the write)")
    for d in disk_saves:
        print(f"  report save, {d.flavour:<12} {'ok' if not d.problems else 'PROBLEM'}: text kept in the editor and "
              f"the recovery file, storage unchanged, saved once space is back")
    if disk_saves:
        print(f"      \"{disk_saves[0].messages[0]}\"")
    for d in disk_checkpoints:
        print(f"  checkpoint, {d.point:<14} {'ok' if not d.problems else 'PROBLEM'}: step {d.kept_step} kept and loads, "
              f"resumed to step {d.resumed_final_step}")
    if disk_checkpoints:
        print(f"      \"{disk_checkpoints[0].message}\"")
    print()
    print("Audit log")
    print("  checked              " + ", ".join(f"{k} {v}" for k, v in audit.checked.items()))
    print(f"  missing              {audit.missing_count}")
    print(f"  without an action    {len(audit.unexpected)}")
    print()
    print("Time " + ", ".join(f"{k} {v} s" for k, v in times.items()) + f"; total {total:.0f} s")
    print("Problems: " + ("none" if not problems else f"{len(problems)}"))
    for p in problems[:50]:
        print(f"  - {p}")
    return {
        "seed": args.seed, "files": len(imported.files), "crashed": crashed,
        "imported": len(imported.imported), "rejected": len(imported.rejected),
        "studies": len(imported.report.get("studies", [])),
        "by_kind": {k: dict(v) for k, v in imported.by_kind.items()},
        "opened_by_kind": {k: dict(v) for k, v in opened_by_kind.items()},
        "reasons": dict(imported.reasons),
        "peak_child_memory_bytes": {"import": imported.child.maxrss, "open": opened.maxrss,
                                    "typing": max((k.child.maxrss for k in typing if k.child), default=0)},
        "memory_limit_bytes": H.MEMORY_LIMIT,
        "open_outcomes": {f"{a}/{b}": n for (a, b), n in opened.outcomes.items()},
        "slowest_open_s": opened.slowest,
        "typing_kills": [{"study": k.study_id, "killed_after_s": k.killed_after_s, "typed": k.typed,
                          "saved": k.saved, "lost_chars": k.lost_chars, "lost_s": k.lost_s,
                          "bound_chars": k.allowed_chars, "bound_s": k.allowed_s, "versions": k.versions}
                         for k in typing],
        "autosave_interval_s": args.interval,
        "checkpoint_kills": [{"step_writing": k.step_writing, "phase": k.phase, "delay_s": k.delay_s,
                              "latest_after": k.latest_after, "resumed_at": k.resumed_at}
                             for k in checkpoints.kills],
        "checkpoint_write_s": checkpoints.write_s,
        "checkpoints_checked": checkpoints.checkpoints_checked,
        "checkpoints_corrupted": len(checkpoints.corrupted),
        "resumed_identical": checkpoints.resumed_identical,
        "active_model_unchanged": checkpoints.active_after == checkpoints.active_before,
        "full_disk": {"report_save": {d.flavour: not d.problems for d in disk_saves},
                      "checkpoint": {d.point: not d.problems for d in disk_checkpoints}},
        "audit_checked": dict(audit.checked), "audit_missing": audit.missing_count,
        "audit_unexpected": len(audit.unexpected),
        "times_s": times, "total_s": round(total, 1), "problems": problems,
    }


if __name__ == "__main__":
    sys.exit(main())
