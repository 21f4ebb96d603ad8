#!/usr/bin/env bash
# Real-client interop: the MCP Inspector CLI (@modelcontextprotocol/inspector 2.12.0) against `xyte-edge serve --demo`,
# through `xyte-edge mcp` (the stdio bridge) and over Streamable HTTP on the LAN TLS listener with a bearer header
# (trusting the generated certificate via NODE_EXTRA_CA_CERTS), each in the legacy era (initialize handshake) and the
# modern era (2026-07-28, server/discover).
#
# Usage: tests/interop/inspector.sh path/to/xyte-edge
# Installs Node 22 + the Inspector into tests/interop/node_modules on first use (npm registry only, no browsers).
# Prints one `ok: ...` line per check; exits non-zero with `FAILED: ...` on the first failed check.
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

fail() {
  printf 'FAILED: %s\n' "$*" >&2
  exit 1
}

[ $# -eq 1 ] || { echo "usage: $0 path/to/xyte-edge" >&2; exit 2; }
[ -f "$1" ] && [ -x "$1" ] || fail "$1 is not an executable file"
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
command -v python3 >/dev/null || fail "python3 is not on PATH"
command -v timeout >/dev/null || fail "timeout (coreutils) is not on PATH"

# --- 1. tools: Node 22 and the Inspector (with the other MCP tools), installed idempotently ------------------------
# shellcheck source=node-tools.sh
. "$DIR/node-tools.sh"
got=$(mcp-inspector --version 2>/dev/null | tail -n1) || true
[[ "$got" == *"$INSPECTOR_VERSION"* ]] || fail "mcp-inspector --version says '$got', expected $INSPECTOR_VERSION"
echo "ok: tools ready: node $(node --version), mcp-inspector $INSPECTOR_VERSION"

# --- 2. the daemon ------------------------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/xyte-inspector.XXXXXX")
log="$work/daemon.log"
daemon_pid=""
cleanup() {
  local rc=$?
  set +e
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null
    local i
    for i in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$daemon_pid" 2>/dev/null; then
      echo "FAILED: xyte-edge did not exit within 10 s of SIGTERM; sent SIGKILL" >&2
      kill -KILL "$daemon_pid" 2>/dev/null
      rc=1
    fi
    wait "$daemon_pid" 2>/dev/null
  fi
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
(cd "$work" && exec env -i PATH="$PATH" HOME="$work" XDG_STATE_HOME="$work/state" XDG_RUNTIME_DIR="$work/run" \
  XYTE_LOG_FORMAT=text "$BIN" serve --demo >"$log" 2>&1) &
daemon_pid=$!

sock=""
deadline=$((SECONDS + 30))
until grep -q '^synced ' "$log" 2>/dev/null; do
  kill -0 "$daemon_pid" 2>/dev/null || fail "xyte-edge serve --demo exited before its first sync"
  [ "$SECONDS" -lt "$deadline" ] || fail "no 'synced ' line from xyte-edge serve --demo within 30 s"
  sleep 0.2
done
sock=$(sed -n 's/.*MCP socket:[[:space:]]*//p' "$log" | head -n1 | sed 's/[[:space:]]*$//')
[ -n "$sock" ] || fail "the demo printed no 'MCP socket: <path>' line"
case "$sock" in /*) ;; *) sock="$work/$sock" ;; esac
[ -S "$sock" ] || fail "the MCP socket $sock does not exist"
lan=$(sed -n 's/.*LAN HTTPS:[[:space:]]*//p' "$log" | head -n1 | sed 's/[[:space:]]*$//; s#/$##')
cert=$(sed -n 's/.*TLS certificate:[[:space:]]*\([^ ]*\) (SHA-256.*/\1/p' "$log" | head -n1)
token=$(sed -n 's/.*admin token:[[:space:]]*\([^ ]*\).*/\1/p' "$log" | head -n1)
[ -n "$lan" ] && [ -n "$cert" ] && [ -n "$token" ] || fail "the demo printed no LAN HTTPS address, certificate or admin token"
case "$cert" in /*) ;; *) cert="$work/$cert" ;; esac
url="https://localhost:${lan##*:}/mcp"
export NODE_EXTRA_CA_CERTS="$cert"
echo "ok: daemon up (pid $daemon_pid), socket $sock, $url"

# --- 3. the Inspector config: one entry per era ------------------------------------------------------------------
cfg="$work/inspector.json"
python3 - "$BIN" "$sock" "$cfg" "$url" "$token" <<'PY'
import json, sys
binary, sock, path, url, token = sys.argv[1:6]
stdio = lambda era: {"type": "stdio", "command": binary, "args": ["mcp", "--socket", sock], "protocolEra": era}
http = lambda era: {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}, "protocolEra": era}
servers = {"legacy": stdio("legacy"), "modern": stdio("modern"), "http-legacy": http("legacy"), "http-modern": http("modern")}
with open(path, "w") as f:
    json.dump({"mcpServers": servers}, f, indent=2)
PY

# --- 4. the checks -------------------------------------------------------------------------------------------------
# inspect SERVER ARGS... : runs one Inspector CLI call; the JSON envelope lands in $out, stderr in $err.
# HOME points into the workdir so the Inspector's default catalog/client config never touch the real home.
out="$work/out.json"
err="$work/err.txt"
inspect() {
  local server=$1
  shift
  local rc=0
  # A hung server must fail the run, not stall it: each call gets 60 s (exit 124 = timed out).
  HOME="$work/home" timeout 60 mcp-inspector --cli --config "$cfg" --server "$server" "$@" --format json \
    >"$out" 2>"$err" || rc=$?
  if [ "$rc" -eq 124 ]; then
    fail "[$server] mcp-inspector $* did not finish within 60 s"
  elif [ "$rc" -ne 0 ]; then
    echo "--- mcp-inspector stderr ---" >&2
    cat "$err" >&2
    echo "--- mcp-inspector stdout ---" >&2
    cat "$out" >&2
    fail "[$server] mcp-inspector $* exited with $rc"
  fi
}

# check SERVER WHAT PYTHON : runs PYTHON with `r` bound to the envelope's "result" (and `check(cond, msg)`); whatever
# it prints is appended to the ok line. A failed check prints FAILED and the offending JSON.
check() {
  local server=$1 what=$2 code=$3 note
  note=$(python3 - "$out" "$code" <<'PY'
import json, os, re, sys
path, code = sys.argv[1:3]
raw = open(path).read()
try:
    env = json.loads(raw)
except ValueError as e:
    print(f"stdout is not one JSON object ({e}): {raw[:2000]}")
    sys.exit(1)
if not isinstance(env, dict) or "result" not in env:
    print(f"no 'result' in the JSON envelope: {raw[:2000]}")
    sys.exit(1)
r = env["result"]
def check(cond, msg):
    if not cond:
        print(f"{msg}\n  result: {json.dumps(r)[:3000]}")
        sys.exit(1)
exec(code, {"r": r, "check": check, "json": json, "re": re, "os": os})
PY
  ) || fail "[$server] $what: ${note:-see above}"
  echo "ok: [$server] $what${note:+ ($note)}"
}

for server in legacy modern http-legacy http-modern; do
  if [ "${server#http-}" = legacy ]; then
    versions='["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]'
  else
    versions='["2026-07-28"]'
  fi

  inspect "$server" --method initialize
  check "$server" "initialize negotiates a $server protocol version" "
v = r.get('protocolVersion')
check(v in $versions, f'protocolVersion {v!r} is not one of $versions')
info = r.get('serverInfo') or {}
check(isinstance(info.get('name'), str) and info['name'], 'serverInfo.name is set')
print(f\"protocolVersion {v}, server {info.get('name')} {info.get('version')}\")"

  inspect "$server" --method tools/list
  check "$server" "tools/list" "
tools = r.get('tools')
check(isinstance(tools, list), 'tools is a list')
names = [t.get('name') for t in tools]
check(len(names) >= 20, f'at least 20 tools, got {len(names)}')
bad = [n for n in names if not (isinstance(n, str) and re.fullmatch(r'[a-z0-9_]{1,64}', n))]
check(not bad, f'tool names match ^[a-z0-9_]{{1,64}}$: {bad}')
check(len(set(names)) == len(names), 'tool names are unique')
for want in ('list_devices', 'get_device_status', 'send_command'):
    check(want in names, f'{want} is listed')
print(f'{len(names)} tools')"
  # Advisory only: the Inspector lints tool schemas for portability (see --strict); show its one-line summary.
  sed -n "s/^\(Schema portability: .*\)/  [$server] note: \1/p" "$err"

  inspect "$server" --method resources/list
  check "$server" "resources/list" "
uris = [x.get('uri') for x in r.get('resources') or []]
for want in ('devices://', 'fleet://health'):
    check(want in uris, f'{want} is listed (got {uris})')
print(f'{len(uris)} resources')"

  inspect "$server" --method resources/templates/list
  check "$server" "resources/templates/list" "
ts = [x.get('uriTemplate') for x in r.get('resourceTemplates') or []]
check('device://{device_id}/status' in ts, f'device://{{device_id}}/status is listed (got {ts})')
print(f'{len(ts)} templates')"

  inspect "$server" --method prompts/list
  check "$server" "prompts/list" "
names = [x.get('name') for x in r.get('prompts') or []]
check('reboot_device_workflow' in names, f'reboot_device_workflow is listed (got {names})')
print(f'{len(names)} prompts')"

  inspect "$server" --method tools/call --tool-name list_devices --tool-arg limit=3
  first=$(python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])).get("result", {})
def bad(msg):
    print(f"{msg}\n  result: {json.dumps(r)[:3000]}")
    sys.exit(1)
if r.get("isError"):
    bad("list_devices returned isError")
devices = (r.get("structuredContent") or {}).get("devices")
if not isinstance(devices, list) or len(devices) != 3:
    bad(f"structuredContent.devices has 3 entries (got {devices!r:.200})")
ids = [d.get("id") if isinstance(d, dict) else None for d in devices]
if not all(isinstance(i, str) and i for i in ids):
    bad(f"every device has an id (got {ids})")
print(ids[0])
PY
  ) || fail "[$server] tools/call list_devices limit=3: ${first:-see above}"
  echo "ok: [$server] tools/call list_devices limit=3 (first id $first)"

  export FIRST_ID="$first"
  inspect "$server" --method tools/call --tool-name get_device_status --tool-arg "device_id=$first"
  check "$server" "tools/call get_device_status device_id=$first" "
check(not r.get('isError'), 'get_device_status returned isError')
dev = (r.get('structuredContent') or {}).get('device') or {}
want = os.environ['FIRST_ID']
check(dev.get('id') == want, f'structuredContent.device.id is {want!r} (got {dev.get(\"id\")!r})')"

  inspect "$server" --method resources/read --uri fleet://health
  check "$server" "resources/read fleet://health" "
contents = r.get('contents')
check(isinstance(contents, list) and contents, 'contents is a non-empty list')
c = contents[0]
check(c.get('uri') == 'fleet://health', f\"contents[0].uri is fleet://health (got {c.get('uri')!r})\")
check(isinstance(c.get('text'), str), 'contents[0] has text')
try:
    body = json.loads(c['text'])
except ValueError as e:
    check(False, f'contents[0].text is JSON ({e})')
check(isinstance(body, dict) and 'healthy' in body, 'the health JSON has a healthy key')
print(f\"healthy={body['healthy']}\")"
done

echo "ok: all Inspector CLI checks passed (stdio bridge and HTTPS) against $BIN (legacy and modern eras) in ${SECONDS}s"
