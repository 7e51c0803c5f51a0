#!/usr/bin/env bash
# A TPU VM slice: the same command on every worker, jax.distributed finds its peers itself.
#   launch/tpu_vm.sh TPU_NAME ZONE configs/baseline.py gs://bucket/run  (or a shared NFS path)
set -euo pipefail
name=${1:?tpu name}; zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}; shift 4
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command \
  "cd ~/sedjax && pip install -e '.[tpu]' && \
   python -m sedjax.main --distributed --config=$config --workdir=$workdir $*"
