"""What each AU does to a SynthFACS face: two tables of per-AU drawing functions.

Every AU acts through *windows*, smooth bumps placed on the subject's own features and exactly
zero outside their support (the AU's region):

* ``WINDOWS``: before the face is drawn, an AU adds to the displacement field (brows, cheeks,
  lip corners, chin, jaw move; the face is then sampled at ``q = p - d(p)``) or to parameter
  fields read at the pixel (brow offset, eye opening, lip gap, lip thinning);
* ``APPEARANCE``: after the features are drawn, an AU darkens or lightens its own windows
  (forehead, glabella, nose and crow's-feet wrinkles, furrows, dimples, bulges).

Levels are 0..1 (intensity / 5). The effect sizes are those of renderer v1.1, with AU23 and
AU14 strengthened in v1.3 (docs/synthfacs.md).
Order matters for bit-identical renders: the tables are applied in their insertion order, the
bilateral windows side by side (image right, then left), then the midline ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from hiva_lib.data.synthfacs.canvas import Canvas, Crop, add_to_field, line, shade, smooth
from hiva_lib.data.synthfacs.subject import Identity

if TYPE_CHECKING:
    from collections.abc import Callable

    # (canvas, identity, fields, level, side, brow_y of that side)
    SideWindow = Callable[[Canvas, Identity, "AUFields", float, float, float], None]
    # (canvas, identity, fields, level)
    MidlineWindow = Callable[[Canvas, Identity, "AUFields", float], None]
    # (drawn face, identity, crop, window, level)
    Appearance = Callable[["Drawn", Identity, Crop, np.ndarray, float], None]

SIDES = (-1.0, 1.0)  # image right, image left (face u is mirrored by the side's sign)


@dataclass
class AUFields:
    """The parameter fields of one render and the windows whose appearance is drawn later."""

    eye_open_up: np.ndarray  # upper-lid opening factor (1: resting)
    eye_open_lo: np.ndarray  # lower-lid opening factor
    lip_gap: np.ndarray  # face units between the lips
    lip_thin: np.ndarray  # lip thinning 0..1
    brow_dv: np.ndarray  # brow offset (face units, < 0 up)
    brow_du: np.ndarray  # brow offset towards the midline (< 0 in)
    looks: list[tuple[int, Crop, np.ndarray]] = field(default_factory=list)

    @classmethod
    def resting(cls, size: int) -> AUFields:
        """Fields of a face without AUs: eyes fully open, no lip gap, nothing moved."""

        def full(value: float) -> np.ndarray:
            """A (size, size) float32 field filled with ``value``."""
            return np.full((size, size), value, np.float32)

        return cls(full(1.0), full(1.0), full(0.0), full(0.0), full(0.0), full(0.0))

    def look(self, au: int, crop: Crop, window: np.ndarray | None) -> None:
        """Keep an active AU's window: its wrinkles / furrows are drawn after the features."""
        if window is not None:
            self.looks.append((au, crop, window))


# --------------------------------------------------------------------------- windows, per side
def _along_brow(canvas: Canvas, crop: Crop, face: Identity, side: float) -> np.ndarray:
    """0 at the inner, 1 at the outer end of the brow, per pixel of the crop."""
    return (canvas.U[crop] * side - face.brow_inner) / (face.brow_outer - face.brow_inner)


def _inner_brow_raiser(canvas: Canvas, face: Identity, fields: AUFields, level: float,
                       side: float, brow_y: float) -> None:
    """AU1: inner brow (and the forehead above it) up; the brow turns oblique.
    AU1 / AU2 / AU4 move the brows through parameter fields (no skin warp, so no folds)."""
    length = face.brow_outer - face.brow_inner
    crop, w = canvas.rect(1, side * (face.brow_inner + 0.35 * length), brow_y - 0.08,
                      0.35 * length + 0.07, 0.14)
    if w is not None:
        t = _along_brow(canvas, crop, face, side)
        fields.brow_dv[crop] -= 0.11 * level * w * np.clip(1.1 - t, 0, 1)
    fields.look(1, crop, w)


