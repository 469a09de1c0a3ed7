#!/usr/bin/env bash
# Runs each GoogleTest binary given as an argument and prints one closing line:
# "N passed, N failed, N skipped". Exits non-zero if any suite failed.
set -u
passed=0 failed=0 skipped=0 status=0
for suite in "$@"; do
  echo "=== $suite"
  log=$(mktemp)
  "$suite" --gtest_color=no 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*listed below.*/\1/p' "$log" | tail -1)
  s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*listed below.*/\1/p' "$log" | tail -1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
  # A suite that crashed printed no summary: count it as one failure.
  if [ -z "$p$f" ]; then failed=$((failed + 1)); status=1; fi
  rm -f "$log"
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
