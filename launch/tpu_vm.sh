#!/usr/bin/env bash
# A Cloud TPU VM slice (e.g. v4-32: 4 workers x 4 chips = 16 devices): the same command on
# every worker; jax.distributed.initialize() (--distributed) finds the peers from the TPU
# metadata. The workdir must be one folder all workers share (an NFS / Filestore mount): each
# worker featurizes its share of the clips into it, process 0 writes results there.
#   launch/tpu_vm.sh TPU_NAME ZONE configs/baseline.py /mnt/shared/run [--config.seed=1 ...]
# What you change for your slice: TPU_NAME and ZONE (those of `gcloud compute tpus tpu-vm
# create NAME --zone ZONE --accelerator-type v4-32 --version tpu-ubuntu2204-base`), REPO
# below if the code is not in ~/sedjax on every worker, and batch sizes if they are not
# divisible by the slice's device count (16 on v4-32; validation says which).
set -euo pipefail
name=${1:?tpu name}; zone=${2:?zone}; config=${3:?config}; workdir=${4:?shared workdir}; shift 4
REPO=${REPO:-~/sedjax}
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command \
  "cd $REPO && pip install -q -e '.[tpu]' && \
   python -m sedjax.main --distributed --config=$config --workdir=$workdir $*"
