"""The phantom renderer: a synthetic chest radiograph with known findings.

``render(anatomy, findings, view=, size=, seed=)`` draws one film and records,
for every finding it draws, where the finding is (:class:`Region`: a pixel box
and a run-length-encoded mask).  How it works, in one paragraph:

Everything is a *density* (projected attenuation, arbitrary units: 0 is air
outside the patient, ~1 the mediastinum) built from layers, each a function of
pixel position only: the body's soft tissue, the lungs' air (subtracted), the
heart and mediastinum, the bones, the pulmonary vessels, and each finding's
contribution.  The layers are combined pixel by pixel, blurred once by the
detector's point-spread function, mapped to display intensity by a film-like
characteristic curve, and given quantum noise.  Because composition is
pixelwise and the only spatial operation after it is a narrow blur, a finding
changes the picture only where its own layers are non-zero (plus ~2 pixels),
which is what makes its recorded region honest.  Nothing global (no automatic
windowing, no histogram equalisation) depends on image content, and the pose,
exposure and noise depend on ``seed`` (and the patient) only, never on the
findings.

Smooth fields (soft tissue, lung thickness, diffuse opacities) are computed on
a quarter-resolution grid and upsampled; edges that must be sharp (pleura,
diaphragm, heart border, bone cortex, vessels, tubes) are drawn at full
resolution with Pillow (at twice the size and reduced, up to 1100 px: Pillow does not
anti-alias).  Display convention: MONOCHROME2 (bright = dense) and
the patient's left on the viewer's right, as radiographs are read.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from training.phantom.anatomy import SIDES, Anatomy, Chest, Posture, side_sign, smoothstep
from training.phantom.truth import Finding, Region

#: Density of the lungs' air at full thickness (subtracted from the body's soft tissue).
AIR = 0.52
#: A finding's density contribution below this does not count as changing the film (~0.1 grey level).
SUPPORT_EPS = 0.0015
#: The mask of a region: where the finding contributes at least this share of its strongest density.
MASK_SHARE = 0.15


@dataclass
class Rendered:
    """One rendered film: display pixels in [0, 1] (MONOCHROME2) and where each finding is."""

    pixels: np.ndarray
    regions: list[Region]
    pixel_spacing_mm: float
    view: str = "PA"
    size: int = 0
    info: dict[str, Any] = field(default_factory=dict)


# --- run-length masks --------------------------------------------------------------------


def rle_encode(mask: np.ndarray) -> list[int]:
    """Row-major run lengths of a boolean mask, alternating, starting with a (maybe empty) False run."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    out = [int(r) for r in runs]
    return [0, *out] if flat[0] else out


