#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that takes outside input (docs/fuzzing.md):
# libFuzzer through libfuzzer-sys on stable Rust, with SanitizerCoverage turned on by
# RUSTFLAGS (no nightly, no cargo-fuzz).
#
#   hack/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 10 s, every target
#
# The corpus lives in _out/fuzz/corpus/<target> (seeded by each target's init, kept between
# runs); findings go to _out/fuzz/artifacts/<target>/. One line per target:
#   fuzz target=<t> seconds=<s> runs=<n> corpus=<files> result=ok|FINDING
# Exit status 1 when any target found something.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
case "$secs" in
  0) echo "fuzz: 0 seconds per target: skipped"; exit 0 ;;
  *[!0-9]*|'') echo "fuzz: SECONDS_PER_TARGET must be a whole number, not '$secs'" >&2; exit 2 ;;
esac
triple=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
start=$(date +%s)
cargo build --release --locked --quiet --manifest-path fuzz/Cargo.toml --target "$triple" --bins
echo "fuzz: built the targets in $(( $(date +%s) - start )) s"
bin=$CARGO_TARGET_DIR/$triple/release
out=_out/fuzz
failed=0
for t in "${targets[@]}"; do
  corpus=$out/corpus/$t
  arts=$out/artifacts/$t
  mkdir -p "$corpus" "$arts"
  log=$out/$t.log
  set +e
  FUZZ_SEEDS_DIR=$corpus "$bin/$t" -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$arts/" "$corpus" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  files=$(find "$corpus" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    echo "fuzz target=$t seconds=$secs runs=${runs:-0} corpus=$files result=ok"
  else
    echo "fuzz target=$t seconds=$secs runs=${runs:-0} corpus=$files result=FINDING (exit $rc, $log)"
    grep -E "^(==[0-9]+==|thread '|panicked|SUMMARY|artifact_prefix)" "$log" | head -20 || true
    failed=1
  fi
done
exit $failed
