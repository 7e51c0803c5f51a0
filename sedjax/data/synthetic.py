"""Synthetic domestic soundscapes in the DCASE2018 Task 4 layout, standing in for the real data.

With num_strong > 0 it also writes a strongly labelled training split, "synthetic", where
DCASE2019 Task 4 (DESED) has it: audio/train/synthetic/ and metadata/train/synthetic.csv.
With num_validation > 0 it writes a strongly labelled validation split as DESED ships one:
audio/validation/, metadata/validation/validation.tsv (filename, onset, offset, event_label)
and validation_durations.tsv (filename, duration). Every choice a run makes is made on it.
The clips themselves (audio and annotated events) are rendered by sedjax.data.soundscapes.
With layout='desed' it writes DESED's folders and tsv files instead (sedjax.data.dataset.DESED:
weak.tsv, an unlisted unlabel_in_domain folder, synthetic21_train/soundscapes.tsv, the
validation split and the public evaluation set metadata/eval/public.tsv as the test split).
There, as in DESED, every weak clip carries at least one label (a clip drawn without any event
is redrawn); num_synth_validation > 0 adds DESED's synthetic validation set
(metadata/validation/synthetic21_validation/soundscapes.tsv + durations.tsv), and num_test = 0
leaves the public evaluation set out: the folder DESED_task's download leaves
(sedjax.data.split_roles).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import pathlib
import sys
import time
from typing import Any, Sequence

import numpy as np
import soundfile as sf
import tqdm
from absl import flags, logging

from sedjax.data.soundscapes import CLASSES, Event, check_classes, render_clip
from sedjax.system import cli, files

# split id: part of each clip's rng seed, so the splits' clips differ; never renumber one
SPLITS = {"weak": 0, "unlabel_in_domain": 1, "test": 2, "synthetic": 3, "validation": 4,
          "synth_validation": 5}
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
                    "validation": "audio/validation/validation",
                    "synth_validation": "audio/validation/synthetic21_validation/soundscapes"}
DESED_METADATA = {"weak": "metadata/train/weak.tsv", "unlabel_in_domain": None,
                  "test": "metadata/eval/public.tsv",
                  "synthetic": "metadata/train/synthetic21_train/soundscapes.tsv",
                  "validation": "metadata/validation/validation.tsv",
                  "synth_validation":
                      "metadata/validation/synthetic21_validation/soundscapes.tsv"}
DESED_DURATIONS = {"validation": "metadata/validation/validation_durations.tsv",
                   "test": "metadata/eval/public_durations.tsv",
                   "synth_validation": "metadata/validation/synthetic21_validation/durations.tsv"}
LAYOUTS = {"dcase2018": (AUDIO_DIRS, METADATA, DURATIONS),
           "desed": (DESED_AUDIO_DIRS, DESED_METADATA, DESED_DURATIONS)}
_PREFIX = {"weak": "w", "unlabel_in_domain": "u", "test": "t", "synthetic": "s",
           "validation": "v", "synth_validation": "sv"}
MARKER = ".complete"
VERSION = 1  # bump whenever the generated content changes, so cached datasets are regenerated
# A layout's own content version, in the marker when > 0: bump it when only that layout's
# content changes, so its cached datasets are regenerated and the other layout's stay valid.
# desed 1: weak clips always labelled.
LAYOUT_VERSIONS = {"dcase2018": 0, "desed": 1}
REDRAWS = 64  # a clip without any event is drawn ~1 time in 10: 64 misses in a row never happen


def _write_clip(job: tuple) -> tuple[str, list[Event], float]:
    out, split, index, seed, sr, classes, clip_seconds, audio_dir, labelled = job
    for attempt in range(REDRAWS):  # labelled: redrawn until the clip has an event
        x, events = render_clip(seed, SPLITS[split], index, sr, classes, clip_seconds, attempt)
        if events or not labelled:
            break
    else:
        raise RuntimeError(f"{split} clip {index}: no draw of {REDRAWS} had an event")
    name = f"Ysyn_{_PREFIX[split]}{index:05d}_0.000_{x.size / sr:.3f}.wav"
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    # encoded in memory, then written atomically: a full disk is then an OSError naming the
    # clip (libsndfile says only "System error."), and no half-written clip keeps its name
    encoded = io.BytesIO()
    sf.write(encoded, pcm, sr, subtype="PCM_16", format="WAV")
    files.write_bytes(os.path.join(out, audio_dir, name), encoded.getvalue())
    return name, events, x.size / sr


def _params(*, num_weak: int, num_unlabeled: int, num_test: int, seed: int, sample_rate: int,
            classes: Sequence[str], clip_seconds: float, num_strong: int = 0,
            num_validation: int = 0, layout: str = "dcase2018",
            num_synth_validation: int = 0) -> str:
    # The generation parameters as the completion marker holds them (JSON). num_strong,
    # num_validation, num_synth_validation, layout and its content version only when not their
    # first value: the markers of datasets written before those existed stay valid.
    extra = {k: v for k, v in (("num_strong", num_strong), ("num_validation", num_validation),
                               ("num_synth_validation", num_synth_validation),
                               ("layout", layout if layout != "dcase2018" else 0),
                               ("layout_version", LAYOUT_VERSIONS[layout])) if v}
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
             num_validation: int = 0, layout: str = "dcase2018",
             num_synth_validation: int = 0) -> pathlib.Path:
    """Writes a synthetic dataset in the DCASE2018 Task 4 (or DESED) layout to out_dir.

    num_strong > 0 adds that many strongly labelled training clips (split "synthetic", the
    DCASE2019 layout's place), num_validation > 0 a strongly labelled validation split (DESED's
    metadata/validation/), num_synth_validation > 0 (layout 'desed' only) DESED's synthetic
    validation set; the other splits' files depend on none of them (each split draws its clips
    from its own seeds). Layout 'desed': every weak clip has a label, and num_test = 0 writes no
    public evaluation set.
    """
    out, classes = pathlib.Path(out_dir).expanduser(), tuple(classes)
    check_classes(classes)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    audio_dirs, metadata, durations = LAYOUTS[layout]
    for name, value in (("num_strong", num_strong), ("num_validation", num_validation),
                        ("num_synth_validation", num_synth_validation)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if num_synth_validation and "synth_validation" not in metadata:
        raise ValueError(f"num_synth_validation: DESED's synthetic validation set has no place "
                         f"in layout {layout!r}; use layout 'desed'")
    for split in ("weak", "synthetic"):
        csv_path = out / metadata[split]
        if csv_path.exists() and any(not line.startswith("Ysyn_")
                                     for line in csv_path.read_text().splitlines()[1:]):
            raise RuntimeError(f"{csv_path} lists real (non-synthetic) clips; "
                               "refusing to overwrite")
    (out / MARKER).unlink(missing_ok=True)  # from here on, an interrupted run never looks complete
    sizes = {"weak": num_weak, "unlabel_in_domain": num_unlabeled}
    if num_test or layout == "dcase2018":  # DESED_task's download has no public evaluation set
        sizes["test"] = num_test
    if num_strong:
        sizes["synthetic"] = num_strong
    if num_validation:
        sizes["validation"] = num_validation
    if num_synth_validation:
        sizes["synth_validation"] = num_synth_validation
    # DESED's weak clips all carry a label (DESED_task's reader fails on one without)
    labelled = {"weak"} if layout == "desed" else set()
    for d in [*(audio_dirs[s] for s in sizes),
              *(str(pathlib.Path(metadata[s]).parent) for s in sizes if metadata[s])]:
        (out / d).mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), s, i, seed, sample_rate, classes, clip_seconds, audio_dirs[s],
             s in labelled) for s, k in sizes.items() for i in range(k)]
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
    for split in ("test", "synthetic", "validation", "synth_validation"):
        if split not in metadata:  # no place in this layout
            continue
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
    for split in audio_dirs:  # an earlier generation's split, now empty: its folders go
        folder = out / audio_dirs[split]
        while (split not in sizes and folder != out and folder.is_dir()
               and not any(folder.iterdir())):
            folder.rmdir()
            folder = folder.parent
    (out / MARKER).write_text(_params(  # last: marks the dataset complete
        num_weak=num_weak, num_unlabeled=num_unlabeled, num_test=num_test, seed=seed,
        sample_rate=sample_rate, classes=classes, clip_seconds=clip_seconds,
        num_strong=num_strong, num_validation=num_validation, layout=layout,
        num_synth_validation=num_synth_validation))
    dt = time.time() - t0
    logging.info("Synthetic dataset: %d clips in %s (%.1f s, %.1f clips/s, %d workers)",
                 len(jobs), out, dt, len(jobs) / max(dt, 1e-9), workers)
    return out


def ensure_dataset(data_config: Any, out_dir: str | os.PathLike) -> pathlib.Path:
    """Returns out_dir holding data_config's synthetic dataset, generating it unless present."""
    s, out = data_config.synthetic, pathlib.Path(out_dir).expanduser()
    kw = dict(num_weak=s.num_weak, num_unlabeled=s.num_unlabeled, num_test=s.num_test, seed=s.seed,
              sample_rate=s.sample_rate, classes=tuple(data_config.classes),
              clip_seconds=float(data_config.clip_seconds), num_strong=int(s.num_strong),
              num_validation=int(s.num_validation), layout=s.layout,
              num_synth_validation=int(s.num_synth_validation))
    marker = out / MARKER
    if marker.exists() and marker.read_text() == _params(**kw):
        logging.info("Reusing the complete synthetic dataset in %s", out)
        return out
    logging.info("Generating the synthetic dataset in %s", out)
    return generate(out, **kw, num_workers=int(s.num_workers))


