#!/usr/bin/env python3
"""Before/after speed check for the size work (issue #8): runs one xyte-edge binary in `serve --demo` mode
(loopback only, in a temp dir) and measures, bounded in time:
  REST  : wrk -t2 -c32 -d10s GET /v1/devices/{id} over TLS (cached) -> req/s
  MCP   : N sequential tools/call get_device_status over the Unix socket -> p50 / p99 (ms), calls/s
  hook  : wrk -t2 -c32 -d10s POST /v1/webhook (HMAC-signed, durable) over loopback HTTP -> events/s
Usage: tests/bench/profile/wallclock.py BINARY [LABEL]   (needs wrk)"""
import hashlib, hmac, json, os, re, socket, ssl, subprocess, sys, tempfile, time, urllib.request

binary = sys.argv[1]
label = sys.argv[2] if len(sys.argv) > 2 else os.path.basename(binary)
secret = "bench-secret-0123456789abcdef"
tmp = tempfile.mkdtemp(prefix="size-bench-")
env = dict(os.environ, XDG_STATE_HOME=tmp + "/state", XDG_RUNTIME_DIR=tmp + "/run", XYTE_WEBHOOK_SECRET=secret,
           XYTE_LOG_LEVEL="warn", XYTE_HTTP_LISTEN="127.0.0.1:0", XYTE_HTTP_LOCAL_LISTEN="127.0.0.1:0")
os.makedirs(tmp + "/run", exist_ok=True)
proc = subprocess.Popen([binary, "serve", "--demo"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                        text=True)
info = {}
deadline = time.time() + 60
while time.time() < deadline and "token" not in info:
    line = proc.stdout.readline()
    if not line:
        break
    if m := re.search(r"LAN HTTPS:\s+(https://\S+?)/?$", line): info["lan"] = m.group(1)
    if m := re.search(r"loopback HTTP:\s+(http://\S+?)/?$", line): info["local"] = m.group(1)
    if m := re.search(r"MCP socket:\s+(\S+)", line): info["sock"] = m.group(1)
    if m := re.search(r"admin token:\s+(\S+)", line): info["token"] = m.group(1)
assert "token" in info and "lan" in info and "local" in info, f"demo did not start: {info}"
auth = {"Authorization": "Bearer " + info["token"]}
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE


def get(path):
    req = urllib.request.Request(info["lan"] + path, headers=auth)
    return json.load(urllib.request.urlopen(req, context=ctx, timeout=10))


# Wait until the first sync filled the cache.
deadline = time.time() + 60
devices = []
while time.time() < deadline:
    try:
        body = get("/v1/devices")
        devices = body.get("devices", body.get("items", body if isinstance(body, list) else []))
        if devices: break
    except Exception:
        pass
    time.sleep(0.2)
assert devices, "no devices after 60 s"
dev = devices[0]["id"]
get(f"/v1/devices/{dev}")  # warm


def cpu():
    """The daemon's CPU seconds so far (user + system): per-request CPU is far less disturbed by other load on
    this shared machine than throughput is."""
    f = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def wrk(args):
    c0 = cpu()
    out = subprocess.run(["wrk"] + args, capture_output=True, text=True, timeout=60).stdout
    used = cpu() - c0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    assert m and n, out
    assert not bad, f"errors: {out}"
    return float(m.group(1)), used / int(n.group(1)) * 1e6


hdr = ["-H", "Authorization: Bearer " + info["token"]]
rest, rest_cpu = wrk(["-t2", "-c32", "-d10s"] + hdr + [f"{info['lan']}/v1/devices/{dev}"])

# MCP over the Unix socket: NDJSON JSON-RPC.
s = socket.socket(socket.AF_UNIX); s.connect(info["sock"]); f = s.makefile("rwb")


def rpc(msg):
    f.write((json.dumps(msg) + "\n").encode()); f.flush()
    while True:
        r = json.loads(f.readline())
        if "id" in r and r.get("id") == msg.get("id"): return r


rpc({"jsonrpc": "2.0", "id": 0, "method": "initialize",
     "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}}})
f.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'); f.flush()
lat = []
n = 3000
t0 = time.perf_counter()
c0 = cpu()
for i in range(1, n + 1):
    a = time.perf_counter()
    r = rpc({"jsonrpc": "2.0", "id": i, "method": "tools/call",
             "params": {"name": "get_device_status", "arguments": {"device_id": dev}}})
    lat.append(time.perf_counter() - a)
    assert "result" in r and not r["result"].get("isError"), r
mcp_rate = n / (time.perf_counter() - t0)
mcp_cpu = (cpu() - c0) / n * 1e6
lat.sort()
p50, p99 = lat[n // 2] * 1e3, lat[int(n * 0.99)] * 1e3
s.close()

# Webhook: the same signed body every time (no "id", so every POST is a new durable event).
body = json.dumps({"type": "device.status", "data": {"device_id": dev, "status": "online"}})
sig = "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
lua = tmp + "/post.lua"
with open(lua, "w") as fh:
    fh.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n'
             'wrk.headers["X-Signature-256"] = "%s"\n' % (json.dumps(body), sig))
hook, hook_cpu = wrk(["-t2", "-c32", "-d10s", "-s", lua, f"{info['local']}/v1/webhook"])

proc.terminate(); proc.wait(timeout=30)
res = {"label": label, "rest_rps": round(rest), "mcp_p50_ms": round(p50, 3), "mcp_p99_ms": round(p99, 3),
       "mcp_calls_s": round(mcp_rate), "webhook_eps": round(hook),
       "cpu_us_per_rest": round(rest_cpu), "cpu_us_per_mcp": round(mcp_cpu), "cpu_us_per_webhook": round(hook_cpu)}
print(json.dumps(res))
