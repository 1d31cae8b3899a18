#!/usr/bin/env bash
# The GPU serving proof on the GPU test machine (no Docker, no network), in phases, one per
# device call, on a machine kept warm between them. Everything a server runs with is read back
# from the plan llmhost makes there (benchmarks/device/run_planned.py); nothing is typed here.
#   pack      (here, before the calls) make what the calls carry under .device/: the llama.cpp
#             tree, the AMX bundle, the vLLM payload in parts (pack-vllm: the payload alone)
#   setup     unpack llama.cpp, start its CUDA build (flags from the plan) and the model
#             generation in the background (and the AMX self-tests where .device/amx.txz came)
#   part      stash the vLLM payload parts this call carried (.device/vllm-min, made from
#             scripts/device/vllm-requirements.txt less the kernels a Llama on Hopper never loads)
#   install   install vLLM, make the bf16 checkpoint, write the plans, start from them: plan A
#             (llama-gpu latency + vllm-gpu throughput, both on GPU 0) and, on a 2-GPU machine,
#             plan A1's vllm-gpu on GPU 1 (plan A with one API server and A's memory share)
#   bench     CORS answers, the live view (llmhost.verify.live), sweeps 1/8/32/64 users of llama-gpu A,
#             vllm-gpu A (beside it) and vllm-gpu A1
#   bench2    plan B's llama-gpu (throughput) on GPU 1 (or alone on GPU 0) swept; then plan C's
#             vllm-gpu (tensor-parallel over both GPUs, beside llama-gpu A) started
#   tp        plan C's vllm-gpu swept; everything stopped
#   install-tp  (the tensor-parallel proof alone, after setup and the parts) install vLLM, write
#             plan C, start its llama-gpu and vllm-gpu; then `wait vllm-C` and `tp`
#   amx       the AMX self-tests and speed rounds (benchmarks/device/amx_check.py on the bundle
#             benchmarks/device/amx_variants.py made, carried in setup as .device/amx.txz)
# Usage (repo root, on the device): OUT=... bash benchmarks/device/gpu_serving.sh PHASE
# Calls: setup (carry .device/{llama-src.txz,llama-ui.txz,ggml-vocab-llama-spm.gguf,whl} and the
# last payload part with payload.sha256), one `part` call per other part, install, wait, bench,
# bench2, tp. Run 2026-11-30 (benchmarks/results/h200x2-2026-11-30): the payload then lacked
# flashinfer, carried afterwards in .device/whl-fi and installed by `vllm-restart`.
set -uo pipefail
PHASE=${1:?phase}
W=/tmp/w
R=$W/repo
M=$W/models
mkdir -p "$W/parts" "$M" "$W/out" "${OUT:-/tmp/out}"
cp .device/vllm-min/part-* "$W/parts/" 2>/dev/null  # whichever parts this call carried
log() { echo "[$(date +%T)] $*" | tee -a "$W/out/driver.log"; }
export PYTHONUNBUFFERED=1
L() { python3 -m llmhost.cli.main "$@"; }
health() { curl -sf -o /dev/null "http://127.0.0.1:$1/health"; }
LLAMA=$W/llama.cpp/build/bin/llama-server
VLLM="python3 -m vllm.entrypoints.cli.main serve"  # the vLLM image's entrypoint, `vllm serve`
export PYTHONPATH=/tmp/site:$R:/tmp/site-small
# The lent machines keep NVLink multicast off (KINDS.md: using it can take the host's GPUs out of
# service). vLLM 0.26's tensor-parallel all-reduce fusion picks FlashInfer's "mnnvl" backend by
# default, which calls cuMulticastCreate (flashinfer/comm/mnnvl.py): it did on 2026-11-30.
# "trtllm" is its CUDA-IPC backend, without multicast. Environment only: the plan's arguments
# stay as rendered.
export VLLM_FLASHINFER_ALLREDUCE_BACKEND=trtllm
start() {  # start NAME PLAN SERVICE PORT ENGINE: the plan's service natively, pid in $W/NAME.pid
  # shellcheck disable=SC2086  # ENGINE is a command line
  python3 "$R/benchmarks/device/run_planned.py" "$W/out/plan-$2.json" "$3" --models-dir "$M" \
    --host-port "$4" --log "$W/out/$1.log" -- $5 > "$W/$1.pid"
}
stop() {  # stop NAME: its process group, and wait until its GPU memory is free
  [ -e "$W/$1.pid" ] || return 0
  local g; g=$(cat "$W/$1.pid"); kill -- -"$g" 2>/dev/null
  for i in $(seq 30); do pgrep -g "$g" > /dev/null || break; sleep 1; done
  kill -9 -- -"$g" 2>/dev/null; rm -f "$W/$1.pid"; sleep 2
}
up() {  # up PORT NAME SECONDS: wait for /health (not past a failed start), else show why
  for i in $(seq "$3"); do
    health "$1" && break
    grep -q "Engine core initialization failed\|out of memory" "$W/out/$2.log" 2>/dev/null && break
    sleep 3
  done
  health "$1" && log "$2 healthy" || { log "$2 not healthy"; tail -30 "$W/out/$2.log"; }
}
sweep() {  # sweep NAME PORT: 1/8/32/64 users, 64 requests of 128 tokens each
  L bench --url "http://127.0.0.1:$2" --concurrency 1 --concurrency 8 --concurrency 32 \
    --concurrency 64 --requests 64 --max-tokens 128 --out "$W/out/$1" > "$W/out/$1.txt" 2>&1
  tail -8 "$W/out/$1.txt"
}

