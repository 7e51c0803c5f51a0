"""sedjax's mean-teacher step (configs/desed_baseline.py's settings) is DESED_task's training step.

DESED_task's side is its own code, driven as Lightning 1.9.5's automatic optimization drives
it (pytorch_lightning/loops/optimization/optimizer_loop.py, Closure.closure, and
loops/epoch/training_epoch_loop.py): optimizer.step(closure) where the closure runs
SEDTask4.training_step, then on_before_zero_grad (SEDTask4's EMA update of the teacher, so
*before* the update), zero_grad and backward; after the update, lr_scheduler_step
(ExponentialWarmup.step, every step: interval 'step'). SEDTask4, its CRNN, Adam and
ExponentialWarmup are built as train_sed.py builds them, from confs/default.yaml with a tiny
batch (2 strong + 2 weak + 4 unlabeled clips of 2 s), mixup off, and the CRNN's random parts
off (dropout 0, its in-model SpecAugment p = 0: see test_desed_task_masks_features_in_the_crnn).
Its batches come from its own datasets (StronglyAnnotatedSet, WeakSet, UnlabeledSet: audio
padded to 2 s, labels by its ManyHotEncoder) and its training_step computes the features.

sedjax's side: mean_teacher.train_step from the same initial weights (DESED_task's CRNN init,
moved by sedjax.interop.desed_task), the features of the same files from sedjax's frontend
(tests/parity/test_features.py: within 1e-4 of DESED_task's), DESED_task's frame targets.
"""

from __future__ import annotations

from .conftest import import_desed_task

import_desed_task()  # skips this module without DESED_task, torch or torchaudio

import copy  # noqa: E402
import functools  # noqa: E402
import pathlib  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from desed_task.data_augm import mixup as desed_mixup  # noqa: E402
from desed_task.dataio.datasets import StronglyAnnotatedSet, UnlabeledSet, WeakSet  # noqa: E402
from desed_task.nnet.CRNN import CRNN  # noqa: E402
from desed_task.utils.encoder import ManyHotEncoder  # noqa: E402
from desed_task.utils.schedulers import ExponentialWarmup  # noqa: E402
from local.classes_dict import classes_labels  # noqa: E402
from local.sed_trainer import SEDTask4  # noqa: E402

from configs import desed_baseline  # noqa: E402
from sedjax.data import dataset, features, soundscapes  # noqa: E402
from sedjax.interop import desed_task as interop  # noqa: E402
from sedjax.recipes import mean_teacher as mt  # noqa: E402
from sedjax.system import sharding  # noqa: E402
from sedjax.train import parallel  # noqa: E402

STEPS = 20
RAMPUP = 10  # steps of both ramps (DESED_task: n_epochs_warmup * epoch_len)
SECONDS = 2  # audio_max_len: 126 feature frames, 31 output frames (the encoder's count too)
N_STRONG, N_WEAK, N_UNLABELED = 2, 2, 4
LOSS_RTOL = 1e-4
CLASSES = list(classes_labels)


