"""Synthetic domestic soundscapes in the DCASE2018 Task 4 layout, standing in for the real data.

With num_strong > 0 it also writes a strongly labelled training split, "synthetic", where
DCASE2019 Task 4 (DESED) has it: audio/train/synthetic/ and metadata/train/synthetic.csv.
With num_validation > 0 it writes a strongly labelled validation split as DESED ships one:
audio/validation/, metadata/validation/validation.tsv (filename, onset, offset, event_label)
and validation_durations.tsv (filename, duration). Every choice a run makes is made on it.
With layout='desed' it writes DESED's folders and tsv files instead (sedjax.data.dataset.DESED:
weak.tsv, an unlisted unlabel_in_domain folder, synthetic21_train/soundscapes.tsv, the
validation split and the public evaluation set metadata/eval/public.tsv as the test split).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import multiprocessing
import os
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np
import scipy.fft
import soundfile as sf
import tqdm
from absl import logging

# split id: part of each clip's rng seed, so the splits' clips differ; never renumber one
SPLITS = {"weak": 0, "unlabel_in_domain": 1, "test": 2, "synthetic": 3, "validation": 4}
AUDIO_DIRS = {"weak": "audio/train/weak", "unlabel_in_domain": "audio/train/unlabel_in_domain",
              "test": "audio/test", "synthetic": "audio/train/synthetic",
              "validation": "audio/validation"}
METADATA = {"weak": "metadata/train/weak.csv",
            "unlabel_in_domain": "metadata/train/unlabel_in_domain.csv",
            "test": "metadata/test/test.csv", "synthetic": "metadata/train/synthetic.csv",
            "validation": "metadata/validation/validation.tsv"}
DURATIONS = {"validation": "metadata/validation/validation_durations.tsv"}
# DESED's layout (sedjax.data.dataset.DESED); unlabel_in_domain has no list there
DESED_AUDIO_DIRS = {"weak": "audio/train/weak", "unlabel_in_domain": "audio/train/unlabel_in_domain",
                    "test": "audio/eval/public",
                    "synthetic": "audio/train/synthetic21_train/soundscapes",
                    "validation": "audio/validation/validation"}
DESED_METADATA = {"weak": "metadata/train/weak.tsv", "unlabel_in_domain": None,
                  "test": "metadata/eval/public.tsv",
                  "synthetic": "metadata/train/synthetic21_train/soundscapes.tsv",
                  "validation": "metadata/validation/validation.tsv"}
DESED_DURATIONS = {"validation": "metadata/validation/validation_durations.tsv",
                   "test": "metadata/eval/public_durations.tsv"}
LAYOUTS = {"dcase2018": (AUDIO_DIRS, METADATA, DURATIONS),
           "desed": (DESED_AUDIO_DIRS, DESED_METADATA, DESED_DURATIONS)}
_PREFIX = {"weak": "w", "unlabel_in_domain": "u", "test": "t", "synthetic": "s",
           "validation": "v"}
MARKER = ".complete"
VERSION = 1  # bump whenever the generated content changes, so cached datasets are regenerated
MIN_EVENT_MS, MERGE_GAP_MS = 250, 150  # DCASE annotation rules (SEED.md)
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
    # Interpolated on a 32-sample grid and held: 0.7-ms steps are inaudible, 30x cheaper.
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
                classes: Sequence[str] = CLASSES, clip_seconds: float = 10.0
                ) -> tuple[np.ndarray, list[Event]]:
    """Renders one clip (float32 mono) and its annotated events from (seed, split_id, index).

    `classes`: the labels events are drawn from (default: every class the generator renders);
    ValueError when one has no renderer.
    """
    check_classes(classes)
    rng, sr = np.random.default_rng([seed, split_id, index]), sample_rate
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


def _write_clip(job: tuple) -> tuple[str, list[Event], float]:
    out, split, index, seed, sr, classes, clip_seconds, audio_dir = job
    x, events = render_clip(seed, SPLITS[split], index, sr, classes, clip_seconds)
    name = f"Ysyn_{_PREFIX[split]}{index:05d}_0.000_{x.size / sr:.3f}.wav"
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    sf.write(os.path.join(out, audio_dir, name), pcm, sr, subtype="PCM_16")
    return name, events, x.size / sr


def _params(*, num_weak: int, num_unlabeled: int, num_test: int, seed: int, sample_rate: int,
            classes: Sequence[str], clip_seconds: float, num_strong: int = 0,
            num_validation: int = 0, layout: str = "dcase2018") -> str:
    # The generation parameters as the completion marker holds them (JSON). num_strong,
    # num_validation and layout only when not their first value: the markers of datasets
    # written before those existed stay valid.
    extra = {k: v for k, v in (("num_strong", num_strong), ("num_validation", num_validation),
                               ("layout", layout if layout != "dcase2018" else 0)) if v}
    return json.dumps(dict(num_weak=num_weak, num_unlabeled=num_unlabeled, num_test=num_test,
                           **extra, seed=seed, sample_rate=sample_rate, classes=list(classes),
                           clip_seconds=clip_seconds, version=VERSION), indent=1)


def _write_strong_csv(path: pathlib.Path, clips: Sequence[tuple], quiet_rows: bool = True
                      ) -> None:
    """quiet_rows: a clip without events gets one row with empty fields (DCASE2018); False: it
    is left to the durations file (DESED lists events only)."""
    with open(path, "w") as f:
        f.write("filename\tonset\toffset\tevent_label\n")
        for n, ev, _ in clips:
            f.writelines([f"{n}\t{a:.3f}\t{b:.3f}\t{c}\n" for a, b, c in ev]
                         or ([f"{n}\t\t\t\n"] if quiet_rows else []))


def _write_durations(path: pathlib.Path, clips: Sequence[tuple]) -> None:
    """DESED's <split>_durations.tsv: filename, duration in seconds."""
    with open(path, "w") as f:
        f.write("filename\tduration\n")
        f.writelines(f"{n}\t{d:.3f}\n" for n, _, d in clips)


