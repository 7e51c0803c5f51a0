"""The first conv block's conv -> max-pool -> ReLU, computed a few frames at a time.

Why: the first block's conv output (B, T, F, 64 channels: 196 MB for the demo's 24 clips) is
the model's largest tensor, and on a CPU each pass over it goes to main memory: conv, pool and
their gradients took most of the demo's step. Its input has one channel (the log-mel), so a
chunk of `chunk_frames` frames of one clip needs only its own frames plus a (kernel - 1) halo;
computing conv, pool and ReLU chunk by chunk keeps the full-resolution output in cache and
only the pooled output (pool-size times smaller) is written. The gradient recomputes each
chunk's conv instead of storing it (it costs ~1 % of the step's FLOPs) and reduces the kernel
gradient chunk by chunk from the input's 3 x 3 patches (9 values per position, not 64), so
the 196 MB tensor never exists in training either.

The same numbers as `relu(max_pool(conv_same(x, kernel) + bias))` (to float rounding), with
max_pool's gradient of sedjax.models.crnn (ties each get the gradient) and ReLU's (0 at 0).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

# frames per chunk: a chunk's conv output stays in a core's L2 (measurements: docs/speed.md)
DEFAULT_CHUNK_FRAMES = 100


def chunk_frames_for(num_frames: int, time_pool: int, target: int = DEFAULT_CHUNK_FRAMES) -> int:
    """The largest chunk length <= target (or num_frames) that divides num_frames and is a
    multiple of the time pool; num_frames itself (a clip per chunk) when the best is under a
    quarter of target, since many tiny chunks cost more in per-op overhead than they save."""
    for n in range(min(target, num_frames), 0, -1):
        if num_frames % n == 0 and n % time_pool == 0:
            return n if n >= min(target, num_frames) // 4 else num_frames
    return num_frames


def applies(x_shape: Sequence[int], pool: Sequence[int]) -> bool:
    """Whether conv_pool_relu computes this block: one input channel and a pool that tiles the
    (time, frequency) plane (otherwise max_pool drops edges: the unchunked path does that)."""
    _, t, f, cin = x_shape
    return cin == 1 and t % pool[0] == 0 and f % pool[1] == 0


def _windows(x: jax.Array, kh: int, kw: int, tc: int) -> jax.Array:
    """(B, T, F, 1) -> (B * T/tc, tc + kh - 1, F + kw - 1, 1): each chunk of tc frames with
    its 'same'-padding halo, clip by clip then chunk by chunk."""
    b, t, f, _ = x.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    chunks = [xp[:, i * tc:i * tc + tc + kh - 1] for i in range(t // tc)]
    return jnp.stack(chunks, axis=1).reshape(b * (t // tc), tc + kh - 1, f + kw - 1, 1)


def _conv_windows(w: jax.Array, kernel: jax.Array, bias: jax.Array, pool) -> jax.Array:
    """Windows (n, tc + kh - 1, F + kw - 1, 1) -> conv + bias as pool windows
    (n, tc/pt, pt, F/pf, pf, C)."""
    y = jax.lax.conv_general_dilated(w, kernel, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    n, tc, f, c = y.shape
    pt, pf = pool
    return y.reshape(n, tc // pt, pt, f // pf, pf, c)


def valid_patches(xp: jax.Array, kh: int, kw: int) -> jax.Array:
    """(n, H, W) -> (n, H - kh + 1, W - kw + 1, kh * kw): each 'valid' position's kh x kw
    neighbourhood, in the order of a (kh, kw, 1, C) kernel's rows (xp padded by the caller)."""
    h, w = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    return jnp.stack([xp[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)], axis=-1)


def conv_pool_relu(x: jax.Array, kernel: jax.Array, bias: jax.Array, pool: Sequence[int],
                   chunk_frames: int | None = None) -> jax.Array:
    """relu(max_pool(conv(x, kernel, 'SAME') + bias, pool)) for x (B, T, F, 1), kernel
    (kh, kw, 1, C), bias (C,); (B, T/pt, F/pf, C). chunk_frames: frames per chunk (None: the
    default for T); it must divide T and be a multiple of the time pool."""
    pool = (int(pool[0]), int(pool[1]))
    if not applies(x.shape, pool):
        raise ValueError(f"conv_pool_relu: input {x.shape} with pool {pool}: needs one "
                         "channel and a pool dividing (frames, bands)")
    tc = chunk_frames or chunk_frames_for(x.shape[1], pool[0])
    if x.shape[1] % tc or tc % pool[0] or tc < kernel.shape[0] - 1:
        raise ValueError(f"conv_pool_relu: chunk_frames {tc} must divide {x.shape[1]} frames, "
                         f"be a multiple of the time pool {pool[0]} and cover the kernel's "
                         f"halo ({kernel.shape[0] - 1} frames)")
    return _conv_pool_relu(pool, tc, x, kernel, bias)


