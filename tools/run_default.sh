#!/usr/bin/env bash
# The suite's main job, on the embedded default data (CPU, ~10-12 minutes on 2 cores):
#   1. generate the toy VOC and ADE20K sets (deterministic, from scikit-image photographs);
#   2. train SSDLite + MUXNet-m from scratch and evaluate it (VOC mAP, before and after);
#   3. train PPM (PSPNet head) + dilated MUXNet-m from scratch and evaluate it (mIoU, before/after).
# `bash tools/run_default.sh baseline` runs the MobileNetV2 baselines on the same schedules.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ "${1:-}" == "baseline" ]]; then
    DET=configs/ssd/ssdlite_mobilenetv2_1xb8-300it_toyvoc.py
    SEG=configs/pspnet/pspnet_mobilenetv2-d8_1xb4-220it_toyade-192x192.py
else
    DET=configs/ssd/ssdlite_muxnet-m_1xb8-300it_toyvoc.py
    SEG=configs/pspnet/pspnet_muxnet-m-d8_1xb4-220it_toyade-192x192.py
fi
$PYTHON tools/dataset_converters/make_toy_data.py --out data --force  # deterministic, seconds
for CFG in "$DET" "$SEG"; do
    NAME=$(basename "$CFG" .py)
    rm -rf "work_dirs/$NAME"
    $PYTHON tools/train.py "$CFG" --work-dir "work_dirs/$NAME"
done
echo '================ summary ================'
# Per task: this run's metrics and curves, beside the other backbone's where that one has run.
for TASK in "ssdlite_*_1xb8-300it_toyvoc toyvoc" "pspnet_*-d8_1xb4-220it_toyade-192x192 toyade"; do
    read -r PATTERN DATA <<< "$TASK"
    # shellcheck disable=SC2086  # the pattern is meant to glob
    $PYTHON tools/analysis_tools/summarize_run.py $(ls -d work_dirs/$PATTERN) \
        --plot "work_dirs/curves_$DATA.png"
done
