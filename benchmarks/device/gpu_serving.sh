#!/usr/bin/env bash
# The GPU serving proof on the GPU test machine (no Docker, no network), in phases, one per
# device call, on a machine kept warm between them. Everything a server runs with is read back
# from the plan llmhost makes there (benchmarks/device/run_planned.py); nothing is typed here.
#   setup     unpack llama.cpp, start its CUDA build (flags from the plan) and the model
#             generation in the background
#   part      stash the vLLM payload parts this call carried (.device/vllm-min, made from
#             scripts/device/vllm-requirements.txt less the kernels a Llama on Hopper never loads)
#   install   install vLLM, make the bf16 checkpoint, plan A (llama-gpu latency + vllm-gpu
#             throughput) and plan B (llama-gpu throughput), start both engines from plan A
#   bench     sweep 1/8/32/64 users on both engines of plan A (both resident on the GPU), then
#             llama-gpu from plan B alone, then the AMX self-tests and speed rounds
#             (benchmarks/device/amx_check.py, with .device/amx carried); all into $OUT/results.tgz
#   amx       the AMX self-tests and speed rounds (benchmarks/device/amx_check.py on the bundle
#             benchmarks/device/amx_variants.py made, carried in setup as .device/amx.txz)
#   pack      (here, before the calls) make what the calls carry under .device/: the llama.cpp
#             tree, the AMX bundle, the vLLM payload in 56 MiB parts
# Usage (repo root, on the device): OUT=... bash benchmarks/device/gpu_serving.sh PHASE
# Calls: setup (carry .device/{llama-src.txz,amx.txz,ggml-vocab-llama-spm.gguf,whl} and the last
# payload part with payload.sha256), one `part` call per other part, install, bench, amx.
set -uo pipefail
PHASE=${1:?phase}
W=/tmp/w
R=$W/repo
M=$W/models
mkdir -p "$W/parts" "$M" "$W/out" "${OUT:-/tmp/out}"
cp .device/vllm-min/part-?? "$W/parts/" 2>/dev/null  # whichever parts this call carried
log() { echo "[$(date +%T)] $*" | tee -a "$W/out/driver.log"; }
export PYTHONUNBUFFERED=1
L() { python3 -m llmhost.cli.main "$@"; }
health() { curl -sf -o /dev/null "http://127.0.0.1:$1/health"; }