def _outer_brow_raiser(canvas: Canvas, face: Identity, fields: AUFields, level: float,
                       side: float, brow_y: float) -> None:
    """AU2: outer brow up."""
    length = face.brow_outer - face.brow_inner
    crop, w = canvas.rect(2, side * (face.brow_inner + 0.7 * length), brow_y - 0.08,
                      0.35 * length + 0.07, 0.14)
    if w is not None:
        t = _along_brow(canvas, crop, face, side)
        fields.brow_dv[crop] -= 0.11 * level * w * np.clip(t + 0.1, 0, 1)
    fields.look(2, crop, w)


def _brow_lowerer(canvas: Canvas, face: Identity, fields: AUFields, level: float,
                  side: float, brow_y: float) -> None:
    """AU4: brows down and together, glabella lines between them."""
    half_width = (face.brow_outer + 0.04) / 2
    crop, w = canvas.rect(4, side * (face.brow_outer + 0.04) / 2, brow_y + 0.02, half_width, 0.08)
    if w is not None:
        t = _along_brow(canvas, crop, face, side)
        fields.brow_dv[crop] += 0.075 * level * w * np.clip(1.3 - 0.8 * t, 0, 1)
        fields.brow_du[crop] -= side * 0.05 * level * w * np.clip(1.2 - t, 0, 1)
    fields.look(4, crop, w)


def _cheek_raiser(canvas: Canvas, face: Identity, fields: AUFields, level: float,
                  side: float, brow_y: float) -> None:
    """AU6: lower lid pushed up (parameter), cheek raised (warp), crow's feet (look)."""
    ex, ey, ew = face.eye_x, face.eye_y, face.eye_w
    crop, w = canvas.bump(6, side * ex, ey + 0.03, ew + 0.06, 0.07, flat=0.75)
    add_to_field(fields.eye_open_lo, crop, w, -0.7 * level)
    add_to_field(fields.eye_open_up, crop, w, -0.2 * level)
    crop, w = canvas.bump(6, side * (ex + 0.02), ey + 0.2, 0.17, 0.12, flat=0.3)
    canvas.push(crop, w, 0.0, -0.05 * level)
    fields.look(6, crop, w)
    crop, w = canvas.bump(6, side * (ex + ew + 0.05), ey, 0.07, 0.08, flat=0.4)
    fields.look(6, crop, w)


def _lid_tightener(canvas: Canvas, face: Identity, fields: AUFields, level: float,
                   side: float, brow_y: float) -> None:
    """AU7: both lids tighten (the lower one straightens up)."""
    crop, w = canvas.bump(7, side * face.eye_x, face.eye_y, face.eye_w + 0.05, 0.1, flat=0.7)
    add_to_field(fields.eye_open_lo, crop, w, -0.55 * level)
    add_to_field(fields.eye_open_up, crop, w, -0.35 * level)
    fields.look(7, crop, w)


def _lip_corner_puller(canvas: Canvas, face: Identity, fields: AUFields, level: float,
                       side: float, brow_y: float) -> None:
    """AU12: lip corners up and out, cheek bunching lateral to them."""
    crop, w = canvas.bump(12, side * (face.mouth_w + 0.03), face.mouth_y - 0.02, 0.21, 0.15,
                      flat=0.25)
    canvas.push(crop, w, side * 0.04 * level, -0.09 * level)
    fields.look(12, crop, w)


def _dimpler(canvas: Canvas, face: Identity, fields: AUFields, level: float,
             side: float, brow_y: float) -> None:
    """AU14: lip corners tightened inwards, dimples."""
    crop, w = canvas.bump(14, side * (face.mouth_w + 0.03), face.mouth_y, 0.15, 0.1, flat=0.3)
    canvas.push(crop, w, -side * 0.035 * level, 0.0)
    fields.look(14, crop, w)


