#!/usr/bin/env bash
# The GPU check, as run through the device tool on a lent machine (one CUDA GPU, an image with torch,
# no network): the stack is carried as wheels in .whl/ (scripts/make_gpu_wheels.sh fills it), installed
# into the image's python, then
#   1. the GPU smoke tests (tests/gpu: transformers engine on the device, DeepSpeed bf16 under ZeRO-2/3
#      over NCCL, NF4 with bitsandbytes, the on-device merge timed at Llama-8B layer sizes, a killed
#      actor's GPU memory freed for its restart, checkpoint and resume, chunked logprobs, a colocated run),
#      each printing a GPU-CHECK line;
#   2. the benchmark against TRL with every role on the GPU (--engine hf: vLLM's CUDA wheel, ~400 MB,
#      cannot be carried).
#
#   bash scripts/make_gpu_wheels.sh                       # here, once
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)   # the device tool
# Writes $OUT/gpu_tests.log and $OUT/bench_gpu.log (or ./ without $OUT).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

start=$(date +%s)
tar -xJf .whl/ray-nojars.tar.xz -C "$site" || exit 1
tar -xJf .whl/bitsandbytes-cuda13.tar.xz -C "$site" || exit 1
python3 -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | grep -v "^WARNING\|^\[notice\]" | tail -5
echo "install: $(( $(date +%s) - start )) s"
export PYTHONPATH=$PWD RAY_AUTH_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'PY' || exit 1
import bitsandbytes, deepspeed, peft, ray, torch, transformers, trl
import grpo_ray.run.trainer  # noqa: F401
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.version.cuda, "| ray", ray.__version__,
      "| deepspeed", deepspeed.__version__, "| transformers", transformers.__version__, "| peft", peft.__version__,
      "| trl", trl.__version__, "| bitsandbytes", bitsandbytes.__version__)
PY
timeout "${TEST_TIMEOUT:-330}" python3 -m pytest tests/gpu -m gpu -q -s -p no:cacheprovider -o addopts="" \
    > "$out/gpu_tests.log" 2>&1
trc=$?
grep -E "GPU-CHECK|passed|failed|error|Error" "$out/gpu_tests.log" | grep -v "^$" | tail -40
echo "gpu tests rc=$trc after $(( $(date +%s) - start )) s"
timeout "${BENCH_TIMEOUT:-150}" python3 bench/compare_trl.py --engine hf --steps "${STEPS:-6}" > "$out/bench_gpu.log" 2>&1
brc=$?
grep -E "^\||^P[1-4]|^steps|cores;|Error|error:|Traceback" "$out/bench_gpu.log" | grep -v "^|.*INFO" | tail -30
echo "bench rc=$brc after $(( $(date +%s) - start )) s"
exit $(( trc || brc ))