# ------------------------------------------------------------------------------ the data
def _full_clip(seed: int, split: int, start: int):
    """A generated clip of exactly SECONDS s (the generator cuts some clips short) and its
    events, from the first index at or after `start` that gives one."""
    i = start
    while True:
        y, events = soundscapes.render_clip(seed, split, i, 16000, clip_seconds=SECONDS)
        if len(y) == SECONDS * 16000:
            return y, events
        i += 1000


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Folders of 16 kHz wav files and DESED_task's metadata frames: 6 strong, 6 weak and 12
    unlabeled clips (drawn in turn: each batch of 20 steps a different mix)."""
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for kind, split, n in (("strong", 1, 6), ("weak", 2, 6), ("unlabeled", 3, 12)):
        (root / kind).mkdir()
        rows = []
        for i in range(n):
            y, events = _full_clip(11, split, i)
            name = f"{kind}{i:02d}.wav"
            soundfile.write(root / kind / name, y, 16000, subtype="FLOAT")
            rows.append((name, events))
        out[kind] = rows
    strong_df = pd.DataFrame([{"filename": f, "onset": on, "offset": off, "event_label": lab}
                              for f, ev in out["strong"] for on, off, lab in ev]
                             + [{"filename": f, "onset": np.nan, "offset": np.nan,
                                 "event_label": np.nan} for f, ev in out["strong"] if not ev])
    weak_df = pd.DataFrame([{"filename": f, "event_labels": ",".join(sorted({e[2] for e in ev}))}
                            for f, ev in out["weak"]])
    return root, out, strong_df, weak_df


@pytest.fixture(scope="module")
def hparams(desed_task_root) -> dict:
    """confs/default.yaml with the tiny batch, 2-s clips and mixup off."""
    path = desed_task_root / "recipes" / "dcase2023_task4_baseline" / "confs" / "default.yaml"
    hp = yaml.safe_load(path.read_text())
    hp["training"]["batch_size"] = [N_STRONG, N_WEAK, N_UNLABELED]
    hp["training"]["mixup"] = None  # training_step: `if mixup_type is not None and ...`
    hp["data"]["audio_max_len"] = SECONDS
    hp["net"]["dropout"] = 0.0
    return hp


def make_encoder(hp) -> ManyHotEncoder:
    """train_sed.py's encoder."""
    return ManyHotEncoder(CLASSES, audio_len=hp["data"]["audio_max_len"],
                          frame_len=hp["feats"]["n_filters"], frame_hop=hp["feats"]["hop_length"],
                          net_pooling=hp["data"]["net_subsample"], fs=hp["data"]["fs"])


def desed_batches(clips, hp, encoder):
    """STEPS batches [strong, weak, unlabeled] as DESED_task's datasets and the default collate
    give them, and the file of every row (for sedjax's features)."""
    root, _, strong_df, weak_df = clips
    sets = [StronglyAnnotatedSet(str(root / "strong"), strong_df, encoder, pad_to=SECONDS),
            WeakSet(str(root / "weak"), weak_df, encoder, pad_to=SECONDS),
            UnlabeledSet(str(root / "unlabeled"), encoder, pad_to=SECONDS)]
    names = [[pathlib.Path(s.examples[k]["mixture"] if isinstance(s.examples, dict) else k)
              for k in (s.examples_list if hasattr(s, "examples_list") else s.examples)]
             for s in sets]
    batches, files = [], []
    for step in range(STEPS):
        rows, paths = [], []
        for s, n, part in zip(sets, (N_STRONG, N_WEAK, N_UNLABELED), names):
            for j in range(n):
                k = (step * n + j) % len(s)
                rows.append(s[k])
                paths.append(part[k])
        batches.append(torch.utils.data.default_collate(rows))
        files.append(paths)
    return batches, files


# ------------------------------------------------------------------------------ DESED_task
def desed_module(hp, encoder, adam_eps: float, seed: int = 0):
    """(SEDTask4, Adam, ExponentialWarmup) as train_sed.py builds them (Adam's eps: its
    default 1e-8 there)."""
    torch.manual_seed(seed)
    student = CRNN(**hp["net"], specaugm_t_p=0.0, specaugm_f_p=0.0)
    opt = torch.optim.Adam(student.parameters(), hp["opt"]["lr"], betas=(0.9, 0.999),
                           eps=adam_eps)
    scheduler = {"scheduler": ExponentialWarmup(opt, hp["opt"]["lr"], RAMPUP), "interval": "step"}
    sed = SEDTask4(hp, encoder=encoder, sed_student=student, opt=opt, scheduler=scheduler)
    return sed, opt, scheduler