def _lip_corner_depressor(canvas: Canvas, face: Identity, fields: AUFields, level: float,
                          side: float, brow_y: float) -> None:
    """AU15: lip corners down."""
    crop, w = canvas.bump(15, side * (face.mouth_w + 0.02), face.mouth_y + 0.03, 0.2, 0.15,
                      flat=0.25)
    canvas.push(crop, w, 0.0, 0.055 * level)
    fields.look(15, crop, w)


# --------------------------------------------------------------------------- windows, midline
def _nose_wrinkler(canvas: Canvas, face: Identity, fields: AUFields, level: float) -> None:
    """AU9: nose wrinkles on the bridge, nostrils and the upper lip pulled up."""
    crop, w = canvas.bump(9, 0.0, face.nose_tip - 0.06, face.nose_w + 0.09, 0.2, flat=0.45)
    canvas.push(crop, w, 0.0, -0.05 * level)
    fields.look(9, crop, w)


def _upper_lip_raiser(canvas: Canvas, face: Identity, fields: AUFields, level: float) -> None:
    """AU10: upper lip raised (more at the centre), nasolabial furrow deepened."""
    crop, w = canvas.bump(10, 0.0, face.mouth_y - 0.06, face.mouth_w + 0.07, 0.1, flat=0.4)
    canvas.push(crop, w, 0.0, -0.04 * level)
    fields.look(10, crop, w)


def _chin_raiser(canvas: Canvas, face: Identity, fields: AUFields, level: float) -> None:
    """AU17: chin boss up, lower lip pushed up, mentalis texture."""
    crop, w = canvas.bump(17, 0.0, face.mouth_y + 0.2, face.mouth_w + 0.02, 0.2, flat=0.4)
    canvas.push(crop, w, 0.0, -0.045 * level)
    fields.look(17, crop, w)


_LIPS_HALF_HEIGHT = 0.13  # the lip window of AU23-26 (AU24's reaches 0.03 further)


def _lips_window(canvas: Canvas, au: int, face: Identity, flat: float,
                 half_height: float = _LIPS_HALF_HEIGHT) -> tuple[Crop, np.ndarray | None]:
    """The window over the lips that AU23 / AU24 / AU25 / AU26 act through."""
    return canvas.bump(au, 0.0, face.mouth_y + 0.02, face.mouth_w + 0.07, half_height, flat=flat)


def _lip_tightener(canvas: Canvas, face: Identity, fields: AUFields, level: float) -> None:
    """AU23: lips tightened (thinner) and narrowed, the corners drawn towards the midline."""
    crop, w = _lips_window(canvas, 23, face, flat=0.75)
    add_to_field(fields.lip_thin, crop, w, 0.55 * level)
    if w is not None:  # v1.3: the narrowing, so AU23 reads at 80 px without AU24 beside it
        canvas.push(crop, w * -np.sign(canvas.U[crop]), 0.1 * level, 0.0)
    fields.look(23, crop, w)


def _lip_pressor(canvas: Canvas, face: Identity, fields: AUFields, level: float) -> None:
    """AU24: lips pressed (thinner still)."""
    crop, w = _lips_window(canvas, 24, face, flat=0.7, half_height=_LIPS_HALF_HEIGHT + 0.03)
    add_to_field(fields.lip_thin, crop, w, 0.75 * level)
    fields.look(24, crop, w)


def _lips_part(canvas: Canvas, face: Identity, fields: AUFields, level: float) -> None:
    """AU25: lips part (a gap of at least 0.03 face units when active)."""
    crop, w = _lips_window(canvas, 25, face, flat=0.75)
    add_to_field(fields.lip_gap, crop, w, (0.03 + 0.05 * level) * (level > 0))


