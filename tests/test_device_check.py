"""The device check: a --tiny run of every section (its JSON's structure and values), a section's
failure recorded without losing the others, the time budget, and launch/device_check.sh."""

import json
import os
import pathlib
import subprocess

import pytest

from sedjax.benchmarks import beats_encoder, device_pipeline, device_report, device_sections

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_tiny_check_every_section(tmp_path, capsys):
    out = tmp_path / "dc.json"
    before = os.environ.get("XLA_FLAGS")
    # the train-step section's share is not what this test measures: every row is run
    returned = device_report.run(str(out), tiny=True, budget_s=900, workdir=str(tmp_path / "wd"),
                                section_budgets={"train_step": 600})
    # the tiny flags reach its children only: later subprocesses of this session keep theirs
    assert os.environ.get("XLA_FLAGS") == before
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(returned))
    s = data["sections"]
    assert list(s) == list(device_report.SECTIONS)
    assert all(e["status"] in ("ok", "partial") for e in s.values()), s
    assert data["environment"]["backend"] == "cpu" and data["tiny"] is True
    rows = s["train_step"]["results"]["rows"]
    assert {(r["model"], r["dtype"]) for r in rows} <= {
        (m, d) for m in ("crnn", "desed_crnn") for d in ("float32", "bfloat16")}
    assert rows and all(r["clips_per_s"] > 0 and r["gflops_per_device"] > 0 for r in rows)
    assert rows[0]["model"] == "crnn" and rows[0]["num_frames"] == 64
    assert not s["train_step"]["results"]["skipped"]
    # each model and dtype with both kernel paths, the plain one first
    for m in ("crnn", "desed_crnn"):
        assert [r["kernels"] for r in rows if (r["model"], r["dtype"]) == (m, "float32")] == [
            "plain", "cpu kernels"]
    runs = s["runs_per_program"]["results"]
    cpu_row = next(r for r in rows if r["kernels"] == "cpu kernels"
                   and r["batch_size"] == device_sections.TINY.runs_batch_size)
    assert runs["separate_clips_per_s"] == cpu_row["clips_per_s"]  # 'auto' on the CPU
    assert set(runs["clips_per_s"]) | set(runs["skipped"]) == {"1", "2"}
    assert runs["separate_clips_per_s"] > 0 and all(v > 0 for v in runs["clips_per_s"].values())
    mel = s["logmel"]["results"]
    assert all(v > 0 for v in mel["clips_per_s"].values()) and mel["max_abs_diff"] < 1e-4
    beats_rows = s["beats"]["results"]["rows"]
    assert [(r["size"], r["dtype"]) for r in beats_rows] == [("tiny", "float32"),
                                                              ("tiny", "bfloat16")]
    assert all(r["clips_per_s"] > 0 for r in beats_rows)
    pipe = s["pipeline"]["results"]
    assert set(pipe) == {"two_pass", "mean_teacher"}
    configured = {"pass1": 2, "pass2": 1, "mean_teacher": 2}  # tiny.py, tiny_mean_teacher.py
    for recipe, p in pipe.items():
        assert "error" not in p, p.get("log_tail")
        assert {"data", "training", "predict"} <= set(p["timings_s"])
        assert p["timings_s"]["training"] > 0
        assert p["synthetic_sizes"]["num_weak"] == 20  # both on tiny.py's dataset
        for stage, st in p["stages"].items():
            assert st["epochs_run"] == 1 and st["seconds_per_epoch"] > 0
            assert st["configured_epochs"] == configured[stage]
            assert st["extrapolated_s"] == pytest.approx(st["seconds_per_epoch"]
                                                         * configured[stage])
        assert p["extrapolated_total_s"] > p["extrapolated_training_s"] > 0
    assert set(pipe["two_pass"]["stages"]) == {"pass1", "pass2"}
    assert set(pipe["mean_teacher"]["stages"]) == {"mean_teacher"}
    assert s["memory"]["results"] == {"peak_bytes_in_use": None, "bytes_limit": None}  # CPU
    printed = capsys.readouterr().out
    table = printed[printed.index("== sedjax device check"):]
    for name in device_report.SECTIONS[1:]:
        assert f" {name} " in table
    assert "full schedule, extrapolated" in table


