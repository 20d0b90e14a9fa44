"""The phantom renderer: determinism, honest regions, laterality, severity, persistence, sizes."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import numpy as np
import pytest

from training.phantom.anatomy import Anatomy, sample_anatomy
from training.phantom.render import Rendered, render, rle_decode, rle_encode
from training.phantom.truth import DEVICE_KINDS, Finding

SIZE = 192
MARGIN = 3  # "a few pixels" around a region's box


@pytest.fixture(scope="module")
def anatomy() -> Anatomy:
    return sample_anatomy(np.random.default_rng(11))


@pytest.fixture(scope="module")
def normal(anatomy: Anatomy) -> dict[tuple[str, int], Rendered]:
    """Films without findings, cached per (view, size)."""
    return {}


def _normal(cache: dict, anatomy: Anatomy, view: str, size: int = SIZE, seed: int = 5) -> Rendered:
    key = (view, size, seed)
    if key not in cache:
        cache[key] = render(anatomy, [], view=view, size=size, seed=seed)
    return cache[key]


def _fresh(f: Finding) -> Finding:
    return Finding(f.observation, f.laterality, f.severity, f.location, f.kind, dict(f.params), f.hedged)


# One finding of every observation, and every device kind.
FINDINGS = [
    Finding("Enlarged Cardiomediastinum", severity="moderate"),
    Finding("Cardiomegaly", severity="moderate"),
    Finding("Lung Opacity", "right", location="right lower lobe"),
    Finding("Lung Lesion", "left", location="left upper lobe", kind="nodule", params={"size_mm": 16}),
    Finding("Lung Lesion", "right", location="right lower lobe", kind="mass", params={"size_mm": 45}),
    Finding("Edema", severity="moderate"),
    Finding("Consolidation", "left", location="left lower lobe"),
    Finding("Consolidation", "right", location="right upper lobe"),
    Finding("Pneumonia", "right", location="right middle lobe"),
    Finding("Atelectasis", "left", severity="moderate", location="left base"),
    Finding("Pneumothorax", "right", severity="moderate"),
    Finding("Pleural Effusion", "left", severity="moderate"),
    Finding("Pleural Effusion", "bilateral", severity="small"),
    Finding("Pleural Other", "right", params={"pattern": "lateral"}),
    Finding("Pleural Other", "left", params={"pattern": "apical"}),
    Finding("Fracture", "left", params={"rib": 6}),
] + [
    Finding("Support Devices", {"pacemaker": "left", "chest_tube": "right", "picc": "left",
                                "central_line": "right"}.get(kind), kind=kind)
    for kind in DEVICE_KINDS
]


def _name(f: Finding) -> str:
    return "-".join(str(x) for x in (f.observation, f.kind or f.laterality, f.location) if x)


def test_deterministic_and_seeded(anatomy: Anatomy) -> None:
    findings = [Finding("Pleural Effusion", "right", "small"), Finding("Support Devices", kind="et_tube")]
    a = render(anatomy, [_fresh(f) for f in findings], view="PA", size=128, seed=3)
    b = render(anatomy, [_fresh(f) for f in findings], view="PA", size=128, seed=3)
    c = render(anatomy, [_fresh(f) for f in findings], view="PA", size=128, seed=4)
    assert np.array_equal(a.pixels, b.pixels)
    assert [asdict(r) for r in a.regions] == [asdict(r) for r in b.regions]
    assert np.abs(a.pixels - c.pixels).mean() > 0.005
    assert a.pixels.dtype == np.float32 and a.pixels.shape == (128, 128)
    assert 0.0 <= float(a.pixels.min()) and float(a.pixels.max()) <= 1.0


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_film_looks_like_a_chest(anatomy: Anatomy, normal: dict, view: str) -> None:
    """Coarse anatomy in MONOCHROME2: dark lungs either side, bright mediastinum and abdomen."""
    p = _normal(normal, anatomy, view).pixels
    s = SIZE
    lung_r = p[int(0.35 * s):int(0.5 * s), int(0.2 * s):int(0.3 * s)].mean()
    lung_l = p[int(0.35 * s):int(0.5 * s), int(0.7 * s):int(0.8 * s)].mean()
    spine = p[int(0.5 * s):int(0.6 * s), int(0.47 * s):int(0.53 * s)].mean()
    abdomen = p[int(0.88 * s):, int(0.4 * s):int(0.6 * s)].mean()
    corner = p[:4, :4].mean()
    assert lung_r < 0.45 and lung_l < 0.45
    assert spine > lung_r + 0.25 and abdomen > lung_r + 0.3
    assert corner < 0.15  # air outside the patient


@pytest.mark.parametrize("view", ["PA", "AP"])
@pytest.mark.parametrize("finding", FINDINGS, ids=_name)
def test_finding_changes_only_its_region(anatomy: Anatomy, normal: dict, finding: Finding, view: str) -> None:
    base = _normal(normal, anatomy, view)
    f = _fresh(finding)
    out = render(anatomy, [f], view=view, size=SIZE, seed=5)
    assert len(out.regions) == 1
    region = out.regions[0]
    assert region.finding == 0 and region.observation == f.observation
    diff = np.abs(out.pixels - base.pixels)
    assert diff.sum() > 0, "the finding is invisible"
    x0, y0, x1, y1 = region.box
    assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
    near = np.zeros_like(diff, dtype=bool)
    near[max(0, y0 - MARGIN):y1 + MARGIN, max(0, x0 - MARGIN):x1 + MARGIN] = True
    assert diff[near].sum() >= 0.9 * diff.sum()
    assert diff[~near].max(initial=0.0) < 2e-3  # nothing outside (below half a grey level)
    mask = rle_decode(region.mask_rle, diff.shape)
    assert mask.any()
    ys, xs = np.nonzero(mask)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    noise = out.info["exposure"].noise
    assert diff[mask].mean() > noise, f"mean change in mask {diff[mask].mean():.4f} vs noise {noise:.4f}"


@pytest.mark.parametrize("finding", [f for f in FINDINGS if f.observation != "Support Devices"
                                     and f.laterality in ("left", "right")], ids=_name)
def test_laterality_follows_display_convention(anatomy: Anatomy, normal: dict, finding: Finding) -> None:
    """Patient's left is on the viewer's right (the image's right half), and vice versa."""
    base = _normal(normal, anatomy, "PA")
    out = render(anatomy, [_fresh(finding)], view="PA", size=SIZE, seed=5)
    diff = np.abs(out.pixels - base.pixels)
    right_half = diff[:, SIZE // 2:].sum() / diff.sum()
    if finding.laterality == "left":
        assert right_half > 0.9
    else:
        assert right_half < 0.1


def test_devices_on_their_side(anatomy: Anatomy, normal: dict) -> None:
    base = _normal(normal, anatomy, "AP")
    for kind, side in (("chest_tube", "left"), ("chest_tube", "right"), ("pacemaker", "right")):
        out = render(anatomy, [Finding("Support Devices", side, kind=kind)], view="AP", size=SIZE, seed=5)
        diff = np.abs(out.pixels - base.pixels)
        right_half = diff[:, SIZE // 2:].sum() / diff.sum()
        assert (right_half > 0.7) if side == "left" else (right_half < 0.3), (kind, side, right_half)


def test_a_finding_among_others_changes_only_its_region(anatomy: Anatomy) -> None:
    others = [Finding("Pleural Effusion", "left", "moderate"), Finding("Cardiomegaly", severity="mild"),
              Finding("Support Devices", kind="et_tube"), Finding("Edema", severity="mild")]
    nodule = Finding("Lung Lesion", "right", location="right upper lobe", kind="nodule", params={"size_mm": 20})
    without = render(anatomy, [_fresh(f) for f in others], view="AP", size=SIZE, seed=9)
    with_ = render(anatomy, [_fresh(f) for f in others] + [_fresh(nodule)], view="AP", size=SIZE, seed=9)
    diff = np.abs(with_.pixels - without.pixels)
    x0, y0, x1, y1 = with_.regions[-1].box
    outside = diff.copy()
    outside[max(0, y0 - MARGIN):y1 + MARGIN, max(0, x0 - MARGIN):x1 + MARGIN] = 0
    assert outside.max() < 2e-3
    assert [r.box for r in with_.regions[:-1]] == [r.box for r in without.regions]


def _changed(anatomy: Anatomy, normal: dict, finding: Finding, view: str = "PA") -> np.ndarray:
    base = _normal(normal, anatomy, view)
    return np.abs(render(anatomy, [_fresh(finding)], view=view, size=SIZE, seed=5).pixels - base.pixels)


@pytest.mark.parametrize("observation, laterality", [("Pleural Effusion", "right"), ("Pneumothorax", "left"),
                                                     ("Edema", None), ("Atelectasis", "right")])
def test_severity_is_monotonic(anatomy: Anatomy, normal: dict, observation: str, laterality: str | None) -> None:
    from training.phantom.truth import SEVERITIES

    changed = [(_changed(anatomy, normal, Finding(observation, laterality, sev)) > 0.02).sum()
               for sev in SEVERITIES[observation]]
    assert changed == sorted(changed) and changed[0] < changed[-1], changed


def test_cardiomegaly_widens_the_heart(anatomy: Anatomy) -> None:
    widths, ctrs = [], []
    for sev in ("mild", "moderate", "severe"):
        out = render(anatomy, [Finding("Cardiomegaly", severity=sev)], view="PA", size=256, seed=1)
        x0, _, x1, _ = out.regions[0].box
        widths.append(x1 - x0)
        ctrs.append(out.info["ctr"])
    assert widths == sorted(widths) and widths[0] < widths[-1]
    assert ctrs[0] == pytest.approx(0.55, abs=0.02) and ctrs[-1] == pytest.approx(0.70, abs=0.02)
    assert render(anatomy, [], view="PA", size=64, seed=1).info["ctr"] <= 0.5


def test_params_persist_across_films(anatomy: Anatomy) -> None:
    findings = [Finding("Lung Lesion", "left", location="left lower lobe", kind="nodule"),
                Finding("Pneumonia", "right", location="right upper lobe"),
                Finding("Fracture", "right"),
                Finding("Support Devices", "left", kind="pacemaker")]
    first = render(anatomy, findings, view="PA", size=256, seed=1)
    for f in findings:
        assert f.params, f"{f.observation} left its geometry unrecorded"
        json.dumps(f.params)  # JSON-serialisable
    kept = copy.deepcopy([f.params for f in findings])
    # The same finding seen anew (another study, another seed) lands in the same place ...
    again = [_fresh(f) for f in findings]
    for f in again:
        f.params = {}
    render(anatomy, again, view="AP", size=128, seed=77)
    assert [f.params for f in again] == kept
    # ... and re-rendering with the filled params moves regions only by the positioning jitter.
    second = render(anatomy, findings, view="PA", size=256, seed=2)
    assert [f.params for f in findings] == kept
    for r1, r2 in zip(first.regions, second.regions, strict=True):
        assert max(abs(a - b) for a, b in zip(r1.box, r2.box, strict=True)) <= 0.08 * 256, (r1.box, r2.box)


def test_another_patient_puts_findings_elsewhere() -> None:
    a1, a2 = sample_anatomy(np.random.default_rng(1)), sample_anatomy(np.random.default_rng(2))
    f1 = Finding("Lung Lesion", "left", location="left lower lobe", kind="nodule")
    f2 = _fresh(f1)
    render(a1, [f1], size=64)
    render(a2, [f2], size=64)
    assert f1.params != f2.params


def test_rle_round_trip() -> None:
    rng = np.random.default_rng(0)
    for mask in (rng.random((17, 23)) > 0.6, np.ones((5, 4), bool), np.zeros((4, 5), bool),
                 np.eye(6, dtype=bool)):
        rle = rle_encode(mask)
        assert sum(rle) == mask.size
        assert np.array_equal(rle_decode(rle, mask.shape), mask)
    assert rle_encode(np.array([[True, False]]))[0] == 0  # runs start with a (here empty) False run
    with pytest.raises(ValueError):
        rle_decode([3, 2], (2, 2))


def test_sizes_keep_relative_geometry(anatomy: Anatomy) -> None:
    findings = [Finding("Lung Lesion", "right", location="right upper lobe", kind="mass", params={"size_mm": 40}),
                Finding("Pleural Effusion", "left", "moderate")]
    boxes, spacing = {}, {}
    for size in (128, 256, 512, 1024):
        out = render(anatomy, [_fresh(f) for f in findings], view="PA", size=size, seed=4)
        assert out.pixels.shape == (size, size)
        boxes[size] = [np.array(r.box) / size for r in out.regions]
        spacing[size] = out.pixel_spacing_mm * size
    for size in (128, 256, 512):
        for b, ref in zip(boxes[size], boxes[1024], strict=True):
            assert np.abs(b - ref).max() < 0.035, (size, b, ref)
        assert spacing[size] == pytest.approx(spacing[1024])
    assert 330 <= spacing[512] <= 460  # an anatomically sized field (mm)


def test_anatomy_is_json_and_varies() -> None:
    rng = np.random.default_rng(3)
    people = [sample_anatomy(rng) for _ in range(20)]
    for a in people:
        d = json.loads(json.dumps(asdict(a)))
        assert Anatomy.from_dict(d) == a
    assert {a.sex for a in people} == {"F", "M"}
    assert np.std([a.ctr for a in people]) > 0.01
    assert sample_anatomy(np.random.default_rng(4), sex="F").sex == "F"
    one = people[0]
    assert np.array_equal(render(one, [], size=96, seed=1).pixels,
                          render(Anatomy.from_dict(asdict(one)), [], size=96, seed=1).pixels)


def test_views_differ_as_expected(anatomy: Anatomy) -> None:
    pa = render(anatomy, [], view="PA", size=128, seed=2)
    ap = render(anatomy, [], view="ap", size=128, seed=2)
    assert ap.view == "AP" and pa.view == "PA"
    assert ap.info["ctr"] > pa.info["ctr"] * 1.08  # the heart is magnified on AP films
    with pytest.raises(ValueError):
        render(anatomy, [], view="LATERAL", size=64)


def test_unknown_observation_has_no_region(anatomy: Anatomy) -> None:
    out = render(anatomy, [Finding("No Finding"), Finding("Pleural Effusion", "right", "small")], size=96)
    assert [r.finding for r in out.regions] == [1]
