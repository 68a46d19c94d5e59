#!/usr/bin/env bash
# Export a run's candidate checkpoints the way the default is shipped, and score each on the
# choosing splits (never DUTS-TE). MODEL_CARD.md, "v11", gives the steps one by one.
#
#   tools/export_candidates.sh runs/v11 epoch-045 epoch-040 best avg-41-45
#
# For each <run>/checkpoints/<name>.pt, into runs/cand/<run name>-<name>/:
#   raw416k.onnx                    the raw export (416 px, uint8 input, aspect kept)
#   levels.md                       benchmarks/output_levels.py: the output calibration it chooses
#   cleancut-default.onnx           exported again with that calibration
#   quantize/...-int8-static-u8.onnx  the shipped int8 recipe (benchmarks/quantize.py)
#   evaluate-<split>.txt (and /)    cleancut evaluate of the int8 model on each full split
# Environment: PYTHON (default .venv/bin/python), DATA (default "../shared/data datasets"),
# SPLITS (default "val val-objects duts-val").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data datasets}
SPLITS=${SPLITS:-val val-objects duts-val}
if [ $# -lt 2 ]; then
  echo "usage: tools/export_candidates.sh RUN CHECKPOINT_NAME..." >&2
  exit 2
fi
run=$1; shift
for name in "$@"; do
  ckpt="$run/checkpoints/$name.pt"
  [ -f "$ckpt" ] || { echo "export_candidates: $ckpt: no such checkpoint" >&2; exit 2; }
done
for name in "$@"; do
  ckpt="$run/checkpoints/$name.pt"
  out="runs/cand/$(basename "$run")-$name"
  mkdir -p "$out"
  echo "== $ckpt -> $out"
  $PYTHON -m cleancut export "$ckpt" -o "$out/raw416k.onnx" --size 416 --uint8-input --keep-aspect
  # shellcheck disable=SC2086  # DATA and SPLITS are lists
  $PYTHON benchmarks/output_levels.py "$out/raw416k.onnx" --data $DATA --split $SPLITS --stride 2 | tee "$out/levels.md"
  calibration=$(sed -n 's/^chosen: \(--[a-z-]* [0-9. ]*[0-9]\).*/\1/p' "$out/levels.md")
  echo "calibration: ${calibration:-none (raw)}"
  # shellcheck disable=SC2086
  $PYTHON -m cleancut export "$ckpt" -o "$out/cleancut-default.onnx" --size 416 --uint8-input --keep-aspect \
      $calibration --name cleancut-default
  # shellcheck disable=SC2086
  $PYTHON benchmarks/quantize.py --model "$out/cleancut-default.onnx" --data $DATA --splits $SPLITS \
      --variants int8-static-u8 --reduce-range --full-range-depthwise --network-only --out "$out/quantize"
  for split in $SPLITS; do
    # shellcheck disable=SC2086
    $PYTHON -m cleancut evaluate "$out/quantize/cleancut-default-int8-static-u8.onnx" --data $DATA --split "$split" \
        --out "$out/evaluate-$split" | tee "$out/evaluate-$split.txt"
  done
done
