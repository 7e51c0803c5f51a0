"""Runs the whole system: python -m sedjax.main --config=configs/demo.py --workdir=DIR."""

from sedjax.runtime import host

if __name__ == "__main__":  # before the heavy imports (~3 s): this process is replaced
    host.reexec_with_huge_pages("sedjax.main")

import logging as pylogging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from sedjax import run
from sedjax.config import validate
from sedjax.runtime import distributed
from sedjax.data import dataset

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


def _quiet_libraries(record) -> bool:
    """Drops INFO chatter of orbax/jax internals (a dozen lines per checkpoint)."""
    # Python's level numbers: absl's own logging.WARNING constant is -1.
    return record.levelno >= pylogging.WARNING or not any(
        name in record.pathname for name in ("orbax", "jax/_src", "absl/"))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
    if FLAGS.distributed or FLAGS.coordinator_address or os.environ.get("SEDJAX_COORDINATOR"):
        try:
            distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes,
                                   process_id=FLAGS.process_id)
        except ValueError as e:
            sys.exit(f"error: {e}")
    logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
                 jax.process_count(), jax.local_devices())
    try:
        run.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (validate.ConfigError, dataset.DatasetError) as e:
        # a user's mistake (config or data): one message naming the field or file
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
