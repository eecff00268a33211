#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for DURATION seconds each (default 60; L6 of the
# testing design). Any input that crashes a target (crash, timeout, OOM, leak) is copied into
# fuzz/regressions/<target>/, where `cargo test -p burrow-server --test fuzz_regressions`
# replays it from then on; the script then exits non-zero.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 1800       # soak: 30 min per target
#   FUZZ_TARGETS="schema_file" scripts/fuzz.sh 10
#
# cargo-fuzz needs nightly features; on the stable toolchain RUSTC_BOOTSTRAP=1 unlocks them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

duration="${1:-60}"
case "$duration" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
# Build every target up front, so each run below gets its full time.
cargo fuzz build

mkdir -p artifacts/logs
found=0
summary=""
for target in $targets; do
  mkdir -p "corpus/$target" "corpus-seed/$target" "regressions/$target"
  rm -rf "artifacts/$target"
  log="artifacts/logs/$target.log"
  echo "== fuzzing $target for ${duration}s (log: fuzz/$log)"
  dict=()
  if [ -f "dicts/$target.dict" ]; then dict=(-dict="dicts/$target.dict"); fi
  set +e
  # New inputs go to the first directory (corpus/, not committed); corpus-seed/ and
  # regressions/ are read as extra seeds.
  cargo fuzz run "$target" "corpus/$target" "corpus-seed/$target" "regressions/$target" -- \
    -max_total_time="$duration" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
    >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  runs="${runs:-?}"
  crashes=0
  if [ -d "artifacts/$target" ]; then
    for f in "artifacts/$target"/*; do
      [ -f "$f" ] || continue
      cp "$f" "regressions/$target/"
      echo "   saved fuzz/regressions/$target/$(basename "$f")"
      crashes=$((crashes + 1))
    done
  fi
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    echo "   cargo fuzz run failed (exit $rc) without an artifact; see fuzz/$log" >&2
    tail -n 30 "$log" >&2
    crashes=1
  fi
  if [ "$crashes" -gt 0 ]; then
    found=1
    grep -E 'ERROR: |panicked at|^SUMMARY' "$log" | head -n 5 || true
  fi
  summary+="$(printf '%-16s %12s execs  %s' "$target" "$runs" \
    "$([ "$crashes" -gt 0 ] && echo "FAILED ($crashes)" || echo ok)")"$'\n'
done

echo
echo "== summary (${duration}s per target)"
printf '%s' "$summary"
if [ "$found" -ne 0 ]; then
  echo "crashing inputs were saved under fuzz/regressions/; replay them with" >&2
  echo "  cargo test -p burrow-server --test fuzz_regressions" >&2
  exit 1
fi
