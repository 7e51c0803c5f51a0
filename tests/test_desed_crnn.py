"""The DESED_task baseline CRNN (sedjax/models/desed_crnn.py) against DESED_task's shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import desed_baseline
from sedjax import models
from sedjax.models import desed_crnn, time_grid


def desed_task_param_count(embedding_size: int = 0) -> int:
    """Trainable parameters of DESED_task's CRNN (desed_task/nnet/{CNN,RNN,CRNN}.py with
    confs/default.yaml), counted from the PyTorch layers' shapes."""
    filters, n = [1, 16, 32, 64, 128, 128, 128, 128], 0
    for cin, cout in zip(filters[:-1], filters[1:]):
        n += cin * cout * 3 * 3 + cout  # Conv2d(cin, cout, 3, padding=1), bias
        n += 2 * cout  # BatchNorm2d weight, bias
        n += cout * cout + cout  # GLU: nn.Linear(cout, cout)
    if embedding_size:
        n += (128 + embedding_size) * 128 + 128  # cat_tf: Linear(nb_in + emb, nb_in)
    for d_in in (128, 256):  # nn.GRU(128, 128, num_layers=2, bidirectional=True)
        n += 2 * (3 * 128 * d_in + 3 * 128 * 128 + 3 * 128 + 3 * 128)  # W_ih, W_hh, b_ih, b_hh
    n += 2 * (256 * 10 + 10)  # dense, dense_softmax
    return n


@pytest.fixture(scope="module")
def model_config():
    return desed_baseline.get_config().model


def test_parameter_count_equals_desed_task(model_config):
    model = models.from_config(model_config, 10)
    assert isinstance(model, desed_crnn.DesedCRNN)
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 626, 128)), train=False)
    assert models.count_params(v["params"]) == desed_task_param_count() == 1_112_420
    # BatchNorm running mean and variance of 16 + 32 + 64 + 4 * 128 channels
    assert models.count_params(v["batch_stats"]) == 1248
    emb = jnp.zeros((1, 496, 768))  # BEATs frame embeddings, pool1d
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 626, 128)), train=False, embeddings=emb)
    assert models.count_params(v["params"]) == desed_task_param_count(768) == 1_227_236


def test_output_rate_and_clip_within_frames(model_config):
    model = models.from_config(model_config, 10)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 626, 128))
    v = model.init(jax.random.PRNGKey(0), x[:1], train=False)
    frames, clip = model.apply(v, x)
    assert frames.shape == (3, 156, 10) and clip.shape == (3, 10)  # 626 -> 313 -> 156
    assert time_grid.output_frames(626, model_config) == 156
    # attention pooling is a weighted mean of the frames: inside their range, not their mean
    assert (clip >= frames.min(1) - 1e-6).all() and (clip <= frames.max(1) + 1e-6).all()


def _torch_gru(x, wi, bi, wh, bh, reverse):
    """PyTorch's GRU equations in numpy (gates r, z, n; n = tanh(W_in x + b_in + r (W_hn h +
    b_hn)); h' = (1 - z) n + z h)."""
    b, t, _ = x.shape
    units = wh.shape[0]
    h = np.zeros((b, units))
    out = np.zeros((b, t, units))
    for i in (range(t - 1, -1, -1) if reverse else range(t)):
        gx, gh = x[:, i] @ wi + bi, h @ wh + bh
        r = 1 / (1 + np.exp(-(gx[:, :units] + gh[:, :units])))
        z = 1 / (1 + np.exp(-(gx[:, units:2 * units] + gh[:, units:2 * units])))
        n = np.tanh(gx[:, 2 * units:] + r * gh[:, 2 * units:])
        h = (1 - z) * n + z * h
        out[:, i] = h
    return out


@pytest.mark.parametrize("reverse", [False, True])
def test_gru_follows_pytorch_equations(reverse):
    gru = desed_crnn.TorchGRU(5, reverse=reverse)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 3))
    v = gru.init(jax.random.PRNGKey(3), x)
    p = jax.tree_util.tree_map(np.asarray, v["params"])
    want = _torch_gru(np.asarray(x, np.float64), p["input_kernel"], p["input_bias"],
                      p["step"]["hidden_kernel"], p["step"]["hidden_bias"], reverse)
    np.testing.assert_allclose(gru.apply(v, x), want, atol=1e-5)


def test_adaptive_average_pool_matches_pytorch_windows():
    m = desed_crnn.adaptive_avg_pool_matrix(496, 156)
    np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)
    # PyTorch: output i averages inputs floor(i * 496 / 156) .. ceil((i + 1) * 496 / 156) - 1
    assert np.flatnonzero(m[0]).tolist() == [0, 1, 2, 3]
    assert np.flatnonzero(m[1]).tolist() == [3, 4, 5, 6]
    assert np.flatnonzero(m[155]).tolist() == [492, 493, 494, 495]
    x = np.arange(496, dtype=np.float32)
    np.testing.assert_allclose(m @ x, [x[(i * 496) // 156: -(-((i + 1) * 496) // 156)].mean()
                                       for i in range(156)], rtol=1e-6)


def test_batch_norm_update_is_desed_tasks(model_config):
    """torch momentum 0.99 = the new batch's weight: running <- 0.01 running + 0.99 batch."""
    model = models.from_config(model_config, 10)
    x = 3.0 + jax.random.normal(jax.random.PRNGKey(4), (2, 626, 128))
    v = model.init(jax.random.PRNGKey(0), x[:1], train=False)
    _, upd = model.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(5)},
                         mutable=["batch_stats"])
    mean = np.asarray(upd["batch_stats"]["GatedConvBlock_0"]["BatchNorm_0"]["mean"])
    conv = v["params"]["GatedConvBlock_0"]["Im2ColConv_0" if "Im2ColConv_0" in
                                           v["params"]["GatedConvBlock_0"] else "Conv_0"]
    k, b = np.asarray(conv["kernel"]), np.asarray(conv["bias"])
    # the conv output's batch mean (a 3x3 'same' conv of a constant-mean input, away from
    # the borders), of which the running mean must hold 99 %
    xs = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1)))
    y = sum(xs[:, i:i + 626, j:j + 128, None] * k[i, j, 0] for i in range(3) for j in range(3))
    batch_mean = (y + b).mean((0, 1, 2))
    np.testing.assert_allclose(mean, 0.99 * batch_mean, rtol=2e-3, atol=1e-4)
