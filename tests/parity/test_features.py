"""sedjax's DESED features (configs/desed_baseline.py) equal DESED_task's, from the audio file on.

DESED_task's side is its own code: desed_task/dataio/datasets.py `read_audio` (torchaudio.load,
channel mean, zero padding / cut to audio_max_len * fs) and SEDTask4's `mel_spec`, `take_log`
and `scaler` (local/sed_trainer.py, built from confs/default.yaml); audio at another rate goes
through local/resample_folder.py first, as train_sed.py does (its 16 kHz copies are 16-bit
WAV). sedjax's side is its production path with configs/desed_baseline.py's settings: the
resample cache (sedjax/data/resample.py, data.resample_copy = 'desed_task') for files that are
not 16-bit at 16 kHz, then the feature cache (sedjax/data/features.py, jnp frontend; the
librosa reference too). Figures: max |sedjax - DESED_task| over all 626 x 128 scaled features
(range [-1, 1]) of each clip.
"""

from __future__ import annotations

from .conftest import import_desed_task

import_desed_task()  # skips this module without DESED_task, torch or torchaudio

import pathlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from desed_task.dataio.datasets import read_audio  # noqa: E402
from desed_task.nnet.CRNN import CRNN  # noqa: E402
from desed_task.utils.encoder import ManyHotEncoder  # noqa: E402
from local import resample_folder  # noqa: E402
from local.classes_dict import classes_labels  # noqa: E402
from local.sed_trainer import SEDTask4  # noqa: E402

from configs import desed_baseline  # noqa: E402
from sedjax.data import audio, dataset, features, resample, soundscapes  # noqa: E402

TOL = 1e-4  # on the scaled features
# DESED_task's 16 kHz copies are 16-bit WAV (torchaudio.save's default, rounded to nearest);
# sedjax's float copies (data.resample_copy = 'float') are apart from them by that rounding,
# half a step of 2^-15 per sample at most
HALF_LSB = 2.0 ** -16


@pytest.fixture(scope="module")
def desed(desed_task_root):
    """(SEDTask4 built as train_sed.py builds it, its hparams) from confs/default.yaml."""
    torch.set_num_threads(1)
    recipe = desed_task_root / "recipes" / "dcase2023_task4_baseline"
    hp = yaml.safe_load((recipe / "confs" / "default.yaml").read_text())
    encoder = ManyHotEncoder(list(classes_labels.keys()), audio_len=hp["data"]["audio_max_len"],
                             frame_len=hp["feats"]["n_filters"],
                             frame_hop=hp["feats"]["hop_length"],
                             net_pooling=hp["data"]["net_subsample"], fs=hp["data"]["fs"])
    return SEDTask4(hp, encoder=encoder, sed_student=CRNN(**hp["net"])), hp


def desed_features(desed, paths) -> np.ndarray:
    """(N, frames, mels) as SEDTask4 computes them from the files (read_audio, test=True: a
    long clip's first 10 s, as DESED_task's validation and test sets)."""
    sed, hp = desed
    pad_to = hp["data"]["audio_max_len"] * hp["data"]["fs"]
    waves = torch.stack([read_audio(str(p), False, False, pad_to, test=True)[0] for p in paths])
    with torch.no_grad():
        return sed.scaler(sed.take_log(sed.mel_spec(waves))).numpy().transpose(0, 2, 1)


