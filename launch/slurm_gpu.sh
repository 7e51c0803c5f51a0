#!/usr/bin/env bash
# Multi-node GPU with SLURM: one process per node, all its GPUs local to that process.
# jax.distributed.initialize() reads the coordinator and process ids from SLURM's variables.
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm_gpu.sh configs/baseline.py /shared/run
#SBATCH --job-name=sedjax
#SBATCH --ntasks-per-node=1
#SBATCH --time=02:00:00
set -euo pipefail
config=${1:?config}; workdir=${2:?workdir (on a filesystem all nodes share)}; shift 2
srun python -m sedjax.main --distributed --config="$config" --workdir="$workdir" "$@"
