"""A presigned URL's stand-in on 127.0.0.1: GET and PUT of files in one folder, 404 for what is not there (the node
setup tests and bench/node_setup.py push and fetch packed venvs through it)."""
from __future__ import annotations

import http.server
import shutil
import threading
from pathlib import Path


class _Store(http.server.BaseHTTPRequestHandler):
    root: Path
    puts: list

    def do_GET(self):  # noqa: N802
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, self.wfile, 1 << 20)

    def do_PUT(self):  # noqa: N802
        left = int(self.headers["Content-Length"])
        with open(self.root / self.path.lstrip("/"), "wb") as f:  # a piece at a time: a packed venv is 100s of MB
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                f.write(chunk)
                left -= len(chunk)
        self.puts.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_http_store(root: Path) -> http.server.ThreadingHTTPServer:
    """Serves `root` until `.shutdown()`; `.url`, `.root` and `.puts` (the paths PUT, in order)."""
    root.mkdir(parents=True, exist_ok=True)
    handler = type("Store", (_Store,), {"root": root, "puts": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.root, server.puts = root, handler.puts
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server
