#!/usr/bin/env bash
# The whole pipeline in one command, on real CIFAR-10:
#   1. train a small teacher (wrn16_2) for a few epochs (downloads CIFAR-10 if DATA_ROOT is empty),
#   2. distill a wrn16_1 student from it with CuDFKD for a few short epochs, without training data,
#   3. print the report's tables and where the TensorBoard logs are.
# Well under an hour on a 2-core CPU (25 min measured, results/quickstart_cpu/). The numbers are a smoke test of the
# pipeline, not the paper's (those need the launchers' full schedules).
#
# Usage: bash scripts/quickstart.sh [DATA_ROOT] [extra flags for both commands, e.g. --device cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT="${1:-data}"
shift || true
RUNS="runs/quickstart"
TEACHER="checkpoints/quickstart/cifar10_wrn16_2.pth"

download=()
if [ ! -d "$DATA_ROOT/cifar-10-batches-py" ]; then
    download=(--download)
fi

python train_scratch.py --model wrn16_2 --dataset cifar10 --data_root "$DATA_ROOT" "${download[@]}" \
    --epochs 3 --batch_size 256 --lr 0.1 --milestones 2 \
    --save_dir "$RUNS/teacher" --pretrained_path "$TEACHER" --overwrite "$@"

python datafree_kd.py --method cudfkd --dataset cifar10 --teacher wrn16_2 --student wrn16_1 \
    --teacher_ckpt "$TEACHER" --data_root "$DATA_ROOT" \
    --epochs 8 --ep_steps 100 --kd_steps 10 --batch_size 128 --loss kl --adv 0.5 \
    --save_dir "$RUNS/cudfkd" --overwrite "$@"

python -m datafree.report "$RUNS/teacher" "$RUNS/cudfkd" --out "$RUNS/report" --burn_in 0
echo "TensorBoard: tensorboard --logdir $RUNS"
