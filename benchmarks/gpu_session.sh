#!/usr/bin/env bash
# The GPU checks as one prepared command for a lent GPU
# (results/benchmarks/README.md): the CUDA-only tests (tests/test_cuda.py), then as many rows of
# the GPU throughput table as fit in the budget. Rerun it to continue the table: rows already
# measured are skipped (--resume), and SKIP_TESTS=1 skips the tests on a rerun.
#
#   bash benchmarks/gpu_session.sh [MINUTES_FOR_ROWS]      (default 6)
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
    for file in gpu_throughput.md gpu_throughput.md.json gpu_throughput.log; do
        [ -f "results/benchmarks/$file" ] && cp "results/benchmarks/$file" "$DEST/"   # earlier calls' rows
    done
fi
nvidia-smi > "$DEST/gpu_nvidia_smi.txt" 2>&1
"$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee -a "$DEST/gpu_nvidia_smi.txt"
if [ -z "${SKIP_TESTS:-}" ]; then
    "$PYTHON" -m pytest -q -rs tests/test_cuda.py 2>&1 | tee "$DEST/gpu_cuda_tests.log"
fi
"$PYTHON" benchmarks/throughput.py --methods cudfkd,cmi,adi,dafl,zskt,dfq,fast,nayer,adadfkd \
    --pairs resnet34:resnet18,wrn40_2:wrn16_1 --variants fp32,bf16,compile --batch_size 256 \
    --device cuda --max_g_steps 50 --max_minutes "${1:-6}" --resume --out "$DEST/gpu_throughput.md" \
    2>&1 | tee -a "$DEST/gpu_throughput.log"