def rle_decode(rle: list[int], shape: tuple[int, int]) -> np.ndarray:
    """The boolean mask of :func:`rle_encode`."""
    total = int(np.prod(shape))
    runs = np.asarray(rle, dtype=np.int64)
    if runs.sum() != total:
        raise ValueError(f"run lengths sum to {int(runs.sum())}, not {total} = {shape}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape(shape)


# --- the exposure's geometry ------------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    """Where the patient stood on this exposure: rotation, shift and magnification."""

    rotation: float = 0.0  # radians
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Anatomy frame -> image frame (both normalised to the field)."""
        xy = np.asarray(xy, dtype=np.float64)
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        x, y = xy[..., 0] - 0.5, xy[..., 1] - 0.5
        return np.stack([0.5 + self.scale * (c * x - s * y) + self.dx,
                         0.5 + self.scale * (s * x + c * y) + self.dy], axis=-1)

    def to_anatomy(self, xi: np.ndarray, yi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        x = (xi - 0.5 - self.dx) / self.scale
        y = (yi - 0.5 - self.dy) / self.scale
        return 0.5 + c * x + s * y, 0.5 - s * x + c * y


class Strokes:
    """Polylines and polygons in the anatomy frame, collected to be drawn in one go."""

    def __init__(self) -> None:
        self.items: list[tuple[np.ndarray, float | None, float]] = []

    def line(self, xy: np.ndarray, width_mm: float, value: float) -> None:
        if len(xy) >= 2:
            self.items.append((np.asarray(xy, dtype=np.float64).reshape(-1, 2), width_mm, value))

    def polygon(self, xy: np.ndarray, value: float) -> None:
        self.items.append((np.asarray(xy, dtype=np.float64).reshape(-1, 2), None, value))


class Canvas:
    """Full- and quarter-resolution drawing surfaces of one film, plus the findings' accumulators.

    Findings add to named accumulators (``opac``: share of lung air replaced by
    fluid or tissue; ``lucent``: extra air; ``ptx``: no lung markings;
    ``marks``: change of the lung markings; ``extra``: density added on top)
    through :meth:`add`, which also records where each finding touched the
    picture.
    """

    def __init__(self, size: int, pose: Pose, chest: Chest, anatomy: Anatomy) -> None:
        self.S = size
        self.L = max(48, size // 4)
        # Pillow draws without anti-aliasing: small films are drawn at twice the size and reduced.
        self.ss = 2 if size <= 1100 else 1
        self.pose = pose
        self.chest = chest
        self.anatomy = anatomy
        self.px_per_mm = pose.scale * size / anatomy.field_mm
        q = (np.arange(self.L, dtype=np.float64) + 0.5) / self.L
        xi, yi = np.meshgrid(q, q)
        self.X, self.Y = self.pose.to_anatomy(xi, yi)
        self.acc: dict[str, np.ndarray] = {}
        self.layers: dict[str, np.ndarray] = {}
        self.support: np.ndarray | None = None
        self.strength: np.ndarray | None = None
        self.moved: np.ndarray | None = None
        self.fracture_points: dict[tuple[str, int], np.ndarray] = {}
        self.fracture_masks: dict[tuple[str, int], np.ndarray] = {}
        self._st: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- coordinates and drawing ------------------------------------------------------------

    def pts(self, xy: np.ndarray, lo: bool = False) -> list[float]:
        """Anatomy-frame points -> flat Pillow pixel coordinates (pixel centres at integers)."""
        n = self.L if lo else self.S * self.ss
        q = self.pose.to_image(np.asarray(xy, dtype=np.float64).reshape(-1, 2)) * n - 0.5
        return q.ravel().tolist()

    def px(self, xy: np.ndarray) -> np.ndarray:
        """Anatomy-frame points -> pixel coordinates as an array."""
        return self.pose.to_image(np.asarray(xy, dtype=np.float64)) * self.S - 0.5

    def mm(self, value: float) -> float:
        """Millimetres -> anatomy-frame units."""
        return value / self.anatomy.field_mm

    def new(self, lo: bool = False, mode: str = "F", scale: float = 1.0) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        """A blank drawing.  Mode "F" holds any float; mode "L" (four times cheaper) holds
        values in [0, ``scale``] in 255 steps, where later strokes replace earlier ones."""
        n = self.L if lo else self.S * self.ss
        img = Image.new(mode, (n, n), 0)
        img.info["scale"] = scale
        draw = ImageDraw.Draw(img)
        draw.scale = scale  # type: ignore[attr-defined]
        return img, draw

    def array(self, img: Image.Image) -> np.ndarray:
        """A drawing as a float array at the film's (or the quarter grid's) size."""
        scale = img.info.get("scale", 1.0)
        if img.width == self.S * self.ss and self.ss > 1:
            img = img.reduce(self.ss)
        arr = np.asarray(img, dtype=np.float32)
        return arr * np.float32(scale / 255) if img.mode == "L" else arr.copy()

    @staticmethod
    def _ink(draw: ImageDraw.ImageDraw, value: float) -> float | int:
        if draw.mode == "L":
            return int(round(255 * min(1.0, max(0.0, value / getattr(draw, "scale", 1.0)))))
        return float(value)

    def line(self, draw: ImageDraw.ImageDraw, xy: np.ndarray, width_mm: float, value: float) -> None:
        """A polyline ``width_mm`` wide; below a pixel the value is scaled (same projected density)."""
        w = width_mm * self.px_per_mm * self.ss
        wi = max(1, int(round(w)))
        # no joint rounding: Pillow's is slow, and the centre lines are densely sampled anyway
        draw.line(self.pts(xy), fill=self._ink(draw, value * min(1.0, w / wi)), width=wi)

    def polygon(self, draw: ImageDraw.ImageDraw, xy: np.ndarray, value: float, lo: bool = False) -> None:
        draw.polygon(self.pts(xy, lo=lo), fill=self._ink(draw, value))

    def draw_strokes(self, draw: ImageDraw.ImageDraw, strokes: Strokes) -> None:
        """Draw collected strokes in order, with one coordinate transform for all of them."""
        if not strokes.items:
            return
        xy = np.concatenate([item[0] for item in strokes.items])
        q = self.pose.to_image(xy) * (self.S * self.ss) - 0.5
        ends = np.cumsum([len(item[0]) for item in strokes.items])[:-1]
        for (_, width_mm, value), pts in zip(strokes.items, np.split(q, ends), strict=True):
            flat = pts.ravel().tolist()
            if width_mm is None:
                draw.polygon(flat, fill=self._ink(draw, value))
            else:
                w = width_mm * self.px_per_mm * self.ss
                wi = max(1, int(round(w)))
                draw.line(flat, fill=self._ink(draw, value * min(1.0, w / wi)), width=wi)

    def up(self, lo: np.ndarray) -> np.ndarray:
        """A quarter-resolution field at full resolution (bicubic)."""
        img = Image.fromarray(np.asarray(lo, dtype=np.float32), mode="F")
        return np.array(img.resize((self.S, self.S), Image.BICUBIC), dtype=np.float32)

    def st(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """Lung-relative (s, t) of every quarter-resolution pixel, for one side."""
        if side not in self._st:
            self._st[side] = self.chest.xy_to_st(side, self.X, self.Y)
        return self._st[side]

    # -- findings' bookkeeping ------------------------------------------------------------

    def begin(self) -> None:
        """Start recording one finding: where it changes the film, and how strongly."""
        self.support = np.zeros((self.S, self.S), dtype=bool)
        self.strength = np.zeros((self.S, self.S), dtype=np.float32)
        self.moved = np.zeros((self.S, self.S), dtype=bool)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(support, mask) of the finding just drawn: every pixel it touched, and its core."""
        assert self.support is not None and self.strength is not None and self.moved is not None
        peak = float(self.strength.max())
        core = self.strength >= MASK_SHARE * peak if peak > 0 else np.zeros_like(self.moved)
        out = (self.support | self.moved, core | self.moved)
        self.support = self.strength = self.moved = None
        return out

    def add(self, name: str, arr: np.ndarray) -> None:
        """Add a finding's contribution to accumulator ``name`` and remember where it is."""
        arr = np.asarray(arr, dtype=np.float32)
        if name in self.acc:
            self.acc[name] += arr
        else:
            self.acc[name] = arr.copy()
        if self.support is not None and self.strength is not None:
            mag = np.abs(arr)
            self.support |= mag > SUPPORT_EPS
            self.strength += mag

    def mark(self, mask: np.ndarray) -> None:
        """Count pixels as the finding's although no accumulator changed there (anatomy it moved)."""
        if self.moved is not None:
            self.moved |= mask


