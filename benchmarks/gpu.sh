#!/bin/sh
# The benchmarks on a GPU: `make bench` runs this when torch sees CUDA (and `make bench-gpu` alone).
#   PY=python3 sh benchmarks/gpu.sh [results folder, default benchmarks/results]
# Each benchmark writes benchmarks/results/gpu_*.json; a failing one is reported and the others still run.
PY=${PY:-python3}
RESULTS=${1:-benchmarks/results}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RESULTS"
status=0
run() {
    echo "== $*"
    "$PY" "$@" || { echo "FAILED: $*"; status=1; }
}
# Pre-training images/s of ViT-B/16 in bf16 against the GPU's bf16 peak; peak memory at batch 64 with and without
# gradient checkpointing.
run benchmarks/pretraining_memory.py --throughput_batch_sizes 64 256 --threads 0 \
    --output "$RESULTS/gpu_pretraining_memory.json"
# The pipeline against transformers' zero-shot pipeline and the bare forward (int8 is CPU-only: left out).
run benchmarks/inference_vs_alternatives.py --device cuda --num_faces 512 --batch_size 64 \
    --output "$RESULTS/gpu_inference_vs_alternatives.json"
# How time and memory grow with the batch size, the number of labels and the number of images.
run benchmarks/scaling.py --device cuda --output "$RESULTS/gpu_scaling.json"
# The Accelerate loop against a bare PyTorch loop, and data loading against what the model consumes.
run benchmarks/training_loop_overhead.py --threads 0 --num_workers 4 \
    --output "$RESULTS/gpu_training_loop_overhead.json"
run benchmarks/data_loading.py --bf16 --threads 0 --workers 0 2 8 --subjects_224 16 --output "$RESULTS/gpu_data_loading.json"
exit $status
