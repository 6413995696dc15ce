#!/usr/bin/env bash
# Sanity check of the fine-tuning recipe (configs/recipes/finetune.json) on data the shipped model has not seen: the
# bundle's synthetic EM-like generator (seed 1), relabelled as two classes (membrane vs the rest) by the folders
# preparer, 4 labelled training images, 4 validation, 8 test, 256x256. NOT the label-efficiency study of issue 23
# (that needs a public dataset of another tissue or microscope, with its own classes; none is available offline).
# Arms, all with the recipe's loss, sampling and poly decay, 128x128 patches, ${EPOCHS:-12} epochs, one thread:
#   scratch_1e-3 (the shipped network from scratch, train.json's rate), finetune_1e-3 (the recipe's rate since this
#   check; 3e-4 before it), finetune_3e-4, finetune_1e-4; then the test mIoU of each run's model.pt (evaluate.json), printed as a table.
#
#   bash benchmarks/finetune_sanity.sh <OUT>          (PY picks the interpreter; ~5 min on one core)
set -euo pipefail
OUT="$1"; PY="${PY:-python}"; EPOCHS="${EPOCHS:-12}"
export PYTHONPATH="$PWD/bundle" OMP_NUM_THREADS=1
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
$PY -m scripts.data.prepare synthetic --out "$OUT/raw" --num-train 14 --num-val 1 --num-test 1 --size 256 --seed 1 > "$OUT/prepare.log" 2>&1
$PY -m scripts.data.prepare folders --images "$OUT/raw/images" --labels "$OUT/raw/labels" --out "$OUT/data" \
    --class-map "0:0,1:1,2:0,3:0,4:0" --class-names "rest,membrane" --val-fraction 0.25 --test-fraction 0.5 >> "$OUT/prepare.log" 2>&1
RECIPE="'bundle/configs/train.json','bundle/configs/recipes/finetune.json'"
COMMON=(--datalist_file "$OUT/data/datalist.json" --class_names "['rest','membrane']" --patch_size "[128,128]"
        --epochs "$EPOCHS" --section_repeats 2 --show_progress False)
arm() {  # name, then its overrides
    local name="$1"; shift
    local start=$SECONDS
    $PY -m monai.bundle run training --config_file "[$RECIPE]" "${COMMON[@]}" --bundle_root "$OUT/$name" "$@" > "$OUT/$name.train.log" 2>&1
    echo "$name: trained in $((SECONDS - start)) s"
    $PY -m monai.bundle run evaluating --config_file "[$RECIPE,'bundle/configs/evaluate.json']" --datalist_file "$OUT/data/datalist.json" \
        --class_names "['rest','membrane']" --bundle_root "$OUT/$name" --test_key testing_sections > "$OUT/$name.eval.log" 2>&1
}
arm scratch_1e-3 --finetune_from "\$None" --network_def "@networks#unet" --features "[16,32,64,128,256]" --learning_rate 0.001
arm finetune_1e-3 --learning_rate 0.001
arm finetune_3e-4 --learning_rate 0.0003
arm finetune_1e-4 --learning_rate 0.0001
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'arm':16} {'test mIoU':>9} {'rest':>7} {'membrane':>9} {'best val':>9}")
for arm in ("scratch_1e-3", "finetune_1e-3", "finetune_3e-4", "finetune_1e-4"):
    m = json.loads((out / arm / "eval" / "metrics.json").read_text())
    best = max(float(l.split("val_mean_iou: ")[1]) for l in (out / f"{arm}.train.log").read_text().splitlines() if "Metrics -- val_mean_iou" in l)
    print(f"{arm:16} {m['mean_iou']:9.4f} {m['per_class']['rest']['accumulated']['iou']:7.4f} {m['per_class']['membrane']['accumulated']['iou']:9.4f} {best:9.4f}")
PY
