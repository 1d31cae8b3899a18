#!/usr/bin/env bash
# The GPU path on a host without Docker (the lent H100 machine): llama.cpp CUDA built with exactly
# the cmake flags `llmhost build` would pass for this host's plan, the cuobjdump proof, a
# Llama-2-7B-shaped Q4_0 model served by llama-server and measured with `llmhost bench`, and a
# llama-bench matrix of the GPU options (flash attention, CUDA graphs) against llama.cpp defaults.
# Usage (repo root): OUT=/some/dir bash benchmarks/gpu/h100_driver.sh
# Inputs: .device/llama-src.tgz (llama.cpp tree), .device/ggml-vocab-llama-spm.gguf, .device/whl/.
set -uo pipefail
OUT=${OUT:?set OUT}
W=${W:-/tmp/gpuwork}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$W" "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/driver.log"; }
export PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl 2>&1 | tail -2
L="python3 -m llmhost.cli.main"
printf 'profile: gpu\ninference_cores: 8\n' > "$W/llmhost.yaml"
export LLMHOST_CONFIG=$W/llmhost.yaml

log "plan"
$L plan --profile gpu --json > "$OUT/plan-gpu.json" || exit 1
python3 benchmarks/gpu/cuda_build_flags.py "$OUT/plan-gpu.json" > "$W/cmake-flags.txt" || exit 1
log "cmake flags: $(tr '\n' ' ' < "$W/cmake-flags.txt")"
tar xzf .device/llama-src.tgz -C "$W"

build() {  # build DIR EXTRA-FLAGS...
  local dir=$1; shift
  mapfile -t flags < "$W/cmake-flags.txt"
  (cd "$W/llama.cpp" && cmake -S . -B "$dir" "${flags[@]}" "$@" > "$OUT/$(basename "$dir")-cmake.log" 2>&1 \
     && cmake --build "$dir" -j "$JOBS" --target llama-server llama-bench > "$OUT/$(basename "$dir")-build.log" 2>&1)
}

log "model: Llama-2-7B shapes, Q4_0, random weights"
( python3 -m llmhost.devtools.synthetic_gguf --vocab .device/ggml-vocab-llama-spm.gguf \
    --preset 7b --type q4_0 --out "$W/llama2-7b-q4_0.gguf" > "$OUT/model.log" 2>&1; \
  echo "model exit $?" >> "$OUT/model.log" ) &
MODEL_PID=$!

start=$(date +%s)
build "$W/llama.cpp/build-plan" && log "plan build done in $(( $(date +%s) - start )) s" || log "plan build FAILED"
wait $MODEL_PID; log "$(tail -1 "$OUT/model.log")"
( python3 -m llmhost.devtools.synthetic_gguf --vocab .device/ggml-vocab-llama-spm.gguf \
    --preset 1b --type q4_0 --out "$W/llama-1b-q4_0.gguf" > "$OUT/model-1b.log" 2>&1 ) &
M1B_PID=$!

LIB=$(ls "$W"/llama.cpp/build-plan/bin/libggml-cuda.so* 2>/dev/null | head -1)
log "cuobjdump on $LIB"
cuobjdump --list-elf "$LIB" > "$OUT/cuobjdump-plan-elf.txt" 2>&1
cuobjdump --list-ptx "$LIB" > "$OUT/cuobjdump-plan-ptx.txt" 2>&1
python3 scripts/cuda_arch_check.py "$LIB" --arch 90 > "$OUT/arch-check-plan.txt" 2>&1; echo "exit $?" >> "$OUT/arch-check-plan.txt"

BIN=$W/llama.cpp/build-plan/bin
M=$W/llama2-7b-q4_0.gguf
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,memory.total --format=csv > "$OUT/gpu.csv"

log "llama-bench: flash attention off/on x CUDA graphs on/off"
for graphs in on off; do
  env_graphs=(); [ "$graphs" = off ] && env_graphs=(GGML_CUDA_DISABLE_GRAPHS=1)
  env "${env_graphs[@]}" "$BIN/llama-bench" -m "$M" -ngl 99 -p 512 -n 128 -fa 0,1 -r 5 -o json \
    > "$OUT/llama-bench-graphs-$graphs.json" 2> "$OUT/llama-bench-graphs-$graphs.log"
