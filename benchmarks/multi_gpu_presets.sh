#!/usr/bin/env bash
# Exercise every accelerate preset on a multi-GPU machine: a short LoRA and full run of the
# quickstart recipe under each, checking each finishes and writes its run directory.
#   bash benchmarks/multi_gpu_presets.sh [NUM_GPUS]
# DeepSpeed presets are skipped when deepspeed is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-$(python -c "import torch; print(torch.cuda.device_count())")}
if [ "$N" -lt 2 ]; then echo "needs at least 2 GPUs (found $N)"; exit 2; fi
FT=${FT:-.venv/bin/finetune}
for preset in ddp fsdp deepspeed_zero2 deepspeed_zero3; do
  if [[ $preset == deepspeed* ]] && ! python -c "import deepspeed" 2>/dev/null; then
    echo "skip $preset (deepspeed not installed)"; continue
  fi
  cfg=$(mktemp --suffix=.yaml)
  sed "s/^num_processes: .*/num_processes: $N/" "recipes/accelerate/$preset.yaml" > "$cfg"
  for method in lora full; do
    out="runs/presets/$preset-$method"
    "$FT" train recipes/quickstart.yaml --accelerate-config "$cfg" --overwrite \
      method.name=$method model.dtype=bfloat16 train.max_steps=4 train.save_steps=2 "output.dir=$out"
    python -c "import json,sys; s=json.load(open('$out/status.json'))['state']; print('$preset $method', s); sys.exit(s!='finished')"
  done
done
