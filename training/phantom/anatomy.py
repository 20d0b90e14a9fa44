"""Patient anatomy of the phantom world and the geometry of one film of it.

An :class:`Anatomy` is what stays the same across a patient's studies: body
habitus, thorax and lung size, heart size and shape, the rib cage, where the
clavicles sit.  It holds plain floats in *normalised field coordinates*: the
square field of the detector is ``[0, 1] x [0, 1]``, x grows to the viewer's
right (the patient's left: radiographs are displayed as if facing the
patient) and y grows downwards.  Horizontal positions of paired structures are
stored as a distance ``u`` from the midline, so one number serves both sides.

A :class:`Chest` is the geometry of *one* film: the anatomy after the view
(PA or AP), the breath (inspiration depth) and the findings that move
anatomy (a larger heart, a wider mediastinum, an elevated hemidiaphragm) have
been applied.  It draws nothing; :mod:`training.phantom.render` does.  Every
point a Chest returns is in the anatomy frame; the renderer's pose transform
(rotation, shift, magnification of this exposure) maps it to pixels.

Lung-relative coordinates ``(s, t)`` make a finding's place a property of the
lung rather than of the film: ``t`` runs from the apex (0) to the dome of the
hemidiaphragm (1; the costophrenic recess lies a little below 1), ``s`` from
the medial border (0) to the lateral chest wall (1) at that height.  A nodule
at ``(s, t)`` moves with the lung when the patient breathes deeper in a later
study, as a real one does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

SIDES = ("right", "left")


def side_sign(side: str) -> float:
    """-1 for the patient's right (viewer's left), +1 for the patient's left."""
    return -1.0 if side == "right" else 1.0


