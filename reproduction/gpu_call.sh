#!/bin/bash
# One call on a lent GPU machine (nvidia-h100-x1 or nvidia-h200), sized for the 15 minutes of device
# time a task gets: the ResNet-18 JR overhead and stacking benchmarks, then CIFAR-10 few-shot DDNet runs (Table S3)
# until TOTAL seconds from its start are nearly spent, then the results file the report needs, written to $OUT.
#
# Here, once (the machine cannot see ../shared; the pack is ~30 MiB, the tracked tree ~29 MB, limit 64 MiB):
#     JACVIZ_DATA=../shared/data python -m jacviz.fewshot_pack pack .pack
#     grep -qx '/.pack/' .git/info/exclude || echo /.pack/ >> .git/info/exclude
# There (the device tool's run): command "bash reproduction/gpu_call.sh 560 30,10 4",
#     carry [".pack"], timeout_s 600 (the most a command may run; the machine's start and the
#     transfers come on top, within the 15 minutes).
# Back here, with the folder the call's files came back to (files_at):
#     python -m jacviz grid --dataset cifar10 --stage collect --merge FILES_AT/cifar10_runs.json
#     python -m jacviz report
# and put the ratios of FILES_AT/jr_overhead_resnet18.txt, jr_conv_cuda.txt, jr_batchnorm_cuda.txt and
# stacking_cuda.txt in the README
# (machine, date).
#
# Arguments: TOTAL (s) for the whole script: the few-shot training gets what the benchmarks leave of
# it, less 30 s for collecting (runs still going then are lost; the finished ones are recorded);
# K, the few-shot columns in order (default 30,10); WORKERS, runs at once on the one GPU (default 4:
# 14 at once made only ~2x the progress of one on an H200, 2026-12-04, and each run must finish inside
# the training time to count).
set -u
TOTAL=${1:-560}
START=$(date +%s)
K=${2:-30,10}
WORKERS=${3:-4}
OUT=${OUT:-/tmp/jacviz_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 JACVIZ_DATA=/tmp/jacviz_data
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu PYTHON=.venv/bin/python: a dry rehearsal here (the benchmarks are then skipped)
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
} 2>&1 | tee "$OUT/machine.txt"

# 1. ResNet-18 JR overhead (issue goal <= 1.6x; random batches, no data needed), ~1-2 min.
[ "$DEVICE" = cuda ] && timeout 150 "$PY" benchmarks/jr_overhead.py --models resnet18 --devices cuda --batch 100,400 --nproj 1 \
  --profile --cuda-graph 2>&1 | tee "$OUT/jr_overhead_resnet18.txt"

# 1b. Do transposed-convolution input gradients (jacviz.jr_conv) speed JR steps up on a GPU too? (<1 min;
#     on the 2-core CPU VM DDNet's JR step ran 1.39-1.51x faster, ResNet-18's 1.14x)
[ "$DEVICE" = cuda ] && timeout 60 "$PY" benchmarks/jr_conv.py --models ddnet,resnet18 --batch 100 --steps 20 \
  --rounds 3 --device cuda 2>&1 | tee "$OUT/jr_conv_cuda.txt"

# 1c. Does BatchNorm's closed-form double backward (jacviz.jr_batchnorm) cut ResNet-18's JR step on a GPU, where
#     PyTorch's launches ~5x the plain step's ops? (<1 min; on the 2-core CPU VM the JR step ran 1.2x faster)
[ "$DEVICE" = cuda ] && timeout 60 "$PY" benchmarks/jr_batchnorm.py --batch 100,400 --steps 10 --rounds 3 \
  --device cuda --ops 2>&1 | tee "$OUT/jr_batchnorm_cuda.txt"

# 2. Would stacking the 15 draws of a cell into one vmapped step beat processes? (~1 min)
[ "$DEVICE" = cuda ] && timeout 90 "$PY" benchmarks/stacking.py --models ddnet --devices cuda --stack 5,15 \
  --batch 30,100,300 --steps 10 2>&1 | tee "$OUT/stacking_cuda.txt"

# 3. Few-shot DDNet runs from the carried pack (checked byte for byte against the originals' hashes).
if [ -d .pack ]; then
  "$PY" -m jacviz.fewshot_pack unpack .pack "$JACVIZ_DATA" 2>&1 | tail -3
  BUDGET=$(( TOTAL - ($(date +%s) - START) - 30 ))
  echo "few-shot training for $BUDGET s"
  # in a process group of its own, so that the workers stop with it when the time is spent
  setsid "$PY" -m jacviz grid --dataset cifar10 --experiments fewshot --fewshot-k "$K" \
    --fewshot-runs 15 --stage train --workers "$WORKERS" --threads 2 --device "$DEVICE" > "$OUT/grid.log" 2>&1 &
  GRID=$!
  (sleep "$BUDGET"; touch /tmp/jacviz_budget_reached; kill -TERM -- -"$GRID") 2>/dev/null &
  WATCH=$!
  wait "$GRID"
  kill "$WATCH" 2>/dev/null; kill -TERM -- -"$GRID" 2>/dev/null; sleep 2
  if [ -e /tmp/jacviz_budget_reached ]; then why="its $BUDGET s were spent"; else why="every planned run was done"; fi
  rm -f /tmp/jacviz_budget_reached
  echo "training stopped: $why" | tee -a "$OUT/grid.log"
  # the records of every run finished here, with those the carried results file already held
  "$PY" -m jacviz grid --dataset cifar10 --experiments fewshot --fewshot-k "$K" --stage collect \
    >> "$OUT/grid.log" 2>&1
  cp reproduction/cifar10_runs.json "$OUT/"
  grep -c "iteration 10000/10000" "$OUT/grid.log" | sed 's/^/runs finished: /'
else
  echo "no .pack carried: few-shot training skipped (see the top of this script)"
fi
