#!/usr/bin/env python3
"""Instructions executed by the daemon per request (valgrind callgrind), for before/after comparisons that the
other builds on this shared 2-core machine cannot disturb (wall-clock throughput here varies by +-25 %).
Runs `serve --demo` under callgrind (polling off, long TTL: no background work), warms up, then for each phase
zeroes the counters, sends K requests one at a time, dumps, and reads the total Ir.
Usage: tests/bench/profile/instructions.py BINARY [K]   (needs valgrind)"""
import glob, hashlib, hmac, http.client, json, os, re, socket, ssl, subprocess, sys, tempfile, time

binary = sys.argv[1]
K = int(sys.argv[2]) if len(sys.argv) > 2 else 200
secret = "bench-secret-0123456789abcdef"
tmp = tempfile.mkdtemp(prefix="size-ir-")
env = dict(os.environ, XDG_STATE_HOME=tmp + "/state", XDG_RUNTIME_DIR=tmp + "/run", XYTE_WEBHOOK_SECRET=secret,
           XYTE_LOG_LEVEL="warn", XYTE_HTTP_LISTEN="127.0.0.1:0", XYTE_HTTP_LOCAL_LISTEN="127.0.0.1:0",
           XYTE_POLL_INTERVAL="0", XYTE_CACHE_TTL="3600")
os.makedirs(tmp + "/run", exist_ok=True)
out = tmp + "/cg.out"
proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary, "serve", "--demo"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
info = {}
deadline = time.time() + 180
while time.time() < deadline and "token" not in info:
    line = proc.stdout.readline()
    if not line:
        break
    if m := re.search(r"LAN HTTPS:\s+https://(\S+?):(\d+)/?$", line): info["lan"] = (m.group(1), int(m.group(2)))
    if m := re.search(r"loopback HTTP:\s+http://(\S+?):(\d+)/?$", line): info["local"] = (m.group(1), int(m.group(2)))
    if m := re.search(r"MCP socket:\s+(\S+)", line): info["sock"] = m.group(1)
    if m := re.search(r"admin token:\s+(\S+)", line): info["token"] = m.group(1)
assert "token" in info, f"demo did not start: {info}"
auth = {"Authorization": "Bearer " + info["token"]}
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
tls = http.client.HTTPSConnection(*info["lan"], context=ctx, timeout=120)


def get(path):
    tls.request("GET", path, headers=auth)
    r = tls.getresponse(); body = r.read()
    assert r.status == 200, (r.status, body)
    return json.loads(body)


deadline = time.time() + 180
devices = []
while time.time() < deadline and not devices:
    body = get("/v1/devices")
    devices = body.get("devices", body.get("items", body if isinstance(body, list) else []))
    if not devices: time.sleep(0.5)
assert devices
dev = devices[0]["id"]


def phase(name, fn):
    for _ in range(5): fn()  # warm (fills the cache entry, connection state)
    subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
    for _ in range(K): fn()
    before = set(glob.glob(out + "*"))
    subprocess.run(["callgrind_control", "-d", name, str(proc.pid)], capture_output=True, check=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        new = [f for f in set(glob.glob(out + "*")) - before]
        if new:
            time.sleep(1)
            text = open(new[0]).read()
            m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
            if m: return int(m.group(1)) / K
        time.sleep(0.2)
    raise RuntimeError("no dump")


rest = phase("rest", lambda: get(f"/v1/devices/{dev}"))

s = socket.socket(socket.AF_UNIX); s.connect(info["sock"]); f = s.makefile("rwb")
seq = [0]


def rpc(method, params):
    seq[0] += 1
    f.write((json.dumps({"jsonrpc": "2.0", "id": seq[0], "method": method, "params": params}) + "\n").encode())
    f.flush()
    while True:
        r = json.loads(f.readline())
        if r.get("id") == seq[0]: return r


rpc("initialize", {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}})
f.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'); f.flush()


def mcp():
    r = rpc("tools/call", {"name": "get_device_status", "arguments": {"device_id": dev}})
    assert "result" in r and not r["result"].get("isError"), r


mcp_ir = phase("mcp", mcp)

plain = http.client.HTTPConnection(*info["local"], timeout=120)
body = json.dumps({"type": "device.status", "data": {"device_id": dev, "status": "online"}})
sig = "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()


def hook():
    plain.request("POST", "/v1/webhook", body=body, headers={"Content-Type": "application/json", "X-Signature-256": sig})
    r = plain.getresponse(); r.read()
    assert r.status in (200, 201, 202), r.status


hook_ir = phase("webhook", hook)
proc.terminate(); proc.wait(timeout=120)
print(json.dumps({"binary": binary, "K": K, "Ir_per_rest": round(rest), "Ir_per_mcp": round(mcp_ir),
                  "Ir_per_webhook": round(hook_ir)}))
