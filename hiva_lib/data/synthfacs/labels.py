"""SynthFACS labels: expression prototypes, the presets that mimic BP4D / DISFA / GFT, the
calibration of AU base rates, and the per-subject intensities, folds and index of a data set.

Frames are drawn from expression prototypes (happiness, sadness, surprise, ...) plus single-AU
activations whose probabilities are calibrated to each preset's target base rates, so AU
co-occurrence is realistic and the label statistics mimic BP4D, DISFA and GFT (docs/synthfacs.md).
A label is positive when the intensity is >= 2 (the DISFA rule, used for every preset).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hiva_lib.data.au import ALL_AU_IDS, dataset_aus
from hiva_lib.data.synthfacs.canvas import AU_INDEX
from hiva_lib.data.synthfacs.subject import sample_identity

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
    test_fraction: float = 0.0  # train_test only: share of subjects in each test fold

    @property
    def au_ids(self) -> tuple[int, ...]:
        """The AUs of the real data set this preset mimics (hiva_lib.data.au)."""
        return dataset_aus(self.name)


SYNTH_PRESETS: dict[str, SynthPreset] = {
    "synth-bp4d": SynthPreset(
        "synth-bp4d", "bp4d", n_subjects=12, frames_per_subject=300, sequences_per_subject=4,
        protocol="3fold", test_folds=(1, 2, 3), real_subjects=41,
        base_rates={1: 0.21, 2: 0.17, 4: 0.20, 6: 0.46, 7: 0.55, 10: 0.59, 12: 0.56, 14: 0.47,
                    15: 0.17, 17: 0.34, 23: 0.17, 24: 0.15},
        rate_source="BP4D-Spontaneous (FERA 2015 train+devel frames), occurrence rates as "
                    "commonly tabulated in the AU literature (approximate)"),
    "synth-disfa": SynthPreset(
        # 12 x 360 (was 9 x 480, same frames): 8 training identities per fold instead of 6 cut
        # the fold-1 Baseline's seed-to-seed std from 2.1 to 0.65 (docs/history.md, 2026-11-29)
        "synth-disfa", "disfa", n_subjects=12, frames_per_subject=360, sequences_per_subject=1,
        protocol="3fold", test_folds=(1, 2, 3), real_subjects=27,
        base_rates={1: 0.06, 2: 0.05, 4: 0.19, 6: 0.08, 9: 0.05, 12: 0.13, 25: 0.27, 26: 0.09},
        rate_source="DISFA, intensity >= 2, all 27 subjects (approximate; estimates from "
                    "published label statistics)"),
    "synth-gft": SynthPreset(
        "synth-gft", "gft", n_subjects=12, frames_per_subject=300, sequences_per_subject=3,
        # three subject-disjoint test folds of 3 subjects (subject_folds); fold 1 is the one
        # test fold of the earlier one-fold design, unchanged
        protocol="train_test", test_folds=(1, 2, 3), real_subjects=96, test_fraction=18 / 96,
        base_rates={1: 0.09, 2: 0.12, 4: 0.07, 6: 0.29, 10: 0.31, 12: 0.29, 14: 0.15,
                    15: 0.12, 23: 0.14, 24: 0.10},
        rate_source="GFT (Girard et al., FG 2017), rough estimates from its reported "
                    "occurrence statistics (approximate)"),
}


def get_preset(name: str) -> SynthPreset:
    """The SynthFACS preset called ``name`` (case-insensitive); a clear error otherwise."""
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
            P[j, AU_INDEX[a]] = pr
    return P


def _draw_active(r: np.random.Generator, mix: np.ndarray, q: np.ndarray, P: np.ndarray,
                 n: int) -> np.ndarray:
    """(n, 15) bool active AUs: a prototype per frame, single AUs, exclusive pairs resolved."""
    proto = r.choice(len(mix), size=n, p=mix / mix.sum())
    K = len(ALL_AU_IDS)
    active = (r.random((n, K)) < P[proto]) | (r.random((n, K)) < q)
    for a, b in EXCLUSIVE:  # keep one of an impossible pair at random
        both = active[:, AU_INDEX[a]] & active[:, AU_INDEX[b]]
        drop = np.where(r.random(n) < 0.5, AU_INDEX[a], AU_INDEX[b])
        active[np.flatnonzero(both), drop[both]] = False
    return active


def _simulate_rates(pi: np.ndarray, q: np.ndarray, P: np.ndarray, n: int = 40000) -> np.ndarray:
    """P(AU active) per AU from n sampled frames (fixed seed; exclusive pairs resolved)."""
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
    idx = np.array([AU_INDEX[a] for a in p.au_ids])
    goal = np.array([p.base_rates[a] for a in p.au_ids])
    target = goal.copy()
    J, K = len(names), len(ALL_AU_IDS)

    def loss(x: np.ndarray) -> tuple[float, np.ndarray]:
        """Relative squared error of the rates plus the costs above, and its gradient."""
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
    cal = Calibration(names, pi, q, {a: float(rates[AU_INDEX[a]]) for a in ALL_AU_IDS})
    _CAL_CACHE[p.name] = cal
    return cal


def _stream_rng(seed: int, preset: str, *keys: int) -> np.random.Generator:
    """The random stream of (seed, preset, keys): independent of every other key tuple."""
    return np.random.default_rng([int(seed), zlib.crc32(preset.encode()), *keys])


def stream_seed(seed: int, preset: str, *keys: int) -> int:
    """An integer seed for (seed, preset, keys): ``(s, 1)`` subject s's identity,
    ``(s, frame, 3)`` a frame's nuisances (as :func:`~.dataset.generate` uses them)."""
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
    r = _stream_rng(seed, p.name, subject, 2)
    mix = np.append(cal.pi, max(1e-6, 1 - cal.pi.sum()))
    mix = r.dirichlet(mix * 30 + 1e-3)
    active = _draw_active(r, mix, cal.q, _prototype_matrix(cal.prototypes), n_frames)
    lam = min(0.9, max(0.1, 0.45 * expressiveness))
    level = 2 + r.binomial(3, lam, size=active.shape)
    trace = r.random(active.shape) < 0.08
    return np.where(active, level, np.where(trace, 1, 0)).astype(np.int64)


