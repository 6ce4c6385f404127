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
# SPEED_ONLY=1 instead (the fused-kernel check, within BUDGET=560 s): no mmcv build (a stub
# extension that raises if called, tools/gpu/mmcv_ext_stub.py; nothing timed calls an mmcv op),
# then, most important first, each phase capped by what is left of the budget:
#   a. tools/gpu/check_kernels.py: compiled Triton kernels vs the stock path (ops and MUXNet-m);
#   b. tools/gpu/layer_bench.py --tune: per-layer stock vs fused time, each layer's launch config
#      tuned (saved to $OUT/launch_configs.json, used by the fp16 batch-32 rows and the profile),
#      per block the epilogue GEMM against cuBLAS + passes (tail and expand conv), planned and
#      with its own launch config tuned (saved in the same file);
#   c. benchmark.py: MobileNetV2 vs MUXNet-m in every mode at batch 32 fp16 (the target rows),
#      the per-kernel profile and per kind of layer time, bytes and TB/s, the CUDA-graph rows
#      at batch 1/32 and at 128 in fp16 and bf16 (untuned; a fault at 128 located by
#      fault_probe.py, then under compute-sanitizer), SSDLite and PSPNet
#      the GEMMs re-tuned over that table with the graph rows again (bench_tune_gemms), SSDLite
#      and PSPNet training steps (with their top kernels), torch.compile at batch 32, the batch-1 graph
#      row with and without the SE gate in the project GEMMs (graph_probe), batch 1/128 and bf16
#      (tuned in their own process), the training steps with tuned kernels, graph_probe,
#      batch-1 layers, and tools/gpu/host_time.py (the eager forward's host time as the CPU
#      machine measures it). Without a launch-config table (b. not run, no LAUNCH_CONFIGS), the
#      batch-32 rows tune their own and save the table for the phases after them; a CUDA fault
#      there is located by a rerun with synchronous launches (bench_fp16_b32_blocking).
#   PHASES="bench_train bench_fp16_b1 ..." runs only the phases named (in the order above): a
#   second lease can measure what the first one's summary.txt lists as skipped. The launch
#   configs come from this run's layer_bench, else from LAUNCH_CONFIGS=FILE (a committed table
#   of an earlier lease). DRY_RUN=1 prints each phase's cap and command and runs nothing (no
#   GPU needed).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$REPO/work_dirs/gpu_check}
mkdir -p "$OUT"
cd "$REPO"
export PYTHONUNBUFFERED=1
SECONDS=0
stamp() { echo "[gpu_check t=${SECONDS}s] $*" | tee -a "$OUT/summary.txt"; }

