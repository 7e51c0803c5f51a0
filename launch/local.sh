#!/usr/bin/env bash
# One machine, all its local devices (CPU, one or more GPUs, or one TPU host).
#   launch/local.sh configs/demo.py /tmp/sedjax_demo [--config.pass1.num_epochs=5 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?config file}; workdir=${2:?workdir}; shift 2
python -m sedjax.main --config="$config" --workdir="$workdir" "$@"
