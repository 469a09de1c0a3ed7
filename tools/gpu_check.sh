#!/usr/bin/env bash
# One call on a GPU machine: build, run every suite, the CUDA suite under compute-sanitizer, and the
# benchmarks, with logs under $OUT (default build/gpu-check). Used with the device tool, whose time
# is short, so everything happens in one invocation:
#
#   bash tools/gpu_check.sh [test|sanitize|bench|train|profile]...   (default: test sanitize bench)
#
# FILTER narrows the CUDA suite (a gtest filter); BUILD picks the build folder; PROFILE_PRESETS names
# the presets whose training steps `profile` breaks down per kernel (tools/profiler).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
BUILD=${BUILD:-build/gpu}
FILTER=${FILTER:-*}
mkdir -p "$OUT"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(test sanitize bench)

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/card.txt" 2>&1
git log -1 --format='%H %s' > "$OUT/commit.txt" 2>/dev/null
start=$(date +%s)
if ! make -j"$(nproc)" BUILD="$BUILD" all > "$OUT/build.log" 2>&1; then
  echo "BUILD FAILED"; grep -m20 -B2 -A6 'error' "$OUT/build.log"; exit 1
fi
echo "build: $(( $(date +%s) - start )) s"

for step in "${steps[@]}"; do
  case "$step" in
    test)
      "$BUILD/tests/cuda_tests" --gtest_filter="$FILTER" > "$OUT/cuda_tests.log" 2>&1
      echo "cuda_tests rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/cuda_tests.log" | tr '\n' ' ')"
      grep -E '^\[  FAILED  \]' "$OUT/cuda_tests.log" | sort -u | head -40
      ;;
    cpu)
      bash tests/run_suites.sh "$BUILD/tests/cpu_tests" "$BUILD/tests/integration_tests" > "$OUT/cpu_tests.log" 2>&1
      tail -1 "$OUT/cpu_tests.log"
      ;;
    sanitize)
      # Tests of deliberate failures are excluded: the out-of-memory test's failing cudaMalloc and the
      # graph test's capture of a host read are reported as API errors by the sanitizer. Model-scale
      # tests are excluded for time.
      for tool in memcheck racecheck; do
        compute-sanitizer --tool "$tool" --error-exitcode 9 "$BUILD/tests/cuda_tests" \
          --gtest_filter="$FILTER:-*OverAllocation*:*CapturedGraphReplaysAndKeepsItsMemory*:CudaModel.*" > "$OUT/sanitize_$tool.log" 2>&1
        echo "compute-sanitizer $tool rc=$?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize_$tool.log" | tail -1)"
      done
      ;;
    bench)
      make BUILD="$BUILD" bench > "$OUT/bench.log" 2>&1
      echo "bench rc=$?"; cp -r "$BUILD/bench" "$OUT/" 2>/dev/null
      ;;
    profile)
      for preset in ${PROFILE_PRESETS:-configs/models/1b/intra-1to5.json}; do
        log="$OUT/profile_$(basename "$(dirname "$preset")")_$(basename "$preset" .json).log"
        CUDA_INJECTION64_PATH="$PWD/$BUILD/libkernel_profiler.so" "$BUILD/bench_train" --steps 2 "$preset" > "$log" 2>&1
        echo "profile $preset rc=$?"; head -c 2500 "$log"
      done
      ;;
    train)
      make BUILD="$BUILD" bench-train > "$OUT/bench_train.log" 2>&1
      echo "bench-train rc=$?"; cp -r "$BUILD/bench" "$OUT/" 2>/dev/null
      ;;
  esac
done
echo "total: $(( $(date +%s) - start )) s"
