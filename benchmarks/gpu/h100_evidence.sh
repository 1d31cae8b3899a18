#!/usr/bin/env bash
# Evidence issue, the parts that need the lent H100 machine (no Docker, no network):
#   gpu: llama.cpp CUDA llama-bench built with the plan's CMake flags; achievable HBM bandwidth
#        (hbm_bandwidth.cu); decode/prefill of 1B/7B x Q4_0/Q8_0 (+ a tiny model), CUDA graphs
#        on and off; per-kernel time and DRAM bytes of a few decode tokens with ncu.
#   cpu: benchmarks/cpu_builds.py on the Xeon: plan vs AVX2-only vs official
#        GGML_CPU_ALL_VARIANTS, llama-bench pp512/tg128 interleaved, with the plan's llama-cpu
#        threads and CPU mask; then llama-server from the plan vs the AVX2 build, `llmhost bench`.
# Steps skip what an earlier call on the same (still warm) machine already finished, and every
# call stops itself inside BUDGET seconds and leaves everything so far in $OUT/evidence.tgz.
# Usage (repo root): OUT=/some/dir bash benchmarks/gpu/h100_evidence.sh STEP... (gpu, cpu, gpu_bench)
# Inputs: .device/llama-src.tgz (llama.cpp tree), .device/ggml-vocab-llama-spm.gguf, .device/whl/.
set -uo pipefail
OUT=${OUT:?set OUT}
T0=$(date +%s)
BUDGET=${BUDGET:-550}
W=${W:-/tmp/evidence}
R=$W/results
JOBS=${JOBS:-$(nproc)}
mkdir -p "$W/models" "$R/host" "$R/gpu" "$R/cpu" "$OUT"
left() { echo $((BUDGET - ($(date +%s) - T0))); }
until_end() { local s=$(($(left) - $1)); echo $((s > 5 ? s : 5)); }  # a timeout that ends $1 s early
log() { echo "[$(date +%T) +$(($(date +%s) - T0))s] $*" | tee -a "$R/driver.log"; }
BG_BUILD=""
finish() {
  if [ -n "$BG_BUILD" ]; then  # a background CPU build must not outlive the call half-written
    kill -CONT -- "-$BG_BUILD" 2>/dev/null; kill -TERM -- "-$BG_BUILD" 2>/dev/null
    sleep 3; kill -KILL -- "-$BG_BUILD" 2>/dev/null
  fi
  tar czf "$OUT/evidence.tgz" -C "$W" results
  cp "$R/driver.log" "$OUT/driver.log"
}
trap finish EXIT

export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PATH=$PATH:/usr/local/cuda/bin
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -d /tmp/site/gguf ] || python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl
L="python3 -m llmhost.cli.main"
printf 'inference_cores: 8\n' > "$W/llmhost.yaml"  # the 2026-11-23 runs' 8 of 16 cores
export LLMHOST_CONFIG=$W/llmhost.yaml
[ -d "$W/llama.cpp" ] || tar xzf .device/llama-src.tgz -C "$W"
BIN=$W/llama.cpp/build-cuda/bin
M=$W/models
MODELS="7b-q4_0 7b-q8_0 1b-q4_0 1b-q8_0 tiny-q4_0"

host_facts() {
  [ -s "$R/host/plan-cpu.json" ] && return
  lscpu > "$R/host/lscpu.txt"; uname -a > "$R/host/uname.txt"; nproc >> "$R/host/uname.txt"
  nvidia-smi > "$R/host/nvidia-smi.txt" 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,pcie.link.gen.max \
    --format=csv > "$R/host/nvidia-smi.csv" 2>&1
  nvcc --version > "$R/host/nvcc.txt" 2>&1
  $L facts > "$R/host/facts.json" 2> "$R/host/facts.err"
  $L plan --profile cpu --json > "$R/host/plan-cpu.json"
  $L plan --profile gpu --json > "$R/host/plan-gpu.json"
  python3 benchmarks/gpu/cuda_build_flags.py "$R/host/plan-gpu.json" > "$R/host/cuda-cmake-flags.txt"
}

