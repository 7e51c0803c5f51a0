"""Trains and evaluates a system: every stage from the data to the scores, in one workdir.

    python -m sedjax.main --config=configs/demo.py --workdir=DIR [--config.FIELD=VALUE ...]
        [--validate_only] [--distributed]

--config: a config file (configs/*.py, `file.py:variant` for a variant); any field can be
overridden, e.g. --config.seed=1 --config.mean_teacher.learning_rate=3e-3 (docs/configs.md).
--workdir: where features, checkpoints, predictions and results.json go; the same command
resumes a killed run there. --validate_only checks the config and its overrides and exits.
Scores print at the end and are in DIR/results.json (docs/outputs.md).
"""

from sedjax.system import host

if __name__ == "__main__":  # before the heavy imports (~3 s): this process is replaced
    host.reexec_with_huge_pages("sedjax.main")

import os

import jax
from absl import flags, logging
from ml_collections import config_flags

from sedjax import run
from sedjax.config import validate
from sedjax.system import cli, distributed

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for features, checkpoints and results.")
flags.DEFINE_bool("validate_only", False,
                  "Check the config and its overrides on this machine's devices and exit (0: it "
                  "would run; 2: one line naming the field that would not).")
flags.DEFINE_bool("distributed", False,
                  "Join a multi-process job (jax.distributed): TPU slices and SLURM are detected; "
                  "elsewhere give the three flags below or SEDJAX_* variables.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Processes in the job (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's id, 0 .. num_processes - 1.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Trains and evaluates; a config or dataset mistake is one `error:` line (cli.run)."""
    cli.expect_no_arguments(argv)
    # 'file.py:variant' names a variant of the file's get_config (ml_collections' syntax)
    config_name = config_flags.get_config_filename(FLAGS["config"])
    config_file = config_name.split(":")[0]
    if not os.path.isfile(config_file):  # config_flags would only fail at the config's first use
        raise cli.UserError(f"--config: no such file: {config_file}")
    if FLAGS.validate_only:
        validate.validate(FLAGS.config, jax.device_count())
        print(f"config ok: {config_name}")
        return 0
    if FLAGS.distributed or FLAGS.coordinator_address or os.environ.get("SEDJAX_COORDINATOR"):
        try:
            distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes,
                                   process_id=FLAGS.process_id)
        except ValueError as e:
            raise cli.UserError(str(e)) from None
    logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
                 jax.process_count(), jax.local_devices())
    run.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main)
