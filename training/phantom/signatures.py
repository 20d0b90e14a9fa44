"""What each finding looks like on a film, and where it is.

Every observation has a :class:`Plan`.  ``prepare`` runs before the anatomy is
drawn and changes what anatomy the film shows (a larger heart, a wider
mediastinum, an elevated hemidiaphragm, a broken rib); ``draw`` adds the
finding's own layers to the canvas's accumulators and marks the pixels whose
anatomy it moved, so the recorded region covers every pixel it changed.

Geometry a finding does not carry yet is drawn from a stream keyed by the
finding's identity (:meth:`Finding.key`) and the patient, never by the film's
seed, and written back into ``finding.params``: a follow-up film of the same
patient puts the finding in the same place.  Severity is not stored (it may
change between studies); positions, sizes, shapes and texture seeds are.
Positions of lung findings are lung-relative ``(s, t)`` (see
:mod:`training.phantom.anatomy`), so they breathe with the lung.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage

from training.phantom.anatomy import (
    Anatomy,
    Chest,
    Posture,
    catmull_rom,
    jsonable,
    side_sign,
    smoothstep,
)
from training.phantom.render import Canvas, key_rng, smooth_noise, vessel_tree
from training.phantom.truth import SEVERITIES, Finding

#: Lung zones in lung-relative coordinates: s0, s1, t0, t1.
ZONES: dict[str, tuple[float, float, float, float]] = {
    "upper": (0.0, 1.0, -0.05, 0.46),
    "middle": (0.0, 0.62, 0.46, 1.02),
    "lingula": (0.0, 0.58, 0.5, 0.98),
    "lower": (0.05, 1.0, 0.55, 1.45),
    "base": (0.15, 1.0, 0.72, 1.45),
    "apex": (0.1, 1.0, -0.1, 0.22),
    "perihilar": (0.0, 0.5, 0.28, 0.72),
}
_ZONE_WORDS = (("upper lobe", "upper"), ("middle lobe", "middle"), ("lingula", "lingula"),
               ("lower lobe", "lower"), ("base", "base"), ("apex", "apex"), ("perihilar", "perihilar"))


def zone_name(location: str | None, default: str) -> str:
    loc = (location or "").lower()
    for word, name in _ZONE_WORDS:
        if word in loc:
            return name
    return default


class Plan:
    """A finding's signature; subclasses override :meth:`prepare` and :meth:`draw`."""

    def __init__(self, finding: Finding, anatomy: Anatomy) -> None:
        self.f = finding
        self.a = anatomy

    def param(self, name: str, draw: Callable[[np.random.Generator], Any]) -> Any:
        """``finding.params[name]``, drawn (patient- and finding-keyed) and stored when missing."""
        if name not in self.f.params:
            self.f.params[name] = jsonable(draw(key_rng("finding", self.f.key(), self.a.seed, name)))
        return self.f.params[name]

    def severity(self, default: int = 1) -> str:
        options = SEVERITIES.get(self.f.observation, ())
        if self.f.severity in options:
            return str(self.f.severity)
        return options[min(default, len(options) - 1)] if options else ""

    def sides(self) -> list[str]:
        lat = self.f.laterality
        loc = (self.f.location or "").lower()
        if lat not in ("left", "right", "bilateral"):
            if "bilateral" in loc:
                lat = "bilateral"
            elif "left" in loc or "lingula" in loc:
                lat = "left"
            elif "right" in loc:
                lat = "right"
        if lat == "bilateral":
            return ["right", "left"]
        if lat in ("left", "right"):
            return [lat]
        return [self.param("side", lambda r: "right" if r.random() < 0.55 else "left")]

    def prepare(self, posture: Posture, fractures: dict[tuple[str, int], dict[str, float]]) -> None:
        return None

    def draw(self, canvas: Canvas) -> None:
        raise NotImplementedError


def _mask(canvas: Canvas, polygons: list[np.ndarray]) -> np.ndarray:
    img, draw = canvas.new(mode="L")
    for poly in polygons:
        canvas.polygon(draw, poly, 1.0)
    return canvas.array(img) > 0


def _zone(s: np.ndarray, t: np.ndarray, zone: str, soft: float = 0.08,
          sharp: tuple[str, ...] = ()) -> np.ndarray:
    """Soft indicator of a zone in (s, t); edges named in ``sharp`` are fissures.

    The upper edge of the lower zones is the oblique fissure, seen obliquely on a
    frontal film: always ill-defined.
    """
    s0, s1, t0, t1 = ZONES[zone]

    def edge(x: np.ndarray, w: float) -> np.ndarray:
        return smoothstep(x / w + 0.5)

    top = 0.012 if "top" in sharp else (max(soft, 0.2) if zone in ("lower", "base") else soft)
    return (edge(s - s0, soft) * edge(s1 - s, soft)
            * edge(t - t0, top) * edge(t1 - t, 0.012 if "bottom" in sharp else soft))