start_models() {  # random weights, real Llama shapes; written under a temporary name, then renamed
  for m in $MODELS; do
    [ -s "$M/$m.gguf" ] && continue
    ( nice -n 5 python3 -m llmhost.devtools.synthetic_gguf --vocab .device/ggml-vocab-llama-spm.gguf \
        --preset "${m%-*}" --type "${m#*-}" --out "$M/$m.part" > "$R/host/model-$m.log" 2>&1 \
      && mv "$M/$m.part" "$M/$m.gguf" ) &
  done
}
wait_models() {  # wait_models NAME... ; gives up when the call's time runs short
  for m in "$@"; do
    while [ ! -s "$M/$m.gguf" ] && [ "$(left)" -gt 30 ]; do sleep 2; done
  done
}
model_facts() {  # tensor bytes per model, so bytes read per token come from the files
  python3 - "$M" > "$R/gpu/models.json" <<'EOF'
import json, sys
from pathlib import Path
from gguf import GGUFReader
out = {}
for path in sorted(Path(sys.argv[1]).glob("*.gguf")):
    r = GGUFReader(path)
    field = lambda k: r.fields[k].parts[r.fields[k].data[0]].tolist()[0]  # noqa: E731
    names = {t.name: int(t.n_bytes) for t in r.tensors}
    out[path.stem] = {
        "file_bytes": path.stat().st_size, "tensor_bytes": sum(names.values()),
        "token_embd_bytes": names.get("token_embd.weight", 0),
        "output_bytes": names.get("output.weight", 0), "tied_embeddings": "output.weight" not in names,
        "n_layer": field("llama.block_count"), "n_embd": field("llama.embedding_length"),
        "n_head": field("llama.attention.head_count"),
        "n_head_kv": field("llama.attention.head_count_kv"), "n_vocab": len(r.fields["tokenizer.ggml.tokens"].data),
    }
print(json.dumps(out, indent=2))
EOF
}

# cpu_builds.py with the plan's CMake flags, llama-cpu threads and CPU mask (plan-cpu.json)
CB=(python3 benchmarks/cpu_builds.py --source "$W/llama.cpp" --work "$W/cpu-builds"
    --plan-json "$R/host/plan-cpu.json" --jobs "$JOBS" --n-prompt 512 --n-gen 128)
CB_BUILD=(--variants plan,avx2,official --serve "$M/1b-q4_0.gguf" --build-only)

gpu_build() {
  [ -x "$BIN/llama-bench" ] && return
  mapfile -t flags < "$R/host/cuda-cmake-flags.txt"
  local start; start=$(date +%s)
  ( cd "$W/llama.cpp" && cmake -S . -B build-cuda "${flags[@]}" > "$R/gpu/cuda-cmake.log" 2>&1 ) || return 1
  timeout "$(until_end "${1:-100}")" cmake --build "$W/llama.cpp/build-cuda" -j "$JOBS" --target llama-bench \
    > "$W/cuda-build.log" 2>&1
  local rc=$?
  tail -5 "$W/cuda-build.log" > "$R/gpu/cuda-build-tail.log"
  echo "{\"exit\": $rc, \"seconds\": $(($(date +%s) - start)), \"jobs\": $JOBS}" > "$R/gpu/cuda-build-$(date +%s).json"
  log "CUDA llama-bench build exit $rc in $(($(date +%s) - start)) s"
}

