"""Tests of sedjax.metrics.sed_eval_scores (sed_eval wrapper) and the `python -m sedjax.evaluate` command."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import sed_eval

from configs import baseline
from sedjax.data import event_files
from sedjax.metrics import sed_eval_scores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = list(baseline.CLASSES)  # the default class list of `python -m sedjax.evaluate`
CONFIG = {
    "t_collar": 0.2,
    "percentage_of_length": 0.2,
    "evaluate_onset": True,
    "evaluate_offset": True,
    "event_matching_type": "optimal",
    "segment_seconds": 1.0,
}
FILES = ["f1.wav", "f2.wav", "f3.wav", "f4.wav"]


def ev(name, onset, offset, label):
    return {"filename": name, "onset": onset, "offset": offset, "event_label": label}


REFERENCE = [
    ev("f1.wav", 1.0, 3.0, "Cat"),
    ev("f1.wav", 5.0, 6.0, "Dog"),
    ev("f2.wav", 0.0, 4.0, "Speech"),
    ev("f2.wav", 6.0, 9.0, "Speech"),
    ev("f3.wav", 2.0, 8.0, "Blender"),
    # f4.wav: no reference event
]
ESTIMATED = [
    ev("f1.wav", 1.15, 3.1, "Cat"),  # onset 0.15 < 0.2, offset 0.1 < 0.2: hit
    ev("f1.wav", 5.3, 6.0, "Dog"),  # onset off by 0.3 > 0.2: miss + false alarm
    ev("f2.wav", 0.1, 4.7, "Speech"),  # offset off 0.7 <= max(0.2, 0.2 * 4 s): hit
    ev("f2.wav", 6.0, 9.7, "Speech"),  # offset off 0.7 > max(0.2, 0.2 * 3 s): miss + false alarm
    ev("f3.wav", 2.0, 8.0, "Blender"),  # exact: hit
    ev("f4.wav", 1.0, 2.0, "Dishes"),  # false alarm in a file without events
]


def sed_eval_direct(reference, estimated, files):
    """The challenge's evaluation_measures.py loop, written out on sed_eval itself."""
    em = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=CLASSES, t_collar=0.2, percentage_of_length=0.2, evaluate_onset=True,
        evaluate_offset=True, event_matching_type="optimal",
        empty_system_output_handling="zero_score")
    sm = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=CLASSES, time_resolution=1.0)
    for name in files:
        ref = [e for e in reference if e["filename"] == name]
        est = [e for e in estimated if e["filename"] == name]
        em.evaluate(ref, est)
        sm.evaluate(ref, est)
    return em, sm


def same(ours, theirs):
    """Our JSON value (None for NaN) equals sed_eval's number."""
    if theirs is None or (isinstance(theirs, float) and math.isnan(theirs)):
        return ours is None
    return ours is not None and ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)


def check_against_sed_eval(results, em, sm):
    for key, m in (("event_based", em), ("segment_based", sm)):
        r = results[key]
        macro, micro = m.results_class_wise_average_metrics(), m.results_overall_metrics()
        assert same(r["f_measure_macro"], macro["f_measure"]["f_measure"])
        assert same(r["error_rate_macro"], macro["error_rate"]["error_rate"])
        assert same(r["f_measure_micro"], micro["f_measure"]["f_measure"])
        assert same(r["error_rate_micro"], micro["error_rate"]["error_rate"])
        for label, c in m.results_class_wise_metrics().items():
            for field, section in (("f_measure", "f_measure"), ("precision", "f_measure"),
                                   ("recall", "f_measure"), ("error_rate", "error_rate")):
                assert same(r["class_wise"][label][field], c[section][field]), (key, label, field)


def test_matches_sed_eval_and_hand_counts():
    results = sed_eval_scores.evaluate_events(REFERENCE, ESTIMATED, FILES, CLASSES, CONFIG)
    check_against_sed_eval(results, *sed_eval_direct(REFERENCE, ESTIMATED, FILES))
    json.dumps(results, allow_nan=False)  # strict JSON: NaN became null

    e = results["event_based"]
    cw = e["class_wise"]
    # By hand: Cat 1/1 hit, Dog 0/1 (onset outside the collar), Speech 1/2 (second offset
    # outside max(0.2, 20 %)), Blender 1/1, Dishes one false alarm and no reference.
    assert cw["Cat"]["f_measure"] == 1.0 and cw["Cat"]["error_rate"] == 0.0
    assert cw["Dog"]["f_measure"] == 0.0
    assert cw["Dog"]["error_rate"] == pytest.approx(2.0)  # one deletion + one insertion
    assert cw["Speech"]["f_measure"] == pytest.approx(0.5)
    assert cw["Speech"]["error_rate"] == pytest.approx(1.0)
    assert cw["Blender"]["f_measure"] == 1.0
    assert cw["Dishes"]["f_measure"] is None and cw["Dishes"]["recall"] is None
    assert cw["Dishes"]["num_estimated"] == 1 and cw["Dishes"]["num_reference"] == 0
    # Macro F averages the classes where F is defined: (1 + 0 + 0.5 + 1) / 4.
    assert e["f_measure_macro"] == pytest.approx(0.625)
    # Micro: 3 hits among 5 reference and 6 estimated events: P 3/6, R 3/5, F 6/11;
    # ER = (2 deletions + 3 insertions) / 5.
    assert e["f_measure_micro"] == pytest.approx(6 / 11)
    assert e["error_rate_micro"] == pytest.approx(1.0)
    assert (results["num_files"], results["num_reference_events"],
            results["num_estimated_events"]) == (4, 5, 6)


