"""SynthFACS: the embedded synthetic AU data set (a procedural face renderer, numpy only).

The paper's data sets (BP4D, DISFA, GFT; Sec. IV-A) are licensed, so newcomers run the study on
SynthFACS. A face is an implicit 2-D drawing evaluated at every pixel at once (no per-pixel
Python loops): skin, hair, brows, eyes, nose and lips are signed-distance shapes with 1-px
anti-aliasing. Each AU acts through *windows*, smooth bumps placed on the subject's own features:

* a displacement field (brows up / down, cheeks up, lip corners up / back / down, chin up, jaw
  down), with which the whole face is sampled (``q = p - d(p)``),
* parameter fields (eye opening, lip gap, lip thickness), read at the pixel itself,
* additive appearance (forehead, glabella, nose and crow's-feet wrinkles, furrows, dimples).

Every window is zero outside its support, so with the nuisances fixed an AU changes pixels only
inside its support dilated by the blur radius; that dilated support is the AU's ground-truth
region mask returned by :func:`render_face` (the test ``AU k at 0 vs 4`` checks it for all 15
AUs). Nuisances (pose, light, blur, noise) come from an explicit seed and are applied the same
way with and without an AU. Intensities are on FACS's 0-5 scale; a label is positive when the
intensity is >= 2 (the DISFA rule, used for every preset).

Frames are drawn from expression prototypes (happiness, sadness, surprise, ...) plus single-AU
activations whose probabilities are calibrated to each preset's target base rates, so AU
co-occurrence is realistic and the label statistics mimic BP4D, DISFA and GFT (docs/synthfacs.md).
"""
from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hiva_lib.data.au import ALL_AU_IDS, au_keys, dataset_aus
from hiva_lib.data.prepared import PreparedDataset, load_prepared, prepared_dir_writer, write_index

VERSION = "1.1"  # 1.1: AU effects ~1.5x (learnable at 80 px), larger presets
SOURCE = f"SynthFACS v{VERSION}"
POSITIVE_RULE = "intensity >= 2 (0-5 scale), as DISFA"
REGION_SIZE = 32  # side of the stored region masks (regions.npz)
MASK_MARGIN_PX = 3  # support dilation: blur kernel radius (2) + 1
_AU_INDEX = {a: i for i, a in enumerate(ALL_AU_IDS)}


# --------------------------------------------------------------------------- identity, nuisance
@dataclass(frozen=True)
class Identity:
    """A subject: face geometry, colours and resting idiosyncrasies (face units: canvas [-1, 1])."""

    seed: int
    face_w: float  # half width of the face ellipse
    face_h: float  # half height
    face_cy: float
    chin_taper: float  # how much narrower the face gets towards the chin
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lips: tuple[float, float, float]
    iris: tuple[float, float, float]
    background: tuple[float, float, float]
    hairline: float  # v of the hairline at the midline
    hair_curve: float
    hair_long: float  # v down to which hair falls behind the face
    eye_x: float
    eye_y: float
    eye_w: float
    eye_up: float  # upper lid height
    eye_lo: float  # lower lid depth
    brow_y: tuple[float, float]  # (right-of-image, left-of-image): resting asymmetry
    brow_inner: float
    brow_outer: float
    brow_arch: float
    brow_tilt: float
    brow_thick: float
    nose_tip: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_up: float
    lip_lo: float
    mouth_curve: float  # resting curve: < 0 corners up (resting smile), > 0 corners down
    mouth_tilt: float  # resting asymmetry of the lip line
    fold_depth: float  # resting nasolabial fold depth (age)
    expressiveness: float  # scales intensities in the sampler


@dataclass(frozen=True)
class Nuisance:
    """Per-frame nuisances: in-plane pose, lighting gradient, blur, noise, gaze."""

    seed: int
    angle: float  # degrees
    scale: float
    shift: tuple[float, float]  # canvas units
    light_dir: float  # radians
    light: float  # strength of the linear gradient
    brightness: float
    blur: float  # Gaussian sigma in pixels (0: none)
    noise: float  # noise std on the 0-255 scale
    gaze: tuple[float, float]


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[float, float, float]:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore


def sample_identity(seed: int) -> Identity:
    """A random subject; the same seed gives the same subject."""
    r = np.random.default_rng([int(seed), 101])
    u = r.uniform
    tone = u(0, 1)
    skin = _mix((0.96, 0.80, 0.69), (0.42, 0.28, 0.20), tone)
    skin = tuple(float(np.clip(c * u(0.95, 1.05), 0, 1)) for c in skin)
    hair_dark = u(0, 1) ** 0.5
    hair = _mix((0.62, 0.45, 0.26), (0.08, 0.06, 0.05), hair_dark)
    if u() < 0.1:  # grey hair
        hair = (0.55, 0.54, 0.52)
    lips = _mix(skin, (0.62, 0.22, 0.25), u(0.35, 0.6))
    iris = [(0.30, 0.18, 0.08), (0.15, 0.25, 0.40), (0.25, 0.30, 0.15), (0.12, 0.08, 0.05)][
        int(r.integers(4))]
    bg = tuple(float(c) for c in r.uniform(0.25, 0.85, 3))
    face_w = u(0.55, 0.66)
    eye_y = u(-0.15, -0.08)
    brow_y = eye_y - u(0.14, 0.18)
    asym = u(-0.025, 0.025)
    mouth_y = u(0.38, 0.45)
    return Identity(
        seed=int(seed), face_w=face_w, face_h=u(0.78, 0.88), face_cy=u(0.0, 0.08),
        chin_taper=u(0.25, 0.45), skin=skin, hair=hair, lips=lips, iris=iris, background=bg,
        hairline=brow_y - u(0.22, 0.32), hair_curve=u(0.2, 0.6), hair_long=u(-0.2, 0.9),
        eye_x=u(0.24, 0.29), eye_y=eye_y, eye_w=u(0.10, 0.125), eye_up=u(0.045, 0.06),
        eye_lo=u(0.03, 0.04), brow_y=(brow_y + asym, brow_y - asym), brow_inner=u(0.06, 0.1),
        brow_outer=u(0.38, 0.45), brow_arch=u(0.015, 0.05), brow_tilt=u(-0.03, 0.03),
        brow_thick=u(0.018, 0.03), nose_tip=u(0.15, 0.22), nose_w=u(0.07, 0.1),
        mouth_y=mouth_y, mouth_w=u(0.15, 0.19), lip_up=u(0.025, 0.04), lip_lo=u(0.035, 0.05),
        mouth_curve=u(-0.025, 0.025), mouth_tilt=u(-0.015, 0.015), fold_depth=u(0.03, 0.12),
        expressiveness=float(np.exp(r.normal(0, 0.35))),
    )


def sample_nuisance(seed: int) -> Nuisance:
    """Random per-frame nuisances; the same seed gives the same nuisances (and noise)."""
    r = np.random.default_rng([int(seed), 202])
    u = r.uniform
    return Nuisance(
        seed=int(seed), angle=u(-8, 8), scale=u(0.93, 1.05), shift=(u(-0.05, 0.05),
                                                                    u(-0.05, 0.05)),
        light_dir=u(0, 2 * math.pi), light=u(0.0, 0.25), brightness=u(0.9, 1.08),
        blur=u(0.0, 0.9), noise=u(1.0, 5.0), gaze=(u(-0.02, 0.02), u(-0.008, 0.008)),
    )


