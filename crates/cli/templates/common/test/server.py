"""A stand-in for the provider, for the plugin's smoke test: the three
calls the plugin makes, on 127.0.0.1 only. Replace it with your provider's
behaviour as you add operations (error answers and 429s included)."""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

ADMIN = "test-admin-token"
TOKENS = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        if self.headers.get("Authorization") != f"Bearer {ADMIN}":
            self.answer(401, {"message": "401 Unauthorized"})
            return False
        return True

    def do_GET(self):
        url = urlparse(self.path)
        if not self.authorized():
            return
        if url.path == "/api/whoami":
            self.answer(200, {"user": "admin"})
        elif url.path == "/api/tokens":
            name = parse_qs(url.query).get("name", [None])[0]
            listed = [{"id": t["id"], "name": t["name"]} for t in TOKENS if name in (None, t["name"])]
            self.answer(200, listed)
        else:
            self.answer(404, {"message": "404 Not Found"})

    def do_POST(self):
        if not self.authorized():
            return
        if urlparse(self.path).path != "/api/tokens":
            self.answer(404, {"message": "404 Not Found"})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        token = {"id": len(TOKENS) + 1, "name": body.get("name", ""), "token": f"tok-{len(TOKENS) + 1:08d}"}
        TOKENS.append(token)
        self.answer(201, token)


if __name__ == "__main__":
    server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
