#!/usr/bin/env bash
# The GPU benchmark in one call (issue #18), under 5 minutes on one H100/H200:
#
#   1. field throughput (forward + backward coordinates/s, naive reference beside it) and
#      the RNF epoch split on the simulated far-field set and the Siemens star, with
#      rPIE's epoch and the FFT floor back to back  -> rnf-speed-<tag>.json
#   2. the field building blocks at 512^2 .. 2048^2                -> fields-<tag>.json
#   3. one RNF reconstruction of the Siemens star through the pipeline on local_cuda
#      (star config, RNF defaults, half-data off), time and quality -> star-rnf-<tag>.json
#   4. the tile pipeline on local_cuda (per-tile overhead, gigapixel projection)
#                                                                  -> pipeline-<tag>-quick.json
#   5. the tests marked gpu (pytest -m gpu)                        -> pytest-gpu-<tag>.txt
#
# Usage (from anywhere; results go to bench/results unless --out=DIR):
#   bench/gpu.sh                 # needs CUDA; commit the JSON it writes
#   bench/gpu.sh --dry-run       # CPU: step 1 at tiny sizes, steps 2-4 printed (not run),
#                                # step 5 collects only; ~15 s (tests/bench/test_gpu_sh.py)
# Real data: ../shared/data or $PTYFLOW_DATA (the star steps are skipped without it).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
OUT=bench/results
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --out=*) OUT="${arg#--out=}" ;;
    *) echo "usage: bench/gpu.sh [--dry-run] [--out=DIR]" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
PY="${PYTHON:-python}"
DATA="${PTYFLOW_DATA:-../shared/data}"
STAR="$DATA/farfield-xray-siemens-star/siemens-star-small.npz.bz2"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [ "$DRY" = 1 ]; then
  TAG=dryrun; DEV=cpu; CLUSTER=local
  SPEED=(--quick --grid 64 --epochs 2 --sim 32 25 --eager-only)
  FIELDS=(--device cpu --sizes 64 --reps 1 --skip-naive)
  GPU_TESTS=tests/engines
  RUN_INPUT="$STAR"; RUN_FLAGS=(--config deployments/configs/farfield-siemens.yaml --workers 1)
  PIPE=(--quick)
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "bench/gpu.sh: no CUDA device (use --dry-run to check the script on CPU)" >&2; exit 2; }
  TAG=cuda; DEV=cuda; CLUSTER=local_cuda; GPU_TESTS=tests
  SPEED=(--threads 1 --grid 1024 --only sim-farfield-100x64 farfield-star)
  FIELDS=(--device cuda --sizes 512 1024 2048)
  RUN_INPUT="$STAR"
  RUN_FLAGS=(--config deployments/configs/farfield-siemens.yaml --workers 1)
  PIPE=(--quick)
fi

# the long steps: run them, or (dry run) print them
heavy() { if [ "$DRY" = 1 ]; then echo "   dry run, not run: $*"; else "$@"; fi; }

echo "== 1. field throughput and RNF epoch split ($DEV)"
"$PY" bench/bench_rnf_speed.py --device "$DEV" "${SPEED[@]}" --out "$OUT/rnf-speed-$TAG.json"
echo "== 2. field building blocks"
heavy "$PY" bench/bench_fields.py "${FIELDS[@]}" --out "$OUT/fields-$TAG.json"
echo "== 3. RNF reconstruction through the pipeline ($CLUSTER)"
if [ -e "$RUN_INPUT" ] || [ "$DRY" = 1 ]; then
  heavy "$PY" bench/run_timed.py --out "$OUT/star-rnf-$TAG.json" --fresh --label "RNF defaults, $CLUSTER" \
    -- "$RUN_INPUT" -o "$WORK/run.zarr" --engine rnf --no-half-data --cluster "$CLUSTER" \
    "${RUN_FLAGS[@]}"
else
  echo "   skipped: $RUN_INPUT not found"
fi
echo "== 4. tile pipeline ($CLUSTER)"
heavy "$PY" -m bench pipeline --device "$DEV" --no-peers --out "$OUT" --tag "$TAG" "${PIPE[@]}"
echo "== 5. CUDA tests"
COLLECT=(); [ "$DRY" = 1 ] && COLLECT=(--collect-only)
"$PY" -m pytest -q -p no:cacheprovider -m gpu "${COLLECT[@]}" $GPU_TESTS \
  > "$OUT/pytest-gpu-$TAG.txt" 2>&1 || {
  tail -20 "$OUT/pytest-gpu-$TAG.txt"; exit 1; }
tail -1 "$OUT/pytest-gpu-$TAG.txt"
echo "bench/gpu.sh: results in $OUT (*-$TAG.*)"
