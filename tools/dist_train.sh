#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU:
#   bash tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8
# Paths are read from the current folder, as tools/train.py reads them.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: bash $0 CONFIG GPUS [train.py args]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
TOOLS=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$(dirname "$TOOLS"):${PYTHONPATH:-}" \
"${PYTHON:-python3}" -m torch.distributed.run --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" \
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "${@:3}"
