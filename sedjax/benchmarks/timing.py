"""How the benches time and count: the median clips/s of a callable, XLA's flops of a compiled
program, the best matmul GFLOP/s and the roofline arithmetic between them."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp


def rate(run: Callable[[int], None], clips_per_call: int, calls: int, warmup: int,
         repeats: int) -> float:
    """Median clips/s of run(calls) over repeats, after run(max(warmup, 1)) (compilation)."""
    run(max(warmup, 1))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(calls)
        times.append(time.perf_counter() - start)
    return clips_per_call * calls / statistics.median(times)


def compiled_flops(compiled) -> float | None:
    """Floating-point operations of one call of a compiled XLA program, from XLA's cost analysis
    (per device for a sharded program; a loop's body, e.g. a scan's, is counted once)."""
    costs = compiled.cost_analysis()
    if isinstance(costs, (list, tuple)):  # older jax: one dict per program
        costs = costs[0] if costs else None
    flops = (costs or {}).get("flops")
    return None if flops is None or flops < 0 else float(flops)


def matmul_gflops(n: int, dtype: str = "float32", min_seconds: float = 0.2,
                  repeats: int = 3) -> float:
    """Best GFLOP/s of a jitted n x n x n matmul on the default device (2 n^3 flops a call),
    over `repeats` timings of as many calls as take about min_seconds."""
    keys = jax.random.split(jax.random.PRNGKey(0))
    a, b = (jax.random.normal(k, (n, n), jnp.dtype(dtype)) for k in keys)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    start = time.perf_counter()
    f(a, b).block_until_ready()
    calls = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = [f(a, b) for _ in range(calls)]
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / calls)
    return 2.0 * n ** 3 / best / 1e9


def roofline(train: dict, matmul: dict) -> dict:
    """The train step's achieved GFLOP/s per device (XLA's flops / measured step time) beside
    the best matmul GFLOP/s ({n: GFLOP/s}) and their ratio."""
    flops = train["flops_per_step_per_device"]
    achieved = None if flops is None else flops / train["seconds_per_step"] / 1e9
    peak = max(matmul.values()) if matmul else None
    return {"train_step_flops_per_device": flops, "seconds_per_step": train["seconds_per_step"],
            "train_step_gflops_per_device": achieved, "matmul_gflops": matmul,
            "peak_matmul_gflops": peak,
            "ratio": None if achieved is None or not peak else achieved / peak,
            "flops_source": "XLA cost_analysis of the compiled step (scan bodies counted once)"}