def main(argv: Sequence[str]) -> None:
    """Command line: writes a synthetic dataset and prints its size and speed."""
    cli.expect_no_arguments(argv)
    f = flags.FLAGS
    t0 = time.time()
    try:
        out = generate(f.out, num_weak=f.num_weak, num_unlabeled=f.num_unlabeled,
                       num_test=f.num_test, seed=f.seed, sample_rate=f.sample_rate,
                       classes=tuple(f.classes), num_workers=f.workers,
                       num_strong=f.num_strong, num_validation=f.num_validation,
                       layout=f.layout, num_synth_validation=f.num_synth_validation)
    except ValueError as e:  # an unknown class or a bad size: one message
        raise cli.UserError(str(e)) from None
    n = (f.num_weak + f.num_unlabeled + f.num_test + f.num_strong + f.num_validation
         + f.num_synth_validation)
    dt = time.time() - t0
    strong = f", {f.num_strong} synthetic (strong)" if f.num_strong else ""
    val = f", {f.num_validation} validation" if f.num_validation else ""
    if f.num_synth_validation:
        val += f", {f.num_synth_validation} synthetic21_validation"
    print(f"wrote {f.num_weak} weak, {f.num_unlabeled} unlabel_in_domain{strong}{val}, "
          f"{f.num_test} test clips to {out} in {dt:.1f} s: {n / dt:.1f} clips/s "
          f"({f.workers or os.cpu_count()} workers)")