def test_perfect_estimate():
    results = sed_eval_scores.evaluate_events(REFERENCE, REFERENCE, FILES, CLASSES, CONFIG)
    for key in ("event_based", "segment_based"):
        assert results[key]["f_measure_macro"] == pytest.approx(1.0)
        assert results[key]["f_measure_micro"] == pytest.approx(1.0)
        assert results[key]["error_rate_micro"] == pytest.approx(0.0)
        assert results[key]["error_rate_macro"] == pytest.approx(0.0)


def test_one_onset_off_by_point_three_is_miss_and_false_alarm():
    shifted = [dict(e) for e in REFERENCE]
    shifted[0]["onset"] += 0.3  # the Cat event
    cat = sed_eval_scores.evaluate_events(REFERENCE, shifted, FILES, CLASSES, CONFIG)["event_based"]
    assert cat["class_wise"]["Cat"]["f_measure"] == 0.0
    assert cat["class_wise"]["Cat"]["error_rate"] == pytest.approx(2.0)
    assert cat["error_rate_micro"] == pytest.approx(2 / 5)
    # 0.15 s is inside the collar: still a hit.
    shifted[0]["onset"] = REFERENCE[0]["onset"] + 0.15
    ok = sed_eval_scores.evaluate_events(REFERENCE, shifted, FILES, CLASSES, CONFIG)["event_based"]
    assert ok["class_wise"]["Cat"]["f_measure"] == 1.0


def test_empty_system_output_scores_zero_not_nan():
    results = sed_eval_scores.evaluate_events(REFERENCE, [], FILES, CLASSES, CONFIG)
    assert results["event_based"]["f_measure_macro"] == 0.0
    assert results["event_based"]["error_rate_micro"] == pytest.approx(1.0)


def test_rejects_unknown_file_and_label():
    with pytest.raises(ValueError, match="zz.wav"):
        sed_eval_scores.evaluate_events(REFERENCE, [ev("zz.wav", 0, 1, "Cat")], FILES, CLASSES, CONFIG)
    with pytest.raises(ValueError, match="Unicorn"):
        sed_eval_scores.evaluate_events(REFERENCE, [ev("f1.wav", 0, 1, "Unicorn")], FILES, CLASSES,
                                   CONFIG)


def test_settings_are_required_and_read_from_config_or_mapping():
    assert sed_eval_scores.evaluation_settings(baseline.get_config().evaluation) == CONFIG
    assert sed_eval_scores.evaluation_settings(dict(CONFIG, extra=1)) == CONFIG  # others ignored
    partial = {k: v for k, v in CONFIG.items() if k != "t_collar"}
    with pytest.raises(ValueError, match="t_collar"):
        sed_eval_scores.evaluate_events(REFERENCE, REFERENCE, FILES, CLASSES, partial)
    with pytest.raises(ValueError, match="segment_seconds"):
        sed_eval_scores.evaluate_events(REFERENCE, REFERENCE, FILES, CLASSES, None)
    with pytest.raises(TypeError):  # no default class list or settings any more
        sed_eval_scores.evaluate_events(REFERENCE, REFERENCE, FILES)
    config = baseline.get_config().evaluation  # a ConfigDict scores as the same dict
    assert (sed_eval_scores.evaluate_events(REFERENCE, ESTIMATED, FILES, CLASSES, config)
            == sed_eval_scores.evaluate_events(REFERENCE, ESTIMATED, FILES, CLASSES, CONFIG))


def test_format_table_lists_classes_and_averages():
    results = sed_eval_scores.evaluate_events(REFERENCE, ESTIMATED, FILES, CLASSES, CONFIG)
    table = sed_eval_scores.format_table(results)
    for label in CLASSES:
        assert label in table
    assert "macro" in table and "micro" in table and "62.50" in table


# ---- the command ----------------------------------------------------------------------------

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "sedjax.evaluate", *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_cli_json_equals_evaluate_events(tmp_path):
    ref_csv, est_csv, out = tmp_path / "ref.csv", tmp_path / "est.csv", tmp_path / "res.json"
    event_files.write_events(ref_csv, REFERENCE, FILES)
    # The estimate leaves out f3.wav entirely: scored as a file with no estimated events.
    estimated = [e for e in ESTIMATED if e["filename"] != "f3.wav"]
    event_files.write_events(est_csv, estimated, ["f1.wav", "f2.wav", "f4.wav"])

    proc = run_cli(ref_csv, est_csv, "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "Vacuum_cleaner" in proc.stdout
    expected = sed_eval_scores.evaluate_events(REFERENCE, estimated, FILES, CLASSES, CONFIG)
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected))
    assert expected["event_based"]["class_wise"]["Blender"]["f_measure"] == 0.0