def _inner(zone: str, margin: float = 0.2) -> tuple[float, float, float, float]:
    s0, s1, t0, t1 = ZONES[zone]
    s0, s1 = max(s0, 0.12), min(s1, 0.88)
    t0, t1 = max(t0, 0.08), min(t1, 0.95)
    ds, dt = (s1 - s0) * margin, (t1 - t0) * margin
    return s0 + ds, s1 - ds, t0 + dt, t1 - dt


# --- heart and mediastinum ---------------------------------------------------------------


class Cardiomegaly(Plan):
    """A larger cardiac silhouette: CTR ~0.55 / 0.62 / 0.70 (PA) for mild / moderate / severe."""

    CTR = {"mild": 0.55, "moderate": 0.62, "severe": 0.70}

    def target(self) -> float:
        jitter = self.param("ctr_jitter", lambda r: r.uniform(-0.012, 0.012))
        return max(self.CTR[self.severity()] + jitter, self.a.ctr + 0.05)

    def prepare(self, posture: Posture, fractures: dict) -> None:
        posture.heart_ctr = max(posture.heart_ctr or 0.0, self.target())

    def draw(self, canvas: Canvas) -> None:
        normal = Chest(self.a, replace(canvas.chest.p, heart_ctr=None))
        canvas.mark(_mask(canvas, [canvas.chest.heart_polygon(), normal.heart_polygon()]))


class EnlargedCardiomediastinum(Plan):
    """A widened superior mediastinum (and a larger aortic knob)."""

    SCALE = {"mild": 1.3, "moderate": 1.55, "severe": 1.85}

    def prepare(self, posture: Posture, fractures: dict) -> None:
        jitter = self.param("widen_jitter", lambda r: r.uniform(-0.05, 0.05))
        posture.mediastinum_scale = max(posture.mediastinum_scale, self.SCALE[self.severity()] + jitter)

    def draw(self, canvas: Canvas) -> None:
        normal = Chest(self.a, replace(canvas.chest.p, mediastinum_scale=1.0))
        wide = _mask(canvas, [canvas.chest.mediastinum_polygon()])
        before = _mask(canvas, [normal.mediastinum_polygon()])
        # the widened stretch of the mediastinum (not the neck above it, which did not change)
        rows = np.flatnonzero((wide ^ before).any(axis=1))
        if len(rows):
            wide[: rows[0]] = False
            wide[rows[-1] + 1:] = False
            canvas.mark(wide | (wide ^ before))


# --- airspace opacities -------------------------------------------------------------------


class Diffuse(Plan):
    """Shared placement of opacities in a lung zone: centre (s, t), extent, texture seed."""

    default_zone = "lower"
    radius = (0.25, 0.4, 0.12, 0.2)

    def place(self, side: str) -> tuple[str, float, float, float, float, int]:
        zone = zone_name(self.f.location, self.default_zone)
        s0, s1, t0, t1 = _inner(zone)
        rs0, rs1, rt0, rt1 = self.radius
        geo = self.param(f"{side}_geometry", lambda r: {
            "s": r.uniform(s0, s1), "t": r.uniform(t0, t1), "rs": r.uniform(rs0, rs1),
            "rt": r.uniform(rt0, rt1), "texture": int(r.integers(0, 2**31 - 1))})
        return zone, geo["s"], geo["t"], geo["rs"], geo["rt"], geo["texture"]

    #: Air bronchograms where the opacity exceeds this share of the air (None: none).
    bronchograms: tuple[float, float] | None = None  # (threshold, strength)

    def field(self, canvas: Canvas, side: str) -> np.ndarray:
        """Share of the air replaced, on the quarter-resolution grid."""
        raise NotImplementedError

    def draw(self, canvas: Canvas) -> None:
        lung = canvas.layers["lung"]
        for side in self.sides():
            lo = self.field(canvas, side)
            f = canvas.up(lo) * lung
            canvas.add("opac", f)
            canvas.add("extra", 0.03 * f)
            if self.bronchograms is not None:
                _bronchograms(canvas, side, lo, *self.bronchograms)


class LungOpacity(Diffuse):
    """Hazy, ill-defined, moderately patchy opacity (ground glass): vessels still faintly seen."""

    default_zone = "lower"
    radius = (0.22, 0.38, 0.1, 0.2)

    def field(self, canvas: Canvas, side: str) -> np.ndarray:
        zone, sc, tc, rs, rt, seed = self.place(side)
        s, t = canvas.st(side)
        d2 = ((s - sc) / rs) ** 2 + ((t - tc) / rt) ** 2
        tex = smooth_noise(seed, 0.022, canvas.X, canvas.Y)
        g = np.exp(-1.3 * d2 ** 1.2) * np.clip(0.75 + 0.3 * tex, 0.2, 1.3)
        return 0.42 * g * _zone(s, t, zone, soft=0.2) * _this_side(canvas, side)


