#!/usr/bin/env bash
# Training on a lent GPU machine (no network there: torch comes with its image). The data pack
# travels as the git-ignored .data/pack256.npz (build it first: python -m training.pack).
# Usage: training/gpu_train.sh sweep|final   (results under $OUT, small enough to come back)
#   sweep: 1-epoch smoke, then the paper's constant Nadam 1e-4 vs 1e-3 cosine, 40 epochs, no ct16
#   final: the shipped config (with ct16) and the same without ct16 (honest patient table)
set -uo pipefail
export PYTHONUNBUFFERED=1
PACK=${PACK:-.data/pack256.npz}
CFG=${CFG:-training/configs/fpn256.toml}
EPOCHS=${EPOCHS:-100}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)"
run() { # name, then overrides
  local name=$1; shift
  local sets=(); for s in "$@"; do sets+=(--set "$s"); done
  mkdir -p /tmp/runs
  python3 -m training.train --config $CFG --pack $PACK --out /tmp/runs/$name --fp16-weights "${sets[@]}" > "/tmp/runs/$name.log" 2>&1
  local rc=$?; echo "$name exit $rc"; ((rc)) && tail -20 "/tmp/runs/$name.log"
  cp /tmp/runs/$name/metrics.json "$OUT/$name.json" 2>/dev/null
}
mode=${1:-}; shift || true
case $mode in
  sweep)
    python3 -m training.train --config $CFG --pack $PACK --out /tmp/runs/smoke --set train.epochs=1 2>&1 | tail -4
    run lr1e-3 train.epochs=40 data.use_ct16=false &
    run lr1e-4 train.epochs=40 data.use_ct16=false train.lr=0.0001 train.schedule=constant train.warmup_epochs=0 &
    wait ;;
  final)
    run ship train.epochs=$EPOCHS "$@" &
    run noct16 train.epochs=$EPOCHS data.use_ct16=false "$@" &
    wait
    cp /tmp/runs/noct16/ct16_predictions.csv "$OUT/noct16_ct16_predictions.csv"
    cp /tmp/runs/noct16/heldout_predictions.csv "$OUT/noct16_heldout_predictions.csv"
    # weights (about 50 MB in fp16) in pieces under the 16 MiB per-file limit
    split -b 15M -d /tmp/runs/ship/weights_fp16.pt "$OUT/ship_weights_fp16.pt.part" ;;
  *) echo "usage: $0 sweep|final"; exit 2 ;;
esac
for f in "$OUT"/*.json; do python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[1], m['train_seconds'], 's', json.dumps(m['heldout']), json.dumps({k: round(v['auc'],3) for k, v in m['heldout_by_source'].items()}))" "$f"; done