done

log "serve with the plan's llama-gpu arguments and bench"
mapfile -t SARGS < <(python3 -c "
import json; p=json.load(open('$OUT/plan-gpu.json'))
s=[x for x in p['services'] if x['name']=='llama-gpu'][0]
a=s['args']; a=[('$M' if x.startswith('/models/') else x) for x in a]
if '--model' not in a: a=['--model','$M']+a
print('\n'.join(a))")
"$BIN/llama-server" "${SARGS[@]/0.0.0.0/127.0.0.1}" > "$OUT/llama-server.log" 2>&1 &
SPID=$!
for i in $(seq 120); do curl -sf localhost:8080/health > /dev/null && break; sleep 1; done
for c in 1 4; do
  $L bench --url http://127.0.0.1:8080 --concurrency $c --requests 16 --max-tokens 128 --json \
     --out "$OUT/bench" > "$OUT/bench-c$c.json" 2> "$OUT/bench-c$c.err"
done
kill $SPID; wait $SPID 2>/dev/null

log "CPU evidence on this host's CPU (GPU hidden): pinning and hugepages, interleaved"
wait $M1B_PID
M1=$W/llama-1b-q4_0.gguf
MASK=$(python3 -c "print(hex(sum(1<<c for c in range(1,9))))")
PAGES=$(( ($(stat -c %s "$M1") / 2097152) + 160 ))
echo $PAGES > /proc/sys/vm/nr_hugepages; grep -i huge /proc/meminfo > "$OUT/cpu-hugepages-before.txt"
declare -A CFG=(
  [default]=""
  [threads8]="-t 8"
  [pinned8]="-t 8 -C $MASK --cpu-strict 1"
  [pinned8_nommap]="-t 8 -C $MASK --cpu-strict 1 -lm none"
  [pinned8_hugetlb]="-t 8 -C $MASK --cpu-strict 1 -lm none|GLIBC_TUNABLES=glibc.malloc.hugetlb=2"
  [pinned8_thp]="-t 8 -C $MASK --cpu-strict 1 -lm none|GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
)
for round in 1 2 3; do
  for name in default threads8 pinned8 pinned8_nommap pinned8_hugetlb pinned8_thp; do
    spec=${CFG[$name]}; args=${spec%%|*}; envs=""; [[ $spec == *"|"* ]] && envs=${spec#*|}
    ( while sleep 0.5; do grep HugePages_Free /proc/meminfo; done ) > "$OUT/cpu-$name-r$round-hp.txt" &
    SAMP=$!
    env CUDA_VISIBLE_DEVICES= $envs "$BIN/llama-bench" -m "$M1" -ngl 0 -p 512 -n 128 -r 2 $args -o json \
      > "$OUT/cpu-$name-r$round.json" 2> "$OUT/cpu-$name-r$round.log"
    kill $SAMP 2>/dev/null
  done
done
echo 0 > /proc/sys/vm/nr_hugepages
lscpu > "$OUT/lscpu.txt"

log "PTX-only build (compute_90 virtual arch) for the warning case"
start=$(date +%s)
build "$W/llama.cpp/build-ptx" -DCMAKE_CUDA_ARCHITECTURES=90-virtual -DGGML_CUDA_FA=OFF \
  && log "ptx build done in $(( $(date +%s) - start )) s" || log "ptx build FAILED"
PLIB=$(ls "$W"/llama.cpp/build-ptx/bin/libggml-cuda.so* 2>/dev/null | head -1)
cuobjdump --list-elf "$PLIB" > "$OUT/cuobjdump-ptx-elf.txt" 2>&1
cuobjdump --list-ptx "$PLIB" > "$OUT/cuobjdump-ptx-ptx.txt" 2>&1
python3 scripts/cuda_arch_check.py "$PLIB" --arch 90 > "$OUT/arch-check-ptx.txt" 2>&1; echo "exit $?" >> "$OUT/arch-check-ptx.txt"
log "done"
touch "$OUT/DONE"