class Pneumonia(Diffuse):
    """Patchy, mottled consolidation with ill-defined margins, confluent at its centre."""

    default_zone = "lower"
    radius = (0.3, 0.45, 0.15, 0.25)
    bronchograms = (0.6, 0.5)

    def field(self, canvas: Canvas, side: str) -> np.ndarray:
        zone, sc, tc, rs, rt, seed = self.place(side)
        s, t = canvas.st(side)
        d2 = ((s - sc) / rs) ** 2 + ((t - tc) / rt) ** 2
        g = np.exp(-d2 ** 1.1)
        tex = smooth_noise(seed, 0.012, canvas.X, canvas.Y) + 0.7 * smooth_noise(seed + 1, 0.025, canvas.X, canvas.Y)
        patches = smoothstep((tex + 3.0 * g - 1.6) / 2.2)
        return 0.78 * patches * g ** 0.6 * _zone(s, t, zone, soft=0.14) * _this_side(canvas, side)



class Consolidation(Diffuse):
    """Dense, homogeneous lobar opacity with air bronchograms; a fissure bounds it sharply."""

    default_zone = "lower"
    radius = (0.6, 0.9, 0.4, 0.6)
    bronchograms = (0.75, 1.0)

    def field(self, canvas: Canvas, side: str) -> np.ndarray:
        zone, sc, tc, rs, rt, seed = self.place(side)
        s, t = canvas.st(side)
        sharp: tuple[str, ...] = ()
        if side == "right" and zone == "upper":
            sharp = ("bottom",)  # minor fissure
        elif side == "right" and zone == "middle":
            sharp = ("top",)
        d2 = ((s - sc) / rs) ** 2 + ((t - tc) / rt) ** 2
        cover = smoothstep((1.3 - d2) / 0.6)
        tex = smooth_noise(seed, 0.02, canvas.X, canvas.Y)
        return 0.93 * cover * (1 + 0.04 * tex) * _zone(s, t, zone, soft=0.07, sharp=sharp) * _this_side(canvas, side)


def _this_side(canvas: Canvas, side: str) -> np.ndarray:
    """Keep a field in its own hemithorax: it fades out before the midline, never reaching the
    other lung (whose medial border lies ~4 cm from it)."""
    u = side_sign(side) * (canvas.X - canvas.chest.mid)
    return smoothstep(u / 0.03)


def _bronchograms(canvas: Canvas, side: str, field: np.ndarray, threshold: float, strength: float) -> None:
    """Air bronchograms: the bronchi beside the arteries, dark inside airless lung."""
    c = canvas.chest
    seg = vessel_tree(canvas.anatomy)[side]
    w = seg[:, 4]
    keep = (w > 2.2) & (w < 6.5)
    seg = seg[keep]
    if not len(seg):
        return
    p0 = c.st_to_xy(side, seg[:, 0], seg[:, 1])
    p1 = c.st_to_xy(side, seg[:, 2], seg[:, 3])
    midq = canvas.pose.to_image(0.5 * (p0 + p1)) * canvas.L - 0.5
    f = ndimage.map_coordinates(field, [midq[:, 1], midq[:, 0]], order=1, mode="constant")
    img, draw = canvas.new()
    for k in np.flatnonzero(f > threshold):
        # offset from the artery by one calibre, as bronchus and artery run together
        off = np.array([0.6, -0.6]) * canvas.mm(seg[k, 4]) * side_sign(side)
        canvas.line(draw, np.array([p0[k] + off, p1[k] + off]), seg[k, 4] * 0.7, float(f[k]))
    hi = ndimage.gaussian_filter(canvas.array(img), 0.5 * canvas.px_per_mm) * canvas.layers["lung"]
    canvas.add("extra", -0.12 * strength * hi)


# --- pulmonary vasculature and interstitium ------------------------------------------------


