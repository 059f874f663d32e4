"""A fake Hugging Face Hub on 127.0.0.1 (real HTTP, a thread): just what `HfApi.create_repo` and a plain (non-Xet)
`HfApi.upload_folder` call, as huggingface_hub 2.x sends them:

    POST /api/repos/create                          {"name", "organization", "type"} -> {"url"}; 409 if it exists
    GET  /api/models/<org>/<name>[/revision/<rev>]  repo info (create_repo asks it after a 401/403 with exist_ok)
    POST /api/models/<org>/<name>/preupload/<rev>   {"files": [{path, size, sample}]} -> uploadMode regular|lfs
    POST /<org>/<name>.git/info/lfs/objects/batch   LFS batch API: an upload action (a PUT here) per new object
    PUT  /lfs/<oid>                                 the LFS object's bytes (sha256 checked)
    POST /api/models/<org>/<name>/commit/<rev>      ndjson: header, file (base64), lfsFile, deletedFile/-Folder
    POST /api/validate-yaml, GET /api/whoami-v2     (README.md metadata check; who am I)

Every committed file is kept as `repos[repo_id][path] = bytes`; `commits[repo_id]` has each commit's summary;
`requests` has (method, path) of every request, answered or not. `token`: when set, requests without
"Authorization: Bearer <token>" get 401 (but the LFS PUTs: presigned URLs on the Hub). `refuse = (status, fragment)`: requests whose path contains `fragment`
("" for all) get that status. Files of `lfs_threshold` bytes or more go through LFS, like the Hub's big files.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"


class FakeHub:
    def __init__(self, *, token: str | None = None, lfs_threshold: int = 10 * 2**20,
                 refuse: tuple[int, str] | None = None):
        self.token, self.lfs_threshold, self.refuse = token, lfs_threshold, refuse
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, list[str]] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- routes: (status, json body) ----------------------------------------------------------------------------

    def create(self, body: dict) -> tuple[int, dict]:
        repo = f"{body['organization']}/{body['name']}" if body.get("organization") else f"fake-user/{body['name']}"
        if repo in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}
        self.repos[repo], self.commits[repo] = {}, []
        return 200, {"url": f"{self.url}/{repo}", "name": repo}

    def preupload(self, repo: str, body: dict) -> tuple[int, dict]:
        return 200, {"files": [{"path": f["path"], "shouldIgnore": False, "oid": None,
                                "uploadMode": "lfs" if f["size"] >= self.lfs_threshold else "regular"}
                               for f in body["files"]]}

    def lfs_batch(self, body: dict) -> tuple[int, dict]:
        objects = [{"oid": o["oid"], "size": o["size"]} if o["oid"] in self.lfs else
                   {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"{self.url}/lfs/{o['oid']}"}}}
                   for o in body["objects"]]
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_put(self, oid: str, data: bytes) -> tuple[int, dict]:
        if hashlib.sha256(data).hexdigest() != oid:
            return 400, {"error": f"sha256 mismatch for {oid}"}
        self.lfs[oid] = data
        return 200, {}

    def commit(self, repo: str, data: bytes) -> tuple[int, dict]:
        files, summary = dict(self.repos[repo]), ""
        for line in data.splitlines():
            if not line.strip():
                continue
            op = json.loads(line)
            key, value = op["key"], op["value"]
            if key == "header":
                summary = value["summary"]
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 400, {"error": f"LFS object {value['oid']} was never uploaded"}
                files[value["path"]] = self.lfs[value["oid"]]
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                return 400, {"error": f"unknown commit operation {key!r}"}
        self.repos[repo] = files
        self.commits[repo].append(summary)
        oid = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}

    def route(self, method: str, path: str, headers, data: bytes) -> tuple[int, dict]:
        if self.refuse and self.refuse[1] in path:
            return self.refuse[0], {"error": f"refused by the fake hub ({self.refuse[0]})"}
        if self.token and not path.startswith("/lfs/") and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}
        ctype = headers.get("Content-Type") or ""
        body = json.loads(data) if data and "json" in ctype and "ndjson" not in ctype else {}
        if m := re.fullmatch(r"/lfs/(?P<oid>[0-9a-f]{64})", path):
            return self.lfs_put(m["oid"], data) if method == "PUT" else (405, {"error": "PUT only"})
        if method == "GET" and path == "/api/whoami-v2":
            return 200, {"name": "fake-user", "type": "user", "auth": {}}
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if method == "POST" and path == "/api/repos/create":
            return self.create(body)
        m = (re.fullmatch(rf"/api/models/{_REPO}/(?P<op>preupload|commit)/(?P<rev>[^/]+)", path)
             or re.fullmatch(rf"/{_REPO}\.git/info/lfs/objects/batch", path)
             or re.fullmatch(rf"/api/models/{_REPO}(?:/revision/(?P<rev2>[^/]+))?", path))
        if not m or m["repo"] not in self.repos:
            return 404, {"error": f"no route or repo for {method} {path}"}
        op = m.groupdict().get("op")
        if method == "GET" and op is None:
            return 200, {"id": m["repo"], "sha": "0" * 40, "siblings": [{"rfilename": p} for p in self.repos[m["repo"]]]}
        if method == "POST" and op == "preupload":
            return self.preupload(m["repo"], body)
        if method == "POST" and op == "commit":
            return self.commit(m["repo"], data)
        if method == "POST" and path.endswith("/objects/batch"):
            return self.lfs_batch(body)
        return 405, {"error": f"{method} not allowed on {path}"}


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                out = b""
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    out += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return out
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            data, path = self._body(), self.path.split("?")[0]
            with hub.lock:
                hub.requests.append((self.command, path))
                try:
                    status, payload = hub.route(self.command, path, self.headers, data)
                except Exception as exc:  # noqa: BLE001 - a bug here must show up as a 500, not a hang
                    status, payload = 500, {"error": f"fake hub: {type(exc).__name__}: {exc}"}
            out = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            if status >= 400:
                self.send_header("X-Error-Message", payload.get("error", ""))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args) -> None:  # quiet
            pass

    return Handler
