"""A SynthFACS face: the renderer of a subject (:mod:`.subject`) under a frame's nuisances.

A face is an implicit 2-D drawing evaluated at every pixel at once (no per-pixel Python loops):
skin, hair, brows, eyes, nose and lips are signed-distance shapes with 1-px anti-aliasing
(:mod:`.canvas`). Each AU acts through *windows*, smooth bumps placed on the subject's own
features (:mod:`.au_effects`): a displacement field with which the whole face is sampled
(``q = p - d(p)``), parameter fields read at the pixel (brows, eye opening, lip gap, lip
thickness) and additive appearance (wrinkles, furrows, dimples).

Every window is zero outside its support, so with the nuisances fixed an AU changes pixels only
inside its support dilated by the blur radius; that dilated support is the AU's ground-truth
region mask returned by :func:`render_face` (the test ``AU k at 0 vs 4`` checks it for all 15
AUs). Nuisances (pose, light, blur, noise) come from an explicit seed and are applied the same
way with and without an AU. Intensities are on FACS's 0-5 scale.

:func:`render_face` runs six named steps: the AU windows, the warp, the head (background, hair,
neck, ears, skin), the features (brows, eyes, nose, nasolabial folds, mouth), the AU appearance,
and the nuisances (light, blur, noise).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from hiva_lib.data.au import ALL_AU_IDS
from hiva_lib.data.synthfacs.au_effects import (
    SIDES,
    AUFields,
    Drawn,
    au_windows,
    draw_au_appearance,
)
from hiva_lib.data.synthfacs.canvas import (
    AU_INDEX,
    FULL,
    Canvas,
    Crop,
    cover,
    line,
    paint,
    shade,
    smooth,
)
from hiva_lib.data.synthfacs.subject import NEUTRAL_NUISANCE, Identity, Nuisance

VERSION = "1.3"  # 1.1: AU effects ~1.5x (learnable at 80 px); 1.2: twice the frames (less noise);
# 1.3: AU23 narrows the lips and darkens them more, AU14 deeper dimples (both read at 80 px)
MASK_MARGIN_PX = 3  # support dilation: blur kernel radius (2) + 1


def au_levels(intensities: Mapping[int, float] | Sequence[float] | np.ndarray
              ) -> dict[int, float]:
    """{AU id: level 0..1} of every AU from 0-5 intensities (a dict, missing AUs 0, or a vector
    in ``ALL_AU_IDS`` order); a clear error for unknown AUs, a bad shape or values off 0-5."""
    if isinstance(intensities, Mapping):
        unknown = [k for k in intensities if k not in AU_INDEX]
        if unknown:
            raise ValueError(f"unknown AU ids {unknown}; SynthFACS renders {list(ALL_AU_IDS)}")
        vec = np.zeros(len(ALL_AU_IDS), np.float32)
        for k, val in intensities.items():
            vec[AU_INDEX[k]] = val
    else:
        vec = np.asarray(intensities, np.float32)
        if vec.shape != (len(ALL_AU_IDS),):
            raise ValueError(f"intensities must be a dict AU->value or a length-"
                             f"{len(ALL_AU_IDS)} vector in the order {list(ALL_AU_IDS)}")
    if (vec < 0).any() or (vec > 5).any():
        raise ValueError(f"AU intensities must lie in [0, 5] (FACS A-E scale), got {vec.tolist()}")
    levels = vec / 5.0  # float32, as the renderer has always computed it
    return {a: float(levels[AU_INDEX[a]]) for a in ALL_AU_IDS}


# --------------------------------------------------------------------------- the renderer
def render_face(identity: Identity, intensities: Mapping[int, float] | Sequence[float],
                nuisance: Nuisance = NEUTRAL_NUISANCE, size: int = 128
                ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Render one face: (image (size, size, 3) uint8, {AU id: (size, size) bool region mask}).

    ``intensities`` maps AU ids to 0-5 (missing AUs are 0) or is a vector in ``ALL_AU_IDS``
    order. Masks are in the image frame (after the pose) and do not depend on the intensities.
    """
    levels = au_levels(intensities)
    canvas = Canvas(size, nuisance, {a for a in ALL_AU_IDS if levels[a] > 0})
    fields = au_windows(canvas, identity, levels)  # 1. every AU's windows and fields
    u, v = canvas.warped()  # 2. face coordinates after the AUs' displacement
    img = _draw_head(canvas, identity, u, v)  # 3. background, hair, neck, ears, skin
    for side, brow_y in zip(SIDES, identity.brow_y, strict=True):  # 4. the features
        _draw_brow(img, canvas, identity, fields, (u, v), side, brow_y)
        _draw_eye(img, canvas, identity, fields, (u, v), side, nuisance.gaze)
    _draw_nose(img, canvas, identity, (u, v))
    fold_crop, fold = _nasolabial_fold(canvas, identity, (u, v))
    lip_area = _draw_mouth(img, canvas, identity, fields, (u, v))
    # 5. AU appearance: resting folds, then each active AU's wrinkles inside its own windows
    shade(img, fold_crop, fold[fold_crop] * identity.fold_depth)
    draw_au_appearance(Drawn(img, u, v, canvas.ppu, fold, lip_area), identity, fields, levels)
    out = _apply_nuisances(img, canvas, nuisance)  # 6. light, blur, noise
    return out, canvas.masks(MASK_MARGIN_PX)


