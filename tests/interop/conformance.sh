#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance 0.2.0-alpha.12, server mode) against
# `xyte-edge serve --demo` started with XYTE_CONFORMANCE_FIXTURES=1 (the suite's test-only fixtures: test_* tools,
# test:// resources, test_* prompts), over Streamable HTTP on /mcp of the loopback listener. The suite sends no
# credentials, so it talks to tests/interop/auth_proxy.py, which adds the demo's admin token and passes Host/Origin
# through. Two runs, one per protocol era, each exactly what that revision requires:
#   --requirements 2025-11-25   (legacy: initialize handshake, Mcp-Session-Id sessions)
#   --requirements 2026-07-28   (modern: stateless, per-request _meta, MRTR)
# both with --expected-failures tests/interop/conformance-expected-failures.yml (scenarios that need client
# features xyte-edge does not implement, each with its reason).
#
# Usage: tests/interop/conformance.sh path/to/xyte-edge   (built with --features conformance-fixtures)
# Installs Node 22 + the suite into tests/interop/node_modules on first use (npm registry only, no browsers).
# Prints each run's summary; exits non-zero if a run has an unexpected failure or a stale expected-failure entry
# (the suite's own exit code), listing the failed checks.
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EXPECTED="$DIR/conformance-expected-failures.yml"
REVISIONS=(2025-11-25 2026-07-28)

fail() {
  printf 'FAILED: %s\n' "$*" >&2
  exit 1
}

[ $# -eq 1 ] || { echo "usage: $0 path/to/xyte-edge" >&2; exit 2; }
[ -f "$1" ] && [ -x "$1" ] || fail "$1 is not an executable file"
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
command -v python3 >/dev/null || fail "python3 is not on PATH"
command -v timeout >/dev/null || fail "timeout (coreutils) is not on PATH"
[ -f "$EXPECTED" ] || fail "missing $EXPECTED"

# --- 1. tools: Node 22 and the suite (with the other MCP tools), installed idempotently ----------------------------
# shellcheck source=node-tools.sh
. "$DIR/node-tools.sh"
echo "ok: tools ready: node $(node --version), conformance $(conformance --version | tail -n1)"

# --- 2. the daemon (fixtures on) and the token-adding proxy --------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/xyte-conformance.XXXXXX")
log="$work/daemon.log"
daemon_pid=""
proxy_pid=""
stop() { # stop PID NAME: SIGTERM, up to 10 s, then SIGKILL (which fails the run)
  local pid=$1 name=$2 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "FAILED: $name did not exit within 10 s of SIGTERM; sent SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 1
  fi
  wait "$pid" 2>/dev/null
  return 0
}
cleanup() {
  local rc=$?
  set +e
  stop "$proxy_pid" "the auth proxy"
  stop "$daemon_pid" "xyte-edge" || rc=1
  if [ "$rc" -ne 0 ] && [ -f "$log" ]; then
    echo "--- last 40 lines of the daemon log ($log) ---" >&2
    tail -n 40 "$log" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work/state" "$work/run" "$work/home"
(cd "$work" && exec env -i PATH="$PATH" HOME="$work/home" XDG_STATE_HOME="$work/state" XDG_RUNTIME_DIR="$work/run" \
  XYTE_STATE_DIR="$work/state/xyte-edge" XYTE_MCP_SOCKET="$work/run/mcp.sock" \
  XYTE_HTTP_LISTEN=127.0.0.1:0 XYTE_HTTP_LOCAL_LISTEN=127.0.0.1:0 \
  XYTE_LOG_FORMAT=text XYTE_CONFORMANCE_FIXTURES=1 "$BIN" serve --demo >"$log" 2>&1) &
daemon_pid=$!

deadline=$((SECONDS + 30))
until grep -q '^synced ' "$log" 2>/dev/null; do
  kill -0 "$daemon_pid" 2>/dev/null || fail "xyte-edge serve --demo exited before its first sync"
  [ "$SECONDS" -lt "$deadline" ] || fail "no 'synced ' line from xyte-edge serve --demo within 30 s"
  sleep 0.2
done
grep -q 'XYTE_CONFORMANCE_FIXTURES=1 ignored' "$log" &&
  fail "$BIN has no fixtures: build it with the cargo feature conformance-fixtures (as tests/run-all.sh does)"
grep -q 'XYTE_CONFORMANCE_FIXTURES=1: MCP also serves' "$log" || fail "the daemon did not report the fixtures switch as on"
local_addr=$(sed -n 's#.*loopback HTTP:[[:space:]]*http://\([^/ ]*\)/.*#\1#p' "$log" | head -n1)
token=$(sed -n 's/.*admin token:[[:space:]]*\([^ ]*\).*/\1/p' "$log" | head -n1)
[ -n "$local_addr" ] && [ -n "$token" ] || fail "the demo printed no 'loopback HTTP:' address or admin token"

proxy_out="$work/proxy.out"
python3 "$DIR/auth_proxy.py" 0 "$local_addr" "$token" >"$proxy_out" 2>&1 &
proxy_pid=$!
deadline=$((SECONDS + 10))
until grep -q '^listening on ' "$proxy_out" 2>/dev/null; do
  kill -0 "$proxy_pid" 2>/dev/null || { cat "$proxy_out" >&2; fail "auth_proxy.py exited at start"; }
  [ "$SECONDS" -lt "$deadline" ] || fail "auth_proxy.py did not start listening within 10 s"
  sleep 0.1
done
proxy_port=$(sed -n 's/^listening on \([0-9]*\).*/\1/p' "$proxy_out" | head -n1)
url="http://localhost:$proxy_port/mcp"
echo "ok: daemon up (pid $daemon_pid, fixtures on), loopback $local_addr, suite URL $url (token-adding proxy)"

# --- 3. the suite, once per revision --------------------------------------------------------------------------------
# failed_checks OUTPUT DIR: the FAILURE/WARNING checks of the scenarios the suite's OUTPUT lists as unexpected
# failures or stale entries, from the results under DIR, one line each.
failed_checks() {
  python3 - "$1" "$2" <<'PY'
import glob, json, os, re, sys
text = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[1]).read())
named, listing = set(), False
for line in text.splitlines():
    if line.startswith(("Unexpected failures", "Stale baseline entries")):
        listing = True
    elif listing and re.match(r"^  [✗✓] ", line):
        named.add(line[4:].strip().split(":")[0])
    elif line.strip():
        listing = False
for path in sorted(glob.glob(os.path.join(sys.argv[2], "*", "checks.json"))):
    folder = os.path.basename(os.path.dirname(path))
    scenario = next((s for s in sorted(named, key=len, reverse=True) if folder.startswith(f"server-{s}-")), None)
    if scenario is None:
        continue
    for c in json.load(open(path)):
        if c.get("status") in ("FAILURE", "WARNING"):
            msg = (c.get("errorMessage") or "").replace("\n", " ")[:400]
            print(f"    {scenario}: {c.get('id')} {c['status']}: {msg}")
PY
}