def stub_sections(monkeypatch, calls: list, path: pathlib.Path):
    def train(sizes, batch_sizes, deadline):
        calls.append("train_step")
        raise RuntimeError("out of memory (stub)")

    def runs(sizes, deadline, train=None):
        calls.append("runs_per_program")
        # the JSON on disk already holds the failed section before the next one starts
        on_disk = json.loads(path.read_text())["sections"]
        assert on_disk["train_step"]["status"] == "error"
        return {"batch_size_per_run": 4, "separate_clips_per_s": 2.0, "clips_per_s": {"1": 2.0},
                "speedup_vs_separate": {"1": 1.0}, "skipped": ["2"]}

    def logmel(sizes, deadline):
        calls.append("logmel")
        return {"clips": 2, "batch_size": 2, "workers": 2, "max_abs_diff": 0.0,
                "clips_per_s": {"jax": 4.0, "librosa_serial": 1.0, "librosa_all_cores": 2.0}}

    def beats(sizes, deadline):
        calls.append("beats")
        return {"rows": [{"size": "tiny", "dtype": "float32", "clips": 2, "seconds": 2.0,
                          "clips_per_s": 12.5}], "skipped": []}

    def pipeline(sizes, workdir, deadline):
        calls.append("pipeline")
        return {"two_pass": {"error": "exit status 1", "log_tail": "boom"}}
    monkeypatch.setattr(device_sections, "train_section", train)
    monkeypatch.setattr(device_sections, "runs_section", runs)
    monkeypatch.setattr(device_sections, "logmel_section", logmel)
    monkeypatch.setattr(device_sections, "beats_section", beats)
    monkeypatch.setattr(device_pipeline, "pipeline_section", pipeline)


def test_failed_section_is_recorded_and_the_others_run(tmp_path, monkeypatch, capsys):
    out, calls = tmp_path / "dc.json", []
    stub_sections(monkeypatch, calls, out)
    data = device_report.run(str(out), tiny=True, budget_s=100)
    assert calls == ["train_step", "runs_per_program", "logmel", "beats", "pipeline"]
    s = json.loads(out.read_text())["sections"]
    assert s["train_step"]["status"] == "error"
    assert "RuntimeError: out of memory (stub)" in s["train_step"]["error"]
    assert "Traceback" in s["train_step"]["traceback"]
    assert s["runs_per_program"]["status"] == "partial"  # K=2 skipped
    assert s["logmel"]["status"] == "ok" and s["pipeline"]["status"] == "partial"
    assert s["beats"]["status"] == "ok"
    assert s["memory"]["status"] == "ok"
    assert data["wall_s"] >= 0
    table = capsys.readouterr().out
    assert "train_step         ERROR: RuntimeError: out of memory (stub)" in table
    assert "device 2.00x" in table and "two_pass: exit status 1" in table
    assert " beats              BEATs tiny float32, 2 x 2 s clips" in table
    assert "12.50  clips/s (embeddings)" in table


def test_spent_budget_skips_sections_but_not_memory(tmp_path, monkeypatch):
    calls = []
    stub_sections(monkeypatch, calls, tmp_path / "dc.json")
    data = device_report.run(str(tmp_path / "dc.json"), tiny=True, budget_s=1e-9)
    assert calls == []
    s = data["sections"]
    assert all(s[n]["status"] == "skipped" for n in device_report.SECTIONS[1:-1])
    assert s["memory"]["status"] == "ok"


def test_beats_section(monkeypatch):
    """The tiny BEATs per dtype, the JAX side only (never the reference, even where a
    checkout is set); a spent deadline skips what is left."""
    def no_reference(*args):
        raise AssertionError("the device check looked for the PyTorch reference")
    monkeypatch.setattr(beats_encoder, "beats_reference", no_reference)
    sizes = device_sections.TINY
    r = device_sections.beats_section(sizes, deadline=float("inf"))
    assert [(row["dtype"], row["clips"], row["seconds"]) for row in r["rows"]] == [
        ("float32", 2, 2.0), ("bfloat16", 2, 2.0)]
    assert all(row["clips_per_s"] > 0 and row["tokens"] == 12 * 8 and row["width"] == 32
               for row in r["rows"])
    assert r["skipped"] == []
    spent = device_sections.beats_section(sizes, deadline=0.0)
    assert spent["rows"] == [] and spent["skipped"] == ["BEATs tiny float32",
                                                        "BEATs tiny bfloat16"]


def test_launch_script(tmp_path):
    """The script from another folder: the JSON lands there (relative --json), flags pass on."""
    env = dict(os.environ, SEDJAX_NO_REEXEC="1")
    proc = subprocess.run(["bash", str(REPO / "launch" / "device_check.sh"), "--tiny",
                           "--sections=", "--json", "out.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "out.json").read_text())
    assert list(data["sections"]) == ["environment", "memory"] and data["tiny"] is True
    assert "== sedjax device check" in proc.stdout
