#!/usr/bin/env bash
# GPU check of the suite, for an offline machine with torch + CUDA + nvcc (e.g. H100/H200,
# torch 2.11 + CUDA 13, Python 3.12), in about 10 minutes:
#   1. install the carried wheels (tools/gpu/fetch_wheels.sh) into /tmp/site;
#   2. build mmcv 2.1.0 with its CUDA ops for this torch (TORCH_CUDA_ARCH_LIST=9.0, all cores);
#   3. check mmcv's CUDA nms against its CPU result;
#   4. train SSDLite + MUXNet-m on the embedded toy VOC set (a few hundred iterations, then VOC mAP);
#   5. train PPM + MUXNet-m (d8) on the embedded toy ADE20K set (a few hundred iterations, then mIoU);
#   6. with BENCH=1: tools/analysis_tools/benchmark.py on the GPU (MobileNetV2 vs MUXNet, batch 1
#      and 32, fp32/fp16/bf16, eager and deploy, plus the SSDLite training step).
# SKIP_TRAIN=1 skips 4-5. Logs go to $OUT (default work_dirs/gpu_check).
#
# SPEED_ONLY=1 instead (the fused-kernel check, ~7 minutes): no mmcv build (a stub extension that
# raises if called, tools/gpu/mmcv_ext_stub.py; nothing timed calls an mmcv op), then
#   a. tools/gpu/check_kernels.py: compiled Triton kernels vs the stock path (ops and MUXNet-m);
#      tools/gpu/graph_probe.py and layer_bench.py: CUDA-graph totals and per-layer times, each
#      layer's launch config tuned (saved to $OUT/launch_configs.json, used by the fp16 batch-32
#      benchmark and the profile);
#   b. benchmark.py --target-table: MobileNetV2 vs MUXNet-m in every mode, batch 1/32/128,
#      fp16/bf16, SSDLite and PSPNet training steps, per-kernel profile.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$REPO/work_dirs/gpu_check}
mkdir -p "$OUT"
cd "$REPO"
export PYTHONUNBUFFERED=1
SECONDS=0
stamp() { echo "[gpu_check t=${SECONDS}s] $*" | tee -a "$OUT/summary.txt"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/gpu.txt"
stamp "card: $(head -1 "$OUT/gpu.txt")"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { stamp 'wheel install failed'; exit 1; }
export PYTHONPATH=/tmp/site
stamp 'wheels installed'

# Kept if present, so a rerun on the same machine resumes an interrupted build.
[[ -d /tmp/mmcv-2.1.0 ]] || tar xzf .whl/mmcv-2.1.0.tar.gz -C /tmp

if [[ "${SPEED_ONLY:-0}" == "1" ]]; then
    [[ -e /tmp/mmcv-2.1.0/mmcv/_ext.py ]] || ls /tmp/mmcv-2.1.0/mmcv/_ext*.so >/dev/null 2>&1 || \
        cp tools/gpu/mmcv_ext_stub.py /tmp/mmcv-2.1.0/mmcv/_ext.py
    export PYTHONPATH=/tmp/mmcv-2.1.0:/tmp/site:$REPO
    python3 -c 'import triton; print("triton", triton.__version__)' | tee -a "$OUT/gpu.txt"
    timeout ${CHECK_TIMEOUT:-200} python3 tools/gpu/check_kernels.py ${CHECK_ARGS:-} 2>&1 | \
        grep -v Warning | tee "$OUT/check_kernels.txt"
    stamp "kernel check rc=${PIPESTATUS[0]}"
    timeout 90 python3 tools/gpu/graph_probe.py 2>&1 | grep -v -i warn | tee "$OUT/graph_probe.txt"
    # Per layer: planner vs tuned launch config (~5 compiles per layer); the table it writes is
    # what the batch-32 fp16 benchmark below runs with (and what comes back to commit).
    timeout 200 python3 tools/gpu/layer_bench.py --variants LANE_WASTE=3 --tune \
        --save-configs "$OUT/launch_configs.json" 2>&1 | grep -v -i warn | tee "$OUT/layer_bench.txt"
    stamp "layer_bench --tune rc=${PIPESTATUS[0]}"
    TUNED=""
    [[ -s "$OUT/launch_configs.json" ]] && TUNED="--launch-configs $OUT/launch_configs.json"
    # One process per case: a fault in one cannot take the others' numbers with it.
    bench() {  # name, timeout, benchmark args...
        local name=$1 limit=$2; shift 2
        timeout "$limit" python3 tools/analysis_tools/benchmark.py --device cuda \
            --runs ${RUNS:-100} --warmup 10 "$@" 2>&1 | grep -v -i warn | tee "$OUT/bench_$name.txt"
        stamp "benchmark $name rc=${PIPESTATUS[0]}"
    }
    MODELS="--models mobilenetv2 muxnet-m"
    bench fp16_b32 130 $MODELS --amp fp16 --batch 32 $TUNED \
        --modes eager deploy-stock deploy graph-stock graph \
        graph-auto compile --target-table-rows
    for case in fp16:1 bf16:128 fp16:128 bf16:32; do
        # 60 s each: batch 1's small launches take tiles of their own (group_conv.MIN_PROGRAMS),
        # so that case compiles ~30 kernel variants more than the others (~1 s each).
        bench "${case/:/_b}" 60 $MODELS --amp ${case%:*} --batch ${case#*:} \
            --modes eager deploy-stock deploy graph-stock graph graph-auto --target-table-rows
    done
    bench train 120 $MODELS --batch 1 --modes deploy --runs 2 --train-step ssdlite pspnet
    bench profile 45 $MODELS --batch 32 --amp fp16 --modes deploy-stock deploy --runs 2 \
        --profile fp16:32 $TUNED
    timeout 60 python3 tools/gpu/layer_bench.py --batch 1 --variants MIN_PROGRAMS=0 2>&1 | \
        grep -v -i warn | tee "$OUT/layer_bench_b1.txt"
    exit 0
fi
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}
(cd /tmp/mmcv-2.1.0 && CUDA_HOME=$CUDA_HOME MMCV_WITH_OPS=1 FORCE_CUDA=1 \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=$(nproc) \
    timeout ${BUILD_TIMEOUT:-480} python3 setup.py build_ext --inplace) > "$OUT/mmcv_build.log" 2>&1
BUILD_RC=$?
stamp "mmcv CUDA build rc=$BUILD_RC"
if [[ $BUILD_RC -ne 0 ]]; then
    grep -m 20 -E 'error|Error' "$OUT/mmcv_build.log" | tee -a "$OUT/summary.txt"
    exit 1
fi
export PYTHONPATH=/tmp/mmcv-2.1.0:/tmp/site:$REPO
python3 - <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import torch
from mmcv.ops import nms
boxes = torch.rand(500, 4) * 100
boxes[:, 2:] += boxes[:, :2]
scores = torch.rand(500)
cpu = nms(boxes, scores, 0.5)[1]
gpu = nms(boxes.cuda(), scores.cuda(), 0.5)[1].cpu()
print('mmcv CUDA nms equals CPU nms:', torch.equal(cpu, gpu))
PY

if [[ "${BENCH:-0}" == "1" ]]; then
    timeout ${BENCH_TIMEOUT:-200} python3 tools/analysis_tools/benchmark.py --device cuda \
        --models mobilenetv2 muxnet-xs muxnet-s muxnet-m muxnet-l --batch 1 32 \
        --modes eager deploy --amp fp32 fp16 bf16 --runs 100 --train-step \
        > "$OUT/benchmark.txt" 2>&1
    stamp "benchmark rc=$?"
    grep -vi warn "$OUT/benchmark.txt" | tail -80
fi
[[ "${SKIP_TRAIN:-0}" == "1" ]] && { stamp 'done'; exit 0; }
python3 tools/dataset_converters/make_toy_data.py --out data > /dev/null
train() {  # config, work dir name, extra cfg-options...
    local cfg=$1 name=$2; shift 2
    local start=$SECONDS
    timeout ${TRAIN_TIMEOUT:-240} python3 tools/train.py "$cfg" --work-dir "work_dirs/gpu_$name" \
        --cfg-options "$@" > "$OUT/train_$name.log" 2>&1
    local rc=$?
    stamp "$name: rc=$rc, $((SECONDS - start))s; $(grep -E 'Iter\(train\)' "$OUT/train_$name.log" | tail -1 | grep -oE 'time: [0-9.]+' | head -1) s/iter"
    python3 tools/analysis_tools/summarize_run.py "work_dirs/gpu_$name" 2>&1 | tee -a "$OUT/summary.txt"
}
train configs/ssd/ssdlite_muxnet-m_1xb8-300it_toyvoc.py ssdlite_muxnet-m \
    train_dataloader.num_workers=8 val_dataloader.num_workers=8
train configs/pspnet/pspnet_muxnet-m-d8_1xb4-220it_toyade-192x192.py pspnet_muxnet-m \
    train_cfg.max_iters=300 train_cfg.val_interval=300 train_dataloader.num_workers=8 \
    val_dataloader.num_workers=8
stamp 'done'