# --- randomness --------------------------------------------------------------------------


def key_rng(*key: Any) -> np.random.Generator:
    """A random stream fixed by a key (stable across processes: no Python ``hash``)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def sample_pose(rng: np.random.Generator, view: str) -> tuple[Pose, float, float]:
    """Positioning of one exposure, the depth of the breath held and the rotation about the
    patient's long axis (twist)."""
    ap = view.upper() == "AP"
    rot = float(np.clip(rng.normal(0, 2.0 if ap else 1.2), -5, 5))
    pose = Pose(
        rotation=math.radians(rot),
        dx=float(np.clip(rng.normal(0, 0.018 if ap else 0.01), -0.04, 0.04)),
        dy=float(np.clip(rng.normal(0.01 if ap else 0.0, 0.015 if ap else 0.01), -0.04, 0.04)),
        scale=float(np.clip(rng.normal(1.03 if ap else 1.0, 0.02), 0.95, 1.08)),
    )
    inspiration = float(np.clip(rng.normal(0.0, 0.015), -0.035, 0.035))
    twist = float(np.clip(rng.normal(0.0, 0.012 if ap else 0.007), -0.03, 0.03))
    return pose, inspiration, twist


# --- the vascular tree ------------------------------------------------------------------

_TREES: dict[tuple, dict[str, np.ndarray]] = {}


