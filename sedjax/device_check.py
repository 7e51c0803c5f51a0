"""Device check (python -m sedjax.device_check; launch/device_check.sh): what one accelerator
gives sedjax, in one table and one JSON file, within a time budget (8 minutes by default).

Sections, in order, each with its own share of the budget; a section's failure is recorded in
the JSON and the next one runs; the JSON is rewritten after every section (nothing is lost if
the check is killed):
- environment: backend, device kind and count, library versions;
- train_step: pass-2 train-step clips/s (and GFLOP/s per device, XLA's cost analysis) of the
  seed CRNN (configs/baseline.py) and of the DESED CRNN (configs/desed_baseline.py, the largest
  model), float32 and bfloat16, per global batch size, each with the plain Flax path and with
  the CPU kernels (sedjax.models.kernels: what model.*'s 'auto' would gain here);
- runs_per_program: one K-run program against K one-run programs, clips/s (as sedjax.bench);
- logmel: the jnp log-mel frontend on the device against librosa on all host cores;
- beats: sedjax's BEATs encoder (AS2M's architecture, random weights), float32 and bfloat16,
  embeddings (clips/s) of a batch of 10-s clips (as sedjax.bench --beats, the JAX side only);
- pipeline: a synthetic run at the real DCASE2018 split sizes (configs/dcase_scale_synthetic.py)
  for a few epochs of each recipe (two_pass, mean_teacher), each in a child process killed at
  its budget: wall time per stage, seconds per epoch, and the full schedule extrapolated
  (seconds per epoch x the config's epochs);
- memory: the device's peak bytes in use (memory_stats, None where the backend has none).

`--tiny` runs the same code at tiny sizes (CPU, about a minute or two).
"""

from __future__ import annotations

import os

from sedjax.system import host

if __name__ == "__main__":
    host.reexec_with_huge_pages("sedjax.device_check")
    # the pipeline runs in child processes on the same device: grow, never preallocate
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import json
from typing import Sequence

from absl import flags

from sedjax.benchmarks import device_pipeline, device_report  # the sections, JSON and table
from sedjax.benchmarks.device_report import SECTIONS
from sedjax.system import cli


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Registers the command's flags."""
    flags.DEFINE_string("json", "device_check.json", "Where the JSON goes (rewritten after "
                        "every section).", flag_values=fv)
    flags.DEFINE_bool("tiny", False, "Tiny sizes (CPU): the same code path in a minute or two.",
                      flag_values=fv)
    flags.DEFINE_float("budget_s", None, "Seconds for the whole check (default: 480, tiny: "
                       "270); a section starts nothing new past its share or past this.",
                       flag_values=fv)
    flags.DEFINE_list("batch_sizes", None, "Global train batch sizes (default: 24,64,128,256,"
                      "512; tiny: 4).", flag_values=fv)
    flags.DEFINE_list("sections", list(SECTIONS[1:-1]), "Sections to run (environment and "
                      "memory always).", flag_values=fv)
    flags.DEFINE_list("section_budgets", [], "Seconds of single sections, e.g. pipeline=1800 "
                      "(defaults: train_step 130, runs_per_program 60, logmel 40, beats 40, "
                      "pipeline 200; tiny: 60, 30, 30, 30, 120).", flag_values=fv)
    flags.DEFINE_string("workdir", None, "Folder of the pipeline runs (default: a temporary "
                        "one, removed after).", flag_values=fv)
    flags.DEFINE_string("pipeline_child", None, "(internal) run one pipeline recipe: JSON "
                        "{recipe, config, epochs, workdir, out}.", flag_values=fv)


def main(argv: Sequence[str]) -> None:
    """The command."""
    cli.expect_no_arguments(argv)
    fv = flags.FLAGS
    if fv.pipeline_child:
        device_pipeline.pipeline_child(json.loads(fv.pipeline_child))
        return
    if any("=" not in item for item in fv.section_budgets):
        raise cli.UserError(f"--section_budgets wants name=seconds, got {fv.section_budgets}")
    budgets = dict(item.split("=", 1) for item in fv.section_budgets)
    unknown = (set(fv.sections) | set(budgets)) - set(SECTIONS[1:-1])
    if unknown:
        raise cli.UserError(f"unknown section(s) {sorted(unknown)}: use {SECTIONS[1:-1]}")
    if fv.tiny:  # this process's own steps too: the backend has not started yet
        os.environ["XLA_FLAGS"] = device_pipeline.child_xla_flags(True)
    device_report.run(fv.json, fv.tiny, fv.budget_s,
                      [int(x) for x in fv.batch_sizes or []] or None, fv.sections, fv.workdir,
                      {k: float(v) for k, v in budgets.items()})


if __name__ == "__main__":
    define_flags()
    cli.run(main)
