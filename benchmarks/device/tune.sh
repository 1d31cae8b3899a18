#!/usr/bin/env bash
# `llmhost tune` for real on the GPU test machine (its Xeon; no Docker there): llama-bench built
# natively with the plan's CMake flags, with llama.cpp's official CPU recipe from the same tree
# and with the plan's flags on ggml's own threadpool (GGML_OPENMP=OFF), then measured side by
# side in one interleaved run per model.
#   setup  unpack llama.cpp, write llmhost.yaml, start the builds and the models in the background
#   wait   until they are there (or a build failed); compare the builds' flags and machine code
#   tune   MODEL=... BUILDS_ONLY=1: the builds alone; else every llama-cpu knob and the builds
# Usage (repo root, on the device): OUT=... bash benchmarks/device/tune.sh PHASE
# Calls: setup (carry .device/{llama-src.txz,ggml-vocab-llama-spm.gguf,whl}), wait, tune (one
# per model), one after another (the machine stays warm 30 s between calls).
set -uo pipefail
PHASE=${1:?phase}
W=/tmp/tune
M=$W/models
OUT=${OUT:-/tmp/out}
mkdir -p "$W" "$M" "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site-small:$W/repo
L() { python3 -m llmhost.cli.main --config "$W/llmhost.yaml" "$@"; }
# The CPU image's own CMake flags beside the plan's ISA flags (templates/llama-cpu.Dockerfile.j2,
# GGML_CCACHE aside); the official recipe as llama.cpp's release CI builds its CPU packages.
COMMON="-G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DCMAKE_EXPORT_COMPILE_COMMANDS=ON"
OFFICIAL="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
# The official build compiles every x86 variant (llama-bench depends on them all) and loads the
# best one this CPU runs: on Sapphire/Emerald Rapids sapphirerapids (BEST), compared by code.
BEST=${BEST:-sapphirerapids}
MODELS=${MODELS:-1b:q8_0 1b:q4_0 7b:q8_0 7b:q4_0}  # preset:type, written as preset-type.gguf

case "$PHASE" in
setup)
  rm -rf "$W/repo" && mkdir -p "$W/repo" && cp -r . "$W/repo/"
  python3 -m pip install -q --no-index --no-deps --target /tmp/site-small .device/whl/*.whl
  tar xJf .device/llama-src.txz -C "$W"
  { lscpu; gcc --version | head -1; cmake --version | head -1; } > "$OUT/machine.txt" 2>&1
  # the build's flags need no model: a plan without one (the models are still being written)
  printf 'hugepages: {enabled: true}\n' > "$W/plan-build.yaml"
  python3 -m llmhost.cli.main --config "$W/plan-build.yaml" plan --profile cpu --json > "$OUT/plan-build.json"
  python3 -c "import json,sys; print(' '.join(json.load(sys.stdin)['build']['llama_cpu_cmake_flags']))" \
    < "$OUT/plan-build.json" > "$W/plan-flags.txt"
  echo "plan flags: $(cat "$W/plan-flags.txt")"
  # the defects the CPU image's build context corrects (llmhost.actions.source_fixes: GCC < 14
  # drops AMX tile shapes), corrected in this tree for every build alike
  # shellcheck disable=SC2046  # the flag list
  python3 - "$W/llama.cpp" $(cat "$W/plan-flags.txt") <<'PY'
import sys
from pathlib import Path
from llmhost.actions.source_fixes import fix_tree
tree = Path(sys.argv[1])
for rel, fixed in fix_tree(tree, sys.argv[2:]).items():
    (tree / rel).write_bytes(fixed.data)
    print(f"source fix {fixed.fix.id}: {rel}")
PY
  cat > "$W/builds.sh" <<EOF
set -e
cd $W/llama.cpp
build() {  # build NAME TARGET FLAGS...
  name=\$1 target=\$2; shift 2
  start=\$(date +%s)
  cmake -S . -B $W/b-\$name $COMMON "\$@" > $W/b-\$name.log 2>&1
  cmake --build $W/b-\$name -j \$(nproc) --target \$target >> $W/b-\$name.log 2>&1
  echo "\$name \$(( \$(date +%s) - start )) s" >> $W/builds.times
}
build plan llama-bench $(cat "$W/plan-flags.txt")
build official llama-bench $OFFICIAL
build threadpool llama-bench $(cat "$W/plan-flags.txt") -DGGML_OPENMP=OFF
EOF
  setsid bash -c "bash $W/builds.sh && touch $W/builds.done || touch $W/builds.failed" \
    < /dev/null > "$W/builds.out" 2>&1 &
  setsid bash -c "cd $W/repo && for m in $MODELS; do python3 -m llmhost.devtools.synthetic_gguf \
    --vocab .device/ggml-vocab-llama-spm.gguf --preset \${m%:*} --type \${m#*:} \
    --out $M/\${m%:*}-\${m#*:}.gguf || exit 1; done && touch $W/models.done" \
    < /dev/null > "$W/models.log" 2>&1 &
  echo "setup done: builds and models in the background"
  ;;
wait)
  for _ in $(seq "${WAIT_S:-540}"); do
    if [ -e "$W/builds.failed" ]; then tail -30 "$W"/b-*.log; exit 1; fi
    [ -e "$W/builds.done" ] && [ -e "$W/models.done" ] && break
    sleep 1
  done
  cat "$W/builds.times" 2>/dev/null
  ls -la "$M"
  tail -4 "$W/models.log"
  cp "$W"/b-*.log "$W/builds.times" "$OUT/" 2>/dev/null
  [ -e "$W/builds.done" ] || exit 1
  python3 benchmarks/build_diff.py plan="$W/b-plan" \
    "official=$W/b-official:libggml-cpu-$BEST.so" --out "$OUT/build-diff-official.json"
  python3 benchmarks/build_diff.py plan="$W/b-plan" threadpool="$W/b-threadpool" \
    --out "$OUT/build-diff-threadpool.json"
  [ -e "$W/models.done" ]
  ;;
tune)
  model=${MODEL:-1b-q8_0.gguf}
  out="$OUT/${model%.gguf}"
  printf 'models_dir: %s\nservices:\n  llama-cpu:\n    model: %s\n' "$M" "$model" > "$W/llmhost.yaml"
  L plan --profile cpu --json > "$out.plan.json" || exit 1
  builds=(--compare-build "official=$W/b-official/bin/llama-bench"
          --compare-build "threadpool=$W/b-threadpool/bin/llama-bench")
  before=$(cat /proc/sys/vm/nr_hugepages)
  if [ -n "${BUILDS_ONLY:-}" ]; then
    builds+=(--builds-only)
  else  # the pool the hugetlb setup draws from
    pages=$(python3 -c "import json,sys; print(json.load(sys.stdin)['hugepages']['pages'])" \
      < "$out.plan.json")
    echo $(( before + pages + 64 )) > /proc/sys/vm/nr_hugepages
  fi
  L tune --llama-bench "$W/b-plan/bin/llama-bench" "${builds[@]}" --model "$M/$model" \
    --rounds "${ROUNDS:-3}" --reps "${REPS:-2}" --prompt "${PROMPT:-512}" --gen "${GEN:-128}" \
    --out "$out" --json > "$out.stdout.json" 2> "$out.log"
  rc=$?
  echo "$before" > /proc/sys/vm/nr_hugepages
  tail -40 "$out.log"
  exit $rc
  ;;
*) echo "unknown phase $PHASE"; exit 2 ;;
esac
