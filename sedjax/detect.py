"""Sound event detection on any audio with a finished run's model.

    python -m sedjax.detect --workdir=DIR FILE_OR_DIR [FILE_OR_DIR ...] [--out events.tsv]
                            [--threshold X]

Loads DIR/config.json (the run's resolved config) and DIR/model/ (the weights that predicted
and the log-mel normalization, `checkpoint.save_model`), reads wav/flac/ogg/mp3 files at any
sample rate, channel count and length (sedjax.data.audio; folders are searched recursively),
and writes one event table (default DIR/detections.tsv, tab separated, times in seconds of the
original files; sedjax.data.event_files' format with one more column):

    filename  onset  offset  event_label  max_probability

`max_probability` is the highest frame probability of the event's class within the event. A
file without events gets one row with empty fields, so every processed file is listed.

How a file becomes events, the run's own feature and post-processing settings throughout:
mono (channel mean), resampled to `features.sample_rate`, cut into windows of the model's
input length (`features.num_frames` frames, 10 s in the seed), log-mel by the jnp frontend the
run trained on, normalized with the saved mean/std (frames past the audio's end set to 0),
CRNN in inference mode. Windows overlap by half (their starts are a multiple of the model's
time pooling apart, so output frames line up); where windows overlap their frame
probabilities are averaged. The stitched track (one row per output frame of the whole file,
`time_grid.frame_seconds` each, output frame j starting at j * frame_seconds) is thresholded and
median-filtered once (`detection.probabilities_to_events`), so events span window borders.
Clips shorter than a window are zero-padded as in training; the track stops at the last frame
that starts inside the audio and event offsets are cut at the file's duration.

Exit codes: 0 every file processed; 1 some files could not be read (each named on stderr, the
others are still in the table); 2 the workdir has no usable model/config or a bad argument.
"""

from __future__ import annotations

from sedjax.system import host

if __name__ == "__main__":  # before the heavy imports: this process is replaced once
    host.reexec_with_huge_pages("sedjax.detect")

import json
import math
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import flags

from sedjax.config import config_files
from sedjax.data import audio, event_files
from sedjax.metrics import detection
from sedjax.system import cli, files

EXTRA_COLUMNS = ("max_probability",)  # after the DCASE event columns
TABLE_HEADER = (*event_files.HEADER, *EXTRA_COLUMNS)
DEFAULT_OUT = "detections.tsv"  # in the workdir
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = cli.EXIT_USER_ERROR
WINDOW_BATCH = 8  # windows per model call, at most (batches are padded to a power of two)

FLAGS = flags.FlagValues()  # this command's own: importing it never clashes with another's
flags.DEFINE_string("workdir", None, "A finished run's workdir (config.json and model/).",
                    flag_values=FLAGS)
flags.DEFINE_string("out", None, f"Event table to write (default: WORKDIR/{DEFAULT_OUT}).",
                    flag_values=FLAGS)
flags.DEFINE_float("threshold", None, "Probability threshold (default: the run's "
                   "postprocess.threshold).", flag_values=FLAGS)
flags.mark_flag_as_required("workdir", flag_values=FLAGS)


class WorkdirError(cli.UserError):
    """A workdir without a usable trained model or config."""


# ---------------------------------------------------------------------------- audio in
def find_audio(arguments: Sequence[str]) -> tuple[list[pathlib.Path], list[str]]:
    """Files named, plus *.wav/*.flac/*.ogg/*.mp3 under folders (recursively, sorted).

    Returns (paths, error messages); a missing path or a folder without audio is an error.
    """
    paths, errors = [], []
    for arg in arguments:
        p = pathlib.Path(arg)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*")
                           if f.is_file() and f.suffix.lower() in audio.AUDIO_EXTENSIONS)
            if not found:
                kinds = "/".join("*" + e for e in audio.AUDIO_EXTENSIONS)
                errors.append(f"{p}: no {kinds} files in this folder")
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            errors.append(f"{p}: no such file or folder")
    return list(dict.fromkeys(paths)), errors


