#!/usr/bin/env bash
# The dashboard in headless Chromium (Debian's chromium, driven by playwright-core; no browser is downloaded).
# Usage: tests/dashboard/run.sh path/to/xyte-edge
# Screenshots of every state go to target/dashboard-screenshots/ in the repository.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ $# -eq 1 ] && [ -x "$1" ] || { echo "usage: $0 path/to/xyte-edge" >&2; exit 2; }
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")

if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# shellcheck source=../interop/node-tools.sh
. "$ROOT/tests/interop/node-tools.sh"
echo "chromium: $(/usr/bin/chromium --version), node $(node --version)"
XYTE_NODE_TOOLS_DIR=$NODE_TOOLS_DIR exec node "$ROOT/tests/dashboard/dashboard.mjs" "$BIN" "$ROOT/target/dashboard-screenshots"
