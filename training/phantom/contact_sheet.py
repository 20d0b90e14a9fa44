"""A contact sheet: a grid of phantom films with their findings and report excerpts.

Reads the world through the one dataset reader (so it shows what training
sees), draws each finding's recorded box from ``phantom-truth.jsonl`` when the
world has one, and writes a PNG for the documentation.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core_model.text.observations import FINDINGS
from core_model.text.sections import clinical_sections
from training.dataset import MimicDataset, Sample

_COLOURS = {
    o: c for o, c in zip(
        FINDINGS,
        ["#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#17becf", "#bcbd22", "#e377c2",
         "#8c564b", "#1f77b4", "#00d5ff", "#ffbb78", "#ff9896", "#98df8a"],
        strict=True,
    )
}


def contact_sheet(root: str | Path, out: str | Path, *, count: int = 12, tile: int = 320, columns: int = 4) -> Path:
    """Write a PNG grid of ``count`` studies chosen to show many different findings."""
    root = Path(root)
    dataset = MimicDataset(root)
    truth = _truth(root)
    chosen = _choose(list(dataset), count)
    font = _font(13)
    small = _font(11)
    text_h = 150
    rows = (len(chosen) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile, rows * (tile + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, sample in enumerate(chosen):
        x, y = (i % columns) * tile, (i // columns) * (tile + text_h)
        pixels = sample.load_image()
        film = Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8)).convert("RGB")
        scale = tile / film.width
        film = film.resize((tile, int(film.height * scale)))
        sheet.paste(film, (x, y))
        for region in truth.get(sample.dicom_id, []):
            x0, y0, x1, y1 = (int(v * scale) for v in region["box"])
            colour = _COLOURS.get(region["observation"], "#ffff00")
            draw.rectangle([x + x0, y + y0, x + x1, y + y1], outline=colour, width=2)
        positives = [o for o in FINDINGS if sample.labels[o] in ("1", "-1")]
        title = ", ".join(o + ("?" if sample.labels[o] == "-1" else "") for o in positives) or "No Finding"
        draw.text((x + 6, y + tile + 4), f"{sample.view}  {textwrap.shorten(title, 48)}", fill="black", font=font)
        excerpt = " ".join(s.text for s in clinical_sections(sample.report))
        for j, line in enumerate(textwrap.wrap(excerpt, width=50)[:8]):
            draw.text((x + 6, y + tile + 24 + j * 15), line, fill="#333333", font=small)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def _truth(root: Path) -> dict[str, list[dict]]:
    path = root / "phantom-truth.jsonl"
    regions: dict[str, list[dict]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            study = json.loads(line)
            for image in study["images"]:
                regions[image["dicom_id"]] = image["regions"]
    return regions


def _choose(samples: list[Sample], count: int) -> list[Sample]:
    """Greedy: each pick adds the most findings not yet shown; one or two normals included."""
    by_study: dict[int, Sample] = {}
    for s in samples:
        by_study.setdefault(s.study_id, s)
    pool = list(by_study.values())
    shown: set[str] = set()
    chosen: list[Sample] = []
    normals = [s for s in pool if s.labels["No Finding"] == "1"][:2]
    chosen.extend(normals[: max(0, min(2, count - 1))])
    while len(chosen) < count and pool:
        best = max(pool, key=lambda s: (len({o for o in FINDINGS if s.labels[o] == "1"} - shown), -s.study_id))
        pool.remove(best)
        if best in chosen:
            continue
        chosen.append(best)
        shown |= {o for o in FINDINGS if best.labels[o] == "1"}
    return chosen


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()