DRY=${DRY_RUN:-0}
if [[ "$DRY" != "1" ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
    python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/gpu.txt"
    stamp "card: $(head -1 "$OUT/gpu.txt")"

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { stamp 'wheel install failed'; exit 1; }
    export PYTHONPATH=/tmp/site
    stamp 'wheels installed'

    # Kept if present, so a rerun on the same machine resumes an interrupted build.
    [[ -d /tmp/mmcv-2.1.0 ]] || tar xzf .whl/mmcv-2.1.0.tar.gz -C /tmp

    # The fused kernels compiled ahead on the CPU machine (tools/gpu/prebuild_triton_cache.sh,
    # carried): unpacked at the absolute path its cache entries name. The entries the phases
    # add are the kernels it did not have (summary.txt, at the end).
    if [[ -s .triton_cache.tar.gz ]]; then
        tar xzf .triton_cache.tar.gz -C /tmp
        export TRITON_CACHE_DIR=/tmp/mux_triton_cache
        ours() {  # fused kernels (not Inductor's) and C launchers in the cache
            echo "$(ls "$TRITON_CACHE_DIR"/*/_*_kernel.json 2>/dev/null | grep -vc __grp__)" \
                "$(ls "$TRITON_CACHE_DIR"/*/__triton_launcher*.so 2>/dev/null | wc -l)"
        }
        read -r KERNELS LAUNCHERS <<< "$(ours)"
        stamp "triton cache: $KERNELS fused kernels and $LAUNCHERS launchers carried"
        # Built from this tree's kernels? (prebuild_triton_cache.kernel_sources_digest: a stale
        # cache is never used wrongly, Triton's keys see to that, but its kernels are rebuilt.)
        DIGEST=$(export LC_ALL=C; cat mux_backbones/ops/*.py | sha256sum | cut -d' ' -f1)
        MANIFEST=$TRITON_CACHE_DIR/mux_prebuild.json
        if grep -qs "\"$DIGEST\"" "$MANIFEST"; then
            stamp "triton cache: built from these kernel sources ($(tr -d '{}"' < "$MANIFEST"))"
        else
            stamp "triton cache: NOT built from these kernel sources (their kernels compile" \
                "here): $(tr -d '{}"' < "$MANIFEST" 2>/dev/null || echo 'no manifest')"
        fi
        added() {
            local k l
            read -r k l <<< "$(ours)"
            stamp "triton cache: $((k - KERNELS)) fused kernels and $((l - LAUNCHERS)) launchers" \
                "built here (not carried)"
        }
        trap added EXIT
    else
        stamp 'triton cache: none carried (tools/gpu/prebuild_triton_cache.sh): every process' \
            'compiles the fused kernels it launches'
    fi
fi

if [[ "${SPEED_ONLY:-0}" == "1" ]]; then
    if [[ "$DRY" != "1" ]]; then
        [[ -e /tmp/mmcv-2.1.0/mmcv/_ext.py ]] || ls /tmp/mmcv-2.1.0/mmcv/_ext*.so >/dev/null 2>&1 || \
            cp tools/gpu/mmcv_ext_stub.py /tmp/mmcv-2.1.0/mmcv/_ext.py
        export PYTHONPATH=/tmp/mmcv-2.1.0:/tmp/site:$REPO
        python3 -c 'import triton; print("triton", triton.__version__)' | tee -a "$OUT/gpu.txt"
    fi
    # Phases in order of what matters most, each capped by its own limit and by what is left of
    # BUDGET (seconds since the start; the device tool allows 600 s per command), so a short
    # lease still brings back the first ones. Skipped phases say so in summary.txt.
    BUDGET=${BUDGET:-560}
    phase() {  # name, cap in s, command... (output to $OUT/<name>.txt)
        local name=$1 cap=$2; shift 2
        if [[ -n "${PHASES:-}" && " $PHASES " != *" $name "* ]]; then
            stamp "$name skipped: not in PHASES"; return
        fi
        if [[ "$DRY" == "1" ]]; then stamp "$name (cap ${cap}s): $*"; return; fi
        local left=$((BUDGET - SECONDS))
        if (( left < 20 )); then stamp "$name skipped: ${left}s of the budget left"; return; fi
        (( cap > left )) && cap=$left
        # Library warnings dropped, the tuner's own (a config skipped) kept.
        timeout "$cap" "$@" 2>&1 | awk 'tolower($0) !~ /warn/ || /tuning|precompile/' | \
            tee "$OUT/$name.txt"
        stamp "$name rc=${PIPESTATUS[0]} (cap ${cap}s)"
    }
    BENCH="python3 tools/analysis_tools/benchmark.py --device cuda --warmup 10 --models mobilenetv2 muxnet-m"
    phase check_kernels ${CHECK_TIMEOUT:-150} python3 tools/gpu/check_kernels.py ${CHECK_ARGS:-}
    # Per layer: planner vs tuned launch config (tile x warps x pipelining, compiled ahead in
    # worker processes); the table it writes is what the batch-32 fp16 rows below run with (and
    # what comes back to commit). Then per block: SE + project, and the epilogue GEMM against
    # cuBLAS + passes for the tail and the expand conv.
    phase layer_bench 210 python3 tools/gpu/layer_bench.py --tune \
        --save-configs "$OUT/launch_configs.json"
    tuned_table() {  # this run's table, else LAUNCH_CONFIGS's, as benchmark arguments
        local table
        for table in "$OUT/launch_configs.json" "${LAUNCH_CONFIGS:-}"; do
            [[ -n "$table" && -s "$table" ]] && { echo "--launch-configs $table"; return; }
        done
    }
    TUNED=$(tuned_table)
    # The target rows at batch 32 in two processes, eager modes then CUDA graphs (each mode's
    # ratio is within one process), so a fault in one keeps the other's rows.
    B32="$BENCH --amp fp16 --batch 32"
    EAGER_MODES="--modes eager deploy-stock deploy"
    GRAPH_MODES="--modes graph-stock graph graph-auto"
    if [[ -n "$TUNED" ]]; then
        phase bench_fp16_b32 90 $B32 $EAGER_MODES --runs 100 $TUNED --target-table-rows
    else
        # No table (layer_bench not run, no LAUNCH_CONFIGS): these rows tune their own and save
        # the table as soon as it is tuned, for the phases after them (Triton's disk cache keeps
        # the candidates' compiles).
        phase bench_fp16_b32 150 $B32 $EAGER_MODES --runs 100 --tune-kernels \
            --save-launch-configs "$OUT/launch_configs.json" --target-table-rows
        TUNED=$(tuned_table)
        [[ "$DRY" == "1" ]] && TUNED="--launch-configs $OUT/launch_configs.json"
    fi
    phase bench_fp16_b32_graph 60 $B32 $GRAPH_MODES --runs 100 $TUNED --target-table-rows
    # A CUDA fault (session 24: an illegal memory access at batch 32 and 128 in the benchmark,
    # never in one model's probe, tools/gpu/fault_probe.py) is named by the case whose warm-up
    # it surfaced in; rerun those modes with every launch synchronous: the traceback then
    # names the launch.
    FAULTED=""
    for name in bench_fp16_b32 bench_fp16_b32_graph; do
        if [[ "$DRY" == "1" ]] || grep -qs 'CUDA error' "$OUT/$name.txt"; then
            [[ $name == bench_fp16_b32 ]] && FAULTED="$FAULTED ${EAGER_MODES#--modes }" \
                || FAULTED="$FAULTED ${GRAPH_MODES#--modes }"
        fi
    done
    if [[ -n "$FAULTED" ]]; then
        phase bench_fp16_b32_blocking 60 env CUDA_LAUNCH_BLOCKING=1 $B32 --modes $FAULTED \
            --runs 5 $TUNED
        # Every access checked against its own tensor: without PyTorch's caching allocator
        # (which hides an access past a tensor inside its cached segment from the sanitizer;
        # so no tuning there either: it times on CUDA graphs, which need that allocator).
        # Where the graph rows faulted, the probe rebuilds their graph-auto model's mix of
        # forms from the blocks their log says 'auto' kept stock (session 24's faulting
        # processes ran that model; the probes since ran every block fused).
        STOCK_FROM=""
        [[ "$FAULTED" == *graph-auto* ]] && \
            STOCK_FROM="--stock-blocks-from $OUT/bench_fp16_b32_graph.txt"
        phase fault_sanitizer 90 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer \
            --tool memcheck --print-limit 5 python3 tools/gpu/fault_probe.py --batch 32 $TUNED \
            $STOCK_FROM
    fi
    # Per kernel, per kind of layer and the slowest layers by name (the fused kernels charged to
    # their layers by launch order since session 41), bytes and TB/s. PROFILE_MODES=deploy
    # profiles the fused forms alone (session 40's four cases ran out of its 45 s).
    phase bench_profile 45 $BENCH --batch 32 --amp fp16 --modes ${PROFILE_MODES:-deploy-stock deploy} \
        --runs 2 --profile fp16:32 --profile-top 25 $TUNED
    # The other target cases' CUDA-graph rows, without tuning (the batch-32 table's configs where
    # its signatures match, the planner's compiled ahead elsewhere): batch 1 and 32 in fp16 and
    # bf16, then batch 128 in its own process (session 40: a fault there, before any row, killed
    # the batch-1 and bf16 rows timed after it). Rows print per precision and batch as timed.
    phase bench_graph_more 70 $BENCH --amp fp16 bf16 --batch 1 32 --runs 100 $TUNED \
        --modes graph-stock graph --target-table-rows
    phase bench_graph_b128 50 $BENCH --amp fp16 bf16 --batch 128 --runs 100 $TUNED \
        --modes graph-stock graph --target-table-rows
    # A fault at batch 128: the fused MUXNet-m alone in deploy mode at the faulted case,
    # synchronised after every module (names the module; exit 3), then under the sanitizer
    # without the caching allocator (names the kernel and the address).
    if [[ "$DRY" == "1" ]] || grep -qs 'CUDA error' "$OUT/bench_graph_b128.txt"; then
        CASE=$(grep -oE '\[[a-z-]+, (fp16|bf16), batch [0-9]+\] failed' \
            "$OUT/bench_graph_b128.txt" 2>/dev/null | head -1)
        AMP=$(grep -oE 'fp16|bf16' <<< "${CASE:-fp16}")
        PROBE="python3 tools/gpu/fault_probe.py --batch 128 --amp $AMP $TUNED"
        phase fault_probe_b128 40 $PROBE
        phase fault_sanitizer_b128 90 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer \
            --tool memcheck --print-limit 5 $PROBE
    fi
    # The epilogue GEMMs re-tuned over the table's spatial convs, the new candidates included
    # (session 41: several row tiles per program, their loop software-pipelined), then the
    # batch-32 graph rows with that table; the table comes back for the next lease to commit.
    phase bench_tune_gemms 150 $B32 $GRAPH_MODES --runs 100 $TUNED --tune-kernels gemms \
        --save-launch-configs "$OUT/launch_configs_gemms.json" --target-table-rows
    # 180 s: four rows per task, each building its detector or segmentor, the fused ones
    # compiling their kernels first (session 24's 120 s ended after SSDLite's stock rows).
    phase bench_train 180 $BENCH --batch 1 --modes deploy --runs 2 --train-step ssdlite pspnet \
        --profile-train
    # On its own: torch.compile of both nets takes a minute or more, and a phase that runs out
    # of time prints none of its rows.
    phase bench_compile 90 $BENCH --amp fp16 --batch 32 --runs 100 $TUNED \
        --modes deploy compile --target-table-rows
    # The batch-1 graph row (1.17x in session 24) with the blocks' project GEMMs computing the
    # SE gate where they have few programs (the default, session 26) and never (the gate op's
    # launch before each): MobileNetV2 and both captures in one process.
    phase graph_gate_b1 45 python3 tools/gpu/graph_probe.py --batches 1 --reps 200 \
        --gate-policies auto 0 --no-profile
    # 60 s each: batch 1's small launches take tiles of their own (group_conv.MIN_PROGRAMS), so
    # that case compiles ~30 kernel variants more than the others (~1 s each). Tuned in-process.
    for case in fp16:1 fp16:128 bf16:128 bf16:32; do
        phase "bench_${case/:/_b}" 60 $BENCH --amp ${case%:*} --batch ${case#*:} --runs 100 \
            --tune-kernels --modes eager deploy-stock deploy graph-stock graph graph-auto \
            --target-table-rows
    done
    phase bench_train_tuned 150 $BENCH --batch 1 --modes deploy --runs 2 --train-step ssdlite \
        pspnet --tune-kernels
    phase graph_probe 60 python3 tools/gpu/graph_probe.py
    phase layer_bench_b1 60 python3 tools/gpu/layer_bench.py --batch 1 --variants MIN_PROGRAMS=0 \
        LANE_WASTE=3
    # This host's CPU cost of the eager fused forward as measured without a GPU (what the CPU
    # machine's numbers in docs/speed_log.md scale by, next to the eager rows' host ms above).
    phase host_time 40 env TRITON_INTERPRET=1 python3 tools/gpu/host_time.py --runs 50
    exit 0
fi
[[ "$DRY" == "1" ]] && { echo 'DRY_RUN=1 plans the SPEED_ONLY=1 phases only' >&2; exit 2; }
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
