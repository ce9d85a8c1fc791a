#!/usr/bin/env bash
# Train on this machine (all local devices).
#   launch/local.sh configs/demo.py workdirs/demo [extra flags...]
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [flags...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [flags...]}
shift 2
cd "$(dirname "$0")/.."
exec .venv/bin/python -m clipmed.main --config="$config" --workdir="$workdir" "$@"