def generate(out_dir: str | os.PathLike, *, num_weak: int, num_unlabeled: int, num_test: int,
             seed: int, sample_rate: int = 44100, classes: Sequence[str] = CLASSES,
             num_workers: int = 0, clip_seconds: float = 10.0, num_strong: int = 0,
             num_validation: int = 0, layout: str = "dcase2018") -> pathlib.Path:
    """Writes a synthetic dataset in the DCASE2018 Task 4 (or DESED) layout to out_dir.

    num_strong > 0 adds that many strongly labelled training clips (split "synthetic", the
    DCASE2019 layout's place), num_validation > 0 a strongly labelled validation split (DESED's
    metadata/validation/); the other splits' files depend on neither (each split draws its
    clips from its own seeds).
    """
    out, classes = pathlib.Path(out_dir).expanduser(), tuple(classes)
    check_classes(classes)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    audio_dirs, metadata, durations = LAYOUTS[layout]
    for name, value in (("num_strong", num_strong), ("num_validation", num_validation)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    for split in ("weak", "synthetic"):
        csv_path = out / metadata[split]
        if csv_path.exists() and any(not line.startswith("Ysyn_")
                                     for line in csv_path.read_text().splitlines()[1:]):
            raise RuntimeError(f"{csv_path} lists real (non-synthetic) clips; "
                               "refusing to overwrite")
    (out / MARKER).unlink(missing_ok=True)  # from here on, an interrupted run never looks complete
    sizes = {"weak": num_weak, "unlabel_in_domain": num_unlabeled, "test": num_test}
    if num_strong:
        sizes["synthetic"] = num_strong
    if num_validation:
        sizes["validation"] = num_validation
    for d in [*(audio_dirs[s] for s in sizes),
              *(str(pathlib.Path(metadata[s]).parent) for s in sizes if metadata[s])]:
        (out / d).mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), s, i, seed, sample_rate, classes, clip_seconds, audio_dirs[s])
            for s, k in sizes.items() for i in range(k)]
    workers = min(num_workers or os.cpu_count() or 1, max(len(jobs), 1))
    t0 = time.time()
    results = []
    with tqdm.tqdm(total=len(jobs), desc="synthetic clips", unit="clip") as bar, \
            contextlib.ExitStack() as stack:
        if workers == 1:
            clips = map(_write_clip, jobs)
        else:  # forking a process that already runs JAX's threads can deadlock: spawn then
            ctx = multiprocessing.get_context("spawn" if "jax" in sys.modules else "fork")
            pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx)
            chunk = max(1, min(16, len(jobs) // (4 * workers)))
            clips = stack.enter_context(pool).map(_write_clip, jobs, chunksize=chunk)
        for r in clips:  # in job order, whatever the workers: deterministic metadata
            results.append(r)
            bar.update()
    by_split, i = {}, 0
    for s, k in sizes.items():
        by_split[s], i = results[i: i + k], i + k
    with open(out / metadata["weak"], "w") as f:
        f.write("filename\tevent_labels\n")
        f.writelines(f"{n}\t{','.join(sorted({e[2] for e in ev}))}\n"
                     for n, ev, _ in by_split["weak"])
    if metadata["unlabel_in_domain"]:  # DESED lists no unlabeled clip: its folder is the list
        with open(out / metadata["unlabel_in_domain"], "w") as f:
            f.writelines(f"{n}\n"
                         for n in ["filename", *(c[0] for c in by_split["unlabel_in_domain"])])
    for split in ("test", "synthetic", "validation"):
        if split not in by_split:  # an earlier generation's split would linger
            (out / metadata[split]).unlink(missing_ok=True)
            if split in durations:
                (out / durations[split]).unlink(missing_ok=True)
            continue
        # DESED's tsv files list events only (a quiet clip is in the durations file)
        _write_strong_csv(out / metadata[split], by_split[split],
                          quiet_rows=layout == "dcase2018" or split not in durations)
        if split in durations:
            _write_durations(out / durations[split], by_split[split])
    for s, d in audio_dirs.items():  # clips of an earlier, larger generation would linger
        keep = {c[0] for c in by_split.get(s, [])}
        for p in (out / d).glob("Ysyn_*.wav"):
            if p.name not in keep:
                p.unlink()
    for split, size in (("synthetic", num_strong), ("validation", num_validation)):
        audio_dir = out / audio_dirs[split]
        if not size and audio_dir.is_dir() and not any(audio_dir.iterdir()):
            audio_dir.rmdir()
    (out / MARKER).write_text(_params(  # last: marks the dataset complete
        num_weak=num_weak, num_unlabeled=num_unlabeled, num_test=num_test, seed=seed,
        sample_rate=sample_rate, classes=classes, clip_seconds=clip_seconds,
        num_strong=num_strong, num_validation=num_validation, layout=layout))
    dt = time.time() - t0
    logging.info("Synthetic dataset: %d clips in %s (%.1f s, %.1f clips/s, %d workers)",
                 len(jobs), out, dt, len(jobs) / max(dt, 1e-9), workers)
    return out


def ensure_dataset(data_config: Any, out_dir: str | os.PathLike) -> pathlib.Path:
    """Returns out_dir holding data_config's synthetic dataset, generating it unless present."""
    s, out = data_config.synthetic, pathlib.Path(out_dir).expanduser()
    kw = dict(num_weak=s.num_weak, num_unlabeled=s.num_unlabeled, num_test=s.num_test, seed=s.seed,
              sample_rate=s.sample_rate, classes=tuple(data_config.classes),
              clip_seconds=float(data_config.get("clip_seconds", 10.0)),
              num_strong=int(s.get("num_strong", 0)),
              num_validation=int(s.get("num_validation", 0)),
              layout=s.get("layout", "dcase2018"))
    marker = out / MARKER
    if marker.exists() and marker.read_text() == _params(**kw):
        logging.info("Reusing the complete synthetic dataset in %s", out)
        return out
    logging.info("Generating the synthetic dataset in %s", out)
    return generate(out, **kw, num_workers=int(s.get("num_workers", 0)))


def main(argv: Sequence[str]) -> None:
    """Command line: writes a synthetic dataset and prints its size and speed."""
    del argv
    f = flags.FLAGS
    t0 = time.time()
    try:
        out = generate(f.out, num_weak=f.num_weak, num_unlabeled=f.num_unlabeled,
                       num_test=f.num_test, seed=f.seed, sample_rate=f.sample_rate,
                       classes=tuple(f.classes), num_workers=f.workers,
                       num_strong=f.num_strong, num_validation=f.num_validation,
                       layout=f.layout)
    except ValueError as e:  # an unknown class or a bad size: one message
        sys.exit(f"error: {e}")
    n = f.num_weak + f.num_unlabeled + f.num_test + f.num_strong + f.num_validation
    dt = time.time() - t0
    strong = f", {f.num_strong} synthetic (strong)" if f.num_strong else ""
    val = f", {f.num_validation} validation" if f.num_validation else ""
    print(f"wrote {f.num_weak} weak, {f.num_unlabeled} unlabel_in_domain{strong}{val}, "
          f"{f.num_test} test clips to {out} in {dt:.1f} s: {n / dt:.1f} clips/s "
          f"({f.workers or os.cpu_count()} workers)")


if __name__ == "__main__":
    from absl import app, flags  # flags only here: importing the module must not define any

    flags.DEFINE_string("out", None, "Output directory.", required=True)
    flags.DEFINE_integer("num_weak", 200, "Weakly labelled training clips.")
    flags.DEFINE_integer("num_unlabeled", 400, "Unlabelled in-domain training clips.")
    flags.DEFINE_integer("num_test", 100, "Strongly labelled test clips.")
    flags.DEFINE_integer("num_strong", 0, "Strongly labelled training clips (split 'synthetic', "
                         "the DCASE2019 layout); 0 = none.")
    flags.DEFINE_integer("num_validation", 0, "Strongly labelled validation clips "
                         "(metadata/validation/validation.tsv, DESED's layout); 0 = none.")
    flags.DEFINE_enum("layout", "dcase2018", list(LAYOUTS), "Folder and metadata layout: "
                      "DCASE2018 Task 4's or DESED's (weak.tsv, eval/public.tsv, ...).")
    flags.DEFINE_integer("seed", 1234, "Random seed.")
    flags.DEFINE_integer("sample_rate", 44100, "Sample rate in Hz.")
    flags.DEFINE_integer("workers", 0, "Worker processes; 0 = all cores.")
    flags.DEFINE_list("classes", list(CLASSES), "Comma-separated classes (default: all ten).")
    app.run(main)
