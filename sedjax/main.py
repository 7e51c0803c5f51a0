"""Runs the whole system: python -m sedjax.main --config=configs/demo.py --workdir=DIR."""

from sedjax.runtime import host

if __name__ == "__main__":  # before the heavy imports (~3 s): this process is replaced
    host.reexec_with_huge_pages("sedjax.main")

import os

import jax
from absl import flags, logging
from ml_collections import config_flags

from sedjax import run
from sedjax.runtime import cli, distributed

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for features, checkpoints and results.")
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
    config_file = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]
    if not os.path.isfile(config_file):  # config_flags would only fail at the config's first use
        raise cli.UserError(f"--config: no such file: {config_file}")
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
