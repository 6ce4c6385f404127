#!/usr/bin/env bash
# Distributed testing with torchrun, one process per GPU:
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as for tools/dist_train.sh.
# Paths are read from the current folder, as tools/test.py reads them.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: bash $0 CONFIG CHECKPOINT GPUS [test.py args]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
TOOLS=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$(dirname "$TOOLS"):${PYTHONPATH:-}" \
"${PYTHON:-python3}" -m torch.distributed.run --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" \
    "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
