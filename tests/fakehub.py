"""A loopback fake of the Hugging Face Hub HTTP API, enough for the real ``huggingface_hub`` client to create
repos, upload folders (regular, non-LFS uploads), list trees, and download files and snapshots.

Test-only. Point a **fresh process** at it with ``HF_ENDPOINT`` (huggingface_hub reads it at import time), plus
``HF_TOKEN``, ``HF_HUB_DISABLE_XET=1`` and a private ``HF_HOME``; :meth:`FakeHub.env` builds that environment.
It keeps every commit, serves ``main`` or a commit sha, and answers unknown routes with 404 so a client
change shows up as a clear failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_API_REPO = re.compile(
    r"^/api/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
    r"(?:/(?P<action>preupload|commit|revision|paths-info|tree)/(?P<rev>[^/]+)(?P<rest>/.*)?)?$"
)
_RESOLVE = re.compile(r"^/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """In-process fake Hub on 127.0.0.1 (a free port). Use as a context manager or ``start()``/``stop()``."""

    def __init__(self, user: str = "tester"):
        self.user = user
        self.repos: dict[str, dict] = {}  # repo_id -> {"commits": [(sha, files)], "type": kind}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, home: str, **extra: str) -> dict[str, str]:
        """Environment for a subprocess that should talk to this hub."""
        env = dict(os.environ)
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("TRANSFORMERS_OFFLINE", None)
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_TOKEN="hf_fake_token",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_ETAG_TIMEOUT="5",
            HF_HUB_DOWNLOAD_TIMEOUT="30",
            HF_HOME=home,
        )
        env.update(extra)
        return env

    # ------------------------------------------------------------------ inspection helpers
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return dict(self._snapshot(self.repos[repo_id], revision) or {})

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _snapshot(repo: dict, revision: str) -> dict[str, bytes] | None:
        if revision in ("main", "HEAD"):
            return repo["commits"][-1][1]
        for sha, files in repo["commits"]:
            if sha == revision:
                return files
        return None

    def _handler(hub):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code: int, body=b"", headers: dict | None = None, ctype="application/json"):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _route(self):
                url = urllib.parse.urlparse(self.path)
                path = urllib.parse.unquote(url.path)
                with hub._lock:
                    hub.requests.append(f"{self.command} {path}")
                if path == "/api/whoami-v2":
                    return self._send(
                        200, {"type": "user", "name": hub.user, "orgs": [], "auth": {"accessToken": {"role": "write"}}}
                    )
                if path == "/api/repos/create" and self.command == "POST":
                    return self._create(json.loads(self._body() or b"{}"))
                if path == "/api/validate-yaml":
                    self._body()
                    return self._send(200, {"errors": [], "warnings": []})
                m = _API_REPO.match(path)
                if m:
                    return self._api(m, url)
                m = _RESOLVE.match(path)
                if m:
                    return self._resolve(m)
                self._body()
                return self._send(404, {"error": f"fakehub: no route {self.command} {path}"})

            do_GET = do_POST = do_HEAD = do_PUT = _route

            def _create(self, data: dict):
                repo_id = f"{data.get('organization') or hub.user}/{data['name']}"
                with hub._lock:
                    if repo_id in hub.repos:
                        return self._send(
                            409, {"error": "You already created this repo", "url": f"{hub.endpoint}/{repo_id}"}
                        )
                    hub.repos[repo_id] = {"commits": [("0" * 40, {})], "type": data.get("type", "model")}
                return self._send(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})

            def _api(self, m, url):
                repo = hub.repos.get(m["repo"])
                if repo is None:
                    self._body()
                    return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                action, rev = m["action"], m["rev"] or "main"
                files = hub._snapshot(repo, rev)
                if action == "preupload":
                    data = json.loads(self._body())
                    return self._send(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                for f in data["files"]
                            ]
                        },
                    )
                if action == "commit":
                    return self._commit(m["repo"], repo)
                if files is None:
                    self._body()
                    return self._send(
                        404, {"error": f"Revision {rev} not found"}, {"X-Error-Code": "RevisionNotFound"}
                    )
                sha = repo["commits"][-1][0] if rev in ("main", "HEAD") else rev
                if action == "paths-info":
                    self._body()
                    return self._send(200, [])
                if action == "tree":
                    prefix = (m["rest"] or "").strip("/")
                    entries = [
                        {"type": "file", "path": p, "size": len(b), "oid": _git_blob_sha(b)}
                        for p, b in sorted(files.items())
                        if p.startswith(prefix)
                    ]
                    return self._send(200, entries)
                return self._send(
                    200,
                    {
                        "id": m["repo"],
                        "modelId": m["repo"],
                        "sha": sha,
                        "private": False,
                        "siblings": [{"rfilename": p} for p in sorted(files)],
                        "lastModified": "2026-01-01T00:00:00.000Z",
                    },
                )

            def _commit(self, repo_id: str, repo: dict):
                files = dict(repo["commits"][-1][1])
                for line in self._body().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        files.pop(item["value"]["path"], None)
                    elif item["key"] == "deletedFolder":
                        prefix = item["value"]["path"].rstrip("/") + "/"
                        files = {p: b for p, b in files.items() if not p.startswith(prefix)}
                    elif item["key"] == "lfsFile":
                        return self._send(400, {"error": "fakehub: LFS uploads are not supported"})
                sha = hashlib.sha1(json.dumps(sorted(files)).encode() + str(time.time_ns()).encode()).hexdigest()
                with hub._lock:
                    repo["commits"].append((sha, files))
                return self._send(
                    200,
                    {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None},
                )

            def _resolve(self, m):
                repo = hub.repos.get(m["repo"])
                if repo is None:
                    return self._send(404, b"", {"X-Error-Code": "RepoNotFound"})
                files = hub._snapshot(repo, m["rev"])
                if files is None:
                    return self._send(404, b"", {"X-Error-Code": "RevisionNotFound"})
                sha = repo["commits"][-1][0] if m["rev"] in ("main", "HEAD") else m["rev"]
                data = files.get(m["path"])
                if data is None:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
                return self._send(
                    200, data, {"ETag": f'"{_git_blob_sha(data)}"', "X-Repo-Commit": sha}, "application/octet-stream"
                )

        return Handler
