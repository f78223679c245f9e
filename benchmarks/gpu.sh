#!/usr/bin/env bash
# The speed comparison on one CUDA device (about 3-5 minutes on an H100/H200):
# ResNet18 and MobileNetV2 at batch 128, 224x224, channels-last, fp32 and bf16 inference
# (deployed and eager) and a bf16 training step. Writes benchmarks/results/<gpu name>.md/.csv.
#   bash benchmarks/gpu.sh            # uses .venv/bin/python if present, else python3
#   CUDA_VISIBLE_DEVICES=1 bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run benchmarks/speed.py on the CPU instead')"
exec "$PY" benchmarks/speed.py --device cuda "$@"