def run_desed(sed, opt, scheduler, batches) -> list[dict]:
    """Lightning 1.9.5's automatic optimization, batch by batch; what SEDTask4 logs per step."""
    logged: list[dict] = []
    sed.log = lambda name, value, **kw: logged[-1].__setitem__(
        name, float(value.detach() if torch.is_tensor(value) else value))
    sed.train()  # Lightning's fit: the module (student and teacher) in train mode
    for k, batch in enumerate(batches):
        logged.append({"lr": opt.param_groups[0]["lr"]})

        def closure():
            loss = sed.training_step(batch, k)
            logged[-1]["loss"] = float(loss)
            sed.on_before_zero_grad(opt)  # zero_grad_fn: the hook, then zero_grad
            opt.zero_grad()
            loss.backward()
            return loss

        opt.step(closure)
        sed.lr_scheduler_step(scheduler["scheduler"], 0, None)  # interval 'step'
    return logged


def torch_state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------ sedjax
def sedjax_config(adam_eps: float):
    """configs/desed_baseline.py with the test's batch, clip length, ramps and no randomness."""
    c = desed_baseline.get_config()
    c.mean_teacher.adam_eps = adam_eps
    c.features.num_frames = 1 + SECONDS * 16000 // 256
    c.model.conv_dropout = c.model.head_dropout = 0.0
    m = c.mean_teacher
    m.batch_strong, m.batch_weak, m.batch_unlabeled = N_STRONG, N_WEAK, N_UNLABELED
    m.consistency_rampup = m.learning_rate_rampup = RAMPUP / STEPS
    # DESED_task's side: mixup None, the CRNN's SpecAugment p = 0 (desed_module)
    m.augment.mixup_share, m.augment.time_mask, m.augment.freq_mask = 0.0, 0, 0
    m.augment.mask_teacher = False
    return c


def sedjax_features(files, config, cache) -> dict:
    """{path: (features (T, F), valid frames)} of every file, from sedjax's feature cache."""
    paths = sorted({p for batch in files for p in batch})
    feats, frames, errors = features.extract_split("clips", paths, [p.name for p in paths],
                                                   config.features, cache, 0, 1)
    assert not errors
    return {p: (np.array(feats[i]), int(frames[i])) for i, p in enumerate(paths)}


def sedjax_batch(paths, batch, feats) -> dict:
    """sedjax's step input for one DESED_task batch: sedjax's features of the same files
    (`feats`), DESED_task's clip and frame targets."""
    _, labels, _, _ = batch
    frames = np.array([feats[p][1] for p in paths], np.int32)
    feats = np.stack([feats[p][0] for p in paths])
    kind = np.array([mt.STRONG] * N_STRONG + [mt.WEAK] * N_WEAK + [mt.UNLABELED] * N_UNLABELED,
                    np.int32)
    labels = labels.numpy()  # (B, C, T'): strong frames; a weak clip's labels in frame 0
    weak = (labels.sum(-1) > 0).astype(np.float32) * (kind == mt.WEAK)[:, None]
    strong = (labels.transpose(0, 2, 1) * (kind == mt.STRONG)[:, None, None]).astype(np.uint8)
    return {"features": feats, "frames": frames, "labels": weak,
            "kind": kind, "strong": strong}


def sedjax_state(config, variables, mesh):
    """mean_teacher.init_state (its optimizer and ramp) holding DESED_task's initial weights."""
    small = config.copy_and_resolve_references()
    small.features.num_frames = 8  # the same variables, initialized faster
    state = mt.init_state(small, rampup_steps=int(round(config.mean_teacher.learning_rate_rampup
                                                        * STEPS)))
    params, stats = variables["params"], variables["batch_stats"]
    state = state.replace(params=params, batch_stats=stats, opt_state=state.tx.init(params),
                          ema_params=copy.deepcopy(params), ema_batch_stats=copy.deepcopy(stats))
    return sharding.replicate(state, mesh)


def run_sedjax(config, state, batches, mesh) -> tuple[list[dict], object]:
    settings = mt.step_settings(config, STEPS)
    assert settings.rampup_steps == RAMPUP and settings.desed_task_timing
    step = parallel.train_step_fn(functools.partial(mt.train_step, settings=settings), mesh,
                                  resident=False)
    n = config.features.n_mels
    stats = sharding.replicate((np.zeros(n, np.float32), np.ones(n, np.float32)), mesh)
    out = []
    for b in batches:
        state, sums = step(state, stats, sharding.shard_batch(b, mesh))
        sums = jax.device_get(sums)
        out.append({k[:-4]: float(v / sums["count"]) for k, v in sums.items() if k != "count"})
    return out, jax.device_get(state)