def desed_resampled(paths, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """DESED_task's 16 kHz copies: local/resample_folder.py's worker, file by file (its
    resample_folder runs the same worker in a process pool)."""
    out = []
    for p in paths:
        resample_folder._worker_func((str(p), str(p.parent), str(out_dir), 16000))
        out.append(out_dir / p.name)
    return out


def config(frontend="jax"):
    c = desed_baseline.get_config().features
    c.frontend, c.num_workers = frontend, 1
    return c


def sedjax_features(paths, cache: pathlib.Path, copy=None) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 626, 128), valid frames (N,)) as a sedjax run makes them: the resample
    cache (data.resample_cache and resample_copy as in the DESED configs, or `copy`), then the
    feature cache (jnp)."""
    c = config()
    data = desed_baseline.get_config().data
    assert data.resample_cache
    copy = copy or data.resample_copy
    names = [p.name for p in paths]
    split = resample.cached_split(dataset.Split("clips", names, list(paths)), c,
                                  resample.cache_dir(cache, c, copy), copy)
    feats, frames, errors = features.extract_split("clips", split.paths, names, c,
                                                   cache / f"features_{copy}", 0, 1)
    assert not errors
    return np.array(feats), np.array(frames)


def librosa_features(paths) -> np.ndarray:
    """The librosa reference path (features.frontend = 'librosa') on the decoded files."""
    c = config("librosa")
    return np.stack([features.log_mel(audio.load_audio(p, 16000), 16000, c) for p in paths])


def report(name: str, got: np.ndarray, want: np.ndarray, tol: float = TOL) -> float:
    d = float(np.abs(got - want).max())
    print(f"\nparity features {name}: max|d| = {d:.1e} (tol {tol:.0e})", end="")
    return d


def check_resampled(name, paths, ref, want, cache: pathlib.Path) -> None:
    """Audio that DESED_task resampled into the files `ref` (features `want`): sedjax's copy
    ('desed_task') holds the same 16-bit samples and its features are within TOL; the float
    copy ('float', sedjax's default) is measured: apart by the rounding alone."""
    got, _ = sedjax_features(paths, cache)
    split = dataset.Split("clips", [p.name for p in paths], list(paths))
    mine = resample.cached_split(split, config(), resample.cache_dir(cache, config(),
                                                                     "desed_task"), "desed_task")
    floats, _ = sedjax_features(paths, cache, copy="float")
    plain = resample.cached_split(split, config(), resample.cache_dir(cache, config())).paths
    for i, p in enumerate(paths):
        a = soundfile.read(mine.paths[i], dtype="int16")[0]
        b = soundfile.read(ref[i], dtype="int16")[0]
        assert a.shape == b.shape and (a == b).all(), "not DESED_task's 16-bit samples"
        assert report(f"{name} {p.stem}", got[i], want[i]) <= TOL
        # the float copy: mixed down before resampling, neither rounded nor clipped at +-1
        x, r = audio.load_audio(plain[i], 16000), audio.load_audio(ref[i], 16000)
        b32 = b.reshape(len(b), -1).astype(np.int32)  # int32: abs(-32768) overflows int16
        inside = (np.abs(b32) < 32767).all(axis=1)  # no channel at full scale (clipped)
        dw = float(np.abs(x - r)[inside].max())
        d = float(np.abs(floats[i] - want[i]).max())
        print(f"\nparity features {name} {p.stem}, data.resample_copy 'float': waveform "
              f"max|d| = {dw:.1e} (tol {HALF_LSB:.1e}: the 16-bit rounding; {(~inside).sum()} "
              f"samples that DESED_task's copy clips at full scale left out), features "
              f"max|d| = {d:.1e} (measured)", end="")
        assert dw <= HALF_LSB * 1.001


def write_clips(folder: pathlib.Path, rate: int, specs, subtype="FLOAT") -> list[pathlib.Path]:
    """Generated soundscapes (sedjax.data.soundscapes) written at `rate`; specs: (seconds,
    channels) per clip (a second channel: another clip of the same length)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (seconds, channels) in enumerate(specs):
        chans = [soundscapes.render_clip(7, 3 + c, i, rate, clip_seconds=seconds)[0]
                 for c in range(channels)]
        n = min(len(x) for x in chans)
        y = np.stack([x[:n] for x in chans], axis=1) if channels > 1 else chans[0]
        paths.append(folder / f"clip{i}_{seconds}s_{channels}ch.wav")
        soundfile.write(paths[-1], y, rate, subtype=subtype)
    return paths


def test_16k_clips(desed, tmp_path):
    """16 kHz mono: 10 s clips, a short one (padded to 10 s) and a long one (its first 10 s);
    float and 16-bit files."""
    specs = [(10.0, 1), (10.0, 1), (7.3, 1), (12.0, 1)]
    paths = (write_clips(tmp_path / "float", 16000, specs)
             + write_clips(tmp_path / "pcm16", 16000, specs[:2], subtype="PCM_16"))
    want = desed_features(desed, paths)
    got, frames = sedjax_features(paths, tmp_path / "sedjax")
    assert got.shape == want.shape == (len(paths), 626, 128)
    assert list(frames) == [626, 626, 1 + 116800 // 256, 626, 626, 626]
    assert want.min() == -1.0 and want.max() == pytest.approx(1.0, abs=1e-6)
    for i, p in enumerate(paths):
        assert report(f"16k {p.parent.name} {p.stem} (jnp)", got[i], want[i]) <= TOL
    assert report("16k all clips (librosa reference)", librosa_features(paths), want) <= TOL
    # the short clip's frames after its audio: DESED_task's silence, the clip's minimum
    assert (got[2, frames[2] + 4:] == -1.0).all()
    # what the model reads: features.normalize (every step's input, mean 0 / std 1 for these
    # features) sets the frames after a clip's valid ones to 0, where DESED_task's are -1
    x = np.asarray(features.normalize(got[2:3], frames[2:3], np.zeros(128, np.float32),
                                      np.ones(128, np.float32)))[0]
    d = float(np.abs(x - want[2]).max())
    print(f"\nparity features 16k {paths[2].stem} as the step reads it (features.normalize: "
          f"0 after its {frames[2]} valid frames): max|d| = {d:.1e} over the last "
          f"{626 - frames[2]} frames (measured; its valid frames within tol)", end="")
    assert float(np.abs(x - want[2])[:frames[2]].max()) <= TOL


def test_short_clip_without_padding_differs(desed, tmp_path):
    """What features.pad_to_num_frames changes (why the DESED configs set it): the scaler's
    min over the clip's own frames, and reflection at its own end."""
    paths = write_clips(tmp_path, 16000, [(7.3, 1)])
    want = desed_features(desed, paths)[0]
    c = config("librosa")
    c.pad_to_num_frames = False
    got = features.log_mel(audio.load_audio(paths[0], 16000), 16000, c)
    n = features.num_valid_frames(len(audio.load_audio(paths[0], 16000)), c)
    d = float(np.abs(got[:n] - want[:n]).max())
    print(f"\nparity features 16k short clip, pad_to_num_frames off (clip's frames): "
          f"max|d| = {d:.1e} (not within tol {TOL:.0e}: what the switch fixes)", end="")
    assert d > 100 * TOL


def test_44k_clips(desed, tmp_path):
    """44.1 kHz (DESED's original rate): DESED_task resamples with resample_folder.py
    (librosa.resample per channel, written as 16-bit WAV); sedjax's resample cache (channel
    mean, librosa.resample, float WAV). Same resampler; the 16-bit copy is the difference."""
    paths = write_clips(tmp_path / "in", 44100, [(10.0, 1), (10.0, 1), (6.1, 1)], "PCM_16")
    ref = desed_resampled(paths, tmp_path / "in_16k")
    info = soundfile.info(ref[0])
    assert (info.samplerate, info.subtype) == (16000, "PCM_16")
    check_resampled("44.1k", paths, ref, desed_features(desed, ref), tmp_path / "sedjax")


def test_stereo_clips(desed, tmp_path):
    """Two channels: at 16 kHz DESED_task reads the file as it is (read_audio's channel mean);
    at 44.1 kHz it resamples each channel, sedjax their mean."""
    p16 = write_clips(tmp_path / "s16", 16000, [(10.0, 2), (8.2, 2)])
    got, _ = sedjax_features(p16, tmp_path / "sj16")
    for i, p in enumerate(p16):
        assert report(f"16k stereo {p.stem}", got[i], desed_features(desed, [p])[0]) <= TOL
    p44 = write_clips(tmp_path / "s44", 44100, [(10.0, 2)], "PCM_16")
    ref = desed_resampled(p44, tmp_path / "s44_16k")
    check_resampled("44.1k stereo", p44, ref, desed_features(desed, ref), tmp_path / "sj44")


def _recordings() -> list[pathlib.Path]:
    """Real recordings on any machine with CPython's test suite: audiotest.au (a voice, 8012 Hz
    mu-law) and the pluck recordings (11025 Hz stereo PCM)."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    base = pathlib.Path(sys.base_prefix) / "lib" / version / "test"
    found = [base / "audiotest.au", base / "audiodata" / "pluck-pcm16.wav"]
    return [p for p in found if p.is_file()]


def test_real_recordings(desed, tmp_path):
    """Recordings, not generated sound (no DESED clip ships with this repository): at their
    own rates (8012 Hz, 11025 Hz stereo), both sides resampling as above."""
    found = _recordings()
    if not found:
        pytest.skip("no real recording on this machine (CPython's test/audiotest.au)")
    paths = []
    for p in found:  # copies: resample_folder writes next to its input folder's layout
        (tmp_path / "in").mkdir(exist_ok=True)
        paths.append(tmp_path / "in" / p.name)
        paths[-1].write_bytes(p.read_bytes())
    for p in found:
        info = soundfile.info(p)
        print(f"\nparity features real recording {p.name}: {info.samplerate} Hz, "
              f"{info.channels} ch, {info.duration:.2f} s, {info.subtype}", end="")
    ref = desed_resampled(paths, tmp_path / "in_16k")
    check_resampled("real recording", paths, ref, desed_features(desed, ref), tmp_path / "sj")
