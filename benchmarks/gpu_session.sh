#!/usr/bin/env bash
# Every GPU check in one short run, for a machine with CUDA (a lent GPU, a user's own card):
# the GPU tests, a headless run of the example workflows, then benchmarks/gpu.py for SD 1.5 and SDXL.
# Logs go to $OUT (or ./gpu-logs); each step has its own time limit so one slow step cannot hide the rest.
#   bash benchmarks/gpu_session.sh [STEP ...]      steps: tests examples sd1 sdxl (default: all)
#   PY=python3 picks the interpreter (default: .venv/bin/python where present, else python3)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
STEPS=${*:-tests examples sd1 sdxl}
want() { [[ " $STEPS " == *" $1 "* ]]; }
LOGS=${OUT:-gpu-logs}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "--- $name: rc=$rc in $((SECONDS - start))s"
  tail -n 25 "$LOGS/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
want tests && step gpu_tests 150 "$PY" -m pytest -q -p no:cacheprovider -o addopts= tests/nodes/test_gpu.py
if want examples; then
  work=$(mktemp -d)
  folders=()
  for name in models input output user temp; do folders+=("--$name-dir" "$work/$name"); done
  step examples 90 "$PY" main.py run examples/txt2img.json "${folders[@]}"
  ls "$work/output"
fi
want sd1 && step bench_sd1 200 "$PY" benchmarks/gpu.py --models sd1 --repeat 3
want sdxl && step bench_sdxl 240 "$PY" benchmarks/gpu.py --models sdxl --repeat 2
