#!/usr/bin/env bash
# Every GPU measurement the open issues ask for, in one device call (issue 5: each algorithm runs on CUDA;
# issue 8: TD3+BC updates/s eager and from CUDA graphs, and 8 runs sharing the GPU, each against d3rlpy or the
# eager loop in the same run; PRDC's update cost with its device search).
#   here:   bash scripts/gpu_wheels.sh
#   device: run  command "bash scripts/gpu_check.sh"  carry [".whl"]  timeout_s 540
# Each step has its own time limit, so one that hangs still leaves the others' output. The log is
# $OUT/gpu_check.log ($OUT is the device tool's; elsewhere /tmp/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "gpu_check: no wheels under .whl/; run scripts/gpu_wheels.sh here first and carry .whl" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 2
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 MUJOCO_GL=egl

step() {  # step LIMIT_S CMD...: run one check under its own limit and print its exit status
  local limit=$1
  shift
  echo "=== $* (limit ${limit} s)"
  timeout "$limit" "$@"
  echo "=== rc $? after $SECONDS s in all"
}

bench=(python3 benchmarks/throughput.py --device cuda --updates 3000 --warmup 300 --eval-episodes 0)
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  step 240 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_cli.py tests/test_graphs.py
  step 150 "${bench[@]}" --algos bc,td3_bc,iql,prdc --cuda-graphs --roofline
  step 120 "${bench[@]}" --algos td3_bc --cuda-graphs --parallel 8
} 2>&1 | tee "$out/gpu_check.log"