def _jaw_drop(canvas: Canvas, face: Identity, fields: AUFields, level: float) -> None:
    """AU26: jaw drop, the lower face moves down (more towards the chin) and the lips part."""
    crop, w = _lips_window(canvas, 26, face, flat=0.75)
    add_to_field(fields.lip_gap, crop, w, 0.09 * level)
    jaw_top = face.mouth_y + 0.02
    crop, w = canvas.bump(26, 0.0, jaw_top + 0.34, face.face_w * 1.2, 0.52, flat=0.6)
    if w is not None:
        canvas.push(crop, w * np.clip((canvas.V[crop] - jaw_top) / 0.35, 0, 1), 0.0, 0.15 * level)


# AUs acting on both halves of the face, drawn side by side (the loop is over sides first)
SIDE_WINDOWS: dict[int, SideWindow] = {
    1: _inner_brow_raiser, 2: _outer_brow_raiser, 4: _brow_lowerer, 6: _cheek_raiser,
    7: _lid_tightener, 12: _lip_corner_puller, 14: _dimpler, 15: _lip_corner_depressor,
}
# AUs on the midline, after both sides
MIDLINE_WINDOWS: dict[int, MidlineWindow] = {
    9: _nose_wrinkler, 10: _upper_lip_raiser, 17: _chin_raiser, 23: _lip_tightener,
    24: _lip_pressor, 25: _lips_part, 26: _jaw_drop,
}


def au_windows(canvas: Canvas, face: Identity, levels: dict[int, float]) -> AUFields:
    """Step 1 of a render: every AU's windows (inactive AUs only mark their support)."""
    fields = AUFields.resting(canvas.size)
    for side, brow_y in zip(SIDES, face.brow_y, strict=True):
        for au, window in SIDE_WINDOWS.items():
            window(canvas, face, fields, levels[au], side, brow_y)
    for au, window in MIDLINE_WINDOWS.items():
        window(canvas, face, fields, levels[au])
    return fields


# --------------------------------------------------------------------------- appearance
@dataclass
class Drawn:
    """The drawn face that the AU appearance step darkens: image and what it reads."""

    img: np.ndarray  # planar (3, H, W) float32
    u: np.ndarray  # warped face coordinates of every pixel
    v: np.ndarray
    ppu: float  # pixels per face unit
    fold: np.ndarray  # nasolabial fold profile 0..1, full frame
    lip_area: np.ndarray  # lip coverage, full frame


