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
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .au import ALL_AU_IDS, au_keys, dataset_aus
from .datasets import PreparedDataset, load_prepared, prepared_dir_writer, write_index

VERSION = "1.0"
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

    @property
    def ppu_face(self) -> float:
        return self.face_w


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

    def __init__(self, size: int, nz: Nuisance) -> None:
        self.size = size
        c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # canvas units
        th = math.radians(nz.angle)
        self.cos, self.sin, self.scale = math.cos(th), math.sin(th), nz.scale
        self.tx, self.ty = nz.shift
        x, y = c[None, :] - self.tx, c[:, None] - self.ty
        # face coordinates of each pixel: inverse of rotate(scale(face)) + shift
        self.U = ((self.cos * x + self.sin * y) / self.scale).astype(np.float32)
        self.V = ((-self.sin * x + self.cos * y) / self.scale).astype(np.float32)
        self.ppu = size / 2 * self.scale  # pixels per face unit
        self.D = np.zeros((2, size, size), np.float32)  # displacement (face units)
        self.support = np.zeros((len(ALL_AU_IDS), size, size), bool)

    def box(self, cu: float, cv: float, ru: float, rv: float) -> tuple[slice, slice]:
        """Pixel slice holding the face-unit rectangle [cu +- ru] x [cv +- rv] after the pose."""
        us = np.array([cu - ru, cu + ru, cu - ru, cu + ru])
        vs = np.array([cv - rv, cv - rv, cv + rv, cv + rv])
        x = (self.cos * us - self.sin * vs) * self.scale + self.tx
        y = (self.sin * us + self.cos * vs) * self.scale + self.ty
        n = self.size

        def rng(a: np.ndarray) -> slice:
            lo = int(math.floor((a.min() + 1) / 2 * n)) - 1
            hi = int(math.ceil((a.max() + 1) / 2 * n)) + 2
            return slice(min(max(lo, 0), n), min(max(hi, 0), n))

        return rng(y), rng(x)

    def bump(self, au: int, cu: float, cv: float, a: float, b: float,
             flat: float = 0.5) -> tuple[tuple[slice, slice], np.ndarray]:
        """Smooth window (1 inside r < flat, 0 at r >= 1) of an ellipse; marks AU ``au``'s support."""
        sl = self.box(cu, cv, a, b)
        r2 = ((self.U[sl] - cu) / a) ** 2 + ((self.V[sl] - cv) / b) ** 2
        self.support[_AU_INDEX[au]][sl] |= r2 < 1
        return sl, _smooth((1 - r2) / (1 - flat * flat))

    def push(self, sl: tuple[slice, slice], w: np.ndarray, du: float, dv: float) -> None:
        if du:
            self.D[0][sl] += du * w
        if dv:
            self.D[1][sl] += dv * w


