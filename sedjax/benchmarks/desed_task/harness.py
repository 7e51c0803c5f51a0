"""The side-by-side runs: the data once, then per seed sedjax and DESED_task, each a measured
subprocess, scored and written to side_by_side.json as soon as it ends (see __init__.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

from sedjax.benchmarks.desed_task import conf as conf_lib
from sedjax.benchmarks.desed_task import layout as layout_lib
from sedjax.benchmarks.desed_task import process, scoring, table
from sedjax.config import config_files
from sedjax.data import event_files
from sedjax.system import cli

ENV = "SEDJAX_DESED_TASK"


class HarnessError(cli.UserError):
    """A mistake in the harness's inputs (its flags, the folder, a workdir of other runs)."""


def load_config(spec: str):
    """The ConfigDict of 'path.py' or 'path.py:variant' (get_config(variant))."""
    path, _, variant = spec.partition(":")
    if not variant:
        return config_files.load(path)
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        raise HarnessError(f"--config: no such file: {file}")
    config_files._ensure_on_sys_path(config_files.repo_root())  # noqa: SLF001 (`from configs`)
    module_spec = importlib.util.spec_from_file_location(f"_sedjax_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        return module.get_config(variant)
    except Exception as e:
        raise HarnessError(f"--config {spec}: {type(e).__name__}: {e}") from None


@dataclasses.dataclass
class Setup:
    """What every run of one harness workdir shares."""

    workdir: pathlib.Path
    config_spec: str  # absolute path[:variant]
    config: Any
    layout: layout_lib.Layout
    classes: list[str]
    desed_task: pathlib.Path | None
    sedjax_args: list[str]
    heartbeat: float
    sedjax_torch: bool = False  # let sedjax's process import torch (see WITHOUT_TORCH)


def data_folder(config, data_root: str | None, workdir: pathlib.Path) -> pathlib.Path:
    """--data_root; or the config's DESED folder (data.dataset 'desed'); or the config's
    generated dataset, written once into workdir/data (sedjax.data.synthetic)."""
    if data_root:
        return pathlib.Path(data_root).expanduser().resolve()
    if config.data.dataset == "desed":
        return pathlib.Path(str(config.data.root)).expanduser().resolve()
    if config.data.dataset != "synthetic" or config.data.synthetic.layout != "desed":
        raise HarnessError("give --data_root (a DESED-layout folder), or a config that generates "
                           "one (data.dataset 'synthetic', data.synthetic.layout 'desed')")
    from sedjax.data import synthetic

    out = workdir / "data"
    print(f"data: the config's generated DESED-layout set in {out}", flush=True)
    return synthetic.ensure_dataset(config.data, out).resolve()


def checkout_commit(path: pathlib.Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def settings(setup: Setup) -> dict:
    """What the runs of a workdir must share: a later invocation with other settings is refused
    (its runs would not be comparable)."""
    values = setup.config.to_json_best_effort(sort_keys=True)
    return {"config": setup.config_spec,
            "config_sha1": hashlib.sha1(values.encode()).hexdigest()[:12],
            "config_values": json.loads(values),
            "data_root": str(setup.layout.root), "classes": setup.classes,
            "desed_task": str(setup.desed_task) if setup.desed_task else None,
            "desed_task_commit": checkout_commit(setup.desed_task) if setup.desed_task else None,
            "sedjax_args": setup.sedjax_args, "sedjax_torch": setup.sedjax_torch}


def open_state(setup: Setup) -> dict:
    """side_by_side.json's content: the one there (same settings) or a new one."""
    wanted = settings(setup)
    state = table.read(setup.workdir)
    if state is not None:
        had = state.get("settings", {})
        differ = sorted(k for k in wanted if k not in ("desed_task_commit", "config_values")
                        and had.get(k) != wanted[k]
                        and not (k == "desed_task" and wanted[k] is None))
        if differ:
            named = [k if k != "config_sha1" else "the config's values: " + ", ".join(
                _differences(had.get("config_values", {}), wanted["config_values"])[:5])
                for k in differ]
            raise HarnessError(f"{setup.workdir} holds runs made with other settings "
                               f"({'; '.join(named)}); use another --workdir")
        if wanted["desed_task"] and not had.get("desed_task"):
            had.update(desed_task=wanted["desed_task"],
                       desed_task_commit=wanted["desed_task_commit"])
        return state
    layout = setup.layout
    return {"version": 1, "settings": wanted, "runs": {},
            "data": {"root": str(layout.root), "classes": setup.classes,
                     "test_source": layout.test_source, "test_tsv": str(layout.test.tsv),
                     "synth_val_source": layout.synth_val_source,
                     "test_clips_with_events": len(layout_lib.clips_with_events(
                         layout.test.tsv))},
            "cpu_count": os.cpu_count()}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the values that differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} {a!r} -> {b!r}"]


# ---------------------------------------------------------------------------- sedjax
# `python -m sedjax.main ARGS` in a process where `import torch` fails: sedjax's install has no
# torch, but in an environment shared with DESED_task tensorboardX (sedjax's TensorBoard writer)
# imports it when it can (memory and start-up: docs/speed.md). GLIBC_TUNABLES as sedjax.main's own
# re-exec sets it (sedjax.system.host), which it then skips.
WITHOUT_TORCH = """\
import runpy, sys
class NoTorch:  # a finder that fails `import torch` (sys.modules stays without it: scipy looks)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is hidden from this sedjax run (side-by-side harness)")
sys.meta_path.insert(0, NoTorch())
runpy.run_module("sedjax.main", run_name="__main__", alter_sys=True)
"""


def sedjax_command(setup: Setup, seed: int, run_dir: pathlib.Path) -> tuple[list[str], dict]:
    """(command, extra environment) of one sedjax run."""
    c = setup.config
    args = [f"--config={setup.config_spec}", f"--workdir={run_dir}", f"--config.seed={seed}",
            "--config.data.dataset=desed", f"--config.data.root={setup.layout.root}"]
    if [str(x) for x in c.data.classes] != setup.classes:
        args.append(f"--config.data.classes={tuple(setup.classes)!r}")
    args += setup.sedjax_args
    if setup.sedjax_torch:
        return [sys.executable, "-m", "sedjax.main", *args], {}
    from sedjax.system import host

    tunables = ":".join(filter(None, [os.environ.get("GLIBC_TUNABLES", ""), host.TUNABLE]))
    return [sys.executable, "-c", WITHOUT_TORCH, *args], {"GLIBC_TUNABLES": tunables}


def sedjax_record(run_dir: pathlib.Path, setup: Setup) -> dict:
    """Timings and test scores of a finished sedjax run."""
    results = json.loads((run_dir / "results.json").read_text())
    timings = results.get("timings", {})
    epochs = next(iter(timings.get("epochs", {}).values()), [])
    per_epoch = [round(e["train_s"] + e.get("validate_s", 0.0), 3) for e in epochs]
    durations = event_files.read_durations(setup.layout.test.durations)
    tables, info = scoring.sedjax_tables(run_dir, durations)
    clips = [c for c in _event_clips(setup) if c in tables]
    model = info["predict_with"]
    return {"headline": model, "epochs": epochs, "epoch_s": per_epoch,
            "s_per_epoch": _mean(per_epoch), "s_per_epoch_after_first": _mean(per_epoch[1:]),
            "own_total_s": timings.get("total_s"), "compile_s": timings.get("compile_s"),
            "compile_cache": {k: timings.get(k) for k in ("cache_hits", "cache_misses")},
            "scoring": info, "own_test": _headline(results.get("test", {})),
            "scores": {model: scoring.score(tables, setup.layout.test.tsv, durations, clips,
                                            setup.classes)}}


# ---------------------------------------------------------------------------- DESED_task
def desed_command(setup: Setup, seed: int, run_dir: pathlib.Path) -> tuple[list[str], dict,
                                                                            list[str]]:
    """(driver command, steps, notes) after writing run_dir/conf.yaml."""
    base = conf_lib.read_default(setup.desed_task)
    conf, steps, notes = conf_lib.build(base, setup.config, setup.layout, setup.classes, seed,
                                        run_dir)
    conf_lib.write(conf, run_dir / "conf.yaml")
    command = [sys.executable, "-m", "sedjax.benchmarks.desed_task.driver",
               "--desed_task", str(setup.desed_task), "--conf", str(run_dir / "conf.yaml"),
               "--log_dir", str(run_dir / "exp"), "--out", str(run_dir),
               "--classes", json.dumps(setup.classes), "--seed", str(seed),
               "--limit_train_batches", str(steps["limit_train_batches"])]
    if setup.layout.strong_real:
        command.append("--strong_real")
    return command, steps, notes


def desed_record(run_dir: pathlib.Path, setup: Setup) -> dict:
    """Timings, the test step's own metrics and both models' scores of a finished DESED_task
    run."""
    driver = json.loads((run_dir / "driver.json").read_text())
    # training + validation, as sedjax's train_s + validate_s (both without checkpoint writing)
    per_epoch = [round(e["train_s"] + e["validate_s"], 3) for e in driver["epochs"]]
    durations = event_files.read_durations(setup.layout.test.durations)
    scores, sources = {}, {}
    for model in ("student", "teacher"):
        folder = desed_scores_folder(run_dir, model)
        sources[model] = str(folder)
        tables = scoring.desed_tables(folder)
        clips = [c for c in _event_clips(setup) if c in tables]
        scores[model] = scoring.score(tables, setup.layout.test.tsv, durations, clips,
                                      setup.classes)
    return {"headline": str(setup.config.mean_teacher.predict_with), "epochs": driver["epochs"],
            "epoch_s": per_epoch, "s_per_epoch": _mean(per_epoch),
            "s_per_epoch_after_first": _mean(per_epoch[1:]),
            "steps_per_epoch": [e["steps"] for e in driver["epochs"]],
            "rampup_steps": driver.get("rampup_steps"), "own_total_s": driver.get("total_s"),
            "test_s": driver.get("test_s"), "best_model_path": driver.get("best_model_path"),
            "own_test_metrics": driver.get("test_metrics"), "scores": scores,
            "score_files": sources}


def desed_scores_folder(run_dir: pathlib.Path, model: str) -> pathlib.Path:
    """The test scores DESED_task's test step scored its PSDS1 on: its on_test_epoch_end writes
    them (compute_psds_from_scores' save_dir) to <log dir>/metrics_test/<model>/scenario1/
    scores; else the driver's copy of the same buffer (scores/<model>/postprocessed)."""
    found = sorted((run_dir / "exp").glob(f"version_*/metrics_test/{model}/scenario1/scores"),
                   key=lambda p: int(p.parts[-5].split("_")[1]))
    return found[-1] if found else run_dir / "scores" / model / "postprocessed"


def _headline(results: dict) -> dict:
    """A sedjax run's own test figures (every test clip, its results.json)."""
    t = results.get("threshold_independent") or {}
    return {"psds1": t.get("psds1"), "psds2": t.get("psds2"),
            "collar_f1": t.get("collar_f1_best_macro"), "num_clips": t.get("num_files"),
            "event_f1": (results.get("event_based") or {}).get("f_measure_macro")}


def _event_clips(setup: Setup) -> list[str]:
    """Audio ids of the test clips with events: the clips DESED_task's test step scores."""
    from sedjax.metrics.sed_scores_inputs import audio_id

    return [audio_id(n) for n in layout_lib.clips_with_events(setup.layout.test.tsv)]


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


# ---------------------------------------------------------------------------- the runs
def run_one(setup: Setup, state: dict, system: str, seed: int) -> bool:
    """Runs (or skips, when done) one system's run of one seed; True when it is done."""
    k = table.key(system, seed)
    if state["runs"].get(k, {}).get("status") == "done":
        print(f"{k}: done before, skipped", flush=True)
        return True
    run_dir = setup.workdir / "runs" / f"{system}_s{seed}"
    pid = process.running_pid(run_dir)
    if pid is not None:
        raise HarnessError(f"{k} still runs as process {pid}, started by an earlier harness "
                           f"that was killed: stop it (kill {pid}) and start again")
    if run_dir.exists():  # a run stopped midway: its times would not be one run's
        print(f"{k}: an unfinished run's folder {run_dir} is removed; starting over", flush=True)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    record: dict[str, Any] = {"system": system, "seed": seed, "status": "running",
                              "run_dir": str(run_dir)}
    env: dict = {}
    if system == "sedjax":
        (command, env), cwd = sedjax_command(setup, seed, run_dir), config_files.repo_root()
    else:
        command, steps, notes = desed_command(setup, seed, run_dir)
        cwd = run_dir
        record.update(steps=steps, notes=notes)
        for note in notes:
            print(f"  note: {note}", flush=True)
    print(f"{k}: running (log: {run_dir / 'log.txt'})", flush=True)
    done = process.run(command, run_dir / "log.txt", cwd, k, setup.heartbeat, env)
    record.update(returncode=done.returncode, wall_s=done.wall_s, peak_rss_mb=done.peak_rss_mb,
                  log=str(done.log))
    if done.returncode == 0:
        try:
            record.update((sedjax_record if system == "sedjax" else desed_record)(run_dir,
                                                                                 setup))
            record["status"] = "done"
        except (OSError, ValueError, KeyError) as e:
            record.update(status="failed", error=f"reading its outputs: {type(e).__name__}: {e}")
    else:
        record.update(status="failed", error=f"exit status {done.returncode}")
    state["runs"][k] = record
    table.write(setup.workdir, state)
    if record["status"] == "done":
        s = record["scores"][record["headline"]]
        print(f"{k}: {done.wall_s:.0f} s, peak RSS {done.peak_rss_mb:.0f} MB, "
              f"{record['s_per_epoch']} s/epoch; PSDS1 {_fmt(s['psds1'])}, PSDS2 "
              f"{_fmt(s['psds2'])}, best collar F1 {_fmt(s['collar_f1'])} "
              f"({record['headline']}, {s['num_clips']} clips)", flush=True)
        return True
    print(f"{k}: failed ({record['error']}); its log: {done.log}\n  "
          f"{process._last_line(done.log, 300)}", flush=True)  # noqa: SLF001
    return False


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"
