#!/usr/bin/env bash
# Runs each fuzz target for FUZZTIME. Usage: scripts/fuzz.sh FUZZTIME PKG:Target...
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when -fuzztime ends while a worker is mid-input (go.dev/issue/75804,
# fixed in Go 1.27): no input failed and none is written. Such a run is
# retried once. A target fails when a run writes a failing input under
# testdata/fuzz/TARGET, fails in any other way, or hits the race twice.
set -uo pipefail
GO=${GO:-go}
fuzztime=$1
shift
status=0
for spec in "$@"; do
  pkg=${spec%%:*}
  target=${spec##*:}
  corpus="$pkg/testdata/fuzz/$target"
  for attempt in 1 2; do
    before=$(ls "$corpus" 2>/dev/null | sort)
    out=$(mktemp)
    "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    after=$(ls "$corpus" 2>/dev/null | sort)
    if grep -q 'no fuzz tests to fuzz' "$out"; then
      echo "fuzz: $pkg has no target $target: fix the list in the Makefile"
      rc=1
      attempt=2
    fi
    if [ "$rc" -eq 0 ]; then
      rm -f "$out"
      break
    fi
    if [ "$before" = "$after" ] && grep -q '^    context deadline exceeded$' "$out" && [ "$attempt" -eq 1 ]; then
      echo "fuzz: $target: the coordinator's deadline race (go.dev/issue/75804), no failing input; running it again"
      rm -f "$out"
      continue
    fi
    echo "fuzz: $target FAILED (see above; a failing input, if any, is under $corpus)"
    rm -f "$out"
    status=1
    break
  done
done
exit $status
