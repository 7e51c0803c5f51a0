"""sedjax.compare: mean and spread of finished runs, read from their results.json."""

import json
import statistics

import pytest

from sedjax import compare


def _run(path, event, segment):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"test": {
        "event_based": {"f_measure_macro": event},
        "segment_based": {"f_measure_macro": segment}}}))


def test_groups_are_summarized_with_mean_and_sample_std(tmp_path, capsys):
    for seed, (e, s) in enumerate([(0.40, 0.70), (0.50, 0.80), (0.60, 0.75)]):
        _run(tmp_path / f"lsp_s{seed}", e, s)
    _run(tmp_path / "mean_s0", 0.17, 0.60)
    out = tmp_path / "table.json"
    assert compare.main([f"lsp={tmp_path}/lsp_s*", f"mean={tmp_path}/mean_s*",
                         "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    lsp = table["lsp"]["event_f1"]
    assert lsp["mean"] == pytest.approx(50.0)
    assert lsp["std"] == pytest.approx(statistics.stdev([40.0, 50.0, 60.0]))
    assert (lsp["min"], lsp["max"]) == (pytest.approx(40.0), pytest.approx(60.0))
    assert table["lsp"]["segment_f1"]["mean"] == pytest.approx(75.0)
    assert table["mean"]["event_f1"]["std"] == 0.0 and len(table["mean"]["runs"]) == 1
    printed = capsys.readouterr().out
    assert "lsp" in printed and "50.0 ± 10.0 (40.0-60.0)" in printed


def test_unfinished_runs_and_bad_arguments_are_one_message(tmp_path, capsys):
    (tmp_path / "killed").mkdir()
    assert compare.main([f"x={tmp_path}/killed"]) == 2
    assert "results.json: not found" in capsys.readouterr().err
    assert compare.main([f"x={tmp_path}/nothing*"]) == 2
    assert "no run folder matches" in capsys.readouterr().err
    assert compare.main(["no_label"]) == 2
    assert "LABEL=WORKDIR_GLOB" in capsys.readouterr().err