NEUTRAL_NUISANCE = Nuisance(seed=0, angle=0.0, scale=1.0, shift=(0.0, 0.0), light_dir=0.0,
                            light=0.0, brightness=1.0, blur=0.0, noise=0.0, gaze=(0.0, 0.0))


# --------------------------------------------------------------------------- drawing helpers
def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class _Canvas:
    """Pixel grid, pose (face units <-> pixels), the warp and the AU windows of one render."""

    def __init__(self, size: int, nz: Nuisance, active: set[int]) -> None:
        self.size, self.active = size, active
        c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # canvas units
        th = math.radians(nz.angle)
        self.cos, self.sin, self.scale = math.cos(th), math.sin(th), nz.scale
        self.tx, self.ty = nz.shift
        x, y = c[None, :] - self.tx, c[:, None] - self.ty
        # face coordinates of each pixel: inverse of rotate(scale(face)) + shift
        self.U = (self.cos * x + self.sin * y) * (1 / self.scale)
        self.V = (-self.sin * x + self.cos * y) * (1 / self.scale)
        self.ppu = size / 2 * self.scale  # pixels per face unit
        self.D = np.zeros((2, size, size), np.float32)  # displacement (face units)
        self.support = np.zeros((size, size), np.uint16)  # bit i: inside AU ALL_AU_IDS[i]

    def box(self, cu: float, cv: float, ru: float, rv: float) -> tuple[slice, slice]:
        """Pixel slice holding the face-unit rectangle [cu +- ru] x [cv +- rv] after the pose."""
        # the pose maps a rectangle to a rotated one: its pixel bounding box from centre + extent
        c, si, k = abs(self.cos), abs(self.sin), self.scale
        xc = (self.cos * cu - self.sin * cv) * k + self.tx
        yc = (self.sin * cu + self.cos * cv) * k + self.ty
        ex, ey = (c * ru + si * rv) * k, (si * ru + c * rv) * k
        n, half = self.size, self.size / 2

        def rng(lo: float, hi: float) -> slice:
            a = int((lo + 1) * half) - 1
            b = int((hi + 1) * half) + 2
            return slice(min(max(a, 0), n), min(max(b, 0), n))

        return rng(yc - ey, yc + ey), rng(xc - ex, xc + ex)

    def bump(self, au: int, cu: float, cv: float, a: float, b: float,
             flat: float = 0.5) -> tuple[tuple[slice, slice], np.ndarray | None]:
        """Smooth ellipse window (1 inside r < flat, 0 at r >= 1); marks AU ``au``'s support.

        The window itself is only computed (not None) when the AU is active in this render.
        """
        sl = self.box(cu, cv, a, b)
        r2 = ((self.U[sl] - cu) / a) ** 2 + ((self.V[sl] - cv) / b) ** 2
        self._mark(au, sl, r2 < 1)
        if au not in self.active:
            return sl, None
        return sl, _smooth((1 - r2) * (1 / (1 - flat * flat)))

    def rect(self, au: int, cu: float, cv: float, a: float, b: float, fa: float = 0.03,
             fb: float = 0.02) -> tuple[tuple[slice, slice], np.ndarray | None]:
        """Rectangular window |du| < a, |dv| < b with smooth edges fa, fb; marks the support."""
        sl = self.box(cu, cv, a, b)
        du, dv = np.abs(self.U[sl] - cu), np.abs(self.V[sl] - cv)
        self._mark(au, sl, (du < a) & (dv < b))
        if au not in self.active:
            return sl, None
        return sl, _smooth((a - du) * (1 / fa)) * _smooth((b - dv) * (1 / fb))

    def _mark(self, au: int, sl: tuple[slice, slice], inside: np.ndarray) -> None:
        part = self.support[sl]
        np.bitwise_or(part, np.uint16(1 << _AU_INDEX[au]), out=part, where=inside)

    def masks(self, margin: int) -> dict[int, np.ndarray]:
        """Supports dilated by ``margin`` px (a square: blur spreads a change that far at most)."""
        m = self.support
        for axis in (0, 1):  # separable OR-dilation of all 15 bit planes at once
            out = m.copy()
            for k in range(1, margin + 1):
                if axis == 0:
                    out[k:] |= m[:-k]
                    out[:-k] |= m[k:]
                else:
                    out[:, k:] |= m[:, :-k]
                    out[:, :-k] |= m[:, k:]
            m = out
        planes = np.unpackbits(m.astype("<u2", copy=False)[..., None].view(np.uint8), axis=-1,
                               bitorder="little")
        planes = np.ascontiguousarray(planes.transpose(2, 0, 1)).view(bool)  # (16, H, W)
        return {a: planes[i] for i, a in enumerate(ALL_AU_IDS)}

    def push(self, sl: tuple[slice, slice], w: np.ndarray | None, du: float, dv: float) -> None:
        if w is None:
            return
        if du:
            self.D[0][sl] += du * w
        if dv:
            self.D[1][sl] += dv * w


def _add(fld: np.ndarray, sl: tuple[slice, slice], w: np.ndarray | None, amount) -> None:
    """Add ``amount * window`` to a parameter field (nothing for an inactive AU)."""
    if w is not None:
        fld[sl] += amount * w


