#!/usr/bin/env bash
# Every GPU check of the explanation-cost work in one short run (about 5 minutes on one
# H200): the CUDA-only tests, then the benchmarks with --device cuda. explain_cost.py runs the
# same table as on CPU (seq 1024 x batch 8 and seq 4096 x batch 2, every method next to the
# model's SDPA forward, which on CUDA picks the flash / memory-efficient kernels);
# hf_memory.py --chefer measures MiniLM against its attn_implementation="sdpa" floors.
# Results land in benchmarks/out/gpu/ (JSON and the printed tables); copy them into
# benchmarks/RESULTS.md.
#
#     bash benchmarks/gpu_check.sh            # PYTHON=... to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT="${OUT_DIR:-benchmarks/out/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv || true
"$PYTHON" -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/tests.log"
"$PYTHON" benchmarks/explain_cost.py --device cuda --repeats 3 --out "$OUT/explain_cost.json" | tee "$OUT/explain_cost.md"
"$PYTHON" benchmarks/hf_memory.py --device cuda --chefer --no-ladder --out "$OUT/hf_goal.json" | tee "$OUT/hf_goal.md"
for config in minilm modernbert; do
  "$PYTHON" benchmarks/hf_memory.py --device cuda --no-goal --configs "$config" --budget-gib 120 \
    --lengths 1024 2048 4096 8192 --out "$OUT/hf_longest_$config.json" | tee "$OUT/hf_longest_$config.md"
done
"$PYTHON" benchmarks/propagation.py --device cuda --out "$OUT/propagation.json" | tee "$OUT/propagation.md"
"$PYTHON" benchmarks/speed.py --device cuda --layers 6 --seqs 1024 --batches 32 --no-loader --no-large --repeats 3 --out "$OUT/speed.json" | tee "$OUT/speed.md"
"$PYTHON" benchmarks/faithfulness.py --quick --device cuda --out "$OUT/faithfulness_quick.json" | tee "$OUT/faithfulness_quick.md"
"$PYTHON" benchmarks/codelevel.py --quick --device cuda --out "$OUT/codelevel_quick.json" | tee "$OUT/codelevel_quick.md"
echo "done: $OUT"
