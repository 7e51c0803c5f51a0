"""Joins a multi-process JAX job (jax.distributed): TPU pod slices, SLURM, or explicit settings.

Every process runs the same program on its own devices; the mesh then spans all of them
(sedjax.system.sharding). Where the job comes from:
- TPU VM slices and SLURM jobs: nothing to pass, jax.distributed.initialize() reads the
  environment (TPU metadata; SLURM_* variables);
- anything else (several local CPU processes, a hand-made GPU cluster): the coordinator's
  host:port, the process count and this process's id, from flags or the environment
  variables SEDJAX_COORDINATOR, SEDJAX_NUM_PROCESSES, SEDJAX_PROCESS_ID.
"""

from __future__ import annotations

import os

import jax

from sedjax.system import preemption

ENV = {"coordinator_address": "SEDJAX_COORDINATOR", "num_processes": "SEDJAX_NUM_PROCESSES",
       "process_id": "SEDJAX_PROCESS_ID"}


def settings(coordinator_address: str | None = None, num_processes: int | None = None,
             process_id: int | None = None) -> dict:
    """The explicit settings (flags first, then SEDJAX_* variables); {} = detect them."""
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}
    out = {}
    for name, value in given.items():
        if value is None and os.environ.get(ENV[name]):
            value = os.environ[ENV[name]]
        if value is not None:
            out[name] = value if name == "coordinator_address" else int(value)
    if out and len(out) != 3:
        missing = sorted(ENV[n] for n in ENV if n not in out)
        raise ValueError("a multi-process job needs the coordinator address, the process count "
                         f"and this process's id; missing: {', '.join(missing)} (or the flags)")
    return out


def initialize(**explicit) -> None:
    """jax.distributed.initialize with `settings(**explicit)`; CPU collectives over gloo."""
    # CPU devices of different processes talk through gloo (no-op for GPU/TPU computations);
    # must be set before the backends start.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings(**explicit))
    preemption.install()  # a SIGTERM outside training must stop every process too
