"""Tests of sedjax.reporting.outputs: results.json and the class score plot."""

import json
import sys

import numpy as np
import pytest

from sedjax.reporting import outputs

RESULTS = {
    "event_based": {
        "f_measure_macro": 0.25,
        "error_rate_macro": 1.5,
        "class_wise": {"Cat": {"f_measure": 0.5}, "Dog": {"f_measure": None}},
    },
    "segment_based": {
        "f_measure_macro": 0.6,
        "error_rate_macro": 0.7,
        "class_wise": {"Cat": {"f_measure": 0.8}, "Dog": {"f_measure": 0.4}},
    },
    "num_files": np.int64(3),
    "nan_score": float("nan"),
}


def test_write_results_json(tmp_path):
    extra = {"workdir": "w", "seconds": np.float32(2.5)}
    path = outputs.write_results(tmp_path / "work", RESULTS, extra=extra)
    assert path.endswith("results.json")
    loaded = json.loads(open(path).read())
    assert loaded["event_based"]["class_wise"]["Cat"]["f_measure"] == 0.5
    assert loaded["num_files"] == 3
    assert loaded["nan_score"] is None  # NaN is not valid JSON; written as null
    assert loaded["seconds"] == 2.5 and loaded["workdir"] == "w"
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["results.json"]  # no temp left
    # Rewriting replaces the file.
    outputs.write_results(tmp_path / "work", {"num_files": 1})
    assert json.loads(open(path).read()) == {"num_files": 1}


def test_write_results_refuses_clobbering_extra(tmp_path):
    with pytest.raises(ValueError, match="num_files"):
        outputs.write_results(tmp_path, RESULTS, extra={"num_files": 0})


def test_plot_class_scores_writes_png(tmp_path):
    path = outputs.plot_class_scores(RESULTS, tmp_path / "plots" / "class_scores.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_skipped_without_matplotlib(tmp_path, monkeypatch):
    # A None entry in sys.modules makes the import fail as if matplotlib were not installed.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert outputs.plot_class_scores(RESULTS, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()
