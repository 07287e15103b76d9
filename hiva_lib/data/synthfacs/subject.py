"""A SynthFACS subject (:class:`Identity`: face geometry, colours, resting idiosyncrasies)
and a frame's nuisances (:class:`Nuisance`: pose, light, blur, noise, gaze), each drawn from
an explicit seed; the renderer (:mod:`.face`) and the AU effects (:mod:`.au_effects`) read
them."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
    """Linear mix of two colours: a at t = 0, b at t = 1."""
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore


def sample_identity(seed: int) -> Identity:
    """A random subject; the same seed gives the same subject."""
    r = np.random.default_rng([int(seed), 101])
    u = r.uniform  # the order of the draws below defines every subject: do not reorder
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