def _cover(sd: np.ndarray, ppu: float) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance (face units, < 0 inside)."""
    return np.clip(0.5 - sd * ppu, 0.0, 1.0)


def _paint(img: np.ndarray, sl: tuple[slice, slice], alpha: np.ndarray,
           color: Sequence[float] | np.ndarray) -> None:
    part = img[sl]
    a = alpha[..., None]
    part += (np.asarray(color, np.float32) - part) * a


def _shade(img: np.ndarray, sl: tuple[slice, slice], factor: np.ndarray) -> None:
    """Multiply a crop by (1 - factor): darkening (factor > 0) or highlights (factor < 0)."""
    img[sl] *= (1.0 - factor)[..., None]


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
    idn, cv = identity, _Canvas(size, nuisance)
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
    looks: list[tuple[int, tuple[slice, slice], np.ndarray]] = []  # (au, slice, window)

    for s, byk in zip(sides, by, strict=True):
        # AU1: inner brow (and the forehead above it) up; the brow tilts obliquely
        sl, w = cv.bump(1, s * (bi + 0.05), byk - 0.06, 0.13, 0.16, flat=0.45)
        cv.push(sl, w, 0.0, -0.065 * I[1])
        looks.append((1, sl, w))
        # AU2: outer brow up
        sl, w = cv.bump(2, s * (bo - 0.06), byk - 0.06, 0.13, 0.16, flat=0.45)
        cv.push(sl, w, 0.0, -0.065 * I[2])
        looks.append((2, sl, w))
        # AU4: brows down and together
        sl, w = cv.bump(4, s * (bi + 0.1), byk - 0.01, 0.2, 0.1, flat=0.5)
        cv.push(sl, w, -s * 0.03 * I[4], 0.045 * I[4])
        # AU6: lower lid pushed up (parameter), cheek raised (warp), crow's feet (look)
        sl, w = cv.bump(6, s * ex, ey + 0.03, ew + 0.06, 0.07, flat=0.75)
        eye_open_lo[sl] -= 0.55 * I[6] * w
        eye_open_up[sl] -= 0.12 * I[6] * w
        sl, w = cv.bump(6, s * (ex + 0.02), ey + 0.2, 0.17, 0.12, flat=0.3)
        cv.push(sl, w, 0.0, -0.035 * I[6])
        looks.append((6, sl, w))
        sl, w = cv.bump(6, s * (ex + ew + 0.05), ey, 0.07, 0.08, flat=0.4)
        looks.append((6, sl, w))
        # AU7: both lids tighten (the lower one straightens up)
        sl, w = cv.bump(7, s * ex, ey, ew + 0.05, 0.1, flat=0.7)
        eye_open_lo[sl] -= 0.55 * I[7] * w
        eye_open_up[sl] -= 0.35 * I[7] * w
        looks.append((7, sl, w))
        # AU12: lip corners up and out, cheek bunching lateral to them
        sl, w = cv.bump(12, s * (mw + 0.02), my - 0.02, 0.13, 0.13, flat=0.35)
        cv.push(sl, w, s * 0.03 * I[12], -0.055 * I[12])
        looks.append((12, sl, w))
        # AU14: lip corners tightened inwards, dimples
        sl, w = cv.bump(14, s * (mw + 0.02), my, 0.1, 0.09, flat=0.35)
        cv.push(sl, w, -s * 0.03 * I[14], 0.0)
        looks.append((14, sl, w))
        # AU15: lip corners down
        sl, w = cv.bump(15, s * (mw + 0.01), my + 0.03, 0.11, 0.13, flat=0.35)
        cv.push(sl, w, 0.0, 0.05 * I[15])
        looks.append((15, sl, w))
    # AU4's glabella lines sit between the brows
    sl, w = cv.bump(4, 0.0, (by[0] + by[1]) / 2 + 0.02, bi + 0.05, 0.09, flat=0.5)
    looks.append((4, sl, w))
    # AU9: nose wrinkles on the bridge, nostrils and the upper lip pulled up
    sl, w = cv.bump(9, 0.0, nt - 0.06, idn.nose_w + 0.09, 0.2, flat=0.45)
    cv.push(sl, w, 0.0, -0.03 * I[9])
    looks.append((9, sl, w))
    # AU10: upper lip raised (more at the centre), nasolabial furrow deepened
    sl, w = cv.bump(10, 0.0, my - 0.06, mw + 0.07, 0.1, flat=0.4)
    cv.push(sl, w, 0.0, -0.04 * I[10])
    looks.append((10, sl, w))
    # AU17: chin boss up, lower lip pushed up, mentalis texture
    sl, w = cv.bump(17, 0.0, my + 0.2, mw + 0.02, 0.2, flat=0.4)
    cv.push(sl, w, 0.0, -0.045 * I[17])
    looks.append((17, sl, w))
    # AU23 / AU24 / AU25: lips tighten / press / part (parameter fields over the lips)
    lips_c, lips_a, lips_b = my + 0.02, mw + 0.07, 0.13
    sl, w = cv.bump(23, 0.0, lips_c, lips_a, lips_b, flat=0.75)
    thin[sl] += 0.55 * I[23] * w
    looks.append((23, sl, w))
    sl, w = cv.bump(24, 0.0, lips_c, lips_a, lips_b + 0.03, flat=0.7)
    thin[sl] += 0.75 * I[24] * w
    looks.append((24, sl, w))
    sl, w = cv.bump(25, 0.0, lips_c, lips_a, lips_b, flat=0.75)
    gap[sl] += (0.02 + 0.035 * I[25]) * (I[25] > 0) * w
    # AU26: jaw drop, the lower face moves down (more towards the chin) and the lips part
    sl, w = cv.bump(26, 0.0, lips_c, lips_a, lips_b, flat=0.75)
    gap[sl] += 0.05 * I[26] * w
    jaw_top = my + 0.02
    sl, w = cv.bump(26, 0.0, jaw_top + 0.32, idn.face_w * 0.95, 0.5, flat=0.55)
    ramp = np.clip((cv.V[sl] - jaw_top) / 0.35, 0, 1)
    cv.push(sl, w * ramp, 0.0, 0.11 * I[26])

    # ---- 2. the warped face coordinates
    Uq, Vq = cv.U - cv.D[0], cv.V - cv.D[1]

    # ---- 3. background, hair, face
    bg = np.asarray(idn.background, np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg * (0.85 + 0.15 * (1 - (cv.V[..., None] + 1) / 2))
    hair_col = np.asarray(idn.hair, np.float32)
    skin = np.asarray(idn.skin, np.float32)
    full = (slice(None), slice(None))
    fw, fh, fcy = idn.face_w, idn.face_h, idn.face_cy
    # long hair behind the face
    hl = np.maximum(np.abs(Uq) - (fw + 0.1), Vq - idn.hair_long)
    hl = np.maximum(hl, fcy - 0.4 - Vq)
    _paint(img, full, _cover(hl, ppu), hair_col * 0.9)
    # neck
    neck = np.maximum(np.abs(Uq) - fw * 0.55, fcy + fh * 0.5 - Vq)
    _paint(img, full, _cover(neck, ppu), skin * 0.8)
    # ears
    for s in sides:
        ear = np.sqrt(((Uq - s * fw * 0.98) / 0.08) ** 2 + ((Vq - ey - 0.08) / 0.15) ** 2) - 1
        _paint(img, full, _cover(ear * 0.08, ppu), skin * 0.88)
    # head (hair cap), then the face skin below the hairline
    head = np.sqrt((Uq / (fw + 0.05)) ** 2 + ((Vq - fcy + 0.06) / (fh + 0.08)) ** 2) - 1
    _paint(img, full, _cover(head * fw, ppu), hair_col)
    vn = (Vq - fcy) / fh
    a_v = fw * (1 - idn.chin_taper * np.clip(vn, 0, 1) ** 2)
    r2 = (Uq / a_v) ** 2 + vn ** 2
    face_sd = (np.sqrt(r2) - 1) * fw * 0.9
    hairline = idn.hairline + idn.hair_curve * Uq * Uq
    skin_sd = np.maximum(face_sd, hairline - Vq)
    tone = skin * (0.8 + 0.2 * np.clip(1 - r2 * r2, 0, 1))[..., None]
    face_a = _cover(skin_sd, ppu)[..., None]
    img += (tone - img) * face_a

    # ---- 4. features (evaluated on crops at the warped coordinates)
    brow_col = hair_col * 0.7
    for s, byk in zip(sides, by, strict=True):
        sl = cv.box(s * (bi + bo) / 2, byk, (bo - bi) / 2 + 0.08, 0.14)
        u, v = Uq[sl] * s, Vq[sl]
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
        eye = np.empty(u.shape + (3,), np.float32)
        eye[:] = (0.92, 0.9, 0.88)
        _paint(eye, full, _cover(ri - 0.038, ppu), idn.iris)
        _paint(eye, full, _cover(ri - 0.015, ppu), (0.03, 0.03, 0.03))
        part = img[sl]
        part += (eye - part) * inside[..., None]
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
    fold[sl_f] = np.exp(-(((np.abs(u) - fold_u) / 0.012) ** 2)) * _smooth(tf * 4) * _smooth(
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
    lip_col = np.asarray(idn.lips, np.float32) * (0.95 - 0.15 * thin[sl])[..., None]
    a_up = _cover(np.maximum(np.maximum(up_top - v, v - up_bot), side), ppu)
    a_lo = _cover(np.maximum(np.maximum(lo_top - v, v - lo_bot), side), ppu)
    part = img[sl]
    part += (lip_col * 0.88 - part) * a_up[..., None]
    part += (lip_col - part) * a_lo[..., None]
    lip_area = np.zeros((size, size), np.float32)
    lip_area[sl] = a_up + a_lo
    opening = _cover(np.maximum(np.maximum(up_bot - v, v - lo_top), side), ppu)
    teeth = _cover(v - np.minimum(up_bot + 0.022, lo_top), ppu)
    mouth_in = np.asarray((0.22, 0.07, 0.07), np.float32) + (
        np.asarray((0.88, 0.86, 0.8), np.float32) - (0.22, 0.07, 0.07)) * teeth[..., None]
    part += (mouth_in - part) * opening[..., None]
    # lip line and corners (the commissures) read even at low resolution
    _paint(img, sl, 0.75 * _line(v - vs, 0.006, ppu) * (np.abs(t) < 1.02), lip_col * 0.35)
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
            lines = np.cos((v - by[0]) * (2 * np.pi / 0.06)) ** 8
            _shade(img, sl, 0.35 * k * w * lines * (v < min(by) - 0.07))
        elif au == 4:  # vertical glabella lines
            lines = np.exp(-(((np.abs(u) - 0.03) / 0.012) ** 2))
            _shade(img, sl, 0.4 * k * w * lines)
        elif au == 6:  # crow's feet, infraorbital furrow, cheek highlight
            ang = np.arctan2(v - ey, np.abs(u) - ex - ew)
            rad = np.hypot(v - ey, np.abs(u) - ex - ew)
            feet = np.cos(ang * 9) ** 6 * _smooth((rad - 0.02) / 0.02) * (np.abs(u) > ex + ew)
            fur = np.exp(-(((v - ey - 0.075 - 0.04 * ((np.abs(u) - ex) / ew) ** 2) / 0.01) ** 2))
            _shade(img, sl, k * w * (0.35 * feet + 0.3 * fur))
        elif au == 7:  # bulge under the tightened lower lid
            lo = ey + idn.eye_lo * 0.5 + 0.018
            _shade(img, sl, 0.3 * k * w * _line(v - lo, 0.006, ppu) * (np.abs(np.abs(u) - ex) < ew))
        elif au == 9:  # wrinkles across the bridge, nostril flare shadow, furrows
            lines = np.cos((v - nt) * (2 * np.pi / 0.04)) ** 6 * (np.abs(u) < nw * 0.6)
            lines = lines * (v > ey + 0.04) * (v < nt - 0.07)
            _shade(img, sl, k * w * (0.45 * lines + 0.25 * fold[sl]))
        elif au == 10:  # deeper nasolabial furrows
            _shade(img, sl, 0.55 * k * w * fold[sl])
        elif au == 12:  # deeper furrow beside the corners (cheek bunching)
            _shade(img, sl, 0.5 * k * w * fold[sl])
        elif au == 14:  # dimples lateral to the corners
            dim = np.exp(-(((np.abs(u) - mw - 0.035) / 0.012) ** 2 + ((v - my) / 0.03) ** 2))
            _shade(img, sl, 0.5 * k * w * dim)
        elif au == 15:  # folds below the corners
            fld = np.exp(-(((np.abs(u) - mw - 0.01 + 0.2 * (v - my)) / 0.012) ** 2))
            _shade(img, sl, 0.35 * k * w * fld * (v > my + 0.02))
        elif au == 17:  # mentolabial furrow and the dimpled chin boss
            fur = np.exp(-(((v - my - 0.11 - 0.3 * u * u) / 0.012) ** 2))
            tex = (np.cos(u * 120) * np.cos(v * 120)) ** 2 * (v > my + 0.13)
            _shade(img, sl, k * w * (0.4 * fur + 0.12 * tex - 0.06 * (v > my + 0.15)))
        elif au == 23:  # tightened, darker lip border
            _shade(img, sl, 0.3 * k * w * lip_area[sl])
        elif au == 24:  # bulges above and below the pressed lips
            bul = np.exp(-(((v - my + idn.lip_up + 0.03) / 0.012) ** 2)) + np.exp(
                -(((v - my - idn.lip_lo - 0.035) / 0.012) ** 2))
            _shade(img, sl, 0.3 * k * w * bul * (np.abs(u) < mw))

    # ---- 6. nuisances on the whole image: lighting, blur, noise (same with and without AUs)
    gx = math.cos(nuisance.light_dir) * cv.U * cv.scale
    gy = math.sin(nuisance.light_dir) * cv.V * cv.scale
    img *= (nuisance.brightness * (1 + nuisance.light * (gx + gy)))[..., None]
    if nuisance.blur > 0.05:
        img = cv2.GaussianBlur(img, (5, 5), nuisance.blur, borderType=cv2.BORDER_REPLICATE)
    img *= 255.0
    if nuisance.noise > 0:
        img += _noise(nuisance.seed, size) * nuisance.noise
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)

    kernel = _disc(MASK_MARGIN_PX)
    masks = {a: cv2.dilate(cv.support[i].view(np.uint8), kernel).astype(bool)
             for i, a in enumerate(ALL_AU_IDS)}
    return out, masks


_NOISE: dict[int, np.ndarray] = {}


def _noise(seed: int, size: int) -> np.ndarray:
    """Unit Gaussian noise (size, size, 3) for a seed: a window of a cached bank (fast, exact)."""
    bank = _NOISE.get(size)
    if bank is None:
        bank = np.random.default_rng(12345).standard_normal((2 * size, 2 * size, 3), np.float32)
        _NOISE[size] = bank
    r = np.random.default_rng([int(seed), 303])
    y, x = r.integers(0, size, 2)
    flip = r.integers(0, 4)
    win = bank[y:y + size, x:x + size]
    return np.rot90(win, flip) if flip else win


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