# ------------------------------------------------------------------------------ the test
def _pre_norm(key: str) -> str | None:
    """For cnn.cnn.conv{i}.bias and cnn.cnn.batchnorm{i}.running_mean: the block's i."""
    for kind in ("conv", "batchnorm"):
        head = f"cnn.cnn.{kind}"
        if key.startswith(head) and key.endswith((".bias" if kind == "conv" else ".running_mean")):
            return key[len(head):].split(".")[0]
    return None


def weights_report(name: str, got: dict, want: dict, tol: float, bias_tol) -> tuple[float, float]:
    """(max |d| over every tensor of a state dict but those below, max |d| of those): the
    tensor that has it printed; num_batches_tracked (unused by DESED's fixed momentum) left out.

    A conv bias followed by BatchNorm in train mode gets a zero gradient in exact arithmetic
    (the normalization removes it): both sides' gradients are float noise, which Adam scales up
    to about +-lr per step, and the BatchNorm's running mean follows the bias: these two are
    measured on their own (and the eval-mode outputs they feed compared by the caller)."""
    keys = [k for k in want if not k.endswith("num_batches_tracked")]
    assert sorted(keys) == sorted(k for k in got if not k.endswith("num_batches_tracked"))
    worst, noise = (0.0, ""), (0.0, "")
    for k in keys:
        d = (float(np.abs(np.asarray(got[k], np.float64) - want[k]).max()), k)
        if _pre_norm(k) is not None:
            noise = max(noise, d)
        else:
            worst = max(worst, d)
    bias = (f"tol {bias_tol:.0e}" if bias_tol else "measured: Adam scales their float-noise "
            "gradients up")
    print(f"\nparity train step {name} weights after {STEPS} steps: max|d| = {worst[0]:.1e} "
          f"({worst[1]}) (tol {tol:.0e}); conv biases before BatchNorm and their running "
          f"means: max|d| = {noise[0]:.1e} ({noise[1]}; {bias})", end="")
    return worst[0], noise[0]


def eval_outputs_report(name, torch_model, variables, config, x: np.ndarray, tol) -> float:
    """max |d| of the eval-mode frame and clip probabilities of both models on features x."""
    from sedjax import models

    torch_model.eval()
    with torch.no_grad():
        strong, weak = torch_model(torch.from_numpy(x.transpose(0, 2, 1)))
    model = models.from_config(config.model, len(config.data.classes))
    frames, clip = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    d = max(float(np.abs(np.asarray(frames).transpose(0, 2, 1) - strong.numpy()).max()),
            float(np.abs(np.asarray(clip) - weak.numpy()).max()))
    print(f"\nparity train step {name} eval-mode outputs after {STEPS} steps: max|d| = {d:.1e} "
          f"(tol {tol:.0e})", end="")
    return d


# DESED_task's Adam eps (1e-8): float noise in the tiny gradients of some weights (the conv
# biases before BatchNorm get exactly zero in exact arithmetic) is scaled up by Adam to ~lr per
# step, so those weights drift apart by float noise; eps 1e-4 on both sides (a changed constant,
# the same step) keeps Adam from amplifying noise: then every weight must agree.
# (adam eps, weights tol, conv biases before BatchNorm tol, eval-mode outputs tol)
# measured (2-core CPU): eps 1e-8: weights 1.5e-4, biases 1.1e-2, outputs 3.4e-3; eps 1e-4:
# weights 2.1e-5, biases 7.0e-5, outputs 6.6e-5
CASES = {"desed_tasks_adam": (1e-8, 5e-4, None, 1e-2), "adam_eps_1e-4": (1e-4, 5e-5, 2e-4, 2e-4)}


