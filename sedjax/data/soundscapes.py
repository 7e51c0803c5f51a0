"""Synthetic domestic soundscapes: one clip's audio and its annotated events.

`render_clip(seed, split_id, index)` mixes a room-tone background with up to three events of
the ten DCASE2018 Task 4 classes (`FAMILIES`: one synthesiser per class, each with its own
spectral and temporal signature) and labels them by the DCASE annotation rules (`_annotate`).
sedjax.data.synthetic writes such clips and their labels in the DCASE2018 or DESED layout; a
change to what is rendered here must bump sedjax.data.synthetic.VERSION (cached datasets are
then regenerated).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import scipy.fft

MIN_EVENT_MS, MERGE_GAP_MS = 250, 150  # DCASE2018 Task 4 annotation rules
Event = tuple[float, float, str]  # (onset s, offset s, label)


# ---- signal helpers (float32, vectorised: the generator must run at tens of clips/s per core) --
def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) / np.float32(sr)


def _unit(x: np.ndarray) -> np.ndarray:
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64))))
    return (x / max(rms, 1e-12)).astype(np.float32)


def _freqs(n: int, sr: int) -> tuple[int, np.ndarray]:
    m = scipy.fft.next_fast_len(n, real=True)
    return m, np.fft.rfftfreq(m, 1.0 / sr).astype(np.float32)


def _shaped_noise(rng, n: int, sr: int, shape: Callable) -> np.ndarray:
    # Built directly in the frequency domain: one inverse FFT instead of noise + forward + inverse.
    m, f = _freqs(n, sr)
    u = rng.random((2, f.size), dtype=np.float32) - 0.5
    return _unit(scipy.fft.irfft((u[0] + 1j * u[1]) * shape(f), m)[:n])


def _filter(x: np.ndarray, sr: int, shape: Callable) -> np.ndarray:
    m, f = _freqs(x.size, sr)
    return scipy.fft.irfft(scipy.fft.rfft(x, m) * shape(f), m)[: x.size].astype(np.float32)


def _band(lo: float, hi: float | None, order: int = 2) -> Callable:
    def shape(f):
        g = np.ones_like(f) if hi is None else 1.0 / np.sqrt(1.0 + np.square(f / hi) ** order)
        return g if not lo else g / np.sqrt(1.0 + np.square(lo / np.maximum(f, 1.0)) ** order)
    return shape


def _peak(f, fc: float, bw: float):
    return 1.0 / (1.0 + ((f - fc) / bw) ** 2)


def _smooth(rng, n: int, sr: int, rate: float, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    # A random curve with ~`rate` knots per second: level/pitch fluctuations.
    # Interpolated on a 32-sample grid and held: 0.7-ms steps are inaudible (speed: docs/speed.md).
    k = int(n / sr * rate) + 2
    coarse = np.interp(np.linspace(0, k - 1, n // 32 + 1), np.arange(k), rng.uniform(lo, hi, k))
    return np.repeat(coarse.astype(np.float32), 32)[:n]


def _fade(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    return np.minimum(np.minimum(i / max(attack * sr, 1), (n - i) / max(release * sr, 1)), 1)


def _phase(cycles_per_sample) -> np.ndarray:
    # Cumulated in float64 and wrapped before float32: a 10-s float32 phase would smear partials.
    c = np.cumsum(cycles_per_sample, dtype=np.float64)
    return (2 * np.pi * (c - np.floor(c))).astype(np.float32)


def _harmonics(phase: np.ndarray, amps) -> np.ndarray:
    # sum_k amps[k-1] * sin(k * phase) by complex recurrence: one cos/sin instead of K sines.
    z = (np.cos(phase) + 1j * np.sin(phase)).astype(np.complex64)
    w, out = z.copy(), np.zeros(phase.size, np.float32)
    for a in amps:
        out += a * w.imag
        w *= z
    return out


def _bursts(rng, n: int, sr: int, length: tuple, gap: tuple):
    """Splits n samples into bursts (barks, syllables) < 150 ms apart: one annotated event."""
    lens, gaps = [], []
    while sum(lens) + sum(gaps) < n:
        lens.append(int(rng.uniform(*length) * sr))
        gaps.append(int(rng.uniform(*gap) * sr))
    lens = np.array(lens)
    starts = np.concatenate([[0], np.cumsum(lens + np.array(gaps))[:-1]])
    seg = np.searchsorted(starts, np.arange(n), side="right") - 1
    tau = (np.arange(n) - starts[seg]).astype(np.float32) / sr  # time into the burst
    dur = (lens[seg] / sr).astype(np.float32)
    return seg, tau, dur, tau < dur


# ---- sound families: f(rng, n, sr) -> n samples; each has its own spectral/temporal signature --
def _alarm(rng, n, sr):
    t, f0, bell = _t(n, sr), rng.uniform(1200, 3200), rng.random() < 0.5
    ratios = (1.0, 2.76, 5.40) if bell else (1.0, 3.0, 5.0)  # bell: inharmonic; beeper: square-ish
    x = sum(a * np.sin(np.float32(2 * np.pi * f0 * r) * t + rng.uniform(0, 6.28))
            for a, r in zip((1.0, rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.4)), ratios)
            if f0 * r < 0.45 * sr)
    period = 1.0 / rng.uniform(3, 16)  # strikes or beeps per second
    ph = (t / np.float32(period)) % 1.0
    if bell:
        env = np.exp(-ph * np.float32(rng.uniform(3, 8)))  # each strike rings and decays
    else:
        duty = rng.uniform(0.3, 0.7)
        env = np.clip(np.minimum(ph, duty - ph) * np.float32(period * 200), 0, 1)  # 5 ms ramps
    return x * env * _fade(n, sr, 0.005, 0.05)


def _blender(rng, n, sr):
    f0 = rng.uniform(60, 180) * (1 + 0.05 * _smooth(rng, n, sr, 3, -1, 1))  # motor load wobble
    c = np.cumsum(f0 / sr)
    saw = (2 * (c - np.floor(c)) - 1).astype(np.float32)  # aliasing is harmless for this purpose
    x = saw + rng.uniform(0.3, 1.0) * 3.46 * (rng.random(n, dtype=np.float32) - 0.5)
    hi, fc = rng.uniform(3000, 8000), rng.uniform(300, 1500)
    x = _filter(x, sr, lambda f: _band(100, hi)(f) * (1 + 3 * _peak(f, fc, 400)))
    chop = 1 - rng.uniform(0.3, 0.7) * _smooth(rng, n, sr, rng.uniform(8, 20))  # blades hit food
    return x * chop * _fade(n, sr, 0.2, 0.3)


def _cat(rng, n, sr):
    u = np.linspace(0, 1, n, dtype=np.float32)
    f0 = np.interp(u, [0, rng.uniform(0.25, 0.6), 1],  # meow: rising then falling pitch
                   [rng.uniform(350, 600), rng.uniform(600, 1000), rng.uniform(300, 550)])
    f0 = f0 * (1 + 0.01 * np.sin(np.float32(2 * np.pi * rng.uniform(5, 8) * n / sr) * u))
    fc, fmax = rng.uniform(1000, 2500), f0.max()
    amps = [k ** -0.5 * (0.3 + _peak(k * f0.mean(), fc, 500)) if k * fmax < 0.45 * sr else 0.0
            for k in range(1, 9)]
    fade = _fade(n, sr, rng.uniform(0.03, 0.1), rng.uniform(0.1, 0.3))
    return _harmonics(_phase(f0 / sr), amps) * fade


def _dishes(rng, n, sr):
    x, m = np.zeros(n, np.float32), int(0.25 * sr)
    tk, kernels = _t(m, sr)[None], []
    for _ in range(2):  # two objects knocking together: high inharmonic fast-decaying partials
        fr = rng.uniform(2500, min(12000, 0.45 * sr), (4, 1)).astype(np.float32)
        tau = rng.uniform(0.01, 0.06, (4, 1)).astype(np.float32)
        k = (np.sin(np.float32(2 * np.pi) * fr * tk) * np.exp(-tk / tau)).sum(0)
        k[: int(0.002 * sr)] += 2 * rng.standard_normal(int(0.002 * sr), dtype=np.float32)  # click
        kernels.append(k)
    pos = 0
    while pos < n:
        k, length = kernels[rng.integers(2)], min(m, n - pos)
        x[pos: pos + length] += rng.uniform(0.3, 1.0) * k[:length]
        pos += int(rng.uniform(0.03, 0.14) * sr)  # < 150 ms apart: one clatter event
    return x * _fade(n, sr, 0.0, 0.02)


def _dog(rng, n, sr):
    seg, tau, dur, inside = _bursts(rng, n, sr, (0.1, 0.35), (0.04, 0.13))
    f0s = rng.uniform(250, 650, seg[-1] + 1)
    f0 = f0s[seg] * (1 - 0.35 * tau / dur)  # pitch falls through each bark
    fc = rng.uniform(600, 1500)
    amps = [k ** -0.3 * (0.2 + _peak(k * f0s.mean(), fc, 400)) for k in range(1, 11)]
    x = _harmonics(_phase(f0 / sr), amps) + 0.5 * 3.46 * (rng.random(n, dtype=np.float32) - 0.5)
    x = _filter(x, sr, _band(150, 4000))  # rough, noisy, low-mid
    return x * inside * (1 - np.exp(-tau / 0.008)) * np.exp(-tau / (0.4 * dur))


def _shaver(rng, n, sr):
    f0 = rng.uniform(80, 250) * (1 + 0.01 * _smooth(rng, n, sr, 2, -1, 1))
    c, duty = np.cumsum(f0 / sr), rng.uniform(0.1, 0.4)
    x = ((c - np.floor(c)) < duty).astype(np.float32) - np.float32(duty)  # pulse train buzz
    x = _filter(x, sr, _band(rng.uniform(800, 2000), rng.uniform(5000, 10000)))  # high comb only
    return x * (1 - rng.uniform(0, 0.4) * _smooth(rng, n, sr, 2)) * _fade(n, sr, 0.1, 0.1)


def _frying(rng, n, sr):
    x = np.float32(rng.uniform(0.05, 0.2)) * (rng.random(n, dtype=np.float32) - 0.5)  # hiss
    k = rng.poisson(rng.uniform(20, 150) * n / sr)  # crackles: sparse heavy-tailed impulses
    np.add.at(x, rng.integers(0, n, k), rng.pareto(2.5, k) * rng.choice([-1, 1], k))
    lo, fc = rng.uniform(2000, 4000), rng.uniform(5000, 12000)
    x = _filter(x, sr, lambda f: _band(lo, None)(f) * (0.5 + _peak(f, fc, 3000)))
    return x * (0.6 + 0.4 * _smooth(rng, n, sr, 1)) * _fade(n, sr, 0.3, 0.3)


def _water(rng, n, sr):
    fc, octaves = rng.uniform(800, 3000), rng.uniform(1, 2.5)
    x = _shaped_noise(rng, n, sr, _band(fc / 2 ** (octaves / 2), fc * 2 ** (octaves / 2)))
    x *= 1 - rng.uniform(0.3, 0.6) * _smooth(rng, n, sr, rng.uniform(5, 15))  # gushing
    m = int(0.03 * sr)
    tk = _t(m, sr)
    for pos in rng.integers(0, max(n - m, 1), rng.poisson(rng.uniform(3, 15) * n / sr)):
        fb = np.float32(2 * np.pi * rng.uniform(600, 3000))  # bubble: short upward chirp
        b = np.sin(fb * tk * (1 + 10 * tk)) * np.exp(-tk / np.float32(0.008))
        x[pos: pos + m] += rng.uniform(1, 3) * b[: n - pos]
    return x * _fade(n, sr, 0.3, 0.3)


def _speech(rng, n, sr):
    seg, tau, dur, inside = _bursts(rng, n, sr, (0.12, 0.3), (0.02, 0.12))  # ~4 Hz syllables
    ns = seg[-1] + 1
    f0s = (rng.uniform(90, 240) * rng.uniform(0.85, 1.15, ns) * np.linspace(1.1, 0.85, ns)
           ).astype(np.float32)  # declination
    f0 = f0s[seg] * (1 + rng.uniform(-0.1, 0.1, ns).astype(np.float32)[seg] * (tau / dur - 0.5))
    formants = np.stack([rng.uniform(300, 850, ns), rng.uniform(850, 2400, ns),
                         rng.uniform(2300, 3200, ns)], 1)[:, None]  # one vowel per syllable
    k = np.arange(1, min(32, int(3500 // f0s.max())) + 1)
    fk = (k * f0s[:, None])[..., None]
    amps = k ** -0.7 * (_peak(fk, formants, [80, 120, 200]) * [1, 0.7, 0.3]).sum(-1)
    env = np.sqrt(np.maximum(np.sin(np.float32(np.pi) * tau / dur), 0)) * inside
    fric = (rng.random(ns) < 0.3)[seg] & (tau < 0.06)  # some syllables start with a fricative
    return (_harmonics(_phase(f0 / sr), amps.T.astype(np.float32)[:, seg]) * env
            + fric * np.float32(0.5) * _shaped_noise(rng, n, sr, _band(3500, 8000)))


def _vacuum(rng, n, sr):
    lo, hi = rng.uniform(60, 150), rng.uniform(1500, 3000)
    x = _shaped_noise(rng, n, sr, _band(lo, hi, 1))
    spin = np.minimum(_t(n, sr) / np.float32(rng.uniform(0.3, 1.0)), 1)  # motor spin-up
    fw = rng.uniform(600, 2500) * (0.6 + 0.4 * spin) * (1 + 0.005 * _smooth(rng, n, sr, 2, -1, 1))
    whine = _harmonics(_phase(fw / sr), [1.0, rng.uniform(0.2, 0.6)])
    return (x * (0.3 + 0.7 * spin) + rng.uniform(0.2, 0.6) * whine) * _fade(n, sr, 0.05, 0.4)


# class -> (synthesiser, event duration range in ms): short and long classes as in DCASE2018
FAMILIES: dict[str, tuple[Callable, tuple[int, int]]] = {
    "Alarm_bell_ringing": (_alarm, (500, 3000)), "Blender": (_blender, (3000, 10000)),
    "Cat": (_cat, (400, 1600)), "Dishes": (_dishes, (300, 2500)), "Dog": (_dog, (300, 2500)),
    "Electric_shaver_toothbrush": (_shaver, (3000, 10000)), "Frying": (_frying, (3000, 10000)),
    "Running_water": (_water, (3000, 10000)), "Speech": (_speech, (500, 3000)),
    "Vacuum_cleaner": (_vacuum, (3000, 10000)),
}
# The classes the generator can render, in FAMILIES' order: the default class list. These are
# the ten DCASE2018 Task 4 classes in the challenge's (alphabetical) order.
CLASSES: tuple[str, ...] = tuple(FAMILIES)


def check_classes(classes: Sequence[str]) -> None:
    """Raises ValueError naming every class in `classes` that the generator cannot render."""
    unknown = [c for c in dict.fromkeys(classes) if c not in FAMILIES]
    if unknown:
        raise ValueError(f"no synthetic renderer for class(es) {', '.join(map(repr, unknown))}; "
                         f"the generator knows {', '.join(FAMILIES)}")


def _background(rng, n: int, sr: int) -> np.ndarray:
    alpha, hi = rng.uniform(1, 2), rng.uniform(4000, 12000)  # pink (1) to brown (2) room tone
    x = _shaped_noise(rng, n, sr, lambda f: np.maximum(f, 20) ** (-alpha / 2) * _band(0, hi, 1)(f))
    mains = 50 if rng.random() < 0.5 else 60
    period = sr // math.gcd(sr, mains)  # the hum repeats exactly: synthesise one period, tile it
    tp = np.arange(period) / sr
    hum = sum(rng.uniform(0.1, 1) * np.sin(2 * np.pi * k * mains * tp + rng.uniform(0, 6.28))
              for k in range(1, 5))
    x = x + 10 ** (rng.uniform(-25, -8) / 20) * _unit(np.resize(hum, n))
    return _unit(x * (1 + 0.2 * _smooth(rng, n, sr, 0.5, -1, 1)))  # slow level drift


def _annotate(raw: list) -> list[Event]:
    """Applies the annotation rules to (onset ms, offset ms, label) triples; returns seconds."""
    out = []
    for label in sorted({r[2] for r in raw}):
        merged: list[list[int]] = []
        for on, off in sorted((r[0], r[1]) for r in raw if r[2] == label):
            if merged and on - merged[-1][1] < MERGE_GAP_MS:
                merged[-1][1] = max(merged[-1][1], off)
            else:
                merged.append([on, off])
        out += [(on / 1000, off / 1000, label) for on, off in merged if off - on >= MIN_EVENT_MS]
    return sorted(out)


def render_clip(seed: int, split_id: int, index: int, sample_rate: int = 44100,
                classes: Sequence[str] = CLASSES, clip_seconds: float = 10.0,
                attempt: int = 0) -> tuple[np.ndarray, list[Event]]:
    """Renders one clip (float32 mono) and its annotated events from (seed, split_id, index).

    `classes`: the labels events are drawn from (default: every class the generator renders);
    ValueError when one has no renderer. attempt > 0: another clip drawn for the same
    (seed, split_id, index), its own random stream (a redraw; attempt 0 is the clip).
    """
    check_classes(classes)
    # attempt 0 keeps the key it always had: the clips written before redraws existed
    key = [seed, split_id, index] + ([attempt] if attempt else [])
    rng, sr = np.random.default_rng(key), sample_rate
    dur = int(round(clip_seconds * 1000))  # all times are integer ms: exact 3-decimal labels
    if rng.random() < 0.05:  # some YouTube clips are shorter
        dur = int(rng.integers(int(0.6 * dur), int(0.99 * dur)))
    n = dur * sr // 1000
    level = 10 ** (rng.uniform(-45, -30) / 20)  # background RMS, dBFS
    x = level * _background(rng, n, sr)
    raw = []
    for _ in range(rng.choice(4, p=[0.1, 0.35, 0.35, 0.2])):  # ~10 % of clips have no event
        label = classes[rng.integers(len(classes))]
        synth, (dmin, dmax) = FAMILIES[label]
        d = min(int(rng.integers(dmin, dmax + 1)), dur)
        # a quarter of the events may run past the clip end and be cut, as in real recordings
        on = int(rng.integers(0, dur - 300 + 1 if rng.random() < 0.25 else dur - d + 1))
        s = _unit(synth(rng, d * sr // 1000, sr))
        a = on * sr // 1000
        b = min(a + s.size, n)
        x[a:b] += np.float32(level * 10 ** (rng.uniform(-5, 15) / 20)) * s[: b - a]  # event SNR
        raw.append((on, min(on + d, dur), label))
    peak = float(np.abs(x).max())
    return (x * np.float32(0.99 / peak) if peak > 0.99 else x), _annotate(raw)
