#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what bench/gpu_check.sh installs on a lent GPU machine: a CUDA image
# with torch but no network, Python 3.12, at most 64 MiB carried. Ray's 79 MB wheel goes without its
# Java jars, and bitsandbytes' 41 MB wheel with only its CUDA 13 and CPU kernels (the image's torch is
# CUDA 13), each re-packed with xz; the rest are wheels, --no-deps (the image has their deps).
#
#   bash scripts/make_gpu_wheels.sh      # ~3 minutes, most of it xz
set -euo pipefail
cd "$(dirname "$0")/.."
py=(--python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 --only-binary=:all: --no-deps)
tmp=$(mktemp -d)
rm -rf .whl && mkdir -p .whl
pip download -q "${py[@]}" -d "$tmp" ray==2.60.0 bitsandbytes==0.50.2
pip download -q "${py[@]}" -d .whl pydantic pydantic-core annotated-types typing-inspection hjson jsonschema \
    referencing rpds-py jsonschema-specifications datasets==5.2.0 dill multiprocess trl==1.16.0 peft==0.21.2 \
    transformers==5.19.0 psutil
DS_BUILD_OPS=0 .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation deepspeed==0.19.8 -w .whl
mkdir "$tmp/ray" && (cd "$tmp/ray" && unzip -q ../ray-2.60.0-*.whl && rm -rf ray/jars && tar -cf - . | xz -T0 -9 > "$OLDPWD/.whl/ray-nojars.tar.xz")
mkdir "$tmp/bnb" && (cd "$tmp/bnb" && unzip -q ../bitsandbytes-0.50.2-*.whl \
    && find bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*cuda13*' ! -name '*cpu*' -delete \
    && tar -cf - . | xz -T0 -9 > "$OLDPWD/.whl/bitsandbytes-cuda13.tar.xz")
rm -rf "$tmp"
du -sh .whl
