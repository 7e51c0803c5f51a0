"""sedjax.onsets: onset statistics of detected events against the reference."""

import json

import pytest

from sedjax import onsets
from sedjax.data import event_files


def _ev(f, on, off, label):
    return {"filename": f, "onset": on, "offset": off, "event_label": label}


def test_statistics_of_known_events():
    reference = [_ev("a", 1.0, 3.0, "Dog"), _ev("a", 6.0, 7.0, "Dog"), _ev("b", 0.1, 2.0, "Cat"),
                 _ev("b", 4.0, 5.0, "Speech")]
    estimated = [_ev("a", 0.0, 3.5, "Dog"),  # nearest reference onset 1.0: -1.0 s, offset +0.5
                 _ev("a", 6.1, 7.0, "Dog"),  # +0.1 s: inside the collar
                 _ev("b", 0.15, 2.2, "Cat"),  # +0.05 s
                 _ev("b", 0.0, 1.0, "Dog")]  # no Dog in clip b: not matched
    s = onsets.onset_statistics(reference, estimated)
    assert s["detected_starting_in_first_0.2s"] == pytest.approx(3 / 4)
    assert s["reference_starting_in_first_0.2s"] == pytest.approx(1 / 4)
    assert s["matched_events"] == 3
    assert s["median_onset_error_s"] == pytest.approx(0.05)
    assert s["median_abs_onset_error_s"] == pytest.approx(0.1)
    assert s["onsets_inside_collar"] == pytest.approx(2 / 3)
    assert s["median_offset_error_s"] == pytest.approx(0.2)


def test_command_on_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "synthetic" / "metadata" / "test").mkdir(parents=True)
    (run / "predictions").mkdir()
    event_files.write_events(run / "synthetic/metadata/test/test.csv",
                             [_ev("a.wav", 2.0, 4.0, "Dog")], ["a.wav"])
    event_files.write_events(run / "predictions/test_events.csv",
                             [_ev("a.wav", 0.0, 4.0, "Dog")], ["a.wav"])
    out = tmp_path / "o.json"
    assert onsets.main([str(run), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())[str(run)]
    assert figures["median_onset_error_s"] == pytest.approx(-2.0)
    assert figures["detected_starting_in_first_0.2s"] == 1.0
    assert "-2.00" in capsys.readouterr().out
    assert onsets.main([str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
