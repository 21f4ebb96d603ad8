#!/usr/bin/env bash
# Smoke test of an ARM build under qemu-user: `serve --demo` starts, and an MCP client (the same binary's `mcp`
# bridge, also emulated) lists the tools over the Unix socket.
# Usage: tests/packaging/qemu-smoke.sh arm64|armhf path/to/xyte-edge
set -euo pipefail

case $1 in
  arm64) QEMU=qemu-aarch64 SYSROOT=/usr/aarch64-linux-gnu ;;
  armhf) QEMU=qemu-arm SYSROOT=/usr/arm-linux-gnueabihf ;;
  *) echo "usage: $0 arm64|armhf BINARY" >&2; exit 64 ;;
esac
BIN=$(realpath "$2")
run() { "$QEMU" -L "$SYSROOT" "$BIN" "$@"; }

WORK=$(mktemp -d)
DEMO_PID=""
cleanup() {
  [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

run --version
XYTE_LOG_FORMAT=text XDG_STATE_HOME="$WORK/state" XDG_RUNTIME_DIR="$WORK/run" \
  XYTE_HTTP_LISTEN=127.0.0.1:0 XYTE_HTTP_LOCAL_LISTEN=127.0.0.1:0 "$QEMU" -L "$SYSROOT" "$BIN" serve --demo \
  >"$WORK/demo.log" 2>&1 &
DEMO_PID=$!
until grep -q "Xyte reachable" "$WORK/demo.log"; do
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$WORK/demo.log"; echo "qemu-smoke: the demo exited" >&2; exit 1; }
  [ $SECONDS -lt 120 ] || { cat "$WORK/demo.log"; echo "qemu-smoke: not ready in 120 s" >&2; exit 1; }
  sleep 0.5
done
SOCKET=$(sed -n 's/.*MCP socket ready socket=\([^ ]*\).*/\1/p' "$WORK/demo.log" | head -1)
printf '%s\n' \
  '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"qemu-smoke","version":"1"}}}' \
  '{"jsonrpc":"2.0","method":"notifications/initialized"}' \
  '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' |
  timeout 60 "$QEMU" -L "$SYSROOT" "$BIN" mcp --socket "$SOCKET" >"$WORK/mcp.out"
tools=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("id") == 2:
        print(len(msg["result"]["tools"]))
' "$WORK/mcp.out")
[ "${tools:-0}" -ge 30 ] || { cat "$WORK/mcp.out"; echo "qemu-smoke: tools/list returned ${tools:-nothing}" >&2; exit 1; }
kill -TERM "$DEMO_PID"
wait "$DEMO_PID" || { tail -5 "$WORK/demo.log"; echo "qemu-smoke: the demo did not stop cleanly" >&2; exit 1; }
DEMO_PID=""
echo "qemu-smoke: ok ($1: serve --demo ready, $tools tools listed over the socket, clean stop)"