@pytest.mark.parametrize("case", list(CASES))
def test_twenty_steps_give_desed_tasks_losses_and_weights(clips, hparams, tmp_path, case):
    adam_eps, weight_tol, bias_tol, output_tol = CASES[case]
    torch.set_num_threads(1)
    encoder = make_encoder(hparams)
    assert encoder.n_frames == 31
    batches, files = desed_batches(clips, hparams, encoder)
    sed, opt, scheduler = desed_module(hparams, encoder, adam_eps)
    variables = interop.variables_from_state_dict(torch_state(sed.sed_student))
    assert all((a == b).all() for a, b in zip(torch_state(sed.sed_student).values(),
                                               torch_state(sed.sed_teacher).values()))

    config = sedjax_config(adam_eps)
    mesh = sharding.make_mesh(jax.devices()[:1])
    feats = sedjax_features(files, config, tmp_path)
    inputs = [sedjax_batch(p, b, feats) for p, b in zip(files, batches)]
    got, state = run_sedjax(config, sedjax_state(config, variables, mesh), inputs, mesh)
    want = run_desed(sed, opt, scheduler, batches)

    worst = 0.0
    for k, (g, w) in enumerate(zip(got, want), 1):
        pairs = {"loss": (g["loss"], w["loss"]),
                 "weak": (g["weak"], w["train/student/loss_weak"]),
                 "strong": (g["strong"], w["train/student/loss_strong"]),
                 "consistency": (g["consistency"], w["train/student/weak_self_sup_loss"]
                                 + w["train/student/strong_self_sup_loss"]),
                 "weight": (g["consistency_weight"], w["train/weight"])}
        line = []
        for name, (a, b) in pairs.items():
            rel = abs(a - b) / max(abs(b), 1e-12)
            # step 1: student == teacher, the consistency is float noise around 0 on both
            if name == "consistency" and k == 1:
                assert abs(a) < 1e-10 and abs(b) < 1e-10
                line.append(f"{name} {a:.1e} vs {b:.1e}")
                continue
            worst = max(worst, rel)
            line.append(f"{name} {b:.6g} rel {rel:.1e}")
        print(f"\nparity train step {k:2d} (lr {w['lr']:.2e}): " + ", ".join(line), end="")
    print(f"\nparity train step losses, all {STEPS} steps: max relative |d| = {worst:.1e} "
          f"(tol {LOSS_RTOL:.0e})", end="")

    student = interop.state_dict_from_variables({"params": state.params,
                                                 "batch_stats": state.batch_stats})
    teacher = interop.state_dict_from_variables({"params": state.ema_params,
                                                 "batch_stats": state.ema_batch_stats})
    print(f"\nparity train step [{case}, Adam eps {adam_eps:.0e}]", end="")
    d_student, n_student = weights_report("student", student, torch_state(sed.sed_student),
                                          weight_tol, bias_tol)
    d_teacher, n_teacher = weights_report("teacher", teacher, torch_state(sed.sed_teacher),
                                          weight_tol, bias_tol)
    x = inputs[-1]["features"]
    o_student = eval_outputs_report("student", sed.sed_student,
                                    {"params": state.params, "batch_stats": state.batch_stats},
                                    config, x, output_tol)
    o_teacher = eval_outputs_report("teacher", sed.sed_teacher,
                                    {"params": state.ema_params,
                                     "batch_stats": state.ema_batch_stats}, config, x,
                                    output_tol)
    assert worst <= LOSS_RTOL
    assert d_student <= weight_tol and d_teacher <= weight_tol
    assert o_student <= output_tol and o_teacher <= output_tol
    # each side's noise-driven bias moves at most ~lr per step
    assert max(n_student, n_teacher) <= (bias_tol or 2 * sum(w["lr"] for w in want))
    # the first update ran at the full rate (ExponentialWarmup sets it after that update)
    assert want[0]["lr"] == hparams["opt"]["lr"] and want[1]["lr"] < 1e-4