def _forehead_lines(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU1 / AU2: horizontal forehead lines above the brows."""
    v = d.v[crop]
    c = np.cos((v - face.brow_y[0]) * (2 * np.pi / 0.075))
    c *= c
    lines = c * c
    shade(d.img, crop, 0.6 * k * w * lines * (v < min(face.brow_y) - 0.06))


def _glabella_lines(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU4: vertical lines between the brows."""
    lines = np.exp(-(((np.abs(d.u[crop]) - 0.035) / 0.016) ** 2))
    shade(d.img, crop, 0.7 * k * w * lines)


def _crows_feet(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU6: crow's feet, infraorbital furrow, cheek highlight."""
    u, v = d.u[crop], d.v[crop]
    ex, ey, ew = face.eye_x, face.eye_y, face.eye_w
    angle = np.arctan2(v - ey, np.abs(u) - ex - ew)  # around the outer eye corner
    radius = np.hypot(v - ey, np.abs(u) - ex - ew)
    c = np.cos(angle * 9)
    c *= c
    feet = c * c * c * smooth((radius - 0.02) / 0.02) * (np.abs(u) > ex + ew)
    furrow = np.exp(-(((v - ey - 0.075 - 0.04 * ((np.abs(u) - ex) / ew) ** 2) / 0.01) ** 2))
    shade(d.img, crop, k * w * (0.6 * feet + 0.5 * furrow))


def _lid_bulge(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU7: bulge under the tightened lower lid."""
    u, v = d.u[crop], d.v[crop]
    below_lid = face.eye_y + face.eye_lo * 0.5 + 0.018
    under_eye = np.abs(np.abs(u) - face.eye_x) < face.eye_w
    shade(d.img, crop, 0.3 * k * w * line(v - below_lid, 0.006, d.ppu) * under_eye)


def _nose_wrinkles(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU9: wrinkles across the bridge, nostril flare shadow, furrows."""
    u, v = d.u[crop], d.v[crop]
    tip, nose_w = face.nose_tip, face.nose_w
    lines = np.cos((v - tip) * (2 * np.pi / 0.05)) ** 4 * (np.abs(u) < nose_w * 0.7)
    lines = lines * (v > face.eye_y + 0.04) * (v < tip - 0.07)
    # the bunched skin of the bridge reads as a darker band even at 64 px
    band = np.exp(-((u / (nose_w * 0.8)) ** 2 + ((v - tip + 0.12) / 0.07) ** 2))
    shade(d.img, crop, k * w * (0.7 * lines + 0.3 * band + 0.5 * d.fold[crop]))


def _deeper_fold(strength: float, d: Drawn, face: Identity, crop: Crop, w: np.ndarray,
                 k: float) -> None:
    """AU10 / AU12: deeper nasolabial furrow (AU12: beside the corners, cheek bunching)."""
    shade(d.img, crop, strength * k * w * d.fold[crop])


def _dimples(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU14: dimples lateral to the lip corners."""
    u, v = d.u[crop], d.v[crop]
    dimple = np.exp(-(((np.abs(u) - face.mouth_w - 0.035) / 0.012) ** 2
                      + ((v - face.mouth_y) / 0.03) ** 2))
    shade(d.img, crop, 1.2 * k * w * dimple)  # v1.3: 0.7 -> 1.2


def _corner_folds(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU15: folds below the lip corners."""
    u, v = d.u[crop], d.v[crop]
    my = face.mouth_y
    folds = np.exp(-(((np.abs(u) - face.mouth_w - 0.01 + 0.2 * (v - my)) / 0.012) ** 2))
    shade(d.img, crop, 0.35 * k * w * folds * (v > my + 0.02))


def _chin_texture(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU17: mentolabial furrow and the dimpled chin boss."""
    u, v = d.u[crop], d.v[crop]
    my = face.mouth_y
    furrow = np.exp(-(((v - my - 0.11 - 0.3 * u * u) / 0.012) ** 2))
    texture = np.cos(u * 97 + v * 31) * np.cos(v * 83 - u * 23) * (v > my + 0.13)
    shade(d.img, crop, k * w * (0.4 * furrow + 0.1 * texture - 0.06 * (v > my + 0.15)))


def _dark_lip_border(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU23: tightened, darker lips (v1.3: 0.3 -> 0.8)."""
    shade(d.img, crop, 0.8 * k * w * d.lip_area[crop])


def _lip_bulges(d: Drawn, face: Identity, crop: Crop, w: np.ndarray, k: float) -> None:
    """AU24: bulges above and below the pressed lips."""
    u, v = d.u[crop], d.v[crop]
    my = face.mouth_y
    bulges = np.exp(-(((v - my + face.lip_up + 0.03) / 0.012) ** 2)) + np.exp(
        -(((v - my - face.lip_lo - 0.035) / 0.012) ** 2))
    shade(d.img, crop, 0.3 * k * w * bulges * (np.abs(u) < face.mouth_w))


# AU25 / AU26 only move and open the mouth: no appearance of their own
APPEARANCE: dict[int, Appearance] = {
    1: _forehead_lines, 2: _forehead_lines, 4: _glabella_lines, 6: _crows_feet, 7: _lid_bulge,
    9: _nose_wrinkles, 10: partial(_deeper_fold, 0.55), 12: partial(_deeper_fold, 0.8),
    14: _dimples, 15: _corner_folds, 17: _chin_texture, 23: _dark_lip_border, 24: _lip_bulges,
}


def draw_au_appearance(d: Drawn, face: Identity, fields: AUFields,
                       levels: dict[int, float]) -> None:
    """Step 5 of a render: each active AU's wrinkles / furrows inside its own windows."""
    for au, crop, window in fields.looks:
        APPEARANCE[au](d, face, crop, window, levels[au])
