#!/usr/bin/env bash
# One GPU sitting on the device machine: the gpu-marked tests, then the ladder on llama 1b, results to $OUT.
#   bash benchmarks/gpu_session.sh [ladder-args...]       (run from the repo root, .whl/ carried along)
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD JUPYTER_PATH=/tmp/site/share/jupyter || exit 1
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
python3 -m pytest -q -m gpu tests 2>&1 | tail -15 | tee "$OUT/gpu-tests.txt"
run=/tmp/runs/llama-1b
python3 -m playbook run --workload llama --preset 1b --device cuda --target-ms 1.2 --iters 200 --warmup 20 --out "$run" "$@" 2>&1 \
  | grep -v IPKernelApp | tee "$OUT/ladder.log"
tar czf "$OUT/llama-1b-run.tgz" --exclude inductor-cache -C /tmp/runs llama-1b