# ------------------------------------------------------------------------------ measured
def test_frame_targets_desed_task_rule_is_its_encoders(hparams):
    """data.frame_labels 'desed_task' gives ManyHotEncoder.encode_strong_df's targets frame for
    frame (after StronglyAnnotatedSet's process_labels, 10-s clips); sedjax's 'cover_half'
    (frames an event covers by half) is measured against them."""
    from desed_task.dataio.datasets import process_labels

    hp = copy.deepcopy(hparams)
    hp["data"]["audio_max_len"] = 10
    encoder = make_encoder(hp)
    config = desed_baseline.get_config()
    t_out, rate = encoder.n_frames, (16000, 256, 4)
    assert t_out == 156 and config.data.frame_labels == "desed_task"
    clips = [soundscapes.render_clip(5, 7, i, 8000)[1] for i in range(60)]
    # events on frame boundaries (0.064 s), half frames, and past the clip's end
    clips.append([(0.064 * k, 0.064 * k + 0.032 * (k % 5 + 1), CLASSES[k % 10])
                  for k in range(150)])
    clips.append([(0.0, 10.0, "Speech"), (9.9, 11.0, "Dog"), (0.001, 0.002, "Cat")])
    want = []
    for events in clips:
        df = pd.DataFrame(events, columns=["onset", "offset", "event_label"])
        df = process_labels(df, 0.0, 10.0) if len(df) else df
        want.append(encoder.encode_strong_df(df) if len(df) else np.zeros((t_out, 10)))
    want = np.stack(want)
    seconds = 256 * 4 / 16000
    got = dataset.strong_labels(clips, CLASSES, t_out, seconds, rule="desed_task", rate=rate)
    half = dataset.strong_labels(clips, CLASSES, t_out, seconds)
    differ = int((got != want).sum())
    n_events = sum(map(len, clips))
    print(f"\nparity frame targets 'desed_task' vs encode_strong_df: {differ} of {want.size} "
          f"targets differ (tol 0), {len(clips)} clips, {n_events} events", end="")
    assert differ == 0
    gen = slice(0, 60)  # the generated clips alone
    d = half[gen] != want[gen]
    print(f"\nparity frame targets 'cover_half' vs encode_strong_df (generated clips): "
          f"{int(d.sum())} of {int(want[gen].sum())} active targets differ "
          f"({d.sum() / max(want[gen].sum(), 1):.1%}; measured), all extra in DESED_task's: "
          f"{bool((want[gen][d] == 1).all())}", end="")
    assert d.any() and (half[gen] <= want[gen]).all()  # DESED_task's frames hold sedjax's


def test_mixup_on_linear_mels_vs_on_scaled_features(clips, hparams):
    """DESED_task mixes the linear mel magnitudes (training_step: mel_spec -> mixup -> log ->
    scaler), sedjax the scaled features; the same lambda and pairs (DESED_task's own mixup
    function, seeded) on DESED_task's features: how far apart the two are (measured)."""
    torch.set_num_threads(1)
    encoder = make_encoder(hparams)
    batches, _ = desed_batches(clips, hparams, encoder)
    sed, _, _ = desed_module(hparams, encoder, 1e-8)
    audio = batches[0][0][N_STRONG:N_STRONG + N_WEAK + 2]  # 4 clips (the weak ones and two more)
    with torch.no_grad():
        mels = sed.mel_spec(audio)
        np.random.seed(3), torch.manual_seed(3)
        mixed = desed_mixup(mels)  # c ~ Beta(0.2, 0.2), perm = torch.randperm(batch)
        np.random.seed(3), torch.manual_seed(3)
        c, perm = np.random.beta(0.2, 0.2), torch.randperm(len(mels))
        assert torch.equal(mixed, c * mels + (1 - c) * mels[perm])  # what it drew
        desed = sed.scaler(sed.take_log(mixed))
        scaled = sed.scaler(sed.take_log(mels))
        sedjax_way = c * scaled + (1 - c) * scaled[perm]
    d = (desed - sedjax_way).abs()
    moved = perm != torch.arange(len(perm))
    print(f"\nparity mixup linear mel vs scaled features (lambda {c:.3f}, {int(moved.sum())} of "
          f"{len(perm)} clips mixed with another): max|d| = {float(d.max()):.2f}, mean|d| = "
          f"{float(d[moved].mean()):.3f} of the [-1, 1] features (measured)", end="")
    if moved.any() and 0.01 < c < 0.99:
        assert float(d[moved].max()) > 0.01