case "$PHASE" in
pack)
  TREE=${LLAMA_TREE:?the llama.cpp tree (tests/e2e/infra.py: ensure_llama_source)}
  mkdir -p .device/whl
  tar -C "$(dirname "$TREE")" --exclude=llama.cpp/models --exclude=llama.cpp/docs \
    --exclude=llama.cpp/tests --exclude=llama.cpp/benches --exclude=llama.cpp/examples \
    --exclude=llama.cpp/.git --exclude=llama.cpp/tools/ui/tests -cJf .device/llama-src.txz llama.cpp
  cp "$TREE/models/ggml-vocab-llama-spm.gguf" .device/
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 gguf -d .device/whl
  python3 benchmarks/device/amx_variants.py --source "$TREE" \
    --snapshot tests/fixtures/snapshots/h100-emerald-rapids.tar.gz --out .device/amx
  tar -C .device --exclude=amx/build.log -cJf .device/amx.txz amx
  bash scripts/device/vllm_wheels.sh  # -> .device/vllm/wheels
  # The kernels a Llama on Hopper never loads (Blackwell FA4/cute, MoE, video, JIT compilers).
  rm -rf .device/vllm-min && mkdir -p .device/vllm-min/wheels
  for w in .device/vllm/wheels/*.whl; do
    case "$(basename "$w")" in
      tokenspeed_triton*|nvidia_cutlass_dsl_libs_cu1*|nvidia_nvvm*|tilelang*|pynvvideocodec*|\
      nvidia_cuda_nvcc*|z3_solver*|torchcodec*|nvidia_cuda_nvdisasm*|nvidia_cuda_cccl*) ;;
      *) ln "$w" .device/vllm-min/wheels/ ;;
    esac
  done
  (cd .device/vllm-min && tar -cf payload.tar wheels && sha256sum payload.tar > payload.sha256 \
    && split -b 56m -d -a 2 payload.tar part- && rm payload.tar && ls)
  ;;
setup)
  rm -rf "$R" && mkdir -p "$R" && cp -r . "$R/"
  cp .device/vllm-min/payload.sha256 .device/ggml-vocab-llama-spm.gguf "$W/"
  python3 -m pip install -q --no-index --no-deps --target /tmp/site-small .device/whl/*.whl
  cd "$R" || exit 1
  export PYTHONPATH=/tmp/site-small:$R
  tar xJf .device/llama-src.txz -C "$W"
  tar xJf .device/amx.txz -C "$W"  # benchmarks/device/amx_variants.py's bundle
  { nvidia-smi; nvidia-smi -q -x > "$W/out/nvidia-smi.xml"; lscpu; gcc --version | head -1;
    nvcc --version | tail -1; python3 -c 'import torch; print("torch", torch.__version__)'; } \
    > "$W/out/machine.txt" 2>&1
  printf 'profile: gpu\n' > "$W/plan-build.yaml"
  LLMHOST_CONFIG=$W/plan-build.yaml L plan --profile gpu --json > "$W/out/plan-build.json"
  python3 benchmarks/gpu/cuda_build_flags.py "$W/out/plan-build.json" > "$W/out/cuda-cmake-flags.txt"
  log "CUDA build flags: $(tr '\n' ' ' < "$W/out/cuda-cmake-flags.txt")"
  setsid bash -c "cd $W/llama.cpp && mapfile -t F < $W/out/cuda-cmake-flags.txt && start=\$(date +%s) \
    && cmake -S . -B build \"\${F[@]}\" > $W/out/cuda-cmake.log 2>&1 \
    && cmake --build build -j \$(nproc) --target llama-server llama-bench > $W/out/cuda-build.log 2>&1 \
    && echo \$(( \$(date +%s) - start )) > $W/build.done || echo failed > $W/build.failed" \
    < /dev/null > /dev/null 2>&1 &
  setsid bash -c "cd $R && export PYTHONPATH=/tmp/site-small:$R && V=$W/ggml-vocab-llama-spm.gguf \
    && python3 -m llmhost.devtools.synthetic_gguf --vocab \$V --preset 7b --type q4_0 --out $M/llama2-7b-q4_0.gguf \
    && python3 -m llmhost.devtools.synthetic_gguf --vocab \$V --preset 1b --type q4_0 --out $M/1b-q4_0.gguf \
    && python3 -m llmhost.devtools.synthetic_gguf --vocab \$V --preset 1b --type q8_0 --out $M/1b-q8_0.gguf \
    && touch $W/models.done" < /dev/null > "$W/out/models.log" 2>&1 &
  log "AMX self-tests of the image builder's binaries (Debian 12, GCC 12)"
  python3 benchmarks/device/amx_check.py --variants "$W/amx" --out "$W/out" 2>&1 | tail -4
  dmesg | grep -i "trap\|segfault" | tail -5 > "$W/out/dmesg-traps-setup.txt"
  cp "$W/out/amx-selftest.json" "$OUT/amx-selftest-setup.json"
  log "setup done: CUDA build and models in the background"
  ;;
part)
  ls -la "$W/parts"
  ;;
install)
  cd "$W" || exit 1
  cat parts/part-* > payload.tar && sha256sum -c payload.sha256 || exit 1
  tar xf payload.tar && rm payload.tar
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl 2>&1 | tail -3
  export PYTHONPATH=/tmp/site:$R
  cd "$R" || exit 1
  log "vLLM $(python3 -c 'import vllm; print(vllm.__version__)' 2>&1 | tail -1)"
  python3 benchmarks/device/make_hf_model.py "$M/llama2-7b-hf" "$W/ggml-vocab-llama-spm.gguf" 2>&1 | tail -2
  for i in $(seq 300); do [ -e "$W/models.done" ] && break; sleep 2; done
  ls -la "$M" >> "$W/out/driver.log"
  base="models_dir: $M
services:
  llama-gpu: {model: llama2-7b-q4_0.gguf"
  printf '%s}\n  vllm-gpu: {model: llama2-7b-hf}\n' "$base" > "$W/llmhost-A.yaml"
  printf '%s, serving: throughput}\n  vllm-gpu: {model: llama2-7b-hf}\n' "$base" > "$W/llmhost-B.yaml"
  for p in A B; do
    export LLMHOST_CONFIG=$W/llmhost-$p.yaml
    L plan --profile gpu --json > "$W/out/plan-$p.json" || exit 1
    L plan --profile gpu > "$W/out/plan-$p.txt"
    L deploy --profile gpu --dry-run > "$W/out/compose-$p.yaml"
  done
  cat "$W/out/plan-A.txt" | grep -A6 "GPU memory"
  # llama-gpu first: its allocation is fixed; vLLM then checks that its share is free.
  for i in $(seq 200); do [ -e "$W/build.done" ] || [ -e "$W/build.failed" ] && break; sleep 3; done
  [ -e "$W/build.done" ] || { log "CUDA build failed"; tail -20 "$W/out/cuda-build.log"; exit 1; }
  log "CUDA build done in $(cat "$W/build.done") s"
  python3 benchmarks/device/run_planned.py "$W/out/plan-A.json" llama-gpu --models-dir "$M" \
    --log "$W/out/llama-A.log" -- "$W/llama.cpp/build/bin/llama-server"
  for i in $(seq 60); do health 8080 && break; sleep 2; done
  log "llama-gpu $(health 8080 && echo up || echo down)"; nvidia-smi --query-gpu=memory.used --format=csv
  python3 benchmarks/device/run_planned.py "$W/out/plan-A.json" vllm-gpu --models-dir "$M" \
    --log "$W/out/vllm-A.log" -- python3 -m vllm.entrypoints.openai.api_server
  for i in $(seq 40); do health 8000 && break; sleep 3; done
  log "vllm-gpu $(health 8000 && echo up || echo starting)"
  tail -3 "$W/out/vllm-A.log"
  ;;
bench)
  export PYTHONPATH=/tmp/site:$R LLMHOST_CONFIG=$W/llmhost-A.yaml
  cd "$R" || exit 1
  for i in $(seq 120); do health 8000 && break; sleep 3; done
  health 8000 || { log "vLLM never healthy"; tail -40 "$W/out/vllm-A.log"; }
  nvidia-smi --query-gpu=memory.used,memory.total --format=csv > "$W/out/gpu-memory-A.csv"
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv >> "$W/out/gpu-memory-A.csv"
  sweep() {  # sweep NAME URL
    L bench --url "$2" --concurrency 1 --concurrency 8 --concurrency 32 --concurrency 64 \
      --requests 64 --max-tokens 128 --out "$W/out/$1" > "$W/out/$1.txt" 2>&1
    tail -8 "$W/out/$1.txt"
  }
  log "sweep llama-gpu (plan A: latency) beside vllm-gpu"; sweep bench-llama-gpu-latency http://127.0.0.1:8080
  log "sweep vllm-gpu (plan A: throughput) beside llama-gpu"; sweep bench-vllm-gpu-throughput http://127.0.0.1:8000
  # Plan B's llama-gpu needs more than plan A's vLLM share leaves: plan B alone.
  pkill -f llama-server; pkill -f vllm.entrypoints; sleep 8
  python3 benchmarks/device/run_planned.py "$W/out/plan-B.json" llama-gpu --models-dir "$M" \
    --log "$W/out/llama-B.log" -- "$W/llama.cpp/build/bin/llama-server"
  for i in $(seq 60); do health 8080 && break; sleep 2; done
  log "sweep llama-gpu (plan B: throughput)"; sweep bench-llama-gpu-throughput http://127.0.0.1:8080
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv > "$W/out/gpu-memory-B.csv"
  pkill -f llama-server; pkill -f vllm.entrypoints; sleep 5
  tar czf "$OUT/results.tgz" -C "$W" out
  ;;
amx)
  export PYTHONPATH=/tmp/site-small:$R
  cd "$R" || exit 1
  log "AMX: self-tests of the image builder's binaries (Debian 12, GCC 12), then fixed vs noamx"
  python3 benchmarks/device/amx_check.py --variants "$W/amx" --out "$W/out" \
    --model "$M/1b-q4_0.gguf" --model "$M/1b-q8_0.gguf" --rounds 3 2>&1 | tail -8
  dmesg | grep -i "trap\|segfault" | tail -5 > "$W/out/dmesg-traps.txt"
  tar czf "$OUT/results.tgz" -C "$W" out
  ls -la "$OUT"
  ;;
*) echo "unknown phase $PHASE"; exit 2 ;;
esac