pack_vllm() {  # the vLLM payload less the kernels a Llama on Hopper never loads, in parts
  bash scripts/device/vllm_wheels.sh  # -> .device/vllm/wheels
  # (Blackwell FA4/cute, MoE, video, JIT compilers). flashinfer stays: vLLM's sampler imports it.
  rm -rf .device/vllm-min && mkdir -p .device/vllm-min/wheels
  for w in .device/vllm/wheels/*.whl; do
    case "$(basename "$w")" in
      tokenspeed_triton*|nvidia_cutlass_dsl_libs_cu1*|nvidia_nvvm*|tilelang*|pynvvideocodec*|\
      nvidia_cuda_nvcc*|z3_solver*|torchcodec*|nvidia_cuda_nvdisasm*|nvidia_cuda_cccl*) ;;
      *) ln "$w" .device/vllm-min/wheels/ ;;
    esac
  done
  # A call carries the checkout too (15 MiB on 2026-11-30) and the whole must stay under 64 MiB.
  (cd .device/vllm-min && tar -cf payload.tar wheels && sha256sum payload.tar > payload.sha256 \
    && split -b "${PART_MIB:-44}m" -d -a 2 payload.tar part- && rm payload.tar && ls -la)
}
payload_install() {  # reassemble the parts, install vLLM, make the bf16 checkpoint
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
  ngpu=$(nvidia-smi -L | wc -l)
  echo "$ngpu" > "$W/ngpu"
}
conf() {  # conf NAME LLAMA VLLM: llmhost-NAME.yaml with the two services' lines
  printf 'models_dir: %s\nservices:\n%s}\n%s}\n' "$M" "$2" "$3" > "$W/llmhost-$1.yaml"
}
plan_files() {  # plan_files NAME: the plan (JSON, text) and the compose project it deploys
  export LLMHOST_CONFIG=$W/llmhost-$1.yaml
  L plan --profile gpu --json > "$W/out/plan-$1.json" || exit 1
  L plan --profile gpu > "$W/out/plan-$1.txt"
  L deploy --profile gpu --dry-run > "$W/out/compose-$1.yaml"
}
built() {  # wait for the llama.cpp CUDA build that setup started
  for i in $(seq 200); do [ -e "$W/build.done" ] || [ -e "$W/build.failed" ] && break; sleep 3; done
  [ -e "$W/build.done" ] || { log "CUDA build failed"; tail -20 "$W/out/cuda-build.log"; exit 1; }
  log "CUDA build done in $(cat "$W/build.done") s"
}
LLAMA_LINE="  llama-gpu: {model: llama2-7b-q4_0.gguf"
VLLM_LINE="  vllm-gpu: {model: llama2-7b-hf"

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
  pack_vllm
  ;;
pack-vllm)
  pack_vllm
  ;;
setup)
  rm -rf "$R" && mkdir -p "$R" && cp -r . "$R/"
  cp .device/vllm-min/payload.sha256 .device/ggml-vocab-llama-spm.gguf "$W/"
  python3 -m pip install -q --no-index --no-deps --target /tmp/site-small .device/whl/*.whl
  cd "$R" || exit 1
  export PYTHONPATH=/tmp/site-small:$R
  tar xJf .device/llama-src.txz -C "$W"
  [ -e .device/llama-ui.txz ] && tar xJf .device/llama-ui.txz -C "$W"  # tools/ui: CMake needs it
  [ -e .device/amx.txz ] && tar xJf .device/amx.txz -C "$W"  # amx_variants.py's bundle
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
  G="python3 -m llmhost.devtools.synthetic_gguf --vocab $W/ggml-vocab-llama-spm.gguf"
  AMX_MODELS="true"
  [ -e .device/amx.txz ] && AMX_MODELS="$G --preset 1b --type q4_0 --out $M/1b-q4_0.gguf \
    && $G --preset 1b --type q8_0 --out $M/1b-q8_0.gguf"
  setsid bash -c "cd $R && export PYTHONPATH=/tmp/site-small:$R \
    && $G --preset 7b --type q4_0 --out $M/llama2-7b-q4_0.gguf && $AMX_MODELS \
    && touch $W/models.done" < /dev/null > "$W/out/models.log" 2>&1 &
  if [ -e .device/amx.txz ]; then
    log "AMX self-tests of the image builder's binaries (Debian 12, GCC 12)"
    python3 benchmarks/device/amx_check.py --variants "$W/amx" --out "$W/out" 2>&1 | tail -4
    dmesg | grep -i "trap\|segfault" | tail -5 > "$W/out/dmesg-traps-setup.txt"
    cp "$W/out/amx-selftest.json" "$OUT/amx-selftest-setup.json"
  fi
  log "setup done: CUDA build and models in the background"
  ;;
part)
  ls -la "$W/parts"
  ;;
install)
  payload_install
  other=$(( ngpu > 1 ? 1 : 0 ))
  llama=$LLAMA_LINE vllm=$VLLM_LINE
  conf A "$llama, gpus: [0]" "$vllm, gpus: [0]"
  conf B "$llama, serving: throughput, gpus: [$other]" "$vllm, gpus: [0]"
  conf C "$llama, gpus: [0]" "$vllm, tensor_parallel_size: $ngpu"
  for p in A B C; do
    [ "$p" = C ] && [ "$ngpu" -lt 2 ] && continue
    plan_files "$p"
    if [ "$p" = A ] && [ "$ngpu" -gt 1 ]; then  # A1: A's vLLM share, one API server, GPU 1
      share=$(python3 -c "import json,sys; print(json.load(sys.stdin)['gpu_memory']['placements']['vllm-gpu']['utilization'])" < "$W/out/plan-A.json")
      conf A1 "$llama, gpus: [0]" "$vllm, gpus: [1], api_servers: 1, gpu_memory_utilization: $share"
      export LLMHOST_CONFIG=$W/llmhost-A1.yaml
      L plan --profile gpu --json > "$W/out/plan-A1.json" || exit 1
      L plan --profile gpu > "$W/out/plan-A1.txt"
    fi
  done
  grep -A6 "GPU memory" "$W/out/plan-A.txt"
  # llama-gpu first: its allocation is fixed; vLLM then checks that its share is free.
  built
  start llama-A A llama-gpu 8080 "$LLAMA"
  for i in $(seq 60); do health 8080 && break; sleep 2; done
  log "llama-gpu $(health 8080 && echo up || echo down)"; nvidia-smi --query-gpu=memory.used --format=csv
  start vllm-A A vllm-gpu 8000 "$VLLM"
  # A1 compiles beside A: its own vLLM compile cache (VLLM_CACHE_ROOT; the plan leaves it unset).
  [ -e "$W/out/plan-A1.json" ] && VLLM_CACHE_ROOT=/tmp/vllm-cache-a1 start vllm-A1 A1 vllm-gpu 8001 "$VLLM"
  sleep 20; tail -3 "$W/out/vllm-A.log"
  ;;
vllm-restart)  # after a payload fix carried in .device/whl-fi: install it, start plan A's vLLMs
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl-fi/*.whl 2>&1 | tail -2
  cd "$R" || exit 1
  stop vllm-A; stop vllm-A1
  start vllm-A A vllm-gpu 8000 "$VLLM"
  [ -e "$W/out/plan-A1.json" ] && VLLM_CACHE_ROOT=/tmp/vllm-cache-a1 start vllm-A1 A1 vllm-gpu 8001 "$VLLM"
  ;;
install-tp)
  payload_install
  [ "$ngpu" -lt 2 ] && { log "tensor parallelism needs 2 GPUs, this machine has $ngpu"; exit 1; }
  conf C "$LLAMA_LINE, gpus: [0]" "$VLLM_LINE, tensor_parallel_size: $ngpu"
  plan_files C
  grep -A8 "GPU memory" "$W/out/plan-C.txt"
  built
  start llama-A C llama-gpu 8080 "$LLAMA"
  for i in $(seq 60); do health 8080 && break; sleep 2; done
  log "llama-gpu $(health 8080 && echo up || echo down)"
  start vllm-C C vllm-gpu 8000 "$VLLM"
  # Belt and braces for the rule above: should vLLM still pick mnnvl, end it at once.
  setsid bash -c "for i in \$(seq 900); do grep -q 'allreduce backend: mnnvl' $W/out/vllm-C.log \
    && { kill -9 -- -\$(cat $W/vllm-C.pid); echo mnnvl > $W/out/vllm-C.killed; break; }; sleep 0.5; done" \
    < /dev/null > /dev/null 2>&1 &
  sleep 30; tail -5 "$W/out/vllm-C.log"
  ;;
wait)  # wait [NAME]: until vLLM answers /health (default plan A's)
  up 8000 "${2:-vllm-A}" 170
  ;;
bench)
  cd "$R" || exit 1
  export LLMHOST_CONFIG=$W/llmhost-A.yaml
  up 8000 vllm-A 150
  [ -e "$W/out/plan-A1.json" ] && up 8001 vllm-A1 60
  nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv > "$W/out/gpu-memory-A.csv"
  nvidia-smi --query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=csv >> "$W/out/gpu-memory-A.csv"
  for port in 8080 8000; do  # CORS: a page of this machine, and one from elsewhere
    for origin in http://localhost:3000 http://example.com; do
      got=$(curl -s -D - -o /dev/null -H "Origin: $origin" "http://127.0.0.1:$port/v1/models" \
        | tr -d '\r' | grep -i '^access-control-allow-origin' || echo "no access-control-allow-origin")
      echo "port $port origin $origin -> $got"
    done
  done | tee "$W/out/cors.txt"
  python3 benchmarks/device/live_probe.py --delay 45 \
    --port llama-gpu=8080 --port vllm-gpu=8000 --out "$W/out/live-A-llama-busy.json" \
    > "$W/out/live-A-llama-busy.log" 2>&1 &
  log "sweep llama-gpu (plan A: latency) beside vllm-gpu"; sweep bench-llama-gpu-latency 8080
  python3 benchmarks/device/live_probe.py --delay 40 \
    --port llama-gpu=8080 --port vllm-gpu=8000 --out "$W/out/live-A-vllm-busy.json" \
    > "$W/out/live-A-vllm-busy.log" 2>&1 &
  log "sweep vllm-gpu (plan A: throughput) beside llama-gpu"; sweep bench-vllm-gpu-throughput 8000
  if [ -e "$W/out/plan-A1.json" ]; then
    log "sweep vllm-gpu (plan A1: one API server) on GPU 1"; sweep bench-vllm-gpu-throughput-1api 8001
    curl -s http://127.0.0.1:8000/metrics > "$W/out/vllm-A-metrics.txt"
  fi
  tar czf "$OUT/results-bench.tgz" -C "$W" out
  ;;
bench2)
  cd "$R" || exit 1
  export LLMHOST_CONFIG=$W/llmhost-B.yaml
  stop vllm-A1
  [ "$(cat "$W/ngpu")" -lt 2 ] && { stop llama-A; stop vllm-A; }
  start llama-B B llama-gpu 8081 "$LLAMA"
  for i in $(seq 60); do health 8081 && break; sleep 2; done
  log "sweep llama-gpu (plan B: throughput)"; sweep bench-llama-gpu-throughput 8081
  L bench --url http://127.0.0.1:8081 --concurrency 32 --requests 256 --max-tokens 128 \
    --out "$W/out/bench-llama-gpu-throughput-steady" > "$W/out/bench-llama-gpu-throughput-steady.txt" 2>&1
  tail -4 "$W/out/bench-llama-gpu-throughput-steady.txt"
  nvidia-smi --query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=csv > "$W/out/gpu-memory-B.csv"
  stop llama-B
  if [ -e "$W/out/plan-C.json" ]; then
    stop vllm-A
    python3 - "$W/out/plan-A.json" "$W/out/plan-C.json" <<'PY' || { stop llama-A; start llama-A C llama-gpu 8080 "$LLAMA"; }
import json, sys
a, c = (next(s for s in json.load(open(p))["services"] if s["name"] == "llama-gpu") for p in sys.argv[1:])
sys.exit(0 if (a["args"], a["env"], a["cpuset"], a["gpus"]) == (c["args"], c["env"], c["cpuset"], c["gpus"]) else 1)
PY
    start vllm-C C vllm-gpu 8000 "$VLLM"
  fi
  tar czf "$OUT/results-bench2.tgz" -C "$W" out
  ;;
tp)
  cd "$R" || exit 1
  export LLMHOST_CONFIG=$W/llmhost-C.yaml
  up 8000 vllm-C 75
  nvidia-smi --query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=csv > "$W/out/gpu-memory-C.csv"
  log "sweep vllm-gpu (plan C: tensor-parallel over 2 GPUs) beside llama-gpu"
  sweep bench-vllm-gpu-tp2 8000
  curl -s http://127.0.0.1:8000/metrics > "$W/out/vllm-C-metrics.txt"
  stop vllm-C; stop llama-A
  tar czf "$OUT/results-tp.tgz" -C "$W" out
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