@dataclass
class Anatomy:
    """One patient's chest, in normalised field coordinates (see the module docstring)."""

    seed: int
    sex: str
    field_mm: float  # physical width of the square field at this patient's magnification
    mid_x: float  # midline (spinous processes)
    thorax_half_width: float  # inner rib margin at the widest level, from the midline
    body_half_width: float  # skin of the lateral chest wall
    neck_half_width: float
    shoulder_y: float
    lung_apex_y: float
    right_dome_y: float  # dome of the right hemidiaphragm at full inspiration, PA
    left_dome_drop: float  # the left dome lies this much lower
    cp_depth: float  # costophrenic angle below its dome
    ctr: float  # cardiothoracic ratio of the normal heart (PA)
    heart_right_share: float  # share of the heart's width right of the midline
    heart_top_y: float
    mediastinum_half_width: float
    aortic_knob: float  # radius of the knob's bulge
    knob_y: float
    trachea_half_width: float
    carina_y: float
    spine_half_width: float
    rib_first_y: float  # head of the first posterior rib
    rib_spacing: float
    rib_height: float  # cranio-caudal thickness of a posterior rib
    rib_arch: float  # how much the posterior ribs arch
    rib_drop: float  # how far the anterior ribs descend from their posterior head
    clavicle_y: float  # medial end
    clavicle_rise: float  # the lateral end is this much higher
    scapula_u: float  # medial border of the scapula in PA (arms rotated forward)
    breast: float  # 0: no breast shadow; else its radius
    gastric_bubble: float  # 0: none; else its radius
    habitus: float  # soft-tissue thickness factor (thin < 1 < obese)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Anatomy:
        """The inverse of :func:`dataclasses.asdict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_anatomy(rng: np.random.Generator, sex: str | None = None) -> Anatomy:
    """A plausible adult chest.  Ranges follow the usual PA-film measurements.

    The field is sized so the thorax fills ~70 % of it, which gives the
    350-430 mm fields of clinical detectors (35 x 43 cm cassettes).
    """
    if sex is None:
        sex = "F" if rng.random() < 0.5 else "M"
    male = sex == "M"

    def n(mean: float, sd: float, lo: float, hi: float) -> float:
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    thorax_mm = n(300.0 if male else 275.0, 18.0, 240.0, 340.0)  # inner rib-to-rib width
    half_w = n(0.345, 0.012, 0.315, 0.375)
    field_mm = float(np.clip(thorax_mm / (2 * half_w), 350.0, 430.0))
    habitus = n(1.0, 0.12, 0.75, 1.35)
    apex = n(0.125, 0.01, 0.10, 0.15)
    dome = n(0.645, 0.02, 0.60, 0.69)
    spacing = (dome - 0.04 - n(0.095, 0.008, 0.08, 0.11)) / 9.0  # ten posterior ribs above the dome
    return Anatomy(
        seed=int(rng.integers(0, 2**31 - 1)),
        sex=sex,
        field_mm=round(field_mm, 2),
        mid_x=n(0.5, 0.008, 0.48, 0.52),
        thorax_half_width=half_w,
        body_half_width=min(half_w + n(0.06, 0.012, 0.035, 0.09) * habitus, 0.5),
        neck_half_width=n(0.115, 0.01, 0.09, 0.14) * (0.9 + 0.1 * habitus),
        shoulder_y=n(0.1, 0.012, 0.07, 0.13),
        lung_apex_y=apex,
        right_dome_y=dome,
        left_dome_drop=n(0.022, 0.008, 0.005, 0.04),
        cp_depth=n(0.075, 0.01, 0.05, 0.1),
        ctr=n(0.44, 0.025, 0.38, 0.49),
        heart_right_share=n(0.31, 0.025, 0.25, 0.37),
        heart_top_y=n(0.385, 0.012, 0.35, 0.42),
        mediastinum_half_width=n(0.058, 0.005, 0.048, 0.07),
        aortic_knob=n(0.026, 0.005, 0.016, 0.038),
        knob_y=n(0.285, 0.012, 0.25, 0.32),
        trachea_half_width=n(0.021, 0.002, 0.017, 0.026),
        carina_y=n(0.335, 0.012, 0.30, 0.37),
        spine_half_width=n(0.03, 0.002, 0.025, 0.035),
        rib_first_y=n(0.095, 0.008, 0.08, 0.115),
        rib_spacing=spacing,
        rib_height=n(0.021, 0.002, 0.017, 0.025),
        rib_arch=n(0.036, 0.005, 0.026, 0.048),
        rib_drop=n(0.15, 0.012, 0.12, 0.18),
        clavicle_y=n(0.175, 0.012, 0.15, 0.2),
        clavicle_rise=n(0.055, 0.012, 0.03, 0.08),
        scapula_u=n(0.335, 0.02, 0.29, 0.38),
        breast=(n(0.15, 0.025, 0.1, 0.2) if (not male and rng.random() < 0.85) or (male and rng.random() < 0.08) else 0.0),
        gastric_bubble=n(0.028, 0.01, 0.012, 0.05) if rng.random() < 0.75 else 0.0,
        habitus=habitus,
    )


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a smooth (Hermite) ramp between: soft edges without overshoot."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# --- curves ---------------------------------------------------------------------------


def catmull_rom(points: np.ndarray | list, samples: int = 8, closed: bool = False) -> np.ndarray:
    """A smooth curve through control points (uniform Catmull-Rom), as an (m, 2) array."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 3:
        return p
    if closed:
        ext = np.concatenate([p[-1:], p, p[:2]])
    else:
        ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    p0, p1, p2, p3 = ext[:-3, None], ext[1:-2, None], ext[2:-1, None], ext[3:, None]
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    t2, t3 = t * t, t * t * t
    out = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                 + (3 * p1 - p0 - 3 * p2 + p3) * t3)
    out = out.reshape(-1, 2)
    return out if closed else np.concatenate([out, p[-1:]])


# --- one film's geometry ---------------------------------------------------------------


@dataclass
class Posture:
    """What changes the anatomy's projection on one film (view, breath, findings).

    ``dome_raise`` lifts a hemidiaphragm (volume loss); ``heart_ctr`` replaces
    the normal cardiothoracic ratio (cardiomegaly); ``mediastinum_scale``
    widens the superior mediastinum.
    """

    view: str = "PA"
    inspiration: float = 0.0  # + deeper breath: domes lower, ribs further apart
    twist: float = 0.0  # rotation about the long axis: anterior structures shift sideways (x)
    heart_ctr: float | None = None
    mediastinum_scale: float = 1.0
    dome_raise: dict[str, float] = field(default_factory=dict)


