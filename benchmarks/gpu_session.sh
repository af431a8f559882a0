#!/usr/bin/env bash
# One prepared GPU session (issue 19): measure, then run the chapters at the `gpu` profile and archive
# their records for the scoreboard's GPU column. Run from the repository root on a CUDA machine:
#
#   bash benchmarks/gpu_session.sh                       # throughput, then every chapter
#   CHAPTERS="02 06" LIMIT=1500 bash benchmarks/gpu_session.sh
#
# 1. bench_training.py: steps/s of every training chapter's U-Net at its `gpu` settings, in fp32, bf16,
#    fp16 (loss scaling) and channels-last, as speed-ups over fp32 in the same run (+ sampling time);
#    the T4 time of a chapter is then (its training images x GFLOP per image) / 1.8 TFLOP/s, or measured.
# 2. time_chapters.py: each chapter end to end with a cold cache (stops after LIMIT seconds in all);
#    chapters that finish have their records copied to book/gpu_records/ (commit them).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-_build/gpu_session}
LIMIT=${LIMIT:-3000}
mkdir -p "$OUT"
export PAPERLIB_PROFILE=gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported())" \
  | tee -a "$OUT/gpu.txt"
python benchmarks/bench_training.py --steps "${STEPS:-100}" --rounds 2 --samples 1024 --out "$OUT/bench_training.jsonl" \
  | tee "$OUT/bench_training.txt"
# shellcheck disable=SC2086
timeout "$LIMIT" python benchmarks/time_chapters.py ${CHAPTERS:-} --out "$OUT" | tee -a "$OUT/chapters.txt"
mkdir -p book/gpu_records
for f in "$OUT"/*.records.json; do
  [ -e "$f" ] && cp "$f" "book/gpu_records/$(basename "$f" .records.json).json"
done
ls -l book/gpu_records