def test_cli_collar_option(tmp_path):
    ref_csv, est_csv, out = tmp_path / "ref.csv", tmp_path / "est.csv", tmp_path / "res.json"
    event_files.write_events(ref_csv, REFERENCE, FILES)
    event_files.write_events(est_csv, ESTIMATED, FILES)
    proc = run_cli(ref_csv, est_csv, "--json", out, "--t_collar", "0.5")
    assert proc.returncode == 0, proc.stderr
    # With a 0.5 s collar the Dog onset (0.3 s off) becomes a hit.
    assert json.loads(out.read_text())["event_based"]["class_wise"]["Dog"]["f_measure"] == 1.0


def test_cli_missing_file_and_unknown_estimate_file(tmp_path):
    ref_csv = tmp_path / "ref.csv"
    event_files.write_events(ref_csv, REFERENCE, FILES)
    missing = tmp_path / "no_such_estimate.csv"
    proc = run_cli(ref_csv, missing)
    assert proc.returncode == 2
    assert "no_such_estimate.csv" in proc.stderr

    est_csv = tmp_path / "est.csv"
    event_files.write_events(est_csv, [ev("stranger.wav", 0.0, 1.0, "Cat")], ["f1.wav"])
    proc = run_cli(ref_csv, est_csv)
    assert proc.returncode == 2
    assert "stranger.wav" in proc.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text("filename\tonset\toffset\tevent_label\nf1.wav\tx\t1\tCat\n")
    proc = run_cli(ref_csv, bad)
    assert proc.returncode == 2 and "bad.csv:2" in proc.stderr


def write_config(path, classes=("Cat", "Dog", "Speech", "Blender", "Dishes"), t_collar=0.5,
                 evaluation=True):
    """A config file deriving from the baseline (as configs/*.py do), with other settings."""
    lines = ["from configs import baseline", "", "", "def get_config():",
             "    c = baseline.get_config()", f"    c.data.classes = {tuple(classes)!r}",
             f"    c.evaluation.t_collar = {t_collar!r}"]
    if not evaluation:
        lines.append("    del c.evaluation")
    path.write_text("\n".join(lines + ["    return c", ""]))
    return path


def test_cli_reads_classes_and_settings_from_config(tmp_path):
    ref_csv, est_csv, out = tmp_path / "ref.csv", tmp_path / "est.csv", tmp_path / "res.json"
    event_files.write_events(ref_csv, REFERENCE, FILES)
    event_files.write_events(est_csv, ESTIMATED, FILES)
    config = write_config(tmp_path / "five.py")
    proc = run_cli(ref_csv, est_csv, "--json", out, "--config", config)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert sorted(results["event_based"]["class_wise"]) == sorted(
        ["Cat", "Dog", "Speech", "Blender", "Dishes"])
    assert "Vacuum_cleaner" not in proc.stdout
    assert results["settings"]["t_collar"] == 0.5  # the config's collar: the Dog onset is a hit
    assert results["event_based"]["class_wise"]["Dog"]["f_measure"] == 1.0
    # Options override the config: --t_collar and --classes.
    proc = run_cli(ref_csv, est_csv, "--json", out, "--config", config, "--t_collar", "0.2",
                   "--classes", ",".join(CLASSES))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == json.loads(json.dumps(
        sed_eval_scores.evaluate_events(REFERENCE, ESTIMATED, FILES, CLASSES, CONFIG)))
    # A label outside the config's classes is bad input that names where the list came from.
    small = write_config(tmp_path / "small.py", classes=("Cat", "Dog"))
    proc = run_cli(ref_csv, est_csv, "--config", small)
    assert proc.returncode == 2 and "Speech" in proc.stderr and "small.py" in proc.stderr


def test_cli_bad_config_is_one_message(tmp_path):
    ref_csv = tmp_path / "ref.csv"
    event_files.write_events(ref_csv, REFERENCE, FILES)
    no_get_config = tmp_path / "no_get_config.py"
    no_get_config.write_text("X = 1\n")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    cases = [(tmp_path / "missing_config.py", "missing_config.py"),
             (no_get_config, "get_config"), (broken, "broken.py"),
             (write_config(tmp_path / "no_eval.py", evaluation=False), "evaluation")]
    for config, needle in cases:
        proc = run_cli(ref_csv, ref_csv, "--config", config)
        assert proc.returncode == 2, (config, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in errors[0] and config.name in errors[0], errors
    proc = run_cli(ref_csv, ref_csv, "--classes", " , ")
    assert proc.returncode == 2 and "--classes is empty" in proc.stderr


def test_results_are_plain_numbers():
    results = sed_eval_scores.evaluate_events(REFERENCE, ESTIMATED, FILES, CLASSES, CONFIG)

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            assert not isinstance(x, np.generic)
            assert not (isinstance(x, float) and not math.isfinite(x))

    walk(results)