def _cover(sd: np.ndarray, ppu: float) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance (face units, < 0 inside)."""
    return np.clip(0.5 - sd * ppu, 0.0, 1.0)


def _paint(img: np.ndarray, sl: tuple[slice, slice], alpha: np.ndarray,
           color: Sequence[float] | np.ndarray) -> None:
    part = img[:, sl[0], sl[1]]
    part += (np.asarray(color, np.float32)[:, None, None] - part) * alpha


def _shade(img: np.ndarray, sl: tuple[slice, slice], factor: np.ndarray) -> None:
    """Multiply a crop by (1 - factor): darkening (factor > 0) or highlights (factor < 0)."""
    img[:, sl[0], sl[1]] *= 1.0 - factor


def _line(d: np.ndarray, half: float, ppu: float) -> np.ndarray:
    """Coverage of a line at distance ``d`` (face units) with half-thickness ``half``."""
    return np.clip(0.5 - (np.abs(d) - half) * ppu, 0.0, 1.0)


# --------------------------------------------------------------------------- the renderer
def _intensity_vector(intensities: Mapping[int, float] | Sequence[float] | np.ndarray
                      ) -> np.ndarray:
    if isinstance(intensities, Mapping):
        unknown = [k for k in intensities if k not in _AU_INDEX]
        if unknown:
            raise ValueError(f"unknown AU ids {unknown}; SynthFACS renders {list(ALL_AU_IDS)}")
        vec = np.zeros(len(ALL_AU_IDS), np.float32)
        for k, val in intensities.items():
            vec[_AU_INDEX[k]] = val
    else:
        vec = np.asarray(intensities, np.float32)
        if vec.shape != (len(ALL_AU_IDS),):
            raise ValueError(f"intensities must be a dict AU->value or a length-"
                             f"{len(ALL_AU_IDS)} vector in the order {list(ALL_AU_IDS)}")
    if (vec < 0).any() or (vec > 5).any():
        raise ValueError(f"AU intensities must lie in [0, 5] (FACS A-E scale), got {vec.tolist()}")
    return vec / 5.0  # 0..1


def render_face(identity: Identity, intensities: Mapping[int, float] | Sequence[float],
                nuisance: Nuisance = NEUTRAL_NUISANCE, size: int = 128
                ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Render one face: (image (size, size, 3) uint8, {AU id: (size, size) bool region mask}).

    ``intensities`` maps AU ids to 0-5 (missing AUs are 0) or is a vector in ``ALL_AU_IDS``
    order. Masks are in the image frame (after the pose) and do not depend on the intensities.
    """
    it = _intensity_vector(intensities)
    I = {a: float(it[_AU_INDEX[a]]) for a in ALL_AU_IDS}  # noqa: E741  (0..1 per AU)
    idn = identity
    cv = _Canvas(size, nuisance, {a for a in ALL_AU_IDS if I[a] > 0})
    ppu = cv.ppu
    ex, ey, ew = idn.eye_x, idn.eye_y, idn.eye_w
    my, mw = idn.mouth_y, idn.mouth_w
    by = idn.brow_y
    bi, bo = idn.brow_inner, idn.brow_outer
    nt = idn.nose_tip
    sides = (-1.0, 1.0)

    # ---- 1. windows: displacement, parameter fields and appearance windows of each AU
    eye_open_up = np.ones((size, size), np.float32)
    eye_open_lo = np.ones((size, size), np.float32)
    gap = np.zeros((size, size), np.float32)
    thin = np.zeros((size, size), np.float32)  # lip thinning 0..1
    brow_dv = np.zeros((size, size), np.float32)
    brow_du = np.zeros((size, size), np.float32)
    looks: list[tuple[int, tuple[slice, slice], np.ndarray]] = []  # (au, slice, window)

    def look(au: int, sl: tuple[slice, slice], w: np.ndarray | None) -> None:
        if w is not None:  # active AU: its wrinkles / furrows are drawn in step 5
            looks.append((au, sl, w))

    for s, byk in zip(sides, by, strict=True):
        # AU1 / AU2 / AU4 move the brows through parameter fields (no skin warp, so no folds)
        L = bo - bi
        # AU1: inner brow (and the forehead above it) up; the brow turns oblique
        sl, w = cv.rect(1, s * (bi + 0.35 * L), byk - 0.08, 0.35 * L + 0.07, 0.14)
        if w is not None:
            t = (cv.U[sl] * s - bi) / L  # 0 at the inner, 1 at the outer brow end
            brow_dv[sl] -= 0.11 * I[1] * w * np.clip(1.1 - t, 0, 1)
        look(1, sl, w)
        # AU2: outer brow up
        sl, w = cv.rect(2, s * (bi + 0.7 * L), byk - 0.08, 0.35 * L + 0.07, 0.14)
        if w is not None:
            t = (cv.U[sl] * s - bi) / L
            brow_dv[sl] -= 0.11 * I[2] * w * np.clip(t + 0.1, 0, 1)
        look(2, sl, w)
        # AU4: brows down and together, glabella lines between them
        sl, w = cv.rect(4, s * (bo + 0.04) / 2, byk + 0.02, (bo + 0.04) / 2, 0.08)
        if w is not None:
            t = (cv.U[sl] * s - bi) / L
            brow_dv[sl] += 0.075 * I[4] * w * np.clip(1.3 - 0.8 * t, 0, 1)
            brow_du[sl] -= s * 0.05 * I[4] * w * np.clip(1.2 - t, 0, 1)
        look(4, sl, w)
        # AU6: lower lid pushed up (parameter), cheek raised (warp), crow's feet (look)
        sl, w = cv.bump(6, s * ex, ey + 0.03, ew + 0.06, 0.07, flat=0.75)
        _add(eye_open_lo, sl, w, -0.7 * I[6])
        _add(eye_open_up, sl, w, -0.2 * I[6])
        sl, w = cv.bump(6, s * (ex + 0.02), ey + 0.2, 0.17, 0.12, flat=0.3)
        cv.push(sl, w, 0.0, -0.05 * I[6])
        look(6, sl, w)
        sl, w = cv.bump(6, s * (ex + ew + 0.05), ey, 0.07, 0.08, flat=0.4)
        look(6, sl, w)
        # AU7: both lids tighten (the lower one straightens up)
        sl, w = cv.bump(7, s * ex, ey, ew + 0.05, 0.1, flat=0.7)
        _add(eye_open_lo, sl, w, -0.55 * I[7])
        _add(eye_open_up, sl, w, -0.35 * I[7])
        look(7, sl, w)
        # AU12: lip corners up and out, cheek bunching lateral to them
        sl, w = cv.bump(12, s * (mw + 0.03), my - 0.02, 0.21, 0.15, flat=0.25)
        cv.push(sl, w, s * 0.04 * I[12], -0.09 * I[12])
        look(12, sl, w)
        # AU14: lip corners tightened inwards, dimples
        sl, w = cv.bump(14, s * (mw + 0.03), my, 0.15, 0.1, flat=0.3)
        cv.push(sl, w, -s * 0.035 * I[14], 0.0)
        look(14, sl, w)
        # AU15: lip corners down
        sl, w = cv.bump(15, s * (mw + 0.02), my + 0.03, 0.2, 0.15, flat=0.25)
        cv.push(sl, w, 0.0, 0.055 * I[15])
        look(15, sl, w)
    # AU9: nose wrinkles on the bridge, nostrils and the upper lip pulled up
    sl, w = cv.bump(9, 0.0, nt - 0.06, idn.nose_w + 0.09, 0.2, flat=0.45)
    cv.push(sl, w, 0.0, -0.05 * I[9])
    look(9, sl, w)
    # AU10: upper lip raised (more at the centre), nasolabial furrow deepened
    sl, w = cv.bump(10, 0.0, my - 0.06, mw + 0.07, 0.1, flat=0.4)
    cv.push(sl, w, 0.0, -0.04 * I[10])
    look(10, sl, w)
    # AU17: chin boss up, lower lip pushed up, mentalis texture
    sl, w = cv.bump(17, 0.0, my + 0.2, mw + 0.02, 0.2, flat=0.4)
    cv.push(sl, w, 0.0, -0.045 * I[17])
    look(17, sl, w)
    # AU23 / AU24 / AU25: lips tighten / press / part (parameter fields over the lips)
    lips_c, lips_a, lips_b = my + 0.02, mw + 0.07, 0.13
    sl, w = cv.bump(23, 0.0, lips_c, lips_a, lips_b, flat=0.75)
    _add(thin, sl, w, 0.55 * I[23])
    look(23, sl, w)
    sl, w = cv.bump(24, 0.0, lips_c, lips_a, lips_b + 0.03, flat=0.7)
    _add(thin, sl, w, 0.75 * I[24])
    look(24, sl, w)
    sl, w = cv.bump(25, 0.0, lips_c, lips_a, lips_b, flat=0.75)
    _add(gap, sl, w, (0.03 + 0.05 * I[25]) * (I[25] > 0))
    # AU26: jaw drop, the lower face moves down (more towards the chin) and the lips part
    sl, w = cv.bump(26, 0.0, lips_c, lips_a, lips_b, flat=0.75)
    _add(gap, sl, w, 0.09 * I[26])
    jaw_top = my + 0.02
    sl, w = cv.bump(26, 0.0, jaw_top + 0.34, idn.face_w * 1.2, 0.52, flat=0.6)
    if w is not None:
        cv.push(sl, w * np.clip((cv.V[sl] - jaw_top) / 0.35, 0, 1), 0.0, 0.15 * I[26])

    # ---- 2. the warped face coordinates
    Uq, Vq = cv.U - cv.D[0], cv.V - cv.D[1]

    # ---- 3. background, hair, face
    bg = np.asarray(idn.background, np.float32)
    img = np.empty((3, size, size), np.float32)  # planar while drawing: fast broadcasting
    img[:] = bg[:, None, None] * np.linspace(1.0, 0.85, size, dtype=np.float32)[:, None]
    hair_col = np.asarray(idn.hair, np.float32)
    skin = np.asarray(idn.skin, np.float32)
    full = (slice(None), slice(None))
    fw, fh, fcy = idn.face_w, idn.face_h, idn.face_cy
    # long hair behind the face
    hl = np.maximum(np.abs(Uq) - (fw + 0.1), Vq - idn.hair_long)
    hl = np.maximum(hl, fcy - 0.4 - Vq)
    # neck
    sl = cv.box(0.0, 1.1, fw * 0.6, 1.1 - fcy - fh * 0.5)
    neck = np.maximum(np.abs(Uq[sl]) - fw * 0.55, fcy + fh * 0.5 - Vq[sl])
    _paint(img, sl, _cover(neck, ppu), skin * 0.8)
    # ears
    for s in sides:
        sl = cv.box(s * fw * 0.98, ey + 0.08, 0.1, 0.17)
        ear = np.sqrt(((Uq[sl] - s * fw * 0.98) / 0.08) ** 2
                      + ((Vq[sl] - ey - 0.08) / 0.15) ** 2) - 1
        _paint(img, sl, _cover(ear * 0.08, ppu), skin * 0.88)
    # head (hair cap), then the face skin below the hairline
    head = (np.sqrt((Uq / (fw + 0.05)) ** 2 + ((Vq - fcy + 0.06) / (fh + 0.08)) ** 2) - 1) * fw
    _paint(img, full, _cover(np.minimum(head, hl), ppu), hair_col)
    vn = (Vq - fcy) / fh
    a_v = fw * (1 - idn.chin_taper * np.clip(vn, 0, 1) ** 2)
    r2 = (Uq / a_v) ** 2 + vn ** 2
    face_sd = (np.sqrt(r2) - 1) * fw * 0.9
    hairline = idn.hairline + idn.hair_curve * Uq * Uq
    skin_sd = np.maximum(face_sd, hairline - Vq)
    tone = skin[:, None, None] * (0.8 + 0.2 * np.clip(1 - r2 * r2, 0, 1))
    img += (tone - img) * _cover(skin_sd, ppu)

    # ---- 4. features (evaluated on crops at the warped coordinates)
    brow_col = hair_col * 0.7
    for s, byk in zip(sides, by, strict=True):
        sl = cv.box(s * (bi + bo) / 2, byk, (bo - bi) / 2 + 0.08, 0.14)
        u, v = (Uq[sl] - brow_du[sl]) * s, Vq[sl] - brow_dv[sl]
        t = (u - bi) / (bo - bi)
        tc = np.clip(t, 0, 1)
        centre = byk - idn.brow_arch * np.sin(np.pi * tc * 0.9) + idn.brow_tilt * (tc - 0.3)
        half = idn.brow_thick * (1 - 0.45 * tc)
        sd = np.maximum(np.abs(v - centre) - half, np.maximum(-t, t - 1) * (bo - bi) * 0.5)
        _paint(img, sl, _cover(sd, ppu) * 0.92, brow_col)

        # eye
        sl = cv.box(s * ex, ey, ew + 0.04, 0.1)
        u, v = Uq[sl] * s, Vq[sl]
        t = (u - ex) / ew
        prof = np.clip(1 - t * t, 0, 1)
        up_open, lo_open = np.clip(eye_open_up[sl], 0.05, 1), np.clip(eye_open_lo[sl], 0.0, 1)
        v_up = ey - idn.eye_up * up_open * prof ** 0.7
        v_lo = ey + idn.eye_lo * lo_open * prof
        sd = np.maximum(np.maximum(v_up - v, v - v_lo), (np.abs(t) - 1) * ew * 0.5)
        inside = _cover(sd, ppu)
        gu, gv = nuisance.gaze
        ri = np.sqrt((u - ex - s * gu) ** 2 + (v - ey - gv) ** 2)
        eye = np.empty((3,) + u.shape, np.float32)
        eye[:] = np.asarray((0.92, 0.9, 0.88), np.float32)[:, None, None]
        _paint(eye, full, _cover(ri - 0.038, ppu), idn.iris)
        _paint(eye, full, _cover(ri - 0.015, ppu), (0.03, 0.03, 0.03))
        part = img[:, sl[0], sl[1]]
        part += (eye - part) * inside
        # lash line, lid crease and lower lid line
        lid = _line(v - v_up, 0.009, ppu) * (np.abs(t) < 1.1)
        _paint(img, sl, lid, hair_col * 0.4)
        crease = ey - idn.eye_up * (1.7 - 0.5 * (1 - up_open)) * prof ** 0.7 - 0.012
        _shade(img, sl, 0.18 * _line(v - crease, 0.006, ppu) * (np.abs(t) < 0.9))
        _shade(img, sl, 0.12 * _line(v - v_lo - 0.008, 0.005, ppu) * (np.abs(t) < 0.9))

    # nose: bridge shading, alar wings, nostrils
    nw = idn.nose_w
    sl = cv.box(0.0, nt - 0.1, nw + 0.06, 0.17)
    u, v = Uq[sl], Vq[sl]
    au_ = np.abs(u)
    bridge = np.exp(-(((au_ - nw * 0.55) / 0.025) ** 2)) * _smooth((v - ey + 0.02) / 0.1)
    _shade(img, sl, 0.1 * bridge * (v < nt - 0.02))
    wing = np.sqrt(((au_ - nw * 0.75) / 0.045) ** 2 + ((v - nt + 0.005) / 0.04) ** 2)
    _shade(img, sl, 0.22 * _line((wing - 1) * 0.04, 0.005, ppu) * (v > nt - 0.03)
           * (au_ > nw * 0.6))
    nos = np.sqrt(((au_ - nw * 0.4) / 0.03) ** 2 + ((v - nt - 0.015) / 0.013) ** 2) - 1
    _shade(img, sl, 0.6 * _cover(nos * 0.013, ppu))
    _shade(img, sl, -0.08 * np.exp(-((u / 0.03) ** 2 + ((v - nt + 0.02) / 0.03) ** 2)))

    # nasolabial folds: resting depth, deepened by AU 6, 9, 10, 12 (in their own windows)
    sl_f = cv.box(0.0, (nt + my) / 2 + 0.02, mw + 0.14, (my - nt) / 2 + 0.12)
    u, v = Uq[sl_f], Vq[sl_f]
    tf = (v - nt) / (my + 0.06 - nt)
    fold_u = nw * 0.85 + (mw + 0.05 - nw * 0.85) * tf
    fold = np.zeros((size, size), np.float32)  # full frame so every AU window can read it
    fold[sl_f] = np.exp(-(((np.abs(u) - fold_u) / 0.016) ** 2)) * _smooth(tf * 4) * _smooth(
        (1.15 - tf) * 4)

    # mouth (lips with parameter fields gap / thin, at the warped coordinates)
    sl = cv.box(0.0, my + 0.04, mw + 0.1, 0.16)
    u, v = Uq[sl], Vq[sl]
    t = u / mw
    prof = np.sqrt(np.clip(1 - t * t, 0, 1))
    vs = my + idn.mouth_curve * t * t + idn.mouth_tilt * t
    g = gap[sl] * prof
    th = 1 - thin[sl]
    cupid = 1 - 0.3 * np.exp(-((t / 0.18) ** 2)) + 0.12 * np.exp(-(((np.abs(t) - 0.3) / 0.2) ** 2))
    up_bot, lo_top = vs - 0.3 * g, vs + 0.7 * g
    up_top = up_bot - idn.lip_up * th * prof ** 0.8 * cupid
    lo_bot = lo_top + idn.lip_lo * th * prof ** 0.8
    side = (np.abs(t) - 1) * mw * 0.3
    lip_col = np.asarray(idn.lips, np.float32)[:, None, None] * (0.95 - 0.15 * thin[sl])
    a_up = _cover(np.maximum(np.maximum(up_top - v, v - up_bot), side), ppu)
    a_lo = _cover(np.maximum(np.maximum(lo_top - v, v - lo_bot), side), ppu)
    part = img[:, sl[0], sl[1]]
    part += (lip_col * 0.88 - part) * a_up
    part += (lip_col - part) * a_lo
    lip_area = np.zeros((size, size), np.float32)
    lip_area[sl] = a_up + a_lo
    opening = _cover(np.maximum(np.maximum(up_bot - v, v - lo_top), side), ppu)
    teeth = _cover(v - np.minimum(up_bot + 0.022, lo_top), ppu)
    dark = np.asarray((0.22, 0.07, 0.07), np.float32)[:, None, None]
    mouth_in = dark + (np.asarray((0.88, 0.86, 0.8), np.float32)[:, None, None] - dark) * teeth
    part += (mouth_in - part) * opening
    # lip line and corners (the commissures) read even at low resolution
    line = 0.75 * _line(v - vs, 0.006, ppu) * (np.abs(t) < 1.02)
    part += (lip_col * 0.35 - part) * line
    corner = np.sqrt(((np.abs(u) - mw) / 0.018) ** 2 + ((v - vs) / 0.012) ** 2)
    _shade(img, sl, 0.35 * _cover((corner - 1) * 0.012, ppu))

    # ---- 5. AU appearance (wrinkles, furrows, dimples) inside each AU's window
    _shade(img, sl_f, fold[sl_f] * idn.fold_depth)
    for au, sl, w in looks:
        k = I[au]
        if k <= 0:
            continue
        u, v = Uq[sl], Vq[sl]
        if au in (1, 2):  # horizontal forehead lines
            c = np.cos((v - by[0]) * (2 * np.pi / 0.075))
            c *= c
            lines = c * c
            _shade(img, sl, 0.6 * k * w * lines * (v < min(by) - 0.06))
        elif au == 4:  # vertical glabella lines
            lines = np.exp(-(((np.abs(u) - 0.035) / 0.016) ** 2))
            _shade(img, sl, 0.7 * k * w * lines)
        elif au == 6:  # crow's feet, infraorbital furrow, cheek highlight
            ang = np.arctan2(v - ey, np.abs(u) - ex - ew)
            rad = np.hypot(v - ey, np.abs(u) - ex - ew)
            c = np.cos(ang * 9)
            c *= c
            feet = c * c * c * _smooth((rad - 0.02) / 0.02) * (np.abs(u) > ex + ew)
            fur = np.exp(-(((v - ey - 0.075 - 0.04 * ((np.abs(u) - ex) / ew) ** 2) / 0.01) ** 2))
            _shade(img, sl, k * w * (0.6 * feet + 0.5 * fur))
        elif au == 7:  # bulge under the tightened lower lid
            lo = ey + idn.eye_lo * 0.5 + 0.018
            _shade(img, sl, 0.3 * k * w * _line(v - lo, 0.006, ppu) * (np.abs(np.abs(u) - ex) < ew))
        elif au == 9:  # wrinkles across the bridge, nostril flare shadow, furrows
            lines = np.cos((v - nt) * (2 * np.pi / 0.05)) ** 4 * (np.abs(u) < nw * 0.7)
            lines = lines * (v > ey + 0.04) * (v < nt - 0.07)
            # the bunched skin of the bridge reads as a darker band even at 64 px
            band = np.exp(-((u / (nw * 0.8)) ** 2 + ((v - nt + 0.12) / 0.07) ** 2))
            _shade(img, sl, k * w * (0.7 * lines + 0.3 * band + 0.5 * fold[sl]))
        elif au == 10:  # deeper nasolabial furrows
            _shade(img, sl, 0.55 * k * w * fold[sl])
        elif au == 12:  # deeper furrow beside the corners (cheek bunching)
            _shade(img, sl, 0.8 * k * w * fold[sl])
        elif au == 14:  # dimples lateral to the corners
            dim = np.exp(-(((np.abs(u) - mw - 0.035) / 0.012) ** 2 + ((v - my) / 0.03) ** 2))
            _shade(img, sl, 0.7 * k * w * dim)
        elif au == 15:  # folds below the corners
            fld = np.exp(-(((np.abs(u) - mw - 0.01 + 0.2 * (v - my)) / 0.012) ** 2))
            _shade(img, sl, 0.35 * k * w * fld * (v > my + 0.02))
        elif au == 17:  # mentolabial furrow and the dimpled chin boss
            fur = np.exp(-(((v - my - 0.11 - 0.3 * u * u) / 0.012) ** 2))
            tex = np.cos(u * 97 + v * 31) * np.cos(v * 83 - u * 23) * (v > my + 0.13)
            _shade(img, sl, k * w * (0.4 * fur + 0.1 * tex - 0.06 * (v > my + 0.15)))
        elif au == 23:  # tightened, darker lip border
            _shade(img, sl, 0.3 * k * w * lip_area[sl])
        elif au == 24:  # bulges above and below the pressed lips
            bul = np.exp(-(((v - my + idn.lip_up + 0.03) / 0.012) ** 2)) + np.exp(
                -(((v - my - idn.lip_lo - 0.035) / 0.012) ** 2))
            _shade(img, sl, 0.3 * k * w * bul * (np.abs(u) < mw))

    # ---- 6. nuisances on the whole image: lighting, blur, noise (same with and without AUs)
    gx = math.cos(nuisance.light_dir) * cv.U * cv.scale
    gy = math.sin(nuisance.light_dir) * cv.V * cv.scale
    img *= (255.0 * nuisance.brightness) * (1 + nuisance.light * (gx + gy))
    if nuisance.blur > 0.05:
        for ch in img:
            cv2.GaussianBlur(ch, (5, 5), nuisance.blur, dst=ch, borderType=cv2.BORDER_REPLICATE)
    if nuisance.noise > 0:
        img += _noise(nuisance.seed, size) * nuisance.noise
    img += 0.5
    np.clip(img, 0, 255, out=img)
    out = img.transpose(1, 2, 0).astype(np.uint8, order="C")

    return out, cv.masks(MASK_MARGIN_PX)


