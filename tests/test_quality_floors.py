"""Quality floors: on a small learnable synthetic set each recipe must beat constant predictors.

configs/learnable.py (4-second clips of four classes, a few CPU minutes per recipe) trains the
seed's two passes and the mean teacher with strongly labelled clips through `sedjax.main`; their
test scores must clear the best constant predictors by stated margins:
- all-zero: no event anywhere (segment F1 0);
- clip prior: the class prior as every frame's probability, at its best threshold: each class
  either everywhere (any threshold at or below its prior) or nowhere, i.e. every class active
  over every whole clip (the better of the two for any class with reference events).
A broken loss, swapped label axes or targets that do not line up with the frames leave a model
that is no better than these, and the floors fail.

Margins are set from measured runs (tests' own data) with room for seed noise. Measured (4 CPU
devices, seed 0, 2026-12-01): two passes 80.6 % segment F1; mean teacher 90.6 % segment and
70.8 % event F1 (the constant predictor: 32.2 % and 8 %). The DESED path (2026-12-06, seeds
0-2): test PSDS1 0.384 / 0.395 / 0.000, untrained 0.000.
"""

import json
import pathlib
import subprocess
import sys

import ml_collections
import pytest
import soundfile as sf

from sedjax.data import dataset
from sedjax.metrics import sed_eval_scores

ROOT = pathlib.Path(__file__).parents[1]

# recipe -> (segment F1 above the clip prior, event F1 at least)
FLOORS = {"two_pass": (0.20, None), "mean_teacher": (0.20, 0.35)}


@pytest.fixture(scope="module", params=sorted(FLOORS))
def finished(request, tmp_path_factory):
    recipe = request.param
    workdir = tmp_path_factory.mktemp(f"floors_{recipe}")
    cmd = [sys.executable, "-m", "sedjax.main", f"--config=configs/learnable.py:{recipe}",
           f"--workdir={workdir}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return recipe, workdir


def constant_predictors(workdir: pathlib.Path, split_name: str = "test") -> dict:
    """Segment- and event-based macro F1 of the all-zero and clip-prior predictors."""
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    classes = list(config.data.classes)
    split = dataset.load_split(workdir / "synthetic", split_name, classes)
    everywhere = [{"filename": name, "onset": 0.0, "offset": sf.info(str(path)).duration,
                   "event_label": label}
                  for name, path in zip(split.filenames, split.paths) for label in classes]
    out = {}
    for name, estimated in (("all_zero", []), ("clip_prior", everywhere)):
        r = sed_eval_scores.evaluate_events(split.reference_events(), estimated, split.filenames,
                                       classes, config.evaluation)
        out[name] = {kind: r[kind]["f_measure_macro"] or 0.0  # None: nothing estimated
                     for kind in ("segment_based", "event_based")}
    return out


def test_each_recipe_beats_constant_predictors(finished):
    recipe, workdir = finished
    results = json.loads((workdir / "results.json").read_text())
    assert results["recipe"] == recipe
    test = results["test"]
    segment, event = (test[k]["f_measure_macro"] for k in ("segment_based", "event_based"))
    constant = constant_predictors(workdir)
    assert constant["all_zero"]["segment_based"] == 0.0
    best_constant = max(c["segment_based"] for c in constant.values())
    assert best_constant > 0.2  # the clip prior is a real baseline on this set
    margin, event_floor = FLOORS[recipe]
    print(f"{recipe}: segment F1 {segment:.3f} vs constant {best_constant:.3f}, "
          f"event F1 {event:.3f}")
    assert segment >= best_constant + margin, (segment, constant)
    if event_floor is not None:  # localizes: event F1 well above the clip prior's
        assert event >= event_floor > constant["clip_prior"]["event_based"], (event, constant)


# the DESED path (configs/learnable.py:desed, seeds 0-2): the mean test PSDS1 of the three
# runs above the same seeds' untrained models (one step at a learning rate of ~0) by this
# margin, and at least two of the three runs above their untrained models. Measured
# (2026-12-06, 2-core CPU, single runs): test PSDS1 0.384 / 0.395 / 0.000 against 0.000
# untrained; when a run starts to localize varies with the seed (seed 2's validation PSDS1 was
# still ~0 at its last epoch), so one run of three may not have started within 240 steps
DESED_MEAN_PSDS1_MARGIN = 0.05
SEEDS = (0, 1, 2)


def _run_main(workdir: pathlib.Path, *overrides: str) -> dict:
    cmd = [sys.executable, "-m", "sedjax.main", "--config=configs/learnable.py:desed",
           f"--workdir={workdir}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((workdir / "results.json").read_text())


def _test_psds1(results: dict) -> float:
    return results["test"]["threshold_independent"]["psds1"] or 0.0  # None: nothing scored


def test_desed_path_beats_untrained_models_on_three_seeds(tmp_path):
    data = tmp_path / "s0" / "synthetic"  # generated by the first run, read by the others
    same_data = ["--config.data.dataset=desed", f"--config.data.root={data}"]
    trained = [_test_psds1(_run_main(tmp_path / f"s{k}", f"--config.seed={k}",
                                     *(same_data if k else [])))
               for k in SEEDS]
    # the same seeds' models as initialized (three runs of one step at a rate of ~0)
    _run_main(tmp_path / "untrained", *same_data, f"--config.seed={SEEDS[0]}",
              f"--config.num_runs={len(SEEDS)}", "--config.mean_teacher.num_epochs=1",
              "--config.mean_teacher.steps_per_epoch=1",
              "--config.mean_teacher.learning_rate=1e-12")
    untrained = [_test_psds1(json.loads((tmp_path / "untrained" / f"run{k}" / "results.json")
                                        .read_text())) for k in range(len(SEEDS))]
    print(f"desed test PSDS1 {trained} vs untrained {untrained}")
    assert sum(t > u for t, u in zip(trained, untrained)) >= 2, (trained, untrained)
    mean = sum(trained) / len(trained)
    assert mean >= sum(untrained) / len(untrained) + DESED_MEAN_PSDS1_MARGIN, (trained, untrained)