gpu_bench() {
  [ -s "$R/gpu/hbm.json" ] || {
    nvcc -O3 -arch=sm_90 -o "$W/hbm_bandwidth" benchmarks/gpu/hbm_bandwidth.cu \
      && timeout 60 "$W/hbm_bandwidth" > "$R/gpu/hbm.json" 2> "$R/gpu/hbm.err"
    log "hbm: $(cat "$R/gpu/hbm.json")"
  }
  [ -x "$BIN/llama-bench" ] || { log "no CUDA llama-bench: skipping GPU runs"; return; }
  wait_models $MODELS
  model_facts
  for m in $MODELS; do  # the plan's defaults: all layers on the GPU, FA auto, CUDA graphs on
    [ -s "$R/gpu/bench-$m.json" ] || [ "$(left)" -lt 40 ] || timeout 120 "$BIN/llama-bench" -m "$M/$m.gguf" \
      -ngl 99 -p 512 -n 128 -r 5 -o json > "$R/gpu/bench-$m.json" 2> "$R/gpu/bench-$m.log"
  done
  log "GPU llama-bench done"
  for m in $MODELS; do
    [ -s "$R/gpu/bench-$m-nographs.json" ] || [ "$(left)" -lt 30 ] || GGML_CUDA_DISABLE_GRAPHS=1 timeout 60 \
      "$BIN/llama-bench" -m "$M/$m.gguf" -ngl 99 -p 0 -n 128 -r 3 -o json \
      > "$R/gpu/bench-$m-nographs.json" 2> "$R/gpu/bench-$m-nographs.log"
  done
  log "GPU llama-bench without CUDA graphs done"
  for m in 1b-q4_0 7b-q4_0 7b-q8_0 1b-q8_0; do  # every kernel of 2 decode tokens, real clocks
    [ -s "$R/gpu/ncu-$m.csv" ] || [ "$(left)" -lt 100 ] || timeout 90 "$NCU" --clock-control none \
      --cache-control none --launch-count 2500 --print-kernel-base function --print-units base \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --csv --page raw \
      --log-file "$R/gpu/ncu-$m.csv" "$BIN/llama-bench" -m "$M/$m.gguf" -ngl 99 -p 0 -n 2 -r 1 \
      --no-warmup -o json > "$R/gpu/ncu-$m-bench.json" 2> "$R/gpu/ncu-$m.log"
    log "ncu $m: exit $?, $(wc -l < "$R/gpu/ncu-$m.csv" 2>/dev/null) lines"
  done
  python3 - "$R"/gpu/ncu-*.csv <<'EOF'  # keep the measured columns, not ~400 device attributes
import csv, sys
keep = ["ID", "Kernel Name", "Block Size", "Grid Size", "gpu__time_duration.sum",
        "dram__bytes_read.sum", "dram__bytes_write.sum"]
for path in sys.argv[1:]:
    rows = list(csv.DictReader(line for line in open(path) if not line.startswith("==")))
    with open(path, "w", newline="") as out:
        w = csv.DictWriter(out, keep, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
EOF
}

unfinished() {  # unfinished NAME: prints a new results file for NAME unless one is complete
  python3 - "$R/cpu" "$1" <<'EOF'
import json, sys
from pathlib import Path
files = sorted(Path(sys.argv[1]).glob(sys.argv[2] + "*.json"))
for f in files:
    d = json.loads(f.read_text())
    served = d.get("served", {}).get("runs", {})
    if (served and min(map(len, served.values())) >= 3) or (
        d["rounds_done"] and min(d["rounds_done"].values()) >= d["rounds"]
    ):
        sys.exit()
print(Path(sys.argv[1]) / f"{sys.argv[2]}-{len(files) + 1}.json")
EOF
}

cpu_bench() {
  local f
  f=$(unfinished cpu_builds-1b) && [ -n "$f" ] && timeout "$(until_end 20)" "${CB[@]}" \
    --model "$M/1b-q4_0.gguf" --model "$M/1b-q8_0.gguf" --rounds 3 --reps 2 \
    --out-file "$f" 2>&1 | tee -a "$R/cpu/cpu_builds.log"
  f=$(unfinished cpu_builds-7b-q4_0) && [ -n "$f" ] && timeout "$(until_end 20)" "${CB[@]}" \
    --model "$M/7b-q4_0.gguf" --rounds 3 --reps 1 --time-budget "$(until_end 80)" \
    --out-file "$f" 2>&1 | tee -a "$R/cpu/cpu_builds.log"
  f=$(unfinished served-1b-q4_0) && [ -n "$f" ] && [ "$(left)" -gt 60 ] \
    && timeout "$(until_end 15)" "${CB[@]}" --variants plan,avx2 --serve "$M/1b-q4_0.gguf" \
    --serve-rounds 3 --time-budget "$(until_end 30)" --out-file "$f" 2>&1 | tee -a "$R/cpu/cpu_builds.log"
  f=$(unfinished cpu_builds-7b-q8_0) && [ -n "$f" ] && [ "$(left)" -gt 150 ] \
    && timeout "$(until_end 10)" "${CB[@]}" --model "$M/7b-q8_0.gguf" --rounds 3 --reps 1 \
    --time-budget "$(until_end 15)" --out-file "$f" 2>&1 | tee -a "$R/cpu/cpu_builds.log"
}

log "steps: $*; budget ${BUDGET}s; $(nproc) CPUs"
host_facts || { log "host facts/plan failed"; exit 1; }
start_models
for step in "$@"; do
  case $step in
    gpu)
      # CPU builds soak up idle cores at nice 19 while nvcc runs; stopped during GPU timing
      setsid nice -n 19 "${CB[@]}" "${CB_BUILD[@]}" > "$R/cpu/cpu-build-bg.log" 2>&1 &
      BG_BUILD=$!
      gpu_build 110
      kill -STOP -- "-$BG_BUILD" 2>/dev/null
      gpu_bench
      kill -CONT -- "-$BG_BUILD" 2>/dev/null
      while kill -0 "$BG_BUILD" 2>/dev/null && [ "$(left)" -gt 20 ]; do sleep 2; done
      log "background CPU builds: $(tail -3 "$R/cpu/cpu-build-bg.log" | tr '\n' ' ')"
      ;;
    gpu_bench) gpu_build 110; gpu_bench ;;
    cpu)
      "${CB[@]}" "${CB_BUILD[@]}" 2>&1 | tee -a "$R/cpu/cpu_builds.log"
      wait_models 1b-q4_0 1b-q8_0 7b-q4_0 7b-q8_0  # no model writer may share the CPUs below
      log "CPU builds and models ready"
      cpu_bench
      ;;
    *) log "unknown step $step" ;;
  esac
  log "step $step finished"
done
log "done"