_NOISE: dict[int, np.ndarray] = {}


def _noise(seed: int, size: int) -> np.ndarray:
    """Unit Gaussian noise (size, size, 3) for a seed: a window of a cached bank (fast, exact)."""
    bank = _NOISE.get(size)
    if bank is None:
        bank = np.random.default_rng(12345).standard_normal((3, 2 * size, 2 * size), np.float32)
        _NOISE[size] = bank
    y, x = np.random.default_rng([int(seed), 303]).integers(0, size, 2)
    return bank[:, y:y + size, x:x + size]


# --------------------------------------------------------------------------- labels and presets
# Expression prototypes: AU -> probability that it is active (intensity >= 2) in a frame of that
# expression. FACS / EMFACS-style combinations (Ekman & Friesen), plus the non-basic displays that
# dominate spontaneous data (social smile, pain, speech, concentration, embarrassment).
PROTOTYPES: dict[str, dict[int, float]] = {
    "happiness": {6: 0.9, 7: 0.5, 10: 0.5, 12: 1.0, 14: 0.4, 25: 0.5, 26: 0.2},
    "social_smile": {12: 1.0, 14: 0.5, 17: 0.2, 24: 0.2},
    "sadness": {1: 0.9, 4: 0.9, 15: 0.9, 17: 0.6, 24: 0.2},
    "surprise": {1: 1.0, 2: 1.0, 25: 0.9, 26: 0.7},
    "fear": {1: 0.9, 2: 0.7, 4: 0.8, 25: 0.8, 26: 0.3, 14: 0.2},
    "anger": {4: 1.0, 7: 0.9, 23: 0.7, 24: 0.6, 17: 0.4, 10: 0.2},
    "disgust": {9: 0.9, 10: 0.9, 17: 0.5, 4: 0.5, 15: 0.3, 25: 0.3},
    "pain": {4: 0.9, 6: 0.9, 7: 0.9, 9: 0.6, 10: 0.8, 12: 0.3, 25: 0.4, 26: 0.3},
    "contempt": {14: 1.0, 12: 0.3, 24: 0.2},
    "embarrassment": {12: 0.6, 14: 0.4, 17: 0.7, 24: 0.9},
    "speech": {25: 0.9, 26: 0.6, 10: 0.3, 17: 0.3, 23: 0.2},
    "concentration": {4: 0.8, 7: 0.7, 17: 0.5, 23: 0.5, 24: 0.3},
}
EXCLUSIVE = ((12, 15), (23, 25), (24, 25), (24, 26))  # pairs a face does not show at once