#: Lateral lung border, apex -> costophrenic angle: (share of U, share of apex..CP height).
_LATERAL = [(0.40, 0.0), (0.58, 0.03), (0.72, 0.09), (0.84, 0.2), (0.93, 0.36), (0.985, 0.55),
            (1.0, 0.74), (0.99, 0.9), (0.965, 1.0)]


class Chest:
    """The geometry of one film (anatomy frame), built from an anatomy and a posture."""

    def __init__(self, anatomy: Anatomy, posture: Posture | None = None) -> None:
        self.a = anatomy
        self.p = posture or Posture()
        a, p = self.a, self.p
        self.ap = p.view.upper() == "AP"
        self.mid = a.mid_x
        self.U = a.thorax_half_width
        # Supine AP films are taken at a shallower breath; the domes ride higher.
        breath = p.inspiration - (0.045 if self.ap else 0.0)
        self.apex_y = a.lung_apex_y + (0.01 if self.ap else 0.0)
        # dome_y / cp_y are this breath's diaphragm *without* findings: every position (ribs,
        # vessels, findings) is laid out on it, so a finding that lifts a hemidiaphragm changes
        # the lung outline below and nothing else.
        self.dome_y = {
            "right": a.right_dome_y + breath,
            "left": a.right_dome_y + a.left_dome_drop + breath,
        }
        self.cp_y = {s: self.dome_y[s] + a.cp_depth for s in SIDES}
        self.raise_ = {s: float(p.dome_raise.get(s, 0.0)) for s in SIDES}
        self.rib_spacing = a.rib_spacing * (1.0 + 1.2 * breath)
        self._lungs: dict[tuple[str, bool], dict[str, np.ndarray]] = {}

    # -- lungs --------------------------------------------------------------------------

    def lung(self, side: str, actual: bool = False) -> dict[str, np.ndarray]:
        """The lung outline as three chains in (u, y): lateral (apex -> CP angle),
        diaphragm (CP angle -> medial end), medial (medial end -> apex).

        ``actual`` includes a hemidiaphragm lifted by volume loss (the dome
        rises, the costophrenic angle and the lower lateral wall a little).
        """
        lift = self.raise_[side] if actual else 0.0
        if (side, lift > 0) in self._lungs:
            return self._lungs[(side, lift > 0)]
        a, U = self.a, self.U
        apex = self.apex_y
        cp0 = self.cp_y[side]
        dome, cp = self.dome_y[side] - lift, cp0 - 0.3 * lift
        h = cp0 - apex
        lat = catmull_rom([(U * fu, apex + ft * h) for fu, ft in _LATERAL], samples=6)
        lat[:, 1] -= (cp0 - cp) * smoothstep((lat[:, 1] - apex - 0.55 * h) / (0.45 * h))
        u_cp = lat[-1, 0]
        u_med = a.spine_half_width + (0.012 if side == "left" else 0.02)
        u_pk = 0.5 * U
        us = np.linspace(u_cp, u_med, 28)
        y_med = dome + 0.045
        lateral_part = dome + (cp - dome) * np.clip((us - u_pk) / (u_cp - u_pk), 0, 1) ** 2.2
        medial_part = dome + (y_med - dome) * np.clip((u_pk - us) / (u_pk - u_med), 0, 1) ** 2
        dia = np.stack([us, np.where(us >= u_pk, lateral_part, medial_part)], axis=1)
        top_med = u_med + 0.025
        y_med0 = self.dome_y[side] + 0.045
        med = catmull_rom([(u_med, y_med0), (u_med, apex + 0.55 * h), (u_med + 0.01, apex + 0.3 * h),
                           (top_med, apex + 0.1 * h), (0.5 * (top_med + U * 0.4), apex + 0.012),
                           (U * 0.40, apex)], samples=6)
        if lift > 0:
            med = np.concatenate([[(u_med, y_med)], med[med[:, 1] < y_med]])
        out = {"lateral": lat, "diaphragm": dia, "medial": med}
        self._lungs[(side, lift > 0)] = out
        return out

    def lung_polygon(self, side: str, actual: bool = True) -> np.ndarray:
        """Closed outline of one lung in the anatomy frame (x, y), as this film shows it."""
        c = self.lung(side, actual)
        uy = np.concatenate([c["lateral"], c["diaphragm"][1:], c["medial"][1:]])
        return self.to_xy(side, uy)

    def to_xy(self, side: str, uy: np.ndarray) -> np.ndarray:
        """(u, y) of one side -> (x, y) in the anatomy frame."""
        uy = np.asarray(uy, dtype=np.float64)
        return np.stack([self.mid + side_sign(side) * uy[..., 0], uy[..., 1]], axis=-1)

    def u_lateral(self, side: str, y: np.ndarray) -> np.ndarray:
        lat = self.lung(side)["lateral"]
        return np.interp(y, lat[:, 1], lat[:, 0])

    def u_medial(self, side: str, y: np.ndarray) -> np.ndarray:
        med = self.lung(side)["medial"][::-1]  # apex first: y increasing
        return np.interp(y, med[:, 1], med[:, 0])

    def diaphragm_y(self, side: str, u: np.ndarray) -> np.ndarray:
        dia = self.lung(side)["diaphragm"][::-1]  # medial first: u increasing
        return np.interp(u, dia[:, 0], dia[:, 1])

    def st_to_xy(self, side: str, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Lung-relative (s, t) -> anatomy-frame (x, y)."""
        s, t = np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
        y = self.apex_y + t * (self.dome_y[side] - self.apex_y)
        um, ul = self.u_medial(side, y), self.u_lateral(side, y)
        u = um + s * (ul - um)
        return np.stack([self.mid + side_sign(side) * u, y], axis=-1)

    def xy_to_st(self, side: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy-frame (x, y) -> lung-relative (s, t); s < 0 is medial, > 1 outside the wall."""
        u = side_sign(side) * (np.asarray(x) - self.mid)
        um, ul = self.u_medial(side, y), self.u_lateral(side, y)
        s = (u - um) / np.maximum(ul - um, 1e-3)
        t = (np.asarray(y) - self.apex_y) / (self.dome_y[side] - self.apex_y)
        return s, t

    def inside_lung(self, side: str, u: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether (u, y) of one side lies in that lung (vectorised, approximate at the apex)."""
        return ((y > self.apex_y + 0.01) & (u > self.u_medial(side, y)) & (u < self.u_lateral(side, y))
                & (y < self.diaphragm_y(side, u)))

    def hilum(self, side: str) -> tuple[float, float]:
        """(u, y) of the hilum: the left one is higher, above the heart."""
        t = 0.47 if side == "right" else 0.43
        y = self.apex_y + t * (self.dome_y[side] - self.apex_y)
        return (self.a.mediastinum_half_width + (0.035 if side == "right" else 0.03), y)

    # -- heart and mediastinum ------------------------------------------------------------

    @property
    def ctr(self) -> float:
        return self.p.heart_ctr if self.p.heart_ctr is not None else self.a.ctr

    def heart_extents(self) -> tuple[float, float]:
        """Distances of the right and left heart borders from the midline (this film)."""
        width = self.ctr * 2 * self.U * (1.12 if self.ap else 1.0)  # AP: heart far from detector
        r = width * self.a.heart_right_share
        return r, width - r

    def heart_polygon(self) -> np.ndarray:
        """The cardiac silhouette (x, y); its lower edge lies under the domes (hidden there)."""
        a, m = self.a, self.mid
        r, l_ = self.heart_extents()
        grow = max(0.0, self.ctr - a.ctr)
        top = a.heart_top_y - (0.01 if self.ap else 0.0)
        mw = a.mediastinum_half_width * 0.92
        yr = self.dome_y["right"] + 0.035
        yl = self.dome_y["left"] + 0.01 + 0.15 * grow
        ctrl = [
            (m - mw, top - 0.025),
            (m - max(mw, r * 0.82), top + 0.06),
            (m - r, top + 0.14),
            (m - r * 0.98, 0.3 * top + 0.7 * yr),
            (m - r * 0.8, yr),
            (m - r * 0.3, yr + 0.03),
            (m + l_ * 0.5, yl + 0.035),
            (m + l_ * 0.88, yl),
            (m + l_, yl - 0.055 - 0.08 * grow),
            (m + l_ * 0.96, 0.45 * (yl + top) + 0.08),
            (m + max(l_ * 0.72, 0.09), top + 0.07),
            (m + 0.078, top + 0.018),  # left atrial appendage: a shallow concavity
            (m + 0.088, top - 0.022),  # main pulmonary artery
            (m + 0.055, top - 0.045),
            (m, top - 0.04),
        ]
        return catmull_rom(ctrl, samples=8, closed=True)

    def mediastinum_polygon(self) -> np.ndarray:
        """Superior mediastinum (x, y) from the neck to the heart, with the aortic knob."""
        a, m = self.a, self.mid
        k = self.p.mediastinum_scale * (1.06 if self.ap else 1.0)
        top = a.heart_top_y
        mw = a.mediastinum_half_width

        def wide(y: float, w: float) -> float:
            # Widening fades out into the neck and into the heart.
            lo, hi = self.apex_y - 0.02, top + 0.02
            f = np.clip((y - lo) / 0.08, 0, 1) * np.clip((hi - y) / 0.06, 0, 1)
            return w * (1 + (k - 1) * f)

        knob = a.aortic_knob * (1 + 0.6 * (k - 1))
        right = [(m - wide(y, w), y) for y, w in (
            (-0.02, 0.045), (self.apex_y, 0.05), (0.5 * (self.apex_y + top), mw * 0.95), (top + 0.01, mw * 0.95))]
        left = [(m + wide(y, w), y) for y, w in (
            (top + 0.01, 0.05), (top - 0.03, 0.075), (a.knob_y + knob * 1.7, 0.064),
            (a.knob_y + knob * 0.4, mw * 0.75 + knob * 1.2), (a.knob_y - knob * 0.7, mw * 0.75 + knob * 0.95),
            (a.knob_y - knob * 1.6, 0.052), (self.apex_y, 0.045), (-0.02, 0.04))]
        return catmull_rom(right + left, samples=6, closed=True)

    def descending_aorta(self) -> np.ndarray:
        """Left paraspinal band of the descending aorta (x, y polygon)."""
        a, m = self.a, self.mid
        y0, y1 = a.knob_y, self.dome_y["left"] + 0.04
        w = 0.014 + 0.2 * a.aortic_knob
        return np.array([(m + 0.012, y0), (m + a.spine_half_width + w, y0 + 0.02),
                         (m + a.spine_half_width + w * 0.8, y1), (m + 0.012, y1)])

    def trachea_path(self) -> np.ndarray:
        """Centre line of the trachea (x, y), slightly pushed right by the aortic knob."""
        a, m = self.a, self.mid
        ys = np.linspace(-0.02, a.carina_y, 12)
        dx = -0.006 * np.exp(-(((ys - a.knob_y) / 0.04) ** 2)) * (1 + 10 * a.aortic_knob)
        return np.stack([m + dx, ys], axis=1)

    def bronchi(self) -> dict[str, np.ndarray]:
        """Main bronchi from the carina: right steeper and shorter, left longer."""
        c = self.trachea_path()[-1]
        rr = np.radians(30.0)
        ll = np.radians(48.0)
        right = np.array([c, c + [-np.sin(rr) * 0.05, np.cos(rr) * 0.05],
                          c + [-np.sin(rr) * 0.05 - 0.01, np.cos(rr) * 0.05 + 0.035]])
        left = np.array([c, c + [np.sin(ll) * 0.075, np.cos(ll) * 0.075],
                         c + [np.sin(ll) * 0.075 + 0.012, np.cos(ll) * 0.075 + 0.03]])
        return {"right": right, "left": left}

    # -- bones ------------------------------------------------------------------------

    def rib(self, side: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Posterior (spine -> lateral wall) and anterior (lateral wall -> costal cartilage)
        centre lines of rib ``index`` (1-12), in (u, y)."""
        a = self.a
        y0 = a.rib_first_y + (index - 1) * self.rib_spacing * (0.92 + 0.015 * index)
        arch = a.rib_arch * (1.25 if index <= 2 else 1.0)
        u0 = a.spine_half_width * 1.05
        yl = np.clip(y0 + 0.5 * arch, self.apex_y + 0.015, self.cp_y[side])
        U = float(self.u_lateral(side, yl)) + 0.45 * a.rib_height
        if index == 1:
            U = 0.5 * self.U
        if index >= 11:
            U = self.U * (0.75 if index == 11 else 0.55)
        d = U - u0
        post = catmull_rom([(u0, y0), (u0 + 0.15 * d, y0 - 0.5 * arch), (u0 + 0.38 * d, y0 - 0.6 * arch),
                            (u0 + 0.7 * d, y0 + 0.3 * arch), (u0 + 0.92 * d, y0 + 1.4 * arch),
                            (U, y0 + 2.6 * arch)], samples=6)
        if index >= 11:
            return post[: len(post) * 2 // 3], np.zeros((0, 2))
        # the anterior arc turns with the sternum when the patient is rotated
        twist = side_sign(side) * self.p.twist * np.linspace(0.0, 1.0, 4)
        drop = a.rib_drop * (0.7 if index <= 2 else 1.0) * (1.0 + 0.03 * (index - 5))
        end_u = max(0.11, 0.42 * U) if index > 1 else 0.08
        ant = catmull_rom([(U + twist[0], y0 + 2.6 * arch), (U - 0.012 + twist[1], y0 + 3.6 * arch),
                           (U - 0.35 * (U - end_u) + twist[2], y0 + 0.6 * drop),
                           (end_u + twist[3], y0 + drop)], samples=6)
        return post, ant

    def clavicle(self, side: str) -> np.ndarray:
        a = self.a
        y = a.clavicle_y - (0.035 if self.ap else 0.0)
        rise = a.clavicle_rise * (0.35 if self.ap else 1.0)
        # rotation moves the medial ends off the spinous processes, one closer, one further
        tw = side_sign(side) * self.p.twist
        return catmull_rom([(0.03 + tw, y + 0.006), (0.09 + tw, y - 0.004), (0.18 + 0.6 * tw, y - 0.35 * rise),
                            (0.27 + 0.3 * tw, y - 0.85 * rise), (0.335, y - rise - 0.005)], samples=6)

    def scapula(self, side: str) -> dict[str, np.ndarray]:
        """Scapular body polygon and its medial border, in (u, y): lateral to the lungs on a PA
        film (arms rotated forward), over the upper lungs on an AP film."""
        a = self.a
        mu = a.scapula_u - (0.1 if self.ap else 0.0)
        top = a.clavicle_y - 0.07
        body = catmull_rom([(mu, top), (mu + 0.03, top + 0.16), (mu + 0.07, top + 0.28),
                            (mu + 0.1, top + 0.2), (mu + 0.12, top + 0.08), (mu + 0.11, top + 0.02),
                            (mu + 0.06, top - 0.01)], samples=5, closed=True)
        border = catmull_rom([(mu, top), (mu + 0.03, top + 0.16), (mu + 0.07, top + 0.28)], samples=6)
        return {"body": body, "border": border}

    def humeral_head(self, side: str) -> tuple[float, float, float]:
        """(u, y, radius) of the humeral head at the field edge."""
        return (self.a.scapula_u + 0.15 - (0.03 if self.ap else 0.0), self.a.clavicle_y - 0.025, 0.05)

    def vertebrae(self) -> list[tuple[float, float, float]]:
        """(y_top, y_bottom, half_width) of each vertebral body from C6 to L2."""
        a = self.a
        out = []
        step = self.rib_spacing * 0.97
        y = a.rib_first_y - 2 * step
        k = 0
        while y < 1.02:
            hw = a.spine_half_width * (0.75 + 0.3 * min(1.0, k / 12))
            out.append((y + 0.12 * step, y + 0.88 * step, hw))
            y += step * (1.0 + 0.012 * k)
            k += 1
        return out


def jsonable(value: Any) -> Any:
    """Plain Python numbers and lists for numpy scalars and arrays (for ``finding.params``)."""
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 5)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
