"""A loopback HTTP proxy for tests that adds `Authorization: Bearer <token>` to every request and forwards it to the
daemon's loopback listener, streaming the answer back as it arrives (so SSE works). It exists because the MCP
conformance suite sends no credentials, while the daemon never serves /mcp without a token.

The Host and Origin headers are passed through untouched: the suite's DNS-rebinding scenario must reach the daemon's
own checks.

Usage: python auth_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT TOKEN   (prints "listening on PORT" when ready)
"""

import http.client
import http.server
import sys

LISTEN, UPSTREAM, TOKEN = int(sys.argv[1]), sys.argv[2], sys.argv[3]
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(UPSTREAM, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP and k.lower() != "authorization"}
        headers["Authorization"] = f"Bearer {TOKEN}"
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            upstream.putheader(k, v)
        if body is not None and "content-length" not in {k.lower() for k in headers}:
            upstream.putheader("Content-Length", str(len(body)))
        upstream.endheaders(body)
        resp = upstream.getresponse()
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        # Stream the body through unchanged, chunk by chunk; the connection closes at its end.
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            self.wfile.write(chunk)
            self.wfile.flush()
        upstream.close()

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = forward

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", LISTEN), Handler)
server.daemon_threads = True
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
