#!/usr/bin/env bash
# The GPU checks as one prepared command for a lent GPU
# (results/benchmarks/README.md): first the whole published MNIST cells of DAFL (docs/METHODS.md
# §20.1: 24,000 iterations each, minutes on one GPU) and DFAD (§20.2: 10,000 KD steps), then the CUDA-only tests (tests/test_cuda.py),
# then the 64-px projection (DAFL and CuDFKD at 32 and 64 px, same pair and batch: is a Tiny-ImageNet
# run at most 4x a CIFAR run? docs/METHODS.md §21.3), then as many rows of the GPU throughput table as
# fit in the budget. Rerun it to continue: rows already measured are skipped (--resume);
# SKIP_MNIST=1, SKIP_TESTS=1 and SKIP_64PX=1 skip those parts.
#
#   bash benchmarks/gpu_session.sh [MINUTES_FOR_ROWS]      (default 6)
#
# The MNIST part needs the official files under data/MNIST/raw/ (carry "data/MNIST", 11.6 MB):
# it estimates both cells with benchmarks/throughput.py, trains the teachers (scripts/scratch/),
# then runs scripts/dafl/dafl_mnist_*.sh and scripts/dfad/dfad_mnist_*.sh at their full schedule, each for at most MNIST_MINUTES
# (default 4) and resumable with the same command. Logs and run directories go to $DEST/mnist/.
#
# Output goes to $OUT when it is set (the device tool's return folder), else to
# results/benchmarks/; copy it back into results/benchmarks/ before the next call.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
DEST=${OUT:-results/benchmarks}
mkdir -p "$DEST"
if [ "$DEST" != results/benchmarks ]; then
    for file in gpu_throughput.md gpu_throughput.md.json gpu_throughput.log gpu_64px_throughput.md \
            gpu_64px_throughput.md.json gpu_64px_throughput.log; do
        [ -f "results/benchmarks/$file" ] && cp "results/benchmarks/$file" "$DEST/"   # earlier calls' rows
    done
fi
nvidia-smi > "$DEST/gpu_nvidia_smi.txt" 2>&1
"$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee -a "$DEST/gpu_nvidia_smi.txt"
if [ -z "${SKIP_MNIST:-}" ] && [ -d data/MNIST/raw ]; then
    mkdir -p "$DEST/mnist"
    "$PYTHON" benchmarks/throughput.py --methods dafl --dataset mnist --pairs lenet5:lenet5_half,hintonnet:hintonnet_half \
        --variants fp32 --device cuda --resume --out "$DEST/mnist/mnist_throughput.md" 2>&1 | tee -a "$DEST/mnist/mnist.log"
    for pair in lenet5:lenet5_half hintonnet:hintonnet_half; do
        teacher=${pair%%:*}; student=${pair##*:}
        if [ ! -f "checkpoints/pretrained/mnist_$teacher.pth" ]; then
            bash "scripts/scratch/scratch_mnist_$teacher.sh" --data_root data --device cuda \
                --save_dir "$DEST/mnist/runs/scratch_mnist_$teacher" --overwrite --no_progress 2>&1 | tee -a "$DEST/mnist/mnist.log"
        fi
        run="$DEST/mnist/runs/dafl_mnist_${teacher}_${student}"
        resume=(); [ -f "$run/last.pth" ] && resume=(--resume)
        bash "scripts/dafl/dafl_mnist_${teacher}_${student}.sh" --data_root data --device cuda --save_dir "$run" \
            --max_minutes "${MNIST_MINUTES:-4}" --no_progress "${resume[@]}" 2>&1 | tee -a "$DEST/mnist/mnist.log"
    done
    # DFAD's own MNIST cell (docs/METHODS.md §14, §20.2): 40 epochs x 250 KD steps, about a minute on one GPU.
    run="$DEST/mnist/runs/dfad_mnist_lenet5_lenet5_half"
    resume=(); [ -f "$run/last.pth" ] && resume=(--resume)
    bash scripts/dfad/dfad_mnist_lenet5_lenet5_half.sh --data_root data --device cuda --save_dir "$run" \
        --max_minutes "${MNIST_MINUTES:-4}" --no_progress "${resume[@]}" 2>&1 | tee -a "$DEST/mnist/mnist.log"
fi
if [ -z "${SKIP_TESTS:-}" ]; then
    "$PYTHON" -m pytest -q -rs tests/test_cuda.py 2>&1 | tee "$DEST/gpu_cuda_tests.log"
fi
if [ -z "${SKIP_64PX:-}" ]; then
    for dataset in cifar10 tiny_imagenet; do
        "$PYTHON" benchmarks/throughput.py --methods dafl,cudfkd --pairs resnet34:resnet18 --dataset "$dataset" \
            --variants bf16 --batch_size 128 --device cuda --max_g_steps 50 --resume \
            --out "$DEST/gpu_64px_throughput.md" 2>&1 | tee -a "$DEST/gpu_64px_throughput.log"
    done
fi
"$PYTHON" benchmarks/throughput.py --methods cudfkd,cmi,adi,dafl,zskt,dfq,fast,nayer,adadfkd,dfad,mbdfkd,predfkd \
    --pairs resnet34:resnet18,wrn40_2:wrn16_1 --variants fp32,bf16,compile --batch_size 256 \
    --device cuda --max_g_steps 50 --max_minutes "${1:-6}" --resume --out "$DEST/gpu_throughput.md" \
    2>&1 | tee -a "$DEST/gpu_throughput.log"
