"""A local stand-in for the Hugging Face Hub on 127.0.0.1, for tests that push and load by repo id without the network.

It answers the few HTTP endpoints that `huggingface_hub` calls to create a model repo, commit files to it (regular
uploads: the preupload step answers "regular" for every file, so no LFS or Xet transfer is involved), list it, and
download from it (`hf_hub_download` / `from_pretrained` with `HF_ENDPOINT` pointing here). Written by hand because no
kept library ships a Hub server; only what the tests need is implemented, and anything else answers 404 so that a
client calling an unknown endpoint fails loudly.

    with serve_fake_hub() as hub:       # hub.url for HF_ENDPOINT, hub.files("user/repo") for what was pushed
        ...
"""

import base64
import contextlib
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self):
        self.repos: dict = {}  # repo id -> {path: bytes}
        self.commits: dict = {}  # repo id -> [commit summaries]
        self.lock = threading.Lock()
        self.url = ""

    def files(self, repo_id: str) -> dict:
        with self.lock:
            return dict(self.repos.get(repo_id, {}))

    def sha(self, repo_id: str) -> str:
        digest = hashlib.sha1(repo_id.encode())
        for path, content in sorted(self.repos.get(repo_id, {}).items()):
            digest.update(path.encode() + b"\0" + hashlib.sha1(content).digest())
        return digest.hexdigest()


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", content_type="application/json", headers=None, head=False):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, value, headers=None, head=False):
            self._send(status, json.dumps(value).encode(), headers=headers, head=head)

        def _not_found(self, code="RepoNotFound", head=False):
            self._json(404, {"error": f"{code}: {self.path}"}, headers={"X-Error-Code": code}, head=head)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        # ------------------------------------------------------------------ writing
        def do_POST(self):
            path = unquote(urlparse(self.path).path)
            body = self._body()
            if path == "/api/repos/create":
                request = json.loads(body or b"{}")
                repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
                with hub.lock:
                    hub.repos.setdefault(repo_id, {})
                    hub.commits.setdefault(repo_id, [])
                return self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})
            parts = path.split("/")
            # /api/models/{org}/{name}/preupload/{revision} and /api/models/{org}/{name}/commit/{revision}
            if len(parts) >= 7 and parts[:3] == ["", "api", "models"] and parts[5] in ("preupload", "commit"):
                repo_id = f"{parts[3]}/{parts[4]}"
                if repo_id not in hub.repos:
                    return self._not_found()
                if parts[5] == "preupload":
                    files = json.loads(body)["files"]
                    return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                      for f in files]})
                return self._commit(repo_id, body)
            if path == "/api/validate-yaml":
                return self._json(200, {"errors": [], "warnings": []})
            self._not_found("EndpointNotFound")

        def _commit(self, repo_id: str, body: bytes):
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            summary = ""
            with hub.lock:
                files = hub.repos[repo_id]
                for line in lines:
                    key, value = line["key"], line["value"]
                    if key == "header":
                        summary = value.get("summary", "")
                    elif key == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif key == "deletedFile":
                        files.pop(value["path"], None)
                    elif key == "deletedFolder":
                        for name in [name for name in files if name.startswith(value["path"].rstrip("/") + "/")]:
                            files.pop(name)
                    else:
                        return self._json(400, {"error": f"the fake Hub takes no {key!r} in a commit"})
                hub.commits[repo_id].append(summary)
                sha = hub.sha(repo_id)
            self._json(200, {"success": True, "commitOid": sha, "commitUrl": f"{hub.url}/{repo_id}/commit/{sha}"})

        # ------------------------------------------------------------------ reading
        def do_HEAD(self):
            self._read(head=True)

        def do_GET(self):
            self._read(head=False)

        def _read(self, head: bool):
            path = unquote(urlparse(self.path).path)
            parts = path.split("/")
            if parts[:3] == ["", "api", "models"] and len(parts) >= 5:
                repo_id = f"{parts[3]}/{parts[4]}"
                with hub.lock:
                    if repo_id not in hub.repos:
                        return self._not_found(head=head)
                    files, sha = dict(hub.repos[repo_id]), hub.sha(repo_id)
                rest = parts[5:]
                if not rest or rest[0] == "revision":
                    return self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                                            "siblings": [{"rfilename": name} for name in sorted(files)]}, head=head)
                if rest[0] == "tree":  # /tree/{revision}[/{folder}]
                    folder = "/".join(rest[2:]).strip("/")
                    prefix = folder + "/" if folder else ""
                    entries = [{"type": "file", "path": name, "size": len(content),
                                "oid": hashlib.sha1(content).hexdigest()}
                               for name, content in sorted(files.items()) if name.startswith(prefix)]
                    if folder and not entries:
                        return self._not_found("EntryNotFound", head=head)
                    return self._json(200, entries, head=head)
                return self._not_found("EndpointNotFound", head=head)
            # /{org}/{name}/resolve/{revision}/{path}
            if len(parts) >= 6 and parts[3] == "resolve":
                repo_id = f"{parts[1]}/{parts[2]}"
                name = "/".join(parts[5:])
                with hub.lock:
                    if repo_id not in hub.repos:
                        return self._not_found(head=head)
                    content, sha = hub.repos[repo_id].get(name), hub.sha(repo_id)
                if content is None:
                    return self._json(404, {"error": f"{name} not found"}, head=head,
                                      headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
                etag = hashlib.sha1(content).hexdigest()
                return self._send(200, content, content_type="application/octet-stream", head=head,
                                  headers={"X-Repo-Commit": sha, "ETag": f'"{etag}"'})
            self._not_found("EndpointNotFound", head=head)

    return Handler


@contextlib.contextmanager
def serve_fake_hub():
    """Serves a `FakeHub` on 127.0.0.1 (a free port) for the block; yields it (`hub.url` is the endpoint)."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