if __name__ == "__main__":  # flags only here: importing the module must not define any
    flags.DEFINE_string("out", None, "Output directory.", required=True)
    flags.DEFINE_integer("num_weak", 200, "Weakly labelled training clips.")
    flags.DEFINE_integer("num_unlabeled", 400, "Unlabelled in-domain training clips.")
    flags.DEFINE_integer("num_test", 100, "Strongly labelled test clips (layout 'desed': the "
                         "public evaluation set; 0 = none, as DESED_task's download).")
    flags.DEFINE_integer("num_strong", 0, "Strongly labelled training clips (split 'synthetic', "
                         "the DCASE2019 layout); 0 = none.")
    flags.DEFINE_integer("num_validation", 0, "Strongly labelled validation clips "
                         "(metadata/validation/validation.tsv, DESED's layout); 0 = none.")
    flags.DEFINE_integer("num_synth_validation", 0, "DESED's synthetic validation clips "
                         "(metadata/validation/synthetic21_validation/, layout 'desed' only), "
                         "which DESED_task validates on; 0 = none.")
    flags.DEFINE_enum("layout", "dcase2018", list(LAYOUTS), "Folder and metadata layout: "
                      "DCASE2018 Task 4's or DESED's (weak.tsv, eval/public.tsv, ...).")
    flags.DEFINE_integer("seed", 1234, "Random seed.")
    flags.DEFINE_integer("sample_rate", 44100, "Sample rate in Hz.")
    flags.DEFINE_integer("workers", 0, "Worker processes; 0 = all cores.")
    flags.DEFINE_list("classes", list(CLASSES), "Comma-separated classes (default: all ten).")
    cli.run(main)
