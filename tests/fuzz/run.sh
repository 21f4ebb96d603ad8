#!/usr/bin/env bash
# Fuzzes the daemon's untrusted inputs — MCP framing and dispatch (mcp), the webhook handler (webhook), the
# configuration file (config) — with libFuzzer through cargo-fuzz. First every kept regression input
# (tests/fuzz/regressions/<target>/) is replayed, then each target runs for SECONDS.
#
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 60 seconds, all three targets)
#        XYTE_FUZZ_ARGS="-fork=4" tests/fuzz/run.sh 3600   (extra libFuzzer options, e.g. more cores for a long run)
#
# Stable toolchain: cargo-fuzz needs nightly only for its sanitizers (`-Zsanitizer=address`, its default) and
# `--build-std`. With `-s none` it passes nothing but stable `-C` flags (`-Cpasses=sancov-module` and the
# `-Cllvm-args=-sanitizer-coverage-*` options) and the `libfuzzer-sys` crate builds libFuzzer with the system C++
# compiler, so coverage-guided fuzzing works on stable Rust as it is. What we give up is AddressSanitizer, which
# would only find memory errors in unsafe code: the daemon forbids unsafe code, and a Rust panic (including integer
# overflow, checked here with `-a`) already aborts and is reported as a crash. RUSTC_BOOTSTRAP is therefore not
# needed; set XYTE_FUZZ_BOOTSTRAP=1 to export RUSTC_BOOTSTRAP=1 if a future cargo-fuzz starts passing -Z flags.
set -euo pipefail

SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(mcp webhook config)
read -r -a EXTRA <<<"${XYTE_FUZZ_ARGS:-}"
CARGO_FUZZ_VERSION=0.13.2

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
FUZZ=$ROOT/tests/fuzz
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# Fuzz builds are instrumented: their own target dir keeps them from evicting the main build cache.
FUZZ_TARGET_DIR=$CARGO_TARGET_DIR/fuzz
[ "${XYTE_FUZZ_BOOTSTRAP:-0}" = 1 ] && export RUSTC_BOOTSTRAP=1
started=$(date +%s)

if cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "cargo-fuzz $CARGO_FUZZ_VERSION already installed"
else
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  CARGO_TARGET_DIR=$FUZZ_TARGET_DIR/install cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# The targets' state (a store, a config file) goes to a scratch dir, in memory where possible, removed at exit.
scratch_parent=/dev/shm
[ -d "$scratch_parent" ] && [ -w "$scratch_parent" ] || scratch_parent=${TMPDIR:-/tmp}
SCRATCH=$(mktemp -d "$scratch_parent/xyte-edge-fuzz.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

fuzz() {
  cargo fuzz "$1" --fuzz-dir "$FUZZ" --target-dir "$FUZZ_TARGET_DIR" -s none -a "${@:2}"
}

cargo fmt --manifest-path "$FUZZ/Cargo.toml" -- --check

build_started=$(date +%s)
mkdir -p "$FUZZ_TARGET_DIR"
if ! fuzz build >"$FUZZ_TARGET_DIR/build.log" 2>&1; then
  tail -n 40 "$FUZZ_TARGET_DIR/build.log"
  echo "FAIL fuzz build (log: $FUZZ_TARGET_DIR/build.log)"
  exit 1
fi
echo "fuzz build took $(( $(date +%s) - build_started ))s"

failed=0
for target in "${TARGETS[@]}"; do
  grown=$FUZZ_TARGET_DIR/corpus/$target
  artifacts=$FUZZ_TARGET_DIR/artifacts/$target
  mkdir -p "$grown" "$artifacts" "$FUZZ/regressions/$target"
  log=$FUZZ_TARGET_DIR/$target.log
  common=(-timeout=10 -rss_limit_mb=2048 "-artifact_prefix=$artifacts/" "-dict=$FUZZ/dict/$target.dict")

  # -runs=0 executes every input of the directory once and stops: a crash there is a regression.
  if ! TMPDIR=$SCRATCH fuzz run "$target" "$FUZZ/regressions/$target" -- -runs=0 "${common[@]}" \
      </dev/null >"$log.replay" 2>&1; then
    tail -n 40 "$log.replay"
    echo "FAIL fuzz $target: a kept regression input crashes again (log: $log.replay)"
    failed=1
    continue
  fi
  kept=$(find "$FUZZ/regressions/$target" -type f | wc -l)

  # New inputs go to the first directory (the grown corpus, outside the repository); seeds and regressions are only
  # read, the regressions because inputs near an old bug are good places to look for the next one.
  if TMPDIR=$SCRATCH fuzz run "$target" "$grown" "$FUZZ/corpus/$target" "$FUZZ/regressions/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 "${common[@]}" "${EXTRA[@]}" </dev/null >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
    echo "ok   fuzz $target: $kept regression inputs replayed; $runs runs in ${SECONDS_PER_TARGET}s, coverage $cov," \
      "corpus $(find "$grown" -type f | wc -l) inputs"
  else
    tail -n 60 "$log"
    echo "FAIL fuzz $target: crash or hang; the input is in $artifacts/ (log: $log)."
    echo "     Fix it, then keep the input: cp $artifacts/<file> tests/fuzz/regressions/$target/<name>"
    failed=1
  fi
done

echo "fuzzing took $(( $(date +%s) - started ))s in all"
exit $failed
