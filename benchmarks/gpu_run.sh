#!/usr/bin/env bash
# Issue 3's GPU check, prepared to run once on a lent device machine (H100/H200), which has torch,
# transformers and sentence-transformers but no network and no ../shared/data.
#
# Here, first:   python benchmarks/gpu_kit.py --out gpu-kit      (fp16 MiniLM-L6 cross-encoder + DL19, ~46 MB)
# Device tool:   run(command="bash benchmarks/gpu_run.sh", carry=["gpu-kit"], timeout_s=540)
#
# Prints pairs/s of sentence-transformers' CrossEncoder (fp32, batch 32, as a user calls it) and of
# surerank's torch backend in bf16 and fp16 on the same 100,000 distinct DL19-derived pairs, end to end
# (tokenization included), the ratio, peak GPU memory and model FLOPs utilisation.
# Dry run of the same path on a CPU (torch fp32/bf16): DEVICE=cpu PAIRS=300 REPEATS=1 bash benchmarks/gpu_run.sh
set -euo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
OUT=${OUT:-out}
mkdir -p "$OUT"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
fi
python3 -c "import torch, transformers, sentence_transformers as st; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'sentence-transformers', st.__version__)" | tee -a "$OUT/gpu.txt"
PEAK=${PEAK_TFLOPS:-989}
python3 benchmarks/throughput.py --kit gpu-kit --device "${DEVICE:-cuda}" --backend torch --shapes "${SHAPES:-ce}" --pairs "${PAIRS:-100000}" \
  --repeats "${REPEATS:-2}" --no-memory --peak-tflops "$PEAK" 2>&1 | grep -v "Loading weights" | tee "$OUT/gpu_throughput.log"