def vessel_tree(anatomy: Anatomy) -> dict[str, np.ndarray]:
    """Pulmonary arteries and veins of one patient as segments in lung-relative coordinates.

    Returns per side an (n, 5) array ``s0, t0, s1, t1, width_mm``.  Built by
    dichotomous branching from the hilum, vectorised one generation at a time;
    branches that would leave the lung stop.  Lower-zone trunks are wider (an
    upright patient perfuses the bases more); the renderer evens this out on
    supine AP films.  Cached per patient because every film of the patient
    uses it.
    """
    key = tuple(anatomy.to_dict().values())
    if key in _TREES:
        return _TREES[key]
    chest = Chest(anatomy)
    rng = key_rng("vessels", anatomy.seed)
    out: dict[str, np.ndarray] = {}
    for side in SIDES:
        hu, hy = chest.hilum(side)
        # trunks: angle (0 lateral, +90 down), length, width (mm)
        trunks = [(-105, 0.04, 5.5), (-72, 0.05, 6.0), (-38, 0.04, 5.5), (0, 0.035, 5.5),
                  (35, 0.045, 7.0), (62, 0.06, 8.5), (88, 0.06, 8.0), (115, 0.045, 6.0)]
        a = np.radians([t[0] + rng.normal(0, 6) for t in trunks])
        length = np.array([t[1] for t in trunks]) * rng.uniform(0.85, 1.15, len(trunks))
        width = np.array([t[2] for t in trunks]) * rng.uniform(0.85, 1.1, len(trunks))
        u0 = np.full(len(trunks), hu + 0.01)
        y0 = np.full(len(trunks), hy)
        segs = []
        for gen in range(12):
            u1 = u0 + length * np.cos(a)
            y1 = y0 + length * np.sin(a)
            ok = chest.inside_lung(side, u1, y1) | (gen == 0)
            # one retry at half length keeps the tree reaching towards the pleura
            half = ~ok
            u1[half] = u0[half] + 0.5 * length[half] * np.cos(a[half])
            y1[half] = y0[half] + 0.5 * length[half] * np.sin(a[half])
            ok = ok | chest.inside_lung(side, u1, y1)
            ok &= width > 0.7
            segs.append(np.stack([u0[ok], y0[ok], u1[ok], y1[ok], width[ok]], axis=1))
            n = int(ok.sum())
            if n == 0:
                break
            u1, y1, a, length, width = u1[ok], y1[ok], a[ok], length[ok], width[ok]
            radial = np.arctan2(y1 - hy, u1 - hu)
            a = a + 0.15 * np.angle(np.exp(1j * (radial - a))) + np.radians(rng.normal(0, 9, n))
            # a branch either divides (two daughters) or gives off nothing and runs on
            split = rng.random(n) < 0.62
            spread = np.radians(rng.uniform(18, 34, n))
            main = a + np.where(split, spread * rng.uniform(0.3, 0.7, n), 0.0)
            side_a = a - spread
            a = np.concatenate([main, side_a[split]])
            u0 = np.concatenate([u1, u1[split]])
            y0 = np.concatenate([y1, y1[split]])
            shrink_main = np.where(split, rng.uniform(0.74, 0.86, n), rng.uniform(0.86, 0.93, n))
            width = np.concatenate([width * shrink_main, width[split] * rng.uniform(0.6, 0.75, int(split.sum()))])
            length = np.concatenate([length * rng.uniform(0.8, 0.95, n),
                                     length[split] * rng.uniform(0.65, 0.85, int(split.sum()))])
        seg = np.concatenate(segs)
        s0, t0 = chest.xy_to_st(side, chest.mid + side_sign(side) * seg[:, 0], seg[:, 1])
        s1, t1 = chest.xy_to_st(side, chest.mid + side_sign(side) * seg[:, 2], seg[:, 3])
        out[side] = np.stack([s0, t0, s1, t1, seg[:, 4]], axis=1)
    if len(_TREES) > 64:
        _TREES.clear()
    _TREES[key] = out
    return out


def smooth_noise(seed: int, sigma: float, x: np.ndarray, y: np.ndarray, n: int = 96) -> np.ndarray:
    """Smooth unit-variance noise attached to the anatomy frame, sampled at (x, y).

    The noise lives on a fixed grid over the field, so a texture keyed by a
    finding stays the same when the patient is positioned differently.
    """
    g = np.random.default_rng(seed).standard_normal((n, n))
    g = ndimage.gaussian_filter(g, sigma * n, mode="wrap")
    g /= g.std() + 1e-9
    coords = np.stack([np.asarray(y) * n - 0.5, np.asarray(x) * n - 0.5])
    return ndimage.map_coordinates(g, coords, order=1, mode="grid-wrap").astype(np.float32)


# --- anatomy layers ----------------------------------------------------------------------