@dataclass(frozen=True)
class SynthPreset:
    """A SynthFACS preset that mimics one real data set (AU set, subjects, protocol, base rates)."""

    name: str
    real: str  # the data set it mimics
    n_subjects: int
    frames_per_subject: int
    sequences_per_subject: int
    protocol: str  # "3fold" | "train_test" (hiva_lib.data.prepared.PROTOCOLS)
    test_folds: tuple[int, ...]
    base_rates: dict[int, float]  # target P(intensity >= 2) per AU of the real set
    rate_source: str
    real_subjects: int
    test_fraction: float = 0.0  # train_test only: share of subjects in the test fold

    @property
    def au_ids(self) -> tuple[int, ...]:
        return dataset_aus(self.name)


SYNTH_PRESETS: dict[str, SynthPreset] = {
    "synth-bp4d": SynthPreset(
        "synth-bp4d", "bp4d", n_subjects=12, frames_per_subject=150, sequences_per_subject=4,
        protocol="3fold", test_folds=(1, 2, 3), real_subjects=41,
        base_rates={1: 0.21, 2: 0.17, 4: 0.20, 6: 0.46, 7: 0.55, 10: 0.59, 12: 0.56, 14: 0.47,
                    15: 0.17, 17: 0.34, 23: 0.17, 24: 0.15},
        rate_source="BP4D-Spontaneous (FERA 2015 train+devel frames), occurrence rates as "
                    "commonly tabulated in the AU literature (approximate)"),
    "synth-disfa": SynthPreset(
        "synth-disfa", "disfa", n_subjects=9, frames_per_subject=240, sequences_per_subject=1,
        protocol="3fold", test_folds=(1, 2, 3), real_subjects=27,
        base_rates={1: 0.06, 2: 0.05, 4: 0.19, 6: 0.08, 9: 0.05, 12: 0.13, 25: 0.27, 26: 0.09},
        rate_source="DISFA, intensity >= 2, all 27 subjects (approximate; estimates from "
                    "published label statistics)"),
    "synth-gft": SynthPreset(
        "synth-gft", "gft", n_subjects=12, frames_per_subject=150, sequences_per_subject=3,
        protocol="train_test", test_folds=(1,), real_subjects=96, test_fraction=18 / 96,
        base_rates={1: 0.09, 2: 0.12, 4: 0.07, 6: 0.29, 10: 0.31, 12: 0.29, 14: 0.15,
                    15: 0.12, 23: 0.14, 24: 0.10},
        rate_source="GFT (Girard et al., FG 2017), rough estimates from its reported "
                    "occurrence statistics (approximate)"),
}