class Edema(Plan):
    """Interstitial to alveolar oedema: indistinct vessels and Kerley B lines (all grades),
    perihilar haze (moderate), bat-wing airspace opacity (severe); bilateral."""

    HAZE = {"mild": 0.14, "moderate": 0.32, "severe": 0.62}
    BLUR = {"mild": 0.65, "moderate": 0.9, "severe": 1.0}
    KERLEY = {"mild": 6, "moderate": 9, "severe": 10}

    def draw(self, canvas: Canvas) -> None:
        sev = self.severity()
        c, lung = canvas.chest, canvas.layers["lung"]
        seed = self.param("texture", lambda r: int(r.integers(0, 2**31 - 1)))
        tex = smooth_noise(seed, 0.014, canvas.X, canvas.Y)
        haze = np.zeros_like(canvas.X)
        for side in ("right", "left"):
            s, t = canvas.st(side)
            peri = np.exp(-(((s - 0.05) / 0.5) ** 2 + ((t - 0.52) / 0.34) ** 2) ** 1.3)
            base = 0.55 * smoothstep((t - 0.55) / 0.45) * smoothstep((s + 0.1) / 0.3)
            haze += (peri + base) * _this_side(canvas, side) * smoothstep((1.25 - s) / 0.2)
        haze = np.clip(haze, 0, 1.2)
        patch = 1.0 + (0.35 if sev == "severe" else 0.15) * tex
        hi_haze = canvas.up(self.HAZE[sev] * haze * patch) * lung
        canvas.add("opac", hi_haze)
        # Vascular indistinctness: the markings, blurred where the interstitium is wet.
        marks = canvas.layers["vessels"] * lung
        blurred = ndimage.gaussian_filter(marks, 1.6 * canvas.px_per_mm)
        weight = canvas.up(np.clip(haze * 1.4, 0, 1)) * self.BLUR[sev]
        canvas.add("marks", (blurred * 1.15 - marks) * weight * lung)
        # Kerley B: short horizontal septal lines at the lateral bases, touching the pleura.
        img, draw = canvas.new()
        rng = key_rng("kerley", seed)
        for side in ("right", "left"):
            for _ in range(self.KERLEY[sev]):
                t = rng.uniform(0.62, 1.06)
                y = c.apex_y + t * (c.dome_y[side] - c.apex_y)
                if y > c.cp_y[side] - 0.01:
                    continue
                ul = float(c.u_lateral(side, np.array(y)))
                length = canvas.mm(rng.uniform(10, 20))
                tilt = rng.normal(0, 0.004)
                uy = np.array([(ul + 0.003, y), (ul - length, y + tilt)])
                canvas.line(draw, c.to_xy(side, uy), rng.uniform(1.0, 1.5), 0.22)
        canvas.add("extra", canvas.array(img) * lung)


# --- lesions -------------------------------------------------------------------------


class LungLesion(Plan):
    """A well-defined round nodule (8-30 mm) or lobulated mass (> 30 mm) at its location."""

    def draw(self, canvas: Canvas) -> None:
        kind = self.f.kind or "nodule"
        size = float(self.param("size_mm", lambda r: r.uniform(8, 30) if kind != "mass" else r.uniform(32, 60)))
        side = self.sides()[0]
        zone = zone_name(self.f.location, "upper")
        s0, s1, t0, t1 = _inner(zone, 0.25)
        geo = self.param("position", lambda r: {"s": r.uniform(max(s0, 0.25), min(s1, 0.75)),
                                                 "t": r.uniform(max(t0, 0.18), min(t1, 0.85))})
        shape = self.param("shape", lambda r: {
            "lobulation": r.uniform(0.0, 0.08) if size <= 30 else r.uniform(0.08, 0.18),
            "phase": r.uniform(0, 2 * np.pi, 2).tolist(), "elongation": r.uniform(0.9, 1.1)})
        centre = canvas.px(canvas.chest.st_to_xy(side, geo["s"], geo["t"]))
        radius = 0.5 * size * canvas.px_per_mm
        reach = int(np.ceil(radius * 1.4 + 2))
        cx, cy = int(round(centre[0])), int(round(centre[1]))
        S = canvas.S
        x0, x1 = max(0, cx - reach), min(S, cx + reach + 1)
        y0, y1 = max(0, cy - reach), min(S, cy + reach + 1)
        out = np.zeros((S, S), dtype=np.float32)
        if x0 >= x1 or y0 >= y1:
            return
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        dx, dy = (xx - centre[0]) / shape["elongation"], yy - centre[1]
        th = np.arctan2(dy, dx)
        p1, p2 = shape["phase"]
        lob = shape["lobulation"]
        rr = radius * (1 + lob * (0.6 * np.cos(3 * th + p1) + 0.4 * np.cos(5 * th + p2)))
        r2 = (dx * dx + dy * dy) / np.maximum(rr, 0.5) ** 2
        k = 0.17 + 0.13 * min(1.0, size / 50.0)
        out[y0:y1, x0:x1] = k * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)) ** 0.8
        canvas.add("extra", out)


# --- pleura -------------------------------------------------------------------------


class PleuralEffusion(Plan):
    """Dependent fluid: homogeneous at the base, a meniscus rising along the lateral wall, the
    costophrenic angle and hemidiaphragm effaced; height by severity.  Supine (AP): a hazier
    layering opacity with a flatter, softer top."""

    HEIGHT = {"small": 0.13, "moderate": 0.33, "large": 0.6}

    def draw(self, canvas: Canvas) -> None:
        c, lung = canvas.chest, canvas.layers["lung"]
        H = self.HEIGHT[self.severity()]
        for side in self.sides():
            geo = self.param(f"{side}_meniscus", lambda r: {"curve": r.uniform(2.0, 3.5),
                                                             "height": r.uniform(0.9, 1.1)})
            s, t = canvas.st(side)
            h = (c.cp_y[side] - c.apex_y) * H * geo["height"]
            sl = np.clip(s, 0, 1) ** geo["curve"]
            if c.ap:  # layering posteriorly: a veil that thickens towards the base
                top = c.cp_y[side] - h * (0.85 + 0.15 * sl)
                soft, peak = 0.08 + 0.25 * H, 0.75
            else:
                top = c.cp_y[side] - h * (0.5 + 0.5 * sl)
                soft, peak = 0.015 + 0.07 * H, 0.97
            fluid = peak * smoothstep((canvas.Y - top) / soft) ** 0.8 * _this_side(canvas, side)
            hi = canvas.up(fluid) * lung
            canvas.add("opac", hi)
            canvas.add("extra", 0.05 * hi)


