#!/usr/bin/env bash
# Multi-node GPUs with SLURM. jax.distributed.initialize() (--distributed) reads the
# coordinator, the process count and each process's id from SLURM's variables.
#   2 nodes x 8 GPUs, one process per node (it drives its 8 GPUs):
#     sbatch --nodes=2 --gpus-per-node=8 launch/slurm_gpu.sh configs/baseline.py /shared/run
#   2 nodes x 8 GPUs, one process per GPU (16 processes):
#     sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-task=1 launch/slurm_gpu.sh ...
# What you change: the sbatch line above (nodes, GPUs, --partition/--account of your site),
# --time below, the environment activation, and a WORKDIR on a filesystem all nodes mount
# (each process featurizes its share of the clips into it; process 0 writes the results).
# Batch sizes must be divisible by the 16 devices (validation names the one that is not).
#SBATCH --job-name=sedjax
#SBATCH --ntasks-per-node=1
#SBATCH --time=02:00:00
set -euo pipefail
config=${1:?config}; workdir=${2:?workdir (on a filesystem all nodes share)}; shift 2
# . /path/to/venv/bin/activate   # your environment with `pip install -e '.[cuda]'`
srun python -m sedjax.main --distributed --config="$config" --workdir="$workdir" "$@"