def get_preset(name: str) -> SynthPreset:
    try:
        return SYNTH_PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown SynthFACS preset {name!r}; choose one of "
                         f"{sorted(SYNTH_PRESETS)}") from None


@dataclass
class Calibration:
    """Prototype mixture (pi) and single-AU rates (q) that reproduce a preset's base rates."""

    prototypes: list[str]
    pi: np.ndarray  # (J,) prototype probabilities; 1 - sum is the neutral share
    q: np.ndarray  # (15,) independent single-AU activation probability, ALL_AU_IDS order
    expected: dict[int, float] = field(default_factory=dict)  # P(active) per AU


def _prototype_matrix(names: list[str]) -> np.ndarray:
    """(J + 1, 15) P(AU active | prototype); the last row is the neutral prototype."""
    P = np.zeros((len(names) + 1, len(ALL_AU_IDS)))
    for j, n in enumerate(names):
        for a, pr in PROTOTYPES[n].items():
            P[j, _AU_INDEX[a]] = pr
    return P


def _draw_active(r: np.random.Generator, mix: np.ndarray, q: np.ndarray, P: np.ndarray,
                 n: int) -> np.ndarray:
    """(n, 15) bool active AUs: a prototype per frame, single AUs, exclusive pairs resolved."""
    proto = r.choice(len(mix), size=n, p=mix / mix.sum())
    K = len(ALL_AU_IDS)
    active = (r.random((n, K)) < P[proto]) | (r.random((n, K)) < q)
    for a, b in EXCLUSIVE:  # keep one of an impossible pair at random
        both = active[:, _AU_INDEX[a]] & active[:, _AU_INDEX[b]]
        drop = np.where(r.random(n) < 0.5, _AU_INDEX[a], _AU_INDEX[b])
        active[np.flatnonzero(both), drop[both]] = False
    return active


