#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: runs the same command on every host (one JAX process per host).
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [extra flags...]
# WORKDIR must be shared by all hosts (a gs:// bucket); the repository must be at ~/clipmed on every
# host with `make install` done (e.g. by a previous `--command` of the same form).
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [flags...]}
zone=${2:?zone}
config=${3:?config}
workdir=${4:?workdir}
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/clipmed && .venv/bin/python -m clipmed.main --distributed --config=$config --workdir=$workdir$extra"