class Pneumothorax(Plan):
    """Air between the pleural layers: a thin visceral pleural line, no lung markings and
    extra lucency lateral to it; apical or apicolateral; rim by severity (BTS: < 2 cm small)."""

    RIM_MM = {"small": 15.0, "moderate": 32.0, "large": 62.0}

    def draw(self, canvas: Canvas) -> None:
        c, lung = canvas.chest, canvas.layers["lung"]
        rim = canvas.mm(self.RIM_MM[self.severity()])
        pattern = self.param("pattern", lambda r: "apical" if r.random() < 0.55 else "lateral")
        for side in self.sides():
            ch = c.lung(side)
            outline = np.concatenate([ch["lateral"], ch["diaphragm"][1:], ch["medial"][1:-1]])
            n_lat, n_dia = len(ch["lateral"]), len(ch["diaphragm"]) - 1
            t = (outline[:, 1] - c.apex_y) / (c.dome_y[side] - c.apex_y)
            w = np.zeros(len(outline))
            if pattern == "apical":
                w[:n_lat] = np.clip(1.05 - 1.5 * t[:n_lat], 0.0, 1.0)
            else:
                w[:n_lat] = np.clip(1.05 - 0.55 * t[:n_lat], 0.25, 1.0)
            if self.severity() == "large":
                w[n_lat:n_lat + n_dia] = 0.25
            med = slice(n_lat + n_dia, None)
            w[med] = np.clip(1.0 - 4.0 * t[med], 0.0, 1.0)
            hu, hy = c.hilum(side)
            vec = np.array([hu, hy]) - outline
            dist = np.hypot(vec[:, 0], vec[:, 1])
            move = np.minimum(rim * w, 0.8 * dist)
            collapsed = outline + vec / dist[:, None] * move[:, None]
            img, draw = canvas.new()
            canvas.polygon(draw, c.to_xy(side, outline), 1.0)
            canvas.polygon(draw, c.to_xy(side, collapsed), 0.0)
            space = canvas.array(img) * lung
            # pleural line: the moved part of the outline, from the medial apex round the lateral wall
            moved = move > canvas.mm(1.0)
            order = np.concatenate([np.arange(n_lat + n_dia, len(outline)), np.arange(0, n_lat + n_dia)])
            line_pts = collapsed[order][moved[order]]
            img, draw = canvas.new()
            if len(line_pts) > 1:
                canvas.line(draw, c.to_xy(side, line_pts), 0.9, 0.3)
            line = canvas.array(img) * (1.0 - space)
            canvas.add("ptx", space)
            canvas.add("lucent", 0.5 * space)
            canvas.add("extra", line)
            if self.severity() == "large":
                img, draw = canvas.new()
                canvas.polygon(draw, c.to_xy(side, collapsed), 0.18)
                canvas.add("opac", canvas.array(img) * lung)


class PleuralOther(Plan):
    """Pleural thickening: a smooth soft-tissue band along the lateral chest wall, or an apical cap."""

    def draw(self, canvas: Canvas) -> None:
        c, lung = canvas.chest, canvas.layers["lung"]
        pattern = self.param("pattern", lambda r: "apical" if r.random() < 0.4 else "lateral")
        thick = canvas.mm(self.param("thickness_mm", lambda r: r.uniform(4, 10)))
        geo = self.param("geometry", lambda r: {"t0": r.uniform(0.2, 0.45), "t1": r.uniform(0.65, 0.95),
                                                 "wave": r.uniform(0, 2 * np.pi), "waves": r.uniform(1.5, 3.5)})
        polys = []
        for side in self.sides():
            ch = c.lung(side)
            if pattern == "lateral":
                lat = ch["lateral"]
                ys = c.apex_y + np.linspace(geo["t0"], geo["t1"], 28) * (c.dome_y[side] - c.apex_y)
                ys = np.minimum(ys, c.cp_y[side] - 0.02)
                outer = np.stack([np.interp(ys, lat[:, 1], lat[:, 0]) + 0.002, ys], axis=1)
            else:
                arc = np.concatenate([ch["medial"][::-1], ch["lateral"]])
                keep = arc[:, 1] < c.apex_y + 0.16 * (c.dome_y[side] - c.apex_y)
                outer = arc[keep]
                if len(outer) < 4:
                    continue
                outer = outer[np.argsort(outer[:, 0])]
            frac = np.linspace(0, 1, len(outer))
            profile = np.sin(np.pi * frac) ** 0.5 * (1 + 0.25 * np.sin(geo["waves"] * 2 * np.pi * frac + geo["wave"]))
            tang = np.gradient(outer, axis=0)
            normal = np.stack([-tang[:, 1], tang[:, 0]], axis=1)
            normal /= np.hypot(normal[:, 0], normal[:, 1])[:, None] + 1e-12
            hu, hy = c.hilum(side)
            towards = np.sign(np.sum(normal * (np.array([hu, hy]) - outer), axis=1, keepdims=True))
            inner = outer + normal * towards * (thick * profile)[:, None]
            polys.append(c.to_xy(side, np.concatenate([outer, inner[::-1]])))
        img, draw = canvas.new()
        for poly in polys:
            canvas.polygon(draw, poly, 1.0)
        band = canvas.array(img) * lung
        canvas.add("opac", band)
        canvas.add("extra", 0.04 * band)


