"""Real HTTP servers on 127.0.0.1 for the download tests: a static file host laid out like the GCS bucket and
torchvision's host, with faults injected per path, and a server that answers huggingface_hub as the Hub does.

Each runs `ThreadingHTTPServer` in a daemon thread; `stop()` shuts it down and closes its socket, after which the
port refuses connections. Every request is recorded (`requests`, `count(path)`), so tests can say how often a file
was fetched.

    with StaticServer() as gcs:
        gcs.add("/vit_models/imagenet21k/ViT-B_16.npz", data)
        gcs.fault("/vit_models/imagenet21k/ViT-B_16.npz", "500", "drop")   # first request 500, second cut mid-body
        monkeypatch.setenv("VITKIT_GCS_URL", gcs.url)
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Error</title></head><body><h1>Something went wrong</h1>"
             b"<p>Please sign in to continue.</p></body></html>\n")

# Faults a request can be given (each queued fault is used by one request, in order):
#   "404", "500", "503"   answer with that status
#   "drop"               send the headers and the first half of the body, then close the connection
#   "html"               status 200 with an HTML page (Content-Type text/html)
#   "html-as-binary"     status 200 with an HTML page labelled application/octet-stream
#   "wrong"              status 200 with other bytes of the same length
#   "short"              a Content-Length one byte shorter than the file, and that many bytes
# Lasting modes (`mode(path, ...)`): "no-range" ignores Range headers (answers 200 with the whole file), "slow" sends
# the body in small pieces with pauses, "gated" sends the headers and then holds the body until `gate` is set (so a
# test can have a second client arrive while the first is downloading).
FAULTS = {"404", "500", "503", "drop", "html", "html-as-binary", "wrong", "short"}
MODES = {"no-range", "slow", "gated"}


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 with a handler bound to this object."""

    def __init__(self):
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None

    def start(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: a dropped body is the end of the story
            timeout = 10  # a client that stops talking cannot hold a server thread forever

            def log_message(self, *args):
                pass

            def do_GET(self):
                owner._record(self)
                owner.handle(self, head=False)

            def do_HEAD(self):
                owner._record(self)
                owner.handle(self, head=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._port = self._httpd.server_address[1]
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if isinstance(getattr(self, "gate", None), threading.Event):
            self.gate.set()  # let held responses finish, or shutdown would wait for them
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def _record(self, handler):
        with self._lock:
            self.requests.append((handler.command, urlsplit(handler.path).path, handler.headers.get("Range")))

    def count(self, path: str, method: str = "GET") -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if p == path and m == method)

    def handle(self, handler, head: bool):
        raise NotImplementedError


def _send_file(handler, data: bytes, *, head=False, content_type="application/octet-stream", honour_range=True,
               extra_headers=None, slow=False, drop=False, gate=None):
    """Answer with `data`, honouring a `Range: bytes=N-` request with 206 unless told not to."""
    start = 0
    range_header = handler.headers.get("Range")
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
    status = 200
    if honour_range and match:
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else len(data) - 1
        if start >= len(data):
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(data)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        status = 206
        body = data[start:end + 1]
    else:
        body = data
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    if honour_range:
        handler.send_header("Accept-Ranges", "bytes")
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
    for key, value in (extra_headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    if head:
        return
    try:
        if gate is not None:
            handler.wfile.flush()
            gate.wait(timeout=60)
        if drop:
            handler.wfile.write(body[:len(body) // 2])
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            return
        if slow:
            step = max(1, len(body) // 20)
            for i in range(0, len(body), step):
                handler.wfile.write(body[i:i + step])
                handler.wfile.flush()
                time.sleep(0.02)
        else:
            handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _send_status(handler, code: int, headers=None, body: bytes = b""):
    handler.send_response(code)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body and handler.command != "HEAD":
        handler.wfile.write(body)


class StaticServer(_Server):
    """A static file host (paths as on the real host), with Range, faults per path and request counts."""

    def __init__(self):
        super().__init__()
        self.files: dict[str, bytes] = {}
        self._faults: dict[str, deque] = defaultdict(deque)
        self._modes: dict[str, set] = defaultdict(set)
        self.gate = threading.Event()  # opens the paths in "gated" mode

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return path

    def fault(self, path: str, *faults: str):
        unknown = set(faults) - FAULTS
        assert not unknown, f"unknown faults {unknown}; known: {sorted(FAULTS)}"
        with self._lock:
            self._faults[path].extend(faults)

    def mode(self, path: str, *modes: str):
        unknown = set(modes) - MODES
        assert not unknown, f"unknown modes {unknown}; known: {sorted(MODES)}"
        self._modes[path].update(modes)

    def handle(self, handler, head: bool):
        path = unquote(urlsplit(handler.path).path)
        with self._lock:
            fault = self._faults[path].popleft() if self._faults[path] else None
        modes = self._modes[path]
        if fault in ("404", "500", "503") or path not in self.files:
            code = int(fault) if fault else 404
            _send_status(handler, code, {"Content-Type": "text/plain"}, f"{code}\n".encode())
            return
        data = self.files[path]
        if fault == "html":
            _send_file(handler, HTML_PAGE, head=head, content_type="text/html; charset=utf-8", honour_range=False)
        elif fault == "html-as-binary":
            _send_file(handler, HTML_PAGE, head=head, honour_range=False)
        elif fault == "wrong":
            _send_file(handler, bytes(255 - b for b in data[:64]) + data[64:], head=head,
                       honour_range="no-range" not in modes)
        elif fault == "short":
            _send_file(handler, data[:-1], head=head, honour_range=False)
        else:
            _send_file(handler, data, head=head, honour_range="no-range" not in modes, slow="slow" in modes,
                       drop=fault == "drop", gate=self.gate if "gated" in modes else None)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".npz", ".pth")


class HubServer(_Server):
    """Answers huggingface_hub (2.x) the way huggingface.co does, for the requests `snapshot_download` makes:

      GET  /api/models/ORG/NAME/revision/REV      model info with `sha` (the commit) and `siblings`
      GET  /api/models/ORG/NAME/tree/COMMIT       the file listing (`oid`, `size`, `lfs` for large files)
      HEAD /ORG/NAME/resolve/REV/FILE             small files: 200 with X-Repo-Commit, ETag (git blob id), size;
                                                  large (LFS) files: 302 to a CDN (another server) with
                                                  X-Linked-Etag (the SHA-256) and X-Linked-Size
      GET  /ORG/NAME/resolve/REV/FILE             the file itself (small files)
    Unknown repositories and revisions get 404 with the Hub's X-Error-Code. The CDN is a `StaticServer` (`cdn`)
    serving blobs under /blobs/SHA256, so faults can be injected into large-file downloads there.
    """

    def __init__(self):
        super().__init__()
        self.repos: dict[str, dict] = {}
        self.private: dict[str, str] = {}  # repository -> the token that may see it
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.cdn = StaticServer()

    def start(self):
        self.cdn.start()
        return super().start()

    def stop(self):
        super().stop()
        self.cdn.stop()

    def add_repo(self, repo_id: str, files: dict[str, bytes], revision: str = "main", token: str | None = None) -> str:
        """Add a repository whose `revision` (a branch) points at a new commit holding `files`; returns the commit.
        With `token`, the repository is private: without `Authorization: Bearer TOKEN` it does not exist (401)."""
        if token:
            self.private[repo_id] = token
        commit = hashlib.sha1(json.dumps([repo_id, revision, sorted(files)]).encode()
                              + b"".join(files[k] for k in sorted(files))).hexdigest()
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        repo["refs"][revision] = commit
        repo["commits"][commit] = dict(files)
        for name, data in files.items():
            if name.endswith(LFS_SUFFIXES):
                self.cdn.add(f"/blobs/{hashlib.sha256(data).hexdigest()}", data)
        return commit

    def blob_path(self, data: bytes) -> str:
        return f"/blobs/{hashlib.sha256(data).hexdigest()}"

    def _commit(self, repo_id: str, revision: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None
        commit = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
        return repo, commit

    def handle(self, handler, head: bool):
        path = unquote(urlsplit(handler.path).path)
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if api:
            repo_id, kind, revision = api.group(1), api.group(2), api.group(3)
        elif resolve:
            repo_id, revision, filename = resolve.groups()
        else:
            return _send_status(handler, 404, {"Content-Type": "text/plain"}, b"Not Found")
        repo, commit = self._commit(repo_id, revision)
        authorization = handler.headers.get("Authorization")
        with self._lock:
            self.authorizations.append(authorization)
        if repo_id in self.private and authorization != f"Bearer {self.private[repo_id]}":
            return _send_status(handler, 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Invalid username "
                                               "or password.", "Content-Type": "application/json"},
                                b'{"error":"Invalid username or password."}')
        if repo is None:
            return _send_status(handler, 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not "
                                               "found", "Content-Type": "application/json"},
                                b'{"error":"Repository not found"}')
        if commit is None:
            return _send_status(handler, 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev "
                                               "id: " + revision, "Content-Type": "application/json"},
                                b'{"error":"Invalid rev id"}')
        files = repo["commits"][commit]
        if api and kind == "revision":
            info = {"_id": "0" * 24, "id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                    "disabled": False, "gated": False, "tags": [], "downloads": 0, "likes": 0,
                    "lastModified": "2024-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z",
                    "siblings": [{"rfilename": name} for name in sorted(files)]}
            return _send_json(handler, info, head)
        if api and kind == "tree":
            listing = []
            for name in sorted(files):
                data = files[name]
                entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": name}
                if name.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                listing.append(entry)
            return _send_json(handler, listing, head)
        if filename not in files:
            return _send_status(handler, 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                               "X-Repo-Commit": commit}, b"Entry not found")
        data = files[filename]
        if filename.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            return _send_status(handler, 302, {
                "Location": f"{self.cdn.url}/blobs/{sha256}?expires=1&signature=local",
                "X-Repo-Commit": commit, "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data)),
                "ETag": f'"{git_blob_sha1(data)}"', "Content-Type": "text/plain"})
        _send_file(handler, data, head=head, content_type="application/json" if filename.endswith(".json") else
                   "text/plain", extra_headers={"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"'})


def _send_json(handler, payload, head: bool):
    body = json.dumps(payload).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if not head:
        handler.wfile.write(body)


def free_port() -> int:
    """A port nothing listens on (bound, then released), for connection-refused tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = ["StaticServer", "HubServer", "HTML_PAGE", "FAULTS", "MODES", "free_port", "git_blob_sha1"]


def isolate_hub_env(tmp_path, monkeypatch, cache: str = "vitkit-cache"):
    """Own empty caches under tmp_path, fast retries, and no offline switch or mirror from the outside."""
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("VITKIT_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("VITKIT_DOWNLOAD_TIMEOUT", "10")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("VITKIT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "VITKIT_GCS_URL",
                 "VITKIT_TORCHVISION_URL", "VITKIT_GITHUB_URL", "VITKIT_FBAIPUBLICFILES_URL", "VITKIT_DOWNLOAD_TRIES",
                 "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
