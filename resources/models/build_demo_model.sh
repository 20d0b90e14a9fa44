#!/usr/bin/env bash
# Rebuild the bundled demo model from nothing: a 10,000-study phantom world,
# its preprocessing cache, the image backbone pretrained on the training
# split's report labels, the tiny model (clip-ng-dtcg) and the plain-CLIP
# baseline trained the same way from that backbone, and both evaluations.
#
#   bash resources/models/build_demo_model.sh [WORK_DIR]
#
# WORK_DIR (default: ./demo-model-work) receives the world, the cache and the
# runs; the finished model is copied to resources/models/concord-tiny-demo/
# with its evaluation. One CPU thread per training keeps the result bit-for-bit
# reproducible on CPU; the two trainings run side by side.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-demo-model-work}"
mkdir -p "$work"
export OMP_NUM_THREADS=1

[ -f "$work/world/mimic-cxr-2.0.0-metadata.csv" ] || \
  concord phantom --out "$work/world" --studies 10000 --seed 7 --size 256 --workers 2
concord data prepare "$work/world" --cache "$work/cache" --image-size 160 --workers 2

# The image backbone, trained first on the training split's twelve report
# labels (about 80 minutes on one thread); both contrastive runs start from it.
[ -f "$work/tower.safetensors" ] || \
  concord pretrain-image --data "$work/world" --out "$work/tower.safetensors" --steps 12000 \
    --eval-every 3000 --threads 1 --precision bf16 > "$work/pretrain.jsonl"

for variant in clip-ng-dtcg clip; do
  resume=""
  [ -f "$work/run-$variant/run.json" ] && resume="--resume"
  concord train --config "$here/demo-train.yaml" --variant "$variant" --data "$work/world" \
    --cache "$work/cache" --out "$work/run-$variant" --image-weights "$work/tower.safetensors" \
    --threads 1 --progress json $resume >> "$work/train-$variant.jsonl" &
done
wait

for variant in clip-ng-dtcg clip; do
  mkdir -p "$work/eval-$variant"
  concord eval --model "$work/run-$variant/model" --data "$work/world" --suite all \
    --consistency-studies 1459 -o "$work/eval-$variant/results.json" --save-calibration
done

rm -rf "$here/concord-tiny-demo"
cp -r "$work/run-clip-ng-dtcg/model" "$here/concord-tiny-demo"
mkdir -p "$here/concord-tiny-demo/eval"
cp "$work/eval-clip-ng-dtcg/results.json" "$work/eval-clip-ng-dtcg/report.md" \
   "$work/eval-clip-ng-dtcg/"*.png "$here/concord-tiny-demo/eval/"
cp "$work/eval-clip/results.json" "$here/concord-tiny-demo/eval/baseline-clip-results.json"
echo "demo model written to $here/concord-tiny-demo"
