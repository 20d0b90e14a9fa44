"""Consistency-check latency: model load, full check, re-check after editing one sentence.

For each config (``tiny`` and ``paper``), a checkpoint with freshly initialised
weights is written to a temporary folder (latency does not depend on what the
weights learned), then timed on CPU with 2 threads and, when CUDA is present,
on the GPU:

* model load (``Reader(...)``: safetensors, validation, prompt embeddings);
* a full check of one 2500 x 2000 image and a 12-sentence report (image
  decode excluded; preprocessing, encoders, labeler and flags included);
* a re-check after editing one sentence (the image and the 11 other sentences
  come from the caches);
* the image check alone (the picture rules on the 2500 x 2000 image and the
  distance of its features to a description fitted on 60 random images): it is
  part of every check and of every re-check.

Budgets (CPU): paper full check <= 500 ms, re-check <= 60 ms; tiny full check <= 50 ms;
the image check adds at most 1 ms.

    python bench/check_latency.py [--configs tiny,paper] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPORT = [
    "PA and lateral views of the chest were obtained.",
    "There is a small left pleural effusion.",
    "No pneumothorax is seen.",
    "The heart is mildly enlarged.",
    "Mediastinal contours are normal.",
    "Right PICC line terminates in the mid SVC.",
    "There is no focal consolidation.",
    "Mild pulmonary vascular congestion.",
    "No pulmonary edema.",
    "Left basilar atelectasis.",
    "No acute osseous abnormality.",
    "No pulmonary nodules or masses.",
]


def _checkpoint(name: str, directory: Path) -> Path:
    from core_model.checkpoint import save_checkpoint
    from core_model.model.clip import create_model
    from core_model.model.tokenizer import train_wordpiece

    tokenizer = train_wordpiece(REPORT * 20, vocab_size=2000)
    model = create_model(name, tokenizer=tokenizer)
    out = directory / name
    save_checkpoint(model, tokenizer, out, variant="clip-ng-dtcg")
    _fit_image_check(model, out)
    _fit_finding_head(model, out)
    return out


def _fit_finding_head(model, out: Path) -> None:  # noqa: ANN001 - a ConcordCLIP
    """A finding head on random pictures and labels: its cost does not depend on what it learned."""
    from core_model.finding_head import save_head
    from core_model.text.observations import FINDINGS
    from training.finding_head import fit_head
    from training.image_check import pooled_features

    rng = np.random.default_rng(2)
    pictures = [rng.random((256, 256), dtype=np.float32) for _ in range(40)]
    features = np.concatenate(pooled_features(model, pictures), axis=1)
    labels = [{f: "1" if i % 2 else "0" for f in FINDINGS} for i in range(40)]
    save_head(out, fit_head(features, labels))


def _fit_image_check(model, out: Path) -> None:  # noqa: ANN001 - a ConcordCLIP
    """An image check on random pictures: the distance costs the same whatever it describes."""
    from core_model.image_check import save_description
    from training.image_check import fit_from_displays

    rng = np.random.default_rng(1)
    pictures = [rng.random((256, 256), dtype=np.float32) for _ in range(60)]
    save_description(out, fit_from_displays(model, pictures[:40], pictures[40:]))


def _time(fn, repeats: int) -> list[float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench(name: str, device: str, repeats: int, directory: Path) -> None:
    import torch

    from core_model.inference import Reader

    path = _checkpoint(name, directory)
    start = time.perf_counter()
    reader = Reader(path, device=device, threads=2 if device == "cpu" else None)
    load_ms = (time.perf_counter() - start) * 1000
    rng = np.random.default_rng(0)
    image = rng.random((2500, 2000), dtype=np.float32)
    report = " ".join(REPORT)

    def full() -> None:
        reader._image_cache.clear()
        reader._text_cache.clear()
        reader.check([image], report, heatmaps=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    counter = iter(range(10**9))

    def recheck() -> None:
        edited = report.replace("Left basilar atelectasis.", f"Left basilar atelectasis, {next(counter)} cm.")
        reader.check([image], edited, study_key="bench", heatmaps=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    from core_model.image_check import picture_problem
    from core_model.inference import StudyImage

    reader.check([image], report, study_key="bench")
    encoding = reader.embed_study([StudyImage(image)], "bench")
    size = int(reader.model.config.image.image_size)

    def gate() -> None:
        picture_problem(image, min_side=size)
        reader.image_verdict(encoding)

    def head() -> None:
        reader.probabilities(encoding)  # the finding head's logits, calibrated

    assert reader.finding_head is not None
    f, r, g = _time(full, repeats), _time(recheck, repeats), _time(gate, repeats * 10)
    h = _time(head, repeats * 10)
    print(f"  {name:<6} {device:<5} load {load_ms:7.0f} ms | full check median {statistics.median(f):7.1f} ms "
          f"(min {min(f):.1f}) | re-check median {statistics.median(r):6.1f} ms (min {min(r):.1f}) | "
          f"image check median {statistics.median(g):5.2f} ms | finding head median "
          f"{statistics.median(h):5.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,paper")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import os

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"check_latency: torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}, devices {devices}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            for device in devices:
                bench(name, device, args.repeats, Path(tmp))
    print("  budgets (CPU): paper full <= 500 ms, paper re-check <= 60 ms, tiny full <= 50 ms, "
          "image check <= 1 ms (the finding head is inside the full check)")


if __name__ == "__main__":
    main()