def draw_anatomy(canvas: Canvas, fractures: dict[tuple[str, int], dict[str, float]]) -> None:
    """The normal chest into ``canvas.layers``; ``fractures`` break ribs (side, rib) -> geometry."""
    c, a = canvas.chest, canvas.anatomy
    X, Y = canvas.X, canvas.Y
    L = canvas.layers
    mid = a.mid_x

    # Body soft tissue (quarter resolution): neck, sloping shoulders, chest wall, abdomen.
    dx = X - mid
    d = np.abs(dx)
    torso = a.body_half_width * (1.0 + 0.04 * (Y - 0.5)) + 0.2 * (1.0 - smoothstep((Y - 0.14) / 0.22))
    # trapezius line: from the neck's base down to the acromion, rounding over the deltoid
    reach = np.clip((d - a.neck_half_width) / (0.42 - a.neck_half_width), 0.0, None)
    shoulder_top = a.shoulder_y - 0.11 + 0.11 * np.minimum(reach, 1.0) ** 0.8 + 0.3 * np.clip(reach - 1.0, 0, None) ** 2
    trunk = np.sqrt(np.clip(1.0 - (dx / torso) ** 2, 0.0, 1.0)) ** 0.45 * smoothstep((Y - shoulder_top) / 0.03)
    neck = 0.7 * np.sqrt(np.clip(1.0 - (dx / a.neck_half_width) ** 2, 0.0, 1.0)) ** 0.6
    depth = 0.8 + 0.2 * smoothstep((Y - 0.15) / 0.2) + 0.05 * smoothstep((Y - c.dome_y["right"]) / 0.06)
    body = np.maximum(trunk * depth, neck) * (0.95 + 0.1 * (a.habitus - 1.0))
    if c.ap:  # arms beside the chest on a supine film
        arm_c = a.body_half_width + 0.06
        arm = np.sqrt(np.clip(1 - ((d - arm_c) / 0.055) ** 2, 0, 1)) * smoothstep((Y - 0.15) / 0.1)
        body = body + 0.35 * arm * (1 - smoothstep((Y - 0.75) / 0.2))
    if a.breast > 0:
        for side in SIDES:
            cx = mid + side_sign(side) * (0.2 + 0.2 * a.breast)
            cy = c.dome_y[side] - 0.02 - (0.02 if c.ap else 0.0)
            rb = a.breast * (1.1 if c.ap else 1.0)
            d2 = ((X - cx) / (rb * 1.05)) ** 2 + ((Y - cy) / (rb * 0.8)) ** 2
            low = 0.35 + 0.65 * smoothstep((Y - cy + rb * 0.9) / (1.5 * rb))
            body = body + 0.24 * np.sqrt(np.clip(1 - d2, 0, 1)) * low
    L["body"] = canvas.up(body)

    # Lungs: a sharp outline at full resolution, thickness profile at quarter resolution.
    img, draw = canvas.new(mode="L")
    lo_img, lo_draw = canvas.new(lo=True)
    for side in SIDES:
        poly = c.lung_polygon(side)
        canvas.polygon(draw, poly, 1.0)
        canvas.polygon(lo_draw, poly, 1.0, lo=True)
    L["lung"] = canvas.array(img)
    lung_lo = np.array(lo_img, dtype=np.float32)
    prof = ndimage.gaussian_filter(lung_lo, 0.05 * canvas.L)
    prof = prof / max(float(prof.max()), 1e-6)
    texture = smooth_noise(a.seed, 0.012, X, Y)
    apex_fade = smoothstep((Y - c.apex_y) / 0.12)
    L["prof"] = canvas.up(np.clip(0.35 + 0.65 * prof, 0, 1) * (0.85 + 0.15 * apex_fade) * (1 + 0.035 * texture))

    # Heart, mediastinum (with the descending aorta's paraspinal band), airway.
    img, draw = canvas.new(mode="L")
    heart = c.heart_polygon()
    canvas.polygon(draw, heart, 1.0)
    lo_img, lo_draw = canvas.new(lo=True)
    canvas.polygon(lo_draw, heart, 1.0, lo=True)
    # the heart is thicker in its middle than at its borders
    core = ndimage.gaussian_filter(np.array(lo_img, dtype=np.float32), 0.04 * canvas.L)
    L["heart"] = canvas.array(img)
    L["heart_core"] = canvas.up(core / max(float(core.max()), 1e-6))
    img, draw = canvas.new(mode="L")
    canvas.polygon(draw, c.descending_aorta(), 0.45)
    canvas.polygon(draw, c.mediastinum_polygon(), 1.0)
    L["med"] = canvas.array(img)
    # Air outside the lungs: trachea and main bronchi, and the gastric bubble under the left
    # dome (with a fluid level on an upright film).  One drawing, in density units.
    img, draw = canvas.new(mode="L", scale=0.3)
    tw_mm = a.trachea_half_width * 2 * a.field_mm
    canvas.line(draw, c.trachea_path(), tw_mm, 0.28)
    for side, path in c.bronchi().items():
        canvas.line(draw, path, tw_mm * (0.72 if side == "right" else 0.66), 0.21)
    if a.gastric_bubble > 0:
        r = a.gastric_bubble
        u = 0.17 + 0.5 * r
        top = c.diaphragm_y("left", np.array(u)) + 0.012
        th = np.linspace(0, 2 * np.pi, 40)
        cy = top + r * 0.8
        pts = np.stack([mid + u + r * 1.2 * np.cos(th), cy + r * 0.8 * np.sin(th)], axis=1)
        if not c.ap:
            pts[:, 1] = np.minimum(pts[:, 1], cy + 0.2 * r)
        canvas.polygon(draw, pts, 0.15 if c.ap else 0.22)
    L["air"] = canvas.array(img)

    _draw_bones(canvas, fractures)
    _draw_vessels(canvas)


def _rib_band(strokes: Strokes, xy: np.ndarray, height_mm: float, cortex: float, marrow: float) -> None:
    """A rib as a band with bright cortices: full width at the cortical value, the marrow inside."""
    strokes.line(xy, height_mm, cortex)
    strokes.line(xy, height_mm * 0.6, marrow)


