"""sedjax and DESED_task's 2023 baseline side by side, on the same DESED-layout data.

    python -m sedjax.benchmarks.desed_task --workdir=OUT [--data_root=DIR] [--seeds=0,1,2]
        [--config=configs/demo_desed.py] [--desed_task=/path/to/DESED_task]
        [--systems=sedjax,desed_task] [--only_table] [--convert_check]

For each seed, alternating (seed 0 sedjax, seed 0 DESED_task, seed 1 sedjax, ...):
- sedjax: `python -m sedjax.main --config=CONFIG --config.seed=K --config.data.dataset=desed
  --config.data.root=DIR` (OUT/runs/sedjax_sK/);
- DESED_task: its own recipes/dcase2023_task4_baseline/train_sed.py, data loaders and SEDTask4,
  from the checkout --desed_task (default $SEDJAX_DESED_TASK), driven by
  sedjax.benchmarks.desed_task.driver with confs/default.yaml rewritten from CONFIG
  (sedjax.benchmarks.desed_task.conf: the same batches, learning rate, EMA, ramp-up, epochs,
  steps per epoch, median filter, mixup, CRNN and features; OUT/runs/desed_task_sK/conf.yaml).
The data: --data_root, or the config's generated set written once into OUT/data; both systems
read that one folder. The class list is the sorted union of its metadata's event labels.

Each run's test frame scores are scored by one code path (sedjax.metrics.psds on
sed_scores_eval score tables, each system's scores median-filtered by its own post-processing)
on the test clips with events (the clips DESED_task's test step scores): PSDS1, PSDS2, best
collar F1. Wall time per epoch and in all, and the training process's peak resident memory,
are measured per run. OUT/side_by_side.json is rewritten after each run (a killed harness,
started again with the same flags, skips the finished runs and redoes the unfinished one); the
markdown table (mean ± std over seeds) is printed at the end, or alone with --only_table.

--convert_check: DESED_task's best checkpoint (the one its test step used) converted with
`python -m sedjax.convert desed_task CKPT --which student`, its test clips predicted by sedjax
and scored as DESED_task scores them; its PSDS1 beside the one DESED_task's test step logged.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from absl import flags

from sedjax.system import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Folder of the harness's runs and side_by_side.json.",
                    flag_values=FLAGS)
flags.DEFINE_string("data_root", None, "A DESED-layout folder (default: the config's generated "
                    "set, written into WORKDIR/data).", flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0"], "Seeds, comma-separated.", flag_values=FLAGS)
flags.DEFINE_string("config", "configs/demo_desed.py", "sedjax config file (path[:variant]); "
                    "DESED_task's yaml is rewritten from it.", flag_values=FLAGS)
flags.DEFINE_string("desed_task", None, "A DESED_task checkout (default: $SEDJAX_DESED_TASK).",
                    flag_values=FLAGS)
flags.DEFINE_list("systems", ["sedjax", "desed_task"], "Which systems to run.",
                  flag_values=FLAGS)
flags.DEFINE_bool("only_table", False, "Print the table of WORKDIR/side_by_side.json; run "
                  "nothing.", flag_values=FLAGS)
flags.DEFINE_bool("convert_check", False, "After the runs: DESED_task's checkpoints converted "
                  "to sedjax and scored by it, beside DESED_task's own PSDS1.",
                  flag_values=FLAGS)
flags.DEFINE_multi_string("sedjax_arg", [], "An extra flag for every sedjax run (e.g. "
                          "--sedjax_arg=--config.runtime.compilation_cache=DIR); repeatable.",
                          flag_values=FLAGS)
flags.DEFINE_bool("sedjax_torch", False, "Let sedjax's process import torch (by default "
                  "`import torch` fails there: sedjax's install has none, but tensorboardX "
                  "imports it when an environment shared with DESED_task has it).",
                  flag_values=FLAGS)
flags.DEFINE_float("heartbeat", 30.0, "Seconds between progress lines of a running system.",
                   flag_values=FLAGS)
flags.mark_flag_as_required("workdir", flag_values=FLAGS)


def _seeds(values: list[str]) -> list[int]:
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise cli.UserError(f"--seeds: expected integers, got {','.join(values)}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise cli.UserError(f"--seeds: expected distinct integers, got {','.join(values)}")
    return seeds


def _main(argv: list[str]) -> int:
    from sedjax.benchmarks.desed_task import harness, table

    cli.expect_no_arguments(argv)
    workdir = pathlib.Path(FLAGS.workdir).expanduser().resolve()
    if FLAGS.only_table:
        state = table.read(workdir)
        if state is None:
            raise cli.UserError(f"{workdir / table.FILENAME}: not found (no runs there yet)")
        print(table.markdown(state))
        return 0
    systems = [s.strip() for s in FLAGS.systems if s.strip()]
    unknown = sorted(set(systems) - set(table.SYSTEMS))
    if unknown or not systems:
        raise cli.UserError(f"--systems: unknown {', '.join(unknown) or '(none given)'}; "
                            f"choose from {', '.join(table.SYSTEMS)}")
    seeds = _seeds(FLAGS.seeds)
    checkout = FLAGS.desed_task or os.environ.get(harness.ENV)
    if checkout:
        checkout = pathlib.Path(checkout).expanduser().resolve()
        if not (checkout / harness.conf_lib.DEFAULT_YAML).is_file():
            raise cli.UserError(f"--desed_task {checkout}: not a DESED_task checkout (no "
                                f"{harness.conf_lib.DEFAULT_YAML})")
    elif "desed_task" in systems or FLAGS.convert_check:
        raise cli.UserError(f"give --desed_task=/path/to/DESED_task (or set {harness.ENV}), or "
                            "--systems=sedjax")
    config_path, _, variant = FLAGS.config.partition(":")
    config_path = pathlib.Path(config_path).expanduser()
    if not config_path.is_file() and not config_path.is_absolute():  # the repository's configs/
        config_path = harness.config_files.repo_root() / config_path
    config_path = config_path.resolve()
    if not config_path.is_file():
        raise cli.UserError(f"--config: no such file: {config_path}")
    spec = str(config_path) + (f":{variant}" if variant else "")
    config = harness.load_config(spec)
    workdir.mkdir(parents=True, exist_ok=True)
    root = harness.data_folder(config, FLAGS.data_root, workdir)
    layout = harness.layout_lib.find(root, str(config.data.get("split_roles", "auto")))
    classes = harness.layout_lib.classes(layout)
    setup = harness.Setup(workdir, spec, config, layout, classes, checkout, FLAGS.sedjax_arg,
                          FLAGS.heartbeat, FLAGS.sedjax_torch)
    state = harness.open_state(setup)
    table.write(workdir, state)
    print(f"data: {root} ({len(classes)} classes; test = {layout.test_source}, "
          f"{state['data']['test_clips_with_events']} clips with events; DESED_task validates "
          f"on {layout.synth_val_source})", flush=True)
    ok = True
    for seed in seeds:
        for system in systems:
            ok &= harness.run_one(setup, state, system, seed)
    if FLAGS.convert_check:
        from sedjax.benchmarks.desed_task import convert_check

        ok &= convert_check.run(setup, state, seeds)
    print()
    print(table.markdown(state))
    print(f"\nevery figure: {workdir / table.FILENAME}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The command in this process; its exit status."""
    return cli.call(_main, FLAGS, argv)


if __name__ == "__main__":
    cli.run(_main, FLAGS)