def _forward(pool, tc, x, kernel, bias):
    b, t, f, _ = x.shape
    kh, kw = kernel.shape[:2]
    windows = _windows(x.astype(kernel.dtype), kh, kw, tc)

    def chunk(w):
        return jax.nn.relu(_conv_windows(w[None], kernel, bias, pool).max(axis=(2, 4)))[0]

    out = jax.lax.map(chunk, windows)  # (B * T/tc, tc/pt, F/pf, C)
    return out.reshape(b, t // pool[0], f // pool[1], kernel.shape[-1])


_conv_pool_relu = jax.custom_vjp(_forward, nondiff_argnums=(0, 1))


def _fwd(pool, tc, x, kernel, bias):
    out = _forward(pool, tc, x.value, kernel.value, bias.value)
    return out, (x.value, kernel.value, bias.value, out, x.perturbed)


def _bwd(pool, tc, res, g):
    x, kernel, bias, out, x_perturbed = res
    b, t, f, _ = x.shape
    kh, kw, _, c = kernel.shape
    pt, pf = pool
    n = b * (t // tc)
    windows = _windows(x.astype(kernel.dtype), kh, kw, tc)
    outs = out.reshape(n, tc // pt, f // pf, c)
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        g = jnp.zeros(out.shape, out.dtype)
    gs = g.reshape(n, tc // pt, f // pf, c)
    w_flat = kernel.reshape(kh * kw, c)

    # each chunk's input patches with a column of ones: one matmul gives the kernel's and
    # the bias's gradient; built for all chunks at once (one pass, not one small op each)
    patches = jnp.concatenate([valid_patches(windows[..., 0], kh, kw).reshape(-1, kh * kw),
                               jnp.ones((n * tc * f, 1), windows.dtype)], axis=1)
    patches = patches.reshape(n, tc * f, kh * kw + 1)

    def chunk(inputs):
        w, p, o, go = inputs
        z = _conv_windows(w[None], kernel, bias, pool)  # recomputed: (1, tc/pt, pt, F/pf, pf, C)
        o = o[None, :, None, :, None, :]
        # the window's max gets the gradient where the ReLU passed it (o > 0)
        dz = jnp.where((z == o) & (o > 0), go[None, :, None, :, None, :],
                       jnp.zeros((), go.dtype)).reshape(tc * f, c)
        dx = None
        if x_perturbed:  # the input's gradient: each patch row gets its kernel row's share
            dp = (dz @ w_flat.T).reshape(tc, f, kh * kw)
            dx = sum(jnp.pad(dp[..., i * kw + j], ((i, kh - 1 - i), (j, kw - 1 - j)))
                     for i in range(kh) for j in range(kw))
        # per-chunk sums (summed below) rather than a scan carry: under shard_map a carry
        # would have to be cast to the device-varying type of the gradient
        return p.T @ dz, dx

    d_params, d_windows = jax.lax.map(chunk, (windows, patches, outs, gs))
    d_params = d_params.sum(0)
    d_kernel, d_bias = d_params[:kh * kw], d_params[kh * kw]
    d_x = jnp.zeros_like(x)
    if x_perturbed:
        d_x = _overlap_add(d_windows.reshape(b, t // tc, tc + kh - 1, f + kw - 1), kh, kw, tc)
        d_x = d_x[..., None].astype(x.dtype)
    return d_x, d_kernel.reshape(kernel.shape).astype(kernel.dtype), d_bias.astype(bias.dtype)


def _overlap_add(d_windows: jax.Array, kh: int, kw: int, tc: int) -> jax.Array:
    """(B, T/tc, tc + kh - 1, F + kw - 1) window gradients -> (B, T, F): window i starts at
    row i * tc of the padded input, so its first tc rows tile the padded input and its last
    kh - 1 rows (the halo, at most tc) add onto the next window's first ones."""
    b, nt, _, fw = d_windows.shape
    halo = kh - 1
    heads = d_windows[:, :, :tc].reshape(b, nt * tc, fw)
    tails = jnp.pad(d_windows[:, :, tc:], ((0, 0), (0, 0), (0, tc - halo), (0, 0)))
    total = (jnp.pad(heads, ((0, 0), (0, tc), (0, 0)))
             + jnp.pad(tails.reshape(b, nt * tc, fw), ((0, 0), (tc, 0), (0, 0))))
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    return total[:, ph:ph + nt * tc, pw:pw + fw - kw + 1]


_conv_pool_relu.defvjp(_fwd, _bwd, symbolic_zeros=True)