def break_rib(post: np.ndarray, geo: dict[str, float], rib_h: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Split a rib's centre line at a fracture: a gap, and a step-off of the distal fragment
    that fades over a few rib heights.  Returns the pieces and the break point (u, y)."""
    seg = np.diff(post, axis=0)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
    at = geo["position"] * arc[-1]
    gap = geo["gap"]
    k = int(np.clip(np.searchsorted(arc, at), 1, len(post) - 1))
    direction = seg[k - 1] / max(float(np.hypot(*seg[k - 1])), 1e-9)
    normal = np.array([-direction[1], direction[0]])
    point = post[k - 1] + direction * (at - arc[k - 1])
    before = np.concatenate([post[arc < at - gap / 2], [point - direction * gap / 2]])
    fade = 3.0 * rib_h
    after_idx = arc > at + gap / 2
    after = np.concatenate([[point + direction * gap / 2], post[after_idx]])
    dist = np.concatenate([[gap / 2], arc[after_idx] - at])
    shift = geo["step"] * rib_h * np.clip(1 - dist / fade, 0, 1)
    after = after + shift[:, None] * normal[None, :]
    return [before, after], point


def _changed(canvas: Canvas, side: str, whole: np.ndarray, pieces: list[np.ndarray], h: float) -> np.ndarray:
    """Pixels where a broken rib differs from the whole one (the fracture's own mask)."""
    c = canvas.chest
    masks = []
    for parts in ([whole], pieces):
        img, draw = canvas.new(mode="L")
        strokes = Strokes()
        for part in parts:
            _rib_band(strokes, c.to_xy(side, part), h, 1.0, 0.5)
        canvas.draw_strokes(draw, strokes)
        masks.append(canvas.array(img))
    return ndimage.binary_dilation(np.abs(masks[0] - masks[1]) > 0.01, iterations=1)


def _draw_bones(canvas: Canvas, fractures: dict[tuple[str, int], dict[str, float]]) -> None:
    """Ribs (posterior bright, anterior faint), spine, clavicles, scapulae, humeral heads.

    Posterior ribs and the spine go in one drawing, anterior ribs and the shoulder girdle in
    another, so that where an anterior rib crosses a posterior one their densities add.
    """
    c, a = canvas.chest, canvas.anatomy
    fmm = a.field_mm
    rib_h = a.rib_height * fmm
    post, ant = Strokes(), Strokes()
    for side in SIDES:
        for i in range(1, 13):
            p, q = c.rib(side, i)
            h = rib_h * (0.8 if i == 1 else 1.0) * (1 + 0.02 * i)
            fade = 0.55 if i >= 11 else 1.0
            pieces = [p]
            if (side, i) in fractures:
                pieces, point = break_rib(p, fractures[(side, i)], a.rib_height)
                canvas.fracture_points[(side, i)] = c.to_xy(side, point)
                canvas.fracture_masks[(side, i)] = _changed(canvas, side, p, pieces, h)
            for piece in pieces:
                _rib_band(post, c.to_xy(side, piece), h, 0.13 * fade, 0.09 * fade)
            if len(q):
                _rib_band(ant, c.to_xy(side, q), h * 1.15, 0.07, 0.05)
    # Vertebral bodies (endplates and pedicles brighter), faint through the mediastinum.
    th = np.linspace(0, 2 * np.pi, 14)
    for y0, y1, hw in c.vertebrae():
        body = np.array([(a.mid_x - hw, y0), (a.mid_x + hw, y0), (a.mid_x + hw * 1.02, y1),
                         (a.mid_x - hw * 1.02, y1)])
        post.polygon(body, 0.07)
        inner = body + [[0.0, 0.004], [0.0, 0.004], [0.0, -0.004], [0.0, -0.004]]
        inner[:, 0] = a.mid_x + (inner[:, 0] - a.mid_x) * 0.85
        post.polygon(inner, 0.05)
        for sgn in (-1, 1):
            cx, cy = a.mid_x + sgn * hw * 0.72, y0 + 0.3 * (y1 - y0)
            rx, ry = hw * 0.2, (y1 - y0) * 0.28
            post.line(np.stack([cx + rx * np.cos(th), cy + ry * np.sin(th)], axis=1), 1.2, 0.08)
        post.line(np.array([(a.mid_x, y0 + 0.2 * (y1 - y0)), (a.mid_x, y1 + 0.1 * (y1 - y0))]),
                  hw * 0.35 * fmm, 0.05)
    circle = np.linspace(0, 2 * np.pi, 36)
    for side in SIDES:
        xy = c.to_xy(side, c.clavicle(side))
        ant.line(xy, rib_h * 1.5, 0.2)
        ant.line(xy, rib_h * 0.9, 0.14)
        ant.line(xy[:4], rib_h * 1.8, 0.2)  # bulbous medial end
        sc = c.scapula(side)
        ant.polygon(c.to_xy(side, sc["body"]), 0.07)
        ant.line(c.to_xy(side, sc["border"]), 2.5, 0.12)
        hu, hy, hr = c.humeral_head(side)
        head = c.to_xy(side, np.stack([hu + hr * np.cos(circle), hy + hr * np.sin(circle)], axis=1))
        ant.polygon(head, 0.13)
        ant.line(head, 2.0, 0.2)
    layers = []
    for strokes in (post, ant):
        img, draw = canvas.new(mode="L", scale=0.4)
        canvas.draw_strokes(draw, strokes)
        layers.append(canvas.array(img))
    canvas.layers["bones"] = layers[0] + layers[1]


def _draw_vessels(canvas: Canvas) -> None:
    """The vascular tree, widths in mm; projected density proportional to calibre."""
    c = canvas.chest
    img, draw = canvas.new(mode="L", scale=0.4)
    ink = 255 / 0.4
    lines = draw.draw.draw_lines  # Pillow's C call: the Python wrapper costs more than the drawing
    supine = c.ap
    for side, seg in vessel_tree(canvas.anatomy).items():
        p0 = c.st_to_xy(side, seg[:, 0], seg[:, 1])
        p1 = c.st_to_xy(side, seg[:, 2], seg[:, 3])
        w = seg[:, 4].copy()
        if supine:  # no gravity gradient lying down: upper and lower vessels alike
            t = 0.5 * (seg[:, 1] + seg[:, 3])
            w *= np.where(t < 0.45, 1.15, 0.95)
        a0 = (canvas.px(p0) + 0.5) * canvas.ss - 0.5
        a1 = (canvas.px(p1) + 0.5) * canvas.ss - 0.5
        ww = w * canvas.px_per_mm * canvas.ss
        wi = np.maximum(1, np.rint(ww)).astype(int)
        val = 0.026 * w * np.minimum(1.0, ww / wi)
        ends = np.concatenate([a0, a1], axis=1).tolist()
        inks = np.minimum(255, np.rint(val * ink)).astype(int).tolist()
        widths = wi.tolist()
        # a vessel is a cylinder: brighter along its axis than at its edges
        edge_inks = np.rint(np.array(inks) * np.where(wi >= 3, 0.75, 1.0)).astype(int).tolist()
        core_inks = np.minimum(255, np.rint(np.array(inks) * 1.3)).astype(int).tolist()
        core_widths = np.maximum(1, np.rint(wi * 0.5)).astype(int).tolist()
        for k in np.argsort(-w).tolist():  # thin vessels over thick ones where they cross
            x0, y0, x1, y1 = ends[k]
            lines(((x0, y0), (x1, y1)), edge_inks[k], widths[k])
            if widths[k] >= 3:
                lines(((x0, y0), (x1, y1)), core_inks[k], core_widths[k])
    canvas.layers["vessels"] = canvas.array(img)


# --- composition --------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """Film-like characteristic curve and noise of one exposure."""

    centre: float = 0.6
    width: float = 0.19
    noise: float = 0.012
    tilt: float = 0.0

    @classmethod
    def sample(cls, rng: np.random.Generator, view: str, habitus: float) -> Exposure:
        ap = view.upper() == "AP"
        return cls(
            centre=float(rng.normal(0.55, 0.03)),
            width=float(np.clip(rng.normal(0.27, 0.02), 0.22, 0.32)),
            noise=float(rng.uniform(0.006, 0.016) * (1.35 if ap else 1.0) * (0.8 + 0.3 * habitus)),
            tilt=float(rng.normal(0, 0.02)),
        )

    def display(self, density: np.ndarray) -> np.ndarray:
        z0 = -self.centre / self.width
        s0 = 1.0 / (1.0 + math.exp(-z0))
        sig = 1.0 / (1.0 + np.exp(-(density - self.centre) / self.width))
        return (sig - s0) / (1.0 - s0)


def compose(canvas: Canvas) -> np.ndarray:
    """Density of the film from the anatomy layers and the findings' accumulators (pixelwise)."""
    L, acc = canvas.layers, canvas.acc
    opac = np.clip(acc["opac"], 0.0, 1.0) if "opac" in acc else None
    cover = (1.0 - 0.96 * L["med"]) * (1.0 - L["heart"] * (0.55 + 0.3 * L["heart_core"]))
    air = (AIR * L["lung"]) * L["prof"] * cover
    marks = L["vessels"] * L["lung"]
    if "marks" in acc:
        marks = marks + acc["marks"]
    if opac is not None:
        air *= 1.0 - opac
        marks *= 1.0 - opac
    if "lucent" in acc:
        air *= 1.0 + acc["lucent"]
    if "ptx" in acc:
        marks *= 1.0 - np.clip(acc["ptx"], 0.0, 1.0)
    d = L["body"] + 0.04 * L["heart"] + 0.03 * L["med"] + L["bones"] - L["air"] - air + marks
    if "extra" in acc:
        d += acc["extra"]
    return d


def psf_sigma(canvas: Canvas) -> float:
    """Detector blur, 0.45 mm, in pixels (never below 0.5 px: anti-aliasing of the drawing)."""
    return max(0.5, 0.45 * canvas.px_per_mm)


def render(anatomy: Anatomy, findings: list[Finding], *, view: str = "PA", size: int = 512,
           seed: int = 0) -> Rendered:
    """Render one film of ``anatomy`` showing ``findings`` (see the module docstring).

    Missing finding geometry is drawn from a stream keyed by the finding and
    the patient (not ``seed``) and written back into ``finding.params``.
    """
    from training.phantom import signatures

    if size < 32:
        raise ValueError(f"size must be at least 32 px, not {size}")
    view = view.upper()
    if view not in ("PA", "AP"):
        raise ValueError(f"the phantom renders frontal films only (PA or AP), not {view!r}")
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(anatomy.seed) & 0xFFFFFFFF, 1 if view == "AP" else 0])
    pose_rng, expo_rng, noise_rng = (np.random.default_rng(s) for s in ss.spawn(3))
    pose, inspiration, twist = sample_pose(pose_rng, view)
    exposure = Exposure.sample(expo_rng, view, anatomy.habitus)

    posture = Posture(view=view, inspiration=inspiration, twist=twist)
    plans = [signatures.plan(f, anatomy) for f in findings]
    fractures: dict[tuple[str, int], dict[str, float]] = {}
    for p in plans:
        if p is not None:
            p.prepare(posture, fractures)
    chest = Chest(anatomy, posture)
    canvas = Canvas(size, pose, chest, anatomy)
    draw_anatomy(canvas, fractures)

    drawn: list[tuple[int, Finding, np.ndarray, np.ndarray]] = []
    for i, (f, p) in enumerate(zip(findings, plans, strict=True)):
        if p is None:
            continue
        canvas.begin()
        p.draw(canvas)
        drawn.append((i, f, *canvas.finish()))

    density = _psf(compose(canvas), psf_sigma(canvas))
    pixels = exposure.display(density)
    pixels = _add_noise(pixels, exposure, noise_rng, canvas)

    margin = int(math.ceil(3.0 * psf_sigma(canvas)))
    regions = [_region(i, f.observation, sup, mask, margin) for i, f, sup, mask in drawn if sup.any()]
    spacing = anatomy.field_mm / (size * pose.scale)
    info = {"pose": pose, "inspiration": inspiration, "exposure": exposure,
            "ctr": chest.ctr * (1.12 if chest.ap else 1.0)}
    return Rendered(pixels.astype(np.float32), regions, float(spacing), view, size, info)


