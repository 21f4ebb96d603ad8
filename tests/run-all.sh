#!/usr/bin/env bash
# The one test command (README): installs what the tests need, idempotently, then runs every check.
# Usage: tests/run-all.sh   (set CARGO_TARGET_DIR to reuse a build cache outside the clone)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TERM_COLOR=never
# A build cache outside the clone is allowed (and makes CI fast); default to target/ inside it.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

step() { printf '\n==> %s\n' "$*"; }
# The tests' builds (the debug binary included) have the MCP conformance suite's fixtures, which the conformance step
# and tests/mcp_fixtures.rs need; the release binary and the packages are built without them.
FIXTURES=(--features conformance-fixtures)
started=$(date +%s)

step "toolchain components"
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null
fi
cargo --version

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings (without and with the feature conformance-fixtures)"
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --all-targets --locked "${FIXTURES[@]}" -- -D warnings

step "cargo build (debug, all targets, feature conformance-fixtures)"
cargo build --all-targets --locked "${FIXTURES[@]}"

step "time zones: Debian's tzdata (room schedules read /usr/share/zoneinfo; the package depends on it)"
if [ ! -e /usr/share/zoneinfo/Europe/Berlin ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tzdata >/dev/null
fi
dpkg-query -W -f='${Package} ${Version}\n' tzdata

step "MQTT: Debian's mosquitto and mosquitto-clients (tests/mqtt.rs, the idle-writes measurement and the benchmark start a broker on an ephemeral port)"
mqtt_missing=()
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || mqtt_missing+=(mosquitto)
for tool in mosquitto_sub mosquitto_pub; do
  command -v "$tool" >/dev/null 2>&1 || { mqtt_missing+=(mosquitto-clients); break; }
done
if [ ${#mqtt_missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${mqtt_missing[@]}" >/dev/null
fi
dpkg-query -W -f='${Package} ${Version}\n' mosquitto mosquitto-clients

step "alert receivers: Python's aiosmtpd in the tests' venv (tests/alert_channels.rs and tests/alerts.rs send alert mail through it)"
VENV=${XYTE_INTEROP_VENV:-$ROOT/tests/interop/.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==1.4.6"
export XYTE_TEST_PYTHON="$VENV/bin/python"

step "idle writes: the 10-minute measurement starts in the background (its result is checked at the end)"
# It mostly waits, so it runs beside the rest of the suite instead of adding ten minutes to it.
idle_bin=$(cargo test --locked "${FIXTURES[@]}" --no-run --test idle_writes --message-format=json 2>/dev/null |
  python3 -c 'import json, sys; [print(m["executable"]) for m in map(json.loads, sys.stdin)
    if m.get("executable") and m["target"]["name"] == "idle_writes"]')
[ -x "$idle_bin" ] || { echo "idle writes: the test binary was not found (got: $idle_bin)" >&2; exit 1; }
idle_log="$CARGO_TARGET_DIR/idle-writes.log"
"$idle_bin" --ignored --nocapture >"$idle_log" 2>&1 &
idle_pid=$!
trap 'kill "$idle_pid" 2>/dev/null || true' EXIT

step "cargo test (feature conformance-fixtures)"
# Integration tests start real processes and sockets; two threads keep a 2-core machine responsive.
cargo test --locked "${FIXTURES[@]}" -- --test-threads=2

step "packaging: the amd64 .deb (cargo-deb), lintian, then install / upgrade / remove / purge on this machine"
missing=()
for tool in lintian:lintian systemd-analyze:systemd man:man-db curl:curl setpriv:util-linux adduser:adduser; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
packaging/build-debs.sh amd64
deb=$(ls "$CARGO_TARGET_DIR"/debian/xyte-edge_*_amd64.deb)
lintian --allow-root --fail-on error,warning "$deb"
tests/packaging/deb-install.sh "$deb"

step "packaging: the .deb under systemd in a booted bookworm container (systemd-nspawn), upgraded from 0.1.0 while running"
tests/packaging/systemd-boot.sh "$deb"

step "packaging: arm64 and armhf .debs (Debian cross compilers), lintian, unit tests and serve --demo under qemu-user"
tests/packaging/arm.sh arm64 armhf

step "interop: the Python MCP SDK (mcp==2.3.0) through xyte-edge mcp and over HTTPS, legacy / auto / 2026-07-28"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "mcp==2.3.0" "openapi-spec-validator==0.9.0"
"$VENV/bin/python" tests/interop/mcp_python.py "$CARGO_TARGET_DIR/debug/xyte-edge"

step "OpenAPI 3.1: the generated document passes openapi-spec-validator 0.9.0"
XYTE_WRITE_OPENAPI=1 cargo test --locked "${FIXTURES[@]}" --lib http::openapi::tests::write_document_when_asked -- --quiet
"$VENV/bin/python" tests/interop/openapi_check.py "$CARGO_TARGET_DIR/openapi.json"

step "interop: the MCP Inspector CLI 2.12.0 (Node 22 from npm), stdio bridge and HTTPS, legacy and modern eras"
tests/interop/inspector.sh "$CARGO_TARGET_DIR/debug/xyte-edge"

step "the official MCP conformance suite 0.2.0-alpha.12 against /mcp, --requirements 2025-11-25 and 2026-07-28"
tests/interop/conformance.sh "$CARGO_TARGET_DIR/debug/xyte-edge"

step "dashboard: Debian's chromium driven by playwright-core 1.65.1 (viewer, live badge, stale banner, operator preset, phone)"
tests/dashboard/run.sh "$CARGO_TARGET_DIR/debug/xyte-edge"

# The benchmark runner (tests/bench, its own crate and lock file; builds under $CARGO_TARGET_DIR/bench): a smoke run
# of every phase against the debug binary, so the benchmark keeps working. It asserts no timing, only that every
# phase runs (daemon up and down cleanly, no error answers, non-zero results). Full runs: BENCHMARKS.md.
step "benchmark smoke run (tests/bench, xyte-bench --smoke)"
cargo build --release --locked --manifest-path tests/bench/Cargo.toml --target-dir "$CARGO_TARGET_DIR/bench"
"$CARGO_TARGET_DIR/bench/release/xyte-bench" "$CARGO_TARGET_DIR/debug/xyte-edge" --smoke \
  --json "$CARGO_TARGET_DIR/bench-smoke.json"

# libFuzzer through cargo-fuzz (stable toolchain, no sanitizer: see tests/fuzz/run.sh) on MCP framing and dispatch,
# the webhook handler and the config parser: kept regression inputs replayed, then XYTE_FUZZ_SECONDS (default 60)
# per target. Its builds go to $CARGO_TARGET_DIR/fuzz, apart from the cache above.
step "fuzzing: mcp, webhook, config (${XYTE_FUZZ_SECONDS:-60}s each, cargo-fuzz 0.13.2)"
tests/fuzz/run.sh "${XYTE_FUZZ_SECONDS:-60}"

step "idle writes: 500 devices polled every 30 s for 10 minutes (started after the build)"
# Judged by the test harness's summary line, not by `wait`'s status: pid_max is 32768 on such machines, the suite
# starts more processes than that, and bash forgets a finished background job's status once a later child is given its
# pid (CI once failed with "wait: pid N is not a child of this shell" after the measurement had passed).
wait "$idle_pid" 2>/dev/null || true
trap - EXIT # it has ended: its pid may now be another process's
if ! grep -q '^test result: ok. 1 passed' "$idle_log"; then
  cat "$idle_log"
  echo "idle writes: the measurement did not pass (its log is above)" >&2
  exit 1
fi
grep -E "idle writes:|test result" "$idle_log"

printf '\n==> all checks passed in %ss\n' "$(( $(date +%s) - started ))"
