#!/bin/bash
# Choosing the CIFAR-10 recipe's settings without spending a CPU hour on each: every variant of
# recipes/cifar10-fast.toml trains for the number of steps that 60 minutes of the 2-core CPU buy it (and with
# its progressive resolution ending at the share of those steps that half the minutes give), on a GPU, all the
# variants at once. The step counts come from timing each variant's training step on the CPU at 16 and 32 px
# (2 threads, bf16, batch 256), scaled so that the recipe's own count is the 9,101 steps of its 60-minute CPU run.
# A variant is then judged by its hold-out accuracy at the end; the winner still has to show it on the CPU
# (benchmarks/cifar10_time_to_accuracy.py). Results: benchmarks/results/cifar10-gpu-sweep/README.md.
#
#   bash benchmarks/cifar10_step_matched_sweep.sh            (DATA: the CIFAR-10 tree, LOGS: where logs go)
set -u
DATA=${DATA:-/tmp/cifar10}; DEV=${DEV:-cuda}; LIMIT=${LIMIT:-1800}; LOGS=${LOGS:-/tmp/cifar10-sweep}
PY=${PY:-python}; RUNS=${RUNS:-$LOGS/runs}
mkdir -p "$LOGS" "$RUNS"
run() {  # name steps progressive_until [--set ...]
  local name=$1 steps=$2 until=$3; shift 3
  timeout "$LIMIT" "$PY" -m vitkit train --recipe cifar10-fast --data "$DATA" --progress false \
    --set device="$DEV" --set threads=2 --set budget_minutes=none --set eval_every_minutes=0 \
    --set checkpoint_every=0 --set steps="$steps" --set eval_every=$((steps / 4)) \
    --set progressive_until="$until" --set log_every=500 --out-dir "$RUNS" --name "$name" \
    --set patch_dropout=0 --set cutmix_alpha=0 "$@" > "$LOGS/$name.log" 2>&1
  echo "$name rc=$? $(grep -h 'hold-out' "$LOGS/$name.log" | tr '\n' ' ')"
}
#   name      steps  until  what differs from the recipe before patch dropout and CutMix
run ctrl       9100  0.687 &
run ctrl-cm    9100  0.687 --set cutmix_alpha=1.0 --set mix_prob=0.5 &
run pd25      13770  0.663 --set patch_dropout=0.25 &
run pd25-cm   13770  0.663 --set patch_dropout=0.25 --set cutmix_alpha=1.0 --set mix_prob=0.5 &
run pd50      21060  0.654 --set patch_dropout=0.5 &
run pd50-cm   21060  0.654 --set patch_dropout=0.5 --set cutmix_alpha=1.0 --set mix_prob=0.5 &
run pd50-re   21060  0.654 --set patch_dropout=0.5 --set random_erasing=0.25 &
run pd50-d8   12340  0.646 --set patch_dropout=0.5 --set depth=8 &
run pd50-w192  9180  0.646 --set patch_dropout=0.5 --set width=192 --set num_heads=3 --set mlp_dim=576 &
wait