status=0
summary=()
for rev in "${REVISIONS[@]}"; do
  out="$work/suite-$rev.txt"
  results="$work/results-$rev"
  echo
  echo "=== conformance server --requirements $rev ==="
  rc=0
  timeout 900 conformance server --url "$url" --requirements "$rev" --expected-failures "$EXPECTED" -o "$results" \
    >"$out" 2>&1 || rc=$?
  # The summary and the baseline verdict: everything from the suite's SUMMARY line on.
  sed -n '/=== SUMMARY ===/,$p' "$out"
  if [ "$rc" -eq 124 ]; then
    echo "FAILED: the $rev run did not finish within 900 s" >&2
    tail -n 40 "$out" >&2
  fi
  if ! grep -q '=== SUMMARY ===' "$out"; then
    tail -n 40 "$out" >&2
  fi
  total=$(sed -n 's/^Total: \(.*\)$/\1/p' "$out" | tail -n1)
  failing=$(sed -n 's/^✗ \([^:]*\):.*/\1/p' "$out" | sort)
  expected=$(sed -e 's/\x1b\[[0-9;]*m//g' "$out" | sed -n 's/^  ~ \([^:]*\).*/\1/p' | sort -u)
  not_scored=$(comm -23 <(printf '%s\n' "$failing") <(printf '%s\n' "$expected") | grep . | paste -sd' ' || true)
  if [ "$rc" -ne 0 ]; then
    echo "checks behind the $rev run's unexpected failures and stale entries:" >&2
    failed_checks "$out" "$results" >&2
    summary+=("FAILED: --requirements $rev: exit $rc (${total:-no total})")
    status=1
  else
    line="ok: --requirements $rev: every required scenario passed"
    expected=$(printf '%s\n' "$expected" | grep . | paste -sd' ' || true)
    [ -z "$expected" ] || line+=", except the expected failures: $expected"
    [ -z "$not_scored" ] || line+="; failing but not scored for $rev (extensions, pending): $not_scored"
    summary+=("$line" "   checks: ${total:-no total} (all scenarios run, scored or not)")
  fi
done

echo
printf '%s\n' "${summary[@]}"
[ "$status" -eq 0 ] || fail "the conformance suite reported unexpected failures or stale expected-failure entries"
echo "ok: MCP conformance ($CONFORMANCE_VERSION) passed for ${REVISIONS[*]} against $BIN in ${SECONDS}s"
