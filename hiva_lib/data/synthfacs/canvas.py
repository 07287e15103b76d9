"""The canvas of one render and its drawing primitives.

A face is an implicit 2-D drawing: every shape is a signed distance in *face units* (the canvas
is [-1, 1]^2 before the pose), evaluated on whole pixel crops at once. The canvas holds the
pixel grid, the pose (face units <-> pixels), the displacement field of the AUs and their
supports (the ground-truth region masks).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hiva_lib.data.au import ALL_AU_IDS
from hiva_lib.data.synthfacs.subject import Nuisance

AU_INDEX = {a: i for i, a in enumerate(ALL_AU_IDS)}  # AU id -> its support bit / vector index
Crop = tuple[slice, slice]  # (rows, columns) of the pixel grid
FULL: Crop = (slice(None), slice(None))  # the whole grid


def smooth(x: np.ndarray) -> np.ndarray:
    """Smoothstep of x clipped to [0, 1]: 0 -> 0, 1 -> 1 with zero slope at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class Canvas:
    """Pixel grid, pose (face units <-> pixels), the warp and the AU windows of one render."""

    def __init__(self, size: int, nuisance: Nuisance, active: set[int]) -> None:
        self.size, self.active = size, active
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # canvas units
        angle = math.radians(nuisance.angle)
        self.cos, self.sin, self.scale = math.cos(angle), math.sin(angle), nuisance.scale
        self.tx, self.ty = nuisance.shift
        x, y = grid[None, :] - self.tx, grid[:, None] - self.ty
        # face coordinates of each pixel: inverse of rotate(scale(face)) + shift
        self.U = (self.cos * x + self.sin * y) * (1 / self.scale)
        self.V = (-self.sin * x + self.cos * y) * (1 / self.scale)
        self.ppu = size / 2 * self.scale  # pixels per face unit
        self.D = np.zeros((2, size, size), np.float32)  # displacement (face units)
        self.support = np.zeros((size, size), np.uint16)  # bit i: inside AU ALL_AU_IDS[i]

    def box(self, cu: float, cv: float, ru: float, rv: float) -> Crop:
        """Pixel crop holding the face-unit rectangle [cu +- ru] x [cv +- rv] after the pose."""
        # the pose maps a rectangle to a rotated one: its pixel bounding box from centre + extent
        c, si, k = abs(self.cos), abs(self.sin), self.scale
        xc = (self.cos * cu - self.sin * cv) * k + self.tx
        yc = (self.sin * cu + self.cos * cv) * k + self.ty
        ex, ey = (c * ru + si * rv) * k, (si * ru + c * rv) * k
        n, half = self.size, self.size / 2

        def pixels(lo: float, hi: float) -> slice:
            """Pixel slice (1 px of margin each side, clipped) of the canvas interval [lo, hi]."""
            a = int((lo + 1) * half) - 1
            b = int((hi + 1) * half) + 2
            return slice(min(max(a, 0), n), min(max(b, 0), n))

        return pixels(yc - ey, yc + ey), pixels(xc - ex, xc + ex)

    def bump(self, au: int, cu: float, cv: float, a: float, b: float,
             flat: float = 0.5) -> tuple[Crop, np.ndarray | None]:
        """Smooth ellipse window (1 inside r < flat, 0 at r >= 1); marks AU ``au``'s support.

        The window itself is only computed (not None) when the AU is active in this render.
        """
        crop = self.box(cu, cv, a, b)
        r2 = ((self.U[crop] - cu) / a) ** 2 + ((self.V[crop] - cv) / b) ** 2
        self._mark(au, crop, r2 < 1)
        if au not in self.active:
            return crop, None
        return crop, smooth((1 - r2) * (1 / (1 - flat * flat)))

    def rect(self, au: int, cu: float, cv: float, a: float, b: float, fa: float = 0.03,
             fb: float = 0.02) -> tuple[Crop, np.ndarray | None]:
        """Rectangular window |du| < a, |dv| < b with smooth edges fa, fb; marks the support."""
        crop = self.box(cu, cv, a, b)
        du, dv = np.abs(self.U[crop] - cu), np.abs(self.V[crop] - cv)
        self._mark(au, crop, (du < a) & (dv < b))
        if au not in self.active:
            return crop, None
        return crop, smooth((a - du) * (1 / fa)) * smooth((b - dv) * (1 / fb))

    def _mark(self, au: int, crop: Crop, inside: np.ndarray) -> None:
        """Set AU ``au``'s support bit on the pixels of ``crop`` that are ``inside``."""
        part = self.support[crop]
        np.bitwise_or(part, np.uint16(1 << AU_INDEX[au]), out=part, where=inside)

    def push(self, crop: Crop, window: np.ndarray | None, du: float, dv: float) -> None:
        """Add ``(du, dv) * window`` to the displacement field (nothing for an inactive AU)."""
        if window is None:
            return
        if du:
            self.D[0][crop] += du * window
        if dv:
            self.D[1][crop] += dv * window

    def warped(self) -> tuple[np.ndarray, np.ndarray]:
        """Face coordinates sampled at each pixel after the AUs' displacement: q = p - d(p)."""
        return self.U - self.D[0], self.V - self.D[1]

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


def add_to_field(field: np.ndarray, crop: Crop, window: np.ndarray | None, amount) -> None:
    """Add ``amount * window`` to a parameter field (nothing for an inactive AU)."""
    if window is not None:
        field[crop] += amount * window


def cover(sd: np.ndarray, ppu: float) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance (face units, < 0 inside)."""
    return np.clip(0.5 - sd * ppu, 0.0, 1.0)


def paint(img: np.ndarray, crop: Crop, alpha: np.ndarray,
          color: Sequence[float] | np.ndarray) -> None:
    """Blend ``color`` over a crop of the planar (3, H, W) image with coverage ``alpha``."""
    part = img[:, crop[0], crop[1]]
    part += (np.asarray(color, np.float32)[:, None, None] - part) * alpha


def shade(img: np.ndarray, crop: Crop, factor: np.ndarray) -> None:
    """Multiply a crop by (1 - factor): darkening (factor > 0) or highlights (factor < 0)."""
    img[:, crop[0], crop[1]] *= 1.0 - factor


def line(d: np.ndarray, half: float, ppu: float) -> np.ndarray:
    """Coverage of a line at distance ``d`` (face units) with half-thickness ``half``."""
    return np.clip(0.5 - (np.abs(d) - half) * ppu, 0.0, 1.0)
