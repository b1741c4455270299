#!/usr/bin/env bash
# Every check that needs a GPU, in one short run (the device tool's machines: torch and triton installed).
#   bash bench/gpu_check.sh OUT_DIR [quick]
# Writes tests.log, speed.json/.log, profile.log (and with no second argument sweep.log) into OUT_DIR.
# Each part has its own time limit, so a hang costs minutes, not the whole run.
set -o pipefail
out=${1:-gpu-out}
mkdir -p "$out"
export PYTHONPATH=$PWD/src:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
echo "== GPU tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/recurrent/test_engine_triton.py tests/training/test_graph_step.py \
  tests/lm/test_generate.py tests/lm/test_heads.py 2>&1 | tee "$out/tests.log" | tail -25
echo "== speed"
timeout 300 python3 bench/speed.py --device cuda --no-sampling --json "$out/speed.json" 2>&1 | grep -v "UserWarning\|result = fn" | tee "$out/speed.log"
echo "== profile"
timeout 60 python3 bench/profile_step.py --config recipe 2>&1 | tee "$out/profile.log" | tail -32
if [ -z "$2" ]; then
  echo "== kernel cuts"
  timeout 100 python3 bench/triton_sweep.py --shapes recipe charrnn large-bf16 --json "$out/sweep.json" 2>&1 | tee "$out/sweep.log"
fi
