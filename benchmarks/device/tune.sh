#!/usr/bin/env bash
# `llmhost tune` for real on the GPU test machine (its Xeon; no Docker there): llama-bench built
# natively with the plan's CMake flags and with llama.cpp's official CPU recipe from the same
# tree, then every llama-cpu knob and the official build measured in one interleaved run.
#   setup  unpack llama.cpp, write llmhost.yaml, start both builds and the model in the background
#   wait   until the builds and the model are there (or one failed)
#   tune   reserve the 2 MiB pool the plan asks for, `llmhost tune`, give the pool back
# Usage (repo root, on the device): OUT=... bash benchmarks/device/tune.sh PHASE
# Calls: setup (carry .device/{llama-src.txz,llama-ui.txz,ggml-vocab-llama-spm.gguf,whl}), wait,
# tune, one after another (the machine stays warm 30 s between calls).
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
COMMON="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF"
OFFICIAL="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
# Its x86 variants (ggml/src/CMakeLists.txt), loaded at run time: the best one this CPU runs.
VARIANTS="x64 sse42 sandybridge ivybridge piledriver haswell skylakex cannonlake cascadelake icelake \
cooperlake zen4 alderlake sapphirerapids"

case "$PHASE" in
setup)
  rm -rf "$W/repo" && mkdir -p "$W/repo" && cp -r . "$W/repo/"
  python3 -m pip install -q --no-index --no-deps --target /tmp/site-small .device/whl/*.whl
  tar xJf .device/llama-src.txz -C "$W" && tar xJf .device/llama-ui.txz -C "$W"
  printf 'models_dir: %s\nservices:\n  llama-cpu:\n    model: 1b-q8_0.gguf\n' "$M" > "$W/llmhost.yaml"
  { lscpu; gcc --version | head -1; cmake --version | head -1; } > "$OUT/machine.txt" 2>&1
  # the build's flags need no model: a plan without one (the model is still being written)
  printf 'hugepages: {enabled: true}\n' > "$W/plan-build.yaml"
  python3 -m llmhost.cli.main --config "$W/plan-build.yaml" plan --profile cpu --json > "$OUT/plan-build.json"
  python3 -c "import json,sys; print(' '.join(json.load(sys.stdin)['build']['llama_cpu_cmake_flags']))" \
    < "$OUT/plan-build.json" > "$W/plan-flags.txt"
  echo "plan flags: $(cat "$W/plan-flags.txt")"
  # shellcheck disable=SC2086  # flag lists
  setsid bash -c "cd $W/llama.cpp \
    && cmake -S . -B $W/b-plan $COMMON $(cat "$W/plan-flags.txt") > $W/b-plan.log 2>&1 \
    && cmake --build $W/b-plan -j \$(nproc) --target llama-bench >> $W/b-plan.log 2>&1 \
    && cmake -S . -B $W/b-official $COMMON $OFFICIAL > $W/b-official.log 2>&1 \
    && cmake --build $W/b-official -j \$(nproc) --target llama-bench >> $W/b-official.log 2>&1 \
    && for v in $VARIANTS; do cmake --build $W/b-official -j \$(nproc) --target ggml-cpu-\$v \
         >> $W/b-official.log 2>&1 || echo no variant \$v >> $W/b-official.log; done \
    && touch $W/builds.done || touch $W/builds.failed" < /dev/null > /dev/null 2>&1 &
  setsid bash -c "cd $W/repo && python3 -m llmhost.devtools.synthetic_gguf \
    --vocab .device/ggml-vocab-llama-spm.gguf --preset 1b --type q8_0 --out $M/1b-q8_0.gguf \
    && touch $W/model.done" < /dev/null > "$W/model.log" 2>&1 &
  echo "setup done: builds and model in the background"
  ;;
wait)
  for _ in $(seq "${WAIT_S:-540}"); do
    if [ -e "$W/builds.failed" ]; then tail -30 "$W"/b-*.log; exit 1; fi
    [ -e "$W/model.done" ] && [ -x "$W/b-plan/bin/llama-bench" ] && [ -z "${ALL:-}" ] && break
    [ -e "$W/builds.done" ] && [ -e "$W/model.done" ] && break
    sleep 1
  done
  ls -la "$W/b-plan/bin" "$W/b-official/bin" "$M" 2>&1 | tail -30
  tail -3 "$W/model.log"
  cp "$W"/b-*.log "$OUT/"
  [ -e "$W/model.done" ] && [ -x "$W/b-plan/bin/llama-bench" ]
  ;;
tune)
  L plan --profile cpu --json > "$OUT/plan-cpu.json" || exit 1
  before=$(cat /proc/sys/vm/nr_hugepages)
  pages=$(python3 -c "import json,sys; print(json.load(sys.stdin)['hugepages']['pages'])" \
    < "$OUT/plan-cpu.json")
  echo $(( before + pages + 64 )) > /proc/sys/vm/nr_hugepages
  grep -i hugepages_ /proc/meminfo
  other=()  # the official build where it finished
  [ -e "$W/builds.done" ] && other=(--compare-build "official=$W/b-official/bin/llama-bench")
  L tune --llama-bench "$W/b-plan/bin/llama-bench" "${other[@]}" \
    --rounds "${ROUNDS:-3}" --reps "${REPS:-2}" --prompt "${PROMPT:-512}" --gen "${GEN:-128}" --out "$OUT" --json > "$OUT/tune-stdout.json" 2> "$OUT/tune.log"
  rc=$?
  echo "$before" > /proc/sys/vm/nr_hugepages
  tail -40 "$OUT/tune.log"
  L doctor --json > "$OUT/doctor-after.json" 2> /dev/null
  cp "${LLMHOST_STATE_DIR:-/var/lib/llmhost}/evidence.json" "$OUT/evidence-local.json" 2>/dev/null
  exit $rc
  ;;
build-plan)  # the plan's build alone, in the foreground (a short device session)
  # shellcheck disable=SC2046,SC2086  # flag lists
  (cd "$W/llama.cpp" && cmake -S . -B "$W/b-plan" $COMMON $(cat "$W/plan-flags.txt") > "$W/b-plan.log" 2>&1 \
    && cmake --build "$W/b-plan" -j "$(nproc)" --target llama-bench >> "$W/b-plan.log" 2>&1) \
    || { tail -20 "$W/b-plan.log"; exit 1; }
  ;;
*) echo "unknown phase $PHASE"; exit 2 ;;
esac