def test_bce_clamps_alike_inside_and_differently_at_saturation():
    """torch BCELoss (log clamped at -100; gradient (p - y) / max(p (1 - p), 1e-12)) vs
    sedjax's bce (probabilities clipped to [eps, 1 - eps], mean_teacher.bce_eps = 1e-7; no
    gradient beyond the clip): value and gradient per element."""
    from sedjax.train import state as state_lib

    p = np.array([0.3, 0.5, 0.9, 1e-6, 1 - 1e-6, 1e-9, 0.0, 1.0], np.float32)
    inside = slice(0, 5)
    for y in (0.0, 1.0):
        t = torch.tensor(p, requires_grad=True)
        ref = torch.nn.functional.binary_cross_entropy(t, torch.full_like(t, y), reduction="none")
        ref.sum().backward()
        grad = np.asarray(jax.grad(lambda q: state_lib.bce(q, y, 1e-7).sum())(p))
        mine, ref = np.asarray(state_lib.bce(p, y, 1e-7)), ref.detach().numpy()
        tgrad = t.grad.numpy()
        rel = np.abs(mine - ref)[inside] / ref[inside]
        grel = np.abs(grad - tgrad)[inside] / np.abs(tgrad[inside])
        print(f"\nparity BCE target {y:.0f}: p in [1e-6, 1 - 1e-6]: value rel |d| = "
              f"{rel.max():.1e}, gradient rel |d| = {grel.max():.1e} (tol 1e-3); saturated "
              f"p = {p[5:].tolist()}: loss torch {ref[5:].round(2).tolist()} vs sedjax "
              f"{mine[5:].round(2).tolist()}, gradient torch {tgrad[5:].tolist()} vs sedjax "
              f"{grad[5:].tolist()} (measured)", end="")
        assert rel.max() < 1e-3 and grel.max() < 1e-3


def test_desed_task_masks_features_in_the_crnn(hparams):
    """DESED_task's CRNN (default.yaml's net: specaugm_* at their defaults) masks its input in
    train mode, student and teacher alike: one span of floor(U * 5) frames and one of
    floor(U * 10) bands per clip, set to 0. sedjax: mean_teacher.augment time_mask 4,
    freq_mask 9 (widths uniform on 0..4 and 0..9), mask_teacher True. The draws differ (two
    random generators); their distributions are compared over 3000 clips."""
    from sedjax.train import augment

    torch.manual_seed(0)
    model = CRNN(**hparams["net"])  # specaugm_t_p = specaugm_f_p = 0.2 (defaults)
    model.train()
    b, f, t = 3000, 128, 32
    with torch.no_grad():
        desed = model.apply_specaugment(torch.ones(b, f, t)).numpy().transpose(0, 2, 1)
    a = desed_baseline.get_config().mean_teacher.augment
    assert (a.time_mask, a.freq_mask, a.mask_teacher) == (4, 9, True)
    mine = np.asarray(augment.mask_time_frequency(jax.random.PRNGKey(0), np.ones((b, t, f)),
                                                  a.time_mask, a.freq_mask))
    for name, axis, widths in (("time", 2, 5), ("frequency", 1, 10)):
        counts = []
        for x in (desed, mine):
            w = (x == 0).all(axis=axis).sum(axis=1)  # masked frames (bands) per clip
            counts.append(np.bincount(w, minlength=widths + 1) / b)
        d = float(np.abs(counts[0] - counts[1]).max())
        print(f"\nparity masks {name} widths 0..{widths - 1}: DESED_task "
              f"{np.round(counts[0][:widths + 1], 3).tolist()} vs sedjax "
              f"{np.round(counts[1][:widths + 1], 3).tolist()}: max|d| = {d:.3f} (tol 0.04)",
              end="")
        assert counts[0][widths:].sum() == 0 == counts[1][widths:].sum()
        assert d < 0.04
