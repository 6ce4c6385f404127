#!/usr/bin/env bash
# The suite's main job, on the embedded default data (CPU, ~10-12 minutes on 2 cores):
#   1. generate the toy VOC and ADE20K sets (deterministic, from scikit-image photographs);
#   2. train SSDLite + MUXNet-m from scratch and evaluate it (VOC mAP, before and after);
#   3. train PPM (PSPNet head) + dilated MUXNet-m from scratch and evaluate it (mIoU, before/after);
#   4. print the metrics and draw each task's curves (work_dirs/curves_toy{voc,ade}.png).
# `bash tools/run_default.sh baseline` runs the MobileNetV2 baselines on the same schedules; once
# both have run, each task's summary and curves show the two side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MUXNET=(ssdlite_muxnet-m_1xb8-300it_toyvoc pspnet_muxnet-m-d8_1xb4-220it_toyade-192x192)
BASELINE=(ssdlite_mobilenetv2_1xb8-300it_toyvoc pspnet_mobilenetv2-d8_1xb4-220it_toyade-192x192)
DIRS=(ssd pspnet)
DATA=(toyvoc toyade)
if [[ "${1:-}" == "baseline" ]]; then RUNS=("${BASELINE[@]}"); else RUNS=("${MUXNET[@]}"); fi
$PYTHON tools/dataset_converters/make_toy_data.py --out data --force  # deterministic, seconds
for TASK in 0 1; do
    NAME=${RUNS[$TASK]}
    rm -rf "work_dirs/$NAME"
    $PYTHON tools/train.py "configs/${DIRS[$TASK]}/$NAME.py" --work-dir "work_dirs/$NAME"
done
echo '================ summary ================'
for TASK in 0 1; do
    # MUXNet's run, then MobileNetV2's (the same colours in every drawing), where it has logged.
    SHOWN=()
    for NAME in "${MUXNET[$TASK]}" "${BASELINE[$TASK]}"; do
        if compgen -G "work_dirs/$NAME/*/vis_data/scalars.json" > /dev/null; then
            SHOWN+=("work_dirs/$NAME")
        fi
    done
    $PYTHON tools/analysis_tools/summarize_run.py "${SHOWN[@]}" \
        --plot "work_dirs/curves_${DATA[$TASK]}.png"
done
