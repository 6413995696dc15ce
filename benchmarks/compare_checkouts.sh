#!/usr/bin/env bash
# Behaviour check of a refactoring: run the README's quick start (train, evaluate, infer) and the shipped model on
# the Drosophila fold-0 test sections (evaluate + infer) in one checkout, writing logs, metrics and the sha256 of
# every output to OUT. Run it on the old and the new checkout (one thread, so float results are comparable), then
# compare: `diff OLD_OUT/qs_outputs.sha256 NEW_OUT/qs_outputs.sha256`, the first losses in qs_train.log, the
# metrics.json files, and shipped_outputs.sha256.
#
#   bash benchmarks/compare_checkouts.sh <checkout root> <OUT> <prepared Drosophila folder (datalist_fold0.json)>
#
# The checkout's bundle/ receives the quick start's run (models/, logs/, eval/, outputs/, data/): use a scratch
# worktree (`git worktree add /tmp/old <commit>`). PY picks the interpreter (default: python).
set -euo pipefail
ROOT="$(cd "$1" && pwd)"; OUT="$2"; DROS="$3"
PY="${PY:-python}"
export PYTHONPATH="$ROOT/bundle" OMP_NUM_THREADS=1
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"
hashes() {  # every output but the gallery page, the report and hidden files (the run lock)
    (cd "$1" && find . -type f ! -name '*.html' ! -name 'inference_report.json' ! -name '.*' -print0 | sort -z | xargs -0 sha256sum)
}
start=$SECONDS
$PY -m monai.bundle run training --config_file "['bundle/configs/train.json','bundle/configs/quickstart.json']" --show_progress False > "$OUT/qs_train.log" 2>&1
$PY -m monai.bundle run evaluating --config_file "['bundle/configs/train.json','bundle/configs/quickstart.json','bundle/configs/evaluate.json']" > "$OUT/qs_eval.log" 2>&1
$PY -m monai.bundle run inference --config_file "['bundle/configs/inference.json','bundle/configs/quickstart.json']" --progress False > "$OUT/qs_infer.log" 2>&1
cp -r bundle/eval "$OUT/qs_eval"
hashes bundle/outputs > "$OUT/qs_outputs.sha256"
echo "quick start done in $((SECONDS - start)) s"
$PY -m monai.bundle run evaluating --config_file "['bundle/configs/train.json','bundle/configs/recipes/shipped.json','bundle/configs/evaluate.json']" \
    --datalist_file "$DROS/datalist_fold0.json" --bundle_root "$OUT/shipped" --ckpt_path "$ROOT/bundle/models/pretrained/model.pt" \
    --test_key testing_sections --output_dir "$OUT/shipped_eval" > "$OUT/shipped_eval.log" 2>&1
$PY -m monai.bundle run inference --config_file bundle/configs/inference.json --input "$DROS/datalist_fold0.json" --input_key testing_sections \
    --ckpt_path "$ROOT/bundle/models/pretrained/model.pt" --output_dir "$OUT/shipped_infer" --progress False > "$OUT/shipped_infer.log" 2>&1
hashes "$OUT/shipped_infer" > "$OUT/shipped_outputs.sha256"
echo "all done in $((SECONDS - start)) s"
