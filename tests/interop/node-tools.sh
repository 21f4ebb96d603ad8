# Sourced by the interop scripts: Node 22 and the MCP tools they drive, installed together into
# tests/interop/node_modules (npm registry only, no browsers). One install for all of them, because
# `npm install --no-save` prunes whatever it was not asked for.
#   node@22                                  (the machine's Node 20 is too old for the Inspector)
#   @modelcontextprotocol/inspector@2.12.0
#   @modelcontextprotocol/conformance@0.2.0-alpha.12
#   playwright-core@1.65.1                   (drives Debian's chromium for the dashboard tests; never downloads one)
# After sourcing: PATH starts with node_modules/.bin; the Inspector runs headless.

NODE_TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INSPECTOR_VERSION=2.12.0
CONFORMANCE_VERSION=0.2.0-alpha.12
PLAYWRIGHT_VERSION=1.65.1

node_tools_ready() {
  local bin="$NODE_TOOLS_DIR/node_modules/.bin" pkg
  [[ "$("$bin/node" --version 2>/dev/null)" == v22* ]] || return 1
  for pkg in "inspector:$INSPECTOR_VERSION" "conformance:$CONFORMANCE_VERSION"; do
    local json="$NODE_TOOLS_DIR/node_modules/@modelcontextprotocol/${pkg%%:*}/package.json"
    [ -f "$json" ] && grep -q "\"version\": \"${pkg#*:}\"" "$json" || return 1
  done
  grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$NODE_TOOLS_DIR/node_modules/playwright-core/package.json" 2>/dev/null
}

if ! node_tools_ready; then
  echo "installing node@22, @modelcontextprotocol/inspector@$INSPECTOR_VERSION," \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION and playwright-core@$PLAYWRIGHT_VERSION" \
    "into $NODE_TOOLS_DIR/node_modules" >&2
  command -v npm >/dev/null || { echo "FAILED: npm is not on PATH (needed once, to install the MCP tools)" >&2; exit 1; }
  npm install --prefix "$NODE_TOOLS_DIR" --no-audit --no-fund --no-save node@22 \
    "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" \
    "playwright-core@$PLAYWRIGHT_VERSION" >&2 ||
    { echo "FAILED: npm install of the MCP tools failed" >&2; exit 1; }
  node_tools_ready || { echo "FAILED: after npm install, the MCP tools or Node 22 are missing" >&2; exit 1; }
fi
export PATH="$NODE_TOOLS_DIR/node_modules/.bin:$PATH"
export MCP_AUTO_OPEN_ENABLED=false MCP_INSPECTOR_SECRET_STORE=memory
# playwright-core must use the system's chromium, never fetch a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
