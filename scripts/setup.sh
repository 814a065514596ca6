#!/usr/bin/env bash
# Create .venv and install finetune with its test extra.
# torch goes in first, pinned to the CPU build, so no multi-GB CUDA wheel is pulled on a
# CPU-only machine. GPU users: install your torch build into .venv first, or set
# FINETUNE_TORCH="" to keep whatever torch is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
TORCH_SPEC=${FINETUNE_TORCH-torch==2.13.0}
if [ -n "$TORCH_SPEC" ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
fi
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import torch, transformers, trl, peft; print('finetune env ready: torch', torch.__version__, \
'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"