# --- volume loss ------------------------------------------------------------------------


class Atelectasis(Plan):
    """Plate-like (discoid) linear opacity at the base and volume loss: the ipsilateral
    hemidiaphragm rides higher."""

    RAISE = {"mild": 0.022, "moderate": 0.042}

    def zone(self) -> str:
        return zone_name(self.f.location, "base")

    def prepare(self, posture: Posture, fractures: dict) -> None:
        if self.zone() not in ("base", "lower", "middle", "lingula"):
            return
        sides = self.sides()
        lift = self.RAISE[self.severity(0)] * (0.75 if len(sides) == 2 else 1.0)
        for side in sides:
            posture.dome_raise[side] = max(posture.dome_raise.get(side, 0.0), lift)

    def draw(self, canvas: Canvas) -> None:
        c, lung = canvas.chest, canvas.layers["lung"]
        moderate = self.severity(0) == "moderate"
        img, draw = canvas.new()
        raised = [s for s in self.sides() if c.raise_[s] > 0]
        _, _, t0z, t1z = _inner(self.zone(), 0.1)
        if self.zone() in ("base", "lower"):
            t0z, t1z = 0.66, 0.8  # above a lifted dome
        for side in self.sides():
            geo = self.param(f"{side}_band", lambda r: {
                "t": r.uniform(t0z, t1z),
                "s0": r.uniform(0.3, 0.5), "length": r.uniform(0.28, 0.42), "tilt": r.uniform(-0.06, 0.06),
                "bend": r.uniform(-0.015, 0.015), "mm": r.uniform(3.5, 6.0)})
            bands = [(geo["t"], geo["mm"])]
            if moderate:
                bands = [(geo["t"], geo["mm"] * 1.6), (geo["t"] - 0.1, geo["mm"] * 0.8)]
            for tc, mm in bands:
                s = np.linspace(geo["s0"], min(0.97, geo["s0"] + geo["length"]), 18)
                frac = np.linspace(0, 1, len(s))
                t = tc + geo["tilt"] * (s - geo["s0"]) + geo["bend"] * np.sin(np.pi * frac)
                centre = c.st_to_xy(side, s, t)
                half = canvas.mm(mm) * 0.5 * np.sin(np.pi * frac) ** 0.6
                top = centre - np.stack([np.zeros_like(half), half], axis=1)
                bottom = centre + np.stack([np.zeros_like(half), half], axis=1)
                canvas.polygon(draw, np.concatenate([top, bottom[::-1]]), 0.75)
        band = ndimage.gaussian_filter(canvas.array(img), 0.6 * canvas.px_per_mm) * lung
        canvas.add("opac", band)
        canvas.add("extra", 0.03 * band)
        for side in raised:
            now = _mask(canvas, [c.lung_polygon(side)])
            before = _mask(canvas, [c.lung_polygon(side, actual=False)])
            canvas.mark(now ^ before)


# --- bones ---------------------------------------------------------------------------


class Fracture(Plan):
    """A rib fracture: a lucent gap through both cortices and a step-off of the distal fragment."""

    def geometry(self) -> tuple[str, int, dict[str, float]]:
        side = self.sides()[0]
        rib = int(np.clip(self.param("rib", lambda r: int(r.integers(3, 10))), 1, 10))
        geo = self.param("break", lambda r: {"position": r.uniform(0.6, 0.92),
                                              "step": r.uniform(0.5, 0.9) * (1 if r.random() < 0.5 else -1),
                                              "gap_mm": r.uniform(2.0, 4.0)})
        return side, rib, {"position": geo["position"], "step": geo["step"],
                           "gap": geo["gap_mm"] / self.a.field_mm}

    def prepare(self, posture: Posture, fractures: dict) -> None:
        side, rib, geo = self.geometry()
        fractures[(side, rib)] = geo

    def draw(self, canvas: Canvas) -> None:
        side, rib, _ = self.geometry()
        mask = canvas.fracture_masks.get((side, rib))
        if mask is not None:
            canvas.mark(mask)