# ---------------------------------------------------------------------------- workdir
def load_config(workdir) -> ml_collections.ConfigDict:
    """The run's resolved config from workdir/config.json (lists where the run had tuples),
    upgraded (an older sedjax's lacks the fields added since: config_files.upgrade)."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise WorkdirError(f"{workdir}: no config.json (not a sedjax run's workdir?)")
    try:
        return ml_collections.ConfigDict(
            config_files.upgrade(json.loads(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise WorkdirError(f"{path}: unreadable config ({e})") from None


def _check_config(config, where: str) -> None:
    """WorkdirError when the config lacks what detection reads."""
    try:
        classes = list(config.data.classes)
        f, m, pp = config.features, config.model, config.postprocess
        for key in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "num_frames"):
            int(f[key])
        for key in ("conv_features", "conv_kernel", "pool_sizes", "gru_units", "pooling"):
            m[key]  # noqa: B018 (presence)
        float(pp.threshold)
        size = pp.median_filter
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise WorkdirError(f"{where}: config lacks a field detection needs ({e})") from None
    if not classes:
        raise WorkdirError(f"{where}: data.classes is empty")
    if isinstance(size, (list, tuple)) and len(size) not in (1, len(classes)):
        raise WorkdirError(f"{where}: postprocess.median_filter has {len(size)} lengths for "
                           f"{len(classes)} classes")


# ---------------------------------------------------------------------------- detector
def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class Detector:
    """A trained CRNN with its run's features and post-processing.

    config: the run's config (ConfigDict; tuples or lists); variables: {'params',
    'batch_stats'}; normalization: (2, n_mels) mean and std. apply_fn(variables, x (B, T, F))
    -> frame probabilities (B, T', C) replaces the model (tests inject a fake one);
    overlap: half-overlapping windows, probabilities averaged (False: back to back).
    """

    def __init__(self, config, variables, normalization, apply_fn: Callable | None = None,
                 overlap: bool = True):
        import jax

        from sedjax.data import features
        from sedjax import models
        from sedjax.models import time_grid

        _check_config(config, "config")
        self.config = config
        self.classes = [str(c) for c in config.data.classes]
        self.features_config = config.features
        self.variables = variables
        norm = np.asarray(normalization, np.float32)
        if norm.shape != (2, int(config.features.n_mels)):
            raise WorkdirError(f"normalization has shape {norm.shape}; expected "
                               f"(2, {config.features.n_mels}) (mean and std per mel band)")
        self.mean, self.std = norm
        self.num_frames = int(config.features.num_frames)
        self.pool = time_grid.time_pooling(config.model)
        self.frame_seconds = float(time_grid.frame_seconds(config))
        self.window_out = time_grid.output_frames(self.num_frames, config.model)
        if self.window_out < 1:
            raise WorkdirError(f"model time pooling {self.pool} exceeds features.num_frames "
                               f"{self.num_frames}")
        self.hop_out = max(1, self.window_out // 2) if overlap else self.window_out
        pp = config.postprocess  # a plain dict: --threshold may replace an int with a float
        size = pp.median_filter
        if isinstance(size, (list, tuple)):
            size = int(size[0]) if len(size) == 1 else [int(k) for k in size]
        self.postprocess = {"threshold": float(pp.threshold), "median_filter": int(size)
                            if not isinstance(size, list) else size}
        boxes = detection.csebbs_settings(pp)
        if boxes:  # cSEBBs tuned on validation (sedjax.metrics.csebbs) replace the median filter
            self.postprocess["csebbs"] = boxes
        if apply_fn is None:
            model = models.from_config(config.model, len(self.classes))
            apply_fn = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
        self._apply = apply_fn
        self._frontend = features.make_jax_frontend(config.features)
        self._normalize = jax.jit(features.normalize)

    @classmethod
    def from_workdir(cls, workdir, **kwargs) -> "Detector":
        """The model a finished run exported (workdir/config.json, workdir/model/).

        Raises WorkdirError, naming the folder, when either is missing, unreadable or they do
        not fit each other.
        """
        import jax
        import jax.numpy as jnp
        from flax import traverse_util

        from sedjax import models
        from sedjax.train import checkpoint

        workdir = pathlib.Path(workdir)
        if not workdir.is_dir():
            raise WorkdirError(f"{workdir}: no such workdir")
        config = load_config(workdir)
        _check_config(config, str(workdir / "config.json"))
        from sedjax.data import embeddings
        if embeddings.used(config.model):
            raise WorkdirError(f"{workdir}: its model reads frame embeddings "
                               "(model.embeddings), which sedjax.detect does not compute")
        tuned = workdir / checkpoint.MODEL_DIR / "postprocess.json"
        if tuned.is_file():  # the post-processing the run chose on validation
            try:
                chosen = json.loads(tuned.read_text())
                if chosen.get("method") == "csebbs":
                    update = {"csebbs": dict(chosen["csebbs"])}
                else:
                    update = {"median_filter": [int(k) for k in chosen["median_filter"]]}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise WorkdirError(f"{tuned}: unreadable tuned post-processing ({e})") from None
            config.postprocess = ml_collections.ConfigDict(  # the field may be typed int
                {**config.postprocess.to_dict(), **update})
            _check_config(config, str(tuned))
        try:
            variables, norm = checkpoint.load_model(workdir)
        except FileNotFoundError as e:
            raise WorkdirError(str(e)) from None
        except Exception as e:  # a truncated or foreign msgpack / npy
            raise WorkdirError(f"{workdir / checkpoint.MODEL_DIR}: unreadable model ({e})"
                               ) from None
        # the weights must be the config's model: compare every array's path and shape
        try:
            model = models.from_config(config.model, len(config.data.classes))
            shape = (1, int(config.features.num_frames), int(config.features.n_mels))
            expected = jax.eval_shape(lambda: model.init(
                {"params": jax.random.PRNGKey(0)}, jnp.zeros(shape, jnp.float32), train=False))
        except Exception as e:
            raise WorkdirError(f"{workdir / 'config.json'}: cannot build its model ({e})"
                               ) from None
        want = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(
            {c: expected[c] for c in ("params", "batch_stats") if c in expected}).items()}
        try:
            have = {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(
                {c: variables[c] for c in ("params", "batch_stats") if c in variables}).items()}
        except (TypeError, AttributeError):
            have = {}
        if want != have:
            diff = sorted("/".join(k) for k in set(want) ^ set(have)) or sorted(
                "/".join(k) for k in want if want[k] != have.get(k))
            raise WorkdirError(f"{workdir}: model/variables.msgpack does not match the model of "
                               f"config.json (e.g. {', '.join(diff[:3])})")
        return cls(config, variables, norm, **kwargs)

    # ---------------------------------------------------------------- probabilities
    def frame_probabilities(self, waveform: np.ndarray, sample_rate: int
                            ) -> tuple[np.ndarray, float]:
        """Frame probabilities (T_out, C) of a whole recording and the seconds per row.

        waveform: (n,) or (n, channels) at `sample_rate`. Row j covers [j, j + 1) x
        frame_seconds of the recording; T_out = ceil(frames / time pooling) with frames =
        ceil(samples / hop) at the feature rate (the frames that start inside the audio).
        """
        from sedjax.data import features
        from sedjax.models import time_grid

        fc = self.features_config
        y = audio.to_mono_resampled(waveform, sample_rate, fc.sample_rate)
        if len(y) == 0:
            raise ValueError("no audio samples")
        hop, size = int(fc.hop_length), features.buffer_samples(fc)
        n_in = -(-len(y) // hop)
        total_out = -(-n_in // self.pool)
        num_windows = 1 + max(0, -(-(total_out - self.window_out) // self.hop_out))
        starts = [k * self.hop_out * self.pool for k in range(num_windows)]  # input frames

        sums = np.zeros((total_out, len(self.classes)), np.float64)
        counts = np.zeros(total_out, np.int64)
        for b0 in range(0, num_windows, WINDOW_BATCH):
            chunk = starts[b0: b0 + WINDOW_BATCH]
            batch = min(WINDOW_BATCH, _next_pow2(len(chunk)))  # few shapes, few compilations
            waves = np.zeros((batch, size), np.float32)
            lengths = np.ones(batch, np.int32)
            valid = np.ones(batch, np.int32)
            for i, s in enumerate(chunk):
                seg = y[s * hop: s * hop + size]
                waves[i, : len(seg)], lengths[i] = seg, len(seg)
                valid[i] = features.num_valid_frames(len(seg), fc)  # as training counts them
            mel = self._frontend(waves, lengths)
            x = self._normalize(mel, valid, self.mean, self.std)
            probs = np.asarray(self._apply(self.variables, x), np.float64)
            if probs.shape[1:] != (self.window_out, len(self.classes)):
                raise ValueError(f"model output {probs.shape[1:]}; expected "
                                 f"({self.window_out}, {len(self.classes)})")
            for i, s in enumerate(chunk):
                s_out = s // self.pool
                n_out = int(time_grid.valid_output_frames(min(self.num_frames, n_in - s),
                                                     self.num_frames, self.config.model))
                n_out = min(n_out, total_out - s_out)
                sums[s_out: s_out + n_out] += probs[i, :n_out]
                counts[s_out: s_out + n_out] += 1
        assert counts.min() > 0, "windows leave frames uncovered"
        return (sums / counts[:, None]).astype(np.float32), self.frame_seconds

    def events(self, name: str, probs: np.ndarray, duration: float) -> list[dict[str, Any]]:
        """Post-processed events of one file's (T_out, C) probabilities, cut at `duration`.

        Each event dict: filename, onset, offset (seconds), event_label, max_probability.
        """
        found = detection.probabilities_to_events(
            [name], probs[None], self.postprocess, self.classes, self.frame_seconds)
        out = []
        for e in found:
            c = self.classes.index(e["event_label"])
            start = int(round(e["onset"] / self.frame_seconds))
            stop = max(start + 1, int(round(e["offset"] / self.frame_seconds)))
            offset = min(float(e["offset"]), duration)
            if e["onset"] >= offset:
                continue
            out.append({**e, "offset": offset,
                        "max_probability": float(np.max(probs[start:stop, c]))})
        return out

    def detect(self, path, name: str | None = None) -> list[dict[str, Any]]:
        """Events of one audio file (audio.AudioError naming it when it cannot be used)."""
        y, sr = audio.read_audio(path)
        try:
            probs, _ = self.frame_probabilities(y, sr)
        except ValueError as e:
            raise audio.AudioError(path, str(e)) from None
        return self.events(str(path) if name is None else name, probs, len(y) / sr)


# ---------------------------------------------------------------------------- command
def _detect(argv: list[str]) -> int:
    """The command: argv[1:] are the audio files and folders."""
    if len(argv) < 2:
        raise cli.UserError("give the audio files or folders to detect events in (FILE_OR_DIR)")
    threshold = FLAGS.threshold
    if threshold is not None and not (0.0 <= threshold <= 1.0 and math.isfinite(threshold)):
        raise cli.UserError(f"--threshold must be in [0, 1], got {threshold}")
    detector = Detector.from_workdir(FLAGS.workdir)
    if threshold is not None:
        detector.postprocess["threshold"] = float(threshold)
    out = pathlib.Path(FLAGS.out) if FLAGS.out else pathlib.Path(FLAGS.workdir) / DEFAULT_OUT

    paths, errors = find_audio(argv[1:])
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    events, done = [], []
    for path in paths:
        try:
            events.extend(detector.detect(path))
            done.append(str(path))
        except audio.AudioError as e:  # this file only: the others are still detected
            errors.append(str(e))
            print(f"error: {e}", file=sys.stderr)
    table = event_files.format_events(events, done, EXTRA_COLUMNS)
    try:
        files.write_text(out, table)
    except OSError as e:
        raise cli.UserError(f"cannot write {out}: {e}") from None
    sys.stdout.write(table)
    print(f"{len(events)} events in {len(done)} files -> {out}"
          + (f"; {len(errors)} failed (see above)" if errors else ""), file=sys.stderr)
    return EXIT_SOME_FAILED if errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sedjax.detect ARGS` in this process (argv: ARGS, default the command line's);
    returns the exit status (the module docstring's)."""
    return cli.call(_detect, FLAGS, argv)


if __name__ == "__main__":
    cli.run(_detect, FLAGS)