Coords = tuple[np.ndarray, np.ndarray]  # warped face coordinates (u, v) of every pixel


def _draw_head(canvas: Canvas, face: Identity, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Step 3: background gradient, long hair, neck, ears, the hair cap and the face skin.

    Returns the planar (3, H, W) float32 image (planar while drawing: fast broadcasting).
    """
    size, ppu = canvas.size, canvas.ppu
    img = np.empty((3, size, size), np.float32)
    background = np.asarray(face.background, np.float32)
    img[:] = background[:, None, None] * np.linspace(1.0, 0.85, size, dtype=np.float32)[:, None]
    skin = np.asarray(face.skin, np.float32)
    fw, fh, fcy = face.face_w, face.face_h, face.face_cy
    long_hair = np.maximum(np.abs(u) - (fw + 0.1), v - face.hair_long)  # behind the face
    long_hair = np.maximum(long_hair, fcy - 0.4 - v)
    crop = canvas.box(0.0, 1.1, fw * 0.6, 1.1 - fcy - fh * 0.5)
    neck = np.maximum(np.abs(u[crop]) - fw * 0.55, fcy + fh * 0.5 - v[crop])
    paint(img, crop, cover(neck, ppu), skin * 0.8)
    for side in SIDES:
        crop = canvas.box(side * fw * 0.98, face.eye_y + 0.08, 0.1, 0.17)
        ear = np.sqrt(((u[crop] - side * fw * 0.98) / 0.08) ** 2
                      + ((v[crop] - face.eye_y - 0.08) / 0.15) ** 2) - 1
        paint(img, crop, cover(ear * 0.08, ppu), skin * 0.88)
    # the hair cap, then the face skin below the hairline
    cap = (np.sqrt((u / (fw + 0.05)) ** 2 + ((v - fcy + 0.06) / (fh + 0.08)) ** 2) - 1) * fw
    paint(img, FULL, cover(np.minimum(cap, long_hair), ppu), np.asarray(face.hair, np.float32))
    v_rel = (v - fcy) / fh
    half_width = fw * (1 - face.chin_taper * np.clip(v_rel, 0, 1) ** 2)
    r2 = (u / half_width) ** 2 + v_rel ** 2
    face_sd = (np.sqrt(r2) - 1) * fw * 0.9
    hairline = face.hairline + face.hair_curve * u * u
    skin_sd = np.maximum(face_sd, hairline - v)
    tone = skin[:, None, None] * (0.8 + 0.2 * np.clip(1 - r2 * r2, 0, 1))
    img += (tone - img) * cover(skin_sd, ppu)
    return img


def _draw_brow(img: np.ndarray, canvas: Canvas, face: Identity, fields: AUFields,
               uv: Coords, side: float, brow_y: float) -> None:
    """One brow, moved by the brow fields of AU1 / AU2 / AU4 (read at the pixel)."""
    inner, outer = face.brow_inner, face.brow_outer
    crop = canvas.box(side * (inner + outer) / 2, brow_y, (outer - inner) / 2 + 0.08, 0.14)
    bu = (uv[0][crop] - fields.brow_du[crop]) * side
    bv = uv[1][crop] - fields.brow_dv[crop]
    t = (bu - inner) / (outer - inner)  # 0 at the inner, 1 at the outer end
    tc = np.clip(t, 0, 1)
    centre = brow_y - face.brow_arch * np.sin(np.pi * tc * 0.9) + face.brow_tilt * (tc - 0.3)
    half = face.brow_thick * (1 - 0.45 * tc)
    sd = np.maximum(np.abs(bv - centre) - half, np.maximum(-t, t - 1) * (outer - inner) * 0.5)
    brow_colour = np.asarray(face.hair, np.float32) * 0.7
    paint(img, crop, cover(sd, canvas.ppu) * 0.92, brow_colour)


def _draw_eye(img: np.ndarray, canvas: Canvas, face: Identity, fields: AUFields,
              uv: Coords, side: float, gaze: tuple[float, float]) -> None:
    """One eye: lids opened by the eye fields of AU6 / AU7, the eyeball, lash line, creases."""
    ex, ey, ew, ppu = face.eye_x, face.eye_y, face.eye_w, canvas.ppu
    crop = canvas.box(side * ex, ey, ew + 0.04, 0.1)
    eu, ev = uv[0][crop] * side, uv[1][crop]
    t = (eu - ex) / ew  # -1 .. 1 across the eye
    profile = np.clip(1 - t * t, 0, 1)
    up_open = np.clip(fields.eye_open_up[crop], 0.05, 1)
    lo_open = np.clip(fields.eye_open_lo[crop], 0.0, 1)
    v_up = ey - face.eye_up * up_open * profile ** 0.7
    v_lo = ey + face.eye_lo * lo_open * profile
    sd = np.maximum(np.maximum(v_up - ev, ev - v_lo), (np.abs(t) - 1) * ew * 0.5)
    inside = cover(sd, ppu)
    eyeball = _eyeball(face, eu, ev, side, gaze, ppu)
    part = img[:, crop[0], crop[1]]
    part += (eyeball - part) * inside
    # lash line, lid crease and lower lid line
    lid = line(ev - v_up, 0.009, ppu) * (np.abs(t) < 1.1)
    paint(img, crop, lid, np.asarray(face.hair, np.float32) * 0.4)
    crease = ey - face.eye_up * (1.7 - 0.5 * (1 - up_open)) * profile ** 0.7 - 0.012
    shade(img, crop, 0.18 * line(ev - crease, 0.006, ppu) * (np.abs(t) < 0.9))
    shade(img, crop, 0.12 * line(ev - v_lo - 0.008, 0.005, ppu) * (np.abs(t) < 0.9))


def _eyeball(face: Identity, eu: np.ndarray, ev: np.ndarray, side: float,
             gaze: tuple[float, float], ppu: float) -> np.ndarray:
    """The planar eyeball of an eye crop: sclera, iris and pupil turned by the gaze."""
    gu, gv = gaze
    radius = np.sqrt((eu - face.eye_x - side * gu) ** 2 + (ev - face.eye_y - gv) ** 2)
    eyeball = np.empty((3,) + eu.shape, np.float32)
    eyeball[:] = np.asarray((0.92, 0.9, 0.88), np.float32)[:, None, None]
    paint(eyeball, FULL, cover(radius - 0.038, ppu), face.iris)
    paint(eyeball, FULL, cover(radius - 0.015, ppu), (0.03, 0.03, 0.03))
    return eyeball


def _draw_nose(img: np.ndarray, canvas: Canvas, face: Identity, uv: Coords) -> None:
    """The nose: bridge shading, alar wings, nostrils and a highlight on the tip."""
    tip, width, ppu = face.nose_tip, face.nose_w, canvas.ppu
    crop = canvas.box(0.0, tip - 0.1, width + 0.06, 0.17)
    nu, nv = uv[0][crop], uv[1][crop]
    off = np.abs(nu)
    bridge = np.exp(-(((off - width * 0.55) / 0.025) ** 2)) * smooth((nv - face.eye_y + 0.02)
                                                                     / 0.1)
    shade(img, crop, 0.1 * bridge * (nv < tip - 0.02))
    wing = np.sqrt(((off - width * 0.75) / 0.045) ** 2 + ((nv - tip + 0.005) / 0.04) ** 2)
    shade(img, crop, 0.22 * line((wing - 1) * 0.04, 0.005, ppu) * (nv > tip - 0.03)
          * (off > width * 0.6))
    nostril = np.sqrt(((off - width * 0.4) / 0.03) ** 2 + ((nv - tip - 0.015) / 0.013) ** 2) - 1
    shade(img, crop, 0.6 * cover(nostril * 0.013, ppu))
    shade(img, crop, -0.08 * np.exp(-((nu / 0.03) ** 2 + ((nv - tip + 0.02) / 0.03) ** 2)))


def _nasolabial_fold(canvas: Canvas, face: Identity, uv: Coords) -> tuple[Crop, np.ndarray]:
    """Profile 0..1 of the nasolabial folds (full frame so every AU window can read it).

    Drawn in step 5: at the resting depth, deepened by AU 6, 9, 10, 12 in their own windows.
    """
    tip, my, mw, nw = face.nose_tip, face.mouth_y, face.mouth_w, face.nose_w
    crop = canvas.box(0.0, (tip + my) / 2 + 0.02, mw + 0.14, (my - tip) / 2 + 0.12)
    fu, fv = uv[0][crop], uv[1][crop]
    t = (fv - tip) / (my + 0.06 - tip)  # 0 at the nose tip, 1 below the lip corners
    fold_u = nw * 0.85 + (mw + 0.05 - nw * 0.85) * t
    fold = np.zeros((canvas.size, canvas.size), np.float32)
    fold[crop] = np.exp(-(((np.abs(fu) - fold_u) / 0.016) ** 2)) * smooth(t * 4) * smooth(
        (1.15 - t) * 4)
    return crop, fold


def _draw_mouth(img: np.ndarray, canvas: Canvas, face: Identity, fields: AUFields,
                uv: Coords) -> np.ndarray:
    """The lips (parted by the gap field, thinned by the thinning field), the mouth opening
    with teeth, the lip line and the corners; returns the lip coverage (full frame)."""
    my, mw, ppu = face.mouth_y, face.mouth_w, canvas.ppu
    crop = canvas.box(0.0, my + 0.04, mw + 0.1, 0.16)
    mu, mv = uv[0][crop], uv[1][crop]
    t = mu / mw  # -1 .. 1 between the corners
    profile = np.sqrt(np.clip(1 - t * t, 0, 1))
    lip_line = my + face.mouth_curve * t * t + face.mouth_tilt * t
    gap = fields.lip_gap[crop] * profile
    thickness = 1 - fields.lip_thin[crop]
    cupid = 1 - 0.3 * np.exp(-((t / 0.18) ** 2)) + 0.12 * np.exp(-(((np.abs(t) - 0.3) / 0.2)
                                                                 ** 2))
    up_bot, lo_top = lip_line - 0.3 * gap, lip_line + 0.7 * gap
    up_top = up_bot - face.lip_up * thickness * profile ** 0.8 * cupid
    lo_bot = lo_top + face.lip_lo * thickness * profile ** 0.8
    beyond_corners = (np.abs(t) - 1) * mw * 0.3
    lip_colour = np.asarray(face.lips, np.float32)[:, None, None] * (
        0.95 - 0.15 * fields.lip_thin[crop])
    a_up = cover(np.maximum(np.maximum(up_top - mv, mv - up_bot), beyond_corners), ppu)
    a_lo = cover(np.maximum(np.maximum(lo_top - mv, mv - lo_bot), beyond_corners), ppu)
    part = img[:, crop[0], crop[1]]
    part += (lip_colour * 0.88 - part) * a_up
    part += (lip_colour - part) * a_lo
    lip_area = np.zeros((canvas.size, canvas.size), np.float32)
    lip_area[crop] = a_up + a_lo
    opening = cover(np.maximum(np.maximum(up_bot - mv, mv - lo_top), beyond_corners), ppu)
    teeth = cover(mv - np.minimum(up_bot + 0.022, lo_top), ppu)
    dark = np.asarray((0.22, 0.07, 0.07), np.float32)[:, None, None]
    mouth_in = dark + (np.asarray((0.88, 0.86, 0.8), np.float32)[:, None, None] - dark) * teeth
    part += (mouth_in - part) * opening
    # lip line and corners (the commissures) read even at low resolution
    lip_line_alpha = 0.75 * line(mv - lip_line, 0.006, ppu) * (np.abs(t) < 1.02)
    part += (lip_colour * 0.35 - part) * lip_line_alpha
    corner = np.sqrt(((np.abs(mu) - mw) / 0.018) ** 2 + ((mv - lip_line) / 0.012) ** 2)
    shade(img, crop, 0.35 * cover((corner - 1) * 0.012, ppu))
    return lip_area


def _apply_nuisances(img: np.ndarray, canvas: Canvas, nuisance: Nuisance) -> np.ndarray:
    """Step 6, on the whole image: lighting, blur, noise (same with and without AUs)."""
    gx = math.cos(nuisance.light_dir) * canvas.U * canvas.scale
    gy = math.sin(nuisance.light_dir) * canvas.V * canvas.scale
    img *= (255.0 * nuisance.brightness) * (1 + nuisance.light * (gx + gy))
    if nuisance.blur > 0.05:
        for channel in img:
            cv2.GaussianBlur(channel, (5, 5), nuisance.blur, dst=channel,
                             borderType=cv2.BORDER_REPLICATE)
    if nuisance.noise > 0:
        img += _noise(nuisance.seed, canvas.size) * nuisance.noise
    img += 0.5
    np.clip(img, 0, 255, out=img)
    return img.transpose(1, 2, 0).astype(np.uint8, order="C")


_NOISE: dict[int, np.ndarray] = {}


def _noise(seed: int, size: int) -> np.ndarray:
    """Unit Gaussian noise (size, size, 3) for a seed: a window of a cached bank (fast, exact)."""
    bank = _NOISE.get(size)
    if bank is None:
        bank = np.random.default_rng(12345).standard_normal((3, 2 * size, 2 * size), np.float32)
        _NOISE[size] = bank
    y, x = np.random.default_rng([int(seed), 303]).integers(0, size, 2)
    return bank[:, y:y + size, x:x + size]
