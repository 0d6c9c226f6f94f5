#!/usr/bin/env bash
# The GPU check, as run through the device tool on a lent machine (one H200, CUDA image with torch,
# no network): the stack is carried as wheels in .whl/ (see the comment at the end), installed into
# the image's python, and the benchmark runs with every role on the GPU: DeepSpeed over NCCL, the
# transformers rollout engine on CUDA (vLLM's CUDA wheel is ~400 MB, past what can be carried).
#
#   bash bench/gpu_check.sh          # writes $OUT/bench_gpu.log (or ./bench_gpu.log)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

start=$(date +%s)
tar -xJf .whl/ray-nojars.tar.xz -C "$site" || exit 1
python3 -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | grep -v "^WARNING\|^\[notice\]" | tail -5
echo "install: $(( $(date +%s) - start )) s"
export PYTHONPATH=$PWD RAY_AUTH_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'EOF' || exit 1
import deepspeed, peft, ray, torch, transformers, trl
import grpo_ray.driver  # noqa: F401
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "| ray", ray.__version__, "| deepspeed",
      deepspeed.__version__, "| transformers", transformers.__version__, "| peft", peft.__version__, "| trl", trl.__version__)
EOF
timeout "${BENCH_TIMEOUT:-420}" python3 bench/compare_trl.py --engine hf --steps "${STEPS:-12}" > "$out/bench_gpu.log" 2>&1
rc=$?
grep -E "^\||^P[1-4]|^steps|cores;|Error|error:|Traceback" "$out/bench_gpu.log" | grep -v "^|.*INFO" | tail -40
echo "bench rc=$rc after $(( $(date +%s) - start )) s"
exit $rc

# .whl/ (git-ignored; scripts/make_gpu_wheels.sh fills it) held, for python 3.12 manylinux x86_64, --no-deps: ray 2.60.0 unpacked without its
# Java jars and re-packed with xz -9 (79 MB wheel -> 28 MB), deepspeed 0.19.8 (built with DS_BUILD_OPS=0),
# pydantic, pydantic-core, annotated-types, typing-inspection, hjson, jsonschema, referencing, rpds-py,
# jsonschema-specifications, datasets 5.2.0, dill, multiprocess, trl 1.16.0, peft 0.21.2, transformers 5.19.0.