def _simulate_rates(pi: np.ndarray, q: np.ndarray, P: np.ndarray, n: int = 40000) -> np.ndarray:
    mix = np.append(pi, max(1e-6, 1 - pi.sum()))
    return _draw_active(np.random.default_rng(0), mix, q, P, n).mean(0)


_CAL_CACHE: dict[str, Calibration] = {}


def calibrate(preset: str | SynthPreset) -> Calibration:
    """Fit prototype weights and single-AU rates so that P(AU k active) = target_k.

    A frame is one prototype j (or neutral), each of its AUs on with p_jk, and every AU
    additionally on with q_k, so P(k) = 1 - (1 - sum_j pi_j p_jk)(1 - q_k) exactly. Least squares
    over (pi, q) with a small cost on q, so prototypes (co-occurrence) explain what they can.
    Exclusive pairs are resolved afterwards in the sampler and slightly lower the rates; the
    tests bound the effect.
    """
    from scipy.optimize import minimize

    p = get_preset(preset) if isinstance(preset, str) else preset
    if p.name in _CAL_CACHE:
        return _CAL_CACHE[p.name]
    names = list(PROTOTYPES)
    P = _prototype_matrix(names)
    idx = np.array([_AU_INDEX[a] for a in p.au_ids])
    goal = np.array([p.base_rates[a] for a in p.au_ids])
    target = goal.copy()
    J, K = len(names), len(ALL_AU_IDS)

    def loss(x: np.ndarray) -> tuple[float, np.ndarray]:
        pi, q = x[:J], x[J:]
        m = pi @ P[:J]
        r = 1 - (1 - m) * (1 - q)
        err = np.zeros(K)
        err[idx] = (r[idx] - target) / target
        over = max(0.0, pi.sum() - 0.9)
        f = float((err[idx] * (r[idx] - target)).sum() + 0.01 * (q[idx] ** 2).sum()
                  + 0.05 * q.sum() ** 2 / K + 10 * over ** 2 + 1e-3 * (pi ** 2).sum())
        g_r = 2 * err
        g_pi = P[:J] @ (g_r * (1 - q)) + 20 * over + 2e-3 * pi
        g_q = g_r * (1 - m) + 0.1 * q.sum() / K
        g_q[idx] += 0.02 * q[idx]
        return f, np.concatenate([g_pi, g_q])

    x = np.concatenate([np.full(J, 0.3 / J), np.full(K, 0.02)])
    for _ in range(3):  # fit, then correct the targets for what the exclusive pairs remove
        x = minimize(loss, x, jac=True, method="L-BFGS-B",
                     bounds=[(0, 0.9)] * J + [(0, 1)] * K).x
        got = _simulate_rates(x[:J], x[J:], P)[idx]
        target = np.clip(target + (goal - got), 1e-3, 0.95)
    pi, q = x[:J], x[J:]
    if pi.sum() > 0.95:
        pi = pi * 0.95 / pi.sum()
    rates = _simulate_rates(pi, q, P)
    cal = Calibration(names, pi, q, {a: float(rates[_AU_INDEX[a]]) for a in ALL_AU_IDS})
    _CAL_CACHE[p.name] = cal
    return cal


def _rng(seed: int, preset: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(preset.encode()), *keys])


def _seed(seed: int, preset: str, *keys: int) -> int:
    return int(np.random.SeedSequence([int(seed), zlib.crc32(preset.encode()), *keys])
               .generate_state(1)[0])


def sample_subject_intensities(preset: str, subject: int, n_frames: int, seed: int = 0,
                               expressiveness: float = 1.0) -> np.ndarray:
    """(n_frames, 15) integer intensities 0-5 (ALL_AU_IDS order) of one subject's frames.

    Active AUs get 2-5 (more for expressive subjects), a few inactive ones a trace (1), so the
    positive rule (>= 2) is not the same as "visible at all". The subject's own prototype mix is
    drawn around the calibrated one (Dirichlet), which gives per-subject base rates that vary.
    """
    p = get_preset(preset)
    cal = calibrate(p)
    r = _rng(seed, p.name, subject, 2)
    mix = np.append(cal.pi, max(1e-6, 1 - cal.pi.sum()))
    mix = r.dirichlet(mix * 30 + 1e-3)
    active = _draw_active(r, mix, cal.q, _prototype_matrix(cal.prototypes), n_frames)
    lam = min(0.9, max(0.1, 0.45 * expressiveness))
    level = 2 + r.binomial(3, lam, size=active.shape)
    trace = r.random(active.shape) < 0.08
    return np.where(active, level, np.where(trace, 1, 0)).astype(np.int64)


def subject_folds(preset: str, n_subjects: int, seed: int = 0) -> np.ndarray:
    """Fold of each subject: 1..3 balanced (3fold) or 0 train / 1 test (train_test)."""
    p = get_preset(preset)
    order = _rng(seed, p.name, 7).permutation(n_subjects)
    folds = np.empty(n_subjects, np.int64)
    if p.protocol == "3fold":
        folds[order] = np.arange(n_subjects) % 3 + 1
    else:
        n_test = max(1, math.ceil(n_subjects * p.test_fraction))
        folds[order] = (np.arange(n_subjects) < n_test).astype(np.int64)
    return folds


