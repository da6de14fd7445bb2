#!/usr/bin/env bash
# The knowledge area's accelerator checks in one run (about 5 minutes on one H100/H200):
#   bash benchmarks/gpu/knowledge.sh            (logs to $OUT when set, else ./runs/gpu-knowledge)
# streaming rank at full size on the GPU and at 10k/20k images on the host CPUs, CLIP encoding with
# decode workers, and the knowledge tests (slow ones included; the CUDA-only cases run here).
set -uo pipefail
OUT=${OUT:-runs/gpu-knowledge}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PY:-python3}
$PY -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
$PY benchmarks/streaming_rank.py --n 100000 200000 --m 200000 --device cuda 2>&1 | tee "$OUT/streaming_rank_cuda.txt"
$PY benchmarks/streaming_rank.py --n 10000 20000 --m 200000 --device cpu 2>&1 | tee "$OUT/streaming_rank_cpu.txt"
$PY benchmarks/clip_encode.py --images 4096 --width 640 --image-size 224 --workers 8 --device cuda 2>&1 \
    | grep -v "batch/s" | tee "$OUT/clip_encode.txt"
EECA_SLOW=1 $PY -m pytest tests/test_knowledge_rank.py tests/test_knowledge_score.py tests/test_knowledge_select.py \
    tests/test_knowledge_stage1.py tests/test_knowledge_analysis.py -q -p no:cacheprovider --durations=5 2>&1 \
    | tail -40 | tee "$OUT/tests.txt"
