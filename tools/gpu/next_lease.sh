#!/usr/bin/env bash
# The next H200 lease's single call (issue "fused MUXConv kernels"), kept here so that the
# docs and the session notes name one command instead of copying its variables.
#
# What it measures, most important first, within gpu_check.sh's 560 s budget (session 40's
# lease measured the batch-32 eager and graph rows and the profile; these are what it left):
#   check_kernels            compiled kernels vs the stock path in deploy mode (session 40's
#                            training checks passed; its deploy ones had not run at 110 s)
#   bench_profile            the fused deploy forward at batch 32 fp16: each layer's kernels
#                            (Triton's too, by launch order), bytes and TB/s, the slowest 25
#                            by name -- which epilogue GEMMs make session 40's 497 us
#   bench_graph_more         the CUDA-graph rows at batch 1 and 32, fp16 and bf16, untuned
#   bench_graph_b128         the same at batch 128 (own process: session 40's fault there,
#                            explained in session 41 -- the benchmark's graphs did not hold
#                            their models -- and fixed; this row shows whether it was all)
#   fault_probe_b128         on a fault above, the fused MUXNet-m alone, synchronised per module
#   fault_sanitizer_b128     the same under compute-sanitizer, caching allocator off
#   bench_tune_gemms         the epilogue GEMMs re-tuned with session 41's candidates (several
#                            row tiles per program, pipelined), then the batch-32 graph rows;
#                            its table ($OUT/launch_configs_gemms.json) is the one to commit
#   bench_train              SSDLite and PSPNet training steps, stock and fused_ops
#   bench_compile            torch.compile reduce-overhead at batch 32
#   graph_gate_b1            batch-1 CUDA graphs with and without the SE gate in the GEMMs
#   host_time                where the budget has room (the carried cache spares the phases
#                            their compiles): this host's CPU cost of the eager fused forward,
#                            to scale the CPU machine's host-time proxy by
# Before the lease, here: bash tools/gpu/fetch_wheels.sh (fills .whl/) and
# bash tools/gpu/prebuild_triton_cache.sh (the phases' fused kernels compiled for the H200:
# .triton_cache.tar.gz), both carried to the device (carry: .whl .triton_cache.tar.gz);
# bash tools/gpu/rehearse_device_stack.sh runs the tests under the device's torch and Triton.
# On the device: bash tools/gpu/next_lease.sh (with the run's timeout ~600 s); DRY_RUN=1 prints
# the plan without a GPU. Update this file, not the docs, when the plan changes.
#
# The device tool brings back at most 8 files from $OUT, and the phases write one log each: they
# are written to a folder of their own and packed into $OUT/lease_logs.tar.gz (every 20 s, so a
# call cut off at its limit still brings back what was done), summary.txt beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
export SPEED_ONLY=1
export LAUNCH_CONFIGS=${LAUNCH_CONFIGS:-tools/gpu/tuned/h200_muxnet-m_fp16_b32.json}
export CHECK_ARGS=${CHECK_ARGS:---model-only --deploy-only}
export CHECK_TIMEOUT=${CHECK_TIMEOUT:-60}
export PROFILE_MODES=${PROFILE_MODES:-deploy}
export PHASES=${PHASES:-"check_kernels bench_profile bench_graph_more bench_graph_b128 \
fault_probe_b128 fault_sanitizer_b128 bench_tune_gemms bench_train bench_compile graph_gate_b1 \
host_time"}
if [[ "${DRY_RUN:-0}" == "1" || -z "${OUT:-}" ]]; then
    exec bash tools/gpu/gpu_check.sh
fi
RETURN_DIR=$OUT
export OUT=/tmp/lease_logs
mkdir -p "$OUT"
pack() { tar czf "$RETURN_DIR/lease_logs.tar.gz.part" -C "$OUT" . && \
    mv "$RETURN_DIR/lease_logs.tar.gz.part" "$RETURN_DIR/lease_logs.tar.gz"; }
(while sleep 20; do pack 2>/dev/null || true; done) &
PACKER=$!
rc=0
bash tools/gpu/gpu_check.sh || rc=$?
kill "$PACKER" 2>/dev/null || true
wait "$PACKER" 2>/dev/null || true
pack
cp "$OUT/summary.txt" "$RETURN_DIR/" 2>/dev/null || true
exit $rc