def sample_labels(preset: str, n_subjects: int | None = None,
                  frames_per_subject: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The index of a preset without images: subject, sequence, frame, fold, AU<k>, I<k>.

    ``generate`` renders exactly these rows, so label statistics can be tested cheaply.
    """
    p = get_preset(preset)
    n_sub = p.n_subjects if n_subjects is None else int(n_subjects)
    n_fr = p.frames_per_subject if frames_per_subject is None else int(frames_per_subject)
    if n_sub < (3 if p.protocol == "3fold" else 2) or n_fr < 1:
        raise ValueError(f"{p.name}: need at least {3 if p.protocol == '3fold' else 2} subjects "
                         f"and 1 frame per subject (got {n_sub} x {n_fr})")
    folds = subject_folds(p.name, n_sub, seed)
    n_seq = max(1, min(p.sequences_per_subject, n_fr))
    parts = []
    for s in range(n_sub):
        idn = sample_identity(_seed(seed, p.name, s, 1))
        inten = sample_subject_intensities(p.name, s, n_fr, seed, idn.expressiveness)
        seq = np.arange(n_fr) * n_seq // n_fr
        df = pd.DataFrame({"subject": f"S{s + 1:03d}", "sequence": [f"T{k + 1}" for k in seq],
                           "frame": np.arange(n_fr), "fold": folds[s]})
        for a in p.au_ids:
            df[f"AU{a}"] = (inten[:, _AU_INDEX[a]] >= 2).astype(np.int64)
        for a in ALL_AU_IDS:
            df[f"I{a}"] = inten[:, _AU_INDEX[a]]
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def _downsample_mask(m: np.ndarray, r: int = REGION_SIZE) -> np.ndarray:
    """Area-downsample a bool mask to r x r: a cell is in the region when half of it is."""
    return cv2.resize(m.astype(np.float32), (r, r), interpolation=cv2.INTER_AREA) >= 0.5


def generate(preset: str, root: str | Path, n_subjects: int | None = None,
             frames_per_subject: int | None = None, image_size: int = 128, seed: int = 0,
             overwrite: bool = False, progress: bool = True) -> PreparedDataset:
    """Render a SynthFACS preset into a prepared data set (hiva_lib/data/prepared.py contract).

    Writes images/<subject>/<sequence>/<frame>.png, index.csv (AU<k> 0/1 labels plus I<k>
    intensities of all 15 AUs), meta.json and regions.npz ("masks": np.packbits of the
    (n, N, 32, 32) bool region masks along the last axis, "shape"). Same arguments give
    byte-identical files. Returns ``load_prepared(root)``.
    """
    from PIL import Image

    from hiva_lib.progress import progress as bar

    p = get_preset(preset)
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 (got {image_size})")
    index = sample_labels(p.name, n_subjects, frames_per_subject, seed)
    n_sub = index["subject"].nunique()
    inten = index[[f"I{a}" for a in ALL_AU_IDS]].to_numpy()
    regions = np.zeros((len(index), len(p.au_ids), REGION_SIZE, REGION_SIZE), bool)
    paths = []
    with prepared_dir_writer(root, overwrite=overwrite) as tmp:
        ids = {s: sample_identity(_seed(seed, p.name, s, 1)) for s in range(n_sub)}
        rows = bar(range(len(index)), desc=f"rendering {p.name}", disable=not progress)
        for i in rows:
            subj, seq, fr = index["subject"].iat[i], index["sequence"].iat[i], index["frame"].iat[i]
            s = int(subj[1:]) - 1
            nz = sample_nuisance(_seed(seed, p.name, s, int(fr), 3))
            img, masks = render_face(ids[s], inten[i].astype(np.float32), nz, image_size)
            rel = f"images/{subj}/{seq}/{int(fr):04d}.png"
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(out, optimize=False, compress_level=6)
            paths.append(rel)
            for j, a in enumerate(p.au_ids):
                regions[i, j] = _downsample_mask(masks[a])
        index.insert(3, "image", paths)
        meta = dict(dataset=p.name, au_ids=list(p.au_ids), protocol=p.protocol,
                    test_folds=list(p.test_folds), image_size=image_size, source=SOURCE,
                    positive_rule=POSITIVE_RULE, seed=seed, n_subjects=n_sub,
                    frames_per_subject=int(len(index) // n_sub), mimics=p.real,
                    base_rate_targets={f"AU{a}": p.base_rates[a] for a in p.au_ids},
                    region_size=REGION_SIZE, region_au_order=au_keys(p.au_ids))
        write_index(tmp, meta, index)
        np.savez_compressed(tmp / "regions.npz", masks=np.packbits(regions, axis=-1),
                            shape=np.array(regions.shape, np.int64))
    return load_prepared(root)


# --------------------------------------------------------------------------- contact sheet
def contact_sheet(root_or_dataset: str | Path | PreparedDataset, path: str | Path, n: int = 24,
                  outlines: bool = False, seed: int = 0, cols: int = 6,
                  metadata: dict[str, str] | None = None) -> Path:
    """Write a PNG grid of ``n`` faces with their active AUs under each (optionally outlines
    of the active AUs' ground-truth regions). Faces are a seeded random sample of the frames.
    ``metadata``: PNG text entries (e.g. the data set's fingerprint).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    data = root_or_dataset if isinstance(root_or_dataset, PreparedDataset) else \
        load_prepared(root_or_dataset)
    labels = data.labels()
    rng = np.random.default_rng(seed)
    n = min(n, len(labels))
    pick = np.sort(rng.choice(len(labels), n, replace=False))
    regions = data.region_masks() if outlines else None
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.3))
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), pick, strict=False):
        with Image.open(data.image_path(int(i))) as im:
            img = np.asarray(im.convert("RGB"))
        ax.imshow(img)
        on = [a for a, v in zip(data.au_ids, labels[i], strict=True) if v]
        if regions is not None:
            h = img.shape[0]
            for c, j in enumerate(np.flatnonzero(labels[i])):
                m = cv2.resize(regions[i, j].astype(np.uint8), (h, h),
                               interpolation=cv2.INTER_NEAREST)
                ax.contour(m, levels=[0.5], colors=[colors[c % 10]], linewidths=0.7)
        text = " ".join(f"AU{a}" for a in on) or "neutral"
        if len(text) > 26:  # two lines under the face
            cut = text.rfind(" ", 0, 26)
            text = text[:cut] + "\n" + text[cut + 1:]
        ax.text(0.5, -0.02, f"{data.index['subject'].iat[i]}: {text}", fontsize=7,
                ha="center", va="top", transform=ax.transAxes)
    fig.suptitle(f"{data.name}: {len(data.index)} frames, "
                 f"{data.index['subject'].nunique()} subjects; "
                 "active AUs (intensity >= 2) under each"
                 + (", outlines: their regions" if outlines else ""),
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png", metadata=metadata)
    plt.close(fig)
    return path


CONTACT_SHEET = "synthfacs_contact_sheet.png"


def write_contact_sheet(data: PreparedDataset, figures_root: str | Path | None = None,
                        smoke: bool = False, overwrite: bool = False) -> Path:
    """The contact sheet of a SynthFACS data set at ``figures_root/<dataset>/`` (default
    figures/, smoke: figures/_smoke/, under the project root); returns its path.

    The PNG carries the SHA-256 of the data set's index.csv. A sheet of the same data set is
    reused; one of another data set is kept and the new sheet goes to the first free
    ``-v2``, ``-v3``... name, unless ``overwrite`` replaces it.
    """
    from PIL import Image

    from hiva_lib.engine.checkpoint import file_sha256
    from hiva_lib.engine.config import default_figures_root
    from hiva_lib.engine.runs import file_versions, free_version

    tag = f"{data.name} index.csv sha256 {file_sha256(data.root / 'index.csv')}"
    base = Path(figures_root or default_figures_root(smoke)) / data.name / CONTACT_SHEET
    if not overwrite:
        for _, version in file_versions(base):
            with Image.open(version) as im:
                if im.info.get("Source") == tag:
                    return version
    path = base if overwrite else free_version(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    contact_sheet(data, tmp, metadata={"Source": tag})
    os.replace(tmp, path)  # atomic: a killed run leaves no half-written sheet
    return path
