"""Where a DESED-layout folder keeps what each system reads (no torch, no jax).

sedjax reads the folder by sedjax.data.dataset.DESED (weak, unlabel_in_domain, synthetic,
validation, test = metadata/eval/public.tsv). DESED_task's train_sed.py reads the same files
under its own names (confs/default.yaml `data`): synth_* (synthetic21_train), weak_*,
unlabeled_folder, synth_val_* (synthetic21_validation: with the weak clips it holds out, what
picks its checkpoint) and test_* (what its test step scores). Here test_* is the split sedjax
tests on (sedjax.data.split_roles, data.split_roles): the public evaluation set
metadata/eval/public.tsv under sedjax's roles, metadata/validation/validation.tsv under
DESED_task's (as its default.yaml does). A folder without synthetic21_validation (possible
under sedjax's roles only) lends DESED_task its validation split instead.
"""

from __future__ import annotations

import dataclasses
import pathlib

from sedjax.data import dataset, event_files, split_roles
from sedjax.system import cli

WEAK_TSV = "metadata/train/weak.tsv"
SYNTH_VAL_TSV = "metadata/validation/synthetic21_validation/soundscapes.tsv"
SYNTH_VAL_DUR = "metadata/validation/synthetic21_validation/durations.tsv"
SYNTH_VAL_AUDIO = "audio/validation/synthetic21_validation/soundscapes"
VALIDATION = ("metadata/validation/validation.tsv", "metadata/validation/validation_durations.tsv",
              "audio/validation/validation")
PUBLIC = ("metadata/eval/public.tsv", "metadata/eval/public_durations.tsv", "audio/eval/public")


class LayoutError(cli.UserError):
    """A folder that is not (enough of) a DESED layout: the message names what is missing."""


@dataclasses.dataclass(frozen=True)
class Part:
    """One split as files: metadata (None: an unlisted folder), durations (or None), audio."""

    tsv: pathlib.Path | None
    durations: pathlib.Path | None
    audio: pathlib.Path


@dataclasses.dataclass(frozen=True)
class Layout:
    """A DESED-layout folder's parts, under the names DESED_task's yaml gives them."""

    root: pathlib.Path
    weak: Part
    unlabeled: Part
    synth: Part
    synth_val: Part
    test: Part
    strong_real: Part | None  # metadata/train/audioset_strong.tsv (sedjax joins it to synth)
    synth_val_source: str  # 'synthetic21_validation' or 'validation'
    test_source: str  # 'eval/public' or 'validation'

    def strong_parts(self) -> list[Part]:
        """Every part with strong labels (for the class list)."""
        parts = [self.synth, self.synth_val, self.test]
        validation = self.root / VALIDATION[0]
        if validation.is_file():
            parts.append(Part(validation, None, self.root / VALIDATION[2]))
        return parts + ([self.strong_real] if self.strong_real else [])


def _need(path: pathlib.Path, what: str) -> pathlib.Path:
    if not path.exists():
        raise LayoutError(f"{path}: {what} not found (not a DESED-layout folder? see "
                          "docs/desed.md, 'The layout')")
    return path


def find(root, roles: str = "auto") -> Layout:
    """The parts of the DESED-layout folder `root` under data.split_roles `roles` (resolved by
    sedjax.data.split_roles, which raises naming a split they need and the folder lacks);
    LayoutError names any other missing part."""
    root = pathlib.Path(root).expanduser().resolve()
    _need(root / "metadata", "metadata folder")
    roles = split_roles.resolve(roles, root, "desed")
    d = dataset.DESED
    weak = Part(_need(root / d["weak"][0], "weak labels"), None,
                _need(root / d["weak"][1], "weak audio folder"))
    unlabeled = Part(None, None, _need(root / d["unlabel_in_domain"][1],
                                       "unlabel_in_domain audio folder"))
    synth = Part(_need(root / d["synthetic"][0],
                       "strongly labelled training clips (synthetic21_train)"),
                 None, _need(root / d["synthetic"][1], "synthetic21_train audio folder"))
    if (root / SYNTH_VAL_TSV).is_file():
        synth_val = Part(root / SYNTH_VAL_TSV, root / SYNTH_VAL_DUR,
                         _need(root / SYNTH_VAL_AUDIO, "synthetic21_validation audio folder"))
        synth_val_source = "synthetic21_validation"
    else:
        synth_val = Part(_need(root / VALIDATION[0], "validation split (and no "
                               "synthetic21_validation)"), root / VALIDATION[1],
                         _need(root / VALIDATION[2], "validation audio folder"))
        synth_val_source = "validation"
    if roles == split_roles.SEDJAX:
        test = Part(root / PUBLIC[0], _need(root / PUBLIC[1], "public evaluation durations"),
                    _need(root / PUBLIC[2], "public evaluation audio folder"))
        test_source = "eval/public"
    else:
        test = Part(_need(root / VALIDATION[0], "test split (eval/public.tsv or "
                          "validation/validation.tsv)"),
                    _need(root / VALIDATION[1], "validation durations"),
                    _need(root / VALIDATION[2], "validation audio folder"))
        test_source = "validation"
    strong_tsv, strong_audio, _ = dataset.DESED_AUDIOSET_STRONG
    strong_real = (Part(root / strong_tsv, None, _need(root / strong_audio, "strong_label_real "
                                                       "audio folder"))
                   if (root / strong_tsv).is_file() else None)
    return Layout(root, weak, unlabeled, synth, synth_val, test, strong_real, synth_val_source,
                  test_source)


def classes(layout: Layout) -> list[str]:
    """The sorted union of the event labels of the folder's weak and strong metadata."""
    found: set[str] = set()
    _, labels = event_files.read_weak(layout.weak.tsv)
    for clip in labels:
        found.update(clip)
    for part in layout.strong_parts():
        events, _ = event_files.read_events(part.tsv)
        found.update(e["event_label"] for e in events)
    if not found:
        raise LayoutError(f"{layout.root}: its metadata name no event label")
    return sorted(found)


def clips_with_events(tsv: pathlib.Path) -> list[str]:
    """The files of a strong tsv with at least one event, in order of first appearance
    (DESED_task's StronglyAnnotatedSet: a clip without an event has no row it keeps)."""
    events, _ = event_files.read_events(tsv)
    return list(dict.fromkeys(e["filename"] for e in events))


def counts(layout: Layout) -> dict[str, int]:
    """Clips per training part as DESED_task's datasets count them: synth clips with events,
    every weak row, every *.wav of the unlabeled folder (and of strong_real with events)."""
    names, _ = event_files.read_weak(layout.weak.tsv)
    out = {"synth": len(clips_with_events(layout.synth.tsv)), "weak": len(names),
           "unlabeled": len(list(layout.unlabeled.audio.glob("*.wav")))}
    if layout.strong_real:
        out["strong_real"] = len(clips_with_events(layout.strong_real.tsv))
    return out


def sample_rate(folder: pathlib.Path) -> int | None:
    """The sample rate of the first wav file in `folder` (None: none there)."""
    import soundfile  # sedjax's audio reader's dependency

    first = next(iter(sorted(folder.glob("*.wav"))), None)
    return None if first is None else int(soundfile.info(str(first)).samplerate)


def clip_seconds(layout: Layout) -> float:
    """The longest clip of the test split's durations file (DESED_task pads every clip to
    audio_max_len seconds)."""
    return max(event_files.read_durations(layout.test.durations).values())