def _psf(density: np.ndarray, sigma: float) -> np.ndarray:
    """The detector's blur.  Near 0.6 px a [1, 2, 1] / 4 kernel (sigma 0.71) is the
    Gaussian to within a few per cent and costs a third of scipy's."""
    if sigma > 0.85:
        return ndimage.gaussian_filter(density, sigma, truncate=3.0)
    d = density
    out = 0.5 * d
    out[1:] += 0.25 * d[:-1]
    out[:-1] += 0.25 * d[1:]
    out[0] += 0.25 * d[0]
    out[-1] += 0.25 * d[-1]
    d = out
    out = 0.5 * d
    out[:, 1:] += 0.25 * d[:, :-1]
    out[:, :-1] += 0.25 * d[:, 1:]
    out[:, 0] += 0.25 * d[:, 0]
    out[:, -1] += 0.25 * d[:, -1]
    return out


def _add_noise(pixels: np.ndarray, exposure: Exposure, rng: np.random.Generator, canvas: Canvas) -> np.ndarray:
    """Quantum mottle (fine, slightly correlated) and a faint heel-effect gradient.

    Noise is larger where the film is brighter (fewer photons reached the
    detector behind dense tissue); its random numbers never depend on content.
    """
    S = canvas.S
    # uniform, not Gaussian, fine noise: four times cheaper and indistinguishable once blurred
    white = (rng.random((S, S), dtype=np.float32) - np.float32(0.5)) * np.float32(3.4641)
    coarse = rng.standard_normal((max(8, S // 3), max(8, S // 3)), dtype=np.float32)
    coarse_up = np.array(Image.fromarray(coarse, mode="F").resize((S, S), Image.BILINEAR))
    ramp = np.linspace(-1, 1, S, dtype=np.float32)[:, None] * exposure.tilt
    sigma = exposure.noise * (0.55 + 0.9 * pixels)
    out = pixels * (1.0 + ramp) + sigma * (0.75 * white + 0.65 * coarse_up)
    return np.clip(out, 0.0, 1.0)


def _region(index: int, observation: str, support: np.ndarray, mask: np.ndarray, margin: int) -> Region:
    """Box around every pixel the finding changed (dilated by the detector blur's reach,
    exclusive end) and the mask of its core."""
    rows = np.flatnonzero(support.any(axis=1))
    cols = np.flatnonzero(support.any(axis=0))
    S = mask.shape[0]
    box = (max(0, int(cols[0]) - margin), max(0, int(rows[0]) - margin),
           min(S, int(cols[-1]) + 1 + margin), min(S, int(rows[-1]) + 1 + margin))
    return Region(finding=index, observation=observation, box=box, mask_rle=rle_encode(mask))


__all__ = ["Rendered", "render", "rle_decode", "rle_encode"]