# --- devices -------------------------------------------------------------------------


class SupportDevice(Plan):
    """Tubes, lines and a pacemaker, by ``finding.kind``, drawn radiopaque along anatomic paths."""

    def draw(self, canvas: Canvas) -> None:
        kind = self.f.kind or "et_tube"
        img, draw = canvas.new()
        strokes: list[tuple[np.ndarray, float, float]] = []
        polygons: list[tuple[np.ndarray, float]] = []
        getattr(self, "_" + kind, self._et_tube)(canvas.chest, strokes, polygons)
        for xy, width_mm, value in strokes:
            canvas.line(draw, xy, width_mm, value)
        for xy, value in polygons:
            canvas.polygon(draw, xy, value)
        canvas.add("extra", canvas.array(img))

    # Each kind appends (polyline, width in mm, density) strokes and (polygon, density) shapes.

    def _clav_y(self, c: Chest) -> float:
        return c.a.clavicle_y - (0.035 if c.ap else 0.0)

    def _svc(self, c: Chest) -> list[tuple[float, float]]:
        """The common course into the superior vena cava, ending at the cavoatrial junction."""
        m, a = c.mid, c.a
        dy = self.param("tip_dy", lambda r: r.uniform(-0.03, 0.02))
        return [(m - a.mediastinum_half_width * 0.75, a.knob_y + 0.03),
                (m - a.mediastinum_half_width * 0.7, a.heart_top_y + dy)]

    def _venous(self, c: Chest, side: str, entry: list[tuple[float, float]]) -> np.ndarray:
        m = c.mid
        cy = self._clav_y(c)
        path = list(entry)
        if side == "left":  # the left brachiocephalic vein crosses to the right
            path += [(m + 0.03, cy + 0.06), (m - 0.025, cy + 0.075)]
        path += self._svc(c)
        return catmull_rom(path, samples=8)

    def _et_tube(self, c: Chest, strokes: list, polygons: list) -> None:
        tip_mm = self.param("tip_mm", lambda r: r.uniform(30, 65))
        tip = c.a.carina_y - tip_mm / c.a.field_mm
        path = c.trachea_path()
        path = path[path[:, 1] < tip]
        path = np.concatenate([[[path[0, 0], -0.05]], path, [[np.interp(tip, path[:, 1], path[:, 0]), tip]]])
        path = path + [0.004, 0.0]
        strokes.append((path, 8.0, 0.05))
        strokes.append((path + [0.008, 0.0], 1.3, 0.5))

    def _ng_tube(self, c: Chest, strokes: list, polygons: list) -> None:
        geo = self.param("course", lambda r: {"tip_u": r.uniform(0.0, 0.06), "tip_dy": r.uniform(0.04, 0.11)})
        m, a, yl = c.mid, c.a, c.dome_y["left"]
        path = catmull_rom([(m - 0.004, -0.05), (m + 0.004, a.carina_y - 0.06), (m + 0.016, a.carina_y + 0.05),
                            (m + 0.028, a.heart_top_y + 0.14), (m + 0.045, yl + 0.01),
                            (m + 0.09 + geo["tip_u"], yl + 0.045), (m + 0.13 + geo["tip_u"], yl + geo["tip_dy"])],
                           samples=8)
        strokes.append((path, 1.8, 0.45))

    def _central_line(self, c: Chest, strokes: list, polygons: list) -> None:
        side = self.sides()[0]
        route = self.param("route", lambda r: "jugular" if r.random() < 0.7 else "subclavian")
        sg, m, cy = side_sign(side), c.mid, self._clav_y(c)
        if route == "jugular":
            entry = [(m + sg * 0.075, -0.05), (m + sg * 0.066, cy - 0.02), (m + sg * 0.052, cy + 0.045)]
        else:
            entry = [(m + sg * 0.3, cy - 0.012), (m + sg * 0.17, cy + 0.022), (m + sg * 0.075, cy + 0.045)]
        strokes.append((self._venous(c, side, entry), 2.2, 0.38))

    def _picc(self, c: Chest, strokes: list, polygons: list) -> None:
        side = self.sides()[0]
        dy = self.param("arm_dy", lambda r: r.uniform(-0.03, 0.05))
        sg, m, cy = side_sign(side), c.mid, self._clav_y(c)
        entry = [(m + sg * 0.56, 0.3 + dy), (m + sg * 0.43, 0.22 + dy * 0.5), (m + sg * 0.31, cy + 0.03),
                 (m + sg * 0.17, cy + 0.035), (m + sg * 0.07, cy + 0.05)]
        strokes.append((self._venous(c, side, entry), 1.4, 0.32))

    def _pacemaker(self, c: Chest, strokes: list, polygons: list) -> None:
        side = self.sides()[0]
        geo = self.param("generator", lambda r: {"u": r.uniform(0.19, 0.26), "dy": r.uniform(0.04, 0.08),
                                                  "tilt": r.uniform(-0.3, 0.3), "rv": r.uniform(0.45, 0.65)})
        sg, m, a, cy = side_sign(side), c.mid, c.a, self._clav_y(c)
        gx, gy = m + sg * geo["u"], cy + geo["dy"]
        w, h = 50.0 / a.field_mm, 45.0 / a.field_mm
        th = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        ct, st = np.cos(th), np.sin(th)
        rx = 0.5 * w * np.sign(ct) * np.abs(ct) ** 0.5
        ry = 0.5 * h * np.sign(st) * np.abs(st) ** 0.5
        rot = geo["tilt"]
        can = np.stack([gx + rx * np.cos(rot) - ry * np.sin(rot), gy + rx * np.sin(rot) + ry * np.cos(rot)], axis=1)
        polygons.append((can, 1.1))
        header = np.array([(gx - 0.4 * w, gy - 0.5 * h), (gx + 0.4 * w, gy - 0.5 * h),
                           (gx + 0.35 * w, gy - 0.72 * h), (gx - 0.35 * w, gy - 0.72 * h)])
        polygons.append((header, 0.25))
        r_, l_ = c.heart_extents()
        yl = c.dome_y["left"]
        top = a.heart_top_y
        exit_pt = (gx - sg * 0.2 * w, gy - 0.7 * h)
        venous = [exit_pt, (m + sg * (geo["u"] - 0.05), cy - 0.005), (m + sg * 0.1, cy + 0.02),
                  (m + sg * 0.06, cy + 0.04)]
        if side == "left":
            venous += [(m + 0.02, cy + 0.065), (m - 0.025, cy + 0.08)]
        svc = [(m - a.mediastinum_half_width * 0.7, a.knob_y + 0.04), (m - r_ * 0.55, top + 0.045)]
        rv = catmull_rom(venous + svc + [(m - r_ * 0.3, top + 0.11), (m + geo["rv"] * l_ * 0.6, yl - 0.045),
                                         (m + geo["rv"] * l_, yl - 0.015)], samples=8)
        ra = catmull_rom(venous + svc + [(m - r_ * 0.75, top + 0.085), (m - r_ * 0.55, top + 0.1),
                                         (m - r_ * 0.35, top + 0.065)], samples=8)
        for lead in (rv, ra):
            strokes.append((lead, 2.0, 0.55))
            strokes.append((lead[-3:], 3.2, 0.8))
        loop = np.stack([gx + 0.6 * w * np.cos(th[:30]), gy + 0.55 * h * np.sin(th[:30]) + 0.1 * h], axis=1)
        strokes.append((loop, 2.0, 0.5))

    def _chest_tube(self, c: Chest, strokes: list, polygons: list) -> None:
        side = self.sides()[0]
        geo = self.param("course", lambda r: {"entry_t": r.uniform(0.72, 0.92), "tip_s": r.uniform(0.45, 0.7),
                                               "tip_t": r.uniform(0.08, 0.16), "lane": r.uniform(0.82, 0.9)})
        y_e = c.apex_y + geo["entry_t"] * (c.dome_y[side] - c.apex_y)
        ul = float(c.u_lateral(side, np.array(y_e)))
        outside = c.to_xy(side, np.array([(ul + 0.16, y_e + 0.1), (ul + 0.06, y_e + 0.03), (ul + 0.01, y_e)]))
        ts = np.linspace(geo["entry_t"] - 0.06, geo["tip_t"] + 0.08, 6)
        ss = np.full_like(ts, geo["lane"])
        inside = c.st_to_xy(side, np.append(ss, geo["tip_s"]), np.append(ts, geo["tip_t"]))
        path = catmull_rom(np.concatenate([outside, inside]), samples=8)
        strokes.append((path, 10.0, 0.07))
        # radiopaque stripe, interrupted at the sentinel hole
        cut = len(path) // 3
        strokes.append((path[: cut - 2], 1.6, 0.45))
        strokes.append((path[cut + 1:], 1.6, 0.45))


_PLANS: dict[str, type[Plan]] = {
    "Enlarged Cardiomediastinum": EnlargedCardiomediastinum,
    "Cardiomegaly": Cardiomegaly,
    "Lung Opacity": LungOpacity,
    "Lung Lesion": LungLesion,
    "Edema": Edema,
    "Consolidation": Consolidation,
    "Pneumonia": Pneumonia,
    "Atelectasis": Atelectasis,
    "Pneumothorax": Pneumothorax,
    "Pleural Effusion": PleuralEffusion,
    "Pleural Other": PleuralOther,
    "Fracture": Fracture,
    "Support Devices": SupportDevice,
}


def plan(finding: Finding, anatomy: Anatomy) -> Plan | None:
    """The signature of ``finding`` (None for observations with nothing to draw)."""
    cls = _PLANS.get(finding.observation)
    return cls(finding, anatomy) if cls else None
