#!/usr/bin/env bash
# What one accelerator gives sedjax, in about 8 minutes (after `pip install -e .`): train-step
# clips/s of the seed and DESED CRNNs (float32, bfloat16, batch 24-512), K runs per program,
# log-mel on the device against librosa, the BEATs encoder (float32, bfloat16), a DCASE-scale
# synthetic run of each recipe with the full schedule extrapolated, device kind and peak
# memory. One table on stdout; the JSON goes to ./device_check.json (rewritten after every
# section) unless --json=PATH is given.
#   launch/device_check.sh                     # on the GPU / TPU host
#   launch/device_check.sh --json=/tmp/dc.json --tiny   # the same code at tiny sizes (CPU)
# Any other flag goes to `python -m sedjax.device_check` (--budget_s, --batch_sizes, --sections).
set -euo pipefail
out_dir=$(pwd)
cd "$(dirname "$0")/.."
json="$out_dir/device_check.json"
args=()
while (($#)); do
  case "$1" in
    --json=*) json=${1#--json=} ;;
    --json) json=${2:?--json needs a path}; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
[[ "$json" = /* ]] || json="$out_dir/$json"  # relative to where the script was started
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi || true
fi
python -m sedjax.device_check --json="$json" ${args[@]+"${args[@]}"}
