"""The protocol: every choice a run makes is made on validation; the test labels only score.

The same tiny run on two copies of one dataset whose test labels differ (other classes, other
times) must choose every checkpoint, threshold and median-filter length alike and predict the
same probabilities bit for bit; only the test scores may change.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs.baseline import CLASSES
from sedjax.data import synthetic

ROOT = pathlib.Path(__file__).parents[1]


def _swap_test_labels(root: pathlib.Path) -> None:
    """Rewrites metadata/test/test.csv: every event another class, 1 s later (clipped)."""
    path = root / "metadata/test/test.csv"
    lines = path.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        name, onset, offset, label = line.split("\t")
        if label:
            label = CLASSES[(CLASSES.index(label) + 3) % len(CLASSES)]
            onset, offset = (f"{min(float(t) + 1.0, 10.0):.3f}" for t in (onset, offset))
        out.append("\t".join((name, onset, offset, label)))
    assert out != lines
    path.write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("protocol")
    same = synthetic.generate(base / "data", num_weak=20, num_unlabeled=16, num_test=8,
                              num_strong=12, num_validation=8, seed=1234, num_workers=2)
    swapped = base / "swapped"
    shutil.copytree(same, swapped)
    _swap_test_labels(swapped)
    return base, same, swapped


def _run(config: str, root: pathlib.Path, workdir: pathlib.Path, *overrides: str) -> dict:
    cmd = [sys.executable, "-m", "sedjax.main", f"--config={config}", f"--workdir={workdir}",
           "--config.data.dataset=dcase2018", f"--config.data.root={root}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validation: event-based macro F1" in proc.stdout
    return json.loads((workdir / "results.json").read_text())


def _choices(workdir: pathlib.Path, stages: tuple) -> dict:
    """Everything a run chose: training summary, each stage's per-epoch validation scores
    and kept epoch, thresholds, post-processing; and its predicted probabilities."""
    out = {"training": json.loads((workdir / "training.json").read_text())}
    for stage in stages:
        result = json.loads((workdir / stage / "result.json").read_text())
        out[stage] = {"val_scores": [h["val_score"] for h in result["history"]],
                      "best_epoch": result["best_epoch"],
                      "thresholds": result.get("thresholds")}
    tuned = workdir / "postprocess.json"
    out["postprocess"] = json.loads(tuned.read_text()) if tuned.exists() else None
    return out


@pytest.mark.parametrize("config, stages, overrides", [
    ("configs/tiny.py", ("pass1", "pass2"), ()),
    ("configs/tiny_mean_teacher.py", ("mean_teacher",),
     ("--config.postprocess.tune.median_filters=(1,3,5,9)",)),
], ids=["two_pass", "mean_teacher_tuned"])
def test_test_labels_change_the_test_scores_and_nothing_else(roots, config, stages, overrides):
    base, same, swapped = roots
    name = pathlib.Path(config).stem
    a, b = base / f"{name}_same", base / f"{name}_swapped"
    results_a, results_b = _run(config, same, a, *overrides), _run(config, swapped, b, *overrides)
    assert _choices(a, stages) == _choices(b, stages)
    for split in ("validation", "test"):
        pa = np.load(a / "predictions" / f"{split}_probs.npy")
        pb = np.load(b / "predictions" / f"{split}_probs.npy")
        assert pa.tobytes() == pb.tobytes(), split
    assert results_a["validation"] == results_b["validation"]
    assert results_a["postprocess"] == results_b["postprocess"]
    if overrides:
        assert results_a["postprocess"]["tuned_on"] == "validation"
    # the test reference did change what was scored
    assert results_a["test"]["num_reference_events"] == results_b["test"]["num_reference_events"]
    assert results_a["test"]["segment_based"] != results_b["test"]["segment_based"]
