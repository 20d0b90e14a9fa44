"""How much does each finding change the film at the model's input size?

For studies of a phantom world that show a finding, the first image is
rendered again exactly as it was written (same anatomy, pose, exposure and
noise) once with all its findings and once without that finding; both are
reduced to the model's input size by area averaging, and the script prints,
per finding, the peak and the root-sum-square change in 8-bit grey levels.

It separates "the image does not show it" from "the model has not learned
it": a finding whose peak change is tens of grey levels at 128 px is in the
pixels, and a low AUC on it is a learning problem (few positives, small
area), not a resolution one.

    python bench/finding_visibility.py --data world10k --size 128 --per-finding 40
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core_model.text.observations import FINDINGS  # noqa: E402
from training.phantom.writer import TRUTH_JSONL, read_world_config, rerender  # noqa: E402


def reduce(pixels: np.ndarray, size: int) -> np.ndarray:
    """Grey levels (0-255) at ``size`` px, by area averaging."""
    return np.asarray(Image.fromarray(pixels.astype(np.float32) * 255.0, mode="F").resize((size, size), Image.BOX))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a phantom world (it has phantom-world.json and phantom-truth.jsonl)")
    ap.add_argument("--size", type=int, default=128, help="model input size in px (default 128, the tiny config)")
    ap.add_argument("--per-finding", type=int, default=40, help="studies per finding (default 40)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    root = Path(args.data)
    try:
        config = read_world_config(root)
        truth_lines = (root / TRUTH_JSONL).open()
    except (OSError, ValueError) as exc:
        print(f"error: {root} is not a phantom world ({exc})", file=sys.stderr)
        return 2
    wanted = list(FINDINGS)
    rows: dict[str, list[tuple[float, float]]] = {f: [] for f in wanted}
    t0 = time.perf_counter()
    with truth_lines:
        for line in truth_lines:
            study = json.loads(line)
            present = {f["observation"] for f in study["findings"]}
            todo = [f for f in wanted if f in present and len(rows[f]) < args.per_finding]
            if not todo or not study["images"]:
                continue
            full = reduce(rerender(config, study).pixels, args.size)
            for name in todo:
                diff = np.abs(full - reduce(rerender(config, study, without=name).pixels, args.size))
                rows[name].append((float(diff.max()), float(np.sqrt((diff**2).sum()))))
            if all(len(v) >= args.per_finding for v in rows.values()):
                break
    print(f"world {root} ({config.size} px films), change at {args.size} px input, "
          f"first image of up to {args.per_finding} studies per finding ({time.perf_counter() - t0:.0f} s)\n")
    print(f"{'finding':<28} {'n':>4} {'peak median':>12} {'peak p10':>9} {'rss median':>11}")
    out = {}
    for name, values in rows.items():
        if not values:
            continue
        a = np.array(values)
        out[name] = {"n": len(values), "peak_median": float(np.median(a[:, 0])),
                     "peak_p10": float(np.percentile(a[:, 0], 10)), "rss_median": float(np.median(a[:, 1]))}
        r = out[name]
        print(f"{name:<28} {r['n']:>4} {r['peak_median']:>12.1f} {r['peak_p10']:>9.1f} {r['rss_median']:>11.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "world": str(root), "findings": out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
