"""sedjax's desed_crnn against DESED_task's own CRNN (desed_task/nnet/CRNN.py), weights moved
by sedjax.interop.desed_task both ways: the same outputs and BatchNorm updates."""

from .conftest import import_desed_task

import_desed_task()  # skips this module without DESED_task, torch or torchaudio

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from desed_task.nnet.CRNN import CRNN  # noqa: E402

from configs import desed_baseline  # noqa: E402
from sedjax import convert  # noqa: E402
from sedjax.interop import desed_task as interop  # noqa: E402
from sedjax import models

TOL = 1e-5
BATCH, FRAMES, MELS = 3, 626, 128  # DESED's 10-s clips: 626 frames of 128 mel bands
EMB_SIZE, EMB_FRAMES = 768, 496  # BEATs frame embeddings as DESED_task feeds them


@pytest.fixture(scope="module")
def net_conf(desed_task_root) -> dict:
    """The `net:` section of DESED_task's confs/default.yaml."""
    torch.set_num_threads(1)
    path = desed_task_root / "recipes" / "dcase2023_task4_baseline" / "confs" / "default.yaml"
    return yaml.safe_load(path.read_text())["net"]


def desed_crnn(net_conf: dict, seed: int, train: bool = False, **overrides):
    """DESED_task's CRNN(**net_conf) with torch's random init of `seed`."""
    torch.manual_seed(seed)
    model = CRNN(**{**net_conf, **overrides})
    model.train(train)  # CRNN.train returns None: not chained
    return model


def numpy_state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def sedjax_model(dropout: float = None):
    """sedjax's desed_crnn of configs/desed_baseline.py (dropout: both rates, when given)."""
    m = desed_baseline.get_config().model
    if dropout is not None:
        m.conv_dropout = m.head_dropout = dropout
    return models.from_config(m, 10)


def features(seed: int) -> np.ndarray:
    """(B, n_mels, T) in [-1, 1], what DESED_task's CRNN reads (its minmax scaler's range)."""
    return np.random.default_rng(seed).uniform(-1, 1, (BATCH, MELS, FRAMES)).astype(np.float32)


def check(what: str, name: str, got, want, tol: float = TOL) -> None:
    d = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    print(f"parity crnn {what}: {name} max|d| = {d:.1e} (tol {tol:.0e})")
    assert d <= tol, f"{what}: {name} differs by {d:.3g} > {tol}"


def torch_outputs(model, x: np.ndarray, embeddings: np.ndarray | None = None):
    """DESED_task's (strong (B, C, T'), weak (B, C)) as numpy."""
    with torch.no_grad():
        emb = None if embeddings is None else torch.from_numpy(embeddings)
        strong, weak = model(torch.from_numpy(x), embeddings=emb)
    return strong.numpy(), weak.numpy()


def compare_eval(what: str, model, variables, x, embeddings=None) -> None:
    """Eval-mode outputs of both: sedjax reads (B, T, F) [+ (B, T_e, D)], returns (B, T', C)."""
    strong, weak = torch_outputs(model, x, embeddings)
    extra = {} if embeddings is None else {"embeddings": jnp.asarray(embeddings.transpose(0, 2, 1))}
    frames, clip = jax.jit(lambda v, x: sedjax_model().apply(v, x, **extra))(
        variables, jnp.asarray(x.transpose(0, 2, 1)))
    assert frames.shape == (BATCH, strong.shape[2], strong.shape[1])
    check(what, "strong", np.asarray(frames).transpose(0, 2, 1), strong)
    check(what, "weak", clip, weak)


def test_desed_task_weights_give_its_outputs(net_conf):
    model = desed_crnn(net_conf, seed=0)
    compare_eval("eval", model, interop.variables_from_state_dict(numpy_state(model)),
                 features(1))


def test_embeddings_model_gives_its_outputs(net_conf):
    """DESED_task's BEATs system: frame embeddings (B, 768, 496), aggregation 'pool1d'."""
    model = desed_crnn(net_conf, seed=2, use_embeddings=True, embedding_size=EMB_SIZE,
                       embedding_type="frame", aggregation_type="pool1d")
    state = numpy_state(model)
    shapes = interop.model_config_from_state_dict(state)
    assert shapes["use_embeddings"] and shapes["embedding_size"] == EMB_SIZE
    emb = np.random.default_rng(3).standard_normal((BATCH, EMB_SIZE, EMB_FRAMES)).astype(
        np.float32)
    variables = interop.variables_from_state_dict(state)
    assert list(interop.state_dict_from_variables(variables)) == list(state)  # DESED's order
    compare_eval("embeddings eval", model, variables, features(4), emb)


def test_training_forward_updates_batch_norm_alike(net_conf):
    """Train mode with dropout 0 in both and DESED's in-model SpecAugment off (both random):
    the same outputs and running means/variances (torch momentum 0.99 on the new batch,
    unbiased running variance) after one forward pass."""
    model = desed_crnn(net_conf, seed=5, train=True, dropout=0.0, specaugm_t_p=0.0,
                       specaugm_f_p=0.0)
    variables = interop.variables_from_state_dict(numpy_state(model))
    x = features(6)
    strong, weak = torch_outputs(model, x)  # updates the module's running statistics
    (frames, clip), updated = jax.jit(lambda v, x: sedjax_model(0.0).apply(
        v, x, train=True, mutable=["batch_stats"]))(variables, jnp.asarray(x.transpose(0, 2, 1)))
    check("train", "strong", np.asarray(frames).transpose(0, 2, 1), strong)
    check("train", "weak", clip, weak)
    got = interop.state_dict_from_variables({"params": variables["params"],
                                             "batch_stats": updated["batch_stats"]})
    want = numpy_state(model)
    for stat in ("running_mean", "running_var"):
        keys = [k for k in want if k.endswith(stat)]
        assert len(keys) == 7
        check("train", f"BatchNorm {stat}", np.concatenate([got[k] for k in keys]),
              np.concatenate([want[k] for k in keys]))


def test_sedjax_weights_load_into_desed_task(net_conf):
    """sedjax's random init (and random running statistics) -> CRNN.load_state_dict(strict)."""
    model = sedjax_model()
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(7), jnp.zeros((1, 16, MELS)),
                                           train=False))()
    leaves, tree = jax.tree_util.tree_flatten(variables["batch_stats"])
    keys = jax.random.split(jax.random.PRNGKey(8), len(leaves))
    variables = {"params": variables["params"], "batch_stats": jax.tree_util.tree_unflatten(
        tree, [jax.random.uniform(k, x.shape, minval=0.5, maxval=1.5)
               for k, x in zip(keys, leaves)])}
    state = interop.state_dict_from_variables(variables)
    torch_model = desed_crnn(net_conf, seed=9)
    assert list(state) == list(torch_model.state_dict())  # the same keys in the same order
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    compare_eval("sedjax -> DESED_task eval", torch_model, variables, features(10))


def test_class_order_is_desed_tasks(desed_task_root):
    from local.classes_dict import classes_labels

    assert list(classes_labels) == list(convert.DESED_CLASSES)
    # sedjax's DESED config lists them in that order too: columns map one to one
    assert list(desed_baseline.get_config().data.classes) == list(classes_labels)
