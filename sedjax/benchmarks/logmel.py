"""The log-mel bench: clips/s of sedjax's jitted jnp frontend against librosa, in one process
and over all cores, on synthetic clips, and how far apart their features are."""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import time
from typing import Callable

import numpy as np

from sedjax.benchmarks import timing
from sedjax.data import features


def synthetic_clips(n: int, sample_rate: int, seconds: float = 10.0, seed: int = 0
                    ) -> list[np.ndarray]:
    """n clips of noise plus three random tones, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    clips = []
    for _ in range(n):
        y = 0.05 * rng.standard_normal(len(t))
        for freq in rng.uniform(100.0, 8000.0, 3):
            y += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.3))
        clips.append(y.astype(np.float32))
    return clips


def logmel_bench(n: int, config, repeats: int, on_rate: Callable | None = None,
                 workers: int | None = None) -> dict:
    """Log-mel clips/s: jitted jnp frontend vs librosa serially and over all cores (or
    `workers` processes); on_rate(key, clips/s) as each is measured."""
    on_rate = on_rate or (lambda key, rate: None)
    sr, size = config.sample_rate, features.buffer_samples(config)
    clips = synthetic_clips(n, sr)
    bs = min(n, config.batch_size)
    chunks = []  # host batches, the last one padded: one compiled shape
    for start in range(0, n, bs):
        waves, lens = np.zeros((bs, size), np.float32), np.full(bs, size, np.int32)
        for j, y in enumerate(clips[start: start + bs]):
            waves[j, : min(len(y), size)], lens[j] = y[:size], len(y)
        chunks.append((waves, lens))
    frontend = features.make_jax_frontend(config)
    outputs = []

    def run_jax(_):
        pending = [frontend(w, l) for w, l in chunks]  # async dispatch, then fetch to host
        outputs[:] = [np.concatenate([np.asarray(p) for p in pending])[:n]]

    jax_rate = timing.rate(run_jax, n, 1, 1, repeats)
    on_rate("jax", jax_rate)
    features.log_mel(clips[0], sr, config)  # warm-up: librosa's first call is slow
    start = time.perf_counter()
    reference = np.stack([features.log_mel(y, sr, config) for y in clips])
    serial_rate = n / (time.perf_counter() - start)
    on_rate("librosa_serial", serial_rate)
    workers = workers or os.cpu_count() or 1
    # spawn, not fork: this process runs JAX's threads
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")
                                     ) as pool:
        warm = clips[:1] * 2 * workers  # starts every worker and imports librosa there
        list(pool.map(features.log_mel, warm, [sr] * len(warm), [config] * len(warm)))
        start = time.perf_counter()
        list(pool.map(features.log_mel, clips, [sr] * n, [config] * n))
        pool_rate = n / (time.perf_counter() - start)
    on_rate("librosa_all_cores", pool_rate)
    return {"clips": n, "batch_size": bs, "workers": workers,
            "clips_per_s": {"jax": jax_rate, "librosa_serial": serial_rate,
                            "librosa_all_cores": pool_rate},
            "max_abs_diff": float(np.abs(outputs[0] - reference).max())}
