"""Speed bench (python -m sedjax.bench): train step vs PyTorch, roofline, runs per program, log-mel
vs librosa, stages; with --beats, the BEATs encoder against the reference PyTorch BEATs.

The default (no flags) is sized to finish in a few minutes on a 2-core CPU: one small batch
size, the seed CRNN against PyTorch, the roofline line, log-mel on a few clips. `--full` gives
the larger figures (batch sizes 32 and 128, more steps, runs per program 1/4/8, the DESED CRNN
against PyTorch, the pipeline timing); any flag given explicitly wins over both. Every line is
printed as soon as it is measured.
"""

from __future__ import annotations

from sedjax.system import host

if __name__ == "__main__":  # before the heavy imports; both models then share the allocator
    host.reexec_with_huge_pages("sedjax.bench")

import functools
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from sedjax.benchmarks import speed_report  # the sections: measured, printed, written
from sedjax.benchmarks.beats_encoder import BEATS_SIZES
from sedjax.system import cli


# (default, --full) of the flags that --full changes; an explicitly given flag wins over both
PROFILES = {
    "batch_sizes": (["16"], ["32", "128"]),
    "steps": (3, 10),
    "warmup": (1, 2),
    "repeats": (2, 3),
    "runs": ([], ["1", "4", "8"]),
    "runs_batch_size": (8, 16),
    "logmel_clips": (16, 64),
    "pipeline": (False, True),
    "desed": (False, True),
    "desed_batch_sizes": (["8"], ["8", "24"]),
}


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Registers the flags (called by __main__ only, so sedjax.main's --config never clashes)."""
    d = {k: v[0] for k, v in PROFILES.items()}
    flags.DEFINE_bool("full", False, "The larger figures: " + ", ".join(
        f"--{k}={','.join(v[1]) if isinstance(v[1], list) else v[1]}"
        for k, v in PROFILES.items()) + " (flags given explicitly win).", flag_values=fv)
    flags.DEFINE_list("batch_sizes", d["batch_sizes"], "Global train batch sizes.",
                      flag_values=fv)
    flags.DEFINE_integer("steps", d["steps"], "Timed train steps per repeat.", flag_values=fv)
    flags.DEFINE_integer("warmup", d["warmup"], "Untimed steps first (at least 1: compiles).",
                         flag_values=fv)
    flags.DEFINE_integer("repeats", d["repeats"], "Timed repeats; the median is reported.",
                         flag_values=fv)
    flags.DEFINE_list("runs", d["runs"], "Runs per program (config.num_runs) of the "
                      "runs-per-program line, e.g. 1,4,8; empty: skip it.", flag_values=fv)
    flags.DEFINE_integer("runs_batch_size", d["runs_batch_size"],
                         "Clips per run and step of that line.", flag_values=fv)
    flags.DEFINE_integer("logmel_clips", d["logmel_clips"],
                         "Synthetic 10 s clips of the log-mel bench.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_list("matmul_sizes", ["1024", "2048"], "n of the n x n matmuls whose best "
                      "GFLOP/s is the roofline line's peak; empty: no roofline line.",
                      flag_values=fv)
    flags.DEFINE_bool("desed", d["desed"], "The DESED CRNN's train step (model.arch "
                      "'desed_crnn', configs/desed_baseline.py) against the same CRNN in PyTorch.",
                      flag_values=fv)
    flags.DEFINE_list("desed_batch_sizes", d["desed_batch_sizes"],
                      "Global batch sizes of the DESED line.", flag_values=fv)
    flags.DEFINE_integer("desed_num_frames", 0, "Input frames of the DESED line (0: the "
                         "config's 626, 10 s clips).", flag_values=fv)
    config_flags.DEFINE_config_file("config", speed_report.DEFAULT_PIPELINE_CONFIG,
                                    "Config of the pipeline timing.", flag_values=fv,
                                    lock_config=True)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                      "sedjax compute dtype (config.model.dtype); PyTorch stays float32.",
                      flag_values=fv)
    flags.DEFINE_string("json", None, "Writes all figures to this JSON file.", flag_values=fv)
    flags.DEFINE_bool("skip_torch", False, "No PyTorch reference.", flag_values=fv)
    flags.DEFINE_bool("pipeline", d["pipeline"], "The end-to-end pipeline timing on --config.",
                      flag_values=fv)
    flags.DEFINE_bool("skip_pipeline", False, "No pipeline timing, even with --full.",
                      flag_values=fv)
    flags.DEFINE_bool("beats", False, "Only the BEATs encoder: embeddings/s of sedjax's JAX "
                      "BEATs against the reference PyTorch BEATs module (DESED_task's "
                      "local/beats, from --desed_task) with the same random weights, float32, "
                      "after checking that both give the same embeddings.", flag_values=fv)
    flags.DEFINE_integer("beats_clips", 4, "Clips per encoder call of --beats.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_float("beats_seconds", 10.0, "Seconds per clip of --beats.", lower_bound=0.2,
                       flag_values=fv)
    flags.DEFINE_enum("beats_size", "base", list(BEATS_SIZES), "--beats' architecture: 'base' "
                      "(BEATs AS2M's: 12 layers x 768) or 'tiny' (2 layers x 32: tests).",
                      flag_values=fv)
    flags.DEFINE_integer("beats_repeats", 5, "Timed calls of --beats per encoder; the median "
                         "is reported (after --warmup untimed calls).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_string("desed_task", None, "A DESED_task checkout, whose recipes/"
                        "dcase2023_task4_baseline/local/beats is --beats' reference (default: "
                        "$SEDJAX_DESED_TASK).", flag_values=fv)


def resolved(fv: flags.FlagValues, name: str):
    """A flag's value: as given, else --full's value under --full, else its default."""
    if fv.full and name in PROFILES and not fv[name].present:
        return PROFILES[name][1]
    return fv[name].value


def run_with_flags(fv: flags.FlagValues = flags.FLAGS) -> dict:
    """speed_report.run (run_beats with --beats) with define_flags' parsed values (and
    --full's)."""
    g = functools.partial(resolved, fv)
    if fv.beats:
        if fv.dtype != "float32":
            raise cli.UserError("--beats times float32, the reference's dtype (sedjax's "
                                "bfloat16 BEATs: python -m sedjax.device_check)")
        return speed_report.run_beats(fv.beats_clips, fv.beats_seconds, fv.beats_size,
                                      g("warmup"), fv.beats_repeats, fv.json, fv.skip_torch,
                                      fv.desed_task)
    pipeline = g("pipeline") and not fv.skip_pipeline
    return speed_report.run(
        [int(b) for b in g("batch_sizes")], g("steps"), g("warmup"), g("repeats"),
        g("logmel_clips"), fv.config if pipeline else None, fv.dtype, fv.json, fv.skip_torch,
        pipeline, [int(k) for k in g("runs")], g("runs_batch_size"),
        [int(n) for n in fv.matmul_sizes], g("desed"), [int(b) for b in g("desed_batch_sizes")],
        fv.desed_num_frames)


def main(argv: Sequence[str]) -> None:
    """The command: the chosen sections with the flags' values."""
    cli.expect_no_arguments(argv)
    run_with_flags(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