def subject_folds(preset: str, n_subjects: int, seed: int = 0) -> np.ndarray:
    """Fold of each subject: 1..3 balanced (3fold); train_test: test folds 1..k of
    ceil(n x test_fraction) subjects each, disjoint, and 0 (train only) for the rest.

    A train_test fold k tests on its subjects and trains on every other subject (as a 3fold
    fold does), so the folds replicate over subjects at the real set's train/test ratio. The
    subjects are taken in one seeded order, fold 1 first: fold 1 holds the subjects that the
    one-fold design (before test folds 2 and 3) tested on, and trains on the same rows."""
    p = get_preset(preset)
    order = _stream_rng(seed, p.name, 7).permutation(n_subjects)
    folds = np.empty(n_subjects, np.int64)
    if p.protocol == "3fold":
        folds[order] = np.arange(n_subjects) % 3 + 1
    else:
        k = len(p.test_folds)
        n_test = min(max(1, math.ceil(n_subjects * p.test_fraction)), n_subjects // k)
        rank = np.arange(n_subjects)
        folds[order] = np.where(rank < k * n_test, rank // n_test + 1, 0)
    return folds


def sample_labels(preset: str, n_subjects: int | None = None,
                  frames_per_subject: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The index of a preset without images: subject, sequence, frame, fold, AU<k>, I<k>.

    ``generate`` renders exactly these rows, so label statistics can be tested cheaply.
    """
    p = get_preset(preset)
    n_sub = p.n_subjects if n_subjects is None else int(n_subjects)
    n_fr = p.frames_per_subject if frames_per_subject is None else int(frames_per_subject)
    least = 3 if p.protocol == "3fold" else max(2, len(p.test_folds))  # a subject per fold
    if n_sub < least or n_fr < 1:
        raise ValueError(f"{p.name}: need at least {least} subjects "
                         f"and 1 frame per subject (got {n_sub} x {n_fr})")
    folds = subject_folds(p.name, n_sub, seed)
    n_seq = max(1, min(p.sequences_per_subject, n_fr))
    parts = []
    for s in range(n_sub):
        idn = sample_identity(stream_seed(seed, p.name, s, 1))
        inten = sample_subject_intensities(p.name, s, n_fr, seed, idn.expressiveness)
        seq = np.arange(n_fr) * n_seq // n_fr
        df = pd.DataFrame({"subject": f"S{s + 1:03d}", "sequence": [f"T{k + 1}" for k in seq],
                           "frame": np.arange(n_fr), "fold": folds[s]})
        for a in p.au_ids:
            df[f"AU{a}"] = (inten[:, AU_INDEX[a]] >= 2).astype(np.int64)
        for a in ALL_AU_IDS:
            df[f"I{a}"] = inten[:, AU_INDEX[a]]
        parts.append(df)
    return pd.concat(parts, ignore_index=True)
